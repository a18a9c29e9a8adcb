"""A kNN table on disk: for each query image, its `k` nearest database images, best first.

Layout of a table folder `DIR`:

- `DIR/ids.txt`: the query ids, one per line, in row order (as in the embedding stores, whose
  `ids.txt` also names the rows); `DIR/database_ids.txt`: the database ids, one per line, in the
  order the `indices` point into. Both are written once, at creation.
- `DIR/shard-00000-scores.npy` and `DIR/shard-00000-indices.npy`, ...: shard `s` holds query rows
  `[s * shard_size, min((s + 1) * shard_size, count))`: `scores`, a `(rows, k)` float32 array of
  inner products, and `indices`, a `(rows, k)` int64 array of positions in `database_ids.txt`,
  each row best first. An index of -1 (score -inf) means "no neighbour": it pads the end of a row
  when an approximate index found fewer than `k` candidates.
- `DIR/manifest.json`: `format`, `version`, `k`, `count` (queries), `database_count`, `shard_size`,
  `shards` (each shard's `scores` and `indices` files and `rows`), `complete` (set by
  `KnnTableWriter.finish`) and `meta`, a free-form JSON object (search spec, store folders...).

Every file is written atomically and a shard counts as written once both of its files exist,
so a killed search resumes with the missing shards only (`KnnTableWriter.pending_shards`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from lmkcomp.checks import positive_int
from lmkcomp.errors import UserInputError
from lmkcomp.fileio import atomic_write, atomic_write_bytes
from lmkcomp.manifest import (
    IDS_NAME,
    MANIFEST_NAME,
    check_ids,
    check_store_fields,
    create_store,
    describe_store_difference,
    first_difference,
    mark_complete,
    new_store_manifest,
    read_ids,
    read_manifest,
)

FORMAT = "lmkcomp-knn"
FORMAT_VERSION = 1
DATABASE_IDS_NAME = "database_ids.txt"
DEFAULT_SHARD_SIZE = 10_000
NO_NEIGHBOUR = -1


def shard_files(s: int) -> tuple[str, str]:
    """File names of shard `s`'s scores and indices: `shard-00000-scores.npy`, `shard-00000-indices.npy`."""
    return f"shard-{s:05d}-scores.npy", f"shard-{s:05d}-indices.npy"


def _planned_shards(count: int, shard_size: int) -> list[dict]:
    shards = []
    for s, start in enumerate(range(0, count, shard_size)):
        scores, indices = shard_files(s)
        shards.append({"scores": scores, "indices": indices, "rows": min(shard_size, count - start)})
    return shards


def _new_manifest(k: int, count: int, database_count: int, shard_size: int, meta: dict) -> dict:
    return new_store_manifest(FORMAT, FORMAT_VERSION, {"k": k, "count": count, "database_count": database_count,
                                                       "shard_size": shard_size},
                              _planned_shards(count, shard_size), meta)


def _read_manifest(directory: Path) -> dict:
    """The manifest of the table in `directory`, every field checked."""
    manifest = read_manifest(directory, MANIFEST_NAME, FORMAT, FORMAT_VERSION, "a kNN table")
    path = directory / MANIFEST_NAME
    check_store_fields(manifest, path, _planned_shards, ("k", "count", "database_count", "shard_size"))
    if manifest["k"] > manifest["database_count"]:
        raise UserInputError(f"{path}: k {manifest['k']} exceeds the {manifest['database_count']} database ids")
    return manifest


def _read_database_ids(directory: Path) -> list[str]:
    return read_ids(directory, DATABASE_IDS_NAME)


# --------------------------------------------------------------------------------------------
# Writing


@dataclass(frozen=True)
class KnnShardWriter:
    """Writes the shards of the table in `directory` (created by `KnnTableWriter`) by number:
    `count` query rows, `database_count` database ids, `k` and `shard_size` as in its manifest.
    It holds no ids, so it is cheap to send to the workers of a search."""

    directory: str
    count: int
    database_count: int
    k: int
    shard_size: int

    def write_shard(self, s: int, scores: np.ndarray, indices: np.ndarray) -> None:
        """Store shard `s`: `scores` and `indices` of shape (shard rows, k), each row best first.

        Raises IndexError for an unknown shard and ValueError for a wrong shape, an index outside
        the database, a -1 ("no neighbour") before a real neighbour or a non-finite score of a
        real neighbour. The -1 entries are stored with score -inf.
        """
        shards = len(range(0, self.count, self.shard_size))
        if not 0 <= s < shards:
            raise IndexError(f"shard {s} out of range: the table has {shards} shards")
        first = s * self.shard_size
        scores = np.array(scores, dtype=np.float32)
        indices = np.asarray(indices)
        expected = (min(self.shard_size, self.count - first), self.k)
        if scores.shape != expected or indices.shape != expected:
            raise ValueError(f"shard {s}: scores {scores.shape} and indices {indices.shape}, expected {expected}")
        if not np.issubdtype(indices.dtype, np.integer):
            raise ValueError(f"shard {s}: indices must be integers, got {indices.dtype}")
        indices = indices.astype(np.int64)
        if indices.size and (indices.min() < NO_NEIGHBOUR or indices.max() >= self.database_count):
            raise ValueError(f"shard {s}: indices outside [-1, {self.database_count})")
        missing = indices == NO_NEIGHBOUR
        if np.any(missing[:, :-1] & ~missing[:, 1:]):
            raise ValueError(f"shard {s}: a -1 (no neighbour) comes before a neighbour")
        bad = ~np.isfinite(scores) & ~missing
        directory = Path(self.directory)
        if bad.any():
            row = first + int(np.argwhere(bad)[0, 0])
            # the ids are read only here, to name the query
            raise ValueError(f"shard {s}: a non-finite score for query row {row} (id {read_ids(directory)[row]})")
        scores[missing] = -np.inf
        # Indices first: the scores file completes the shard (pending_shards needs both).
        for name, array in zip(reversed(shard_files(s)), (indices, scores)):
            with atomic_write(directory / name, "wb") as handle:
                np.save(handle, array, allow_pickle=False)


