"""What the recognition and retrieval pipelines share: the test ids, kNN tables cached in a work
folder, inlier counts looked up from a pair table, pair lists to verify, and scoring.

Cached artifacts are named by what made them (store folders, k, search spec), so a rerun with
the same inputs reuses them and a changed input gets a new folder instead of an error.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lmkcomp.data.layout import LandmarkData
from lmkcomp.executors import Executor
from lmkcomp.features.store import EmbeddingStore
from lmkcomp.fileio import atomic_write
from lmkcomp.manifest import fingerprint, ids_sha256
from lmkcomp.search.knn_table import NO_NEIGHBOUR, KnnTable
from lmkcomp.submission import score_submission, validate_submission

#: query rows handled at once by the pipelines' loops over kNN tables
BLOCK_ROWS = 8192


def test_ids(data: LandmarkData) -> list[str]:
    """The test ids a submission must list: `sample_submission.csv` when the dataset has one
    (what Kaggle checks against), else the image files of the test split."""
    if data.has("sample_submission"):
        from lmkcomp.data.gldv2 import read_sample_submission

        return read_sample_submission(data.file("sample_submission"))
    return data.split_ids("test")


def cached_search(
    queries: EmbeddingStore,
    database: EmbeddingStore,
    workdir: str | Path,
    k: int,
    spec: str,
    query_ids: Sequence[str] | None = None,
    database_ids: Sequence[str] | None = None,
    progress: bool = True,
    executor: Executor | None = None,
) -> KnnTable:
    """The kNN table of `queries` (or its rows `query_ids`) against `database` (or its rows
    `database_ids`), kept in `workdir/knn/<queries>-vs-<database>-k<k>-<fingerprint>`: a rerun
    with the same stores, k, spec and ids reuses it (or resumes it after a kill). `executor`
    searches its shards (`search_stores`; default: in this process)."""
    from lmkcomp.search import search_stores

    k = min(k, len(database) if database_ids is None else len(database_ids))
    name = fingerprint({
        "queries": str(queries.directory.resolve()), "database": str(database.directory.resolve()), "k": k,
        "spec": spec, "query_ids": None if query_ids is None else ids_sha256(query_ids),
        "database_ids": None if database_ids is None else ids_sha256(database_ids),
    })
    out = Path(workdir) / "knn" / f"{queries.directory.name}-vs-{database.directory.name}-k{k}-{name}"
    return search_stores(queries, database, out, k=k, spec=spec, query_ids=query_ids, database_ids=database_ids,
                         progress=progress, executor=executor)


def padded_database_ids(table: KnnTable) -> np.ndarray:
    """The table's database ids as an object array with "" appended, for `neighbour_ids`."""
    return np.asarray([*table.database_ids, ""], dtype=object)


def neighbour_ids(database_ids: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Database ids of a block of kNN `indices` (`database_ids` from `padded_database_ids`);
    "" for "no neighbour" (-1, which picks the appended "")."""
    return database_ids[np.where(indices == NO_NEIGHBOUR, -1, indices)]


# --------------------------------------------------------------------------------------------
# Inliers


def inlier_lookup(pair_table: str | Path) -> pd.Series:
    """Inlier count by (query_id, candidate_id) from a pair table folder (`lmkcomp verify`);
    a pair verified twice counts with its larger count."""
    from lmkcomp.local.pairs import read_pair_table

    frame = read_pair_table(pair_table)
    return frame.groupby(["query_id", "candidate_id"], sort=False)["inliers"].max()


def inlier_counts(lookup: pd.Series, query_ids: Sequence[str], candidates: np.ndarray) -> np.ndarray:
    """(rows, k) int64 inlier counts of each query with each of its `candidates` (ids, as from
    `neighbour_ids`); 0 for a pair the table does not hold (not verified) and for padding."""
    rows, width = candidates.shape
    keys = pd.MultiIndex.from_arrays([np.repeat(np.asarray(query_ids, dtype=object), width), candidates.ravel()])
    return lookup.reindex(keys).fillna(0).to_numpy(dtype=np.int64).reshape(rows, width)


def write_pair_list(table: KnnTable, out: str | Path, top: int) -> int:
    """Write the pairs (query, each of its first `top` neighbours) of `table` as a pair list CSV
    (`query_id,candidate_id`, what `lmkcomp verify --pairs` reads), atomically; returns their number."""
    count = 0
    with atomic_write(out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["query_id", "candidate_id"])
        database_ids = padded_database_ids(table)
        for start, _, indices in table.iter_blocks(BLOCK_ROWS):
            candidates = neighbour_ids(database_ids, indices[:, :top])
            for query_id, row in zip(table.query_ids[start:start + len(indices)], candidates):
                kept = [candidate for candidate in row if candidate]
                writer.writerows((query_id, candidate) for candidate in kept)
                count += len(kept)
    return count


# --------------------------------------------------------------------------------------------
# Checking and scoring a submission


def check_and_score(data: LandmarkData, path: Path, task: str, ids: Sequence[str], split: str = "all") -> dict | None:
    """Validate the submission at `path` against `ids` as Kaggle would; return its scores on
    `split` when the dataset has the task's solution, else None."""
    submission = validate_submission(path, task, ids)
    if not data.has(f"{task}_solution"):
        return None
    solution = data.recognition_solution if task == "recognition" else data.retrieval_solution
    return score_submission(submission, solution, split)
