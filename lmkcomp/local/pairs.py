"""Spatial verification of a whole list of image pairs, written as a resumable pair table.

A pair list is a CSV or parquet file (or a DataFrame) with columns `query_id` and
`candidate_id` (16-hex image ids; other columns are ignored): the features of `query_id` come
from the query store, those of `candidate_id` from the candidate store (often the same one).

`verify_pairs` writes the pair table, a folder `OUT`:

- `OUT/manifest.json`: `format`, `version`, `pairs` (count), `pairs_sha256` (fingerprint of
  the id pairs, in order), `chunk_size`, `config` (the `VerifyConfig`) and `query_features` /
  `candidate_features` (each store's method, meta and image count);
- `OUT/chunk-000000.parquet`, ...: chunk `k` holds the results of pairs
  `[k * chunk_size, min((k + 1) * chunk_size, pairs))` in pair-list order, columns
  `query_id`, `candidate_id` (str), `n_putative`, `inliers` (int32) and `hull_area` (float64,
  px^2), as defined by `lmkcomp.local.verify.PairResult`.

Chunk files are written atomically, so an interrupted run leaves whole chunks or none, and a
rerun with the same pairs, stores and config verifies only the chunks still missing. No inlier
threshold is applied here: consumers threshold `inliers` themselves, so a threshold sweep
never reruns RANSAC.

`knn_pairs` builds a pair list from a global-descriptor k-nearest-neighbour search.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import ArrayLike

from lmkcomp.checks import positive_int
from lmkcomp.csvfile import describe_header, read_table, shown
from lmkcomp.data.gldv2 import ID_PATTERN
from lmkcomp.errors import CsvFormatError, UserInputError
from lmkcomp.executors import Executor, LocalExecutor
from lmkcomp.features.store import StoreRows
from lmkcomp.fileio import atomic_write
from lmkcomp.local.store import LocalFeatureStore
from lmkcomp.local.verify import VerifyConfig, create_verifier, verify_pair
from lmkcomp.manifest import MANIFEST_NAME, first_setting_difference, read_manifest
from lmkcomp.search import create_searcher

FORMAT = "lmkcomp-pair-table"
FORMAT_VERSION = 1

PAIR_COLUMNS = ("query_id", "candidate_id")
SCHEMA = pa.schema([("query_id", pa.string()), ("candidate_id", pa.string()), ("n_putative", pa.int32()),
                    ("inliers", pa.int32()), ("hull_area", pa.float64())])
# Queries per search in knn_pairs: bounds its (queries x k) result arrays, and each pass over
# the database serves this many queries.
_KNN_QUERY_BLOCK = 8192


def chunk_file(k: int) -> str:
    """File name of chunk `k` of a pair table, e.g. `chunk-000000.parquet`."""
    return f"chunk-{k:06d}.parquet"


# --------------------------------------------------------------------------------------------
# Pair lists


def check_pairs(frame: pd.DataFrame, source: str, lines: np.ndarray | None = None) -> pd.DataFrame:
    """`query_id, candidate_id` of `frame` as strings, index 0..n-1; other columns dropped.

    A missing column or an id that is not 16 lower-case hexadecimal characters is a
    UserInputError naming `source` (the file, or what the frame is) and the row: its line in
    the file when `lines` (the line of each row) is given, else its data row (from 1).
    """
    missing = [name for name in PAIR_COLUMNS if name not in frame.columns]
    if missing:
        raise UserInputError(f"{source}: missing column(s) {', '.join(missing)}; a pair list needs "
                             f"{', '.join(PAIR_COLUMNS)} ({describe_header([str(name) for name in frame.columns])})")
    pairs = frame[list(PAIR_COLUMNS)].astype(str).reset_index(drop=True)
    for column in PAIR_COLUMNS:
        bad = np.flatnonzero(~pairs[column].str.fullmatch(ID_PATTERN.pattern).to_numpy(dtype=bool))
        if bad.size:
            message = f"invalid {column} {shown(pairs[column].iloc[bad[0]])}: expected 16 hexadecimal characters"
            if lines is not None:
                raise CsvFormatError(source, int(lines[bad[0]]), message)
            raise UserInputError(f"{source}: data row {bad[0] + 1}: {message}")
    return pairs


def read_pairs(path: str | Path) -> pd.DataFrame:
    """The pair list in `path` (`.parquet`, or else CSV with a header row, read with
    `lmkcomp.csvfile`), checked by `check_pairs`."""
    path = Path(path)
    if path.suffix != ".parquet":
        table = read_table(path, PAIR_COLUMNS)
        return check_pairs(table.frame, str(path), table.lines)
    if not path.is_file():
        raise UserInputError(f"{path}: pair list not found")
    try:
        frame = pd.read_parquet(path)
    # pyarrow's parse errors are ValueErrors, unreadable files OSErrors.
    except (OSError, ValueError) as exc:
        raise UserInputError(f"{path}: unreadable pair list: {exc}") from None
    return check_pairs(frame, str(path))


def _fingerprint(pairs: pd.DataFrame) -> str:
    """SHA-256 of the id pairs in order (ids are checked 16-character ASCII, so S16 is exact)."""
    ids = np.stack([pairs["query_id"].to_numpy(dtype="S16"), pairs["candidate_id"].to_numpy(dtype="S16")], axis=1)
    return hashlib.sha256(np.ascontiguousarray(ids).tobytes()).hexdigest()


def _check_in_store(ids: pd.Series, store: LocalFeatureStore, column: str) -> None:
    missing = next((image_id for image_id in ids.unique() if image_id not in store), None)
    if missing is not None:
        raise UserInputError(f"{column} {missing} has no local features in {store.directory}")


# --------------------------------------------------------------------------------------------
# Verifying chunks


@dataclass(frozen=True)
class _Chunk:
    """One chunk's pairs (`query_ids[i]`, `candidate_ids[i]`) and the file its results go to."""

    path: str
    query_ids: list[str]
    candidate_ids: list[str]


