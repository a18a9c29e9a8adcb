"""Global descriptors that need no trained weights, by name, written as embedding stores.

A weight-free descriptor turns one decoded image into one L2-normalised float32 vector, so it
can fill the same store as a trained model (`lmkcomp.features.store`): `recognize`,
`retrieve` and `search` then read it as they read any other. It is the floor a learned
descriptor must beat, and, on a few real photos with no model at hand, the cheap first stage
that proposes which train images to verify.

Descriptors (`WEIGHT_FREE_DESCRIPTORS`):

- ``thumbnail``: the image decoded at a long side of at most 4 x 16 px (EXIF applied), then
  area-resized to 16 x 16 RGB (aspect ratio not kept); the 768 values (row-major, RGB
  interleaved) minus their mean, divided by their L2 norm (a uniform image gives zeros).
  This is the descriptor of `lmkcomp baseline --method thumbnail`.
"""

from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar, Iterator, Protocol, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from lmkcomp.checks import positive_int
from lmkcomp.data.images import load_image_rgb
from lmkcomp.errors import ImageLoadError
from lmkcomp.features.store import EmbeddingStore, EmbeddingWriter
from lmkcomp.registry import Registry
from lmkcomp.workers import one_thread_each, process_pool

log = logging.getLogger(__name__)

# Images per task sent to a worker process: thumbnails take about a millisecond once decoded,
# so a task must carry many to amortise the round trip.
_CHUNK = 64


class WeightFreeDescriptor(Protocol):
    """Image file -> one float32 row of `dim` values; `settings()` is what the store records."""

    name: ClassVar[str]

    @property
    def dim(self) -> int: ...

    def describe_file(self, path: str | Path) -> np.ndarray: ...

    def settings(self) -> dict: ...


WEIGHT_FREE_DESCRIPTORS: Registry[WeightFreeDescriptor] = Registry("weight-free descriptor")


@WEIGHT_FREE_DESCRIPTORS.register("thumbnail")
@dataclass(frozen=True)
class ThumbnailDescriptor:
    """The `side` x `side` colour thumbnail, mean-centred and L2-normalised (module docstring)."""

    side: int = 16
    name: ClassVar[str] = "thumbnail"

    @property
    def dim(self) -> int:
        return 3 * self.side * self.side

    def describe(self, image_rgb: np.ndarray) -> np.ndarray:
        """The descriptor of an H x W x 3 uint8 RGB image."""
        small = cv2.resize(image_rgb, (self.side, self.side), interpolation=cv2.INTER_AREA)
        row = small.astype(np.float32).ravel()
        row -= row.mean()
        return row / max(float(np.linalg.norm(row)), 1e-12)

    def describe_file(self, path: str | Path) -> np.ndarray:
        """The descriptor of an image file; ImageLoadError when it cannot be read. Decoding at
        4 x `side` lets JPEG decode at a fraction of full size, which is most of the cost."""
        return self.describe(load_image_rgb(path, max_side=4 * self.side))

    def settings(self) -> dict:
        return asdict(self)


def create_weight_free_descriptor(name: str, **options) -> WeightFreeDescriptor:
    """The descriptor registered as `name`; an unknown name is a UserInputError listing them."""
    return WEIGHT_FREE_DESCRIPTORS.create(name, **options)


def _describe(descriptor: WeightFreeDescriptor, path: str) -> tuple[np.ndarray | None, str | None]:
    # the reason travels back rather than the exception, which does not survive pickling
    try:
        return descriptor.describe_file(path), None
    except ImageLoadError as error:
        return None, error.reason


_worker_descriptor: WeightFreeDescriptor | None = None


def _start_worker(descriptor: WeightFreeDescriptor) -> None:
    global _worker_descriptor
    one_thread_each()
    _worker_descriptor = descriptor


def _describe_in_worker(path: str) -> tuple[np.ndarray | None, str | None]:
    return _describe(_worker_descriptor, path)


def _rows(pool: ProcessPoolExecutor | None, descriptor: WeightFreeDescriptor,
          paths: Sequence[str]) -> Iterator[tuple[np.ndarray | None, str | None]]:
    if pool is None:
        return (_describe(descriptor, path) for path in paths)
    return pool.map(_describe_in_worker, paths, chunksize=_CHUNK)


def extract_weight_free_split(
    data,
    split: str,
    out: str | Path,
    descriptor: str | WeightFreeDescriptor = "thumbnail",
    ids: Sequence[str] | None = None,
    dtype: str = "float32",
    shard_size: int = 50_000,
    workers: int = 1,
    skip_bad: bool = False,
    progress: bool = True,
) -> EmbeddingStore:
    """Describe every image of `split` (or only `ids`, in that order) with the weight-free
    `descriptor` into the embedding store `out`; returns the finished store.

    The store's meta names the descriptor and its settings (`descriptor`, `settings`, `split`),
    where a model's store names its checkpoint. Resumable as `lmkcomp extract` is: finished
    shards are kept. `workers` > 1 decodes in that many processes; the rows do not depend on it.
    An unreadable image raises ImageLoadError naming it, or with `skip_bad` gets an all-zero
    row listed in the store's `skipped`.
    """
    if isinstance(descriptor, str):
        descriptor = create_weight_free_descriptor(descriptor)
    workers = positive_int("workers", workers)
    ids = data.split_ids(split) if ids is None else list(ids)
    meta = {"descriptor": descriptor.name, "settings": descriptor.settings(), "split": split}
    writer = EmbeddingWriter(out, ids, descriptor.dim, dtype=dtype, shard_size=shard_size, meta=meta,
                             command=f"lmkcomp extract --descriptor {descriptor.name}")
    pending = writer.pending_shards()
    with (tqdm(total=sum(rows.stop - rows.start for _, rows in pending), desc=f"{descriptor.name} {split}",
               unit="img", disable=not progress) as bar,
          # spawned, not forked: a fork of a process whose OpenCV threads run can deadlock
          process_pool(workers, _start_worker, (descriptor,), mp_context=multiprocessing.get_context("spawn"))
          if workers > 1 and pending else nullcontext() as pool):
        for k, rows in pending:
            paths = [str(data.image_path(split, image_id)) for image_id in ids[rows]]
            shard = np.zeros((len(paths), descriptor.dim), dtype=np.float32)
            skipped = []
            for row, (path, (vector, reason)) in enumerate(zip(paths, _rows(pool, descriptor, paths))):
                bar.update(1)
                if vector is not None:
                    shard[row] = vector
                elif skip_bad:
                    log.warning("%s: cannot load image: %s; stored as a zero row", path, reason)
                    skipped.append((row, reason))
                else:
                    raise ImageLoadError(path, reason)
            writer.write_shard(k, shard, skipped)
    writer.finish()
    return EmbeddingStore(out)
