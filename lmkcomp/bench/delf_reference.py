"""An outside reference for `lmkcomp bench verify`: the official DELF example's verification of
a pair, written from its description with the libraries it names, and sharing no code with
the kit's matching or RANSAC.

Image 1 is a, image 2 is b. A k-d tree (scipy's cKDTree) is built on a's descriptors and
queried with each of b's; b_j matches its nearest a_i when they are closer than 0.8. Then
scikit-image's `ransac` fits an `AffineTransform` from the matched locations in a to those in
b (3 points a sample, residual threshold 20 px, 1000 trials); the pair's score is its number
of inliers. The example leaves RANSAC unseeded; here every pair's RANSAC draws from a generator
seeded with `seed`, so a rerun gives the same scores. scikit-image is optional (the `bench`
extra).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from lmkcomp.errors import UserInputError
from lmkcomp.local.record import LocalFeatures

try:
    from skimage.measure import ransac
    from skimage.transform import AffineTransform
except ImportError:  # optional: the bench skips the reference without it
    ransac = AffineTransform = None

MAX_DISTANCE = 0.8
RESIDUAL = 20.0
TRIALS = 1000
MIN_SAMPLES = 3


@dataclass(frozen=True)
class OfficialDelfReference:
    """`inliers(a, b)`: the official example's score of the pair, RANSAC seeded with `seed`."""

    seed: int = 0

    def __post_init__(self) -> None:
        if ransac is None:
            raise UserInputError("the official-style reference needs scikit-image: pip install 'lmkcomp[bench]'")

    def inliers(self, a: LocalFeatures, b: LocalFeatures) -> int:
        distance, nearest = cKDTree(np.asarray(a.descriptors, np.float32)).query(
            np.asarray(b.descriptors, np.float32), distance_upper_bound=MAX_DISTANCE)
        matched = np.isfinite(distance)  # a query without a neighbour that close gets distance inf
        if matched.sum() < MIN_SAMPLES:
            return 0
        source = np.asarray(a.locations, np.float64)[nearest[matched]]
        target = np.asarray(b.locations, np.float64)[matched]
        _, inliers = ransac((source, target), AffineTransform, min_samples=MIN_SAMPLES, residual_threshold=RESIDUAL,
                            max_trials=TRIALS, rng=self.seed)
        return 0 if inliers is None else int(inliers.sum())
