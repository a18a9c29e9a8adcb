"""An id-aligned, sharded store of embeddings on disk: one row per image id, in a fixed order.

Layout of a store folder `DIR`:

- `DIR/ids.txt`: every image id, one per line, in row order; written once, at creation.
- `DIR/shard-00000.npy`, `DIR/shard-00001.npy`, ...: shard `k` holds rows
  `[k * shard_size, min((k + 1) * shard_size, count))` as a `(rows, dim)` array of `dtype`.
- `DIR/manifest.json`: `format`, `version`, `dim`, `dtype` ("float16" or "float32"), `count`,
  `shard_size`, `shards` (each shard's `file` and `rows`), `complete` (set by
  `EmbeddingWriter.finish`), `skipped` (the all-zero rows of images that could not be read:
  `row`, `id` and `reason` each) and `meta`, a free-form JSON object (checkpoint, scales...).

Every file is written atomically, so a killed extraction leaves whole shards or none; a new
`EmbeddingWriter` on the same folder and ids resumes with the shards still missing. Readers
memory-map the shards, so a 4 M x 3072 store is read block by block, never all at once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from lmkcomp.checks import positive_int
from lmkcomp.errors import UserInputError
from lmkcomp.fileio import atomic_write
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
    read_skipped,
    record_skipped,
    refuse_incomplete,
    reopen_writer,
)

FORMAT = "lmkcomp-embeddings"
FORMAT_VERSION = 1
DTYPES = ("float16", "float32")


def shard_name(k: int) -> str:
    """File name of shard `k`: `shard-00000.npy` for k = 0."""
    return f"shard-{k:05d}.npy"


def shard_rows(count: int, shard_size: int) -> list[int]:
    """Row counts of `count` rows cut every `shard_size` rows: all `shard_size` but the last."""
    return [min(shard_size, count - start) for start in range(0, count, shard_size)]


def l2_normalize(x: ArrayLike, eps: float = 1e-12) -> np.ndarray:
    """Each row of `x` divided by `max(||row||_2, eps)`; a zero row stays zero.

    The result is floating point of at least float32 precision: float16 input is upcast first
    because its squared norms overflow above 65504.
    """
    x = np.asarray(x)
    x = x.astype(np.result_type(x.dtype, np.float32), copy=False)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, eps)


def _dtype_name(dtype: DTypeLike) -> str:
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = str(dtype)
    if name not in DTYPES:
        raise UserInputError(f"embedding dtype {dtype!r} not supported; expected one of {', '.join(DTYPES)}")
    return name


def _describe_id_mismatch(a: Sequence[str], b: Sequence[str], name_a: str, name_b: str) -> str | None:
    """`row R: ID in A vs ID in B`, with both counts when they differ; None if the ids are equal."""
    row = first_difference(a, b)
    if row is None:
        return None
    id_a = a[row] if row < len(a) else "no id"
    id_b = b[row] if row < len(b) else "no id"
    message = f"row {row}: {id_a} in {name_a} vs {id_b} in {name_b}"
    if len(a) != len(b):
        message += f" ({len(a)} vs {len(b)} ids)"
    return message


def _planned_shards(count: int, shard_size: int) -> list[dict]:
    return [{"file": shard_name(k), "rows": rows} for k, rows in enumerate(shard_rows(count, shard_size))]


def _new_manifest(dim: int, dtype: str, count: int, shard_size: int, meta: dict, command: str | None) -> dict:
    return new_store_manifest(FORMAT, FORMAT_VERSION, {"dim": dim, "dtype": dtype, "count": count, "shard_size": shard_size,
                                                       "command": command, "skipped": []},
                              _planned_shards(count, shard_size), meta)


def _read_manifest(directory: Path) -> dict:
    """The manifest of the store in `directory`, every field checked."""
    manifest = read_manifest(directory, MANIFEST_NAME, FORMAT, FORMAT_VERSION, "an embedding store")
    path = directory / MANIFEST_NAME
    check_store_fields(manifest, path, _planned_shards)
    try:
        _dtype_name(manifest.get("dtype"))
    except UserInputError as exc:
        raise UserInputError(f"{path}: {exc}") from None
    return manifest


# --------------------------------------------------------------------------------------------
# Writing


class EmbeddingWriter:
    """Writes the store for `ids` in `directory` shard by shard, resuming an interrupted run.

    If `directory` already holds a store with the same ids, dim, dtype, shard size and meta,
    the shards on disk are kept and `pending_shards` lists only the missing ones; if it holds
    any other store a `UserInputError` names the first mismatch, since mixing the rows of two
    extractions (another checkpoint, another id order) would silently corrupt retrieval.
    `command` names the command that writes the store (e.g. "lmkcomp extract"), for the
    message of a reader that finds it unfinished.

    `ids` is the list of ids in row order: a list here, an `IdIndex` in a writer `reopen` made.
    """

    def __init__(self, directory: str | Path, ids: Sequence[str], dim: int, dtype: DTypeLike = "float16",
                 shard_size: int = 50_000, meta: dict | None = None, command: str | None = None):
        self._settings(directory, list(ids), dim, dtype, shard_size, meta)
        check_ids(self.ids)
        wanted = _new_manifest(self.dim, self.dtype, len(self.ids), self.shard_size, self.meta, command)
        if (self.directory / MANIFEST_NAME).exists():
            self._check_same_store(wanted)
        else:
            self._create(wanted)

    def _settings(self, directory: str | Path, ids: Sequence[str], dim: int, dtype: DTypeLike, shard_size: int,
                  meta: dict | None) -> None:
        """Set the writer's folder, ids and settings, each checked on its own (not against a store)."""
        self.directory = Path(directory)
        self.ids = ids
        self.dim = positive_int("dim", dim)
        self.dtype = _dtype_name(dtype)
        self.shard_size = positive_int("shard_size", shard_size)
        # Round-trip through JSON so that a tuple and the list it is stored as compare equal
        # when a resumed run checks its meta against the manifest's.
        self.meta = json.loads(json.dumps(meta or {}))
        self._rows = shard_rows(len(self.ids), self.shard_size)

    @classmethod
    def reopen(cls, directory: str | Path) -> "EmbeddingWriter":
        """The writer of the store another process created in `directory` (its ids, dim,
        dtype, shard size and meta read from its files): how a worker writes shards of a store
        the driver opened.

        It trusts the ids the driver created or checked (`reopen_writer`).
        """
        directory = Path(directory)
        return reopen_writer(cls, directory, _read_manifest(directory), "dim", "dtype", "shard_size", "meta")

    def _create(self, manifest: dict) -> None:
        create_store(self.directory, self.ids, manifest, "shard-*.npy")

    def _check_same_store(self, wanted: dict) -> None:
        problem = describe_store_difference(_read_manifest(self.directory), wanted, ("dim", "dtype", "shard_size", "count"),
                                            read_ids(self.directory), self.ids)
        if problem is not None:
            raise UserInputError(f"{self.directory}: already holds a different embedding store ({problem}); "
                                 "choose another folder or delete this one")

    def pending_shards(self) -> list[tuple[int, slice]]:
        """`(k, rows)` for every shard not yet on disk: its number and its slice of `ids`."""
        return [(k, slice(k * self.shard_size, k * self.shard_size + rows))
                for k, rows in enumerate(self._rows)
                if not (self.directory / shard_name(k)).is_file()]

    def write_shard(self, k: int, array: ArrayLike, skipped: Sequence[tuple[int, str]] = ()) -> None:
        """Store `array` (shard `k`'s rows x dim) as shard `k`, cast to the store's dtype.

        `skipped` lists `(row within the shard, reason)` for the images that could not be read;
        their rows must be all zero, and the manifest records them (see `EmbeddingStore.skipped`).
        Raises IndexError for an unknown shard, ValueError for a wrong shape or a skipped row
        that is not zero and UserInputError for a row that is not finite once cast (e.g.
        float16 overflow).
        """
        if not 0 <= k < len(self._rows):
            raise IndexError(f"shard {k} out of range: the store has {len(self._rows)} shards")
        array = np.asarray(array)
        expected = (self._rows[k], self.dim)
        if array.shape != expected:
            raise ValueError(f"shard {k}: array of shape {array.shape}, expected {expected}")
        # An overflowing cast is reported below with the id at fault, not as a numpy warning.
        with np.errstate(over="ignore"):
            data = array.astype(self.dtype)
        bad = np.flatnonzero(~np.isfinite(data).all(axis=1))
        if bad.size:
            row = k * self.shard_size + int(bad[0])
            raise UserInputError(f"{self.directory}: shard {k}: {bad.size} embeddings not finite in {self.dtype}, "
                                 f"first: row {row} (id {self.ids[row]})")
        rows = [row for row, _ in skipped]
        if any(not 0 <= row < len(data) for row in rows) or np.any(data[rows]):
            raise ValueError(f"shard {k}: skipped images must be rows of the shard, all zero")
        start = k * self.shard_size
        record_skipped(self.directory, _read_manifest, self.ids, slice(start, start + self._rows[k]), skipped)
        with atomic_write(self.directory / shard_name(k), "wb") as handle:
            np.save(handle, data, allow_pickle=False)

    def finish(self) -> None:
        """Mark the store complete in its manifest; every shard must have been written."""
        mark_complete(self.directory, self.pending_shards(), _read_manifest)



