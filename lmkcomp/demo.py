"""`lmkcomp demo`: the kit end to end on the synthetic mini-GLDv2.

For now the parts that exist: make (or reuse) the synthetic dataset, run every baseline for
both tasks, validate and score their submissions, and print one table.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from lmkcomp.baseline import BASELINES, run_baseline
from lmkcomp.data import synthetic
from lmkcomp.data.layout import LandmarkData
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

    print(format_table(rows))
    with atomic_write(workdir / "demo.json", "w", encoding="utf-8") as handle:
        json.dump({"preset": preset, "seed": seed, "rows": [row.__dict__ for row in rows]}, handle, indent=2)
        handle.write("\n")
    return rows


def format_table(rows: list[DemoRow]) -> str:
    """A plain-text table: stage, GAP, mAP@100, seconds."""
    lines = [f"{'stage':<24} {'GAP':>8} {'mAP@100':>8} {'time s':>8}", "-" * 51]
    lines += [f"{row.stage:<24} {row.gap:>8.4f} {row.map100:>8.4f} {row.seconds:>8.1f}" for row in rows]
    return "\n".join(lines)
