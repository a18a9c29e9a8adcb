"""Exact top-k search by inner product in numpy, one block of the similarity matrix at a time.

For L2-normalised embeddings the inner product is the cosine similarity. Nothing here ever holds
more than `query_block x database_block` similarities, so memory stays bounded whatever the
sizes (GLDv2: 118 K queries x 4.1 M train images). Ties are broken by the lower database index,
so results are deterministic and equal to a full sort of the whole similarity matrix by
(score descending, index ascending).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from lmkcomp.features.store import positive_int
from lmkcomp.search.base import check_vectors

DEFAULT_QUERY_BLOCK = 1024
DEFAULT_DATABASE_BLOCK = 16384


def block_top_k(similarity: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The `min(k, columns)` best columns of each row of `similarity`, best first, ties by lower column.

    Returns (scores, columns). A partial selection finds the k-th best score t of each row; only
    rows with more than k entries >= t (a tie across the cut) need a full stable sort.
    """
    rows, columns = similarity.shape
    k = min(k, columns)
    if k < columns:
        # argpartition at columns - k: the last k positions hold the k largest, unordered.
        chosen = np.argpartition(similarity, columns - k, axis=1)[:, columns - k:]
        cut = np.take_along_axis(similarity, chosen, axis=1).min(axis=1, keepdims=True)
        crowded = np.flatnonzero((similarity >= cut).sum(axis=1) > k)
        if crowded.size:
            chosen[crowded] = np.argsort(-similarity[crowded], axis=1, kind="stable")[:, :k]
        chosen.sort(axis=1)
    else:
        chosen = np.broadcast_to(np.arange(columns), (rows, columns))
    scores = np.take_along_axis(similarity, chosen, axis=1)
    # chosen columns ascending, so a stable sort by descending score orders ties by column
    order = np.argsort(-scores, axis=1, kind="stable")
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(chosen, order, axis=1)


def merge_top_k(best: tuple[np.ndarray, np.ndarray], new: tuple[np.ndarray, np.ndarray],
                k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of two ranked (scores, indices) lists per row, where every index in `best` is
    lower than every index in `new` and each list is already ordered (score desc, index asc)."""
    scores = np.concatenate([best[0], new[0]], axis=1)
    indices = np.concatenate([best[1], new[1]], axis=1)
    # stable: among equal scores `best` (lower indices) stays ahead, each list keeps its order
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(indices, order, axis=1)


def search_chunks(queries: np.ndarray, chunks: Iterable[np.ndarray], k: int,
                  query_block: int = DEFAULT_QUERY_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """Top-`k` rows by inner product of the database made of `chunks` (in order) for every query.

    `chunks` is iterated once per query block (a list, or any re-iterable that yields blocks);
    each chunk is one database block, so the similarity block is `query_block x len(chunk)`.
    `k` must not exceed the database rows. Returns (scores float32, indices int64), each
    (n_queries, k), best first, ties by lower index.
    """
    query_block = positive_int("query_block", query_block)
    n = queries.shape[0]
    scores = np.empty((n, k), dtype=np.float32)
    indices = np.empty((n, k), dtype=np.int64)
    for q_start in range(0, n, query_block):
        block = np.ascontiguousarray(queries[q_start:q_start + query_block], dtype=np.float32)
        best = (np.empty((len(block), 0), dtype=np.float32), np.empty((len(block), 0), dtype=np.int64))
        offset = 0
        for chunk in chunks:
            chunk_scores, columns = block_top_k(block @ np.asarray(chunk, dtype=np.float32).T, k)
            best = merge_top_k(best, (chunk_scores, columns + offset), k)
            offset += len(chunk)
        if best[0].shape[1] != k:
            raise ValueError(f"k {k} exceeds the {offset} database rows")
        scores[q_start:q_start + len(block)], indices[q_start:q_start + len(block)] = best
    return scores, indices


def exact_search(queries: np.ndarray, database: np.ndarray, k: int, query_block: int = DEFAULT_QUERY_BLOCK,
                 database_block: int = DEFAULT_DATABASE_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """Top-`k` database rows by inner product for every query row.

    Returns (scores, indices), each of shape (n_queries, min(k, n_database)), best first; ties are
    broken by the lower database index, so results are deterministic. Peak extra memory is about
    3 x query_block x database_block floats (the similarity block and its partition order).
    """
    if queries.ndim != 2 or database.ndim != 2 or queries.shape[1] != database.shape[1]:
        raise ValueError(f"shape mismatch: queries {queries.shape}, database {database.shape}")
    database_block = positive_int("database_block", database_block)
    chunks = [database[start:start + database_block] for start in range(0, database.shape[0], database_block)]
    return search_chunks(queries, chunks, min(positive_int("k", k), database.shape[0]), query_block)


class NumpySearcher:
    """Exact search in numpy over the rows added so far (kept in memory as float32 blocks)."""

    needs_training = False

    def __init__(self, dim: int, query_block: int = DEFAULT_QUERY_BLOCK, database_block: int = DEFAULT_DATABASE_BLOCK):
        self.dim = positive_int("dim", dim)
        self.query_block = positive_int("query_block", query_block)
        self.database_block = positive_int("database_block", database_block)
        self.count = 0
        self._chunks: list[np.ndarray] = []

    def settings(self) -> dict:
        return {"backend": "numpy"}

    def add(self, vectors: np.ndarray) -> None:
        """Append `vectors` (n, dim) as database rows `count, count + 1, ...`."""
        vectors = check_vectors(vectors, self.dim)
        for start in range(0, len(vectors), self.database_block):
            self._chunks.append(np.array(vectors[start:start + self.database_block], dtype=np.float32))
        self.count += len(vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, indices) of the top `min(k, count)` rows per query, best first, ties by lower index."""
        k = min(positive_int("k", k), self.count)
        return search_chunks(check_vectors(queries, self.dim), self._chunks, k, self.query_block)
