"""A per-split store of local features on disk: compact, memory-mapped, resumable, read by id.

Images have different numbers of features, so rows are not images: shard `k` holds the images
`[k * shard_size, min((k + 1) * shard_size, count))` of `ids.txt` with their features
concatenated in image order, and an offsets array says which rows belong to which image.

Layout of a store folder `DIR`:

- `DIR/ids.txt`: every image id, one per line, in store order; written once, at creation.
- For each shard `k` (five-digit number):
  - `descriptors-0000k.npy`: R x D float16, L2-normalised rows (float16 keeps about three
    decimal digits, plenty for unit vectors, and halves the size of a DELF/SIFT store);
  - `locations-0000k.npy`: R x 2 float32, (x, y) in original-image pixels;
  - `scales-0000k.npy`, `scores-0000k.npy`: R float32;
  - `sizes-0000k.npy`: images x 2 int32, each image's (width, height) in pixels, 0 0 where
    unknown; only in stores whose manifest says `image_sizes: true` (every store written
    since sizes were recorded; older stores read as they are, their records without a size);
  - `offsets-0000k.npy`: (images + 1) int64, non-decreasing, from 0 to R: the features of the
    shard's image `i` are rows `offsets[i]:offsets[i + 1]`.
- `DIR/manifest.json`: `format`, `version`, `method` (the extractor's name), `dim`, `count`,
  `shard_size`, `image_sizes` (whether shards hold `sizes`; absent means false), `skipped`
  (the images stored with no features because they could not be read: `row`, `id` and
  `reason` each), `shards` (images per shard), `complete` and `meta`, a free-form JSON object
  (split, extractor settings...).

Every file is written atomically and a shard's offsets file is written last, so a killed
extraction leaves whole shards or none; a new `LocalFeatureWriter` on the same folder, ids,
method, dim and meta resumes with the shards still missing. The reader memory-maps shards on
first use and keeps only a few open, and memory-maps `ids.txt` too, finding an id's row by
binary search, so a store of millions of images costs neither memory nor file handles up front.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from lmkcomp.checks import positive_int
from lmkcomp.errors import UserInputError
from lmkcomp.features.store import shard_rows
from lmkcomp.fileio import atomic_write
from lmkcomp.local.record import LocalFeatures
from lmkcomp.manifest import (
    MANIFEST_NAME,
    check_ids,
    check_store_fields,
    create_store,
    describe_store_difference,
    mark_complete,
    new_store_manifest,
    open_ids,
    read_ids,
    read_manifest,
    read_skipped,
    record_skipped,
    refuse_incomplete,
    reopen_writer,
)

log = logging.getLogger(__name__)

FORMAT = "lmkcomp-local-features"
FORMAT_VERSION = 1
DESCRIPTOR_DTYPE = np.dtype(np.float16)
#: the arrays of a shard, in the order they are written: offsets last, as the commit marker
SHARD_ARRAYS = ("descriptors", "locations", "scales", "scores", "offsets")
#: the array of image sizes, written before the offsets in stores that record sizes
SIZES_ARRAY = "sizes"


def shard_file(array: str, k: int) -> str:
    """File name of one array of shard `k`, e.g. `descriptors-00000.npy`."""
    return f"{array}-{k:05d}.npy"


# --------------------------------------------------------------------------------------------
# Manifest and ids


def _new_manifest(method: str, dim: int, count: int, shard_size: int, meta: dict, command: str | None) -> dict:
    return new_store_manifest(FORMAT, FORMAT_VERSION, {"method": method, "dim": dim, "count": count,
                                                       "shard_size": shard_size, "command": command, "skipped": [],
                                                       "image_sizes": True},
                              shard_rows(count, shard_size), meta)


def _shard_arrays(manifest: dict) -> tuple[str, ...]:
    """The arrays every shard of a store with this manifest has, offsets last."""
    if manifest.get("image_sizes", False):
        return (*SHARD_ARRAYS[:-1], SIZES_ARRAY, SHARD_ARRAYS[-1])
    return SHARD_ARRAYS


def _read_manifest(directory: Path) -> dict:
    """The manifest of the store in `directory`, every field checked."""
    manifest = read_manifest(directory, MANIFEST_NAME, FORMAT, FORMAT_VERSION, "a local-feature store")
    path = directory / MANIFEST_NAME
    check_store_fields(manifest, path, shard_rows)
    if not isinstance(manifest.get("method"), str) or not manifest["method"]:
        raise UserInputError(f"{path}: 'method' must be a non-empty string")
    if not isinstance(manifest.get("image_sizes", False), bool):
        raise UserInputError(f"{path}: 'image_sizes' must be true or false")
    return manifest


# --------------------------------------------------------------------------------------------
# Writing


class LocalFeatureWriter:
    """Writes the local features of `ids` into `directory` shard by shard, resuming a run.

    If `directory` already holds a store with the same ids, method, dim, shard size and meta,
    its finished shards are kept and `pending_shards` lists only the others; if it holds any
    other store, a UserInputError names the first difference, since mixing two extractions
    (other settings, another id order) would silently corrupt matching. `command` names the
    command that writes the store (e.g. "lmkcomp extract-local"), for the message of a reader
    that finds it unfinished.

    `ids` is the list of ids in store order: a list here, an `IdIndex` in a writer `reopen` made.
    """

    def __init__(self, directory: str | Path, ids: Sequence[str], dim: int, method: str,
                 meta: dict | None = None, shard_size: int = 1000, command: str | None = None):
        self._settings(directory, list(ids), dim, method, meta, shard_size)
        check_ids(self.ids)
        wanted = _new_manifest(self.method, self.dim, len(self.ids), self.shard_size, self.meta, command)
        if (self.directory / MANIFEST_NAME).exists():
            found = _read_manifest(self.directory)
            problem = describe_store_difference(found, wanted, ("method", "dim", "shard_size", "count"),
                                                read_ids(self.directory), self.ids)
            if problem is not None:
                raise UserInputError(f"{self.directory}: already holds a different local-feature store "
                                     f"({problem}); choose another folder or delete this one")
            # A store begun before sizes were recorded is resumed as it began: without them.
            self._arrays = _shard_arrays(found)
        else:
            create_store(self.directory, self.ids, wanted, "offsets-*.npy")
            self._arrays = _shard_arrays(wanted)

    def _settings(self, directory: str | Path, ids: Sequence[str], dim: int, method: str, meta: dict | None,
                  shard_size: int) -> None:
        """Set the writer's folder, ids and settings, each checked on its own (not against a store)."""
        self.directory = Path(directory)
        self.ids = ids
        self.dim = positive_int("dim", dim)
        if not isinstance(method, str) or not method:
            raise UserInputError(f"method must be a non-empty string, got {method!r}")
        self.method = method
        self.shard_size = positive_int("shard_size", shard_size)
        # Through JSON, so that a tuple and the list it is stored as compare equal on resume.
        self.meta = json.loads(json.dumps(meta or {}))
        self._images = shard_rows(len(self.ids), self.shard_size)

    @classmethod
    def reopen(cls, directory: str | Path) -> "LocalFeatureWriter":
        """The writer of the store this class began in `directory`, with its ids and settings read
        from there: what a worker elsewhere needs to write some of its shards.

        It trusts the ids the driver created or checked (`reopen_writer`).
        """
        directory = Path(directory)
        manifest = _read_manifest(directory)
        writer = reopen_writer(cls, directory, manifest, "dim", "method", "meta", "shard_size")
        writer._arrays = _shard_arrays(manifest)
        return writer

    def _finished(self, k: int) -> bool:
        return all((self.directory / shard_file(array, k)).is_file() for array in self._arrays)

    def pending_shards(self) -> list[tuple[int, slice]]:
        """`(k, images)` for every shard not yet on disk: its number and its slice of `ids`."""
        return [(k, slice(k * self.shard_size, k * self.shard_size + images))
                for k, images in enumerate(self._images) if not self._finished(k)]

    def write_shard(self, k: int, records: Sequence[LocalFeatures], skipped: Sequence[tuple[int, str]] = ()) -> None:
        """Store `records` (one per image of shard `k`, in id order) as shard `k`.

        `skipped` lists `(position within the shard, reason)` for the images that could not be
        read; their records must be empty, and the manifest records them (see
        `LocalFeatureStore.skipped`). Descriptors are stored as float16. Raises IndexError
        for an unknown shard and ValueError for a wrong number of records, a record of
        another dimension, a skipped image with features or descriptors too large for
        float16 (they should be L2-normalised). Each record's `image_size` is kept (0 0 for
        None) when the store records sizes.
        """
        if not 0 <= k < len(self._images):
            raise IndexError(f"shard {k} out of range: the store has {len(self._images)} shards")
        if len(records) != self._images[k]:
            raise ValueError(f"shard {k}: {len(records)} records, expected {self._images[k]}")
        first = k * self.shard_size
        for position, record in enumerate(records):
            if record.dim != self.dim:
                raise ValueError(f"shard {k}: record of id {self.ids[first + position]} has "
                                 f"{record.dim}-dimensional descriptors, expected {self.dim}")
        counts = np.array([len(record) for record in records], dtype=np.int64)
        # An overflowing cast is reported below with the id at fault, not as a numpy warning.
        with np.errstate(over="ignore"):
            descriptors = np.concatenate([r.descriptors for r in records]).astype(DESCRIPTOR_DTYPE)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        bad = np.flatnonzero(~np.isfinite(descriptors).all(axis=1))
        if bad.size:
            position = int(np.searchsorted(offsets, bad[0], side="right")) - 1
            raise ValueError(f"shard {k}: descriptors of id {self.ids[first + position]} overflow float16; "
                             "descriptors must be L2-normalised")
        if any(not 0 <= position < len(records) or len(records[position]) for position, _ in skipped):
            raise ValueError(f"shard {k}: skipped images must be images of the shard, with no features")
        record_skipped(self.directory, _read_manifest, self.ids, slice(first, first + len(records)), skipped)
        arrays = {
            "descriptors": descriptors,
            "locations": np.concatenate([r.locations for r in records]),
            "scales": np.concatenate([r.scales for r in records]),
            "scores": np.concatenate([r.scores for r in records]),
            SIZES_ARRAY: np.array([r.image_size or (0, 0) for r in records], dtype=np.int32).reshape(-1, 2),
            "offsets": offsets,
        }
        for array in self._arrays:
            with atomic_write(self.directory / shard_file(array, k), "wb") as handle:
                np.save(handle, arrays[array], allow_pickle=False)

    def finish(self) -> None:
        """Mark the store complete in its manifest; every shard must have been written."""
        mark_complete(self.directory, self.pending_shards(), _read_manifest)