class _ChunkVerifier:
    """Verifies chunks of pairs with features from two stores and writes their files."""

    def __init__(self, query_store: LocalFeatureStore, candidate_store: LocalFeatureStore, config: VerifyConfig):
        self.query_store = query_store
        self.candidate_store = candidate_store
        self.config = config
        self.verifier = create_verifier(config)

    def verify(self, chunk: _Chunk) -> int:
        """Verify the chunk's pairs, write its file atomically, return its number of pairs."""
        results = []
        query_id, query = None, None
        for q, c in zip(chunk.query_ids, chunk.candidate_ids):
            if q != query_id:
                # pair lists run query by query (up to 100 candidates each): read the query and
                # convert its float16 descriptors once, not once per pair
                query_id = q
                query = self.query_store.get(q)
                query = dataclasses.replace(query, descriptors=np.asarray(query.descriptors, dtype=np.float32))
            results.append(verify_pair(query, self.candidate_store.get(c), self.config, self.verifier))
        table = pa.table([chunk.query_ids, chunk.candidate_ids, [r.n_putative for r in results],
                          [r.inliers for r in results], [r.hull_area for r in results]], schema=SCHEMA)
        with atomic_write(chunk.path, "wb") as handle:
            pq.write_table(table, handle)
        return len(results)


def open_chunk_verifier(query_dir: str, candidate_dir: str, config: VerifyConfig) -> _ChunkVerifier:
    """A worker's verifier: it opens the stores (memory-mapped) once and keeps them for every
    chunk it is sent, so tasks carry folder names and ids, never features."""
    query_store = LocalFeatureStore(query_dir)
    candidate_store = query_store if candidate_dir == query_dir else LocalFeatureStore(candidate_dir)
    return _ChunkVerifier(query_store, candidate_store, config)


def _verify_chunk(verifier: _ChunkVerifier, chunk: _Chunk) -> int:
    return verifier.verify(chunk)


# --------------------------------------------------------------------------------------------
# Manifest


def _store_identity(store: LocalFeatureStore) -> dict:
    return {"method": store.method, "meta": store.meta, "count": len(store)}


def _read_manifest(directory: Path) -> dict:
    manifest = read_manifest(directory, MANIFEST_NAME, FORMAT, FORMAT_VERSION, "a pair table")
    path = directory / MANIFEST_NAME
    count = manifest.get("pairs")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise UserInputError(f"{path}: 'pairs' must be a non-negative integer, got {count!r}")
    try:
        positive_int("chunk_size", manifest.get("chunk_size"))
    except UserInputError as exc:
        raise UserInputError(f"{path}: {exc}") from None
    return manifest


