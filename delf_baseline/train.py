"""Training a `TorchDelf` on landmark labels, and fitting the PCA of its local descriptors.

`train_delf` minimises the cross-entropy of the attention-pooled logits over the training
landmarks (classes with at least `min_images` images; nothing is held out), with AdamW on
square `image_size` crops of the "soft" augmentation, and writes `out/delf.pt` after every
epoch. `fit_pca` learns the descriptor PCA that official DELF applies (mean + top principal
directions, no whitening) from the features of a sample of training images.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from delf_baseline.model import DEFAULT_ATTENTION_HIDDEN, DelfSettings, TorchDelf, extract_multiscale
from delf_baseline.pca import PcaProjection
from delf_baseline.savedmodel import OFFICIAL_SCALES
from lmkcomp.data.dataset import collate_skipping
from lmkcomp.data.images import load_image_rgb
from lmkcomp.data.layout import LandmarkData
from lmkcomp.errors import UserInputError
from lmkcomp.features.extract import autocast_context
from lmkcomp.train.checkpoint import save_checkpoint
from lmkcomp.train.data import BucketedImageDataset, read_labels, split_for_training
from lmkcomp.train.samplers import BucketBatchSampler

log = logging.getLogger(__name__)

#: file name of the checkpoint `train_delf` writes in its output folder
CHECKPOINT_NAME = "delf.pt"


@dataclass(frozen=True)
class DelfTrainResult:
    """Where the checkpoint is, and the mean training loss of each epoch (in order)."""

    checkpoint: Path
    epoch_losses: list[float]


def train_delf(data: LandmarkData, out: str | Path, backbone: str = "resnet50", epochs: int = 10,
               image_size: int = 320, batch_size: int = 32, lr: float = 1e-3, weight_decay: float = 1e-4,
               seed: int = 0, labels: str = "train_clean", min_images: int = 2,
               attention_hidden: int = DEFAULT_ATTENTION_HIDDEN, device: str = "cpu", amp: str = "none",
               workers: int = 0) -> DelfTrainResult:
    """Train a DELF from random weights (see the module docstring); return its result.

    `labels` is what `read_labels` takes ("train", "train_clean" or a CSV path). The
    checkpoint holds `model` (state dict), `delf` (the `DelfSettings`), `landmark_ids`
    (class index -> landmark id), `epoch` (epochs done) and `settings` (these arguments).
    """
    torch.manual_seed(seed)
    split = split_for_training(read_labels(data, labels), min_images, val_fraction=0.0, seed=seed)
    settings = DelfSettings(backbone=backbone, num_classes=len(split.landmark_ids), attention_hidden=attention_hidden)
    model = TorchDelf(settings).to(device).train()
    # one square bucket: DELF trains on fixed-size crops
    sampler = BucketBatchSampler(np.zeros(len(split.train_ids), np.int64), split.train_classes, batch_size,
                                 image_size, aspects=(1.0,), seed=seed, drop_last=False)
    dataset = BucketedImageDataset(data, "train", split.train_ids, split.train_classes, augment="soft", seed=seed)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate_skipping)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    run_settings = {"backbone": backbone, "epochs": epochs, "image_size": image_size, "batch_size": batch_size,
                    "lr": lr, "weight_decay": weight_decay, "seed": seed, "labels": labels,
                    "min_images": min_images, "amp": amp}
    checkpoint = Path(out) / CHECKPOINT_NAME
    torch_device = torch.device(device)
    losses: list[float] = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        total, count = 0.0, 0
        for batch in loader:
            images = batch["image"].to(torch_device)
            targets = batch["label"].to(torch_device)
            with autocast_context(torch_device, amp):
                logits = model(images)["logits"]
            loss = F.cross_entropy(logits.float(), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(targets)
            count += len(targets)
        losses.append(total / max(count, 1))
        log.info("epoch %d/%d: loss %.4f", epoch + 1, epochs, losses[-1])
        save_checkpoint(checkpoint, {"model": model.state_dict(), "delf": asdict(settings),
                                     "landmark_ids": split.landmark_ids, "epoch": epoch + 1,
                                     "settings": run_settings})
    return DelfTrainResult(checkpoint, losses)


def fit_pca(model: TorchDelf, data: LandmarkData, ids: Sequence[str], dim: int,
            scales: Sequence[float] = OFFICIAL_SCALES, max_features: int = 1000, split: str = "train") -> PcaProjection:
    """The PCA of the L2-normalised descriptors `extract_multiscale` gives on images `ids`.

    `mean` is the descriptors' mean m; `projection` holds the `dim` right singular vectors of
    the centred descriptor matrix X - m with the largest singular values (strongest first),
    one per row. Raises UserInputError when fewer than `dim` directions exist (rank bound
    min(N, D) of N descriptors of dimension D).
    """
    model.eval()
    descriptors = np.concatenate([
        extract_multiscale(model, load_image_rgb(data.image_path(split, image_id)), scales, max_features).descriptors
        for image_id in ids
    ]).astype(np.float64)
    if not 1 <= dim <= min(descriptors.shape):
        raise UserInputError(f"PCA dim {dim} is not in [1, {min(descriptors.shape)}] for "
                             f"{descriptors.shape[0]} descriptors of dimension {descriptors.shape[1]}")
    mean = descriptors.mean(axis=0)
    _, _, directions = np.linalg.svd(descriptors - mean, full_matrices=False)
    return PcaProjection(mean, directions[:dim])


def save_pca(pca: PcaProjection, path: str | Path) -> None:
    """Write `pca` as the `.npz` (`mean`, `projection`) that `delf_baseline.pca.load_pca` reads."""
    np.savez(path, mean=pca.mean, projection=pca.projection)
