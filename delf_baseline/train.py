"""Training a `TorchDelf` on landmark labels (resumable), and fitting the PCA of its local descriptors.

`DelfTrainer` minimises the cross-entropy of the attention-pooled logits over the training
landmarks: classes with at least `min_images` images, of which `split_for_training` holds out
about `val_fraction` of the images of classes with at least 3 as validation images. AdamW,
one learning-rate update per optimizer step: linear warm-up over `warmup_epochs`, then cosine
annealing to `lr * min_lr_ratio` (the descriptor trainer's schedule). Batches are square
`image_size` crops of the "soft" augmentation, in the deterministic order of a
`BucketBatchSampler` (a pure function of seed and epoch), each sample's augmentation seeded
from (seed, epoch, index).

After every epoch, and every `checkpoint_every_steps` optimizer steps, `out/delf.pt` is
written atomically: model, optimizer, scheduler, grad-scaler and RNG states, the position
(epoch, next batch), the running loss sums of the epoch, and the metrics of the finished
epochs. `resume` continues from it and ends with the weights an uninterrupted run ends with,
bit for bit (same device, torch thread count and software; the number of data-loading
workers does not matter, as every sample's augmentation has its own seed).

Per epoch, validation gives the cross-entropy and top-1 accuracy of the attention-pooled
classifier on the held-out images (resized to `image_size` squares, no augmentation).
`out/metrics.csv` is rewritten atomically from the checkpoint's metrics each time, so it
always lists exactly the epochs the checkpoint holds.

`fit_pca` learns the descriptor PCA that official DELF applies (mean + top principal
directions, no whitening) from the features of a sample of training images.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import ClassVar, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from delf_baseline.model import (DEFAULT_ATTENTION_HIDDEN, DelfSettings, TorchDelf, extract_multiscale,
                                 load_delf)
from delf_baseline.pca import PcaProjection
from delf_baseline.savedmodel import OFFICIAL_SCALES
from lmkcomp.data.dataset import collate_skipping
from lmkcomp.data.images import load_image_rgb
from lmkcomp.data.layout import LandmarkData
from lmkcomp.devices import resolve_device
from lmkcomp.errors import UserInputError
from lmkcomp.features.extract import autocast_context
from lmkcomp.features.whitening import fit_pca_whitening
from lmkcomp.fileio import atomic_write, atomic_write_bytes
from lmkcomp.models.weights import LoadReport, load_backbone_weights
from lmkcomp.train.checkpoint import load_checkpoint, restore_rng_states, rng_states, save_checkpoint
from lmkcomp.train.data import BucketedImageDataset, TrainingSplit, read_labels, split_for_training
from lmkcomp.train.samplers import BucketBatchSampler, ordered_batches
from lmkcomp.train.config import OptimConfig
from lmkcomp.train.optim import create_scheduler

log = logging.getLogger(__name__)

#: file name of the checkpoint `DelfTrainer` writes in its output folder
CHECKPOINT_NAME = "delf.pt"
METRICS_CSV = "metrics.csv"
METRIC_COLUMNS = ["epoch", "train_loss", "val_loss", "val_accuracy", "lr", "seconds", "images_per_s"]
AMP_MODES = ("none", "bf16", "fp16")
#: DELF trains on square crops: one aspect bucket
SQUARE = (1.0,)


@dataclass(frozen=True)
class DelfTrainConfig:
    """Everything a DELF training run depends on; checked on construction (UserInputError).

    `labels` is what `read_labels` takes ("train", "train_clean" or a train_clean-format CSV).
    `weights` is a local checkpoint of the backbone's ImageNet (or other) weights, or an
    ``lmkcomp train`` checkpoint whose backbone is taken (e.g. the `cpu-v1` pretraining), loaded
    non-strictly into the truncated ResNet (its `layer4` and `fc` are reported unused);
    None trains from random weights. `RUNTIME_FIELDS` may change when a run is resumed; the
    other fields may not.
    """

    data: str
    layout: str = "gldv2"
    labels: str = "train_clean"
    min_images: int = 2
    val_fraction: float = 0.1
    backbone: str = "resnet50"
    attention_hidden: int = DEFAULT_ATTENTION_HIDDEN
    weights: str | None = None
    epochs: int = 10
    image_size: int = 320
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5
    min_lr_ratio: float = 0.01
    amp: str = "none"
    seed: int = 0
    checkpoint_every_steps: int = 0
    device: str = "cpu"
    workers: int = 0

    RUNTIME_FIELDS: ClassVar[tuple[str, ...]] = ("checkpoint_every_steps", "device", "workers")

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", str(self.data))
        if self.weights is not None:
            object.__setattr__(self, "weights", str(self.weights))
        positive = {"epochs": self.epochs, "image_size": self.image_size, "batch_size": self.batch_size,
                    "min_images": self.min_images, "attention_hidden": self.attention_hidden}
        for name, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserInputError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise UserInputError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not (self.lr > 0 and self.weight_decay >= 0 and self.warmup_epochs >= 0 and 0 <= self.min_lr_ratio <= 1):
            raise UserInputError("lr must be > 0, weight_decay and warmup_epochs >= 0, min_lr_ratio in [0, 1]")
        if self.amp not in AMP_MODES:
            raise UserInputError(f"amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}")
        if self.checkpoint_every_steps < 0 or self.workers < 0:
            raise UserInputError("checkpoint_every_steps and workers must be >= 0")

    def learned_settings(self) -> dict:
        """The fields a resumed run must share with the run it continues."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self.RUNTIME_FIELDS}


