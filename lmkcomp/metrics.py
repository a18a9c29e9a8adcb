"""Evaluation metrics of the Google Landmarks Dataset v2 (GLDv2) Kaggle competitions.

Recognition (one ``(landmark_id, score)`` prediction per test image):

* :func:`global_average_precision` -- GAP, the leaderboard metric;
* :func:`top1_accuracy`, :func:`top_k_accuracy`, :func:`sensitivity_specificity` --
  diagnostics.

Retrieval (a ranked list of index-image ids per query image):

* :func:`mean_average_precision` -- mAP@100, the leaderboard metric;
* :func:`mean_precisions`, :func:`mean_precision_at`, :func:`mean_median_position` --
  diagnostics.

Every function is pure: it reads its arguments, never mutates them, and keeps no state.
``solution`` is always the ground truth of the rows being scored (for example the public or
the private split only); it decides which test images count.

Conventions shared by the module
--------------------------------
* Leaderboard scores (GAP, mAP) are ``0.0`` when there is nothing to score; diagnostic
  ratios (accuracies, sensitivity/specificity, mean precisions, mean/median position) are
  ``float('nan')`` when their denominator is zero.
* These definitions follow the official evaluation code of the dataset's authors
  (``tensorflow/models``, ``research/delf/delf/python/datasets/google_landmarks_dataset/
  metrics.py``). Where this module settles a case that code leaves to an exception
  (division by zero, a missing key), the docstring says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import median

import numpy as np

__all__ = [
    "SensitivitySpecificity",
    "global_average_precision",
    "mean_average_precision",
    "mean_median_position",
    "mean_precision_at",
    "mean_precisions",
    "recognition_precision_recall",
    "sensitivity_specificity",
    "top1_accuracy",
    "top_k_accuracy",
]

# --------------------------------------------------------------------------------------
# Recognition
# --------------------------------------------------------------------------------------


def _check_score(test_id: str, score: float) -> float:
    """Return `score` as a float; a NaN score cannot be ranked, so it is a ValueError."""
    value = float(score)
    if math.isnan(value):
        raise ValueError(f"prediction for test image {test_id!r} has a NaN score")
    return value


def global_average_precision(
    predictions: Mapping[str, tuple[int, float]],
    solution: Mapping[str, Sequence[int]],
    *,
    ignore_non_landmarks: bool = False,
) -> float:
    """Global Average Precision (GAP, also called micro-AP) of a recognition submission.

    Definition. Keep the predictions whose test id is a key of `solution` (predictions for
    other ids are ignored: the caller restricts the submission to a split and rejects
    unknown ids elsewhere). With ``ignore_non_landmarks=True`` also drop the predictions of
    images whose ground truth is empty. Rank what is left by score, highest first; equal
    scores are ordered by test id, ascending (string order). Then::

        GAP = (1 / M) * sum_{i=1..N} P(i) * rel(i)

    where N is the number of ranked predictions, P(i) is the fraction of correct
    predictions among the first i, rel(i) is 1 when the landmark of the i-th prediction is
    one of that image's ground-truth landmarks and 0 otherwise, and M is the number of
    images of `solution` with at least one ground-truth landmark. A prediction for an
    image with no ground truth (a non-landmark image) is always wrong: it stays in the
    ranking and lowers the precision of everything ranked after it, unless
    ``ignore_non_landmarks`` drops it. Images without a prediction simply contribute
    nothing. ``M == 0`` gives ``0.0``.

    Tie order: the official code sorts by (test id, class) ascending and then, stably, by
    score descending, so ties are broken by test id -- not by the submission's row order.
    This function does the same, which makes the result independent of the order of
    `predictions`.

    Args:
        predictions: test id -> ``(landmark_id, score)``.
        solution: test id -> ground-truth landmark ids (empty for a non-landmark image).
        ignore_non_landmarks: drop predictions of images whose ground truth is empty (the
            competitions score with ``False``).

    Returns:
        GAP in ``[0, 1]``.

    Raises:
        ValueError: a scored prediction has a NaN score.
    """
    num_positives = sum(1 for ground_truth in solution.values() if len(ground_truth) > 0)
    if num_positives == 0:
        # The official code divides by zero here; nothing to score gives 0.0.
        return 0.0

    total = 0.0
    num_correct = 0
    for rank, correct in enumerate(_ranked_correctness(predictions, solution, ignore_non_landmarks), start=1):
        if correct:
            num_correct += 1
            total += num_correct / rank
    return total / num_positives


def _ranked_correctness(
    predictions: Mapping[str, tuple[int, float]],
    solution: Mapping[str, Sequence[int]],
    ignore_non_landmarks: bool,
) -> list[bool]:
    """rel(i) of GAP's ranking: whether each scored prediction is correct, in GAP's order
    (score descending, ties by test id ascending); see `global_average_precision`."""
    ranked: list[tuple[float, str, bool]] = []
    for test_id, (landmark_id, score) in predictions.items():
        ground_truth = solution.get(test_id)
        if ground_truth is None:
            continue
        if ignore_non_landmarks and len(ground_truth) == 0:
            continue
        ranked.append((-_check_score(test_id, score), test_id, landmark_id in ground_truth))
    # Ascending (-score, test id): score descending, ties by test id ascending. Test ids
    # are unique (mapping keys), so the boolean never takes part in the comparison.
    ranked.sort(key=lambda item: (item[0], item[1]))
    return [correct for _, _, correct in ranked]


def recognition_precision_recall(
    predictions: Mapping[str, tuple[int, float]],
    solution: Mapping[str, Sequence[int]],
) -> tuple[np.ndarray, np.ndarray]:
    """The precision-recall curve of recognition confidences that GAP summarises.

    Rank the scored predictions as `global_average_precision` does. After the first i
    predictions, precision(i) = correct among them / i and recall(i) = correct among them / M
    (M: images of `solution` with a ground-truth landmark). GAP is the sum of precision(i)
    over the ranks i where recall rises, divided by M. Returns (precision, recall), one entry per
    ranked prediction; both empty when nothing is ranked or M == 0.
    """
    num_positives = sum(1 for ground_truth in solution.values() if len(ground_truth) > 0)
    correct = np.asarray(_ranked_correctness(predictions, solution, False), dtype=np.float64)
    if num_positives == 0 or correct.size == 0:
        return np.zeros(0), np.zeros(0)
    hits = np.cumsum(correct)
    return hits / np.arange(1, correct.size + 1), hits / num_positives


def top1_accuracy(
    predictions: Mapping[str, tuple[int, float]],
    solution: Mapping[str, Sequence[int]],
) -> float:
    """Top-1 accuracy of a recognition submission on landmark images.

    Definition::

        top1 = |{q in L : q has a prediction and its landmark is in solution[q]}| / |L|

    where L is the set of images of `solution` with a non-empty ground truth. Scores play
    no part; non-landmark images and predictions for ids not in `solution` are ignored; an
    image of L without a prediction counts as wrong. ``|L| == 0`` gives ``nan`` (the
    official code divides by zero).

    Args:
        predictions: test id -> ``(landmark_id, score)``.
        solution: test id -> ground-truth landmark ids (empty for a non-landmark image).

    Returns:
        Accuracy in ``[0, 1]``, or ``nan``.
    """
    ranked = {test_id: [prediction[0]] for test_id, prediction in predictions.items() if prediction is not None}
    return top_k_accuracy(ranked, solution, k=1)


def top_k_accuracy(
    ranked_predictions: Mapping[str, Sequence[int]],
    solution: Mapping[str, Sequence[int]],
    k: int,
) -> float:
    """Top-k accuracy of ranked landmark predictions on landmark images.

    Definition::

        top_k = |{q in L : some landmark among the first k of ranked_predictions[q]
                           is in solution[q]}| / |L|

    where L is the set of images of `solution` with a non-empty ground truth. An image of
    L without predictions counts as wrong; non-landmark images and ids not in `solution`
    are ignored. ``|L| == 0`` gives ``nan``.

    Args:
        ranked_predictions: test id -> landmark ids, best first.
        solution: test id -> ground-truth landmark ids (empty for a non-landmark image).
        k: how many leading predictions count (the kit uses 1, 10 and 100); at least 1.

    Returns:
        Accuracy in ``[0, 1]``, or ``nan``.

    Raises:
        ValueError: ``k < 1``.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    num_landmark_images = 0
    num_correct = 0
    for test_id, ground_truth in solution.items():
        if len(ground_truth) == 0:
            continue
        num_landmark_images += 1
        ranked = ranked_predictions.get(test_id)
        if ranked is None:
            continue
        truth = set(ground_truth)
        if any(landmark_id in truth for landmark_id in ranked[:k]):
            num_correct += 1
    if num_landmark_images == 0:
        return float("nan")
    return num_correct / num_landmark_images


