"""Thresholds from data: the lowest score threshold that reaches a target specificity.

Every "same landmark / is a landmark" decision of the kit is a score compared with a
threshold, and every one of them claims at or above it: DELF recognition predicts a landmark
when the best candidate's inliers are >= the threshold, cleaning counts a pair as verified when
its inliers are >= the threshold, the centroid method finds a landmark when the similarity is
>= eta. This module calibrates such a threshold on labelled scores with one rule.

Definitions. A score s is *claimed* (called positive) at threshold t when ``s >= t``. Given the
scores of positives P (what should be claimed) and negatives N (what should not)::

    specificity(t) = |{s in N : s < t}|  / |N|     (negatives strictly below t)
    sensitivity(t) = |{s in P : s >= t}| / |P|

A score of -inf means "no score" (e.g. a query without any candidate): never claimed at a
finite threshold. NaN scores are refused.

Calibration. `calibrate_threshold` returns the lowest threshold t >= `minimum` with
``specificity(t) >= target``. Specificity only rises when t passes just above a negative
score, so t is `minimum` itself or the successor of a negative score s: s + 1 for integer
scores (inlier counts), else the next float64 above s. Hence tied scores always fall on the
same side, and the achieved specificity can exceed the target when ties (or few negatives)
leave no threshold in between. The target is read as the decimal it is written as (0.99 is
99/100 exactly), so with n negatives at most floor(n (1 - target)) of them are claimed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

from lmkcomp.errors import UserInputError


@dataclass(frozen=True)
class Calibration:
    """A calibrated threshold and what it achieves on the scores it was calibrated on.

    `threshold` is an int for whole-number scores (inlier counts); `sensitivity` is None
    without positives (never NaN, so it is valid JSON); the counts are those of the module
    docstring's definitions at `threshold`.
    """

    threshold: float
    target_specificity: float
    specificity: float
    sensitivity: float | None
    negatives: int
    positives: int
    false_positives: int
    true_positives: int

    def as_dict(self) -> dict:
        """The fields as a JSON-ready dict."""
        return asdict(self)

    def caveat(self) -> str | None:
        """A warning when the negatives are too few to tell the target from 100 %: with n of
        them, a target above 1 - 1/n claims none, so the threshold sits just above the highest
        negative and held-out data will see a lower specificity. None otherwise."""
        if self.target_specificity < 1 and self.negatives * (1 - _check_target(self.target_specificity)) < 1:
            return (f"{self.negatives} negatives cannot resolve a {self.target_specificity:g} specificity (one is "
                    f"{1 / self.negatives:.1%}): the threshold excludes all of them; expect less on other data")
        return None


def _scores(name: str, values: ArrayLike) -> np.ndarray:
    scores = np.asarray(values, dtype=np.float64).reshape(-1)
    if np.isnan(scores).any():
        raise UserInputError(f"{name} scores contain NaN at position {int(np.flatnonzero(np.isnan(scores))[0])}")
    if np.isposinf(scores).any():
        raise UserInputError(f"{name} scores contain +inf, which every threshold claims")
    return scores


def _check_target(target_specificity: float) -> Fraction:
    if not 0 < target_specificity <= 1:
        raise UserInputError(f"target specificity must be in (0, 1], got {target_specificity!r}")
    return Fraction(repr(float(target_specificity)))


def rates_at(threshold: float, positives: ArrayLike, negatives: ArrayLike,
             target_specificity: float = 1.0) -> Calibration:
    """Specificity and sensitivity of `threshold` on the given scores (module docstring), as a
    `Calibration` whose `target_specificity` is only recorded. No negatives is a UserInputError."""
    positives, negatives = _scores("positive", positives), _scores("negative", negatives)
    if len(negatives) == 0:
        raise UserInputError("no negative scores: specificity is undefined (the labelled split needs images or "
                             "pairs that must not be claimed)")
    false_positives = int((negatives >= threshold).sum())
    true_positives = int((positives >= threshold).sum())
    return Calibration(threshold=threshold, target_specificity=float(target_specificity),
                       specificity=(len(negatives) - false_positives) / len(negatives),
                       sensitivity=true_positives / len(positives) if len(positives) else None,
                       negatives=len(negatives), positives=len(positives),
                       false_positives=false_positives, true_positives=true_positives)


def calibrate_threshold(positives: ArrayLike, negatives: ArrayLike, target_specificity: float, *,
                        integer: bool = False, minimum: float = -math.inf) -> Calibration:
    """The lowest threshold t >= `minimum` with specificity(t) >= `target_specificity`, and the
    specificity and sensitivity it achieves (exact definitions in the module docstring).

    `integer`: the scores are whole numbers (inlier counts) and so is t. `minimum`: the lowest
    threshold allowed (1 for inliers, where 0 would claim pairs without a single inlier);
    without one (-inf), a target that every threshold reaches gives the lowest finite score,
    which claims every scored item as -inf would (-inf only when no score is finite).
    No negative score, a NaN or +inf score, or a target outside (0, 1] is a UserInputError.
    """
    target = _check_target(target_specificity)
    positives, negatives = _scores("positive", positives), _scores("negative", negatives)
    if len(negatives) == 0:
        raise UserInputError("no negative scores: cannot calibrate a threshold for a target specificity "
                             "(the labelled split needs images or pairs that must not be claimed)")
    if integer and not np.all((negatives == np.floor(negatives)) | np.isneginf(negatives)):
        raise UserInputError("integer calibration needs whole-number scores")
    allowed = math.floor(len(negatives) * (1 - target))  # negatives that may stay >= t
    finite = np.sort(negatives[np.isfinite(negatives)])[::-1]
    threshold = minimum
    if math.isinf(minimum):
        # no lower bound: the lowest finite score claims every scored item, as -inf would
        scored = np.concatenate([positives, negatives])
        scored = scored[np.isfinite(scored)]
        threshold = float(scored.min()) if len(scored) else minimum
    if allowed < len(finite) and finite[allowed] >= threshold:
        # the allowed-th highest negative (0-based) must fall below t, and with it its ties
        highest_excluded = finite[allowed]
        threshold = highest_excluded + 1 if integer else float(np.nextafter(highest_excluded, np.inf))
    if integer and math.isfinite(threshold):
        threshold = int(threshold)
    return rates_at(threshold, positives, negatives, target_specificity)


def recognition_scores(ids: Sequence[str], best_landmarks: ArrayLike, scores: ArrayLike,
                       labels: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """`(is_landmark, scores)` of a recogniser's queries on a labelled split, ready to split
    into positives (`scores[is_landmark]`) and negatives (`scores[~is_landmark]`).

    `best_landmarks[i]`, `scores[i]`: the landmark query `ids[i]` would be predicted as and its
    confidence, before any threshold (-inf: no candidate at all); `labels`: id -> landmark of
    the split's landmark images, every other query being a non-landmark image. A landmark
    image whose best landmark is another one scores -inf: its prediction is never right, so it
    never counts towards the sensitivity. The rates are then those of
    `lmkcomp.metrics.sensitivity_specificity` at the same threshold.
    """
    truth = [labels.get(image_id) for image_id in ids]
    is_landmark = np.array([landmark is not None for landmark in truth], dtype=bool)
    right = np.array([landmark is not None and int(best) == int(landmark)
                      for landmark, best in zip(truth, np.asarray(best_landmarks).tolist())], dtype=bool)
    scores = np.asarray(scores, dtype=np.float64).copy()
    scores[is_landmark & ~right] = -np.inf
    return is_landmark, scores


def calibrate_recognition_threshold(ids: Sequence[str], best_landmarks: ArrayLike, scores: ArrayLike,
                                    labels: Mapping[str, int], target_specificity: float, *, integer: bool = False,
                                    minimum: float = -math.inf) -> Calibration:
    """The lowest "is a landmark" threshold with at most 1 - `target_specificity` of the split's
    non-landmark images predicted (`recognition_scores`, then `calibrate_threshold`). A split
    without a non-landmark image is a UserInputError: its specificity is undefined."""
    is_landmark, scores = recognition_scores(ids, best_landmarks, scores, labels)
    if is_landmark.all():
        raise UserInputError(f"no non-landmark image among the {len(is_landmark)} calibration queries: "
                             "specificity is undefined")
    return calibrate_threshold(scores[is_landmark], scores[~is_landmark], target_specificity, integer=integer,
                               minimum=minimum)
