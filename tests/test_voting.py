from __future__ import annotations

import numpy as np
import pytest

from lmkcomp.errors import UserInputError
from lmkcomp.voting import (
    classifier_predictions,
    demote_frequent_labels,
    mean_top_similarity,
    nonlandmark_penalized_scores,
    soft_voting,
)


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


# --------------------------------------------------------------------------------------------
# Distractor demotion


def test_demotion_pushes_frequent_labels_below_all_others():
    labels = np.array([9, 9, 9, 4, 5, 4])
    confidences = np.array([2.0, 1.5, 0.9, 1.0, 0.7, 0.2])
    demoted_conf, demoted = demote_frequent_labels(labels, confidences, max_predictions=2)
    # landmark 9 has 3 predictions > 2; shift = max(2.0, 1.5, 0.9) - min(1.0, 0.7, 0.2) + 1 = 2.8
    assert demoted.tolist() == [True, True, True, False, False, False]
    assert demoted_conf == pytest.approx([-0.8, -1.3, -1.9, 1.0, 0.7, 0.2])
    assert demoted_conf[demoted].max() < demoted_conf[~demoted].min()


def test_demotion_by_factor_and_threshold_is_exclusive():
    labels = np.array([3, 3, 8])
    confidences = np.array([1.0, 0.5, 0.4])
    scaled, demoted = demote_frequent_labels(labels, confidences, max_predictions=1, factor=0.1)
    assert demoted.tolist() == [True, True, False] and scaled == pytest.approx([0.1, 0.05, 0.4])
    # exactly max_predictions predictions are not "more than" it
    unchanged, demoted = demote_frequent_labels(labels, confidences, max_predictions=2)
    assert not demoted.any() and unchanged.tolist() == confidences.tolist()


def test_demotion_of_every_row_changes_nothing():
    confidences, demoted = demote_frequent_labels(np.array([1, 1]), np.array([0.3, 0.6]), max_predictions=1)
    assert demoted.all() and confidences.tolist() == [0.3, 0.6]


# --------------------------------------------------------------------------------------------
# Non-landmark bank


def test_nonlandmark_penalty_is_a_minus_b_minus_c():
    query_bank = np.array([[0.9, 0.5, 0.4], [0.2, 0.1, 0.0]])
    train_bank = np.array([[0.6, 0.4], [0.1, 0.1], [0.8, 0.0]])
    c = mean_top_similarity(query_bank, 2)  # [0.7, 0.15]
    b = mean_top_similarity(train_bank, 2)  # [0.5, 0.1, 0.4]
    neighbours = np.array([[0, 1], [1, 2]])  # train positions of each query's neighbours
    a = np.array([[0.95, 0.9], [0.8, 0.6]])
    adjusted = nonlandmark_penalized_scores(a, b[neighbours], c)
    assert adjusted == pytest.approx(np.array([[0.95 - 0.5 - 0.7, 0.9 - 0.1 - 0.7], [0.8 - 0.1 - 0.15, 0.6 - 0.4 - 0.15]]))
    # the penalty changes the vote: query 0's nearest neighbour (label 1) looks like the bank,
    # so its second neighbour's label 2 wins (0.1 > -0.25), unlike with A alone (0.95 > 0.9)
    assert soft_voting(a, np.array([[1, 2], [3, 3]]), k=1)[0].tolist() == [1, 3]
    predicted, confidence = soft_voting(adjusted, np.array([[1, 2], [3, 3]]), k=2)
    assert predicted.tolist() == [2, 3] and confidence == pytest.approx([0.1, 0.6])


def test_mean_top_needs_enough_neighbours():
    with pytest.raises(UserInputError, match="top 5"):
        mean_top_similarity(np.zeros((2, 3)), 5)


# --------------------------------------------------------------------------------------------
# Classifier head


def test_cosine_classifier_takes_the_best_subcentre():
    embeddings = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # 3 classes x 2 sub-centres; class 1's second sub-centre points along y
    weight = np.array([[1.0, 0.1], [-1.0, 0.0], [0.0, -1.0], [0.0, 5.0], [1.0, 1.0], [1.0, -1.0]])
    classes, confidence = classifier_predictions(embeddings, weight, subcenters=2, class_block=2)
    cos = lambda u, v: np.dot(u, v) / np.linalg.norm(u) / np.linalg.norm(v)
    assert classes.tolist() == [0, 1, 2]
    assert confidence == pytest.approx([cos([1, 0], [1, 0.1]), 1.0, 1.0])


def test_cosine_classifier_matches_the_head_module():
    import torch

    from lmkcomp.models.heads import create_head

    torch.manual_seed(0)
    head = create_head("subcenter_arcface", 8, 37)
    embeddings = torch.randn(11, 8)
    with torch.no_grad():
        expected = head(embeddings) / head.scale
    classes, confidence = classifier_predictions(embeddings.numpy(), head.weight.detach().numpy(), subcenters=3,
                                                 class_block=5)
    assert classes.tolist() == expected.argmax(dim=1).tolist()
    assert confidence == pytest.approx(expected.max(dim=1).values.numpy(), abs=1e-5)


def test_softmax_classifier_confidence_is_the_probability():
    embeddings = np.array([[1.0, 0.0], [0.0, 1.0]])
    weight = np.array([[1.0, 0.0], [0.0, 2.0], [0.5, 0.5]])
    bias = np.array([0.0, -1.5, 0.0])
    classes, confidence = classifier_predictions(embeddings, weight, bias, cosine=False, class_block=2)
    logits = embeddings @ weight.T + bias  # [[1, -1.5, 0.5], [0, 0.5, 0.5]]
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    # row 1: classes 1 and 2 tie at 0.5 -> the lower index
    assert classes.tolist() == [0, 1]
    assert confidence == pytest.approx(probabilities[[0, 1], [0, 1]])
