"""Geometric verification of an image pair: putative matches, a robust model fit, a score.

`verify_pair` matches the two images' descriptors (`match`), fits a geometric model to the
matched locations with RANSAC and reports the number of putative matches, the number of
inliers (the pair's score, as in DELF) and the area of the convex hull of the inliers in
image a (a saliency score: many inliers crowded in a small patch are weaker evidence than
the same number spread over a building).

Models (the `VERIFIERS` registry), each with a residual threshold in pixels, an iteration
budget, a confidence and a seed, and each reproducible: the same inputs and seed give the
same inliers, in any process and after any other call.

- `homography` and `fundamental`: pydegensac's LO-RANSAC / DEGENSAC. pydegensac 0.3 takes a
  `seed` per call: equal inputs and seed give equal inliers, other seeds other samples (both
  checked by the tests).
- `magsac`: a homography by OpenCV's USAC with MAGSAC++ scoring (what `cv2.USAC_MAGSAC`
  selects), configured through `cv2.UsacParams` because only they take a seed
  (`randomGeneratorState`; the `cv2.USAC_MAGSAC` flag always starts from one fixed state), and
  single-threaded (`isParallel` off) so that thread scheduling cannot change the result.
- `poselib`: a homography by poselib's LO-RANSAC with its non-linear refinement, seeded through
  its RANSAC options; poselib is an optional package (`pip install poselib`).
- `affine`: OpenCV `estimateAffine2D` with RANSAC and Levenberg-Marquardt refinement.
  OpenCV's RANSAC draws from a generator of fixed state created inside each call, not from
  the process-global `cv::theRNG()`, so `cv2.setRNGSeed` has no effect on it (the tests check
  this). To make `seed` select the sample sequence all the same, the correspondences are
  handed to OpenCV in a seeded random order.
- `delf-affine`: the official DELF example's affine RANSAC, seeded (`ransac.ransac_affine`).

Presets (`VERIFY_PRESETS`): `fast`, the default (mutual nearest neighbours with Lowe's ratio
0.8, pydegensac `homography` with a 6 px residual at confidence 0.999); `fast-magsac`, `fast`
with the `magsac` homography at confidence 0.9999 (more pairs/s, slightly different inlier
counts: see the comment on `VERIFY_PRESETS`); and `official-delf` (the DELF example: k-d tree
matches below distance 0.8, affine RANSAC with a 20 px residual and 1000 trials).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, Protocol

import cv2
import numpy as np
import pydegensac

from lmkcomp.config import preset_with_overrides
from lmkcomp.errors import UserInputError
from lmkcomp.local.match import kdtree_matches, mutual_nearest_neighbours
from lmkcomp.local.ransac import ransac_affine
from lmkcomp.local.record import LocalFeatures
from lmkcomp.registry import Registry

try:
    import poselib
except ImportError:  # optional: only the `poselib` verifier needs it
    poselib = None

MATCHERS = ("mutual", "kdtree")
_MAX_SEED = 2**31 - 1  # pydegensac takes a C int


@dataclass(frozen=True, eq=False)
class GeometricFit:
    """A RANSAC result: `model` (3 x 3, maps or relates a to b; None when none was found) and
    `inliers`, a boolean mask over the correspondences."""

    model: np.ndarray | None
    inliers: np.ndarray


class Verifier(Protocol):
    """A robust geometric model fit between the matched locations of image a and image b."""

    name: str
    #: the fewest correspondences the model can be fitted to
    min_samples: int

    def fit(self, points_a: np.ndarray, points_b: np.ndarray) -> GeometricFit:
        """Fit to correspondences points_a[i] <-> points_b[i] (N x 2 each, N >= min_samples)."""
        ...


VERIFIERS: Registry[Verifier] = Registry("verifier")


@dataclass(frozen=True)
class _RansacSettings:
    """What every verifier takes: residual threshold (px), iteration budget, confidence, seed."""

    residual: float
    iterations: int
    confidence: float
    seed: int

    def __post_init__(self) -> None:
        _check_ransac_settings(self.residual, self.iterations, self.confidence, self.seed)


def _check_ransac_settings(residual: float, iterations: int, confidence: float, seed: int) -> None:
    if not 0 < residual < math.inf:
        raise UserInputError(f"residual must be a positive, finite number of pixels, got {residual!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise UserInputError(f"iterations must be a positive integer, got {iterations!r}")
    if not 0 < confidence <= 1:
        raise UserInputError(f"confidence must be in (0, 1], got {confidence!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= _MAX_SEED:
        raise UserInputError(f"seed must be an integer in [0, {_MAX_SEED}], got {seed!r}")


def _checked_fit(model: np.ndarray | None, mask: np.ndarray | None, count: int) -> GeometricFit:
    """A library's (model, inlier mask) as a GeometricFit; "no model" whichever way the library
    says it (None, pydegensac's all-zero matrix, poselib's non-finite one, or no inlier)."""
    inliers = np.zeros(count, dtype=bool) if mask is None else np.asarray(mask, dtype=bool).ravel()
    if model is None or not np.any(model) or not np.all(np.isfinite(model)) or not inliers.any():
        return GeometricFit(None, np.zeros(count, dtype=bool))
    return GeometricFit(model, inliers)


@VERIFIERS.register("homography")
@dataclass(frozen=True)
class HomographyVerifier(_RansacSettings):
    """pydegensac LO-RANSAC homography; model H maps a to b (b ~ H a)."""

    name: ClassVar[str] = "homography"
    min_samples: ClassVar[int] = 4

    def fit(self, points_a: np.ndarray, points_b: np.ndarray) -> GeometricFit:
        model, mask = pydegensac.findHomography(
            np.asarray(points_a, np.float64), np.asarray(points_b, np.float64), self.residual, self.confidence,
            self.iterations, seed=self.seed)
        return _checked_fit(model, mask, len(points_a))


@VERIFIERS.register("fundamental")
@dataclass(frozen=True)
class FundamentalVerifier(_RansacSettings):
    """pydegensac DEGENSAC fundamental matrix F, with x_b^T F x_a = 0 for inliers."""

    name: ClassVar[str] = "fundamental"
    min_samples: ClassVar[int] = 8  # pydegensac refuses fewer

    def fit(self, points_a: np.ndarray, points_b: np.ndarray) -> GeometricFit:
        model, mask = pydegensac.findFundamentalMatrix(
            np.asarray(points_a, np.float64), np.asarray(points_b, np.float64), self.residual, self.confidence,
            self.iterations, seed=self.seed)
        return _checked_fit(model, mask, len(points_a))


@VERIFIERS.register("magsac")
@dataclass(frozen=True)
class MagsacVerifier(_RansacSettings):
    """OpenCV USAC homography with MAGSAC++ scoring and sigma-consensus local optimisation; H maps a to b."""

    name: ClassVar[str] = "magsac"
    min_samples: ClassVar[int] = 4

    @cached_property
    def _params(self) -> cv2.UsacParams:
        params = cv2.UsacParams()
        params.threshold = self.residual
        params.maxIterations = self.iterations
        params.confidence = self.confidence
        params.randomGeneratorState = self.seed
        params.sampler = cv2.SAMPLING_UNIFORM
        params.score = cv2.SCORE_METHOD_MAGSAC
        params.loMethod = cv2.LOCAL_OPTIM_SIGMA
        params.isParallel = False
        return params

    def fit(self, points_a: np.ndarray, points_b: np.ndarray) -> GeometricFit:
        model, mask = cv2.findHomography(np.asarray(points_a, np.float64), np.asarray(points_b, np.float64),
                                         self._params)
        return _checked_fit(model, mask, len(points_a))


@VERIFIERS.register("poselib")
@dataclass(frozen=True)
class PoselibVerifier(_RansacSettings):
    """poselib LO-RANSAC homography with non-linear refinement; H (up to scale) maps a to b."""

    name: ClassVar[str] = "poselib"
    min_samples: ClassVar[int] = 4
    #: poselib runs at least 1000 iterations by default; 100 ranked the bench pairs as well
    #: (ROC AUC equal to 4 decimals) in about half the time
    min_iterations: ClassVar[int] = 100

    def __post_init__(self) -> None:
        super().__post_init__()
        if poselib is None:
            raise UserInputError("the poselib verifier needs the poselib package: pip install poselib")

    @cached_property
    def _options(self) -> dict[str, Any]:
        return {"max_reproj_error": self.residual, "max_iterations": self.iterations,
                "min_iterations": min(self.min_iterations, self.iterations), "success_prob": self.confidence,
                "seed": self.seed}

    def fit(self, points_a: np.ndarray, points_b: np.ndarray) -> GeometricFit:
        model, info = poselib.estimate_homography(np.asarray(points_a, np.float64), np.asarray(points_b, np.float64),
                                                  self._options)
        return _checked_fit(model, info["inliers"], len(points_a))


@VERIFIERS.register("affine")
@dataclass(frozen=True)
class AffineVerifier(_RansacSettings):
    """OpenCV RANSAC affine transform (6 degrees of freedom); model A maps a to b."""

    name: ClassVar[str] = "affine"
    min_samples: ClassVar[int] = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.confidence >= 1:
            raise UserInputError(f"the affine verifier needs a confidence below 1, got {self.confidence!r}")

    def fit(self, points_a: np.ndarray, points_b: np.ndarray) -> GeometricFit:
        order = np.random.default_rng(self.seed).permutation(len(points_a))
        model, mask = cv2.estimateAffine2D(
            np.asarray(points_a, np.float32)[order], np.asarray(points_b, np.float32)[order], method=cv2.RANSAC,
            ransacReprojThreshold=self.residual, maxIters=self.iterations, confidence=self.confidence)
        inliers = np.zeros(len(points_a), dtype=bool)
        if model is None:
            return GeometricFit(None, inliers)
        inliers[order] = mask.ravel().astype(bool)
        return GeometricFit(np.vstack([model, [0.0, 0.0, 1.0]]), inliers)


@VERIFIERS.register("delf-affine")
@dataclass(frozen=True)
class DelfAffineVerifier(_RansacSettings):
    """The official DELF example's affine RANSAC, seeded (`ransac.ransac_affine`); A maps a to b.

    `iterations` is the number of trials; confidence 1 runs them all, as DELF does.
    """

    name: ClassVar[str] = "delf-affine"
    min_samples: ClassVar[int] = 3

    def fit(self, points_a: np.ndarray, points_b: np.ndarray) -> GeometricFit:
        model, inliers = ransac_affine(points_a, points_b, self.residual, self.iterations, self.confidence, self.seed)
        return GeometricFit(model, inliers)


# --------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class VerifyConfig:
    """How a pair is matched and verified.

    - `matcher`: "mutual" (`mutual_nearest_neighbours` with `max_distance` and/or `ratio`) or
      "kdtree" (`kdtree_matches` with `max_distance`, no ratio).
    - `model`: a `VERIFIERS` name; `residual` (px), `iterations`, `confidence`, `seed` go to it.
    - `min_putative`: with fewer putative matches than this (or than the model's minimum
      sample) the pair scores 0 inliers without a fit.
    """

    matcher: str = "mutual"
    max_distance: float | None = None
    ratio: float | None = 0.8
    model: str = "homography"
    residual: float = 6.0
    iterations: int = 2000
    confidence: float = 0.999
    min_putative: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.matcher not in MATCHERS:
            raise UserInputError(f"unknown matcher {self.matcher!r}; known: {', '.join(MATCHERS)}")
        if self.max_distance is not None and not 0 < self.max_distance < math.inf:
            raise UserInputError(f"max_distance must be positive and finite, got {self.max_distance!r}")
        if self.ratio is not None and not 0 < self.ratio <= 1:
            raise UserInputError(f"ratio must be in (0, 1], got {self.ratio!r}")
        if self.matcher == "kdtree" and (self.max_distance is None or self.ratio is not None):
            raise UserInputError("the kdtree matcher needs a max_distance and takes no ratio")
        # The verifier checks its own settings (and that its package is installed): a bad
        # config fails here, before any pair is read.
        create_verifier(self)
        if isinstance(self.min_putative, bool) or not isinstance(self.min_putative, int) or self.min_putative < 0:
            raise UserInputError(f"min_putative must be a non-negative integer, got {self.min_putative!r}")


def create_verifier(config: VerifyConfig) -> Verifier:
    """The verifier `config.model` with the config's RANSAC settings."""
    return VERIFIERS.create(config.model, residual=config.residual, iterations=config.iterations,
                            confidence=config.confidence, seed=config.seed)


