"""`lmkcomp demo`: the kit end to end on the synthetic mini-GLDv2, from nothing to scored
submissions and an HTML report.

Setup stages: make the dataset; train the CPU descriptor; extract global embeddings of every
split (and of the non-landmark train images, the bank); extract SIFT local features; clean the
train labels by spatial verification (Ozaki & Yokoo 2019). Then the inference stages are switched on one
at a time, each row of the ablation table adding one step to the row above:

recognition (GAP)                           retrieval (mAP@100)
  soft voting over 3 train neighbours         kNN of the index
  + cleaned train labels as the database      + DBA and alpha-query expansion
  + inlier term from SIFT verification        + discriminative re-ranking
  + distractor handling (demotion + bank)     + spatial verification of the top 20

Every stage leaves its artifacts under `workdir/run-<preset>-seed<seed>/` and a record in its
`stages/` folder; a rerun reuses finished stages (a killed training resumes) unless `force`.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lmkcomp.baseline import BASELINES, run_baseline
from lmkcomp.config import load_config
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

#: the demo's descriptor: `cpu-small` with the softmax head. Fine-tuned from a pretrained run the
#: margin heads beat it (README, "Heads compared"); from scratch the earlier comparison favoured
#: softmax, but it was measured while "arcface" meant sub-centre ArcFace and is not redone yet
DEFAULT_TRAIN_OVERRIDES = {"model.head": "softmax"}
#: the descriptor config of each preset when none is named: `cpu-small`, but `cpu-tiny` for the
#: tiny preset, whose ~50 training images give `cpu-small`'s batch size one step an epoch
TRAIN_CONFIGS = {"tiny": "cpu-tiny"}
DEFAULT_TRAIN_CONFIG = "cpu-small"
#: verified inliers (SIFT) that make a neighbour count in cleaning, and the images a landmark
#: keeps; `min_verified` 0 (one verified neighbour suffices) because the synthetic long tail has
#: many landmarks with 2-4 train images, where "more than 2" would remove every image
CLEAN_SETTINGS = {"inlier_threshold": 8, "min_verified": 0, "min_images": 2}
VERIFY_TOP = 20
DEMOTE_OVER = 30


@dataclass(frozen=True)
class DemoRow:
    """One row of the table; `gap` / `map100` are None for setup stages."""

    stage: str
    gap: float | None
    map100: float | None
    seconds: float
    note: str = ""


class Stages:
    """Runs each named stage once: its result (a JSON object) is kept in `directory/<name>.json`
    and returned as is on a rerun, with `reused` set."""

    def __init__(self, directory: Path):
        self.directory = directory

    def run(self, name: str, compute: Callable[[], dict]) -> dict:
        path = self.directory / f"{name}.json"
        if path.is_file():
            return {**json.loads(path.read_text(encoding="utf-8")), "reused": True}
        started = time.perf_counter()
        result = compute()
        result["seconds"] = time.perf_counter() - started
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=1)
        return result


def run_demo(
    preset: str = "small",
    seed: int = 0,
    workdir: str | Path = "runs/demo",
    submissions: str | Path = "submissions",
    workers: int = 1,
    train_config: str | None = None,
    progress: bool = True,
    force: bool = False,
    report: bool = True,
    pretrained: str | Path | None = None,
) -> list[DemoRow]:
    """Run the demo; return the table rows (also written to `workdir/demo.json`).

    `train_config` None picks the preset's (`TRAIN_CONFIGS`); "" stops after the dataset and the
    baselines. `pretrained` (a checkpoint of an `lmkcomp train` run, e.g. on the `v1` corpus) makes
    the descriptor a fine-tuning of that run's backbone; its stages live in their own run folder
    (`run-<preset>-seed<seed>-pretrained`). `force` reruns every stage
    after the dataset (which is deterministic, so it is always reused)."""
    workdir, submissions = Path(workdir), Path(submissions)
    if train_config is None:
        train_config = TRAIN_CONFIGS.get(preset, DEFAULT_TRAIN_CONFIG)
    data_root = workdir / f"data-{preset}-seed{seed}"
    run_dir = workdir / f"run-{preset}-seed{seed}" if pretrained is None else workdir / f"run-{preset}-seed{seed}-pretrained"
    if force and run_dir.exists():
        shutil.rmtree(run_dir)
    started = time.perf_counter()
    manifest = synthetic.generate(data_root, synthetic.preset_config(preset), seed, workers=workers, progress=progress)
    rows = [DemoRow("dataset", None, None, time.perf_counter() - started, synthetic.describe(manifest))]
    print(f"dataset {data_root}: {rows[0].note} ({rows[0].seconds:.1f} s)")
    data = LandmarkData(data_root, "gldv2")
    stages = Stages(run_dir / "stages")
    for method in BASELINES:
        result = stages.run(f"baseline-{method}", lambda: _baseline(data, method, submissions, progress))
        rows.append(DemoRow(f"baseline {method}", result["gap"], result["map100"], result["seconds"]))
    if train_config:
        from lmkcomp.demo.pipeline import run_pipeline

        rows += run_pipeline(data, run_dir, stages, submissions, train_config, workers, progress, pretrained)
    print(format_table(rows))
    with atomic_write(workdir / "demo.json", "w", encoding="utf-8") as handle:
        json.dump({"preset": preset, "seed": seed, "rows": [row.__dict__ for row in rows]}, handle, indent=2)
        handle.write("\n")
    if report and train_config:
        from lmkcomp.demo.report import ReportContent, write_demo_report

        content = ReportContent(f"Synthetic preset '{preset}', seed {seed}.", seed=seed)
        page = write_demo_report(data, run_dir, rows, submissions, content)
        print(f"report: {page}")
    return rows


def _baseline(data: LandmarkData, method: str, submissions: Path, progress: bool) -> dict:
    result = run_baseline(data, method, progress=progress)
    recognition_csv = submissions / f"recognition_baseline-{method}.csv"
    retrieval_csv = submissions / f"retrieval_baseline-{method}.csv"
    write_recognition_submission(recognition_csv, result.test_ids, result.recognition)
    write_retrieval_submission(retrieval_csv, result.test_ids, result.retrieval)
    validate_submission(recognition_csv, "recognition", result.test_ids)
    validate_submission(retrieval_csv, "retrieval", result.test_ids)
    recognition = score_submission(read_submission(recognition_csv, "recognition"), data.recognition_solution)
    retrieval = score_submission(read_submission(retrieval_csv, "retrieval"), data.retrieval_solution)
    return {"gap": recognition["gap"], "map100": retrieval["map@100"]}


def train_config_for(data: LandmarkData, config_name: str, pretrained: str | Path | None = None):
    """The demo's training config: `config_name` with `DEFAULT_TRAIN_OVERRIDES`, on `data`,
    starting from the `pretrained` checkpoint when given."""
    from lmkcomp.train.config import TrainConfig, resolve_config_path

    changes = {**DEFAULT_TRAIN_OVERRIDES, "data.root": str(data.root)}
    if pretrained is not None:
        changes["model.pretrained"] = str(pretrained)
    return load_config(resolve_config_path(config_name), TrainConfig, changes)


def format_table(rows: list[DemoRow]) -> str:
    """A plain-text table: stage, GAP, mAP@100, seconds (a dash where a stage scores nothing)."""
    def metric(value: float | None) -> str:
        return f"{'-':>8}" if value is None else f"{value:>8.4f}"

    width = max(32, *(len(row.stage) for row in rows))
    lines = [f"{'stage':<{width}} {'GAP':>8} {'mAP@100':>8} {'time s':>8}", "-" * (width + 27)]
    lines += [f"{row.stage:<{width}} {metric(row.gap)} {metric(row.map100)} {row.seconds:>8.1f}" for row in rows]
    return "\n".join(lines)
