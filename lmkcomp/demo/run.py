"""`lmkcomp demo`: the kit end to end on the synthetic mini-GLDv2.

The parts that exist so far: make (or reuse) the synthetic dataset; run every baseline for both
tasks; train the built-in CPU descriptor (GeM + ArcFace, `cpu-small`) and score it with kNN
retrieval and soft-voting recognition; validate and score every submission; print one table.
Finished stages are reused on a rerun (a killed training resumes).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from lmkcomp.baseline import BASELINES, run_baseline
from lmkcomp.config import load_config
from lmkcomp.data import synthetic
from lmkcomp.data.layout import LandmarkData
from lmkcomp.evaluate import evaluate_checkpoint
from lmkcomp.fileio import atomic_write
from lmkcomp.submission import (
    read_submission,
    score_submission,
    validate_submission,
    write_recognition_submission,
    write_retrieval_submission,
)


@dataclass(frozen=True)
class DemoRow:
    stage: str
    gap: float
    map100: float
    seconds: float


def run_demo(
    preset: str = "small",
    seed: int = 0,
    workdir: str | Path = "runs/demo",
    submissions: str | Path = "submissions",
    workers: int = 1,
    train_config: str = "cpu-small",
    progress: bool = True,
) -> list[DemoRow]:
    """Run the demo; return the table rows (also written to `workdir/demo.json`)."""
    workdir, submissions = Path(workdir), Path(submissions)
    data_root = workdir / f"data-{preset}-seed{seed}"
    started = time.perf_counter()
    manifest = synthetic.generate(data_root, synthetic.preset_config(preset), seed, workers=workers, progress=progress)
    print(f"dataset {data_root}: {synthetic.describe(manifest)} ({time.perf_counter() - started:.1f} s)")

    data = LandmarkData(data_root, "gldv2")
    rows = []
    for method in BASELINES:
        started = time.perf_counter()
        result = run_baseline(data, method, progress=progress)
        recognition_csv = submissions / f"recognition_baseline-{method}.csv"
        retrieval_csv = submissions / f"retrieval_baseline-{method}.csv"
        write_recognition_submission(recognition_csv, result.test_ids, result.recognition)
        write_retrieval_submission(retrieval_csv, result.test_ids, result.retrieval)
        elapsed = time.perf_counter() - started
        validate_submission(recognition_csv, "recognition", result.test_ids)
        validate_submission(retrieval_csv, "retrieval", result.test_ids)
        recognition = score_submission(read_submission(recognition_csv, "recognition"), data.recognition_solution)
        retrieval = score_submission(read_submission(retrieval_csv, "retrieval"), data.retrieval_solution)
        rows.append(DemoRow(f"baseline {method}", recognition["gap"], retrieval["map@100"], elapsed))

    if train_config:
        rows.append(_trained_descriptor(data, train_config, workdir, submissions, progress))

    print(format_table(rows))
    with atomic_write(workdir / "demo.json", "w", encoding="utf-8") as handle:
        json.dump({"preset": preset, "seed": seed, "rows": [row.__dict__ for row in rows]}, handle, indent=2)
        handle.write("\n")
    return rows


def _trained_descriptor(data: LandmarkData, config_name: str, workdir: Path, submissions: Path, progress: bool) -> DemoRow:
    """Train (or reuse) the descriptor of `config_name` on the demo data and score it."""
    from lmkcomp.train.config import TrainConfig, resolve_config_path
    from lmkcomp.train.trainer import CHECKPOINT, Trainer, run_is_finished

    config = load_config(resolve_config_path(config_name), TrainConfig, {"data.root": str(data.root)})
    run = workdir / f"train-{config_name}"
    started = time.perf_counter()
    if not run_is_finished(run, config):
        Trainer(config, run, resume=(run / CHECKPOINT).is_file(), progress=progress).fit()
    name = f"{config.model.pooling}-{config.model.head}-{config_name}"
    scores = evaluate_checkpoint(run / CHECKPOINT, data, run / "features", name, submissions=submissions,
                                 device=config.device, workers=config.workers, progress=progress)
    return DemoRow(f"{config.model.head} ({config_name})", scores["gap"], scores["map@100"], time.perf_counter() - started)


def format_table(rows: list[DemoRow]) -> str:
    """A plain-text table: stage, GAP, mAP@100, seconds."""
    lines = [f"{'stage':<24} {'GAP':>8} {'mAP@100':>8} {'time s':>8}", "-" * 51]
    lines += [f"{row.stage:<24} {row.gap:>8.4f} {row.map100:>8.4f} {row.seconds:>8.1f}" for row in rows]
    return "\n".join(lines)
