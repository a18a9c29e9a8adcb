"""The demo's HTML report (`submissions/report/index.html`): the ablation table, per-stage bars,
precision-recall curves of the recognition confidences, the descriptor's health (similarity
histograms of same and different landmarks), and galleries of sample queries (top results
marked right or wrong) and of verified pairs (inlier matches drawn)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lmkcomp import metrics
from lmkcomp.data.labels import split_labels
from lmkcomp.data.layout import LandmarkData
from lmkcomp.demo.pipeline import DemoArtifacts
from lmkcomp.demo.run import DemoRow
from lmkcomp.features.health import embedding_health
from lmkcomp.report import gallery, plots
from lmkcomp.report.html import Figure, Section, write_page
from lmkcomp.search import exact_search
from lmkcomp.submission import read_submission

#: recognition submissions drawn in the precision-recall plot: demo stage name -> label
CURVES = {"knn-voting": "soft voting", "inliers": "+ cleaned labels + inliers", "distractors": "+ distractor handling"}
FINAL_RETRIEVAL = "spatial"
SAMPLE_QUERIES = 4
SHOWN_RESULTS = 8


@dataclass(frozen=True)
class ReportContent:
    """What differs between the reports of the synthetic demo and of the photo demo: the data
    (`data_note`, `footer`), the descriptor's name in the health section, the recognition
    stages drawn as curves (stage name -> label), the retrieval stage of the gallery, the pair
    table (folder under the run folder) and local features of the pair gallery, and the seed
    of the health section's pair sampling."""

    data_note: str
    seed: int = 0
    footer: str = "Made by `lmkcomp demo`. Every image is a synthetic rendering; nothing here was downloaded."
    descriptor: str = "The trained global descriptor"
    curves: dict[str, str] = field(default_factory=lambda: dict(CURVES))
    final_retrieval: str = FINAL_RETRIEVAL
    pair_table: str = "pairs/test-train"
    local_method: str = "sift"


def write_demo_report(data: LandmarkData, run_dir: Path, rows: list[DemoRow], submissions: Path,
                      content: ReportContent) -> Path:
    """Write the report into `submissions/report/`; return the page's path."""
    out = submissions / "report"
    (out / "img").mkdir(parents=True, exist_ok=True)
    paths = DemoArtifacts(run_dir, content.local_method)
    scored = [row for row in rows if row.gap is not None]
    plots.stage_bars([row.stage for row in scored], [row.gap for row in scored], [row.map100 for row in scored],
                     out / "img" / "stages.png")
    _precision_recall(data, submissions, content.curves, out / "img" / "precision-recall.png")
    table = Section(
        "Ablation: each row adds one step to the row above",
        [f"{content.data_note} Recognition is scored by GAP, retrieval by mAP@100, both "
         "exactly as the Kaggle evaluation computes them, on every non-Ignored test image. Times are this run's "
         "wall-clock seconds (a stage reused from an earlier run shows the time it took then)."],
        ("stage", "GAP", "mAP@100", "time s", "note"),
        [(row.stage, "-" if row.gap is None else row.gap, "-" if row.map100 is None else row.map100,
          f"{row.seconds:.1f}", row.note) for row in rows],
        [Figure("img/stages.png", "GAP and mAP@100 of every scored stage"),
         Figure("img/precision-recall.png", "Recognition: precision against recall as predictions are taken in "
                "order of confidence; GAP summarises this curve, so distractor handling shows as a higher start")])
    sections = [table, _descriptor_health(data, paths, out, content.descriptor, content.seed),
                _retrieval_gallery(data, submissions, content.final_retrieval, out),
                _recognition_gallery(data, paths, out), _pair_gallery(data, paths, run_dir / content.pair_table, out)]
    return write_page(out, "lmkcomp demo report", sections, footer=content.footer)


def _precision_recall(data: LandmarkData, submissions: Path, stages: dict[str, str], path: Path) -> None:
    solution = data.recognition_solution.scored("all")
    curves = {}
    for stage, label in stages.items():
        csv = submissions / f"recognition_demo-{stage}.csv"
        predictions = {k: v for k, v in read_submission(csv, "recognition").predictions.items()
                       if v is not None and k in solution}
        precision, recall = metrics.recognition_precision_recall(predictions, solution)
        curves[label] = (precision, recall, metrics.global_average_precision(predictions, solution))
    plots.precision_recall(curves, path)


def _descriptor_health(data: LandmarkData, paths: DemoArtifacts, out: Path, descriptor: str, seed: int) -> Section:
    train, test = paths.store("train"), paths.store("test")
    train_rows, train_labels = train.array(), split_labels(data, "train", train.ids)
    results = {
        "train": embedding_health(train_rows, train_labels, seed=seed),
        "test vs train": embedding_health(test.array(), split_labels(data, "test", test.ids), train_rows, train_labels,
                                          seed=seed),
    }
    plots.similarity_histograms(results, out / "img" / "similarities.png")
    paragraphs = [f"{descriptor} before any search, from its embeddings and the labels alone: "
                  "cosine similarity of same-landmark and different-landmark image pairs (within train; test "
                  "images against train images), their ROC AUC (0.5 = chance), the norm of the mean descriptor "
                  "(near 1 = collapsed to one direction) and the effective rank (dimensions really used). "
                  "Images showing no landmark are in no pair."]
    paragraphs += [f"WARNING ({name}): {health.summary()}" for name, health in results.items()
                   if health.near_chance]
    return Section(
        "Descriptor health", paragraphs,
        ("descriptor", "mean-vector norm", "same median", "different median", "AUC", "effective rank"),
        [(name, health.mean_norm, health.same.median, health.different.median, health.auc,
          f"{health.effective_rank:.1f} of {health.dim}") for name, health in results.items()],
        [Figure("img/similarities.png", "Cosine similarity of same-landmark (green) and different-landmark (red) "
                "pairs; the further apart, the better the descriptor tells landmarks apart")])


