"""SIFT and RootSIFT local features with OpenCV.

RootSIFT (Arandjelovic & Zisserman, 2012) maps a SIFT descriptor d >= 0 to sqrt(d / |d|_1),
so that the Euclidean distance of RootSIFT vectors is the Hellinger kernel distance of the
SIFT histograms; the result is then L2-normalised (it already has unit L2 norm up to rounding).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar

import cv2
import numpy as np

from lmkcomp.data.images import fit_within
from lmkcomp.errors import UserInputError
from lmkcomp.local.record import LocalFeatures

_EPS = 1e-12


@dataclass(frozen=True)
class SiftExtractor:
    """OpenCV SIFT keypoints and descriptors, at most `max_features` of highest response.

    - `root`: RootSIFT descriptors instead of L2-normalised SIFT.
    - `max_side`: when the image's long side exceeds it, detect on a copy downscaled (area
      interpolation) to that long side; locations and scales are mapped back to the pixels
      of the given image. None: detect at full resolution. The default, 1024, is for photos:
      at full resolution the 1000 strongest keypoints of a 4,000 px photo are fine texture
      that no other view repeats (4x-upscaled realdev photos, `fast`: ROC AUC 0.87 at full
      resolution, 0.91 at 1024 as on the originals), and detection costs 16x the pixels.
      Renders of 256 px are not affected.
    - `max_features`: 1000 by default; 2000 ranked realdev pairs better (AUC 0.94-0.95 vs
      0.90-0.92) at 2-3x the matching time per pair, a choice left to the user.
    - `contrast_threshold`: OpenCV's contrastThreshold (lower finds more, weaker keypoints).

    Output: `image_size` = the given image's (width, height); locations (x, y) in its pixels;
    scales = OpenCV keypoint diameter in those pixels; scores = detector response; float32
    unit-L2 descriptors (D = 128). Rows are sorted by decreasing response (ties by x, y, size, angle), so the output does
    not depend on the order OpenCV's threads produce keypoints in.
    """

    root: bool = False
    max_features: int = 1000
    max_side: int | None = 1024
    contrast_threshold: float = 0.04

    dim: ClassVar[int] = 128

    def __post_init__(self) -> None:
        if isinstance(self.max_features, bool) or not isinstance(self.max_features, int) or self.max_features < 1:
            raise UserInputError(f"max_features must be a positive integer, got {self.max_features!r}")
        if self.max_side is not None and (
                isinstance(self.max_side, bool) or not isinstance(self.max_side, int) or self.max_side < 16):
            raise UserInputError(f"max_side must be an integer of at least 16 or None, got {self.max_side!r}")
        if not 0 < self.contrast_threshold < math.inf:
            raise UserInputError(f"contrast_threshold must be positive and finite, got {self.contrast_threshold!r}")

    @property
    def method(self) -> str:
        return "rootsift" if self.root else "sift"

    def settings(self) -> dict[str, Any]:
        return {"method": self.method, **{k: v for k, v in asdict(self).items() if k != "root"}}

    def extract(self, image_rgb: np.ndarray) -> LocalFeatures:
        """Features of an H x W x 3 uint8 RGB image; ValueError for another array."""
        if image_rgb.dtype != np.uint8 or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
            raise ValueError(f"expected an H x W x 3 uint8 RGB array, got shape {image_rgb.shape} "
                             f"dtype {image_rgb.dtype}")
        gray = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY)
        height, width = gray.shape
        scale_x = scale_y = 1.0
        if self.max_side is not None and max(height, width) > self.max_side:
            small_w, small_h = fit_within((width, height), self.max_side)
            gray = cv2.resize(gray, (small_w, small_h), interpolation=cv2.INTER_AREA)
            scale_x, scale_y = width / small_w, height / small_h
        # nfeatures makes OpenCV drop weak keypoints before computing descriptors; it may keep
        # a few more (ties at the cut), which the exact cut below removes.
        sift = cv2.SIFT_create(nfeatures=self.max_features, contrastThreshold=self.contrast_threshold)
        keypoints, descriptors = sift.detectAndCompute(gray, None)
        if not keypoints:
            return replace(LocalFeatures.empty(self.dim), image_size=(width, height))
        xy = cv2.KeyPoint_convert(keypoints).astype(np.float64)
        response = np.array([kp.response for kp in keypoints], dtype=np.float32)
        size = np.array([kp.size for kp in keypoints], dtype=np.float64)
        angle = np.array([kp.angle for kp in keypoints], dtype=np.float64)
        order = np.lexsort((angle, size, xy[:, 1], xy[:, 0], -response))[:self.max_features]
        # Pixel centres sit at integer coordinates, so a pixel's extent [x - 0.5, x + 0.5)
        # scales about -0.5, not about 0.
        locations = np.stack([(xy[order, 0] + 0.5) * scale_x - 0.5, (xy[order, 1] + 0.5) * scale_y - 0.5], axis=1)
        return LocalFeatures(
            locations=locations.astype(np.float32),
            descriptors=self._normalise(descriptors[order].astype(np.float32)),
            scales=(size[order] * np.sqrt(scale_x * scale_y)).astype(np.float32),
            scores=response[order],
            image_size=(width, height),
        )

    def _normalise(self, descriptors: np.ndarray) -> np.ndarray:
        if self.root:
            # SIFT histograms are non-negative; the abs only guards against -0.0.
            l1 = np.abs(descriptors).sum(axis=1, keepdims=True)
            descriptors = np.sqrt(np.abs(descriptors) / np.maximum(l1, _EPS))
        norms = np.linalg.norm(descriptors, axis=1, keepdims=True)
        return descriptors / np.maximum(norms, _EPS)