# `fast` was tuned with SIFT (1000 features) on the synthetic dataset at 256 px, same- vs
# different-landmark pairs: ratio 0.8 ranked them a little better than 0.85 and 0.9 (fewer
# chance inliers between different landmarks), and residuals from 2 to 8 px were on a par.
# It fits with pydegensac, whose inlier counts the kit's SIFT thresholds and demo figures were
# measured with.
#
# `fast-magsac` is `fast` with OpenCV's MAGSAC++: on `lmkcomp bench verify` 1.3-1.6x
# pydegensac's pairs/s for the whole pair (2-2.5x for the RANSAC alone; 1.2x poselib's) at ROC
# AUC 0.9904 vs 0.9914. It is not the default because its inlier counts differ (0.8 fewer per
# same-landmark pair, 0.4 more per different-landmark pair), which the AUC barely shows but the
# inlier term and the cleaning threshold do: end to end it lowered the demos' final GAP (from
# scratch 0.302 -> 0.292, fine-tuned 0.7015 -> 0.6901, alike for RANSAC seeds 0 and 1) and the
# demo's cleaning precision (0.861 -> 0.857). Choose it where verification bounds the run time,
# as in cleaning at GLDv2 scale (millions of train-vs-train pairs), after checking the
# thresholds on its counts. Confidence 0.9999 rather than 0.999: over RANSAC seeds 0-9 its AUC
# spread 0.9903-0.9913 against 0.9896-0.9913, at a cost within the shared cores' run-to-run
# noise (about 5 %).
VERIFY_PRESETS: dict[str, VerifyConfig] = {
    "fast": VerifyConfig(),
    "fast-magsac": VerifyConfig(model="magsac", confidence=0.9999),
    "official-delf": VerifyConfig(matcher="kdtree", max_distance=0.8, ratio=None, model="delf-affine",
                                  residual=20.0, iterations=1000, confidence=1.0, min_putative=3),
}


