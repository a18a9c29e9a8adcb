"""A torch `Dataset` over one split of a GLDv2-layout dataset root."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate, get_worker_info

from lmkcomp.data.images import load_image_rgb
from lmkcomp.data.layout import LandmarkData
from lmkcomp.errors import ImageLoadError, UserInputError

log = logging.getLogger(__name__)

ON_ERROR = ("raise", "skip")


@dataclass(frozen=True)
class SkippedImage:
    """Stands in for a sample whose image could not be loaded (with ``on_error="skip"``)."""

    index: int
    image_id: str
    path: str
    reason: str


class LandmarkImageDataset(Dataset):
    """Images of `split` with optional labels and an albumentations transform.

    A sample is a dict: ``image`` (a CHW float tensor in [0, 1] unless the transform returns a
    tensor itself), ``label`` (int, -1 when unlabelled), ``id`` and ``index``.

    With ``on_error="raise"`` (the default) an unreadable image raises `ImageLoadError` naming
    the file. With ``on_error="skip"`` it is logged and a `SkippedImage` is returned instead;
    `collate_skipping` removes those from the batch and lists them under ``"skipped"`` so the
    caller counts them: nothing is dropped silently. In a DataLoader worker process the
    image's `SkippedImage` is returned in both modes, and `checked_batches` raises its error
    in the caller's process (see there why).
    """

    def __init__(
        self,
        data: LandmarkData,
        split: str,
        ids: Sequence[str] | None = None,
        labels: Sequence[int] | None = None,
        transform: Callable | None = None,
        max_side: int | None = None,
        on_error: str = "raise",
    ):
        if on_error not in ON_ERROR:
            raise UserInputError(f"on_error must be one of {', '.join(ON_ERROR)}, not {on_error!r}")
        self.data = data
        self.split = split
        self.ids = list(data.split_ids(split) if ids is None else ids)
        if labels is not None and len(labels) != len(self.ids):
            raise ValueError(f"{len(labels)} labels for {len(self.ids)} ids")
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        self.transform = transform
        self.max_side = max_side
        self.on_error = on_error

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key):
        index = self._index(key)
        image_id = self.ids[index]
        path = self.data.image_path(self.split, image_id)
        try:
            image = load_image_rgb(path, max_side=self.max_side)
        except ImageLoadError as error:
            if self.on_error == "raise" and get_worker_info() is None:
                raise
            if self.on_error == "skip":
                log.warning("skipping %s: %s", error.path, error.reason)
            return SkippedImage(index, image_id, error.path, error.reason)
        image = self._transform(image, key)
        if not isinstance(image, torch.Tensor):
            image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)
        label = -1 if self.labels is None else int(self.labels[index])
        return {"image": image, "label": label, "id": image_id, "index": index}


    def _index(self, key) -> int:
        """The sample position a key names (subclasses may take richer keys)."""
        return key

    def _transform(self, image: np.ndarray, key):
        return image if self.transform is None else self.transform(image=image)["image"]


def checked_batches(loader: DataLoader | Iterable[dict], on_error: str) -> Iterator[dict]:
    """The batches of `loader` (over a `LandmarkImageDataset`, collated by `collate_skipping`).

    With ``on_error="raise"`` the first image a worker process handed back as skipped raises
    its `ImageLoadError` here, in the caller's process: torch re-raises an exception from a
    worker as a RuntimeError whose message is the worker's traceback, not the one-line error.
    """
    for batch in loader:
        if on_error == "raise" and batch["skipped"]:
            first = batch["skipped"][0]
            raise ImageLoadError(first.path, first.reason)
        yield batch


def collate_skipping(batch: list) -> dict:
    """Collate the loadable samples; list the `SkippedImage`s under ``"skipped"``."""
    skipped = [item for item in batch if isinstance(item, SkippedImage)]
    samples = [item for item in batch if not isinstance(item, SkippedImage)]
    collated = default_collate(samples) if samples else {"image": None, "label": None, "id": [], "index": None}
    collated["skipped"] = skipped
    return collated
