"""`search_stores`: the kNN table of one embedding store against another, written shard by shard.

The database store is read block by block from its memory-mapped shards into a searcher; the
queries are read and searched one block at a time, and each finished shard of the table is
written at once, so a killed search resumes with the shards still missing (the index is rebuilt,
then only the pending queries are searched). Each table shard is one task of an executor
(`lmkcomp.search.sharded`), in this process by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lmkcomp.checks import positive_int
from lmkcomp.errors import UserInputError
from lmkcomp.executors import Executor, LocalExecutor
from lmkcomp.features.store import EmbeddingStore
from lmkcomp.search.knn_table import DEFAULT_SHARD_SIZE, KnnShardWriter, KnnTable, KnnTableWriter
from lmkcomp.search.searchers import create_searcher
from lmkcomp.search.sharded import (
    QueryShard,
    ShardSearch,
    StoreSelection,
    check_in_process,
    search_shards,
)

DEFAULT_SPEC = "flat"


def store_positions(store: EmbeddingStore, ids: Sequence[str] | None) -> np.ndarray:
    """Sorted rows of `ids` in `store` (all rows when None); an id not in the store is an error."""
    if ids is None:
        return np.arange(len(store), dtype=np.int64)
    ids = list(ids)
    # store.position rejects ids the store lacks, and the store's ids are valid, so only a
    # repeated id is left to catch (cheaply, on the sorted rows)
    positions = np.sort(store.position(ids))
    repeated = np.flatnonzero(np.diff(positions) == 0)
    if repeated.size:
        raise UserInputError(f"ids chosen from {store.directory}: id {store.ids[positions[repeated[0]]]} appears twice")
    return positions


@dataclass(frozen=True)
class _KnnTableSink:
    """Writes a search's shards as the shards of a kNN table."""

    writer: KnnShardWriter

    def write(self, shard: QueryShard, scores: np.ndarray, indices: np.ndarray, search: ShardSearch) -> None:
        self.writer.write_shard(shard.number, scores, indices)


def search_stores(queries: EmbeddingStore, database: EmbeddingStore, out: str | Path, k: int = 100,
                  spec: str = DEFAULT_SPEC, query_block: int = 4096, progress: bool = True,
                  query_ids: Sequence[str] | None = None, database_ids: Sequence[str] | None = None,
                  shard_size: int = DEFAULT_SHARD_SIZE, seed: int = 0, executor: Executor | None = None,
                  **options: Any) -> KnnTable:
    """Write to `out` the kNN table of `queries` against `database` and return it.

    `k`: neighbours per query (at most the database size). `spec` and `options` pick the
    searcher (`lmkcomp.search.searchers.create_searcher`, e.g. spec "IVF1024,PQ32" with
    `nprobe=16`). `query_block`: query rows read and searched per call. `query_ids` /
    `database_ids`: search only these rows of each store (e.g. the train images that have a
    label); the table lists them in store order. `seed` draws the training sample of a trainable
    index. The table's meta records the spec, the searcher's settings, the seed (trainable
    indexes) and both stores' folders; an interrupted search with the same arguments resumes.
    `executor` runs one task per pending table shard (default: in this process); the table is
    the same whatever runs it, and a trainable index is refused on any other executor.
    """
    if queries.dim != database.dim:
        raise UserInputError(f"{queries.directory} holds {queries.dim}-d embeddings but "
                             f"{database.directory} holds {database.dim}-d ones")
    query_block = positive_int("query_block", query_block)
    executor = executor or LocalExecutor()
    query_rows = store_positions(queries, query_ids)
    database_rows = store_positions(database, database_ids)
    k = min(positive_int("k", k), len(database_rows))
    searcher = create_searcher(spec, database.dim, **options)
    check_in_process(searcher, spec, executor)
    meta = {"spec": spec, "searcher": searcher.settings(),
            "queries": str(queries.directory.resolve()), "database": str(database.directory.resolve())}
    if searcher.needs_training:
        meta["seed"] = seed
    writer = KnnTableWriter(out, [queries.ids[row] for row in query_rows], [database.ids[row] for row in database_rows],
                            k, shard_size=shard_size, meta=meta)
    pending = [QueryShard(s, rows.start, rows.stop) for s, rows in writer.pending_shards()]
    search_shards(_selection(queries, query_ids, query_rows), _selection(database, database_ids, database_rows),
                  pending, _KnnTableSink(writer.shard_writer()), k, spec, options, query_block, seed, executor,
                  progress)
    return writer.finish()


def _selection(store: EmbeddingStore, ids: Sequence[str] | None, positions: np.ndarray) -> StoreSelection:
    """`positions` of `store` for the workers; None (no array to send) when every row is searched."""
    return StoreSelection(str(store.directory.resolve()), None if ids is None else positions)
