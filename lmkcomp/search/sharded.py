"""kNN search of one embedding store against another, one query shard per executor task.

The stages that search (`search_stores`, the kNN pair lists of cleaning and of inference) cut
their query rows into shards and hand them to an executor (`lmkcomp.executors`). Each worker
opens both stores' rows (not their ids: `EmbeddingShards`) and builds its searcher once
(`open_shard_search`): an exact searcher attaches the database as a row reader and streams it
block by block, so no worker, and not the driver, holds the database. A task (`QueryShard`: a
shard number and a range of query rows) searches its rows in blocks of `query_block` and passes
the shard's `(scores, indices)` to the stage's `ShardSink`, which writes the shard's file(s)
atomically.

Results do not depend on the executor: a shard's rows are searched in the same blocks, from the
shard's first row, as in one process (the exact searchers' kernels depend on the block size).
A trained index (faiss IVF / PQ) would be trained again by every worker, so it is refused for any
executor but one in this process (`check_in_process`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np

from lmkcomp.errors import UserInputError
from lmkcomp.executors import Executor, LocalExecutor, Resources, runs_in_process
from lmkcomp.features.store import EmbeddingShards, StoreRows
from lmkcomp.search.base import Searcher
from lmkcomp.search.searchers import create_searcher, index_database, parse_spec


@dataclass(frozen=True)
class StoreSelection:
    """Rows of the embedding store in `directory` (absolute), as a worker opens them: row `i` is
    store row `positions[i]`, or store row `i` when `positions` is None (the whole store)."""

    directory: str
    positions: np.ndarray | None = None

    @classmethod
    def of(cls, rows: StoreRows) -> StoreSelection:
        """The selection of `rows`, with its store's folder made absolute (workers have another cwd)."""
        return cls(str(rows.store.directory.resolve()), rows.positions)

    def open(self) -> StoreRows:
        """The selected rows, of the store opened without its ids (a worker needs rows only)."""
        store = EmbeddingShards(self.directory)
        return StoreRows(store, np.arange(len(store)) if self.positions is None else self.positions)


@dataclass(frozen=True)
class InMemoryRows:
    """An array of embeddings as a selection, for searches of arrays (in this process, or sent
    whole to each worker)."""

    array: np.ndarray

    def open(self) -> np.ndarray:
        return self.array


@dataclass(frozen=True)
class QueryShard:
    """Shard `number` of a search: query rows `[start, stop)` of the query selection."""

    number: int
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


class ShardSink(Protocol):
    """Writes one shard's search results atomically (picklable: it travels to the workers)."""

    def write(self, shard: QueryShard, scores: np.ndarray, indices: np.ndarray, search: ShardSearch) -> None:
        """Store `scores` / `indices` ((shard rows, k), best first, indices into the database
        selection) of `shard`; `search` gives the opened selections (rows, not ids: a sink that
        writes ids carries its own)."""


@dataclass
class ShardSearch:
    """A worker's context: both selections opened, the searcher filled, the sink."""

    queries: StoreRows | np.ndarray
    database: StoreRows | np.ndarray
    searcher: Searcher
    k: int
    query_block: int
    sink: ShardSink


def open_shard_search(queries: StoreSelection | InMemoryRows, database: StoreSelection | InMemoryRows, sink: ShardSink, k: int, spec: str,
                      options: dict[str, Any], query_block: int, seed: int, progress: bool) -> ShardSearch:
    """Open both selections and index the database (`index_database`: attached for streaming,
    or trained with `seed` and filled, with a progress bar when `progress`)."""
    query_rows, database_rows = queries.open(), database.open()
    searcher = create_searcher(spec, database_rows.shape[1], **options)
    index_database(searcher, database_rows.__getitem__, len(database_rows), seed=seed, progress=progress)
    return ShardSearch(query_rows, database_rows, searcher, k, query_block, sink)


def search_shard(search: ShardSearch, shard: QueryShard) -> int:
    """Search `shard`'s query rows block by block, hand the results to the sink; returns its rows."""
    scores = np.empty((shard.rows, search.k), dtype=np.float32)
    indices = np.empty((shard.rows, search.k), dtype=np.int64)
    for start in range(shard.start, shard.stop, search.query_block):
        stop = min(start + search.query_block, shard.stop)
        block = slice(start - shard.start, stop - shard.start)
        scores[block], indices[block] = search.searcher.search(search.queries[start:stop], search.k)
    search.sink.write(shard, scores, indices, search)
    return shard.rows


def check_in_process(searcher: Searcher, spec: str, executor: Executor) -> None:
    """A UserInputError when `searcher` needs training and `executor` runs tasks elsewhere: each
    worker would train its own copy of the index."""
    if searcher.needs_training and not runs_in_process(executor):
        raise UserInputError(f"index {spec!r} is trained, and is searched in this process only: leave out "
                             "--executor ray and --workers, or use an exact searcher (flat, numpy, torch)")


def _resources(spec: str, options: dict[str, Any]) -> Resources:
    """One CPU per task, and a GPU when the spec or options name a CUDA device."""
    parsed = parse_spec(spec)
    device = str(options.get("device") or (parsed.argument if parsed.backend == "torch" else ""))
    return Resources(cpus=1.0, gpus=1.0 if device.startswith("cuda") else 0.0)


def query_shards(count: int, shard_size: int) -> list[QueryShard]:
    """The shards of `count` query rows, `shard_size` rows each (the last one shorter)."""
    return [QueryShard(s, start, min(start + shard_size, count)) for s, start in enumerate(range(0, count, shard_size))]


def search_shards(queries: StoreSelection | InMemoryRows, database: StoreSelection | InMemoryRows, shards: Sequence[QueryShard], sink: ShardSink,
                  k: int, spec: str, options: dict[str, Any] | None = None, query_block: int = 4096, seed: int = 0,
                  executor: Executor | None = None, progress: bool = True, desc: str = "search") -> None:
    """Search every shard of `shards` on `executor` (default: in this process) and write it
    through `sink`. `k` must not exceed the database rows; `spec` / `options` pick the searcher
    (`create_searcher`), `seed` its training sample (trained indexes: in this process only)."""
    executor = executor or LocalExecutor()
    options = dict(options or {})
    if not shards:
        return
    in_process = runs_in_process(executor)
    setup = functools.partial(open_shard_search, queries, database, sink, k, spec, options, query_block, seed,
                              progress and in_process)
    executor.run(setup, search_shard, list(shards), sizes=[shard.rows for shard in shards], desc=desc,
                 unit="query", resources=_resources(spec, options), progress=progress)
