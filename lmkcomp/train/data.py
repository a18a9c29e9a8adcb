"""Training data: labels, the held-out validation part, label mapping, non-landmark images and
bucketed images."""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import numpy as np
import pandas as pd
from tqdm import tqdm

from lmkcomp.csvfile import read_table
from lmkcomp.data import gldv2
from lmkcomp.data.dataset import LandmarkImageDataset
from lmkcomp.data.images import read_image_size
from lmkcomp.data.labels import read_labels
from lmkcomp.data.layout import LandmarkData
from lmkcomp.errors import ImageLoadError, UserInputError
from lmkcomp.train.augment import create_transform, sample_seed
from lmkcomp.train.samplers import BatchItem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingSplit:
    """Train and held-out validation images with their class indices."""

    train_ids: list[str]
    train_classes: np.ndarray
    val_ids: list[str]
    val_classes: np.ndarray
    #: class index -> landmark id (sorted landmark ids)
    landmark_ids: list[int]

    @property
    def class_counts(self) -> np.ndarray:
        return np.bincount(self.train_classes, minlength=len(self.landmark_ids))


def split_for_training(labels: pd.DataFrame, min_images: int, val_fraction: float, seed: int) -> TrainingSplit:
    """Drop classes with fewer than `min_images`; hold out about `val_fraction` of the images of
    classes with at least 3 (never leaving fewer than 2 for training) as validation queries."""
    counts = labels["landmark_id"].value_counts()
    kept = labels[labels["landmark_id"].map(counts) >= min_images].reset_index(drop=True)
    if kept.empty:
        raise UserInputError(f"no landmark has at least {min_images} training images")
    rng = np.random.default_rng([seed, 0x5A1])
    held_out = np.zeros(len(kept), dtype=bool)
    for _, positions in sorted(kept.groupby("landmark_id").indices.items()):
        n = len(positions)
        if n < 3:
            continue
        take = min(int(np.floor(val_fraction * n + rng.random())), n - 2)
        held_out[rng.choice(positions, size=take, replace=False)] = True
    train, val = kept[~held_out], kept[held_out]
    landmark_ids = sorted(int(x) for x in train["landmark_id"].unique())
    to_class = {landmark: i for i, landmark in enumerate(landmark_ids)}
    return TrainingSplit(
        train["id"].tolist(), train["landmark_id"].map(to_class).to_numpy(np.int64),
        val["id"].tolist(), val["landmark_id"].map(to_class).to_numpy(np.int64), landmark_ids,
    )


def restrict_split(split: TrainingSplit, landmark_ids: Collection[int]) -> tuple[TrainingSplit, np.ndarray, np.ndarray]:
    """The part of `split` on the landmarks in `landmark_ids`, and the positions of its train and
    val images in `split`.

    Classes are renumbered over the kept landmarks (sorted, as in `split_for_training`), so class
    ``i`` of the result is landmark ``result.landmark_ids[i]``.
    """
    kept = np.isin(np.asarray(split.landmark_ids, dtype=np.int64), np.fromiter(landmark_ids, dtype=np.int64))
    new_class = np.cumsum(kept) - 1  # old class -> new class, where kept
    train_positions = np.flatnonzero(kept[split.train_classes])
    val_positions = np.flatnonzero(kept[split.val_classes])
    restricted = TrainingSplit(
        [split.train_ids[i] for i in train_positions], new_class[split.train_classes[train_positions]],
        [split.val_ids[i] for i in val_positions], new_class[split.val_classes[val_positions]],
        [landmark for landmark, keep in zip(split.landmark_ids, kept) if keep],
    )
    return restricted, train_positions, val_positions


def data_file(root: str | Path, name: str, key: str) -> Path:
    """The file that the config key `key` names (``data.non_landmarks``, ``curriculum.regions_csv``).

    An absolute `name` is taken as given: the user chose that file outright. A relative one is
    inside the data root `root`, and must stay there: one that leads outside it, through ``..``
    or a symbolic link (both resolved), is a UserInputError naming the key and the path.
    """
    path = Path(name)
    if path.is_absolute():
        return path
    inside = Path(root) / path
    base = Path(root).resolve()
    if not inside.resolve().is_relative_to(base):
        raise UserInputError(f"{key}: {name} leads outside the data root {base}; a relative path must "
                             "stay inside it (give an absolute path for a file elsewhere)")
    return inside


#: the size given to an image whose header cannot be read when bad images are skipped: it only
#: places the image in a bucket (the square one), and loading it later skips it and counts it
UNREADABLE_SIZE = (1, 1)


def image_sizes(data: LandmarkData, split: str, ids: list[str], cache: Path | None = None,
                progress: bool = True, on_error: str = "raise") -> list[tuple[int, int]]:
    """(width, height) of every image, read from file headers; cached in `cache` (CSV).

    An image whose header cannot be read raises ImageLoadError, or with ``on_error="skip"``
    gets `UNREADABLE_SIZE` and stays out of the cache (a repaired file is read next time).
    """
    known: dict[str, tuple[int, int]] = {}
    if cache is not None and cache.is_file():
        frame = read_table(cache, ["id", "width", "height"]).frame
        known = {i: (int(w), int(h)) for i, w, h in zip(frame["id"], frame["width"], frame["height"])}
    missing = [i for i in ids if i not in known]
    unreadable: set[str] = set()
    for image_id in tqdm(missing, desc=f"image sizes {split}", unit="img", disable=not progress or not missing):
        try:
            known[image_id] = read_image_size(data.image_path(split, image_id))
        except ImageLoadError as error:
            if on_error == "raise":
                raise
            # reported (and counted) once, when the image itself is loaded and skipped
            log.debug("no size for %s: %s", error.path, error.reason)
            unreadable.add(image_id)
    if cache is not None and len(unreadable) < len(missing):
        gldv2.write_csv_rows(cache, ["id", "width", "height"], ((i, *known[i]) for i in sorted(known)))
    return [UNREADABLE_SIZE if i in unreadable else known[i] for i in ids]


class BucketedImageDataset(LandmarkImageDataset):
    """Takes `BatchItem` keys: each sample is produced at its batch's (height, width) by the
    named augmentation, seeded from (seed, epoch, index)."""

    def __init__(self, *args, augment: str = "none", seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.augment = augment
        self.seed = seed
        self._pipelines: dict[tuple[int, int], A.Compose] = {}

    def _index(self, key: BatchItem) -> int:
        return key.index

    def _transform(self, image: np.ndarray, key: BatchItem):
        shape = (key.height, key.width)
        if shape not in self._pipelines:
            self._pipelines[shape] = create_transform(self.augment, *shape)
        pipeline = self._pipelines[shape]
        pipeline.set_random_seed(sample_seed(self.seed, key.epoch, key.index))
        return pipeline(image=image)["image"]