# --------------------------------------------------------------------------------------------
# Reading


class EmbeddingShards:
    """The rows of a complete store, read through memory-mapped shards, without its ids: what
    a search worker opens (it needs rows by number, and GLDv2 train's 4.1 M ids would cost each
    worker about 300 MB as a list of str).

    Attributes: `directory`, `dim`, `dtype` (as stored), `meta`, `shard_size`; `len()` is the
    manifest's row `count`.
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        manifest = _read_manifest(self.directory)
        self.dim: int = manifest["dim"]
        self.dtype = np.dtype(manifest["dtype"])
        self.meta: dict = manifest["meta"]
        self.shard_size: int = manifest["shard_size"]
        self._count: int = manifest["count"]
        self._read_ids(manifest)
        missing = next((f"shard {k} missing" for k in range(len(manifest["shards"]))
                        if not (self.directory / shard_name(k)).is_file()), None)
        refuse_incomplete(self.directory, "embedding store", manifest, missing)
        self._shards = [self._open_shard(k, shard["rows"]) for k, shard in enumerate(manifest["shards"])]

    def _read_ids(self, manifest: dict) -> None:
        """Read and check what names the rows, before the shards are opened; nothing here."""

    def _open_shard(self, k: int, rows: int) -> np.ndarray:
        path = self.directory / shard_name(k)
        try:
            shard = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise UserInputError(f"{path}: unreadable shard: {exc}") from None
        if shard.shape != (rows, self.dim) or shard.dtype != self.dtype:
            raise UserInputError(f"{path}: {shard.dtype} array of shape {shard.shape}, "
                                 f"expected {self.dtype} of shape {(rows, self.dim)}")
        return shard

    def __len__(self) -> int:
        return self._count

    def read(self, start: int, stop: int, dtype: DTypeLike = np.float32) -> np.ndarray:
        """Rows `[start, stop)` as a new `(stop - start, dim)` array of `dtype`.

        Only those rows are read from disk, whatever shards they span.
        """
        if not 0 <= start <= stop <= len(self):
            raise IndexError(f"rows [{start}, {stop}) out of range for a store of {len(self)} rows")
        out = np.empty((stop - start, self.dim), dtype=dtype)
        row = start
        while row < stop:
            k, offset = divmod(row, self.shard_size)
            take = min(stop - row, self.shard_size - offset)
            out[row - start:row - start + take] = self._shards[k][offset:offset + take]
            row += take
        return out

    def array(self, dtype: DTypeLike = np.float32) -> np.ndarray:
        """All rows in memory: for stores small enough to hold whole."""
        return self.read(0, len(self), dtype)

    def iter_blocks(self, block_rows: int, dtype: DTypeLike = np.float32) -> Iterator[tuple[int, np.ndarray]]:
        """`(start, rows [start, start + block_rows))` over the whole store, in order."""
        block_rows = positive_int("block_rows", block_rows)
        for start in range(0, len(self), block_rows):
            yield start, self.read(start, min(start + block_rows, len(self)), dtype)


class EmbeddingStore(EmbeddingShards):
    """A complete store with its ids, read through memory-mapped shards.

    Attributes: those of `EmbeddingShards`, `ids` (row order) and `skipped` (`{"row", "id",
    "reason"}` of each all-zero row whose image could not be read).
    """

    def _read_ids(self, manifest: dict) -> None:
        """`ids` from `ids.txt` (one per row of the manifest's `count`) and the `skipped` rows, which name them."""
        self.ids = read_ids(self.directory)
        if len(self.ids) != manifest["count"]:
            raise UserInputError(f"{self.directory / IDS_NAME}: {len(self.ids)} ids, "
                                 f"but the shards hold {manifest['count']} rows")
        self.skipped: list[dict] = read_skipped(manifest, self.directory / MANIFEST_NAME, self.ids)
        self._positions: dict[str, int] | None = None

    def position(self, ids: Sequence[str]) -> np.ndarray:
        """Row of each of `ids` in the store (int64); an id not in the store is an error."""
        if self._positions is None:
            self._positions = {image_id: row for row, image_id in enumerate(self.ids)}
        positions = self._positions
        unknown = [image_id for image_id in ids if image_id not in positions]
        if unknown:
            raise UserInputError(f"{self.directory}: {len(unknown)} ids not in the store, first: {unknown[0]!r}")
        return np.fromiter((positions[image_id] for image_id in ids), dtype=np.int64, count=len(ids))


def read_positions(store: EmbeddingShards, positions: np.ndarray) -> np.ndarray:
    """Rows `positions` (sorted, unique) of `store` as float32, read run by run of consecutive rows."""
    if not len(positions):
        return np.empty((0, store.dim), dtype=np.float32)
    breaks = np.flatnonzero(np.diff(positions) != 1) + 1
    if not len(breaks):  # one run of consecutive rows (a database block): no second copy
        return store.read(int(positions[0]), int(positions[-1]) + 1)
    out = np.empty((len(positions), store.dim), dtype=np.float32)
    for start, stop in zip(np.concatenate([[0], breaks]), np.concatenate([breaks, [len(positions)]])):
        out[start:stop] = store.read(int(positions[start]), int(positions[stop - 1]) + 1)
    return out


class StoreRows:
    """Rows `positions` of a store as a read-only float32 matrix read on demand: row `i` is store
    row `positions[i]`. Indexing (`rows[a:b]`, `rows[array]`) reads just those rows, so a
    database-sized matrix (GLDv2 train: 4.1 M rows) is never held whole."""

    def __init__(self, store: EmbeddingShards, positions: ArrayLike):
        self.store = store
        self.positions = np.asarray(positions, dtype=np.int64)
        if self.positions.ndim != 1 or (len(self.positions) and not
                                        0 <= self.positions.min() <= self.positions.max() < len(store)):
            raise IndexError(f"positions out of range for a store of {len(store)} rows")

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.positions), self.store.dim

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, rows: slice | ArrayLike) -> np.ndarray:
        wanted = self.positions[rows]
        # read each store row once, in store order, then lay the rows out as asked
        unique, inverse = np.unique(wanted, return_inverse=True)
        return read_positions(self.store, unique)[inverse.reshape(-1)]

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Rows `rows` as float32 (a searcher's row reader)."""
        return self[rows]


def check_aligned(stores: Sequence[EmbeddingStore]) -> None:
    """Raise UserInputError unless every store has the same ids in the same order as the first."""
    for other in stores[1:]:
        problem = _describe_id_mismatch(stores[0].ids, other.ids, str(stores[0].directory), str(other.directory))
        if problem is not None:
            raise UserInputError(f"embedding stores not aligned: {problem}")
