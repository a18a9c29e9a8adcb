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

Distractor demotion (`lmkcomp.voting.demote_frequent_labels`, `recognize --demote-over N`) is
a threshold on a count, made a score by negating it: a query's *landmark predictions* are the
valid predictions of the whole predicted set that share its predicted landmark, its score is
minus that count, and its prediction is kept ranked high (claimed) when ``-count >= -N``, i.e.
count <= N (`calibrate_demote_over`). The count grows with the size of the predicted set: an N
calibrated on a split of V images holds for sets of about V images.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from typing import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

from lmkcomp.errors import UserInputError

log = logging.getLogger(__name__)


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
        negative and held-out data will see a lower specificity. None otherwise, and for a
        threshold short of its target (`calibrate_demote_over` at N = 1), which excludes fewer."""
        unresolved = self.negatives * (1 - _check_target(self.target_specificity)) < 1
        if self.target_specificity < 1 and unresolved and self.specificity >= self.target_specificity:
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


def demotion_scores(counts: ArrayLike, scores: ArrayLike) -> np.ndarray:
    """The score that demotion thresholds (module docstring): ``-counts`` (`lmkcomp.voting.prediction_counts`),
    and -inf, never claimed, where the count is 0 (no valid prediction) or `scores` is -inf
    (`recognition_scores`: a landmark image whose best landmark is wrong, or a query without
    any candidate), whose rank demotion cannot make right."""
    counts = np.asarray(counts, dtype=np.float64).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if counts.shape != scores.shape:
        raise ValueError(f"counts {counts.shape} and scores {scores.shape} must be equal-length vectors")
    return np.where((counts >= 1) & ~np.isneginf(scores), -counts, -np.inf)


def _demotion_split(counts: ArrayLike, scores: ArrayLike, is_landmark: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The `demotion_scores` of the landmark images (positives) and of the others (negatives)."""
    demotion = demotion_scores(counts, scores)
    positive = np.asarray(is_landmark, dtype=bool).reshape(-1)
    if positive.shape != demotion.shape:
        raise ValueError(f"is_landmark {positive.shape} and counts {demotion.shape} must be equal-length vectors")
    return demotion[positive], demotion[~positive]


def _warn_if_everything_demoted(over: float, counts: ArrayLike) -> None:
    """A warning when no prediction has a count in [1, `over`]: all are demoted, so none is."""
    counts = np.asarray(counts).reshape(-1)
    predicted = counts >= 1
    if predicted.any() and not (predicted & (counts <= over)).any():
        log.warning("demote-over %s demotes every one of the %d predictions, which demote_frequent_labels leaves "
                    "unchanged: these rates are not what it achieves", over, int(predicted.sum()))


def demote_over_rates(over: int, counts: ArrayLike, scores: ArrayLike, is_landmark: ArrayLike) -> Calibration:
    """Specificity and sensitivity of demoting the landmarks predicted for more than `over` (N)
    queries, as a `Calibration` whose `threshold` is N: positives are the landmark images
    (`is_landmark`), negatives the others, each claimed when its `demotion_scores` is >= -N,
    i.e. when its count is in [1, N] and it is not a wrong prediction. N must be a whole number
    >= 1 (UserInputError): 0 demotes everything, which `demote_frequent_labels` turns into no
    change. Logs a warning when no row is kept, for the same reason."""
    if over != math.floor(over) or over < 1:
        raise UserInputError(f"demote-over is a prediction count N >= 1, got {over!r}")
    positives, negatives = _demotion_split(counts, scores, is_landmark)
    _warn_if_everything_demoted(over, counts)
    return replace(rates_at(-int(over), positives, negatives), threshold=int(over))


def calibrate_demote_over(counts: ArrayLike, scores: ArrayLike, is_landmark: ArrayLike,
                          target_specificity: float) -> Calibration:
    """The largest demote-over count N whose kept predictions leave at least
    `target_specificity` of the negatives (the non-landmark images) unclaimed, as a
    `Calibration` whose `threshold` is N.

    Exactly: N = -t for t the `calibrate_threshold` (whole numbers, no minimum) of the
    `demotion_scores` of the landmark images (`is_landmark`, positives) and of the others
    (negatives), so a query is claimed when its count is in [1, N] and its prediction is not
    wrong; demoting over N keeps as many predictions as the target allows. A target met
    without demotion gives the largest count of a row with a finite score (nothing that counts
    is demoted), or inf when no row has one. N is at least 1: when the target needs less (N = 0
    demotes everything, which `demote_frequent_labels` turns into no change), N = 1 is returned
    with the specificity it achieves, below the target, and a warning that demotion alone
    cannot reach it; another warns when N demotes every prediction of `counts` (no change
    either). The counts grow with the size of the predicted set: N holds for a set of about the
    size it was calibrated on; for another, scale N's share of the predictions.
    """
    positives, negatives = _demotion_split(counts, scores, is_landmark)
    calibration = calibrate_threshold(positives, negatives, target_specificity, integer=True)
    if calibration.threshold > -1:  # N < 1 would be needed
        calibration = rates_at(-1, positives, negatives, target_specificity)
        log.warning("demotion alone cannot reach a %g specificity: demoting every landmark predicted for more than "
                    "1 query achieves %.1f%%", target_specificity, 100 * calibration.specificity)
    over = -calibration.threshold
    _warn_if_everything_demoted(over, counts)
    return replace(calibration, threshold=over)
