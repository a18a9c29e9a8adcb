"""Embedding images with a trained model: batched, aspect-preserving, multi-scale and flip TTA.

Scales and flips are combined on the pooled backbone features by the generalised (power) mean
with the model's GeM exponent p, before the neck, the way GeM pools space: for p = 1 (average
pooling) it is the plain mean. The neck's embedding is then L2-normalised.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from lmkcomp.data.dataset import SkippedImage, checked_batches, collate_skipping
from lmkcomp.devices import parse_device, resolve_device
from lmkcomp.executors import Executor, Resources
from lmkcomp.models.pooling import power_mean
from lmkcomp.train.samplers import BatchItem

DEFAULT_SCALES = (0.7071, 1.0, 1.4142)


def autocast_context(device: torch.device, amp: str):
    """torch.autocast for "bf16" / "fp16", a no-op context for "none"."""
    if amp == "none":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def _rescale(images: torch.Tensor, scale: float) -> torch.Tensor:
    if scale == 1.0:
        return images
    height, width = images.shape[-2:]
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=scale < 1.0)


@torch.no_grad()
def embed_tensor(model, images: torch.Tensor, scales: Sequence[float] = (1.0,), flip: bool = False) -> torch.Tensor:
    """L2-normalised embeddings of a batch, combining scales (and flips) by the pooling's power mean."""
    pooled = []
    for scale in scales:
        scaled = _rescale(images, scale)
        pooled.append(model.pool_features(scaled).float())
        if flip:
            pooled.append(model.pool_features(torch.flip(scaled, dims=(-1,))).float())
    return model.embed_pooled(power_mean(pooled, model.pooling_p)).float()


def embed_dataset(
    model,
    dataset,
    batches: Sequence[Sequence[BatchItem]],
    device: torch.device,
    amp: str = "none",
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    workers: int = 0,
    channels_last: bool = False,
    progress: bool = True,
    desc: str = "embed",
    on_skip: Callable[[SkippedImage], None] | None = None,
    dim: int | None = None,
) -> np.ndarray:
    """Embed every sample named in `batches` (each batch one size); rows in dataset order.

    Samples the dataset skips (unreadable images with ``on_error="skip"``) get all-zero rows,
    are counted in the progress bar's postfix and passed to `on_skip`, never silently
    dropped. When every sample is skipped, the rows are `dim` zeros (ValueError without it).
    """
    model.eval()
    total = sum(len(batch) for batch in batches)
    out: np.ndarray | None = None
    skipped = 0
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=workers, collate_fn=collate_skipping)
    bar = tqdm(total=total, desc=desc, unit="img", disable=not progress)
    for batch in checked_batches(loader, dataset.on_error):
        skipped += len(batch["skipped"])
        if on_skip is not None:
            for image in batch["skipped"]:
                on_skip(image)
        if batch["image"] is not None:
            images = batch["image"].to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast_context(device, amp):
                embeddings = embed_tensor(model, images, scales, flip).cpu().numpy()
            if out is None:
                out = np.zeros((len(dataset), embeddings.shape[1]), dtype=np.float32)
            out[batch["index"].numpy()] = embeddings
        bar.update(len(batch["skipped"]) + (0 if batch["image"] is None else len(batch["index"])))
        if skipped:
            bar.set_postfix(skipped=skipped)
    bar.close()
    if out is None:
        if dim is None:
            raise ValueError("no image could be embedded")
        out = np.zeros((len(dataset), dim), dtype=np.float32)
    return out


@dataclass(frozen=True)
class ExtractSettings:
    """Every setting of an extraction that a row depends on, besides the model."""

    scales: tuple[float, ...]
    flip: bool
    image_size: int
    batch_size: int
    amp: str
    on_error: str
    #: torch's CPU threads while embedding (None: the process's setting). On the CPU the rows
    #: depend on it in their last bits: oneDNN splits a convolution's sums by thread count.
    threads: int | None = None


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """torch's intra-op CPU threads set to `count` inside the block (None: left as they are)."""
    if count is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class ShardExtractor:
    """Embeds shards of a split into an embedding store: the model on its device, the dataset
    and the store's writer, made once and used for every shard.

    A shard is embedded the same way wherever it runs: its images' sizes are read, bucketed
    and cut into batches within the shard (`assign_buckets`, `ordered_batches`), so its rows do
    not depend on the other shards, on the order shards are done or on the process doing them
    (on the CPU: given the same `ExtractSettings.threads`).
    """

    def __init__(self, model, config, device: torch.device, data, split: str, writer, settings: ExtractSettings):
        self.model = model.to(device)
        self.config = config
        self.device = device
        self.data = data
        self.split = split
        self.writer = writer
        self.settings = settings

    def extract(self, shard: int, rows: slice, loader_workers: int = 0, progress: bool = False) -> int:
        """Embed the images of store rows `rows` (shard `shard`), with `loader_workers`
        DataLoader processes, and write the shard; return its number of rows."""
        from lmkcomp.train.data import BucketedImageDataset, image_sizes
        from lmkcomp.train.samplers import assign_buckets, ordered_batches

        settings = self.settings
        shard_ids = self.writer.ids[rows]
        dataset = BucketedImageDataset(self.data, self.split, shard_ids, augment="none",
                                       max_side=self.config.data.max_side, on_error=settings.on_error)
        buckets = assign_buckets(image_sizes(self.data, self.split, shard_ids, progress=progress,
                                             on_error=settings.on_error))
        skipped: list[SkippedImage] = []
        with torch_threads(settings.threads):
            embeddings = embed_dataset(
                self.model, dataset, ordered_batches(buckets, settings.batch_size, settings.image_size), self.device,
                amp=settings.amp, scales=settings.scales, flip=settings.flip, workers=loader_workers,
                progress=progress, desc=f"extract {self.split} shard {shard}", on_skip=skipped.append,
                dim=self.config.model.embedding_size,
            )
        self.writer.write_shard(shard, embeddings, [(image.index, image.reason) for image in skipped])
        return len(shard_ids)


