"""Retrieval over embedding stores: the 100 best index images of every test image, written as
the Kaggle retrieval submission.

Stages, each switched on by its `RetrievalConfig` field:

1. DBA (`dba_n`): every index vector becomes the weighted sum of itself and its `dba_n`
   nearest index vectors (an augmented index store in the work folder);
2. search: the test store against the (augmented) index, top 100;
3. αQE (`qe_n`): every test vector becomes the weighted sum of itself and its `qe_n` nearest
   database vectors, and the search runs again;
4. spatial re-ranking (`inliers`): the top `verify_top` by (inliers, score);
5. discriminative re-ranking (`rerank`): test and index images get a landmark by
   `lmkcomp.inference.recognition.predict_landmarks` against the train set, then
   `lmkcomp.reranking.discriminative_rerank`.

kNN tables and expanded stores are cached in the work folder, named by what made them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lmkcomp.data.layout import LandmarkData
from lmkcomp.errors import UserInputError
from lmkcomp.executors import Executor
from lmkcomp.features.store import EmbeddingStore, EmbeddingWriter
from lmkcomp.inference.common import (
    BLOCK_ROWS,
    cached_search,
    check_and_score,
    inlier_counts,
    inlier_lookup,
    neighbour_ids,
    padded_database_ids,
    test_ids,
    write_pair_list,
)
from lmkcomp.inference.recognition import RecognitionConfig, predict_landmarks
from lmkcomp.manifest import fingerprint
from lmkcomp.reranking import discriminative_rerank, expand_vectors, expansion_matrix, spatial_rerank
from lmkcomp.search.knn_table import KnnTable
from lmkcomp.search.run import DEFAULT_SPEC
from lmkcomp.submission import MAX_RETRIEVED, write_retrieval_submission

#: rows of an expanded store computed per pass over the database (one shard of the store)
EXPANSION_ROWS = 50_000
#: database rows read at once while expanding
DATABASE_BLOCK = 65_536


@dataclass
class RetrievalConfig:
    """How `retrieve` ranks. A stage is off when its switch (`dba_n`, `qe_n`, `inliers`,
    `rerank`) is None / False.

    `index`: search spec. `qe_alpha`, `dba_alpha`: the α of the similarity weights.
    `verify_top`: how many of the top results spatial re-ranking re-orders. `insert_threshold`:
    the confidence sum above which discriminative re-ranking inserts unretrieved images (None:
    move only). `recognition`: how test and index images get the landmark that re-ranking
    compares (soft voting against the train labels by default); `index_inliers`: a pair table
    of index images against their voting train neighbours, whose inliers enter the index
    images' votes (`recognition.inliers` is the test images' table).
    """

    index: str = DEFAULT_SPEC
    dba_n: int | None = None
    dba_alpha: float = 3.0
    qe_n: int | None = None
    qe_alpha: float = 3.0
    inliers: str | None = None
    verify_top: int = MAX_RETRIEVED
    rerank: bool = False
    insert_threshold: float | None = 0.6
    recognition: RecognitionConfig = field(default_factory=RecognitionConfig)
    index_inliers: str | None = None


def expanded_store(source: EmbeddingStore, database: EmbeddingStore, table: KnnTable, n: int, alpha: float,
                   augment_database: bool, workdir: str | Path, progress: bool = True) -> EmbeddingStore:
    """`source` with every row replaced by `L2(row + sum of its top-n neighbours in `table`,
    weighted by similarity^alpha)` (`lmkcomp.reranking.expansion_matrix` / `expand_vectors`),
    as a float32 store in `workdir/expanded/`. `augment_database` (DBA: `source` is the
    database and `table` its search against itself) skips each row's own position.

    Resumable: each shard of the new store is one pass over the database, and a rerun keeps
    the shards already written.
    """
    if table.query_ids != source.ids or table.database_ids != database.ids:
        raise UserInputError(f"{table.directory} is not the kNN table of {source.directory} "
                             f"against {database.directory}")
    kind = "dba" if augment_database else "qe"
    name = fingerprint({"source": str(source.directory.resolve()), "database": str(database.directory.resolve()),
                        "table": str(table.directory.resolve()), "n": n, "alpha": alpha, "kind": kind})
    out = Path(workdir) / "expanded" / f"{source.directory.name}-{kind}-n{n}-a{alpha:g}-{name}"
    meta = {"expansion": kind, "n": n, "alpha": alpha, "source": str(source.directory.resolve()),
            "database": str(database.directory.resolve()), "knn": str(table.directory.resolve())}
    writer = EmbeddingWriter(out, source.ids, source.dim, "float32", shard_size=EXPANSION_ROWS, meta=meta)
    for k, rows in tqdm(writer.pending_shards(), desc=f"{kind} {source.directory.name}", unit="shard",
                        disable=not progress):
        scores, indices = table.read(rows.start, rows.stop)
        own = np.arange(rows.start, rows.stop) if augment_database else None
        weights = expansion_matrix(indices, scores, n, alpha, len(database), self_positions=own)
        writer.write_shard(k, expand_vectors(source.read(rows.start, rows.stop), weights,
                                             _referenced_blocks(database, weights)))
    writer.finish()
    return EmbeddingStore(out)


def _referenced_blocks(database: EmbeddingStore, weights) -> Iterator[tuple[int, np.ndarray]]:
    """`database` block by block for `expand_vectors`, reading only the blocks some row of
    `weights` points into: each row uses at most n neighbours, so at GLDv2 scale most blocks
    of a shard are never needed. The others are a zero-cost broadcast of one zero row."""
    used = np.unique(weights.indices)
    zero_row = np.zeros(database.dim, dtype=np.float32)
    for start in range(0, len(database), DATABASE_BLOCK):
        stop = min(start + DATABASE_BLOCK, len(database))
        if np.searchsorted(used, start) < np.searchsorted(used, stop):
            yield start, database.read(start, stop)
        else:
            yield start, np.broadcast_to(zero_row, (stop - start, database.dim))


def ranking_table(test: EmbeddingStore, index: EmbeddingStore, config: RetrievalConfig, workdir: str | Path,
                  progress: bool = True, executor: Executor | None = None) -> KnnTable:
    """The kNN table of stages 1-3 (DBA, search, αQE): test rows against the index ids. Its
    searches run on `executor` (default: in this process); the expansions run here."""
    for name, value in (("dba_n", config.dba_n), ("qe_n", config.qe_n)):
        if value is not None and value < 1:
            raise UserInputError(f"{name} must be >= 1, got {value}")
    database = index
    if config.dba_n:
        self_table = cached_search(index, index, workdir, config.dba_n + 1, config.index, progress=progress,
                                   executor=executor)
        database = expanded_store(index, index, self_table, config.dba_n, config.dba_alpha, True, workdir, progress)
    table = cached_search(test, database, workdir, max(MAX_RETRIEVED, config.qe_n or 0), config.index,
                          progress=progress, executor=executor)
    if config.qe_n:
        queries = expanded_store(test, database, table, config.qe_n, config.qe_alpha, False, workdir, progress)
        table = cached_search(queries, database, workdir, MAX_RETRIEVED, config.index, progress=progress,
                              executor=executor)
    return table


def write_retrieval_pairs(test: EmbeddingStore, index: EmbeddingStore, out: str | Path, config: RetrievalConfig,
                          workdir: str | Path, progress: bool = True, executor: Executor | None = None) -> int:
    """Write the (test image, index image) pairs that spatial re-ranking reads, i.e. each test
    image's top `config.verify_top` after stages 1-3, as a pair list CSV for `lmkcomp verify`;
    returns the number of pairs. `executor` runs the kNN searches' shards."""
    return write_pair_list(ranking_table(test, index, config, workdir, progress, executor), out, config.verify_top)


