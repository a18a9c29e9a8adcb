"""Retrieval post-processing on kNN results: query expansion, database augmentation, re-ranking.

Array-level functions with exact definitions; `lmkcomp.inference` applies them to embedding
stores and kNN tables block by block.

- α-query expansion (αQE) and database-side augmentation (DBA) replace a vector by the
  L2-normalised sum of itself and its top-n neighbours weighted by similarity^α; QE does it
  to the queries, DBA to every database vector (its neighbours found in the database itself),
  and the search is then run again. Both are one sparse (rows x database) weight matrix
  applied to the database block by block (`expansion_matrix`, `expand_vectors`).
- Discriminative re-ranking (Ozaki & Yokoo 2019): with a predicted landmark for every query and
  database image, database images of the query's landmark move ahead of the others, and
  ones the search missed are inserted (`discriminative_rerank`).
- Spatial re-ranking (the later official DELF code): the top N by (inliers, initial score)
  (`spatial_rerank`).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike

from lmkcomp.errors import UserInputError
from lmkcomp.features.store import l2_normalize

# --------------------------------------------------------------------------------------------
# αQE and DBA


def expansion_matrix(
    neighbour_indices: ArrayLike,
    neighbour_scores: ArrayLike,
    n: int,
    alpha: float,
    num_database: int,
    self_positions: ArrayLike | None = None,
) -> sp.csr_matrix:
    """Sparse (rows x num_database) weights of each row's top-`n` neighbours.

    Row i holds `s_ij ** alpha` at the database position of each of its first `n` neighbours
    j (kNN order, best first), and 0 where `s_ij <= 0` (a fractional power of a negative
    number is undefined, and an opposite vector is no evidence). With `self_positions` (DBA: the row's own position
    in the database) that position is skipped and the next neighbour takes its place, so a
    vector is never counted twice. `alpha = 0` gives every positive neighbour weight 1 (average QE).
    Index -1 ("no neighbour", the padding of a kNN table) is skipped.
    """
    indices = np.asarray(neighbour_indices, dtype=np.int64)
    scores = np.asarray(neighbour_scores, dtype=np.float64)
    if n < 1 or alpha < 0:
        raise UserInputError(f"query expansion needs n >= 1 and alpha >= 0, got n={n}, alpha={alpha}")
    keep = indices >= 0
    if self_positions is not None:
        keep &= indices != np.asarray(self_positions, dtype=np.int64)[:, None]
    keep &= np.cumsum(keep, axis=1) <= n
    rows, columns = np.nonzero(keep)
    similarity = scores[rows, columns]
    weights = np.where(similarity > 0, np.maximum(similarity, 0.0) ** alpha, 0.0)
    return sp.csr_matrix((weights, (rows, indices[rows, columns])), shape=(indices.shape[0], num_database))


def expand_vectors(
    vectors: ArrayLike, weights: sp.csr_matrix, database_blocks: Iterable[tuple[int, np.ndarray]]
) -> np.ndarray:
    """`L2(vectors + weights @ database)`, float32, reading the database one block at a time.

    `vectors` (rows x d) are the queries (QE) or the database rows being augmented (DBA), each
    with weight 1; `weights` comes from `expansion_matrix`; `database_blocks` yields
    `(start, rows [start, start + len(block)))` covering the database, e.g.
    `EmbeddingStore.iter_blocks`. Blocks no row points into are never multiplied, so a caller
    may pass them as zeros without reading them.
    """
    result = np.array(vectors, dtype=np.float32)
    if result.ndim != 2 or result.shape[0] != weights.shape[0]:
        raise ValueError(f"vectors {result.shape} do not match {weights.shape[0]} weight rows")
    covered = 0
    for start, block in database_blocks:
        columns = weights[:, start:start + block.shape[0]]
        if columns.nnz:
            result += (columns @ np.asarray(block, dtype=np.float32)).astype(np.float32)
        covered = max(covered, start + block.shape[0])
    if covered != weights.shape[1]:
        raise ValueError(f"the database blocks cover {covered} rows, the weights {weights.shape[1]}")
    return l2_normalize(result)


# --------------------------------------------------------------------------------------------
# Re-ranking


def discriminative_rerank(
    neighbour_indices: ArrayLike,
    query_labels: ArrayLike,
    query_confidences: ArrayLike,
    database_labels: ArrayLike,
    database_confidences: ArrayLike,
    insert_threshold: float | None = 0.6,
    length: int = 100,
) -> np.ndarray:
    """Each query's ranked database positions after discriminative re-ranking (Ozaki & Yokoo 2019).

    Per query, over its first `length` neighbours (width `w = min(length, K)`):

    1. Move: neighbours whose predicted label equals the query's move ahead of the others;
       the order within each group is kept (a stable partition).
    2. Insert (skipped when `insert_threshold` is None): database images predicted with the
       query's label that are not in the list, with `query confidence + their confidence >
       insert_threshold`, go right after the moved group and before the others, most
       confident first (ties: lower database position first).

    The list is then cut back to `w`, so insertions push out the "no neighbour" padding (-1,
    always last) first, then the last other-label neighbours. Returns an int64 array
    (n_queries, w) of database positions, -1 where a row has fewer than w entries.
    """
    indices = np.asarray(neighbour_indices, dtype=np.int64)[:, :length]
    query_labels = np.asarray(query_labels)
    query_confidences = np.asarray(query_confidences, dtype=np.float64)
    database_labels = np.asarray(database_labels)
    database_confidences = np.asarray(database_confidences, dtype=np.float64)
    positive = (indices >= 0) & (database_labels[indices] == query_labels[:, None])
    order = np.argsort(~positive, axis=1, kind="stable")
    moved = np.take_along_axis(indices, order, axis=1)
    if insert_threshold is None:
        return moved
    num_positive = positive.sum(axis=1)
    width = indices.shape[1]
    # database positions grouped by label, most confident first within a label
    by_label = np.lexsort((np.arange(len(database_labels)), -database_confidences, database_labels))
    sorted_labels = database_labels[by_label]
    first = np.searchsorted(sorted_labels, query_labels, side="left")
    last = np.searchsorted(sorted_labels, query_labels, side="right")
    for i in np.flatnonzero((last > first) & (num_positive < width)):
        members = by_label[first[i]:last[i]]
        # members are sorted by confidence, so the eligible ones are a prefix
        eligible = members[:np.count_nonzero(query_confidences[i] + database_confidences[members] > insert_threshold)]
        inserted = eligible[~np.isin(eligible, moved[i, :num_positive[i]])]
        if inserted.size:
            head = num_positive[i]
            moved[i] = np.concatenate([moved[i, :head], inserted, moved[i, head:]])[:width]
    return moved


def spatial_rerank(
    neighbour_indices: ArrayLike, neighbour_scores: ArrayLike, inliers: ArrayLike, top: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """The first `top` neighbours of each query re-ordered by (inliers, initial score), both
    descending; entries equal in both keep their order; the rest of the list is unchanged.

    `inliers` is aligned with `neighbour_indices` (0 for unverified pairs). "No neighbour"
    padding (index -1, score -inf, 0 inliers) stays last. Returns the re-ordered (indices, scores).
    """
    indices = np.array(neighbour_indices, dtype=np.int64)
    scores = np.array(neighbour_scores, dtype=np.float32)
    inliers = np.asarray(inliers)
    if inliers.shape != indices.shape or scores.shape != indices.shape:
        raise ValueError(f"indices {indices.shape}, scores {scores.shape} and inliers {inliers.shape} differ")
    order = np.lexsort((-scores[:, :top], -inliers[:, :top]), axis=1)
    indices[:, :top] = np.take_along_axis(indices[:, :top], order, axis=1)
    scores[:, :top] = np.take_along_axis(scores[:, :top], order, axis=1)
    return indices, scores
