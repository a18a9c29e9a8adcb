"""`lmkcomp demo --from-folders SRC`: the weight-free path on the user's own photos, from an
import to scored submissions and the same HTML report as the synthetic demo.

Stages: import SRC keeping its split (`lmkcomp.data.folders`; a split SRC lacks is carved with
the seed); thumbnail embeddings of every split (`lmkcomp.features.weight_free`, no model);
RootSIFT local features at the extractor's real-photo defaults (a 1,024 px long side, at most
1,000 per image). Then two rows, the second adding spatial verification to the first:

recognition (GAP)                                 retrieval (mAP@100)
  thumbnail kNN: soft voting over 3 train images    thumbnail kNN of the index
  verified voting: RootSIFT against every train     + RootSIFT verification of the
  image, a landmark scores its top-3 excess inliers   top 20, re-ordered by inliers

Verified voting verifies every (test, train) pair while there are at most `ALL_PAIRS_LIMIT` of
them, else the `CANDIDATES` nearest train images by thumbnail. Artifacts go to
`workdir/run-photos-<SRC name>-seed<seed>/` (the import to `workdir/photos-<SRC name>-seed<seed>/`);
a rerun reuses finished stages unless `force`.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from lmkcomp.data import folders
from lmkcomp.data.layout import LandmarkData
from lmkcomp.demo.pipeline import SPLITS, DemoArtifacts, _local_features, _scores, _verify
from lmkcomp.demo.run import VERIFY_TOP, DemoRow, Stages, format_table
from lmkcomp.fileio import atomic_write
from lmkcomp.inference import RecognitionConfig, RetrievalConfig, recognize, retrieve, write_retrieval_pairs

LOCAL_METHOD = "rootsift"
#: verified voting checks every (test, train) pair up to this many, else the nearest CANDIDATES
ALL_PAIRS_LIMIT = 100_000
CANDIDATES = 100
#: recognition submissions drawn in the report's precision-recall plot
CURVES = {"photos-knn": "thumbnail kNN soft voting", "photos-verified": "verified voting (RootSIFT inliers)"}


def run_photo_demo(src: str | Path, seed: int = 0, workdir: str | Path = "runs/demo",
                   submissions: str | Path = "submissions", workers: int = 1, progress: bool = True,
                   force: bool = False, report: bool = True) -> list[DemoRow]:
    """Run the photo demo on SRC (`SRC/<landmark>/` or `SRC/<split>/<landmark>/` photos); return
    the table rows (also written to `workdir/demo-photos.json`) after writing the report."""
    workdir, submissions, src = Path(workdir), Path(submissions), Path(src)
    name = src.resolve().name
    data_root = workdir / f"photos-{name}-seed{seed}"
    run_dir = workdir / f"run-photos-{name}-seed{seed}"
    started = time.perf_counter()
    if force or not (data_root / folders.MARKER).is_file():
        # a new import may hold other photos: nothing computed on an earlier one is kept
        shutil.rmtree(run_dir, ignore_errors=True)
        note = folders.describe(folders.import_folders(src, data_root, seed=seed, force=True, progress=progress))
    else:
        note = "reused: " + ", ".join(f"{split} {len(LandmarkData(data_root).split_ids(split))} images"
                                      for split in SPLITS)
    rows = [DemoRow("import photos", None, None, time.perf_counter() - started, note)]
    print(f"dataset {data_root}: {note}")
    data = LandmarkData(data_root, "gldv2")
    stages = Stages(run_dir / "stages")
    paths = DemoArtifacts(run_dir, LOCAL_METHOD)
    thumbnails = stages.run("thumbnails", lambda: _thumbnails(data, paths, workers, progress))
    rows.append(DemoRow("thumbnail embeddings (no weights)", None, None, thumbnails["seconds"], thumbnails["note"]))
    local = stages.run("local-features", lambda: _local_features(data, paths, workers, progress, LOCAL_METHOD))
    rows.append(DemoRow("extract RootSIFT local features", None, None, local["seconds"], local["note"]))
    scored, pair_table = _scored_rows(data, paths, stages, submissions, workers, progress)
    rows += scored
    print(format_table(rows))
    with atomic_write(workdir / "demo-photos.json", "w", encoding="utf-8") as handle:
        json.dump({"source": str(src), "seed": seed, "rows": [row.__dict__ for row in rows]}, handle, indent=2)
        handle.write("\n")
    if report:
        from lmkcomp.demo.report import ReportContent, write_demo_report

        content = ReportContent(
            f"Photos of {src} ({note}), seed {seed}; no trained weights anywhere.",
            footer=f"Made by `lmkcomp demo --from-folders {src}`: the user's photos, nothing downloaded.",
            descriptor="The thumbnail descriptor (16x16 colour thumbnails, no weights)", seed=seed,
            curves=CURVES, final_retrieval="photos-spatial", pair_table=pair_table, local_method=LOCAL_METHOD)
        print(f"report: {write_demo_report(data, run_dir, rows, submissions, content)}")
    return rows


def _thumbnails(data: LandmarkData, paths: DemoArtifacts, workers: int, progress: bool) -> dict:
    from lmkcomp.features.weight_free import extract_weight_free_split

    counts = {split: len(extract_weight_free_split(data, split, paths.features / split, "thumbnail", workers=workers,
                                                   progress=progress)) for split in SPLITS}
    return {"note": "16x16 thumbnails: " + ", ".join(f"{n} {s}" for s, n in counts.items())}


def _scored_rows(data: LandmarkData, paths: DemoArtifacts, stages: Stages, submissions: Path, workers: int,
                 progress: bool) -> tuple[list[DemoRow], str]:
    """The two scored rows, and the first pair table of verified voting (relative to the run folder)."""
    test, train, index = paths.store("test"), paths.store("train"), paths.store("index")
    workdir = paths.inference

    def recognition(name: str, config: RecognitionConfig) -> dict:
        def compute() -> dict:
            result = recognize(data, test, train, f"demo-{name}", config, workdir, submissions, progress=progress)
            return {**_scores(result), **result["files"]}

        return stages.run(f"recognition-{name}", compute)

    def retrieval(name: str, make_config) -> dict:
        return stages.run(f"retrieval-{name}", lambda: _scores(retrieve(
            data, test, index, f"demo-{name}", make_config(), train, workdir, submissions, progress=progress)))

    knn = recognition("photos-knn", RecognitionConfig(method="soft-voting", k=3))
    plain = RetrievalConfig()
    knn_retrieval = retrieval("photos-knn", lambda: plain)
    rows = [DemoRow("thumbnail kNN: soft voting (k=3) | index kNN", knn["gap"], knn_retrieval["map100"],
                    knn["seconds"] + knn_retrieval["seconds"])]

    all_pairs = len(test) * len(train) <= ALL_PAIRS_LIMIT
    verified = recognition("photos-verified", RecognitionConfig(
        method="verified-voting", k=3, test_local=str(paths.local / "test"), train_local=str(paths.local / "train"),
        candidates=0 if all_pairs else CANDIDATES, workers=workers))
    spatial = RetrievalConfig(verify_top=VERIFY_TOP)

    def verify_top_results() -> RetrievalConfig:
        table = _verify("test-index", lambda out: write_retrieval_pairs(test, index, out, spatial, workdir, progress),
                        "test", "index", paths, workers, progress)
        return RetrievalConfig(verify_top=VERIFY_TOP, inliers=table)

    spatial_retrieval = retrieval("photos-spatial", verify_top_results)
    pairs = "every train image" if all_pairs else f"the {CANDIDATES} nearest train images"
    rows.append(DemoRow(f"verified voting ({pairs}, top-3 excess inliers) | + verify top {VERIFY_TOP}", verified["gap"],
                        spatial_retrieval["map100"], verified["seconds"] + spatial_retrieval["seconds"]))
    first_table = Path(verified["pair tables"]) / "block-00000"
    return rows, str(first_table.relative_to(paths.run_dir))
