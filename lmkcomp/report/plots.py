"""Matplotlib figures of the report, written as PNG files (Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def stage_bars(stages: Sequence[str], gap: Sequence[float], map100: Sequence[float], path: str | Path) -> Path:
    """Two horizontal bar charts side by side, GAP and mAP@100 per stage, stages top to bottom."""
    plt = _pyplot()
    positions = np.arange(len(stages))
    figure, axes = plt.subplots(1, 2, figsize=(11, 0.45 * len(stages) + 1.6), sharey=True)
    for axis, values, title, colour in ((axes[0], gap, "recognition GAP", "#3b7dd8"),
                                        (axes[1], map100, "retrieval mAP@100", "#d8813b")):
        axis.barh(positions, values, color=colour)
        axis.set_title(title)
        axis.set_xlim(0, max(max(values, default=0.0) * 1.2, 0.05))
        for y, value in zip(positions, values):
            axis.text(value, y, f" {value:.4f}", va="center", fontsize=8)
        axis.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(positions, stages)
    axes[0].invert_yaxis()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)


def precision_recall(curves: Mapping[str, tuple[np.ndarray, np.ndarray, float]], path: str | Path) -> Path:
    """Precision against recall of recognition confidences, one line per method.

    `curves` maps a label to (precision, recall, GAP) as `metrics.recognition_precision_recall`
    and `metrics.global_average_precision` give them."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 4.8))
    for label, (precision, recall, gap) in curves.items():
        axis.plot(np.concatenate([[0.0], recall]), np.concatenate([[precision[0] if len(precision) else 0.0], precision]),
                  label=f"{label} (GAP {gap:.3f})")
    axis.set_xlabel("recall (correct predictions / landmark test images)")
    axis.set_ylabel("precision (correct / predictions ranked so far)")
    axis.set_title("recognition: predictions ranked by confidence")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.02)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="upper right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)
