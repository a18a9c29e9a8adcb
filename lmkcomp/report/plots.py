"""Matplotlib figures of the report, written as PNG files (Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:
    from lmkcomp.features.health import EmbeddingHealth


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


def similarity_histograms(health_by_name: Mapping[str, EmbeddingHealth], path: str | Path) -> Path:
    """One panel per named descriptor: the densities of its same-landmark and different-landmark
    cosine similarities overlaid, medians dashed, AUC and mean-vector norm in the title (red
    when near chance)."""
    from lmkcomp.features.health import histogram_edges

    plt = _pyplot()
    columns = min(len(health_by_name), 3)
    rows = -(-len(health_by_name) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 3.6 * rows), squeeze=False)
    edges = histogram_edges()
    for axis, (name, health) in zip(axes.flat, health_by_name.items()):
        for stats, label, colour in ((health.different, "different landmark", "#d8513b"),
                                     (health.same, "same landmark", "#2f9e44")):
            axis.stairs(stats.density(), edges, fill=True, alpha=0.35, color=colour,
                        label=f"{label} ({stats.count:,} pairs)")
            axis.stairs(stats.density(), edges, color=colour, linewidth=1.2)
            if stats.count:
                axis.axvline(stats.median, color=colour, linestyle="--", linewidth=1)
        auc = "-" if np.isnan(health.auc) else f"{health.auc:.3f}"
        warning = "  NEAR CHANCE" if health.near_chance else ""
        axis.set_title(f"{name}\nAUC {auc}, mean-vector norm {health.mean_norm:.3f}{warning}", fontsize=10,
                       color="#c92a2a" if health.near_chance else "black")
        axis.set_xlim(-1, 1)
        # headroom above the peak for the legend
        peak = max(health.same.density().max(), health.different.density().max())
        axis.set_ylim(0, 1.4 * peak if peak > 0 else 1.0)
        axis.set_xlabel("cosine similarity (dashed: median)")
        axis.set_ylabel("density")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc="upper left")
    for axis in list(axes.flat)[len(health_by_name):]:
        axis.set_visible(False)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)