def _open_table(directory: Path, wanted: dict) -> None:
    """Create the pair table's manifest, or check that the one there describes the same run."""
    if (directory / MANIFEST_NAME).exists():
        problem = first_setting_difference(_read_manifest(directory), wanted)
        if problem is not None:
            raise UserInputError(f"{directory}: already holds another pair table ({problem}); "
                                 "choose another folder or delete this one")
        return
    if directory.is_dir() and any(directory.glob("chunk-*.parquet")):
        raise UserInputError(f"{directory}: holds chunk files but no {MANIFEST_NAME}; "
                             "choose another folder or delete this one")
    with atomic_write(directory / MANIFEST_NAME, "w", encoding="utf-8") as handle:
        json.dump(wanted, handle, indent=1)
        handle.write("\n")


# --------------------------------------------------------------------------------------------
# Public API


def verify_pairs(
    pairs: pd.DataFrame | str | Path,
    query_store: LocalFeatureStore,
    candidate_store: LocalFeatureStore,
    out: str | Path,
    config: VerifyConfig,
    workers: int = 1,
    chunk_size: int = 2000,
    progress: bool = True,
    executor: Executor | None = None,
) -> Path:
    """Verify every pair of `pairs` (a pair list or its file) into the pair table `out`.

    Resumable: chunks already in `out` are kept when its manifest matches this run (pairs,
    chunk size, config, both stores' method, meta and size); any difference is a
    UserInputError, as is an id missing from its store. `workers` > 1 verifies chunks in that
    many processes, each with one OpenCV and one BLAS thread; results do not depend on it.
    Returns `out` as a Path; `read_pair_table(out)` reads the table.
    """
    out = Path(out)
    workers = positive_int("workers", workers)
    chunk_size = positive_int("chunk_size", chunk_size)
    pairs = read_pairs(pairs) if isinstance(pairs, (str, Path)) else check_pairs(pairs, "pair list")
    if query_store.method != candidate_store.method or query_store.dim != candidate_store.dim:
        raise UserInputError(f"cannot match {query_store.method} features ({query_store.dim}-d, "
                             f"{query_store.directory}) with {candidate_store.method} features "
                             f"({candidate_store.dim}-d, {candidate_store.directory})")
    _check_in_store(pairs["query_id"], query_store, "query_id")
    _check_in_store(pairs["candidate_id"], candidate_store, "candidate_id")
    _open_table(out, {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "pairs": len(pairs),
        "pairs_sha256": _fingerprint(pairs),
        "chunk_size": chunk_size,
        "config": dataclasses.asdict(config),
        "query_features": _store_identity(query_store),
        "candidate_features": _store_identity(candidate_store),
    })
    # Absolute paths: a worker elsewhere (a Ray node) does not share this process's directory.
    pending = [
        _Chunk(str(out.resolve() / chunk_file(k)), pairs["query_id"].iloc[start:start + chunk_size].tolist(),
               pairs["candidate_id"].iloc[start:start + chunk_size].tolist())
        for k, start in enumerate(range(0, len(pairs), chunk_size)) if not (out / chunk_file(k)).is_file()
    ]
    executor = executor or LocalExecutor(workers)
    setup = functools.partial(open_chunk_verifier, str(query_store.directory.resolve()),
                              str(candidate_store.directory.resolve()), config)
    executor.run(setup, _verify_chunk, pending, sizes=[len(c.query_ids) for c in pending],
                 desc="verify pairs", unit="pair", progress=progress)
    return out


def read_pair_table(out: str | Path) -> pd.DataFrame:
    """The pair table in `out` as one DataFrame, in pair-list order (columns as in `SCHEMA`).

    A missing or truncated chunk is a UserInputError: the table is incomplete.
    """
    out = Path(out)
    manifest = _read_manifest(out)
    count, chunk_size = manifest["pairs"], manifest["chunk_size"]
    tables = []
    for k, start in enumerate(range(0, count, chunk_size)):
        path = out / chunk_file(k)
        if not path.is_file():
            raise UserInputError(f"{out}: incomplete pair table ({path.name} missing); run the lmkcomp verify (or "
                                 "clean --method verify) command that wrote it again, with the same arguments, "
                                 "to finish it")
        try:
            table = pq.read_table(path)
        except (OSError, ValueError) as exc:
            raise UserInputError(f"{path}: unreadable chunk: {exc}") from None
        expected = min(chunk_size, count - start)
        if table.num_rows != expected or not table.schema.equals(SCHEMA):
            raise UserInputError(f"{path}: expected {expected} rows of {SCHEMA.names}; delete it and rerun "
                                 "verification to redo it")
        tables.append(table)
    return pa.concat_tables(tables).to_pandas() if tables else SCHEMA.empty_table().to_pandas()


