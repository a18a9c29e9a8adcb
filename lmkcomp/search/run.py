"""`search_stores`: the kNN table of one embedding store against another, written shard by shard.

The database store is read block by block from its memory-mapped shards into a searcher; the
queries are read and searched one block at a time, and each finished shard of the table is
written at once, so a killed search resumes with the shards still missing (the index is rebuilt,
then only the pending queries are searched).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from lmkcomp.checks import positive_int
from lmkcomp.errors import UserInputError
from lmkcomp.features.store import EmbeddingStore, read_positions
from lmkcomp.search.knn_table import DEFAULT_SHARD_SIZE, KnnTable, KnnTableWriter
from lmkcomp.search.searchers import create_searcher, index_database

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


def search_stores(queries: EmbeddingStore, database: EmbeddingStore, out: str | Path, k: int = 100,
                  spec: str = DEFAULT_SPEC, query_block: int = 4096, progress: bool = True,
                  query_ids: Sequence[str] | None = None, database_ids: Sequence[str] | None = None,
                  shard_size: int = DEFAULT_SHARD_SIZE, seed: int = 0, **options: Any) -> KnnTable:
    """Write to `out` the kNN table of `queries` against `database` and return it.

    `k`: neighbours per query (at most the database size). `spec` and `options` pick the
    searcher (`lmkcomp.search.searchers.create_searcher`, e.g. spec "IVF1024,PQ32" with
    `nprobe=16`). `query_block`: query rows read and searched per call. `query_ids` /
    `database_ids`: search only these rows of each store (e.g. the train images that have a
    label); the table lists them in store order. `seed` draws the training sample of a trainable
    index. The table's meta records the spec, the searcher's settings, the seed (trainable
    indexes) and both stores' folders; an interrupted search with the same arguments resumes.
    """
    if queries.dim != database.dim:
        raise UserInputError(f"{queries.directory} holds {queries.dim}-d embeddings but "
                             f"{database.directory} holds {database.dim}-d ones")
    query_block = positive_int("query_block", query_block)
    query_rows = store_positions(queries, query_ids)
    database_rows = store_positions(database, database_ids)
    k = min(positive_int("k", k), len(database_rows))
    searcher = create_searcher(spec, database.dim, **options)
    meta = {"spec": spec, "searcher": searcher.settings(),
            "queries": str(queries.directory.resolve()), "database": str(database.directory.resolve())}
    if searcher.needs_training:
        meta["seed"] = seed
    writer = KnnTableWriter(out, [queries.ids[row] for row in query_rows], [database.ids[row] for row in database_rows],
                            k, shard_size=shard_size, meta=meta)
    pending = writer.pending_shards()
    if pending:
        index_database(searcher, lambda rows: read_positions(database, database_rows[rows]), len(database_rows),
                       seed=seed, progress=progress)
        with tqdm(total=sum(rows.stop - rows.start for _, rows in pending), desc="search", unit="query",
                  disable=not progress) as bar:
            for s, rows in pending:
                scores = np.empty((rows.stop - rows.start, k), dtype=np.float32)
                indices = np.empty((rows.stop - rows.start, k), dtype=np.int64)
                for start in range(rows.start, rows.stop, query_block):
                    stop = min(start + query_block, rows.stop)
                    block = slice(start - rows.start, stop - rows.start)
                    scores[block], indices[block] = searcher.search(read_positions(queries, query_rows[start:stop]), k)
                    bar.update(stop - start)
                writer.write_shard(s, scores, indices)
    return writer.finish()
