"""Embedding images with a trained model: batched, aspect-preserving, multi-scale and flip TTA.

Scales and flips are combined on the pooled backbone features by the generalised (power) mean
with the model's GeM exponent p, before the neck, the way GeM pools space: for p = 1 (average
pooling) it is the plain mean. The neck's embedding is then L2-normalised.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from lmkcomp.data.dataset import SkippedImage, checked_batches, collate_skipping
from lmkcomp.devices import resolve_device
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
):
    """Embed every image of `split` (or only `ids`, in that order) into an id-aligned, sharded
    store at `out` (resumable: finished shards are kept, the rest are computed).

    An image that cannot be read raises ImageLoadError naming it, or with ``on_error="skip"``
    gets an all-zero row that the store's `skipped` lists with the reason.
    """
    from lmkcomp.features.store import EmbeddingStore, EmbeddingWriter
    from lmkcomp.train.checkpoint import load_trained_model
    from lmkcomp.train.data import BucketedImageDataset, image_sizes
    from lmkcomp.train.samplers import assign_buckets, ordered_batches

    torch_device = resolve_device(device, "--device")  # before the model: a missing GPU fails first
    model, config, _ = load_trained_model(checkpoint)
    model = model.to(torch_device)
    if image_size is None:
        image_size = config.finetune_image_size if config.finetune_epochs else config.image_size
    ids = data.split_ids(split) if ids is None else list(ids)
    meta = {"checkpoint": str(checkpoint), "split": split, "scales": list(scales), "flip": flip,
            "image_size": image_size, "backbone": config.model.backbone}
    writer = EmbeddingWriter(out, ids, config.model.embedding_size, dtype=dtype, shard_size=shard_size, meta=meta,
                             command="lmkcomp extract")
    for shard, rows in writer.pending_shards():
        shard_ids = ids[rows]
        dataset = BucketedImageDataset(data, split, shard_ids, augment="none", max_side=config.data.max_side,
                                       on_error=on_error)
        buckets = assign_buckets(image_sizes(data, split, shard_ids, progress=progress, on_error=on_error))
        skipped: list[SkippedImage] = []
        embeddings = embed_dataset(
            model, dataset, ordered_batches(buckets, batch_size, image_size), torch_device, amp=amp, scales=scales,
            flip=flip, workers=workers, progress=progress, desc=f"extract {split} shard {shard}",
            on_skip=skipped.append, dim=config.model.embedding_size,
        )
        writer.write_shard(shard, embeddings, [(image.index, image.reason) for image in skipped])
    writer.finish()
    return EmbeddingStore(out)