def open_shard_extractor(checkpoint: str, root: str, layout: str, split: str, store: str, settings: ExtractSettings,
                         device: str) -> ShardExtractor:
    """A worker's extractor (an executor's setup): the checkpoint loaded once, on `device` of
    the worker's node, and the writer of the store the driver created at `store`. Paths are
    absolute, since a worker may run in another directory."""
    from lmkcomp.data.layout import LandmarkData
    from lmkcomp.features.store import EmbeddingWriter
    from lmkcomp.train.checkpoint import load_trained_model

    torch_device = resolve_device(device, "--device")
    model, config, _ = load_trained_model(checkpoint)
    return ShardExtractor(model, config, torch_device, LandmarkData(root, layout), split,
                          EmbeddingWriter.reopen(store), settings)


def _extract_shard(extractor: ShardExtractor, task: tuple[int, slice]) -> int:
    shard, rows = task
    return extractor.extract(shard, rows)


def extract_split(
    checkpoint: str | Path,
    data,
    split: str,
    out: str | Path,
    scales: Sequence[float] = DEFAULT_SCALES,
    flip: bool = True,
    dtype: str = "float16",
    image_size: int | None = None,
    batch_size: int = 64,
    device: str = "auto",
    amp: str = "none",
    workers: int = 2,
    shard_size: int = 50_000,
    on_error: str = "raise",
    progress: bool = True,
    ids: Sequence[str] | None = None,
    executor: Executor | None = None,
    threads: int | None = None,
):
    """Embed every image of `split` (or only `ids`, in that order) into an id-aligned, sharded
    store at `out` (resumable: finished shards are kept, the rest are computed).

    Without `executor`, the shards are embedded one after the other in this process, images
    loaded by `workers` DataLoader processes. With one, each pending shard is a task (shard
    number and rows): every worker loads the checkpoint once and writes the shards it embeds
    (images loaded in the task's process); a task asks for a GPU when `device` is a CUDA one
    ("auto": a GPU when this machine has one; any other device is checked on the worker's
    node), else for `threads` CPUs.

    `threads` is torch's CPU threads while embedding: without an executor None keeps this
    process's (torch's default: this machine's cores); with one None means 1 per task. Every
    shard is embedded the same way either way (`ShardExtractor`), so the store is
    byte-identical whatever runs it, on the CPU for the same number of threads.

    An image that cannot be read raises ImageLoadError naming it, or with ``on_error="skip"``
    gets an all-zero row that the store's `skipped` lists with the reason.
    """
    from lmkcomp.config import from_dict
    from lmkcomp.features.store import EmbeddingStore, EmbeddingWriter
    from lmkcomp.train.checkpoint import load_checkpoint, load_trained_model
    from lmkcomp.train.config import TrainConfig

    # The device before the model, so that a missing GPU fails first: this machine's, unless
    # tasks name one, which each worker checks on its own node.
    if executor is None or device == "auto":
        torch_device = resolve_device(device, "--device")
    else:
        torch_device = parse_device(device, "--device")
    if executor is None:
        model, config, _ = load_trained_model(checkpoint)
    else:  # the driver only needs the settings: the workers load the weights
        config = from_dict(TrainConfig, load_checkpoint(checkpoint)["config"])
    if image_size is None:
        image_size = config.finetune_image_size if config.finetune_epochs else config.image_size
    ids = data.split_ids(split) if ids is None else list(ids)
    meta = {"checkpoint": str(checkpoint), "split": split, "scales": list(scales), "flip": flip,
            "image_size": image_size, "backbone": config.model.backbone}
    writer = EmbeddingWriter(out, ids, config.model.embedding_size, dtype=dtype, shard_size=shard_size, meta=meta,
                             command="lmkcomp extract")
    if executor is not None and threads is None:
        threads = 1
    settings = ExtractSettings(tuple(scales), flip, image_size, batch_size, amp, on_error, threads)
    pending = writer.pending_shards()
    if executor is None:
        extractor = ShardExtractor(model, config, torch_device, data, split, writer, settings)
        for shard, rows in pending:
            extractor.extract(shard, rows, loader_workers=workers, progress=progress)
    else:
        setup = functools.partial(open_shard_extractor, str(Path(checkpoint).resolve()), str(data.root.resolve()),
                                  data.layout.name, split, str(Path(out).resolve()), settings, str(torch_device))
        gpu = torch_device.type == "cuda"
        resources = Resources(cpus=1 if gpu else threads, gpus=1 if gpu else 0)
        executor.run(setup, _extract_shard, pending, sizes=[rows.stop - rows.start for _, rows in pending],
                     desc=f"extract {split}", unit="img", resources=resources, progress=progress)
    writer.finish()
    return EmbeddingStore(out)
