"""The demo's stages after the baselines: train, extract, local features, cleaning, then the
recognition and retrieval ablation (see `lmkcomp.demo`). Each stage is a call of the kit's
library functions on the artifacts of the stages before it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

from lmkcomp.data.gldv2 import read_id_column
from lmkcomp.data.layout import LandmarkData
from lmkcomp.demo.run import CLEAN_SETTINGS, DEMOTE_OVER, VERIFY_TOP, DemoRow, Stages, train_config_for
from lmkcomp.features.store import EmbeddingStore
from lmkcomp.inference import RecognitionConfig, RetrievalConfig, recognize, retrieve
from lmkcomp.inference import write_recognition_pairs, write_retrieval_pairs

SPLITS = ("train", "index", "test")
#: the synthetic generator's list of non-landmark train images
NONLANDMARK_CSV = "train_nonlandmark.csv"


class DemoArtifacts:
    """Where the stages of one demo run keep their artifacts."""

    def __init__(self, run_dir: Path, local_method: str = "sift"):
        self.run_dir = run_dir
        self.train = run_dir / "train"
        self.features = run_dir / "features"
        self.local = run_dir / f"local-{local_method}"
        self.clean = run_dir / "clean"
        self.pairs = run_dir / "pairs"
        self.inference = run_dir / "inference"

    def store(self, split: str) -> EmbeddingStore:
        return EmbeddingStore(self.features / split)

    @property
    def bank(self) -> Path:
        return self.features / "bank"


def run_pipeline(data: LandmarkData, run_dir: Path, stages: Stages, submissions: Path, train_config: str,
                 workers: int, progress: bool, pretrained: str | Path | None = None) -> list[DemoRow]:
    """The setup stages and the ablation rows."""
    from lmkcomp.train.trainer import CHECKPOINT

    paths = DemoArtifacts(run_dir)
    config = train_config_for(data, train_config, pretrained)
    trained = stages.run("train", lambda: _train(config, paths.train, progress))
    checkpoint = paths.train / CHECKPOINT
    start = "" if pretrained is None else f", fine-tuned from {Path(pretrained).parent.name}"
    rows = [DemoRow(f"train {config.model.head} ({train_config}{start})", None, None, trained["seconds"],
                    f"val mAP@100 {trained['val_map100']:.3f}, val GAP {trained['val_gap']:.3f}")]
    extracted = stages.run("extract", lambda: _extract(data, checkpoint, paths, workers, progress))
    rows.append(DemoRow("extract embeddings", None, None, extracted["seconds"], extracted["note"]))
    local = stages.run("local-features", lambda: _local_features(data, paths, workers, progress))
    rows.append(DemoRow("extract SIFT local features", None, None, local["seconds"], local["note"]))
    cleaned = stages.run("clean", lambda: _clean(data, paths, workers, progress))
    rows.append(DemoRow("clean train labels (verify)", None, None, cleaned["seconds"], cleaned["note"]))
    return rows + _ablation(data, paths, stages, submissions, workers, progress)


def _train(config, run: Path, progress: bool) -> dict:
    from lmkcomp.train.trainer import CHECKPOINT, Trainer

    history = Trainer(config, run, resume=(run / CHECKPOINT).is_file(), progress=progress).fit()
    last = [row for row in history if row.get("val_map@100") is not None][-1]
    return {"val_map100": last["val_map@100"], "val_gap": last["val_gap"]}


def _extract(data: LandmarkData, checkpoint: Path, paths: DemoArtifacts, workers: int, progress: bool) -> dict:
    from lmkcomp.features.extract import extract_split

    def extract(split: str, out: Path, ids=None) -> int:
        # one scale, no flip: the demo's descriptor is small and the CPU budget tight
        return len(extract_split(checkpoint, data, split, out, scales=(1.0,), flip=False, dtype="float32",
                                 workers=workers, progress=progress, ids=ids))

    counts = {split: extract(split, paths.features / split) for split in SPLITS}
    bank = data.root / NONLANDMARK_CSV
    if bank.is_file():
        # non-landmark train images: the bank that distractor handling compares against
        counts["bank"] = extract("train", paths.bank, read_id_column(bank))
    return {"note": ", ".join(f"{count} {name}" for name, count in counts.items())}


def _local_features(data: LandmarkData, paths: DemoArtifacts, workers: int, progress: bool,
                    method: str = "sift") -> dict:
    """Local features `method` (the extractor's defaults, at most 1000 per image) of every split."""
    from lmkcomp.local.extract import extract_local_split
    from lmkcomp.local.extractors import create_local_extractor

    extractor = create_local_extractor(method, max_features=1000)
    counts = {split: len(extract_local_split(data, split, paths.local / split, extractor, workers=workers,
                                             progress=progress)) for split in SPLITS}
    name = {"sift": "SIFT", "rootsift": "RootSIFT"}.get(method, method)
    return {"note": f"{name}, at most 1000 per image: " + ", ".join(f"{n} {s}" for s, n in counts.items())}


def _clean(data: LandmarkData, paths: DemoArtifacts, workers: int, progress: bool) -> dict:
    from lmkcomp.clean.result import write_result
    from lmkcomp.clean.verify_method import clean_verify, neighbour_pair_table
    from lmkcomp.features.store import StoreRows
    from lmkcomp.local.store import LocalFeatureStore
    from lmkcomp.local.verify import verify_config

    labels = data.train_labels()
    ids, landmarks = labels["id"].tolist(), labels["landmark_id"].to_numpy()
    train = paths.store("train")
    embeddings = StoreRows(train, train.position(ids))
    table = neighbour_pair_table(ids, landmarks, embeddings, LocalFeatureStore(paths.local / "train"),
                                 paths.clean / "pairs", verify_config("fast"), k=1000, max_neighbours=100,
                                 workers=workers, progress=progress)
    result = clean_verify(ids, landmarks, table, CLEAN_SETTINGS["inlier_threshold"], CLEAN_SETTINGS["min_verified"],
                          CLEAN_SETTINGS["min_images"])
    report = write_result(result, paths.clean, noise_truth=data.root / "noise_truth.csv")
    note = f"kept {report['kept']} of {report['images']} images"
    truth = report.get("against_noise_truth")
    if truth:
        note += f"; noise removal precision {truth['precision']:.2f}, recall {truth['recall']:.2f}"
    return {"note": note, "pairs": len(table)}


def _verify(name: str, write_pairs: Callable[[Path], int], query_split: str, candidate_split: str,
            paths: DemoArtifacts, workers: int, progress: bool) -> str:
    """Write the pair list `pairs/<name>.csv` with `write_pairs`, verify it (query_split x
    candidate_split; SIFT, `fast` preset) into the pair table `pairs/<name>` (resumable);
    return the table's folder."""
    from lmkcomp.local.pairs import verify_pairs
    from lmkcomp.local.store import LocalFeatureStore
    from lmkcomp.local.verify import verify_config

    pair_list = paths.pairs / f"{name}.csv"
    write_pairs(pair_list)
    return str(verify_pairs(pair_list, LocalFeatureStore(paths.local / query_split),
                            LocalFeatureStore(paths.local / candidate_split), paths.pairs / name,
                            verify_config("fast"), workers=workers, progress=progress))


def _ablation(data: LandmarkData, paths: DemoArtifacts, stages: Stages, submissions: Path, workers: int,
              progress: bool) -> list[DemoRow]:
    test, train, index = paths.store("test"), paths.store("train"), paths.store("index")
    workdir = paths.inference
    rows: list[DemoRow] = []

    def recognition(name: str, make_config: Callable[[], RecognitionConfig]) -> tuple[float, float]:
        """Score the recognition stage `name`; `make_config` runs what the stage needs first."""
        result = stages.run(f"recognition-{name}", lambda: _scores(recognize(
            data, test, train, f"demo-{name}", make_config(), workdir, submissions, progress=progress)))
        return result["gap"], result["seconds"]

    def retrieval(name: str, make_config: Callable[[], RetrievalConfig]) -> tuple[float, float]:
        result = stages.run(f"retrieval-{name}", lambda: _scores(retrieve(
            data, test, index, f"demo-{name}", make_config(), train, workdir, submissions, progress=progress)))
        return result["map100"], result["seconds"]

    voting = RecognitionConfig(method="soft-voting", k=3, labels="train")
    gap, seconds = recognition("knn-voting", lambda: voting)
    plain = RetrievalConfig()
    map100, retrieval_seconds = retrieval("knn", lambda: plain)
    rows.append(DemoRow("kNN: soft voting (k=3) | index kNN", gap, map100, seconds + retrieval_seconds))

    voting = replace(voting, labels=str(paths.clean / "train_clean.csv"))
    gap, seconds = recognition("cleaned", lambda: voting)
    rows.append(DemoRow("+ cleaned train labels", gap, map100, seconds))

    # the inliers of each test image and its 3 voting neighbours, verified inside the stage
    with_inliers = replace(voting, inliers=str(paths.pairs / "test-train"))

    def verify_voting_pairs() -> RecognitionConfig:
        _verify("test-train", lambda out: write_recognition_pairs(test, train, data, out, voting, workdir, progress),
                "test", "train", paths, workers, progress)
        return with_inliers

    gap, seconds = recognition("inliers", verify_voting_pairs)
    rows.append(DemoRow("+ inlier term min(inliers,70)/70", gap, map100, seconds))

    bank = str(paths.bank) if paths.bank.is_dir() else None
    voting = replace(with_inliers, demote_over=DEMOTE_OVER, nonlandmark_bank=bank)
    gap, seconds = recognition("distractors", lambda: voting)
    rows.append(DemoRow(f"+ distractors: demote >{DEMOTE_OVER}" + (", bank A-B-C" if bank else ""), gap, map100,
                        seconds))

    expanded = replace(plain, dba_n=2, qe_n=2)
    map100, seconds = retrieval("dba-qe", lambda: expanded)
    rows.append(DemoRow("+ DBA (n=2) + alpha-QE (n=2)", gap, map100, seconds))

    # re-ranking labels test and index images by voting against the cleaned train set, with the
    # inlier term: without it this descriptor labels only 17 % of the index images right, and
    # moving images of a wrongly predicted landmark ahead lowers mAP (README, "Demo output")
    labelling = replace(voting, nonlandmark_bank=None, demote_over=None)
    reranked = replace(expanded, rerank=True, recognition=labelling,
                       index_inliers=str(paths.pairs / "index-train"))

    def verify_index_labelling_pairs() -> RetrievalConfig:
        _verify("index-train",
                lambda out: write_recognition_pairs(index, train, data, out, labelling, workdir, progress),
                "index", "train", paths, workers, progress)
        return reranked

    map100, seconds = retrieval("rerank", verify_index_labelling_pairs)
    rows.append(DemoRow("+ discriminative re-ranking", gap, map100, seconds))

    verify = replace(reranked, verify_top=VERIFY_TOP)

    def verify_top_results() -> RetrievalConfig:
        table = _verify("test-index", lambda out: write_retrieval_pairs(test, index, out, verify, workdir, progress),
                        "test", "index", paths, workers, progress)
        return replace(verify, inliers=table)

    map100, seconds = retrieval("spatial", verify_top_results)
    rows.append(DemoRow(f"+ spatial verification of the top {VERIFY_TOP}", gap, map100, seconds))
    return rows


def _scores(result: dict) -> dict:
    scores = result["scores"] or {}
    return {"csv": result["csv"], "gap": scores.get("gap"), "map100": scores.get("map@100")}
