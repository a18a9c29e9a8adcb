"""Curriculum learning over regions (Boiarov & Tyantov 2019, Algorithm 1).

The training landmarks are divided into parts by region (the paper: Europe; North America and
Oceania; Middle East and North Africa; Far East). Stage ``k`` trains on the landmarks of parts
``1..k``. Between stages the backbone, the pooling and the neck's linear layer carry over; the
neck's batch norm, the classifier (rebuilt for the grown set of classes) and the Center loss's
centers start afresh (Algorithm 1, step 2). The trainer (`lmkcomp.train.trainer.Trainer`) runs
the stages when the config has a ``curriculum`` section.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from lmkcomp.csvfile import read_table, shown
from lmkcomp.errors import UserInputError
from lmkcomp.models.model import LandmarkModel

__all__ = ["Stage", "carry_over", "curriculum_stages", "read_regions", "stage_seed"]


@dataclass(frozen=True)
class Stage:
    """One curriculum stage: every region trained so far, and their training landmarks (sorted)."""

    number: int
    regions: tuple[str, ...]
    landmark_ids: tuple[int, ...]


def read_regions(path: str | Path, column: str = "region") -> dict[int, str]:
    """``landmark_id -> region`` from a CSV with a ``landmark_id`` and a `column` column.

    (``landmark_metadata.csv`` of the synthetic data, or any mapping a user provides.) Landmark
    ids must be non-negative integers, listed once, with a non-empty region; an error names the
    file and the line.
    """
    table = read_table(path, ["landmark_id", column])
    regions: dict[int, str] = {}
    for position, (landmark, region) in enumerate(zip(table.frame["landmark_id"], table.frame[column])):
        if not landmark.isdigit():
            raise table.error(position, f"landmark_id {shown(landmark)} is not a non-negative integer")
        if not region.strip():
            raise table.error(position, f"landmark {landmark} has an empty {column}")
        if int(landmark) in regions:
            raise table.error(position, f"duplicate landmark_id {landmark}")
        regions[int(landmark)] = region.strip()
    return regions


def curriculum_stages(landmark_ids: Sequence[int], regions: Mapping[int, str],
                      parts: Sequence[Sequence[str]] = ()) -> list[Stage]:
    """The stages over the training landmarks `landmark_ids`: stage ``k`` holds parts ``1..k``.

    `parts` lists the regions of each part in training order; empty, every region is a part
    of its own, the one with most training landmarks first (ties by name). Every training
    landmark must have a region, every region belong to exactly one part, and every part hold
    at least one training landmark: anything else is a UserInputError, since a landmark left
    out would be silently dropped from training.
    """
    missing = [landmark for landmark in landmark_ids if landmark not in regions]
    if missing:
        raise UserInputError(
            f"{len(missing)} training landmarks have no region (e.g. landmark {missing[0]}); "
            "add them to the curriculum's region CSV"
        )
    per_region = Counter(regions[landmark] for landmark in landmark_ids)
    if not parts:
        parts = [[region] for region in sorted(per_region, key=lambda r: (-per_region[r], r))]
    listed = [region for part in parts for region in part]
    repeated = sorted(region for region, count in Counter(listed).items() if count > 1)
    if repeated:
        raise UserInputError(f"curriculum.parts: region(s) {', '.join(repeated)} listed more than once")
    unknown = sorted(set(listed) - set(per_region))
    if unknown:
        raise UserInputError(
            f"curriculum.parts: region(s) {', '.join(unknown)} have no training landmark; "
            f"regions with landmarks: {', '.join(sorted(per_region))}"
        )
    unplaced = sorted(set(per_region) - set(listed))
    if unplaced:
        raise UserInputError(f"curriculum.parts: region(s) {', '.join(unplaced)} are in no part; add them to one")
    if any(not part for part in parts):
        raise UserInputError("curriculum.parts: every part needs at least one region")
    stages, so_far = [], []
    for number, part in enumerate(parts, start=1):
        so_far.extend(part)
        chosen = set(so_far)
        members = tuple(sorted(int(landmark) for landmark in landmark_ids if regions[landmark] in chosen))
        stages.append(Stage(number, tuple(so_far), members))
    return stages


def stage_seed(seed: int, stage: int) -> int:
    """Seed of the fresh parts of `stage` (a pure function, so a resumed run re-creates them)."""
    return int(np.random.SeedSequence([seed, stage, 0xC0DE]).generate_state(1)[0])


def carry_over(trained: LandmarkModel, fresh: LandmarkModel) -> None:
    """Copy what a curriculum keeps from the previous stage's model into the next stage's.

    The backbone, the pooling and every neck layer except batch norm come from `trained`;
    `fresh` keeps its own (freshly initialised) neck batch norm and head.
    """
    fresh.backbone.load_state_dict(trained.backbone.state_dict())
    fresh.pooling.load_state_dict(trained.pooling.state_dict())
    trained_neck = dict(trained.neck.named_modules())
    for name, module in fresh.neck.named_modules():
        if name and not list(module.children()) and not isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.load_state_dict(trained_neck[name].state_dict())
