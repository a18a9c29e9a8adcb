"""Nearest-neighbour search over L2-normalised embeddings (inner product = cosine similarity).

`exact_search` never holds more than one block of the query-by-database similarity matrix,
so memory stays bounded whatever the sizes (GLDv2: 118 K queries x 4.1 M train images).
"""

from __future__ import annotations

import numpy as np


def exact_search(
    queries: np.ndarray, database: np.ndarray, k: int, query_block: int = 1024, database_block: int = 65536
) -> tuple[np.ndarray, np.ndarray]:
    """Top-`k` database rows by inner product for every query row.

    Returns (scores, indices), each of shape (n_queries, min(k, n_database)), best first; ties are
    broken by the lower database index, so results are deterministic. Peak extra memory is about
    query_block x (database_block + k) floats.
    """
    if queries.ndim != 2 or database.ndim != 2 or queries.shape[1] != database.shape[1]:
        raise ValueError(f"shape mismatch: queries {queries.shape}, database {database.shape}")
    k = min(k, database.shape[0])
    n = queries.shape[0]
    scores = np.empty((n, k), dtype=np.float32)
    indices = np.empty((n, k), dtype=np.int64)
    for q_start in range(0, n, query_block):
        block = np.ascontiguousarray(queries[q_start:q_start + query_block], dtype=np.float32)
        best_scores = np.full((block.shape[0], 0), -np.inf, dtype=np.float32)
        best_indices = np.zeros((block.shape[0], 0), dtype=np.int64)
        for d_start in range(0, database.shape[0], database_block):
            chunk = np.asarray(database[d_start:d_start + database_block], dtype=np.float32)
            similarity = block @ chunk.T
            candidate_scores = np.concatenate([best_scores, similarity], axis=1)
            candidate_indices = np.concatenate(
                [best_indices, np.broadcast_to(np.arange(d_start, d_start + chunk.shape[0]), similarity.shape)], axis=1
            )
            # lexsort: primary key descending score, secondary ascending database index
            order = np.lexsort((candidate_indices, -candidate_scores), axis=1)[:, :k]
            best_scores = np.take_along_axis(candidate_scores, order, axis=1)
            best_indices = np.take_along_axis(candidate_indices, order, axis=1)
        scores[q_start:q_start + block.shape[0]] = best_scores
        indices[q_start:q_start + block.shape[0]] = best_indices
    return scores, indices
