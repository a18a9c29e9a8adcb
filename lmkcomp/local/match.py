"""Putative matches between the local descriptors of two images, computed on whole matrices.

Descriptors are taken to be L2-normalised (the `LocalFeatures` convention), so the Euclidean
distance follows from the dot product: |a - b|^2 = 2 - 2 a.b. Both functions return
`(idx_a, idx_b)`, int64 arrays of equal length: feature `idx_a[i]` of image a matches feature
`idx_b[i]` of image b (in increasing order of `idx_a` for mutual matches, of `idx_b` for the
k-d tree's).
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import ArrayLike
from scipy.spatial import cKDTree

_NO_MATCHES = (np.zeros(0, np.int64), np.zeros(0, np.int64))


def as_float32(descriptors: ArrayLike) -> np.ndarray:
    """`descriptors` as float32 (no copy when they already are).

    Stores hold float16. numpy converts float16 one element at a time (about 20x slower than
    OpenCV's vectorised conversion, which made it a third of the `fast` preset's matching
    time); a product by 1 through OpenCV converts exactly. Only 2-D arrays take that path:
    OpenCV would read a third axis as channels.
    """
    array = np.asarray(descriptors)
    if array.dtype == np.float16 and array.ndim == 2 and array.size:
        return cv2.multiply(array, 1.0, dtype=cv2.CV_32F)
    return np.asarray(array, dtype=np.float32)


def _as_matrices(desc_a: ArrayLike, desc_b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    a = as_float32(desc_a)
    b = as_float32(desc_b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"descriptors must be N x D and M x D matrices, got shapes {a.shape} and {b.shape}")
    return a, b


def _distance(similarity: np.ndarray) -> np.ndarray:
    """Euclidean distance of unit vectors from their dot product (clipped against rounding)."""
    return np.sqrt(np.maximum(2.0 - 2.0 * similarity, 0.0))


def mutual_nearest_neighbours(desc_a: ArrayLike, desc_b: ArrayLike, max_distance: float | None = None,
                              ratio: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, j) where b_j is a_i's nearest neighbour in b and a_i is b_j's nearest in a.

    Optional filters, both on Euclidean distances:
    - `max_distance`: keep pairs with |a_i - b_j| < max_distance;
    - `ratio` (Lowe's test): keep pairs with |a_i - b_j| < ratio * |a_i - b_k|, where b_k is
      a_i's second-nearest neighbour in b; with a single descriptor in b there is no second
      neighbour and the test passes.
    Ties between equidistant neighbours go to the lower index.
    """
    a, b = _as_matrices(desc_a, desc_b)
    if len(a) == 0 or len(b) == 0:
        return _NO_MATCHES
    similarity = a @ b.T
    nearest_in_b = similarity.argmax(axis=1)
    nearest_in_a = similarity.argmax(axis=0)
    idx_a = np.flatnonzero(nearest_in_a[nearest_in_b] == np.arange(len(a)))
    idx_b = nearest_in_b[idx_a]
    keep = np.ones(len(idx_a), dtype=bool)
    distance = _distance(similarity[idx_a, idx_b])
    if max_distance is not None:
        keep &= distance < max_distance
    if ratio is not None and len(b) > 1:
        # A row's second-largest similarity is its maximum once its largest is masked out (a
        # masked max is about twice as fast as a partition of the row).
        rows = similarity[idx_a]
        rows[np.arange(len(idx_a)), idx_b] = -np.inf
        keep &= distance < ratio * _distance(rows.max(axis=1))
    return idx_a[keep], idx_b[keep].astype(np.int64)


def kdtree_matches(desc_a: ArrayLike, desc_b: ArrayLike, max_distance: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """The official DELF example's matching: each b_j to its nearest a_i if |a_i - b_j| < max_distance.

    As in the example (image 1 = a, image 2 = b), a k-d tree is built on a and queried with
    every b_j within `max_distance`; features of b with no neighbour that close are dropped.
    Not mutual: several b_j may match one a_i, so the repeats fall on a's side. That side
    matters: an affine map a -> b cannot send one point of a to several far-apart points of b,
    whereas with repeats on b's side (one b_j for many a_i) a degenerate map that squashes a
    line of a onto b_j collects every a_i on that line as an inlier.
    """
    a, b = _as_matrices(desc_a, desc_b)
    if len(a) == 0 or len(b) == 0:
        return _NO_MATCHES
    distance, nearest = cKDTree(a).query(b, k=1, distance_upper_bound=max_distance)
    idx_b = np.flatnonzero(np.isfinite(distance))
    return nearest[idx_b].astype(np.int64), idx_b