# --------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True, eq=False)
class _Shard:
    offsets: np.ndarray
    descriptors: np.ndarray
    locations: np.ndarray
    scales: np.ndarray
    scores: np.ndarray
    #: images x 2 (width, height), 0 0 where unknown; None in a store without sizes
    sizes: np.ndarray | None


class LocalFeatureStore:
    """A complete local-feature store, read through memory-mapped shards.

    Attributes: `directory`, `ids` (store order: an `IdIndex`, a read-only sequence of str that
    finds an id's row by binary search, so a worker that opens the store of GLDv2 train holds
    33 MB for its 4.1 M ids, not a list and a dict of 590 MB), `method`, `dim`, `shard_size`, `meta`,
    `image_sizes` (whether records carry their image's size), `skipped` (`{"row", "id",
    "reason"}` of each image stored with no features because it could not be read; other
    images may have none too, e.g. a blank one). At most `max_open_shards` shards are kept
    mapped at a time (each holds four open files).
    """

    def __init__(self, directory: str | Path, max_open_shards: int = 16):
        self.directory = Path(directory)
        manifest = _read_manifest(self.directory)
        self.method: str = manifest["method"]
        self.dim: int = manifest["dim"]
        self.shard_size: int = manifest["shard_size"]
        self.meta: dict = manifest["meta"]
        self.image_sizes: bool = manifest.get("image_sizes", False)
        self._arrays = _shard_arrays(manifest)
        self._images: list[int] = manifest["shards"]
        self.ids = open_ids(self.directory, count=manifest["count"])
        self.skipped: list[dict] = read_skipped(manifest, self.directory / MANIFEST_NAME, self.ids)
        refuse_incomplete(self.directory, "local-feature store", manifest, self._first_missing_shard())
        self.max_open_shards = positive_int("max_open_shards", max_open_shards)
        self._open: OrderedDict[int, _Shard] = OrderedDict()
        if not self.image_sizes:
            log.warning("%s: written before image sizes were recorded: verification tolerances on these "
                        "features stay in pixels; extract again for tolerances relative to image size",
                        self.directory)

    def _first_missing_shard(self) -> str | None:
        """`shard K missing (FILES)` for the first shard not wholly on disk; None if none."""
        for k in range(len(self._images)):
            missing = [shard_file(a, k) for a in self._arrays if not (self.directory / shard_file(a, k)).is_file()]
            if missing:
                return f"shard {k} missing ({', '.join(missing)})"
        return None

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, image_id: str) -> bool:
        return image_id in self.ids

    def rows(self, ids: Sequence[str]) -> np.ndarray:
        """The row of each of `ids` in the store (int64), -1 for an id it does not hold: many
        ids looked up at once, much faster than one by one."""
        return self.ids.rows(ids)

    def get(self, image_id: str) -> LocalFeatures:
        """The features of `image_id`, as read-only views of the memory-mapped shard."""
        row = self.ids.row(image_id)
        if row < 0:
            raise UserInputError(f"{self.directory}: id {image_id!r} not in the store")
        return self.read(row)

    def read(self, row: int) -> LocalFeatures:
        """The features of the image at position `row` of `ids`."""
        if not 0 <= row < len(self.ids):
            raise IndexError(f"row {row} out of range for a store of {len(self.ids)} images")
        k, local = divmod(row, self.shard_size)
        shard = self._shard(k)
        start, stop = int(shard.offsets[local]), int(shard.offsets[local + 1])
        size = None if shard.sizes is None or not shard.sizes[local].all() else tuple(shard.sizes[local])
        return LocalFeatures(shard.locations[start:stop], shard.descriptors[start:stop],
                             shard.scales[start:stop], shard.scores[start:stop], size)

    def _shard(self, k: int) -> _Shard:
        shard = self._open.get(k)
        if shard is not None:
            self._open.move_to_end(k)
            return shard
        shard = self._load_shard(k)
        self._open[k] = shard
        if len(self._open) > self.max_open_shards:
            # Records handed out keep their own reference to the mapping, so closing is safe.
            self._open.popitem(last=False)
        return shard

    def _load_shard(self, k: int) -> _Shard:
        arrays = {SIZES_ARRAY: None}
        for array in self._arrays:
            path = self.directory / shard_file(array, k)
            try:
                # Offsets and sizes are small and read on every lookup: load them; map the rest.
                arrays[array] = np.load(path, mmap_mode=None if array in ("offsets", SIZES_ARRAY) else "r",
                                        allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise UserInputError(f"{path}: unreadable shard array: {exc}") from None
        offsets = arrays["offsets"]
        images = self._images[k]
        if (offsets.dtype != np.int64 or offsets.shape != (images + 1,) or offsets[0] != 0
                or np.any(np.diff(offsets) < 0)):
            raise UserInputError(f"{self.directory / shard_file('offsets', k)}: expected {images + 1} "
                                 "non-decreasing int64 offsets from 0")
        rows = int(offsets[-1])
        expected = {"descriptors": (DESCRIPTOR_DTYPE, (rows, self.dim)), "locations": (np.float32, (rows, 2)),
                    "scales": (np.float32, (rows,)), "scores": (np.float32, (rows,))}
        if self.image_sizes:
            expected[SIZES_ARRAY] = (np.int32, (images, 2))
        for array, (dtype, shape) in expected.items():
            if arrays[array].dtype != dtype or arrays[array].shape != shape:
                raise UserInputError(f"{self.directory / shard_file(array, k)}: {arrays[array].dtype} array "
                                     f"of shape {arrays[array].shape}, expected {np.dtype(dtype)} of shape {shape}")
        return _Shard(**arrays)