def retrieve(
    data: LandmarkData,
    test: EmbeddingStore,
    index: EmbeddingStore,
    name: str,
    config: RetrievalConfig | None = None,
    train: EmbeddingStore | None = None,
    workdir: str | Path = "runs/inference",
    submissions: str | Path = "submissions",
    split: str = "all",
    progress: bool = True,
    executor: Executor | None = None,
) -> dict:
    """Rank the index for every test image, write `submissions/retrieval_<name>.csv` (top 100),
    validate it and score it on `split` when the dataset has a retrieval solution.

    `train` (an embedding store of the train split) is needed by discriminative re-ranking.
    `executor` runs the kNN searches' shards (default: in this process).
    Returns `csv` (the path) and `scores` (`lmkcomp.submission.score_retrieval`'s dict, or None).
    """
    config = config or RetrievalConfig()
    table = ranking_table(test, index, config, workdir, progress, executor)
    if table.query_ids != test.ids or table.database_ids != index.ids:
        raise UserInputError(f"{table.directory}: not the search of {test.directory} against {index.directory}")
    lookup = inlier_lookup(config.inliers) if config.inliers else None
    if config.rerank:
        queries = predict_landmarks(test, train, data, config.recognition, workdir, progress, executor)
        database = predict_landmarks(index, train, data, replace(config.recognition, inliers=config.index_inliers),
                                     workdir, progress, executor)
        # an index image without a prediction gets -1, which no query's landmark id equals
        database_labels = np.where(database.valid, database.labels, -1)
    database_ids = padded_database_ids(table)
    ranked: dict[str, list[str]] = {}
    for start, scores, indices in table.iter_blocks(BLOCK_ROWS):
        rows = slice(start, start + len(indices))
        query_ids = table.query_ids[rows]
        if lookup is not None:
            inliers = inlier_counts(lookup, query_ids, neighbour_ids(database_ids, indices))
            indices, scores = spatial_rerank(indices, scores, inliers, config.verify_top)
        if config.rerank:
            ok = queries.valid[rows]
            indices[ok] = discriminative_rerank(indices[ok], queries.labels[rows][ok], queries.confidences[rows][ok],
                                                database_labels, database.confidences, config.insert_threshold,
                                                MAX_RETRIEVED)
        for query_id, candidates in zip(query_ids, neighbour_ids(database_ids, indices[:, :MAX_RETRIEVED])):
            ranked[query_id] = [candidate for candidate in candidates if candidate]
    path = Path(submissions) / f"retrieval_{name}.csv"
    ids = test_ids(data)
    write_retrieval_submission(path, ids, ranked)
    return {"csv": str(path), "scores": check_and_score(data, path, "retrieval", ids, split)}
