"""`lmkcomp.calibration`: the lowest threshold reaching a target specificity, on hand-made scores."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lmkcomp.calibration import calibrate_threshold, rates_at
from lmkcomp.errors import UserInputError


def test_hits_the_target_specificity_exactly():
    # 100 negatives 0.00 .. 0.99 and 4 positives; 99 % specificity allows exactly one
    # negative (0.99) at or above the threshold, so t is just above 0.98
    negatives = np.round(np.arange(100) / 100, 2)
    positives = [0.5, 0.985, 0.99, 1.2]
    result = calibrate_threshold(positives, negatives, 0.99)
    assert result.specificity == 0.99 and result.false_positives == 1
    assert result.threshold == np.nextafter(0.98, 1.0)
    assert result.true_positives == 3 and result.sensitivity == 0.75
    assert (result.negatives, result.positives, result.target_specificity) == (100, 4, 0.99)
    # any lower threshold (0.98 itself) claims one negative too many
    assert rates_at(0.98, positives, negatives).specificity == 0.98


def test_integer_scores_get_the_next_whole_number():
    # inlier counts: 10 negatives, 80 % allows two of them (9 and 7) at or above t
    negatives = [9, 7, 5, 5, 4, 3, 2, 1, 0, 0]
    result = calibrate_threshold([20, 6, 5], negatives, 0.8, integer=True, minimum=1)
    assert result.threshold == 6 and isinstance(result.threshold, int)
    assert result.specificity == 0.8 and result.sensitivity == pytest.approx(2 / 3)
    # 100 %: above the best negative
    assert calibrate_threshold([20], negatives, 1.0, integer=True, minimum=1).threshold == 10
    # 0.1 allows 9 of 10 negatives at or above t: t = 1 claims 8, the minimum applies
    assert calibrate_threshold([20], negatives, 0.1, integer=True, minimum=1).threshold == 1


def test_ties_fall_on_one_side_so_specificity_can_exceed_the_target():
    # 4 negatives scoring 5, 3, 3, 3: 50 % allows two claimed, but the three tied 3s go
    # together, so t must exclude all of them: specificity 75 %, not 50 %
    result = calibrate_threshold([4, 3], [5, 3, 3, 3], 0.5, integer=True)
    assert result.threshold == 4 and result.specificity == 0.75 and result.sensitivity == 0.5


def test_all_equal_scores():
    # nothing separates positives from negatives: any claim of a positive claims every negative
    result = calibrate_threshold([2.0, 2.0], [2.0, 2.0, 2.0, 2.0], 0.5)
    assert result.threshold == np.nextafter(2.0, 3.0)
    assert result.specificity == 1.0 and result.sensitivity == 0.0
    # a target that every threshold reaches (the rejected half has no score): the lowest score,
    # claiming every scored item
    loose = calibrate_threshold([2.0], [2.0, -math.inf], 0.5)
    assert loose.threshold == 2.0 and loose.specificity == 0.5 and loose.sensitivity == 1.0


def test_negatives_without_a_score_are_never_claimed():
    # -inf: a query without any candidate; it is a correctly rejected negative at any threshold
    result = calibrate_threshold([8], [5, -math.inf, -math.inf], 0.5, integer=True, minimum=1)
    assert result.threshold == 1 and result.specificity == pytest.approx(2 / 3)


def test_no_positives_gives_no_sensitivity_not_nan():
    result = calibrate_threshold([], [0.1, 0.2], 1.0)
    assert result.sensitivity is None and result.specificity == 1.0


@pytest.mark.parametrize("positives, negatives, target, message", [
    ([1.0], [], 0.99, "no negative scores"),
    ([1.0], [float("nan")], 0.99, "NaN at position 0"),
    ([math.inf], [0.0], 0.99, r"\+inf"),
    ([1.0], [0.0], 0.0, r"target specificity must be in \(0, 1\]"),
    ([1.0], [0.0], 1.5, r"target specificity must be in \(0, 1\]"),
    ([1], [2.5], 0.99, "whole-number scores"),
])
def test_bad_input_is_a_user_error(positives, negatives, target, message):
    with pytest.raises(UserInputError, match=message):
        calibrate_threshold(positives, negatives, target, integer=message == "whole-number scores")


def test_too_few_negatives_for_the_target_are_flagged():
    # 16 negatives cannot show 99 %: the threshold must exclude every one of them
    few = calibrate_threshold([9], list(range(16)), 0.99, integer=True, minimum=1)
    assert few.threshold == 16 and "16 negatives cannot resolve a 0.99 specificity" in few.caveat()
    assert calibrate_threshold([9], list(range(100)), 0.99, integer=True).caveat() is None
    assert calibrate_threshold([9], list(range(16)), 1.0, integer=True).caveat() is None
