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

Residual thresholds are relative to image size: each image's locations are scaled to a long
side of `VerifyConfig.reference_side` before the fit (and the model is mapped back to
original pixels), so a preset means the same at 256 px and at 4,000 px. RANSAC stops once an
all-inlier sample was drawn with the configured confidence, within a high iteration cap.

Presets (`VERIFY_PRESETS`): `fast`, the default (mutual nearest neighbours with Lowe's ratio
0.8, pydegensac `homography` with a residual of 6 px at a 256 px long side, confidence 0.999,
at most 50,000 iterations); `fast-magsac`, `fast` with the `magsac` homography at confidence
0.9999 (more pairs/s, slightly different inlier counts: see the comment on `VERIFY_PRESETS`);
and `official-delf` (the DELF example: k-d tree matches below distance 0.8, affine RANSAC
with 1000 trials and a residual of 20 px at a 2,048 px long side; on SIFT and RootSIFT
descriptors the distance is 0.4, `DESCRIPTOR_SETTINGS`, which `verify_config` applies when
told the features' method).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
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
#: the long side of the synthetic renders the presets' pixel residuals were tuned at
SYNTHETIC_SIDE = 256.0
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
    #: correspondences per RANSAC sample
    sample_size: int
    #: whether the model relates points by an epipolar constraint (x_b^T M x_a = 0) rather
    #: than mapping a to b (x_b ~ M x_a): this decides how it changes with the coordinates
    epipolar: bool

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

    epipolar: ClassVar[bool] = False

    def __post_init__(self) -> None:
        _check_ransac_settings(self.residual, self.iterations, self.confidence, self.seed)

    def iterations_for(self, count: int) -> int:
        """The iteration cap for `count` correspondences: `iterations`, or fewer where more
        would only redraw samples already tried (`useful_iterations`)."""
        return min(self.iterations, useful_iterations(count, self.sample_size, self.confidence))


def useful_iterations(count: int, sample_size: int, confidence: float) -> int | float:
    """Draws of uniform random samples of `sample_size` of `count` correspondences after which
    any given sample was drawn with probability `confidence` (inf for confidence 1).

    A model with any inliers at all has an all-inlier sample among the C(count, sample_size)
    distinct ones, so beyond this many draws RANSAC finds nothing it would not have found
    with probability `confidence`: its own stopping rule for the smallest possible consensus.
    Without this bound a pair of a handful of chance matches, which never reaches the
    confidence, would run the whole cap (about 0.1 s at 50,000 iterations) for nothing.
    """
    if confidence >= 1.0:
        return math.inf
    samples = math.comb(count, sample_size)
    if samples <= 1:
        return 1
    return max(1, math.ceil(math.log(1.0 - confidence) / math.log1p(-1.0 / samples)))


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
    sample_size: ClassVar[int] = 4

    def fit(self, points_a: np.ndarray, points_b: np.ndarray) -> GeometricFit:
        model, mask = pydegensac.findHomography(
            np.asarray(points_a, np.float64), np.asarray(points_b, np.float64), self.residual, self.confidence,
            self.iterations_for(len(points_a)), seed=self.seed)
        return _checked_fit(model, mask, len(points_a))


@VERIFIERS.register("fundamental")
@dataclass(frozen=True)
class FundamentalVerifier(_RansacSettings):
    """pydegensac DEGENSAC fundamental matrix F, with x_b^T F x_a = 0 for inliers."""

    name: ClassVar[str] = "fundamental"
    min_samples: ClassVar[int] = 8  # pydegensac refuses fewer
    sample_size: ClassVar[int] = 7  # the 7-point algorithm
    epipolar: ClassVar[bool] = True

    def fit(self, points_a: np.ndarray, points_b: np.ndarray) -> GeometricFit:
        model, mask = pydegensac.findFundamentalMatrix(
            np.asarray(points_a, np.float64), np.asarray(points_b, np.float64), self.residual, self.confidence,
            self.iterations_for(len(points_a)), seed=self.seed)
        return _checked_fit(model, mask, len(points_a))


@VERIFIERS.register("magsac")
@dataclass(frozen=True)
class MagsacVerifier(_RansacSettings):
    """OpenCV USAC homography with MAGSAC++ scoring and sigma-consensus local optimisation; H maps a to b."""

    name: ClassVar[str] = "magsac"
    min_samples: ClassVar[int] = 4
    sample_size: ClassVar[int] = 4

    def _params(self, iterations: int) -> cv2.UsacParams:
        params = cv2.UsacParams()
        params.threshold = self.residual
        params.maxIterations = iterations
        params.confidence = self.confidence
        params.randomGeneratorState = self.seed
        params.sampler = cv2.SAMPLING_UNIFORM
        params.score = cv2.SCORE_METHOD_MAGSAC
        params.loMethod = cv2.LOCAL_OPTIM_SIGMA
        params.isParallel = False
        return params

    def fit(self, points_a: np.ndarray, points_b: np.ndarray) -> GeometricFit:
        model, mask = cv2.findHomography(np.asarray(points_a, np.float64), np.asarray(points_b, np.float64),
                                         self._params(self.iterations_for(len(points_a))))
        return _checked_fit(model, mask, len(points_a))


@VERIFIERS.register("poselib")
@dataclass(frozen=True)
class PoselibVerifier(_RansacSettings):
    """poselib LO-RANSAC homography with non-linear refinement; H (up to scale) maps a to b."""

    name: ClassVar[str] = "poselib"
    min_samples: ClassVar[int] = 4
    sample_size: ClassVar[int] = 4
    #: poselib runs at least 1000 iterations by default; 100 ranked the bench pairs as well
    #: (ROC AUC equal to 4 decimals) in about half the time
    min_iterations: ClassVar[int] = 100

    def __post_init__(self) -> None:
        super().__post_init__()
        if poselib is None:
            raise UserInputError("the poselib verifier needs the poselib package: pip install poselib")

    def _options(self, iterations: int) -> dict[str, Any]:
        return {"max_reproj_error": self.residual, "max_iterations": iterations,
                "min_iterations": min(self.min_iterations, iterations), "success_prob": self.confidence,
                "seed": self.seed}

    def fit(self, points_a: np.ndarray, points_b: np.ndarray) -> GeometricFit:
        model, info = poselib.estimate_homography(np.asarray(points_a, np.float64), np.asarray(points_b, np.float64),
                                                  self._options(self.iterations_for(len(points_a))))
        return _checked_fit(model, info["inliers"], len(points_a))


@VERIFIERS.register("affine")
@dataclass(frozen=True)
class AffineVerifier(_RansacSettings):
    """OpenCV RANSAC affine transform (6 degrees of freedom); model A maps a to b."""

    name: ClassVar[str] = "affine"
    min_samples: ClassVar[int] = 3
    sample_size: ClassVar[int] = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.confidence >= 1:
            raise UserInputError(f"the affine verifier needs a confidence below 1, got {self.confidence!r}")

    def fit(self, points_a: np.ndarray, points_b: np.ndarray) -> GeometricFit:
        order = np.random.default_rng(self.seed).permutation(len(points_a))
        model, mask = cv2.estimateAffine2D(
            np.asarray(points_a, np.float32)[order], np.asarray(points_b, np.float32)[order], method=cv2.RANSAC,
            ransacReprojThreshold=self.residual, maxIters=self.iterations_for(len(points_a)),
            confidence=self.confidence)
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
    sample_size: ClassVar[int] = 3

    def fit(self, points_a: np.ndarray, points_b: np.ndarray) -> GeometricFit:
        model, inliers = ransac_affine(points_a, points_b, self.residual, self.iterations_for(len(points_a)),
                                       self.confidence, self.seed)
        return GeometricFit(model, inliers)


# --------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class VerifyConfig:
    """How a pair is matched and verified.

    - `matcher`: "mutual" (`mutual_nearest_neighbours` with `max_distance` and/or `ratio`) or
      "kdtree" (`kdtree_matches` with `max_distance`, no ratio).
    - `model`: a `VERIFIERS` name; `residual`, `iterations`, `confidence`, `seed` go to it.
      RANSAC stops once an all-inlier sample was drawn with probability `confidence` (easy
      pairs after a few dozen iterations), or after `iterations` (pydegensac's own default
      cap, 50,000, lets the hard pairs of real photos find their model).
    - `reference_side`: `residual` is in pixels of the image scaled to this long side: each
      image's locations are multiplied by reference_side / its long side before the fit, so
      one tolerance means the same at 256 px and at 4,000 px. None: `residual` is in
      original-image pixels. A record without an `image_size` is taken as it is (scale 1).
    - `min_putative`: with fewer putative matches than this (or than the model's minimum
      sample) the pair scores 0 inliers without a fit.
    """

    matcher: str = "mutual"
    max_distance: float | None = None
    ratio: float | None = 0.8
    model: str = "homography"
    residual: float = 6.0
    iterations: int = 50_000
    confidence: float = 0.999
    reference_side: float | None = SYNTHETIC_SIDE
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
        if self.reference_side is not None and not 0 < self.reference_side < math.inf:
            raise UserInputError(f"reference_side must be a positive, finite number of pixels or None, "
                                 f"got {self.reference_side!r}")
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
#
# Every preset stops RANSAC on confidence (at most 50,000 iterations, pydegensac's own
# default, where the former 2,000 cut the hard pairs of real photos short: on the 23 realdev
# photos, 4x upscaled, `fast`'s AUC went 0.82 -> 0.84 from the cap alone), and never draws
# more samples than `useful_iterations` allows, which keeps pairs of a few chance matches as
# fast as before (`bench verify` on the small synthetic preset: same AUC, same pairs/s).
# Residuals are relative to image size (`reference_side`): `fast`'s 6 px hold at the 256 px it
# was tuned on, i.e. 2.3 % of the long side. `official-delf`'s 20 px are taken at a 2,048 px
# long side (1 %): DELF's 20 px were meant for photos of about 1,000 px, where 2 % let SIFT's
# loose k-d tree matches through (21 chance inliers per different-landmark pair of realdev, 31
# on the renders at 20 px / 256); at 1 % they fall to 11 and 7, and ROC AUC rises (realdev
# 0.80 -> 0.82, renders 0.87 -> 0.94); 0.5 % lost same-landmark inliers faster than chance ones.
VERIFY_PRESETS: dict[str, VerifyConfig] = {
    "fast": VerifyConfig(),
    "fast-magsac": VerifyConfig(model="magsac", confidence=0.9999),
    "official-delf": VerifyConfig(matcher="kdtree", max_distance=0.8, ratio=None, model="delf-affine",
                                  residual=20.0, iterations=1000, confidence=1.0, reference_side=2048.0,
                                  min_putative=3),
}


# `official-delf`'s k-d tree distance of 0.8 is the official example's, for DELF's own
# descriptors; on SIFT-family descriptors it admits loose matches that no residual removes
# (realdev, RootSIFT: ROC AUC 0.85 against `fast`'s 0.94). A sweep of the distance on the small
# synthetic preset (300 random train pairs, half of one landmark) peaked at 0.4 for SIFT and
# RootSIFT alike (AUC 0.81 against 0.73 at 0.8 and 0.79 for `fast`), and the 23 realdev photos,
# left out of the tuning, agree (SIFT 0.93, RootSIFT 0.97, both above `fast`).
DESCRIPTOR_SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "official-delf": {"sift": {"max_distance": 0.4}, "rootsift": {"max_distance": 0.4}},
}