@dataclass(frozen=True)
class SensitivitySpecificity:
    """Result of :func:`sensitivity_specificity`.

    Attributes:
        sensitivity: accuracy on landmark images, or ``nan`` when there are none.
        specificity: accuracy on non-landmark images, or ``nan`` when there are none.
        num_landmark_images: images of the solution with a non-empty ground truth.
        num_non_landmark_images: images of the solution with an empty ground truth.
    """

    sensitivity: float
    specificity: float
    num_landmark_images: int
    num_non_landmark_images: int


def sensitivity_specificity(
    predictions: Mapping[str, tuple[int, float]],
    solution: Mapping[str, Sequence[int]],
    threshold: float,
) -> SensitivitySpecificity:
    """Sensitivity and specificity of a recognition submission at a score threshold.

    Definition. An image is *claimed* as a landmark when it has a prediction whose score is
    ``>= threshold``; an image with no prediction, or with a score ``< threshold``, is
    claimed as a non-landmark. Over the images of `solution`::

        sensitivity = |{q landmark image : claimed, and predicted landmark in solution[q]}|
                      / |landmark images|
        specificity = |{q non-landmark image : not claimed}| / |non-landmark images|

    A landmark image is one with a non-empty ground truth. Predictions for ids not in
    `solution` are ignored. A zero denominator gives ``nan`` for that ratio.

    Args:
        predictions: test id -> ``(landmark_id, score)``.
        solution: test id -> ground-truth landmark ids (empty for a non-landmark image).
        threshold: lowest score at which a prediction claims a landmark.

    Returns:
        A :class:`SensitivitySpecificity`.

    Raises:
        ValueError: a scored prediction has a NaN score.
    """
    num_landmark = 0
    num_non_landmark = 0
    landmark_correct = 0
    non_landmark_correct = 0
    for test_id, ground_truth in solution.items():
        prediction = predictions.get(test_id)
        claimed = prediction is not None and _check_score(test_id, prediction[1]) >= threshold
        if len(ground_truth) > 0:
            num_landmark += 1
            if claimed and prediction[0] in ground_truth:  # type: ignore[index]
                landmark_correct += 1
        else:
            num_non_landmark += 1
            if not claimed:
                non_landmark_correct += 1
    return SensitivitySpecificity(
        sensitivity=landmark_correct / num_landmark if num_landmark else float("nan"),
        specificity=non_landmark_correct / num_non_landmark if num_non_landmark else float("nan"),
        num_landmark_images=num_landmark,
        num_non_landmark_images=num_non_landmark,
    )


