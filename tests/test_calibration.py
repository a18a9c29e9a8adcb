"""`lmkcomp.calibration`: the lowest threshold reaching a target specificity, on hand-made scores."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from lmkcomp.calibration import (
    calibrate_demote_over,
    calibrate_threshold,
    demote_over_rates,
    demotion_scores,
    rates_at,
    recognition_scores,
)
from lmkcomp.errors import UserInputError
from lmkcomp.voting import demote_frequent_labels, prediction_counts


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


# --------------------------------------------------------------------------------------------
# Distractor demotion: the demote-over count


def _demotion_fixture():
    """12 queries by hand: (best landmark, has a valid prediction, true landmark or None)."""
    rows = [(1, True, 1),     # q0: right, landmark 1 predicted 4 times (q10 is not valid: not counted)
            (1, True, None), (1, True, None),
            (1, True, 2),     # q3: a landmark image predicted wrong: -inf
            (2, True, 2), (2, True, None),
            (3, True, None), (3, True, None),
            (4, True, 4),
            (5, True, None),
            (1, False, None),  # q10: no prediction: -inf
            (3, False, 3)]     # q11: a landmark image without a prediction: -inf
    ids = [f"q{i}" for i in range(len(rows))]
    best = np.array([r[0] for r in rows])
    valid = np.array([r[1] for r in rows])
    labels = {image_id: r[2] for image_id, r in zip(ids, rows) if r[2] is not None}
    confidence = np.where(valid, np.linspace(0.9, 0.1, len(rows)), -np.inf)
    is_landmark, scores = recognition_scores(ids, best, confidence, labels)
    return best, valid, is_landmark, scores


def test_prediction_counts_count_valid_predictions_only():
    best, valid, _, scores = _demotion_fixture()
    counts = prediction_counts(best, valid)
    assert counts.tolist() == [4, 4, 4, 4, 2, 2, 2, 2, 1, 1, 0, 0]
    assert demotion_scores(counts, scores).tolist() == [-4, -4, -4, -math.inf, -2, -2, -2, -2, -1, -1,
                                                        -math.inf, -math.inf]
    # exactly the rows demote_frequent_labels demotes over N are those counting more than N
    for over in range(5):
        _, demoted = demote_frequent_labels(best[valid], np.ones(valid.sum()), over)
        assert demoted.tolist() == (counts[valid] > over).tolist()


@pytest.mark.parametrize("target, over, specificity, sensitivity", [
    # 7 negatives: counts 4, 4, 2, 2, 2, 1 and one without a prediction (never claimed);
    # 5 positives: counts 4, 2, 1 right, one wrong and one without a prediction (never claimed)
    (0.1, 4, 1 / 7, 3 / 5),    # 6 of 7 may be claimed: every count reaches it, nothing is demoted
    (0.2, 3, 3 / 7, 2 / 5),    # 5 may: N = 4 claims 6, so N = 3 (claims 4: the 2s and the 1)
    (0.4, 3, 3 / 7, 2 / 5),    # 4 may: the same
    (0.5, 1, 6 / 7, 1 / 5),    # 3 may, but the three tied 2s go together: N = 1 claims only the 1
    (0.85, 1, 6 / 7, 1 / 5),   # 1 may: N = 1
])
def test_demote_over_is_the_largest_count_reaching_the_target(target, over, specificity, sensitivity, caplog):
    best, valid, is_landmark, scores = _demotion_fixture()
    counts = prediction_counts(best, valid)
    result = calibrate_demote_over(counts, scores, is_landmark, target)
    assert result.threshold == over and isinstance(result.threshold, int)
    assert result.specificity == pytest.approx(specificity) and result.sensitivity == pytest.approx(sensitivity)
    assert (result.negatives, result.positives, result.target_specificity) == (7, 5, target)
    assert result.specificity >= target and not caplog.records
    # the largest: one more misses the target (unless nothing is demoted already)
    if over < counts.max():
        assert demote_over_rates(over + 1, counts, scores, is_landmark).specificity < target
    assert demote_over_rates(over, counts, scores, is_landmark) == replace(result, target_specificity=1.0)


def test_a_target_needing_n_below_1_gives_1_and_a_warning(caplog):
    best, valid, is_landmark, scores = _demotion_fixture()
    # 100 %: the negative predicted alone (count 1) would have to be demoted too, i.e. N = 0
    result = calibrate_demote_over(prediction_counts(best, valid), scores, is_landmark, 1.0)
    assert result.threshold == 1 and result.specificity == pytest.approx(6 / 7) and result.false_positives == 1
    assert result.sensitivity == pytest.approx(1 / 5)
    assert "demotion alone cannot reach a 1 specificity" in caplog.text
    # 7 negatives cannot resolve 0.9, but N = 1 does not exclude them all: no such caveat
    short = calibrate_demote_over(prediction_counts(best, valid), scores, is_landmark, 0.9)
    assert short.threshold == 1 and short.specificity < 0.9 and short.caveat() is None


def test_a_count_demoting_every_prediction_is_flagged(caplog):
    # every landmark predicted twice: N = 1 demotes all four, which demote_frequent_labels leaves unchanged
    is_landmark = np.array([True, False, False, True])
    counts = prediction_counts([1, 1, 2, 2], [True] * 4)
    result = calibrate_demote_over(counts, np.ones(4), is_landmark, 1.0)
    assert result.threshold == 1 and result.specificity == 1.0
    assert "demotes every one of the 4 predictions" in caplog.text
    caplog.clear()
    assert demote_over_rates(2, counts, np.ones(4), is_landmark).specificity == 0.0 and not caplog.records


def test_demote_over_without_any_prediction_is_unbounded_and_bad_counts_are_refused():
    # no query has a prediction: every N reaches the target, none needs demoting
    assert calibrate_demote_over([0, 0], [-math.inf, -math.inf], [True, False], 0.99).threshold == math.inf
    for over in (0, 2.5, -1):
        with pytest.raises(UserInputError, match="demote-over is a prediction count N >= 1"):
            demote_over_rates(over, [1, 1], [0.5, 0.5], [True, False])
    with pytest.raises(UserInputError, match="no negative scores"):
        calibrate_demote_over([1, 1], [0.5, 0.5], [True, True], 0.99)