def verify_config(preset: str = "fast", method: str | None = None, **overrides: Any) -> VerifyConfig:
    """The named preset for local features of `method` (a LOCAL_EXTRACTORS name, or None for the
    preset as written): the preset's `DESCRIPTOR_SETTINGS` for that method, then `overrides`,
    replace its fields. Unknown presets or fields are user errors."""
    settings = {**DESCRIPTOR_SETTINGS.get(preset, {}).get(method or "", {}), **overrides}
    return preset_with_overrides(VERIFY_PRESETS, preset, "verification", **settings)


# --------------------------------------------------------------------------------------------
# Pairs


@dataclass(frozen=True, eq=False)
class PairResult:
    """The verification of a pair (a, b).

    `n_putative`: putative matches; `inliers`: how many of them the model accepts (the score);
    `hull_area`: area in px^2 of the convex hull of the inliers' locations in image a (0 for
    fewer than 3); `model`: the fitted 3 x 3 matrix in original pixels, or None; `inlier_pairs`: K x 2 int64
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
    scale_a, scale_b = (tolerance_scale(record, config.reference_side) for record in (a, b))
    fit = verifier.fit(a.locations[idx_a] * scale_a, b.locations[idx_b] * scale_b)
    pairs = np.stack([idx_a[fit.inliers], idx_b[fit.inliers]], axis=1).astype(np.int64)
    model = model_in_pixels(fit.model, verifier.epipolar, scale_a, scale_b)
    return PairResult(n_putative, len(pairs), convex_hull_area(a.locations[pairs[:, 0]]), model, pairs)


def tolerance_scale(features: LocalFeatures, reference_side: float | None) -> float:
    """The factor that takes `features`' locations to an image of long side `reference_side`
    (1 without a reference side or without a known image size)."""
    if reference_side is None or features.image_size is None:
        return 1.0
    return reference_side / max(features.image_size)


def model_in_pixels(model: np.ndarray | None, epipolar: bool, scale_a: float, scale_b: float) -> np.ndarray | None:
    """A model fitted on locations scaled by `scale_a` (image a) and `scale_b` (image b),
    expressed in original pixels: S_b^-1 M S_a for a map a -> b, S_b M S_a for an epipolar
    relation, S = diag(scale, scale, 1)."""
    if model is None or scale_a == scale_b == 1.0:
        return model
    to_b = scale_b if epipolar else 1.0 / scale_b
    return np.diag([to_b, to_b, 1.0]) @ model @ np.diag([scale_a, scale_a, 1.0])