# --------------------------------------------------------------------------------------
# Retrieval
# --------------------------------------------------------------------------------------


def _check_max_predictions(max_predictions: int) -> None:
    if max_predictions < 1:
        raise ValueError(f"max_predictions must be at least 1, got {max_predictions}")


def _check_known_queries(
    predictions: Mapping[str, Sequence[str]], solution: Mapping[str, Sequence[str]]
) -> None:
    """Raise ValueError naming the first query of `predictions` that `solution` lacks."""
    for query_id in predictions:
        if query_id not in solution:
            raise ValueError(
                f"prediction for query {query_id!r}, which is not in the solution "
                "(restrict the predictions to the scored split first)"
            )


def _distinct_hit_ranks(
    ranked: Sequence[str], ground_truth: set[str] | frozenset[str], max_predictions: int
) -> list[int]:
    """0-based ranks, within the first `max_predictions`, of first occurrences of relevant ids.

    A repeated id still occupies its rank but is not relevant a second time. Irrelevant
    repeats never matter, so only the (few) relevant positions are de-duplicated.
    """
    hits = [rank for rank, index_id in enumerate(ranked[:max_predictions]) if index_id in ground_truth]
    if len(hits) < 2:
        return hits
    seen: set[str] = set()
    distinct: list[int] = []
    for rank in hits:
        index_id = ranked[rank]
        if index_id not in seen:
            seen.add(index_id)
            distinct.append(rank)
    return distinct


def mean_average_precision(
    predictions: Mapping[str, Sequence[str]],
    solution: Mapping[str, Sequence[str]],
    max_predictions: int = 100,
) -> float:
    """Mean average precision at `max_predictions` (mAP@100) of a retrieval submission.

    Definition. For a query q with ranked predictions p_1, p_2, ...::

        AP(q) = (1 / min(n_q, max_predictions))
                * sum_{k <= max_predictions, p_k relevant} precision@k

        precision@k = (number of distinct relevant ids among p_1..p_k) / k

    where n_q = ``len(solution[q])``, and p_k is relevant when it is a ground-truth image of
    q that has not appeared earlier in the list: a repeated id is skipped (never relevant a
    second time) but still occupies its rank. Predictions past rank `max_predictions` are ignored. A query of
    `solution` without predictions has AP 0. Then::

        mAP = (1 / |solution|) * sum_{q in solution} AP(q)

    An empty `solution` gives ``0.0`` (the official code divides by zero).

    Args:
        predictions: query id -> index image ids, best first.
        solution: query id -> ground-truth index image ids (non-empty).
        max_predictions: ranks taken into account (100 in the competitions).

    Returns:
        mAP in ``[0, 1]``.

    Raises:
        ValueError: a query of `predictions` is not in `solution` (the message names it);
            a query of `solution` has no ground-truth image (its AP would divide by zero;
            the official code fails on it too, whenever the query has predictions);
            ``max_predictions < 1``.
    """
    _check_max_predictions(max_predictions)
    _check_known_queries(predictions, solution)
    for query_id, ground_truth in solution.items():
        if len(ground_truth) == 0:
            raise ValueError(
                f"query {query_id!r} of the solution has no ground-truth image, "
                "so its average precision is undefined"
            )
    if not solution:
        return 0.0

    total = 0.0
    for query_id, ranked in predictions.items():
        ground_truth = solution[query_id]
        hits = _distinct_hit_ranks(ranked, set(ground_truth), max_predictions)
        if not hits:
            continue
        precision_sum = sum(num_correct / (rank + 1) for num_correct, rank in enumerate(hits, start=1))
        # n_q is len(solution[q]), as in the official code.
        total += precision_sum / min(len(ground_truth), max_predictions)
    return total / len(solution)


