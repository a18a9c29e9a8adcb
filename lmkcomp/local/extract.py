"""Extracting the local features of a whole split into a `LocalFeatureStore`.

Images are decoded at full resolution (the extractor downscales if it is set to) and their
features land in the store in id order. The work is cut into the store's shards: a finished
shard is on disk for good, so an interrupted run, started again with the same arguments,
computes only the shards still missing.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from tqdm import tqdm

from lmkcomp.checks import positive_int
from lmkcomp.data.images import load_image_rgb
from lmkcomp.data.layout import LandmarkData
from lmkcomp.errors import ImageLoadError, UserInputError
from lmkcomp.executors import Executor, Resources
from lmkcomp.local.extractors import LocalExtractor, create_local_extractor
from lmkcomp.local.record import LocalFeatures
from lmkcomp.local.store import DESCRIPTOR_DTYPE, LocalFeatureStore, LocalFeatureWriter
from lmkcomp.workers import one_thread_each, process_pool

log = logging.getLogger(__name__)

# Images per task sent to a worker: large enough to amortise the inter-process round trip
# (a few ms), small enough to keep every worker busy until the end of a shard.
_CHUNK = 8


def _extract_file(extractor: LocalExtractor, path: str) -> tuple[LocalFeatures | None, str | None]:
    """`(features, None)` for a readable image, `(None, reason)` for one that cannot be loaded.

    The reason travels back instead of the exception because ImageLoadError, whose
    constructor takes two arguments, does not survive pickling between processes.
    """
    try:
        image = load_image_rgb(path)
    except ImageLoadError as exc:
        return None, exc.reason
    features = extractor.extract(image)
    # The store keeps float16 descriptors anyway; casting here halves what a worker sends back
    # and what a shard holds in memory. The image's size is recorded whatever the extractor.
    height, width = image.shape[:2]
    return LocalFeatures(features.locations, features.descriptors.astype(DESCRIPTOR_DTYPE),
                         features.scales, features.scores, (width, height)), None


# The extractor of a pool process, set once by `_start_worker`: each chunk then carries only
# image paths, and an extractor that loads a model on first use (delf-torch) loads it once per
# process rather than once per chunk. Set only in pool processes, never in the caller's.
_worker_extractor: LocalExtractor | None = None


def _start_worker(extractor: LocalExtractor) -> None:
    global _worker_extractor
    one_thread_each()
    _worker_extractor = extractor


def _extract_in_worker(path: str) -> tuple[LocalFeatures | None, str | None]:
    return _extract_file(_worker_extractor, path)


def _results(pool: ProcessPoolExecutor | None, extractor: LocalExtractor,
             paths: Sequence[str]) -> Iterator[tuple[LocalFeatures | None, str | None]]:
    if pool is None:
        return (_extract_file(extractor, path) for path in paths)
    return pool.map(_extract_in_worker, paths, chunksize=_CHUNK)


def _stored_records(extractor: LocalExtractor, paths: Sequence[str],
                    results: Iterable[tuple[LocalFeatures | None, str | None]],
                    skip_bad: bool) -> Iterator[tuple[LocalFeatures, str | None]]:
    """What a shard stores for each of `paths` (`results` are `_extract_file`'s for them):
    `(features, None)`, or for an image that cannot be loaded ImageLoadError, or with `skip_bad`
    a warning and `(no features, reason)`."""
    for path, (features, reason) in zip(paths, results):
        if features is None:
            if not skip_bad:
                raise ImageLoadError(path, reason)
            log.warning("%s: cannot load image: %s; stored with no local features", path, reason)
            features = LocalFeatures.empty(extractor.dim, DESCRIPTOR_DTYPE)
        yield features, reason


def _worker_pool(workers: int, extractor: LocalExtractor) -> ProcessPoolExecutor:
    # Spawned, not forked: a child forked after the caller has started torch's or OpenCV's
    # thread pools (delf-torch loads its model in the caller to learn its dimension) can
    # deadlock on its first parallel call; `extract-local --workers 2` with delf-torch hung.
    return process_pool(workers, _start_worker, (extractor,), mp_context=multiprocessing.get_context("spawn"))


def extractor_uses_gpu(extractor: LocalExtractor) -> bool:
    """Whether `extractor` is set to run on a GPU (a `device` of cuda or cuda:N), so that each of
    its tasks asks the executor for one. ("auto" asks for none: on Ray it would then see none.)"""
    return str(getattr(extractor, "device", "cpu")).startswith("cuda")


@dataclass(frozen=True)
class _ShardTask:
    """One shard of a local-feature store to extract: its number and its images' ids."""

    shard: int
    ids: list[str]


@dataclass(frozen=True)
class _ShardExtraction:
    """A worker's context, made once per worker (not once a shard): the extractor (a model-backed
    one loads its weights on first use), the dataset, the skip policy and the writer of the store
    the driver began (reopened: its id list memory-mapped, not read into a list)."""

    extractor: LocalExtractor
    data: LandmarkData
    split: str
    skip_bad: bool
    writer: LocalFeatureWriter


def _open_shard_extraction(extractor: LocalExtractor, root: str, layout: str, split: str, skip_bad: bool,
                           store: str) -> _ShardExtraction:
    return _ShardExtraction(extractor, LandmarkData(root, layout), split, skip_bad, LocalFeatureWriter.reopen(store))


def _extract_shard(context: _ShardExtraction, task: _ShardTask) -> int:
    """Extract one shard in a worker and write it (atomically) into the store; its image count."""
    paths = [str(context.data.image_path(context.split, image_id)) for image_id in task.ids]
    records, skipped = [], []
    for position, (features, reason) in enumerate(
            _stored_records(context.extractor, paths, _results(None, context.extractor, paths), context.skip_bad)):
        if reason is not None:
            skipped.append((position, reason))
        records.append(features)
    context.writer.write_shard(task.shard, records, skipped)
    return len(records)


def extract_local_split(
    data: LandmarkData,
    split: str,
    out: str | Path,
    extractor: LocalExtractor,
    ids: Iterable[str] | None = None,
    shard_size: int = 1000,
    workers: int = 1,
    progress: bool = True,
    skip_bad: bool = False,
    command: str = "lmkcomp extract-local",
    executor: Executor | None = None,
) -> LocalFeatureStore:
    """Extract the local features of `ids` (default: every image of `split`) into `out`.

    Resumable: shards already in `out` (same ids, extractor method, dim and settings) are
    kept and the others computed. `workers` > 1 extracts in that many processes. An image
    that cannot be loaded (missing, empty, not a regular file, corrupt) raises ImageLoadError
    naming the file, or with `skip_bad` is stored with no features, logged as a warning,
    counted by the progress bar and listed in the store's `skipped`. `command` is what the
    store names as the command that finishes it when a reader finds it unfinished.
    With an `executor` (`lmkcomp.executors`: a Ray cluster, say), each shard is a task that
    extracts its images and writes the shard itself, on whichever worker runs it, and the store
    is the same, byte for byte; without one, `workers` processes share the images of each shard
    (finer-grained, so that a small split keeps every worker busy) and this process writes it.
    Returns the finished store.
    """
    workers = positive_int("workers", workers)
    ids = data.split_ids(split) if ids is None else list(ids)
    meta = {"split": split, "settings": extractor.settings()}
    writer = LocalFeatureWriter(out, ids, extractor.dim, extractor.method, meta=meta, shard_size=shard_size,
                                command=command)
    pending = writer.pending_shards()
    if executor is not None:
        # Absolute folders: a worker elsewhere (a Ray node) does not share this process's directory.
        setup = functools.partial(_open_shard_extraction, extractor, str(data.root.resolve()), data.layout.name,
                                  split, skip_bad, str(Path(out).resolve()))
        tasks = [_ShardTask(k, ids[rows]) for k, rows in pending]
        executor.run(setup, _extract_shard, tasks, sizes=[len(task.ids) for task in tasks],
                     desc=f"local features {split}", unit="img",
                     resources=Resources(gpus=1.0 if extractor_uses_gpu(extractor) else 0.0), progress=progress)
        writer.finish()
        return LocalFeatureStore(out)
    skipped_count = 0
    total = sum(rows.stop - rows.start for _, rows in pending)
    with (tqdm(total=total, desc=f"local features {split}", unit="img", disable=not progress) as bar,
          _worker_pool(workers, extractor) if workers > 1 and pending else nullcontext() as pool):
        for k, rows in pending:
            paths = [str(data.image_path(split, image_id)) for image_id in ids[rows]]
            records, skipped = [], []
            for position, (features, reason) in enumerate(
                    _stored_records(extractor, paths, _results(pool, extractor, paths), skip_bad)):
                if reason is not None:
                    skipped.append((position, reason))
                    skipped_count += 1
                    bar.set_postfix(skipped=skipped_count)
                records.append(features)
                bar.update(1)
            writer.write_shard(k, records, skipped)
    writer.finish()
    return LocalFeatureStore(out)


def store_extractor(store: LocalFeatureStore) -> LocalExtractor:
    """The local extractor that wrote `store`, rebuilt from the settings in its meta (to time
    it, or to extract more images as it did): `create_local_extractor(method, **settings)`."""
    options = {k: v for k, v in (store.meta.get("settings") or {}).items() if k != "method"}
    if "scales" in options:
        options["scales"] = tuple(options["scales"])
    try:
        return create_local_extractor(store.method, **options)
    except TypeError as exc:
        raise UserInputError(f"{store.directory}: cannot rebuild its {store.method} extractor: {exc}") from None