def verify_config(preset: str = "fast", **overrides: Any) -> VerifyConfig:
    """The named preset with `overrides` applied; unknown presets or fields are user errors."""
    return preset_with_overrides(VERIFY_PRESETS, preset, "verification", **overrides)


# --------------------------------------------------------------------------------------------
# Pairs


@dataclass(frozen=True, eq=False)
class PairResult:
    """The verification of a pair (a, b).

    `n_putative`: putative matches; `inliers`: how many of them the model accepts (the score);
    `hull_area`: area in px^2 of the convex hull of the inliers' locations in image a (0 for
    fewer than 3); `model`: the fitted 3 x 3 matrix or None; `inlier_pairs`: K x 2 int64
    feature indices (row of a, row of b) of the inliers.
    """

    n_putative: int
    inliers: int
    hull_area: float
    model: np.ndarray | None
    inlier_pairs: np.ndarray


def putative_matches(a: LocalFeatures, b: LocalFeatures, config: VerifyConfig) -> tuple[np.ndarray, np.ndarray]:
    """`(idx_a, idx_b)` of the putative matches of a and b under `config`'s matcher."""
    if config.matcher == "kdtree":
        return kdtree_matches(a.descriptors, b.descriptors, config.max_distance)
    return mutual_nearest_neighbours(a.descriptors, b.descriptors, config.max_distance, config.ratio)