def mean_precisions(
    predictions: Mapping[str, Sequence[str]],
    solution: Mapping[str, Sequence[str]],
    max_predictions: int = 100,
) -> np.ndarray:
    """Mean precision at every rank 1..`max_predictions` of a retrieval submission.

    Definition. Element ``k - 1`` of the result is::

        (1 / |solution|) * sum_{q in solution} c_q(k) / k

    where c_q(k) is the number of distinct ground-truth images of q among its first k
    predictions (a repeated id is skipped but occupies its rank). A query with fewer than
    k predictions keeps dividing by k, and a query without predictions contributes 0 at
    every rank. An empty `solution` gives an array of ``nan``.

    Args:
        predictions: query id -> index image ids, best first.
        solution: query id -> ground-truth index image ids.
        max_predictions: length of the result.

    Returns:
        Float array of shape ``(max_predictions,)``.

    Raises:
        ValueError: a query of `predictions` is not in `solution` (the message names it);
            ``max_predictions < 1``.
    """
    _check_max_predictions(max_predictions)
    _check_known_queries(predictions, solution)
    if not solution:
        return np.full(max_predictions, np.nan)

    # new_hits[r]: over all queries, the number of distinct relevant ids first seen at
    # 0-based rank r; its cumulative sum is sum_q c_q(r + 1).
    new_hits = np.zeros(max_predictions, dtype=np.int64)
    for query_id, ranked in predictions.items():
        truth = set(solution[query_id])
        for rank in _distinct_hit_ranks(ranked, truth, max_predictions):
            new_hits[rank] += 1
    ranks = np.arange(1, max_predictions + 1, dtype=np.float64)
    return np.cumsum(new_hits) / ranks / len(solution)


def mean_precision_at(
    predictions: Mapping[str, Sequence[str]],
    solution: Mapping[str, Sequence[str]],
    k: int,
) -> float:
    """Mean precision at rank k: element ``k - 1`` of :func:`mean_precisions`.

    Definition: ``(1 / |solution|) * sum_{q in solution} c_q(k) / k`` with c_q(k) the number
    of distinct ground-truth images of q among its first k predictions; ``nan`` for an
    empty `solution`.

    Raises:
        ValueError: as :func:`mean_precisions` (``k < 1``, unknown query id).
    """
    return float(mean_precisions(predictions, solution, max_predictions=k)[k - 1])


def mean_median_position(
    predictions: Mapping[str, Sequence[str]],
    solution: Mapping[str, Sequence[str]],
    max_predictions: int = 100,
) -> tuple[float, float]:
    """Mean and median rank of the first correct prediction of a retrieval submission.

    Definition. For a query q, position(q) is the 1-based rank of the first prediction
    within the first `max_predictions` that is a ground-truth image of q, and
    ``max_predictions + 1`` (101 by default) when there is none -- including a query with
    no predictions at all. The result is the mean and the median (the average of the two
    middle values for an even count) of position(q) over all queries of `solution`. An
    empty `solution` gives ``(nan, nan)``.

    Args:
        predictions: query id -> index image ids, best first.
        solution: query id -> ground-truth index image ids.
        max_predictions: ranks taken into account.

    Returns:
        ``(mean_position, median_position)``.

    Raises:
        ValueError: a query of `predictions` is not in `solution` (the message names it);
            ``max_predictions < 1``.
    """
    _check_max_predictions(max_predictions)
    _check_known_queries(predictions, solution)
    if not solution:
        return float("nan"), float("nan")

    missing = max_predictions + 1
    positions: list[int] = []
    for query_id, ground_truth in solution.items():
        ranked = predictions.get(query_id)
        if ranked is None:
            positions.append(missing)
            continue
        truth = set(ground_truth)
        first = next(
            (rank for rank, index_id in enumerate(ranked[:max_predictions], start=1) if index_id in truth),
            missing,
        )
        positions.append(first)
    return sum(positions) / len(positions), float(median(positions))
