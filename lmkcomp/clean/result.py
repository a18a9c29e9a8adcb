"""What a cleaning method returns, how it is written, and how it is scored against ground truth."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lmkcomp.csvfile import read_table
from lmkcomp.data import gldv2
from lmkcomp.fileio import atomic_write

LANDMARK_TOO_SMALL = "landmark left with too few images"


@dataclass
class CleaningResult:
    """Per train image: kept or removed, and why removed."""

    method: str
    ids: list[str]
    landmark_ids: np.ndarray
    keep: np.ndarray
    reasons: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.reasons:
            self.reasons = ["" for _ in self.ids]

    def remove(self, positions, reason: str) -> None:
        """Mark rows at `positions` removed (the first reason given for a row is kept)."""
        for position in np.atleast_1d(positions):
            if self.keep[position]:
                self.keep[position] = False
                self.reasons[position] = reason

    def drop_small_landmarks(self, min_images: int) -> None:
        """Remove landmarks left with fewer than `min_images` kept images (GLDv2-clean has none)."""
        kept = pd.Series(self.landmark_ids[self.keep]).value_counts()
        small = set(kept[kept < min_images].index)
        self.remove(np.flatnonzero(self.keep & np.isin(self.landmark_ids, list(small))), LANDMARK_TOO_SMALL)


def write_result(result: CleaningResult, out: str | Path, noise_truth: str | Path | None = None) -> dict:
    """Write `train_clean.csv`, `removed.csv` and `report.json` into `out`; return the report."""
    out = Path(out)
    by_landmark: dict[int, list[str]] = defaultdict(list)
    for image_id, landmark, keep in zip(result.ids, result.landmark_ids, result.keep):
        if keep:
            by_landmark[int(landmark)].append(image_id)
    gldv2.write_train_clean_csv(out / "train_clean.csv", by_landmark)
    removed = [(i, int(lm), r) for i, lm, k, r in zip(result.ids, result.landmark_ids, result.keep, result.reasons) if not k]
    gldv2.write_csv_rows(out / "removed.csv", ["id", "landmark_id", "reason"], removed)
    reasons = pd.Series([r for _, _, r in removed], dtype=str).value_counts().to_dict()
    report = {
        "method": result.method,
        "settings": result.settings,
        "images": len(result.ids),
        "kept": int(result.keep.sum()),
        "removed": len(removed),
        "removed_by_reason": {str(k): int(v) for k, v in reasons.items()},
        "landmarks_before": int(len(set(result.landmark_ids.tolist()))),
        "landmarks_after": len(by_landmark),
    }
    if noise_truth is not None and Path(noise_truth).is_file():
        report["against_noise_truth"] = score_against_truth(result, noise_truth)
    with atomic_write(out / "report.json", "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
        handle.write("\n")
    return report


def score_against_truth(result: CleaningResult, noise_truth: str | Path) -> dict:
    """Precision and recall of noise removal against the synthetic `noise_truth.csv`.

    precision = |removed ∩ noisy| / |removed|; recall = |removed ∩ noisy| / |noisy|, over the
    images the method saw. Only evaluation reads the ground truth, never a method.
    """
    truth = read_table(noise_truth, ["id", "noise"]).frame.set_index("id")["noise"]
    noisy = truth.reindex(result.ids).fillna("none").to_numpy() != "none"
    removed = ~result.keep
    hits = int((removed & noisy).sum())
    return {
        "precision": hits / max(int(removed.sum()), 1),
        "recall": hits / max(int(noisy.sum()), 1),
        "noisy": int(noisy.sum()),
        "removed": int(removed.sum()),
        "good_images_lost": int((removed & ~noisy).sum()),
    }