def convex_hull_area(points: np.ndarray) -> float:
    """Area of the convex hull of N x 2 points, 0 for fewer than 3."""
    if len(points) < 3:
        return 0.0
    hull = cv2.convexHull(np.asarray(points, dtype=np.float32))
    return float(cv2.contourArea(hull))


def verify_pair(a: LocalFeatures, b: LocalFeatures, config: VerifyConfig | None = None,
                verifier: Verifier | None = None) -> PairResult:
    """Match a and b, fit the model and score the pair (see `PairResult`).

    `config` defaults to the `fast` preset; `verifier` defaults to `create_verifier(config)`
    (pass one to reuse it over many pairs).
    """
    if a.dim != b.dim:
        raise ValueError(f"descriptor dimensions differ: {a.dim} vs {b.dim}")
    config = VERIFY_PRESETS["fast"] if config is None else config
    verifier = create_verifier(config) if verifier is None else verifier
    idx_a, idx_b = putative_matches(a, b, config)
    n_putative = len(idx_a)
    if n_putative < max(config.min_putative, verifier.min_samples):
        return PairResult(n_putative, 0, 0.0, None, np.zeros((0, 2), np.int64))
    fit = verifier.fit(a.locations[idx_a], b.locations[idx_b])
    pairs = np.stack([idx_a[fit.inliers], idx_b[fit.inliers]], axis=1).astype(np.int64)
    return PairResult(n_putative, len(pairs), convex_hull_area(a.locations[pairs[:, 0]]), fit.model, pairs)
