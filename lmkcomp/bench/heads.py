"""`lmkcomp bench heads`: train one config with each head (and GeM vs average pooling) and score
every model on the test split with the official metrics, side by side."""

from __future__ import annotations

import copy
from pathlib import Path

from lmkcomp.bench.common import report
from lmkcomp.config import apply_override, from_dict, to_dict
from lmkcomp.data.layout import LandmarkData
from lmkcomp.evaluate import evaluate_checkpoint
from lmkcomp.train.config import TrainConfig
from lmkcomp.train.trainer import CHECKPOINT, Trainer, run_is_finished

VARIANTS: dict[str, dict] = {
    "softmax": {"model.head": "softmax"},
    "arcface": {"model.head": "arcface"},
    "cosface": {"model.head": "cosface"},
    "subcenter_arcface+dynamic": {"model.head": "subcenter_arcface", "model.dynamic_margin": True},
    "arcface+avg_pool": {"model.head": "arcface", "model.pooling": "avg"},
}


def run_heads_benchmark(base: TrainConfig, workdir: str | Path, out: str | Path, variants: list[str] | None = None,
                        progress: bool = True) -> str:
    """Train (or resume, or reuse) each variant in `workdir/<name>`, evaluate it, return the table."""
    workdir = Path(workdir)
    data = LandmarkData(base.data.root, base.data.layout)
    rows = []
    for name in variants or list(VARIANTS):
        values = copy.deepcopy(to_dict(base))
        for key, value in VARIANTS[name].items():
            apply_override(values, key, value)
        config = from_dict(TrainConfig, values)
        run = workdir / name
        if not run_is_finished(run, config):
            history = Trainer(config, run, resume=(run / CHECKPOINT).is_file(), progress=progress).fit()
        else:
            history = []
        scores = evaluate_checkpoint(run / CHECKPOINT, data, run / "features", f"bench-{name}",
                                     submissions=workdir / "submissions", device=config.device,
                                     workers=config.workers, progress=progress)
        train_seconds = sum(row["seconds"] for row in history) if history else float("nan")
        rows.append({"name": name, "map@100": scores["map@100"], "gap": scores["gap"],
                     "top1_accuracy": scores["top1_accuracy"], "auc": scores["auc"], "mean_norm": scores["mean_norm"],
                     "train_seconds": train_seconds})
    title = f"bench heads: {base.model.backbone} at {base.image_size}px, {base.total_epochs} epochs, {data.root}"
    columns = [("name", "variant"), ("map@100", "mAP@100"), ("gap", "GAP"), ("top1_accuracy", "top-1"),
               ("auc", "test-index AUC"), ("mean_norm", "mean norm"), ("train_seconds", "train s")]
    return report(title, rows, columns, out, ratio_of="map@100")