class KnnTableWriter:
    """Writes the kNN table of `query_ids` against `database_ids` in `directory`, shard by shard.

    If `directory` already holds a table with the same query ids, database ids, k, shard size and
    meta, its shards are kept and `pending_shards` lists only the missing ones; if it holds any
    other table a `UserInputError` names the first difference, since mixing the rows of two
    searches (another index, another database) would silently corrupt every later stage.
    """

    def __init__(self, directory: str | Path, query_ids: Sequence[str], database_ids: Sequence[str], k: int,
                 shard_size: int = DEFAULT_SHARD_SIZE, meta: dict | None = None):
        self.directory = Path(directory)
        self.query_ids = list(query_ids)
        self.database_ids = list(database_ids)
        self.k = positive_int("k", k)
        self.shard_size = positive_int("shard_size", shard_size)
        # JSON round trip: a tuple and the list it is stored as must compare equal on resume.
        self.meta = json.loads(json.dumps(meta or {}))
        check_ids(self.query_ids)
        try:
            check_ids(self.database_ids)
        except UserInputError as exc:
            raise UserInputError(f"database ids: {exc}") from None
        if self.k > len(self.database_ids):
            raise UserInputError(f"k {self.k} exceeds the {len(self.database_ids)} database ids")
        # (s, slice of query rows) of every shard
        self.shards = [(s, slice(s * self.shard_size, s * self.shard_size + shard["rows"]))
                       for s, shard in enumerate(_planned_shards(len(self.query_ids), self.shard_size))]
        wanted = _new_manifest(self.k, len(self.query_ids), len(self.database_ids), self.shard_size, self.meta)
        if (self.directory / MANIFEST_NAME).exists():
            self._check_same_table(wanted)
        else:
            # database_ids.txt first: the manifest, written last by create_store, vouches for both id files.
            atomic_write_bytes(self.directory / DATABASE_IDS_NAME,
                               "".join(f"{i}\n" for i in self.database_ids).encode("ascii"))
            create_store(self.directory, self.query_ids, wanted, "shard-*.npy")

    def _check_same_table(self, wanted: dict) -> None:
        problem = describe_store_difference(_read_manifest(self.directory), wanted,
                                            ("k", "shard_size", "count", "database_count"),
                                            read_ids(self.directory), self.query_ids)
        if problem is None:
            found = _read_database_ids(self.directory)
            row = first_difference(found, self.database_ids)
            if row is not None:
                problem = (f"database row {row}: id {found[row] if row < len(found) else 'no id'} on disk vs "
                           f"{self.database_ids[row] if row < len(self.database_ids) else 'no id'} requested")
        if problem is not None:
            raise UserInputError(f"{self.directory}: already holds a different kNN table ({problem}); "
                                 "choose another folder or delete this one")

    def pending_shards(self) -> list[tuple[int, slice]]:
        """The `shards` not yet on disk: `(s, rows)`, the shard's number and its slice of the query rows."""
        return [(s, rows) for s, rows in self.shards
                if not all((self.directory / name).is_file() for name in shard_files(s))]

    def shard_writer(self) -> KnnShardWriter:
        """A writer of this table's shards by number that holds no ids: what a worker needs."""
        return KnnShardWriter(str(self.directory.resolve()), len(self.query_ids), len(self.database_ids), self.k,
                              self.shard_size)

    def write_shard(self, s: int, scores: np.ndarray, indices: np.ndarray) -> None:
        """Store shard `s` (see `KnnShardWriter.write_shard`)."""
        self.shard_writer().write_shard(s, scores, indices)

    def finish(self) -> KnnTable:
        """Mark the table complete in its manifest and open it; every shard must have been written."""
        mark_complete(self.directory, self.pending_shards(), _read_manifest)
        return KnnTable(self.directory)



