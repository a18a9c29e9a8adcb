"""One image's local features: keypoint locations, descriptors, scales and scores, row-aligned.

Every extractor (SIFT, RootSIFT, DELF, ...) returns this record, the store keeps it, and
matching and verification read it, so the conventions below hold everywhere:

- `locations`: N x 2 float32, (x, y) in pixels of the ORIGINAL image, whatever size the
  extractor worked at; pixel centres are at integer coordinates (OpenCV's convention).
- `descriptors`: N x D float32 or float16, each row L2-normalised by the extractor.
- `scales`: N float32, the feature's size in original-image pixels (what "size" means is the
  extractor's: SIFT's keypoint diameter, DELF's receptive field at its image scale).
- `scores`: N float32, larger is better (SIFT's detector response, DELF's attention).
- `image_size`: (width, height) of the original image in pixels, or None where unknown (a
  record built by hand, or read from a store written before sizes were recorded).
  Verification measures its tolerances relative to it (`lmkcomp.local.verify`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

DESCRIPTOR_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))


# eq=False: == on records of arrays would be ambiguous; compare the arrays instead.
@dataclass(frozen=True, eq=False)
class LocalFeatures:
    """The local features of one image; rows of the four arrays describe the same feature.

    Construction converts `locations`, `scales` and `scores` to float32 and keeps float16 or
    float32 descriptors as they are (other dtypes become float32); arrays that already have
    the right dtype are kept without a copy, so a record may hold read-only memory-mapped
    views. Raises ValueError for inconsistent shapes, non-finite values or an `image_size`
    that is not two positive integers.
    """

    locations: np.ndarray
    descriptors: np.ndarray
    scales: np.ndarray
    scores: np.ndarray
    image_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        locations = np.asarray(self.locations, dtype=np.float32)
        descriptors = np.asarray(self.descriptors)
        if descriptors.dtype not in DESCRIPTOR_DTYPES:
            descriptors = descriptors.astype(np.float32)
        scales = np.asarray(self.scales, dtype=np.float32)
        scores = np.asarray(self.scores, dtype=np.float32)
        if locations.ndim != 2 or locations.shape[1] != 2:
            raise ValueError(f"locations must be N x 2 (x, y), got shape {locations.shape}")
        count = locations.shape[0]
        if descriptors.ndim != 2 or descriptors.shape[0] != count or descriptors.shape[1] < 1:
            raise ValueError(f"descriptors must be {count} x D with D >= 1, got shape {descriptors.shape}")
        for name, array in (("scales", scales), ("scores", scores)):
            if array.shape != (count,):
                raise ValueError(f"{name} must have shape ({count},), got {array.shape}")
        for name, array in (("locations", locations), ("descriptors", descriptors),
                            ("scales", scales), ("scores", scores)):
            if not np.isfinite(array).all():
                raise ValueError(f"{name} holds non-finite values")
        image_size = _checked_image_size(self.image_size)
        # Frozen dataclass: the converted values replace the given ones once, here.
        object.__setattr__(self, "locations", locations)
        object.__setattr__(self, "descriptors", descriptors)
        object.__setattr__(self, "scales", scales)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "image_size", image_size)

    @classmethod
    def empty(cls, dim: int, dtype: np.dtype | type = np.float32) -> LocalFeatures:
        """A record with no features and `dim`-dimensional descriptors (an image without any)."""
        if dim < 1:
            raise ValueError(f"dim must be at least 1, got {dim}")
        return cls(np.zeros((0, 2), np.float32), np.zeros((0, dim), dtype),
                   np.zeros(0, np.float32), np.zeros(0, np.float32))

    def __len__(self) -> int:
        return self.locations.shape[0]

    @property
    def dim(self) -> int:
        """Descriptor dimension D."""
        return self.descriptors.shape[1]

    def in_memory(self) -> LocalFeatures:
        """A copy whose arrays are in memory (not views of a memory-mapped store), size kept."""
        return LocalFeatures(np.array(self.locations), np.array(self.descriptors), np.array(self.scales),
                             np.array(self.scores), self.image_size)

    def select(self, rows: ArrayLike) -> LocalFeatures:
        """The features at `rows` (integer indices or a boolean mask), in that order."""
        rows = np.asarray(rows)
        return LocalFeatures(self.locations[rows], self.descriptors[rows], self.scales[rows], self.scores[rows],
                             self.image_size)

    def top_k(self, k: int) -> LocalFeatures:
        """The `min(k, N)` features of highest score, in decreasing score order.

        Equal scores keep their original order, so the selection is deterministic.
        """
        if k < 0:
            raise ValueError(f"k must be non-negative, got {k}")
        order = np.argsort(-self.scores, kind="stable")[:k]
        return self.select(order)


def _checked_image_size(image_size: object) -> tuple[int, int] | None:
    """`image_size` as a (width, height) tuple of Python ints, None kept; ValueError otherwise."""
    if image_size is None:
        return None
    values = tuple(image_size) if isinstance(image_size, (tuple, list, np.ndarray)) else ()
    if len(values) != 2 or any(isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 1
                               for v in values):
        raise ValueError(f"image_size must be (width, height), two positive integers, got {image_size!r}")
    return int(values[0]), int(values[1])
