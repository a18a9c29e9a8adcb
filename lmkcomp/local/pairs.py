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

import contextlib
import dataclasses
import functools
import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

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
from lmkcomp.idarrays import id_arrays
from lmkcomp.local.store import LocalFeatureStore
from lmkcomp.local.verify import VerifyConfig, create_verifier, verify_pair
from lmkcomp.manifest import MANIFEST_NAME, first_setting_difference, ids_sha256, read_manifest
from lmkcomp.search.sharded import (
    InMemoryRows,
    QueryShard,
    ShardSearch,
    StoreSelection,
    query_shards,
    search_shards,
)

FORMAT = "lmkcomp-pair-table"
FORMAT_VERSION = 1

PAIR_COLUMNS = ("query_id", "candidate_id")
SCHEMA = pa.schema([("query_id", pa.string()), ("candidate_id", pa.string()), ("n_putative", pa.int32()),
                    ("inliers", pa.int32()), ("hull_area", pa.float64())])
#: Queries per shard (one task, one file) and per search of `knn_pairs`: bounds a task's
#: (queries x k) result arrays, and each pass over the database serves this many queries.
KNN_SHARD_ROWS = 8192


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
    unique = ids.unique()
    missing = np.flatnonzero(store.rows(unique) < 0)
    if missing.size:
        raise UserInputError(f"{column} {unique[missing[0]]} has no local features in {store.directory}")


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
    _open_folder(directory, wanted, _read_manifest, "pair table", "chunk-*.parquet", "chunk files")


