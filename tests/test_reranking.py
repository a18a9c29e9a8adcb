"""Query expansion, database augmentation and re-ranking on hand-made vectors and kNN tables."""

from __future__ import annotations

import numpy as np
import pytest

from lmkcomp.reranking import discriminative_rerank, expand_vectors, expansion_matrix, spatial_rerank

DATABASE = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-1.0, 0.0]], dtype=np.float32)


def blocks(array: np.ndarray, rows: int):
    return ((start, array[start:start + rows]) for start in range(0, len(array), rows))


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def test_alpha_query_expansion_by_hand():
    query = np.array([[1.0, 0.0]])
    scores, indices = np.array([[1.0, 0.6, 0.0, -1.0]]), np.array([[0, 1, 2, 3]])
    weights = expansion_matrix(indices, scores, n=2, alpha=3.0, num_database=4)
    assert weights.toarray() == pytest.approx(np.array([[1.0, 0.216, 0.0, 0.0]]))
    # q + 1 * d0 + 0.6^3 * d1 = (2 + 0.216 * 0.6, 0.216 * 0.8)
    expected = unit([2.0 + 0.216 * 0.6, 0.216 * 0.8])
    assert expand_vectors(query, weights, blocks(DATABASE, 1))[0] == pytest.approx(expected, abs=1e-6)
    assert expand_vectors(query, weights, blocks(DATABASE, 4))[0] == pytest.approx(expected, abs=1e-6)


def test_non_positive_similarities_and_padding_weigh_nothing():
    scores, indices = np.array([[0.5, 0.0, -0.5, -np.inf]]), np.array([[1, 2, 3, -1]])
    # alpha 0 (average QE): weight 1 for the positive neighbour only
    assert expansion_matrix(indices, scores, n=4, alpha=0.0, num_database=4).toarray().tolist() == [[0, 1, 0, 0]]


def test_database_augmentation_skips_the_row_itself():
    # kNN of the database against itself: each row is its own best neighbour
    indices = np.array([[0, 1, 2, 3], [1, 0, 2, 3], [2, 1, 0, 3], [3, 2, 1, 0]])
    scores = np.take_along_axis(DATABASE @ DATABASE.T, indices, axis=1)
    weights = expansion_matrix(indices, scores, n=1, alpha=1.0, num_database=4, self_positions=np.arange(4))
    # row 0's neighbour after itself is row 1 (similarity 0.6); row 3's is row 2 (similarity 0) -> nothing added
    assert weights.toarray() == pytest.approx(np.array([[0, 0.6, 0, 0], [0.6, 0, 0, 0], [0, 0.8, 0, 0], [0, 0, 0, 0]]))
    augmented = expand_vectors(DATABASE, weights, blocks(DATABASE, 3))
    assert augmented[0] == pytest.approx(unit([1 + 0.36, 0.48]), abs=1e-6)
    assert augmented[2] == pytest.approx(unit([0.48, 1 + 0.64]), abs=1e-6)
    assert augmented[3] == pytest.approx([-1.0, 0.0])


def test_expand_vectors_needs_the_whole_database():
    weights = expansion_matrix(np.array([[0]]), np.array([[1.0]]), n=1, alpha=1.0, num_database=4)
    with pytest.raises(ValueError, match="cover 2 rows"):
        expand_vectors(np.ones((1, 2)), weights, blocks(DATABASE[:2], 2))


# Predicted labels and confidences of 8 database images, for the re-ranking tests.
DB_LABELS = np.array([1, 2, 1, 3, 1, 1, 2, 1])
DB_CONFIDENCES = np.array([0.5, 0.9, 0.1, 0.8, 0.45, 0.3, 0.2, 0.45])
NEIGHBOURS = np.array([[3, 0, 6, 2, 1], [1, 3, 0, 2, 4], [3, 5, -1, -1, -1]])
QUERY_LABELS = np.array([1, 2, 1])
QUERY_CONFIDENCES = np.array([0.2, 0.9, 0.5])


def test_discriminative_move_is_a_stable_partition():
    moved = discriminative_rerank(NEIGHBOURS, QUERY_LABELS, QUERY_CONFIDENCES, DB_LABELS, DB_CONFIDENCES,
                                  insert_threshold=None)
    assert moved.tolist() == [[0, 2, 3, 6, 1], [1, 3, 0, 2, 4], [5, 3, -1, -1, -1]]


def test_discriminative_insert_by_hand():
    reranked = discriminative_rerank(NEIGHBOURS, QUERY_LABELS, QUERY_CONFIDENCES, DB_LABELS, DB_CONFIDENCES,
                                     insert_threshold=0.6)
    # query 0 (label 1, 0.2): missing label-1 images 4 (0.45), 7 (0.45), 5 (0.3); 0.2 + c > 0.6 keeps
    # 4 and 7 (tie: lower position first), inserted after the moved 0, 2; 6 and 1 are cut
    # query 1 (label 2, 0.9): 6 is missing, 0.9 + 0.2 > 0.6 -> after 1, pushing 4 out
    # query 2 (label 1, 0.5): 0, 4, 7 enter; 2 does not (0.5 + 0.1 = 0.6 is not > 0.6); padding goes first
    assert reranked.tolist() == [[0, 2, 4, 7, 3], [1, 6, 3, 0, 2], [5, 0, 4, 7, 3]]
    assert discriminative_rerank(NEIGHBOURS, QUERY_LABELS, QUERY_CONFIDENCES, DB_LABELS, DB_CONFIDENCES,
                                 insert_threshold=0.59)[2].tolist() == [5, 0, 4, 7, 2]


def test_discriminative_rerank_keeps_the_length():
    reranked = discriminative_rerank(NEIGHBOURS, QUERY_LABELS, QUERY_CONFIDENCES, DB_LABELS, DB_CONFIDENCES,
                                     insert_threshold=-10.0, length=3)
    # only the first 3 neighbours count: query 0's list [3, 0, 6] keeps 0, and the two most
    # confident label-1 images outside it (4, 7; image 2 at rank 4 is "not retrieved" now) fill it
    assert reranked.tolist() == [[0, 4, 7], [1, 6, 3], [5, 0, 4]]


def test_spatial_rerank_orders_the_top_by_inliers_then_score():
    indices = np.array([[10, 11, 12, 13, 14, -1]])
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, -np.inf]], dtype=np.float32)
    inliers = np.array([[5, 20, 5, 0, 50, 0]])
    reranked, rescored = spatial_rerank(indices, scores, inliers, top=4)
    # 14 has the most inliers but lies outside the top 4
    assert reranked.tolist() == [[11, 10, 12, 13, 14, -1]]
    assert rescored[0, :4].tolist() == pytest.approx([0.8, 0.9, 0.7, 0.6])
    reranked, _ = spatial_rerank(indices, scores, inliers, top=6)
    assert reranked.tolist() == [[14, 11, 10, 12, 13, -1]]
