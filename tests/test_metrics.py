"""Tests of lmkcomp.metrics on small hand-computed fixtures (arithmetic in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lmkcomp.metrics import (
    SensitivitySpecificity,
    global_average_precision,
    mean_average_precision,
    mean_median_position,
    mean_precision_at,
    mean_precisions,
    sensitivity_specificity,
    top1_accuracy,
    top_k_accuracy,
)

# --------------------------------------------------------------------------------------
# Recognition: the reference document's worked example
# --------------------------------------------------------------------------------------

# Landmark images: A, B, C (M = 3). Non-landmark images: D, E.
WORKED_SOLUTION = {"A": [0, 12], "B": [100, 200, 300], "C": [1], "D": [], "E": []}
WORKED_PREDICTIONS = {"B": (0, 0.01), "C": (1, 10.0), "D": (150, 15.0)}


def test_gap_worked_example():
    # Ranked by score: D (15.0, wrong: non-landmark), C (10.0, right), B (0.01, wrong: 0 not in GT).
    # Rank 2 is the only hit: P(2) = 1/2. GAP = (1/3) * (1/2) = 1/6.
    assert global_average_precision(WORKED_PREDICTIONS, WORKED_SOLUTION) == pytest.approx(1 / 6)


def test_gap_worked_example_ignoring_non_landmarks():
    # D is dropped: ranking C (right), B (wrong). P(1) = 1. GAP = (1/3) * 1 = 1/3.
    got = global_average_precision(WORKED_PREDICTIONS, WORKED_SOLUTION, ignore_non_landmarks=True)
    assert got == pytest.approx(1 / 3)


def test_top1_worked_example():
    # Landmark images A, B, C: A has no prediction, B wrong, C right -> 1/3.
    assert top1_accuracy(WORKED_PREDICTIONS, WORKED_SOLUTION) == pytest.approx(1 / 3)


# --------------------------------------------------------------------------------------
# GAP
# --------------------------------------------------------------------------------------


def test_gap_ranks_by_score_and_counts_non_landmarks_as_wrong():
    solution = {"a": [1, 4], "b": [2], "c": [3], "d": []}
    # Submission order deliberately differs from score order.
    predictions = {"c": (3, 0.6), "b": (7, 0.7), "d": (5, 0.8), "a": (4, 0.9)}
    # Ranked: a (4 in [1,4]: right, P=1/1), d (wrong), b (wrong), c (right, P=2/4).
    # GAP = (1 + 2/4) / 3 = 0.5.
    assert global_average_precision(predictions, solution) == pytest.approx(0.5)
    # Ignoring non-landmarks: a (right, 1/1), b (wrong), c (right, 2/3).
    # GAP = (1 + 2/3) / 3 = 5/9.
    got = global_average_precision(predictions, solution, ignore_non_landmarks=True)
    assert got == pytest.approx(5 / 9)


def test_gap_ties_are_broken_by_test_id_whatever_the_submission_order():
    # The official code sorts by test id before its stable sort by score, so equal scores
    # rank in ascending test-id order: "a" (wrong) before "b" (right).
    # GAP = (1/2 at rank 2) / 2 landmark images = 1/4.
    # (Submission order "b" first would instead give (1/1) / 2 = 1/2.)
    solution = {"a": [2], "b": [1]}
    b_first = {"b": (1, 0.5), "a": (9, 0.5)}
    a_first = {"a": (9, 0.5), "b": (1, 0.5)}
    assert global_average_precision(b_first, solution) == pytest.approx(1 / 4)
    assert global_average_precision(a_first, solution) == pytest.approx(1 / 4)


def test_gap_tie_order_uses_string_order_of_ids():
    # "10" < "9" as strings: "10" (right) ranks first, then "9" (wrong).
    # GAP = (1/1) / 2 = 1/2. Numeric order (9 first) would give (1/2) / 2 = 1/4.
    solution = {"9": [5], "10": [6]}
    predictions = {"9": (0, 1.0), "10": (6, 1.0)}
    assert global_average_precision(predictions, solution) == pytest.approx(1 / 2)


def test_gap_ignores_predictions_for_ids_outside_the_solution():
    # "z" (top score) is not scored; otherwise it would push "a" to rank 2: GAP = 1/2.
    solution = {"a": [1]}
    predictions = {"z": (5, 0.9), "a": (1, 0.1)}
    assert global_average_precision(predictions, solution) == pytest.approx(1.0)


def test_gap_images_without_prediction_still_count_in_m():
    # M = 4 (a, b, c, d); only a is predicted, correctly: GAP = (1/1) / 4 = 1/4.
    solution = {"a": [1], "b": [2], "c": [3], "d": [4]}
    assert global_average_precision({"a": (1, 0.3)}, solution) == pytest.approx(1 / 4)


def test_gap_is_zero_without_landmark_images():
    # M = 0 -> 0.0 by convention (the official code would divide by zero).
    assert global_average_precision({"d": (3, 0.9)}, {"d": []}) == 0.0
    assert global_average_precision({"d": (3, 0.9)}, {}) == 0.0


def test_gap_rejects_nan_score():
    with pytest.raises(ValueError, match="'a'"):
        global_average_precision({"a": (1, float("nan"))}, {"a": [1]})


# --------------------------------------------------------------------------------------
# Top-1 and top-k accuracy
# --------------------------------------------------------------------------------------


def test_top1_counts_missing_predictions_as_wrong_and_ignores_scores():
    solution = {"a": [1], "b": [2, 3], "c": [], "d": [4], "e": [6]}
    predictions = {
        "a": (1, 0.0001),  # right, however low the score
        "b": (3, 0.5),  # right (3 is one of b's landmarks)
        "c": (0, 0.9),  # non-landmark image: not counted
        "d": (5, 0.9),  # wrong
        "z": (7, 0.9),  # not in the solution: ignored
    }
    # e has no prediction. Landmark images a, b, d, e; right: a, b -> 2/4.
    assert top1_accuracy(predictions, solution) == pytest.approx(0.5)


def test_top1_is_nan_without_landmark_images():
    assert math.isnan(top1_accuracy({"c": (0, 0.9)}, {"c": []}))


TOPK_SOLUTION = {"a": [1], "b": [2], "c": [3], "d": [], "e": [4]}
TOPK_PREDICTIONS = {"a": [9, 1, 8], "b": [2], "c": [7, 8, 3], "d": [5]}


@pytest.mark.parametrize(
    ("k", "expected"),
    [
        # Landmark images a, b, c, e (e has no predictions); d is ignored.
        (1, 1 / 4),  # b only
        (2, 2 / 4),  # a (1 at rank 2), b
        (3, 3 / 4),  # a, b, c (3 at rank 3)
        (100, 3 / 4),  # lists shorter than k are fine; e is still wrong
    ],
)
def test_top_k_accuracy(k, expected):
    assert top_k_accuracy(TOPK_PREDICTIONS, TOPK_SOLUTION, k) == pytest.approx(expected)


def test_top_k_accuracy_rejects_k_below_one():
    with pytest.raises(ValueError):
        top_k_accuracy(TOPK_PREDICTIONS, TOPK_SOLUTION, 0)


def test_top_k_accuracy_is_nan_without_landmark_images():
    assert math.isnan(top_k_accuracy({"d": [5]}, {"d": []}, 10))


# --------------------------------------------------------------------------------------
# Sensitivity and specificity
# --------------------------------------------------------------------------------------


def test_sensitivity_specificity_at_threshold():
    solution = {"a": [1], "b": [2], "c": [3], "g": [5], "d": [], "e": [], "f": []}
    predictions = {
        "a": (1, 0.9),  # landmark, claimed, right -> counts for sensitivity
        "b": (2, 0.3),  # landmark, right id but score < 0.5: not claimed -> miss
        "c": (9, 0.8),  # landmark, claimed, wrong id -> miss
        "g": (5, 0.5),  # landmark, score == threshold is claimed, right -> counts
        "d": (4, 0.2),  # non-landmark, score < 0.5: not claimed -> counts for specificity
        "e": (4, 0.5),  # non-landmark, score == threshold: claimed -> miss
        # f: non-landmark without prediction -> counts for specificity
        "z": (1, 0.9),  # not in the solution: ignored
    }
    # sensitivity = |{a, g}| / |{a, b, c, g}| = 2/4; specificity = |{d, f}| / |{d, e, f}| = 2/3.
    got = sensitivity_specificity(predictions, solution, threshold=0.5)
    assert isinstance(got, SensitivitySpecificity)
    assert got.sensitivity == pytest.approx(0.5)
    assert got.specificity == pytest.approx(2 / 3)
    assert (got.num_landmark_images, got.num_non_landmark_images) == (4, 3)


def test_sensitivity_specificity_zero_denominators_give_nan():
    # Only landmark images: specificity has no denominator. a right and claimed -> 1/1.
    only_landmarks = sensitivity_specificity({"a": (1, 0.9)}, {"a": [1]}, threshold=0.5)
    assert only_landmarks.sensitivity == pytest.approx(1.0)
    assert math.isnan(only_landmarks.specificity)
    # Only non-landmark images: d unclaimed -> specificity 1/1; sensitivity undefined.
    only_non = sensitivity_specificity({"d": (1, 0.1)}, {"d": []}, threshold=0.5)
    assert math.isnan(only_non.sensitivity)
    assert only_non.specificity == pytest.approx(1.0)


# --------------------------------------------------------------------------------------
# Retrieval: mAP@100
# --------------------------------------------------------------------------------------


def test_map_basic_with_missing_query():
    solution = {"q1": ["x1", "x2", "x3"], "q2": ["y1"], "q3": ["z1", "z2"]}
    predictions = {"q1": ["x1", "n1", "x2", "n2"], "q2": ["n1", "y1"]}
    # q1: hits at ranks 1 and 3: 1/1 + 2/3 = 5/3; n = 3 -> AP = 5/9.
    # q2: hit at rank 2: 1/2; n = 1 -> AP = 1/2.
    # q3: no predictions -> AP = 0.
    # mAP = (5/9 + 1/2 + 0) / 3 = (10/18 + 9/18) / 3 = 19/54.
    assert mean_average_precision(predictions, solution) == pytest.approx(19 / 54)


def test_map_repeated_relevant_id_is_skipped_but_occupies_its_rank():
    # GT {a, b}; list [a, a, b]: rank 1 a (1/1), rank 2 repeat skipped, rank 3 b (2/3).
    # AP = (1 + 2/3) / 2 = 5/6.
    # (Counting the repeat: (1 + 2/2 + 3/3)/2 = 3/2; dropping its rank: (1 + 2/2)/2 = 1.)
    got = mean_average_precision({"q": ["a", "a", "b"]}, {"q": ["a", "b"]})
    assert got == pytest.approx(5 / 6)


def test_map_repeated_irrelevant_id_occupies_its_rank():
    # GT {a}; list [n, n, a]: a at rank 3 -> AP = (1/3) / 1 = 1/3 (not 1/2).
    got = mean_average_precision({"q": ["n", "n", "a"]}, {"q": ["a"]})
    assert got == pytest.approx(1 / 3)


def test_map_more_than_100_ground_truth_images():
    gt = [f"g{i}" for i in range(150)]
    # Ranks 1..50 relevant (precision 1 each), ranks 51..100 irrelevant, ranks 101..120
    # relevant but past the cut-off.
    ranked = gt[:50] + [f"n{i}" for i in range(50)] + gt[50:70]
    # AP = (50 * 1) / min(150, 100) = 0.5. (Denominator 150 would give 1/3.)
    assert mean_average_precision({"q": ranked}, {"q": gt}) == pytest.approx(0.5)
    # A perfect top 100: 100 / min(150, 100) = 1.0.
    assert mean_average_precision({"q": gt[:100]}, {"q": gt}) == pytest.approx(1.0)


def test_map_custom_max_predictions():
    # max_predictions = 2: list [n, a, b] -> only rank 2 counts: 1/2; n = min(3, 2) = 2.
    # AP = (1/2) / 2 = 1/4.
    got = mean_average_precision({"q": ["n", "a", "b"]}, {"q": ["a", "b", "c"]}, max_predictions=2)
    assert got == pytest.approx(1 / 4)


def test_map_rejects_unknown_query_id():
    with pytest.raises(ValueError, match="'stranger'"):
        mean_average_precision({"q": ["a"], "stranger": ["a"]}, {"q": ["a"]})


def test_map_rejects_query_without_ground_truth():
    with pytest.raises(ValueError, match="'q2'"):
        mean_average_precision({"q1": ["a"]}, {"q1": ["a"], "q2": []})


def test_map_empty_solution():
    assert mean_average_precision({}, {}) == 0.0
    # Predictions against an empty solution are unknown queries.
    with pytest.raises(ValueError, match="'q'"):
        mean_average_precision({"q": ["a"]}, {})


# --------------------------------------------------------------------------------------
# Retrieval: mean precisions
# --------------------------------------------------------------------------------------

MP_SOLUTION = {"q1": ["a", "b"], "q2": ["c"], "q3": ["d"]}
MP_PREDICTIONS = {"q1": ["a", "x", "a", "b"], "q2": ["x", "c"]}
# Distinct relevant counts c(k) for k = 1..4:
#   q1 [a, x, a(repeat), b]: 1, 1, 1, 2 -> precisions 1, 1/2, 1/3, 2/4
#   q2 [x, c] (ranks 3, 4 missing): 0, 1, 1, 1 -> precisions 0, 1/2, 1/3, 1/4
#   q3 (no predictions): 0, 0, 0, 0
# Means over 3 queries:
#   k=1: (1 + 0 + 0)/3 = 1/3; k=2: (1/2 + 1/2)/3 = 1/3; k=3: (1/3 + 1/3)/3 = 2/9;
#   k=4: (1/2 + 1/4)/3 = 1/4.
MP_EXPECTED = [1 / 3, 1 / 3, 2 / 9, 1 / 4]


def test_mean_precisions_small():
    got = mean_precisions(MP_PREDICTIONS, MP_SOLUTION, max_predictions=4)
    assert got.shape == (4,)
    np.testing.assert_allclose(got, MP_EXPECTED)


def test_mean_precisions_default_length_and_tail():
    got = mean_precisions(MP_PREDICTIONS, MP_SOLUTION)
    assert got.shape == (100,)
    np.testing.assert_allclose(got[:4], MP_EXPECTED)
    # At k = 100 nothing new was found after rank 4: (2/100 + 1/100 + 0) / 3 = 1/100.
    assert got[99] == pytest.approx(1 / 100)


def test_mean_precision_at():
    assert mean_precision_at(MP_PREDICTIONS, MP_SOLUTION, 2) == pytest.approx(1 / 3)
    assert mean_precision_at(MP_PREDICTIONS, MP_SOLUTION, 4) == pytest.approx(1 / 4)
    # Predictions past rank k do not count: only rank 1 (n) of [n, a] is looked at -> 0.
    assert mean_precision_at({"q": ["n", "a"]}, {"q": ["a"]}, 1) == 0.0


def test_mean_precisions_rejects_unknown_query_id():
    with pytest.raises(ValueError, match="'stranger'"):
        mean_precisions({"stranger": ["a"]}, MP_SOLUTION)


def test_mean_precisions_empty_solution_is_nan():
    got = mean_precisions({}, {}, max_predictions=3)
    assert got.shape == (3,)
    assert np.isnan(got).all()


# --------------------------------------------------------------------------------------
# Retrieval: mean and median position of the first correct result
# --------------------------------------------------------------------------------------

POS_SOLUTION = {"q1": ["a"], "q2": ["b", "c"], "q3": ["d"], "q4": ["e"]}
POS_PREDICTIONS = {"q1": ["a"], "q2": ["x", "y", "c", "b"], "q3": ["x"]}


def test_mean_median_position_default():
    # Positions: q1 1; q2 3 (c); q3 none -> 101; q4 no predictions -> 101.
    # Mean = (1 + 3 + 101 + 101) / 4 = 206/4 = 51.5. Median of [1, 3, 101, 101] = (3 + 101)/2 = 52.
    mean, median = mean_median_position(POS_PREDICTIONS, POS_SOLUTION)
    assert mean == pytest.approx(51.5)
    assert median == pytest.approx(52.0)


def test_mean_median_position_cut_off():
    # max_predictions = 2: q1 1; q2's first hit (rank 3) is past the cut -> 3; q3, q4 -> 3.
    # Mean = (1 + 3 + 3 + 3) / 4 = 2.5. Median of [1, 3, 3, 3] = 3.
    mean, median = mean_median_position(POS_PREDICTIONS, POS_SOLUTION, max_predictions=2)
    assert mean == pytest.approx(2.5)
    assert median == pytest.approx(3.0)


def test_mean_median_position_odd_count():
    # Positions: 2, 1, 101 (q3: [n] misses). Mean = 104/3. Median = 2.
    solution = {"q1": ["a"], "q2": ["b"], "q3": ["c"]}
    predictions = {"q1": ["n", "a"], "q2": ["b", "b"], "q3": ["n"]}
    mean, median = mean_median_position(predictions, solution)
    assert mean == pytest.approx(104 / 3)
    assert median == pytest.approx(2.0)


def test_mean_median_position_rejects_unknown_query_id():
    with pytest.raises(ValueError, match="'stranger'"):
        mean_median_position({"stranger": ["a"]}, POS_SOLUTION)


def test_mean_median_position_empty_solution_is_nan():
    mean, median = mean_median_position({}, {})
    assert math.isnan(mean) and math.isnan(median)
