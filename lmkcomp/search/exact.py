"""Exact top-k search by inner product in numpy, one block of the similarity matrix at a time.

For L2-normalised embeddings the inner product is the cosine similarity. Nothing here ever holds
more than `query_block x database_block` similarities, so memory stays bounded whatever the
sizes (GLDv2: 118 K queries x 4.1 M train images). Ties are broken by the lower database index,
so results are deterministic and equal to a full sort of the whole similarity matrix by
(score descending, index ascending).

`ExactSearcher` streams: a database attached as a row reader (an embedding store's float16
shards) too large for half its memory budget is read block by block at each search, converted to
float32 one block at a time, and never held whole; a block's size follows from the other half of
the budget (`database_block_rows`). Each pass over the database serves `query_block` queries, so
the reading is amortised over them. A database that fits is read once and kept.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator

import numpy as np

from lmkcomp.checks import positive_int
from lmkcomp.errors import UserInputError
from lmkcomp.search.base import check_vectors

DEFAULT_QUERY_BLOCK = 4096
DEFAULT_DATABASE_BLOCK = 16384
#: memory of an exact searcher, in MiB: half for a database small enough to keep (as float32),
#: half for the working memory of a search, which sets the database block (`database_block_rows`)
DEFAULT_MEMORY_MB = 512
#: bytes per similarity of a block at work: the float32 score, the comparison mask of
#: `block_top_k` and slack for its group maxima and candidates
BYTES_PER_SIMILARITY = 6

#: reads database rows `rows` (sorted int64) as an (n, dim) array
RowReader = Callable[[np.ndarray], np.ndarray]
#: top `k` of a query block against one database block: (scores, columns), best first, ties by column
BlockTopK = Callable[[np.ndarray, np.ndarray, int], "tuple[np.ndarray, np.ndarray]"]


#: columns per group of `block_top_k`'s prefilter: the k-th best group maximum bounds the k-th
#: best score from below, so one comparison pass leaves about k x (a few) candidates per row
TOP_K_GROUP = 32


def block_top_k(similarity: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The `min(k, columns)` best columns of each row of `similarity`, best first, ties by lower column.

    Returns (scores, columns). Exact: the columns are split into groups of `TOP_K_GROUP`; the
    k-th largest group maximum t of a row is at most its k-th largest score (k groups each hold
    a score >= t), so every column of the top k scores >= t. Only those candidates are sorted,
    by (score descending, column ascending). Two passes over the block and no index array of
    its size, which halves the cost of an argpartition of the whole block.
    """
    rows, columns = similarity.shape
    k = min(k, columns)
    groups = columns // TOP_K_GROUP
    if groups >= k:
        grouped = similarity[:, :groups * TOP_K_GROUP].reshape(rows, groups, TOP_K_GROUP)
        maxima = grouped.max(axis=2)
        cut = np.partition(maxima, groups - k, axis=1)[:, groups - k, None]
        candidate_rows, candidate_columns = np.nonzero(similarity >= cut)
    else:
        candidate_rows, candidate_columns = np.divmod(np.arange(rows * columns), columns)
    scores = similarity[candidate_rows, candidate_columns]
    # rows ascending, then scores descending, then columns ascending
    order = np.lexsort((candidate_columns, -scores, candidate_rows))
    first = np.searchsorted(candidate_rows[order], np.arange(rows))
    chosen = order[first[:, None] + np.arange(k)]
    return scores[chosen], candidate_columns[chosen].astype(np.int64, copy=False)


