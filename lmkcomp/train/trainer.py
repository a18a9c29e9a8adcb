"""The training loop: GeM + margin-head descriptors on a GLDv2-layout dataset.

One process, or several under torchrun (DDP). Per epoch: bucketed, augmented batches; AMP,
gradient accumulation and clipping; cosine annealing with warm-up (per optimizer step); the
final `finetune_epochs` at a larger resolution with BatchNorm frozen; validation (kNN
mAP@100 and soft-voting GAP of held-out train images against the training images); an atomic
checkpoint that `resume` continues from exactly (model, optimizer, scheduler, scaler, RNG
states, and the position in the epoch's deterministic batch order).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from lmkcomp import metrics
from lmkcomp.config import from_dict, to_dict
from lmkcomp.data.dataset import collate_skipping
from lmkcomp.data.layout import LandmarkData
from lmkcomp.errors import UserInputError
from lmkcomp.features.extract import autocast_context, embed_dataset
from lmkcomp.models import class_weights_inverse_log, create_loss, create_model, freeze_batchnorm
from lmkcomp.recognition import soft_voting
from lmkcomp.search import exact_search
from lmkcomp.train import distributed
from lmkcomp.train.checkpoint import load_checkpoint, restore_rng_states, rng_states, save_checkpoint
from lmkcomp.train.config import TrainConfig
from lmkcomp.train.data import BucketedImageDataset, TrainingSplit, image_sizes, read_labels, split_for_training
from lmkcomp.train.samplers import BucketBatchSampler, assign_buckets, ordered_batches

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint-last.pt"
METRICS_CSV = "metrics.csv"
METRIC_COLUMNS = ["epoch", "phase", "image_size", "train_loss", "lr", "val_map@100", "val_gap", "seconds", "images_per_s"]


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class TrainingState:
    epoch: int = 0
    #: next global batch of `epoch` to train on
    batch: int = 0
    optimizer_step: int = 0


def _lr_lambda(warmup_steps: int, total_steps: int, min_ratio: float):
    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


class Trainer:
    """Builds everything from a `TrainConfig` and a run folder, then `fit()`s."""

    def __init__(self, config: TrainConfig, run_dir: str | Path, resume: bool = False, progress: bool = True):
        self.config = config
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.device = select_device(config.device)
        self.context = distributed.init_distributed(self.device.type)
        if self.context.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.context.local_rank)
        checkpoint = self._existing_checkpoint(resume)
        torch.manual_seed(config.seed)

        data = LandmarkData(config.data.root, config.data.layout)
        self.split = split_for_training(
            read_labels(data, config.data.labels), config.data.min_images_per_class, config.data.val_fraction, config.seed
        )
        self.buckets = self._buckets(data, self.split.train_ids)
        self.val_buckets = self._buckets(data, self.split.val_ids)
        common = dict(max_side=config.data.max_side, on_error=config.data.on_error, seed=config.seed)
        self.train_images = BucketedImageDataset(data, "train", self.split.train_ids, self.split.train_classes,
                                                 augment=config.augment, **common)
        self.eval_train_images = BucketedImageDataset(data, "train", self.split.train_ids, augment="none", **common)
        self.eval_val_images = BucketedImageDataset(data, "train", self.split.val_ids, augment="none", **common)

        counts = torch.as_tensor(self.split.class_counts)
        self.model = create_model(config.model, len(self.split.landmark_ids), class_counts=counts).to(self.device)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.criterion = create_loss(
            "ce", class_weights=class_weights_inverse_log(counts).to(self.device) if config.class_weights else None,
            label_smoothing=config.label_smoothing,
        )
        self.optimizer = self._optimizer()
        steps = [self._steps_in_epoch(epoch) for epoch in range(config.total_epochs)]
        warmup = int(round(config.optim.warmup_epochs * steps[0]))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _lr_lambda(warmup, sum(steps), config.optim.min_lr_ratio)
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.amp == "fp16" and self.device.type == "cuda")
        self.state = TrainingState()
        if checkpoint is not None:
            self._restore(checkpoint)
        self.network = self.model
        if self.context.enabled:
            # frozen batch-norm parameters in the fine-tune epochs receive no gradient
            self.network = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=config.finetune_epochs > 0,
            )
        if config.compile:
            self.network = torch.compile(self.network)

    # ---------------------------------------------------------------- setup helpers

    def _existing_checkpoint(self, resume: bool) -> dict | None:
        path = self.run_dir / CHECKPOINT
        if resume:
            if not path.is_file():
                raise UserInputError(f"{path}: nothing to resume (no checkpoint in the run folder)")
            checkpoint = load_checkpoint(path)
            saved = to_dict(from_dict(TrainConfig, checkpoint["config"]))
            current = to_dict(self.config)
            # where and how fast it runs may change between sessions; what it learns may not
            for runtime_key in ("device", "workers"):
                saved.pop(runtime_key)
                current.pop(runtime_key)
            if saved != current:
                raise UserInputError(f"{path}: the run was started with another config; resume with the same one")
            return checkpoint
        if path.exists():
            raise UserInputError(f"{self.run_dir} already holds a training run; pass --resume or choose another folder")
        return None

    def _buckets(self, data: LandmarkData, ids: list[str]) -> np.ndarray:
        if not self.config.aspect_buckets:
            return np.full(len(ids), 2)  # the square bucket
        cache = self.run_dir / "image_sizes.csv" if self.context.is_main else None
        return assign_buckets(image_sizes(data, "train", ids, cache, progress=self.progress and self.context.is_main))

    def _optimizer(self) -> torch.optim.Optimizer:
        optim = self.config.optim
        head = list(self.model.head.parameters())
        head_ids = {id(p) for p in head}
        body = [p for p in self.model.parameters() if id(p) not in head_ids]
        groups = [{"params": body, "lr": optim.lr}, {"params": head, "lr": optim.lr * optim.head_lr_scale}]
        if optim.name == "sgd":
            return torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay, nesterov=True)
        return torch.optim.AdamW(groups, lr=optim.lr, weight_decay=optim.weight_decay)

    def _phase(self, epoch: int) -> tuple[str, int]:
        if epoch >= self.config.epochs:
            return "finetune", self.config.finetune_image_size
        return "train", self.config.image_size

    def _sampler(self, epoch: int) -> BucketBatchSampler:
        _, size = self._phase(epoch)
        return BucketBatchSampler(
            self.buckets, self.split.train_classes, self.config.batch_size, size, balance=self.config.balance,
            seed=self.config.seed, rank=self.context.rank, world_size=self.context.world_size,
        )

    def _steps_in_epoch(self, epoch: int) -> int:
        batches = len(self._sampler(epoch).global_batches(epoch))
        return max(1, batches // self.config.optim.grad_accum)

    # ---------------------------------------------------------------- checkpoints

    def _payload(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "state": vars(self.state).copy(),
            "rng": rng_states(),
            "config": to_dict(self.config),
            "landmark_ids": list(self.split.landmark_ids),
            "class_counts": self.split.class_counts.tolist(),
        }

    def _save(self) -> None:
        if self.context.is_main:
            save_checkpoint(self.run_dir / CHECKPOINT, self._payload())
        distributed.barrier(self.context)

    def _restore(self, checkpoint: dict) -> None:
        if checkpoint["landmark_ids"] != list(self.split.landmark_ids):
            raise UserInputError("the training labels changed since the checkpoint was written; cannot resume")
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        self.state = TrainingState(**checkpoint["state"])
        restore_rng_states(checkpoint["rng"])

    # ---------------------------------------------------------------- training

    def fit(self) -> list[dict]:
        """Train to the end (or from the resumed position); return the metrics rows."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.context.is_main:
            (self.run_dir / "config.json").write_text(json.dumps(to_dict(self.config), indent=2) + "\n")
        writer = self._tensorboard()
        rows = []
        try:
            while self.state.epoch < self.config.total_epochs:
                row = self._train_epoch()
                row.update(self.validate())
                rows.append(row)
                self.state = TrainingState(self.state.epoch + 1, 0, self.state.optimizer_step)
                self._save()
                if self.context.is_main:
                    self._log_row(row, writer)
        finally:
            if writer is not None:
                writer.close()
            distributed.shutdown(self.context)
        return rows

    def _tensorboard(self):
        if not self.context.is_main:
            return None
        return summary_writer(self.run_dir / "tensorboard")

    def _train_epoch(self) -> dict:
        epoch, config = self.state.epoch, self.config
        phase, size = self._phase(epoch)
        sampler = self._sampler(epoch)
        sampler.set_epoch(epoch, self.state.batch)
        loader = DataLoader(self.train_images, batch_sampler=sampler, num_workers=config.workers,
                            collate_fn=collate_skipping, pin_memory=self.device.type == "cuda")
        self.network.train()
        # an epoch whose batch count is not a multiple of grad_accum must not leak into the next
        self.optimizer.zero_grad(set_to_none=True)
        if phase == "finetune":
            freeze_batchnorm(self.model)
        accum = config.optim.grad_accum
        started, seen, loss_sum, loss_count = time.perf_counter(), 0, 0.0, 0
        bar = tqdm(total=len(sampler), desc=f"epoch {epoch + 1}/{config.total_epochs} {phase} {size}px",
                   unit="batch", disable=not (self.progress and self.context.is_main))
        for batch_number, batch in enumerate(loader, start=self.state.batch):
            if batch["image"] is None:
                bar.update(1)
                continue
            images = batch["image"].to(self.device, non_blocking=True)
            labels = batch["label"].to(self.device, non_blocking=True)
            if config.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast_context(self.device, config.amp):
                logits = self.network(images, labels)["logits"]
                loss = self.criterion(logits.float(), labels)
            self.scaler.scale(loss / accum).backward()
            loss_sum += float(loss.detach())
            loss_count += 1
            seen += len(labels)
            if (batch_number + 1) % accum == 0:
                self._optimizer_step()
                self.state.batch = batch_number + 1
                if config.checkpoint_every_steps and self.state.optimizer_step % config.checkpoint_every_steps == 0:
                    self._save()
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / loss_count:.3f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
        bar.close()
        elapsed = time.perf_counter() - started
        mean_loss = distributed.mean_across(loss_sum / max(loss_count, 1), self.context)
        return {
            "epoch": epoch + 1, "phase": phase, "image_size": size, "train_loss": mean_loss,
            "lr": self.scheduler.get_last_lr()[0], "seconds": elapsed,
            "images_per_s": seen * self.context.world_size / max(elapsed, 1e-9),
        }

    def _optimizer_step(self) -> None:
        if self.config.optim.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.state.optimizer_step += 1

    # ---------------------------------------------------------------- validation

    def validate(self) -> dict:
        """kNN mAP@100 and soft-voting GAP of the held-out images against the training images."""
        if not self.split.val_ids or not self.context.is_main:
            return {"val_map@100": float("nan"), "val_gap": float("nan")}
        _, size = self._phase(self.state.epoch)
        kwargs = dict(device=self.device, amp=self.config.amp, workers=self.config.workers,
                      channels_last=self.config.channels_last, progress=self.progress)
        database = embed_dataset(self.model, self.eval_train_images,
                                 ordered_batches(self.buckets, self.config.eval_batch_size, size), desc="embed train", **kwargs)
        queries = embed_dataset(self.model, self.eval_val_images,
                                ordered_batches(self.val_buckets, self.config.eval_batch_size, size), desc="embed val", **kwargs)
        return evaluate_split(queries, database, self.split)

    def _log_row(self, row: dict, writer) -> None:
        path = self.run_dir / METRICS_CSV
        new = not path.exists()
        with path.open("a", newline="") as handle:
            out = csv.DictWriter(handle, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
            if new:
                out.writeheader()
            out.writerow(row)
        for key in ("train_loss", "lr", "val_map@100", "val_gap", "images_per_s"):
            writer.add_scalar(key, row[key], row["epoch"])
        writer.flush()
        log.info("epoch %d: %s", row["epoch"], row)


def run_is_finished(run_dir: str | Path, config: TrainConfig) -> bool:
    """True when `run_dir` holds a checkpoint that completed every epoch of `config`."""
    path = Path(run_dir) / CHECKPOINT
    return path.is_file() and load_checkpoint(path)["state"]["epoch"] >= config.total_epochs


def summary_writer(path: Path):
    """A TensorBoard writer that keeps TensorFlow out of the training process.

    tensorboard imports TensorFlow when it can, and falls back to its bundled stub when it
    cannot; TensorFlow costs seconds and memory here and must not share a process with
    torchvision (REFERENCE §9), so its import is refused while the writer module loads.
    """
    refuse = "tensorflow" not in sys.modules
    if refuse:
        sys.modules["tensorflow"] = None  # makes `import tensorflow` raise ImportError
    try:
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(path))
    finally:
        if refuse:
            del sys.modules["tensorflow"]


def evaluate_split(queries: np.ndarray, database: np.ndarray, split: TrainingSplit, k: int = 100) -> dict:
    """mAP@100 (relevant = database images of the query's class) and GAP of 3-NN soft voting."""
    scores, neighbours = exact_search(queries, database, k=k)
    query_ids = [f"q{i}" for i in range(len(queries))]
    database_ids = np.array([f"d{i}" for i in range(len(database))])
    relevant = {q: database_ids[split.train_classes == c].tolist() for q, c in zip(query_ids, split.val_classes)}
    retrieved = {q: database_ids[row].tolist() for q, row in zip(query_ids, neighbours)}
    labels, confidence = soft_voting(scores, split.train_classes[neighbours], k=3)
    predictions = {q: (int(label), float(conf)) for q, label, conf in zip(query_ids, labels, confidence)}
    truth = {q: [int(c)] for q, c in zip(query_ids, split.val_classes)}
    return {
        "val_map@100": metrics.mean_average_precision(retrieved, {q: r for q, r in relevant.items() if r}),
        "val_gap": metrics.global_average_precision(predictions, truth),
    }