@dataclass
class DelfTrainingState:
    """Where training stands: epochs done, next batch of the current epoch, optimizer steps
    done, and the running sums of the current epoch (loss weighted by images, images, seconds)."""

    epoch: int = 0
    batch: int = 0
    optimizer_step: int = 0
    loss_sum: float = 0.0
    images: int = 0
    seconds: float = 0.0


class DelfTrainer:
    """Builds the run from a `DelfTrainConfig` and the folder `out`, then `fit()`s.

    A folder that already holds `delf.pt` is refused unless `resume`, which requires the
    checkpoint's learned settings (`DelfTrainConfig.learned_settings`) to equal the config's.
    """

    def __init__(self, config: DelfTrainConfig, out: str | Path, resume: bool = False, progress: bool = True):
        self.config = config
        self.out = Path(out)
        self.checkpoint_path = self.out / CHECKPOINT_NAME
        self.progress = progress
        self.device = resolve_device(config.device)
        checkpoint = self._existing_checkpoint(resume)
        torch.manual_seed(config.seed)

        data = LandmarkData(config.data, config.layout)
        labels = read_labels(data, config.labels)
        unknown = sorted(set(labels["id"]) - set(data.split_ids("train")))
        if unknown:
            more = f" and {len(unknown) - 1} more" if len(unknown) > 1 else ""
            raise UserInputError(f"labels {config.labels!r}: image {unknown[0]}{more} not in the train split "
                                 f"({data.file('train')})")
        self.split: TrainingSplit = split_for_training(labels, config.min_images, config.val_fraction, config.seed)
        self.train_images = BucketedImageDataset(data, "train", self.split.train_ids, self.split.train_classes,
                                                 augment="soft", seed=config.seed)
        self.val_images = BucketedImageDataset(data, "train", self.split.val_ids, self.split.val_classes,
                                               augment="none", seed=config.seed)
        self.sampler = BucketBatchSampler(np.zeros(len(self.split.train_ids), np.int64), self.split.train_classes,
                                          config.batch_size, config.image_size, aspects=SQUARE, seed=config.seed,
                                          drop_last=False)

        self.settings = DelfSettings(backbone=config.backbone, num_classes=len(self.split.landmark_ids),
                                     attention_hidden=config.attention_hidden)
        self.model = TorchDelf(self.settings)
        self.weights_report: LoadReport | None = None
        if config.weights is not None and checkpoint is None:
            self.weights_report = load_backbone_weights(self.model.backbone, config.weights)
            if not self.weights_report.loaded:
                raise UserInputError(f"{config.weights}: no tensor matches backbone {config.backbone!r} "
                                     f"({self.weights_report.summary()})")
        self.model.to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.steps_per_epoch = len(self.sampler.global_batches(0))
        warmup = round(config.warmup_epochs * self.steps_per_epoch)
        # the descriptor trainer's warm-up + cosine schedule (no other OptimConfig field is read)
        schedule = OptimConfig(schedule="cosine", min_lr_ratio=config.min_lr_ratio)
        self.scheduler = create_scheduler(self.optimizer, schedule, warmup, config.epochs * self.steps_per_epoch)
        fp16_on_gpu = config.amp == "fp16" and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=fp16_on_gpu)
        self.state = DelfTrainingState()
        self.history: list[dict] = []
        if checkpoint is not None:
            self._restore(checkpoint)

    # ---------------------------------------------------------------- checkpoints

    def _existing_checkpoint(self, resume: bool) -> dict | None:
        if not resume:
            if self.checkpoint_path.exists():
                raise UserInputError(f"{self.out} already holds a DELF training run; pass --resume or choose "
                                     "another folder")
            return None
        if not self.checkpoint_path.is_file():
            raise UserInputError(f"{self.checkpoint_path}: nothing to resume (no checkpoint in the run folder)")
        checkpoint = load_checkpoint(self.checkpoint_path)
        if "state" not in checkpoint or "config" not in checkpoint:
            raise UserInputError(f"{self.checkpoint_path}: holds weights only, no training state to resume")
        saved = {k: v for k, v in checkpoint["config"].items() if k not in DelfTrainConfig.RUNTIME_FIELDS}
        current = self.config.learned_settings()
        changed = sorted(k for k in current.keys() | saved.keys() if saved.get(k) != current.get(k))
        if changed:
            key = changed[0]
            raise UserInputError(f"{self.checkpoint_path}: the run was started with {key}={saved.get(key)!r}, "
                                 f"not {current.get(key)!r}; resume with the same settings")
        return checkpoint

    def _payload(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "delf": asdict(self.settings),
            "landmark_ids": list(self.split.landmark_ids),
            "epoch": self.state.epoch,
            "config": asdict(self.config),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "state": asdict(self.state),
            "rng": rng_states(),
            "history": [dict(row) for row in self.history],
        }

    def _save(self) -> None:
        save_checkpoint(self.checkpoint_path, self._payload())
        with atomic_write(self.out / METRICS_CSV, newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=METRIC_COLUMNS)
            writer.writeheader()
            writer.writerows(self.history)

    def _restore(self, checkpoint: dict) -> None:
        if list(checkpoint["landmark_ids"]) != list(self.split.landmark_ids):
            raise UserInputError(f"{self.checkpoint_path}: the training labels changed since the checkpoint "
                                 "was written; cannot resume")
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        self.state = DelfTrainingState(**checkpoint["state"])
        self.history = [dict(row) for row in checkpoint["history"]]
        restore_rng_states(checkpoint["rng"])

    # ---------------------------------------------------------------- training

    def fit(self) -> list[dict]:
        """Train to the last epoch (from the resumed position); return every epoch's metrics row."""
        self.out.mkdir(parents=True, exist_ok=True)
        while self.state.epoch < self.config.epochs:
            self._train_epoch()
            row = {"epoch": self.state.epoch + 1, "train_loss": self.state.loss_sum / max(self.state.images, 1),
                   "lr": self.scheduler.get_last_lr()[0], "seconds": self.state.seconds,
                   "images_per_s": self.state.images / max(self.state.seconds, 1e-9)}
            row.update(self.validate())
            self.history.append(row)
            self.state = DelfTrainingState(epoch=self.state.epoch + 1, optimizer_step=self.state.optimizer_step)
            self._save()
            log.info("epoch %d/%d: %s", row["epoch"], self.config.epochs, row)
        return list(self.history)

    def _train_epoch(self) -> None:
        config, state = self.config, self.state
        self.sampler.set_epoch(state.epoch, state.batch)
        loader = DataLoader(self.train_images, batch_sampler=self.sampler, num_workers=config.workers,
                            collate_fn=collate_skipping, pin_memory=self.device.type == "cuda")
        self.model.train()
        bar = tqdm(total=self.steps_per_epoch, initial=state.batch, unit="batch", disable=not self.progress,
                   desc=f"epoch {state.epoch + 1}/{config.epochs} {config.image_size}px")
        started = time.perf_counter() - state.seconds
        for batch_number, batch in enumerate(loader, start=state.batch):
            images = batch["image"].to(self.device, non_blocking=True)
            targets = batch["label"].to(self.device, non_blocking=True)
            with autocast_context(self.device, config.amp):
                logits = self.model(images)["logits"]
            loss = F.cross_entropy(logits.float(), targets)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            state.optimizer_step += 1
            state.batch = batch_number + 1
            state.loss_sum += float(loss.detach()) * len(targets)
            state.images += len(targets)
            state.seconds = time.perf_counter() - started
            if config.checkpoint_every_steps and state.optimizer_step % config.checkpoint_every_steps == 0:
                self._save()
            bar.update(1)
            bar.set_postfix(loss=f"{state.loss_sum / state.images:.3f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
        bar.close()

    @torch.no_grad()
    def validate(self) -> dict:
        """`val_loss` (mean cross-entropy) and `val_accuracy` (top-1) of the attention-pooled
        classifier on the held-out images; NaN for both when nothing is held out."""
        if not self.split.val_ids:
            return {"val_loss": math.nan, "val_accuracy": math.nan}
        batches = ordered_batches(np.zeros(len(self.split.val_ids), np.int64), self.config.batch_size,
                                  self.config.image_size, aspects=SQUARE)
        loader = DataLoader(self.val_images, batch_sampler=batches, num_workers=self.config.workers,
                            collate_fn=collate_skipping, pin_memory=self.device.type == "cuda")
        self.model.eval()
        loss_sum, correct, count = 0.0, 0, 0
        for batch in tqdm(loader, total=len(batches), desc="validate", unit="batch", disable=not self.progress):
            images = batch["image"].to(self.device, non_blocking=True)
            targets = batch["label"].to(self.device, non_blocking=True)
            with autocast_context(self.device, self.config.amp):
                logits = self.model(images)["logits"].float()
            loss_sum += float(F.cross_entropy(logits, targets, reduction="sum"))
            correct += int((logits.argmax(dim=1) == targets).sum())
            count += len(targets)
        return {"val_loss": loss_sum / count, "val_accuracy": correct / count}


# -------------------------------------------------------------------- PCA of the local descriptors


def fit_pca(model: TorchDelf, data: LandmarkData, ids: Sequence[str], dim: int,
            scales: Sequence[float] = OFFICIAL_SCALES, max_features: int = 1000, split: str = "train",
            progress: bool = False) -> PcaProjection:
    """The PCA of the L2-normalised descriptors `extract_multiscale` gives on images `ids`.

    `mean` is the descriptors' mean m; `projection` holds the `dim` eigenvectors of their
    covariance with the largest eigenvalues (strongest first, one per row, signs fixed as
    `fit_pca_whitening` fixes them), i.e. the top right singular vectors of X - m. Streams
    over images: memory is one image's descriptors plus a D x D matrix. Raises UserInputError
    when `dim` exceeds the number of directions N descriptors of dimension D can span,
    min(N - 1, D).
    """
    if not 1 <= dim <= model.feature_dim:
        raise UserInputError(f"PCA dim {dim} is not in [1, {model.feature_dim}] (the descriptor dimension)")
    model.eval()
    count = 0

    def descriptor_blocks() -> Iterator[np.ndarray]:
        nonlocal count
        for image_id in tqdm(ids, desc="PCA descriptors", unit="img", disable=not progress):
            image = load_image_rgb(data.image_path(split, image_id))
            descriptors = extract_multiscale(model, image, scales, max_features).descriptors
            count += len(descriptors)
            yield descriptors

    fitted = fit_pca_whitening(descriptor_blocks(), dim=dim, whiten=False)
    if dim > count - 1:
        raise UserInputError(f"PCA dim {dim} is above {count - 1}, the most directions {count} descriptors span; "
                             "use more images or a smaller dim")
    return PcaProjection(fitted.mean, fitted.projection)


def save_pca(pca: PcaProjection, path: str | Path) -> None:
    """Write `pca` atomically as the `.npz` (`mean`, `projection`) that `delf_baseline.pca.load_pca` reads."""
    _check_npz_name(path)
    buffer = io.BytesIO()
    np.savez(buffer, mean=pca.mean, projection=pca.projection)
    atomic_write_bytes(path, buffer.getvalue())


def _check_npz_name(path: str | Path) -> None:
    # load_pca tells the formats apart by the suffix
    if Path(path).suffix != ".npz":
        raise UserInputError(f"{path}: a PCA file must end in .npz")


def sample_ids(ids: Sequence[str], count: int, seed: int) -> list[str]:
    """`count` of `ids` drawn without replacement by a generator seeded with `seed`, in their
    original order (all of them when there are fewer)."""
    if count >= len(ids):
        return list(ids)
    chosen = np.sort(np.random.default_rng(seed).choice(len(ids), size=count, replace=False))
    return [ids[i] for i in chosen]


def fit_delf_pca(checkpoint: str | Path, data: LandmarkData, out: str | Path, dim: int = 40, images: int = 1000,
                 seed: int = 0, scales: Sequence[float] = OFFICIAL_SCALES, max_features: int = 1000,
                 device: str = "cpu", progress: bool = True) -> PcaProjection:
    """Fit the descriptor PCA of a trained DELF on `images` train images sampled with `seed`
    (`sample_ids`), with the extraction settings `scales` and `max_features`; save it to
    `out` (`.npz`) for the `delf-torch` extractor's `pca` option, and return it."""
    _check_npz_name(out)  # before the extraction, not after
    model, _ = load_delf(checkpoint, resolve_device(device, "--device"))
    ids = sample_ids(data.split_ids("train"), images, seed)
    pca = fit_pca(model, data, ids, dim, scales, max_features, progress=progress)
    save_pca(pca, out)
    return pca