def _sample_queries(data: LandmarkData) -> list[str]:
    """The first few scored landmark test images in id order, so every run shows the same ones."""
    retrieval = data.retrieval_solution.scored("all")
    return sorted(image_id for image_id, images in retrieval.items() if images)[:SAMPLE_QUERIES]


def _retrieval_gallery(data: LandmarkData, submissions: Path, final_retrieval: str, out: Path) -> Section:
    ranked = read_submission(submissions / f"retrieval_demo-{final_retrieval}.csv", "retrieval").predictions
    truth = data.retrieval_solution.answers
    figures = []
    for number, query in enumerate(_sample_queries(data)):
        relevant = set(truth[query])
        results = [gallery.Result(data.image_path("index", image_id), image_id in relevant, f"#{rank + 1}")
                   for rank, image_id in enumerate(ranked[query][:SHOWN_RESULTS])]
        strip = gallery.query_strip(data.image_path("test", query), f"query {query[:8]}", results,
                                    out / "img" / f"retrieval-{number}.jpg")
        figures.append(Figure(f"img/{strip.name}", f"test {query}: top {SHOWN_RESULTS} of the final retrieval "
                              f"({len(relevant)} relevant index images in all); green right, red wrong"))
    return Section("Retrieval: sample queries", [], figures=figures)


def _recognition_gallery(data: LandmarkData, paths: DemoArtifacts, out: Path) -> Section:
    labels = data.train_labels().set_index("id")["landmark_id"]
    truth = data.recognition_solution.answers
    test, train = paths.store("test"), paths.store("train")
    train_ids = labels.index.tolist()
    queries = _sample_queries(data)
    scores, neighbours = exact_search(test.array()[test.position(queries)], train.array()[train.position(train_ids)], 3)
    figures = []
    for number, query in enumerate(queries):
        results = [gallery.Result(data.image_path("train", train_ids[j]), int(labels.iloc[j]) in truth[query],
                                  f"{labels.iloc[j]} s={s:.2f}") for s, j in zip(scores[number], neighbours[number])]
        strip = gallery.query_strip(data.image_path("test", query), f"true {' '.join(map(str, truth[query]))}",
                                    results, out / "img" / f"recognition-{number}.jpg")
        figures.append(Figure(f"img/{strip.name}", f"test {query}: its 3 nearest train images, which vote for "
                              "their landmark (caption: landmark id, cosine similarity); green = the true landmark"))
    return Section("Recognition: the neighbours that vote", [], figures=figures)


def _pair_gallery(data: LandmarkData, paths: DemoArtifacts, pair_table: Path, out: Path) -> Section:
    from lmkcomp.local.pairs import read_pair_table
    from lmkcomp.local.store import LocalFeatureStore
    from lmkcomp.local.verify import verify_config, verify_pair

    table = read_pair_table(pair_table).sort_values(["inliers", "query_id", "candidate_id"],
                                                                    ascending=[False, True, True])
    labels = data.train_labels().set_index("id")["landmark_id"]
    truth = data.recognition_solution.answers
    same = [int(labels[c]) in truth.get(q, []) for q, c in zip(table["query_id"], table["candidate_id"])]
    table = table.assign(same=same)
    matching, other = table[table["same"]], table[~table["same"]]
    # the best-verified true pair, a middling true pair, and the best-verified false pair
    picks = [frame.iloc[position] for frame, position in ((matching, 0), (matching, len(matching) // 2), (other, 0))
             if len(frame) > position]
    test_store, train_store = LocalFeatureStore(paths.local / "test"), LocalFeatureStore(paths.local / "train")
    config = verify_config("fast")
    figures = []
    for number, pick in enumerate(picks):
        query, candidate = pick["query_id"], pick["candidate_id"]
        a, b = test_store.get(query), train_store.get(candidate)
        result = verify_pair(a, b, config)
        pairs = result.inlier_pairs
        image = gallery.match_image(data.image_path("test", query), data.image_path("train", candidate),
                                    a.locations[pairs[:, 0]], b.locations[pairs[:, 1]],
                                    out / "img" / f"pair-{number}.jpg")
        figures.append(Figure(f"img/{image.name}", f"test {query} vs train {candidate}: {result.inliers} inliers of "
                              f"{result.n_putative} putative matches; "
                              f"{'the same' if pick['same'] else 'NOT the same'} landmark"))
    return Section(f"Spatial verification: inlier matches ({test_store.method}, seeded RANSAC)", [], figures=figures)