def merge_top_k(best: tuple[np.ndarray, np.ndarray], new: tuple[np.ndarray, np.ndarray],
                k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of two ranked (scores, indices) lists per row, where every index in `best` is
    lower than every index in `new` and each list is already ordered (score desc, index asc)."""
    scores = np.concatenate([best[0], new[0]], axis=1)
    indices = np.concatenate([best[1], new[1]], axis=1)
    # stable: among equal scores `best` (lower indices) stays ahead, each list keeps its order
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(indices, order, axis=1)


def gemm_top_k(queries: np.ndarray, block: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`block_top_k` of the similarities of `queries` (float32) to the rows of `block`."""
    return block_top_k(queries @ np.asarray(block, dtype=np.float32).T, k)


def search_chunks(queries: np.ndarray, chunks: Iterable[np.ndarray], k: int,
                  query_block: int = DEFAULT_QUERY_BLOCK, top_k: BlockTopK = gemm_top_k) -> tuple[np.ndarray, np.ndarray]:
    """Top-`k` rows by inner product of the database made of `chunks` (in order) for every query.

    `chunks` is iterated once per query block (a list, or any re-iterable that yields blocks);
    each chunk is one database block, so the similarity block is `query_block x len(chunk)`.
    `top_k` ranks one query block against one chunk (`gemm_top_k`, or another exact kernel).
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
            chunk_scores, columns = top_k(block, chunk, k)
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


def database_block_rows(query_block: int, dim: int, memory_mb: float,
                        bytes_per_similarity: float = BYTES_PER_SIMILARITY) -> int:
    """Database rows per block so that a block's similarities to `query_block` queries, their
    working memory (`bytes_per_similarity` each) and two float32 blocks (the one searched and
    the next, read meanwhile) fit `memory_mb`."""
    per_row = query_block * bytes_per_similarity + 2 * dim * 4
    return max(1, int(memory_mb * 2**20 // per_row))


class ExactSearcher:
    """Exact search over database parts kept where they are, by a block kernel (`top_k`).

    `add` keeps a float32 copy of arrays in memory (small databases, tests); `attach` registers
    a row reader, read at once and kept while the database's float32 rows fit half of
    `memory_mb`, else read block by block at every search and never held whole (embedding
    stores: GLDv2's 4.1 M x 512 train set is 4.2 GB as float16 and 8.4 GB as float32). The other
    half bounds a search's working memory whatever the database size; `database_block` fixes the
    block instead. Results equal `exact_search`'s (ties by the lower index).
    """

    needs_training = False
    #: `index_database` attaches a reader instead of adding every row
    streams = True

    def __init__(self, dim: int, query_block: int = DEFAULT_QUERY_BLOCK, database_block: int | None = None,
                 memory_mb: float = DEFAULT_MEMORY_MB):
        self.dim = positive_int("dim", dim)
        self.query_block = positive_int("query_block", query_block)
        if not memory_mb > 0:
            raise UserInputError(f"memory_mb must be positive, got {memory_mb!r}")
        self.memory_mb = memory_mb
        self._database_block = positive_int("database_block", database_block) if database_block is not None else None
        self.count = 0
        # each part: a list of blocks in memory, or (reader, rows) read on demand
        self._parts: list[list[np.ndarray] | tuple[RowReader, int]] = []

    @property
    def database_block(self) -> int:
        """Database rows per block for a full query block."""
        return self.block_rows(self.query_block)

    def block_rows(self, queries: int) -> int:
        """Database rows per block when `queries` queries are searched: `database_block` if
        given, else what the memory budget allows for one pass of that many queries."""
        if self._database_block is not None:
            return self._database_block
        rows, bytes_per_similarity = self.similarity_memory(min(queries, self.query_block))
        return database_block_rows(rows, self.dim, self.memory_mb / 2, bytes_per_similarity)

    def similarity_memory(self, queries: int) -> tuple[int, float]:
        """(rows, bytes per similarity) of the similarity matrix the kernel holds for `queries`
        queries and one database row."""
        return queries, BYTES_PER_SIMILARITY

    def settings(self) -> dict:
        # blocks and budgets change neither the result nor its ties
        return {"backend": "numpy"}

    def add(self, vectors: np.ndarray) -> None:
        """Append `vectors` (n, dim) as database rows `count, count + 1, ...`, copied as float32."""
        vectors = check_vectors(vectors, self.dim)
        self._parts.append([self._prepare(np.array(vectors[start:start + self.database_block], dtype=np.float32))
                            for start in range(0, len(vectors), self.database_block)])
        self.count += len(vectors)

    def attach(self, read_rows: RowReader, count: int) -> None:
        """Append rows `0 .. count - 1` of `read_rows` as database rows `count, ...`: read now and
        kept if the whole database then fits half the memory budget as float32, else read at
        each search."""
        count = positive_int("database rows", count)
        if (self.count + count) * self.dim * 4 <= self.memory_mb * 2**20 / 2:
            self._parts.append(list(self._read_blocks(read_rows, count, self.database_block)))
        else:
            self._parts.append((read_rows, count))
        self.count += count

    def _read_blocks(self, read_rows: RowReader, rows: int, block_rows: int) -> Iterator[np.ndarray]:
        """Blocks of `read_rows` in order; each next block is read (and converted from float16) by
        a thread while the current one is searched, which hides most of the reading."""

        def read(start: int) -> np.ndarray:
            block = check_vectors(read_rows(np.arange(start, min(start + block_rows, rows))), self.dim)
            return self._prepare(np.asarray(block, dtype=np.float32))

        with ThreadPoolExecutor(max_workers=1) as reader:
            upcoming = reader.submit(read, 0)
            for start in range(0, rows, block_rows):
                block = upcoming.result()
                if start + block_rows < rows:
                    upcoming = reader.submit(read, start + block_rows)
                yield block

    def _prepare(self, block: np.ndarray) -> np.ndarray:
        """A float32 database block as the kernel takes it."""
        return block

    def blocks(self, block_rows: int | None = None) -> Iterator[np.ndarray]:
        """The database in row order: added arrays as stored, attached readers read `block_rows`
        (default `database_block`) rows at a time."""
        block_rows = block_rows or self.database_block
        for part in self._parts:
            if isinstance(part, list):
                yield from part
            else:
                yield from self._read_blocks(*part, block_rows)

    def top_k(self, queries: np.ndarray, block: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The kernel: `k` best rows of one database block per query."""
        return gemm_top_k(queries, block, k)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, indices) of the top `min(k, count)` rows per query, best first, ties by lower index."""
        k = min(positive_int("k", k), self.count)
        queries = check_vectors(queries, self.dim)
        return search_chunks(queries, _Blocks(self, self.block_rows(len(queries))), k, self.query_block, self.top_k)


class _Blocks:
    """`searcher.blocks(block_rows)` as a re-iterable (one pass per query block)."""

    def __init__(self, searcher: ExactSearcher, block_rows: int):
        self._searcher = searcher
        self._block_rows = block_rows

    def __iter__(self) -> Iterator[np.ndarray]:
        return self._searcher.blocks(self._block_rows)