def _open_folder(directory: Path, wanted: dict, read: Callable[[Path], dict], kind: str, shard_glob: str,
                 shards: str) -> None:
    """Write `wanted` as the manifest of a new resumable folder of `kind`, or check that the
    manifest there (read by `read`) describes the same run; shard files (`shard_glob`) without a
    manifest mean a foreign or broken folder."""
    if (directory / MANIFEST_NAME).exists():
        problem = first_setting_difference(read(directory), wanted)
        if problem is not None:
            raise UserInputError(f"{directory}: already holds another {kind} ({problem}); "
                                 "choose another folder or delete this one")
        return
    if directory.is_dir() and any(directory.glob(shard_glob)):
        raise UserInputError(f"{directory}: holds {shards} but no {MANIFEST_NAME}; "
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


#: columns of a kNN pair list (`knn_pairs`)
KNN_PAIR_COLUMNS = ("query_id", "candidate_id", "similarity", "rank")
KNN_FORMAT = "lmkcomp-knn-pairs"
KNN_FORMAT_VERSION = 1


def knn_pair_file(s: int) -> str:
    """File name of shard `s` of a kNN pair list folder, e.g. `pairs-00000.parquet`."""
    return f"pairs-{s:05d}.parquet"


def _empty_knn_pairs() -> pd.DataFrame:
    return pd.DataFrame({"query_id": pd.Series(dtype=object), "candidate_id": pd.Series(dtype=object),
                         "similarity": pd.Series(dtype=np.float32), "rank": pd.Series(dtype=np.int64)})


@dataclass(frozen=True)
class _KnnPairSink:
    """Turns a shard of kNN results into its pairs (the rules of `knn_pairs`) and writes them
    as the shard's parquet file in `directory`. It travels to every worker with all the query
    and database ids, so it holds them as `id_arrays` (16 bytes a GLDv2 id), made str only for
    the shard's own pairs as they are written."""

    directory: str
    query_ids: np.ndarray
    db_ids: np.ndarray
    query_labels: np.ndarray | None
    db_labels: np.ndarray | None
    k: int
    max_per_query: int | None
    exclude_self: bool

    def write(self, shard: QueryShard, similarity: np.ndarray, neighbours: np.ndarray, search: ShardSearch) -> None:
        rows = slice(shard.start, shard.stop)
        keep = np.ones(neighbours.shape, dtype=bool)
        if self.exclude_self:
            keep &= self.db_ids[neighbours] != self.query_ids[rows, None]
        rank = np.cumsum(keep, axis=1)
        keep &= rank <= self.k
        if self.query_labels is not None:
            keep &= self.db_labels[neighbours] == self.query_labels[rows, None]
        if self.max_per_query is not None:
            keep &= np.cumsum(keep, axis=1) <= self.max_per_query
        found, columns = np.nonzero(keep)
        frame = pd.DataFrame({
            "query_id": self.query_ids[shard.start + found].astype(str),
            "candidate_id": self.db_ids[neighbours[found, columns]].astype(str),
            "similarity": similarity[found, columns],
            "rank": rank[found, columns].astype(np.int64),
        })
        with atomic_write(Path(self.directory) / knn_pair_file(shard.number), "wb") as handle:
            frame.to_parquet(handle, index=False)


def _rows_identity(rows: ArrayLike | StoreRows) -> dict:
    """What names an embedding matrix in a kNN pair list's manifest: a store's folder and rows,
    or the SHA-256 of an array's bytes."""
    if isinstance(rows, StoreRows):
        return {"store": str(rows.store.directory.resolve()),
                "positions_sha256": hashlib.sha256(np.ascontiguousarray(rows.positions)).hexdigest()}
    # hashed through the buffer, not a bytes copy of a matrix that may hold gigabytes
    return {"array_sha256": hashlib.sha256(np.ascontiguousarray(rows)).hexdigest()}


def _selection(rows: ArrayLike | StoreRows) -> StoreSelection | InMemoryRows:
    return StoreSelection.of(rows) if isinstance(rows, StoreRows) else InMemoryRows(rows)


def knn_pairs(
    query_ids: Sequence[str],
    query_emb: ArrayLike | StoreRows,
    db_ids: Sequence[str],
    db_emb: ArrayLike | StoreRows,
    k: int,
    same_label: tuple[ArrayLike, ArrayLike] | None = None,
    max_per_query: int | None = None,
    exclude_self: bool = True,
    out: str | Path | None = None,
    executor: Executor | None = None,
    progress: bool = False,
    shard_rows: int | None = None,
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

    The queries are searched in shards of `shard_rows` (default `KNN_SHARD_ROWS`; also the
    rows of each search, on which the kernel and so the last bits of a similarity depend), one
    task each of `executor` (default: in this process; `StoreRows` are opened by each worker,
    arrays are sent to it), and each shard's pairs are written atomically to `out/pairs-SSSSS.parquet` (a temporary
    folder when `out` is None, for this machine's executors only), then read back in order. A rerun into the same `out` with the
    same inputs searches only the shards still missing; other inputs are a UserInputError.
    """
    query_ids_sha256 = ids_sha256(query_ids)
    ids_fingerprints = {"query_ids_sha256": query_ids_sha256,
                        "db_ids_sha256": query_ids_sha256 if db_ids is query_ids else ids_sha256(db_ids)}
    if db_ids is query_ids:  # a split against itself (cleaning): one array for both, sent once
        query_ids = db_ids = id_arrays(query_ids)[0]
    else:
        query_ids, db_ids = id_arrays(query_ids, db_ids)
    if not isinstance(query_emb, StoreRows):
        query_emb = np.asarray(query_emb)
    if not isinstance(db_emb, StoreRows):
        db_emb = np.asarray(db_emb)
    if len(query_ids) != len(query_emb) or len(db_ids) != len(db_emb):
        raise ValueError(f"ids and embeddings differ in length: {len(query_ids)} query ids for {len(query_emb)} "
                         f"rows, {len(db_ids)} database ids for {len(db_emb)} rows")
    k = positive_int("k", k)
    shard_rows = positive_int("shard_rows", shard_rows or KNN_SHARD_ROWS)
    if max_per_query is not None:
        max_per_query = positive_int("max_per_query", max_per_query)
    query_labels = db_labels = None
    if same_label is not None:
        query_labels, db_labels = (np.asarray(labels) for labels in same_label)
        if len(query_labels) != len(query_ids) or len(db_labels) != len(db_ids):
            raise ValueError("same_label must hold one label per query and one per database row")
    if not len(db_ids) or not len(query_ids):
        return _empty_knn_pairs()
    if out is None and executor is not None and not isinstance(executor, LocalExecutor):
        # a temporary folder is this machine's: workers on other nodes could not write into it
        raise ValueError("knn_pairs on an executor beyond this machine needs `out`, a folder its workers share")
    with tempfile.TemporaryDirectory(prefix="knn-pairs-") if out is None else contextlib.nullcontext(out) as folder:
        folder = Path(folder).resolve()
        _open_knn_pair_folder(folder, {
            "format": KNN_FORMAT, "version": KNN_FORMAT_VERSION, "shard_rows": shard_rows, "k": k,
            "max_per_query": max_per_query, "exclude_self": exclude_self,
            **ids_fingerprints,
            "labels_sha256": None if same_label is None else hashlib.sha256(
                np.ascontiguousarray(query_labels).tobytes() + np.ascontiguousarray(db_labels).tobytes()).hexdigest(),
            "query_embeddings": (query_identity := _rows_identity(query_emb)),
            "db_embeddings": query_identity if db_emb is query_emb else _rows_identity(db_emb),
        })
        shards = query_shards(len(query_ids), shard_rows)
        sink = _KnnPairSink(str(folder), query_ids, db_ids, query_labels, db_labels, k, max_per_query, exclude_self)
        # One more than k, since the query itself is usually among its own nearest rows.
        search_shards(_selection(query_emb), _selection(db_emb),
                      [shard for shard in shards if not (folder / knn_pair_file(shard.number)).is_file()], sink,
                      min(k + int(exclude_self), len(db_ids)), "flat", {"query_block": shard_rows},
                      query_block=shard_rows, executor=executor, progress=progress, desc="kNN pairs")
        frames = [_read_knn_pair_shard(folder / knn_pair_file(shard.number)) for shard in shards]
    return pd.concat(frames, ignore_index=True)


def _open_knn_pair_folder(directory: Path, wanted: dict) -> None:
    """Create the kNN pair list folder's manifest, or check that the one there describes the same list."""
    _open_folder(directory, wanted,
                 lambda folder: read_manifest(folder, MANIFEST_NAME, KNN_FORMAT, KNN_FORMAT_VERSION, "a kNN pair list"),
                 "kNN pair list", "pairs-*.parquet", "kNN pair shards")


def _read_knn_pair_shard(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise UserInputError(f"{path}: unreadable kNN pair shard: {exc}; delete it and rerun to redo it") from None
    if tuple(frame.columns) != KNN_PAIR_COLUMNS:
        raise UserInputError(f"{path}: columns {list(frame.columns)}, expected {list(KNN_PAIR_COLUMNS)}; "
                             "delete it and rerun to redo it")
    return frame