def knn_pairs(
    query_ids: Sequence[str],
    query_emb: ArrayLike | StoreRows,
    db_ids: Sequence[str],
    db_emb: ArrayLike | StoreRows,
    k: int,
    same_label: tuple[ArrayLike, ArrayLike] | None = None,
    max_per_query: int | None = None,
    exclude_self: bool = True,
) -> pd.DataFrame:
    """Pairs of each query and its nearest database images by global descriptor.

    Embeddings are L2-normalised rows aligned with their ids, arrays or `StoreRows` of an
    embedding store (read block by block, never whole: the train-vs-train kNN of GLDv2 cleaning
    is 4.1 M x 4.1 M); similarity is the inner product (the exact streaming "flat" searcher, ties
    to the lower database row). For each query:

    1. its `k` nearest database rows, leaving out the row with the query's own id when
       `exclude_self`; `rank` is the position in this list, 1 = nearest;
    2. with `same_label = (query_labels, db_labels)`, only candidates whose label equals the
       query's;
    3. with `max_per_query`, only the first `max_per_query` of those.

    Returns `query_id, candidate_id, similarity` (float32) `, rank` (int64), by query in
    `query_ids` order, then by rank.
    """
    query_ids, db_ids = np.asarray(query_ids, dtype=str), np.asarray(db_ids, dtype=str)
    if not isinstance(query_emb, StoreRows):
        query_emb = np.asarray(query_emb)
    if not isinstance(db_emb, StoreRows):
        db_emb = np.asarray(db_emb)
    if len(query_ids) != len(query_emb) or len(db_ids) != len(db_emb):
        raise ValueError(f"ids and embeddings differ in length: {len(query_ids)} query ids for {len(query_emb)} "
                         f"rows, {len(db_ids)} database ids for {len(db_emb)} rows")
    k = positive_int("k", k)
    if max_per_query is not None:
        max_per_query = positive_int("max_per_query", max_per_query)
    if same_label is not None:
        query_labels, db_labels = (np.asarray(labels) for labels in same_label)
        if len(query_labels) != len(query_ids) or len(db_labels) != len(db_ids):
            raise ValueError("same_label must hold one label per query and one per database row")
    frames = []
    searcher = create_searcher("flat", db_emb.shape[1], query_block=_KNN_QUERY_BLOCK)
    if len(db_ids):
        searcher.attach(lambda rows: db_emb[rows], len(db_ids))
    for start in range(0, len(query_ids) if len(db_ids) else 0, _KNN_QUERY_BLOCK):
        stop = min(start + _KNN_QUERY_BLOCK, len(query_ids))
        # One more than k, since the query itself is usually among its own nearest rows.
        similarity, neighbours = searcher.search(query_emb[start:stop], k + int(exclude_self))
        keep = np.ones(neighbours.shape, dtype=bool)
        if exclude_self:
            keep &= db_ids[neighbours] != query_ids[start:stop, None]
        rank = np.cumsum(keep, axis=1)
        keep &= rank <= k
        if same_label is not None:
            keep &= db_labels[neighbours] == query_labels[start:stop, None]
        if max_per_query is not None:
            keep &= np.cumsum(keep, axis=1) <= max_per_query
        rows, columns = np.nonzero(keep)
        frames.append(pd.DataFrame({
            "query_id": query_ids[start + rows],
            "candidate_id": db_ids[neighbours[rows, columns]],
            "similarity": similarity[rows, columns],
            "rank": rank[rows, columns].astype(np.int64),
        }))
    if not frames:
        return pd.DataFrame({"query_id": pd.Series(dtype=object), "candidate_id": pd.Series(dtype=object),
                             "similarity": pd.Series(dtype=np.float32), "rank": pd.Series(dtype=np.int64)})
    return pd.concat(frames, ignore_index=True)
