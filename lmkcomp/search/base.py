"""What every nearest-neighbour backend implements: an index over database vectors that are added
block by block (row `i` is the `i`-th vector added) and searched by inner product."""

from __future__ import annotations

from typing import Callable, Protocol

import numpy as np


class Searcher(Protocol):
    """A kNN index by inner product (cosine similarity for L2-normalised vectors)."""

    #: vector dimension
    dim: int
    #: database rows added so far
    count: int
    #: whether `train` must see a sample of the database before the first `add`
    needs_training: bool

    def settings(self) -> dict:
        """Every option that changes the results, JSON-serialisable (recorded in a kNN table's meta)."""
        ...

    def add(self, vectors: np.ndarray) -> None:
        """Append `vectors` (n, dim) as database rows `count, ..., count + n - 1`."""
        ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores float32, indices int64), each (n_queries, min(k, count)), best first.

        Exact backends break ties by the lower database index; an approximate one may return
        fewer than k candidates for a query: its row ends with index -1 and score -inf.
        """
        ...


class TrainableSearcher(Searcher, Protocol):
    """A searcher that learns from the database first (IVF coarse centroids, PQ codebooks)."""

    #: how many database rows `train` wants (a bounded sample of a large database)
    train_size: int

    def train(self, sample: np.ndarray) -> None:
        """Learn the index's parameters from `sample` (n, dim); called once, before any `add`."""
        ...


class StreamingSearcher(Searcher, Protocol):
    """A searcher that reads its database at search time, block by block, instead of holding it
    (the exact ones): `index_database` attaches the row reader rather than adding every row."""

    streams: bool

    def attach(self, read_rows: Callable[[np.ndarray], np.ndarray], count: int) -> None:
        """Append rows `0 .. count - 1` of `read_rows(rows)` as the next database rows."""
        ...


def check_vectors(vectors: np.ndarray, dim: int) -> np.ndarray:
    """`vectors` as an array, or a ValueError unless it is (n, dim)."""
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ValueError(f"expected an (n, {dim}) array, got shape {vectors.shape}")
    return vectors
