from __future__ import annotations

import numpy as np
import pytest

from lmkcomp.recognition import soft_voting


def test_soft_voting_by_hand():
    scores = np.array([[0.9, 0.8, 0.7, 0.1], [0.9, 0.5, 0.45, 0.4]])
    labels = np.array([[5, 7, 7, 5], [1, 2, 2, 2]])
    predicted, confidence = soft_voting(scores, labels, k=3)
    # query 0: 5 -> 0.9 ; 7 -> 0.8 + 0.7 = 1.5 (the 4th neighbour does not vote)
    # query 1: 1 -> 0.9 ; 2 -> 0.5 + 0.45 = 0.95
    assert predicted.tolist() == [7, 2]
    assert confidence == pytest.approx([1.5, 0.95])


def test_inlier_term_is_capped_and_can_flip_the_vote():
    scores = np.array([[0.8, 0.7, 0.6]])
    labels = np.array([[1, 2, 2]])
    inliers = np.array([[140, 0, 7]])
    predicted, confidence = soft_voting(scores, labels, k=3, inliers=inliers, inlier_cap=70)
    # 1 -> 0.8 + min(140, 70)/70 = 1.8 ; 2 -> 0.7 + 0.6 + 7/70 = 1.4
    assert predicted.tolist() == [1] and confidence == pytest.approx([1.8])


def test_tie_goes_to_the_better_ranked_neighbour():
    predicted, _ = soft_voting(np.array([[0.5, 0.5]]), np.array([[4, 3]]), k=2)
    assert predicted.tolist() == [4]