def write_knn_table(directory: str | Path, query_ids: Sequence[str], database_ids: Sequence[str],
                    scores: np.ndarray, indices: np.ndarray, meta: dict | None = None,
                    shard_size: int = DEFAULT_SHARD_SIZE) -> KnnTable:
    """Write a whole table held in memory: `scores` (n, k) float32 and `indices` (n, k) int64
    positions in `database_ids`, each row best first. Every shard is written, so a table already
    in `directory` with the same ids, k and meta is overwritten; any other is an error."""
    scores, indices = np.asarray(scores), np.asarray(indices)
    if scores.ndim != 2 or scores.shape != indices.shape or scores.shape[0] != len(query_ids):
        raise ValueError(f"scores {scores.shape} and indices {indices.shape} must both be "
                         f"({len(query_ids)} queries, k)")
    writer = KnnTableWriter(directory, query_ids, database_ids, scores.shape[1], shard_size, meta)
    for s, rows in writer.shards:
        writer.write_shard(s, scores[rows], indices[rows])
    return writer.finish()


# --------------------------------------------------------------------------------------------
# Reading


class KnnTable:
    """A complete kNN table, read through memory-mapped shards.

    Attributes: `directory`, `query_ids` (row order), `database_ids` (what `indices` point
    into), `k`, `meta`. `len(table)` is the number of queries.
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        manifest = _read_manifest(self.directory)
        self.k: int = manifest["k"]
        self.meta: dict = manifest["meta"]
        self.shard_size: int = manifest["shard_size"]
        self.query_ids = read_ids(self.directory)
        self.database_ids = _read_database_ids(self.directory)
        for path, ids, key in ((self.directory / IDS_NAME, self.query_ids, "count"),
                               (self.directory / DATABASE_IDS_NAME, self.database_ids, "database_count")):
            if len(ids) != manifest[key]:
                raise UserInputError(f"{path}: {len(ids)} ids, but the manifest says {key} {manifest[key]}")
        for s in range(len(manifest["shards"])):
            if not all((self.directory / name).is_file() for name in shard_files(s)):
                raise UserInputError(f"{self.directory}: incomplete kNN table: shard {s} missing; "
                                     "rerun the search to resume")
        if not manifest["complete"]:
            raise UserInputError(f"{self.directory}: incomplete kNN table: not marked finished; "
                                 "rerun the search to resume")
        self._shards = [(self._open(name_scores, rows, np.float32), self._open(name_indices, rows, np.int64))
                        for name_scores, name_indices, rows in
                        ((shard["scores"], shard["indices"], shard["rows"]) for shard in manifest["shards"])]

    def _open(self, name: str, rows: int, dtype: type) -> np.ndarray:
        path = self.directory / name
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise UserInputError(f"{path}: unreadable shard: {exc}") from None
        if array.shape != (rows, self.k) or array.dtype != dtype:
            raise UserInputError(f"{path}: {array.dtype} array of shape {array.shape}, "
                                 f"expected {np.dtype(dtype)} of shape {(rows, self.k)}")
        return array

    def __len__(self) -> int:
        return len(self.query_ids)

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, indices) of query rows `[start, stop)`, new arrays of shape (stop - start, k)."""
        if not 0 <= start <= stop <= len(self):
            raise IndexError(f"rows [{start}, {stop}) out of range for a table of {len(self)} rows")
        scores = np.empty((stop - start, self.k), dtype=np.float32)
        indices = np.empty((stop - start, self.k), dtype=np.int64)
        row = start
        while row < stop:
            s, offset = divmod(row, self.shard_size)
            take = min(stop - row, self.shard_size - offset)
            scores[row - start:row - start + take] = self._shards[s][0][offset:offset + take]
            indices[row - start:row - start + take] = self._shards[s][1][offset:offset + take]
            row += take
        return scores, indices

    def scores(self) -> np.ndarray:
        """All scores, (queries, k) float32, in memory: for tables small enough to hold whole."""
        return self.read(0, len(self))[0]

    def indices(self) -> np.ndarray:
        """All indices into `database_ids`, (queries, k) int64 (-1: no neighbour), in memory."""
        return self.read(0, len(self))[1]

    def neighbour_ids(self, row: int) -> list[str]:
        """Database ids of query row `row`'s neighbours, best first ("no neighbour" entries left out)."""
        _, indices = self.read(row, row + 1)
        return [self.database_ids[i] for i in indices[0] if i != NO_NEIGHBOUR]

    def iter_blocks(self, rows: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """`(start, scores, indices)` of query rows `[start, start + rows)` over the whole table, in order."""
        rows = positive_int("rows", rows)
        for start in range(0, len(self), rows):
            yield (start, *self.read(start, min(start + rows, len(self))))
