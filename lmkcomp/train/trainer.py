"""The training loop: GeM + margin-head descriptors on a GLDv2-layout dataset.

One process, or several under torchrun (DDP). Per epoch: bucketed, augmented batches; AMP,
gradient accumulation and clipping; a learning rate per model part with warm-up and cosine or
step decay (per optimizer step); the final `finetune_epochs` at a larger resolution with
BatchNorm frozen; validation (kNN mAP@100 and soft-voting GAP of held-out train images against
the training images); an atomic checkpoint that `resume` continues from exactly (model, loss,
optimizer, scheduler, scaler, RNG states, the position in the epoch's deterministic batch
order and the epoch's running loss and image sums). The checkpoint also holds every finished
epoch's metrics row, and metrics.csv is rewritten from them, so a killed and resumed run ends
with the metrics.csv of an uninterrupted one (but for its wall-clock columns).

The centroid method's options (Boiarov & Tyantov 2019): ``loss.name: center`` (softmax + the
modified Center loss), ``data.non_landmarks`` (an extra non-landmark class, sampled at
``data.non_landmark_ratio`` images per landmark image), and a ``curriculum`` section that
trains stage by stage over regions (see `lmkcomp.train.curriculum`): each stage runs the whole
epoch schedule, ends with ``checkpoint-stage<k>.pt``, and a killed run resumes in the stage and
epoch it stopped in. ``checkpoint-last.pt`` always holds the current stage's model.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from lmkcomp import metrics
from lmkcomp.config import from_dict, to_dict
from lmkcomp.clean.embedding_methods import landmark_groups
from lmkcomp.data import gldv2
from lmkcomp.data.dataset import checked_batches, collate_skipping
from lmkcomp.data.layout import LandmarkData
from lmkcomp.devices import resolve_device
from lmkcomp.errors import UserInputError
from lmkcomp.features.extract import autocast_context, embed_dataset
from lmkcomp.features.health import embedding_health
from lmkcomp.fileio import atomic_write
from lmkcomp.models import class_weights_inverse_log, create_loss, create_model, freeze_batchnorm
from lmkcomp.models.losses import loss_options
from lmkcomp.models.model import LandmarkModel
from lmkcomp.voting import soft_voting
from lmkcomp.search import exact_search
from lmkcomp.train import distributed
from lmkcomp.train.checkpoint import load_checkpoint, restore_rng_states, rng_states, save_checkpoint
from lmkcomp.train.config import TrainConfig
from lmkcomp.train.curriculum import Stage, carry_over, curriculum_stages, read_regions, stage_seed
from lmkcomp.train.data import (
    BucketedImageDataset,
    TrainingSplit,
    data_file,
    image_sizes,
    read_labels,
    restrict_split,
    split_for_training,
)
from lmkcomp.train.optim import create_optimizer, create_scheduler, part_learning_rates
from lmkcomp.train.samplers import BucketBatchSampler, assign_buckets, ordered_batches

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint-last.pt"
METRICS_CSV = "metrics.csv"
#: the validation's descriptor health (see `evaluate_split`)
HEALTH_COLUMNS = ["val_auc", "val_same_cos", "val_diff_cos", "train_mean_norm", "val_effective_rank"]
METRIC_COLUMNS = ["epoch", "phase", "image_size", "train_loss", "lr", "val_map@100", "val_gap", *HEALTH_COLUMNS,
                  "seconds", "images_per_s", "stage"]


@dataclass
class TrainingState:
    #: epoch within the stage
    epoch: int = 0
    #: next global batch of `epoch` to train on
    batch: int = 0
    #: optimizer steps within the stage
    optimizer_step: int = 0
    #: curriculum stage, from 1 (always 1 without a curriculum)
    stage: int = 1
    #: running sums of `epoch` up to `batch`, so that a resumed epoch reports what an
    #: uninterrupted one does: loss summed over batches, batches, images, seconds of training
    loss_sum: float = 0.0
    loss_count: int = 0
    images: int = 0
    seconds: float = 0.0


class LossNetwork(nn.Module):
    """The model and its loss in one module: ``(images, labels) -> loss``.

    One module so that DDP all-reduces the loss's own parameters (the Center loss's centers)
    together with the model's.
    """

    def __init__(self, model: LandmarkModel, loss: nn.Module):
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        outputs = self.model(images, labels)
        return self.loss(outputs["logits"].float(), labels, outputs["embedding"].float())


class Trainer:
    """Builds everything from a `TrainConfig` and a run folder, then `fit()`s."""

    def __init__(self, config: TrainConfig, run_dir: str | Path, resume: bool = False, progress: bool = True):
        self.config = config
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.device = resolve_device(config.device)
        self.context = distributed.init_distributed(self.device.type)
        if self.context.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.context.local_rank)
        checkpoint = self._existing_checkpoint(resume)

        self.data = LandmarkData(config.data.root, config.data.layout)
        labels = read_labels(self.data, config.data.labels)
        #: every landmark of the run; a curriculum stage trains on a part of it
        self.full_split = split_for_training(
            labels, config.data.min_images_per_class, config.data.val_fraction, config.seed
        )
        self.non_landmark_ids = self._non_landmark_ids(labels)
        self.stages = self._plan_stages()
        # bucket of every train image of the run: the landmark ones, then the non-landmark ones
        self.full_buckets = self._buckets(self.full_split.train_ids + self.non_landmark_ids)
        self.full_val_buckets = self._buckets(self.full_split.val_ids)
        #: every finished epoch's metrics row (of every stage) as metrics.csv holds it, and its columns
        self.history: list[dict[str, str]] = []
        self.metric_columns = METRIC_COLUMNS
        self._build_stage(checkpoint["state"].get("stage", 1) if checkpoint is not None else 1)
        if checkpoint is not None:
            self._restore(checkpoint)

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

    def _buckets(self, ids: list[str]) -> np.ndarray:
        if not self.config.aspect_buckets:
            return np.full(len(ids), 2)  # the square bucket
        cache = self.run_dir / "image_sizes.csv" if self.context.is_main else None
        return assign_buckets(image_sizes(self.data, "train", ids, cache, progress=self.progress and self.context.is_main,
                                          on_error=self.config.data.on_error))

    def _non_landmark_ids(self, labels: pd.DataFrame) -> list[str]:
        """Ids of ``data.non_landmarks`` (none without it); none of them may carry a landmark label."""
        if self.config.data.non_landmarks is None:
            return []
        path = data_file(self.data.root, self.config.data.non_landmarks, "data.non_landmarks")
        ids = gldv2.read_id_column(path)
        if not ids:
            raise UserInputError(f"{path}: lists no non-landmark image")
        labelled = set(ids).intersection(labels["id"])
        if labelled:
            raise UserInputError(f"{path}: {len(labelled)} non-landmark images have a landmark label too "
                                 f"(e.g. {min(labelled)})")
        return ids

    def _plan_stages(self) -> list[Stage]:
        curriculum = self.config.curriculum
        if curriculum is None:
            return [Stage(1, (), tuple(self.full_split.landmark_ids))]
        regions_csv = data_file(self.data.root, curriculum.regions_csv, "curriculum.regions_csv")
        regions = read_regions(regions_csv, curriculum.region_column)
        return curriculum_stages(self.full_split.landmark_ids, regions, curriculum.parts)

    def _build_stage(self, number: int, carry_from: LandmarkModel | None = None) -> None:
        """Data, model, loss, optimizer and schedule of curriculum stage `number` (1 without one).

        The model, its head and the loss are freshly initialised from a seed of the stage; with
        `carry_from`, what a curriculum keeps (:func:`lmkcomp.train.curriculum.carry_over`)
        is then copied from that model.
        """
        config = self.config
        self.stage = self.stages[number - 1]
        self.split, train_positions, val_positions = restrict_split(self.full_split, self.stage.landmark_ids)
        landmarks = len(self.split.landmark_ids)
        self.non_landmark_class = landmarks if self.non_landmark_ids else None
        self.buckets = self.full_buckets[train_positions]
        self.val_buckets = self.full_val_buckets[val_positions]
        # what the sampler draws from: the stage's landmark images, then every non-landmark image
        non_landmark_positions = len(self.full_split.train_ids) + np.arange(len(self.non_landmark_ids))
        self.sample_buckets = self.full_buckets[np.concatenate([train_positions, non_landmark_positions])]
        self.sample_classes = np.concatenate([self.split.train_classes,
                                              np.full(len(self.non_landmark_ids), landmarks, dtype=np.int64)])
        num_classes = landmarks + (self.non_landmark_class is not None)
        self.class_counts = np.bincount(self.sample_classes, minlength=num_classes)

        common = dict(max_side=config.data.max_side, on_error=config.data.on_error, seed=config.seed)
        self.train_images = BucketedImageDataset(self.data, "train", self.split.train_ids + self.non_landmark_ids,
                                                 self.sample_classes, augment=config.augment, **common)
        self.eval_train_images = BucketedImageDataset(self.data, "train", self.split.train_ids, augment="none", **common)
        self.eval_val_images = BucketedImageDataset(self.data, "train", self.split.val_ids, augment="none", **common)

        # stage 1 seeds like a run without a curriculum
        torch.manual_seed(config.seed if number == 1 else stage_seed(config.seed, number))
        counts = torch.as_tensor(self.class_counts)
        self.model = create_model(config.model, num_classes, class_counts=counts)
        if config.model.pretrained is not None and carry_from is None and self.context.is_main and self.progress:
            print(f"pretrained weights: {self.model.pretrained_report.summary()}", file=sys.stderr)
        if carry_from is not None:
            carry_over(carry_from, self.model)
        self.model = self.model.to(self.device)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        options = {"num_centers": landmarks, "embedding_size": config.model.embedding_size,
                   "center_weight": config.loss.center_weight}
        accepted = loss_options(config.loss.name)
        self.criterion = create_loss(
            config.loss.name,
            class_weights=class_weights_inverse_log(counts) if config.class_weights else None,
            label_smoothing=config.label_smoothing,
            **{key: value for key, value in options.items() if key in accepted},
        ).to(self.device)

        later = config.curriculum.later_lr if number > 1 else None
        self.optimizer = create_optimizer(config.optim, self.model, self.criterion,
                                          part_learning_rates(config.optim, later))
        self.state = TrainingState(stage=number)
        steps = [self._steps_in_epoch(epoch) for epoch in range(config.total_epochs)]
        warmup = int(round(config.optim.warmup_epochs * steps[0]))
        self.scheduler = create_scheduler(self.optimizer, config.optim, warmup, sum(steps))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.amp == "fp16" and self.device.type == "cuda")

        self.network = LossNetwork(self.model, self.criterion)
        if self.context.enabled:
            # frozen batch-norm parameters in the fine-tune epochs receive no gradient
            self.network = DistributedDataParallel(
                self.network, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=config.finetune_epochs > 0,
            )
        if config.compile:
            self.network = torch.compile(self.network)

    def advance_stage(self) -> None:
        """Enter the next curriculum stage (Algorithm 1, step 2): the backbone, pooling and neck
        linear layer carry over; the neck's batch norm, the classifier (over the grown set of
        classes) and the centers start afresh; optimizer and schedule restart at
        ``curriculum.later_lr``."""
        if self.state.stage >= len(self.stages):
            raise ValueError(f"stage {self.state.stage} is the last one")
        self._build_stage(self.state.stage + 1, carry_from=self.model)

    def _phase(self, epoch: int) -> tuple[str, int]:
        if epoch >= self.config.epochs:
            return "finetune", self.config.finetune_image_size
        return "train", self.config.image_size

    def _sampler(self, epoch: int) -> BucketBatchSampler:
        _, size = self._phase(epoch)
        non_landmark = None if self.non_landmark_class is None else self.sample_classes == self.non_landmark_class
        return BucketBatchSampler(
            self.sample_buckets, self.sample_classes, self.config.batch_size, size, balance=self.config.balance,
            seed=self.config.seed, rank=self.context.rank, world_size=self.context.world_size,
            non_landmark=non_landmark, non_landmark_ratio=self.config.data.non_landmark_ratio,
        )

    def _sample_epoch(self, epoch: int) -> int:
        """Epoch number that seeds the batch order and the augmentation: counted across stages, so
        that every stage draws its own."""
        return (self.stage.number - 1) * self.config.total_epochs + epoch

    def _steps_in_epoch(self, epoch: int) -> int:
        batches = len(self._sampler(epoch).global_batches(self._sample_epoch(epoch)))
        if batches < self.config.optim.grad_accum:
            # an epoch without an optimizer step would "train" nothing and still save a model
            raise UserInputError(
                f"batch_size {self.config.batch_size} x optim.grad_accum {self.config.optim.grad_accum}: epoch "
                f"{epoch + 1} has {batches} full batches of its {len(self.sample_classes)} training images, so no "
                "optimizer step; lower batch_size")
        return batches // self.config.optim.grad_accum

    # ---------------------------------------------------------------- checkpoints

    def _payload(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "loss": self.criterion.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "state": vars(self.state).copy(),
            "rng": rng_states(),
            "config": to_dict(self.config),
            # class index -> landmark id; the class after them, if any, is the non-landmark one
            "landmark_ids": list(self.split.landmark_ids),
            "non_landmark_class": self.non_landmark_class,
            # training images per class (the non-landmark class: every non-landmark image)
            "class_counts": self.class_counts.tolist(),
            "stages": len(self.stages),
            "regions": list(self.stage.regions),
            "metrics": {"columns": list(self.metric_columns), "rows": [dict(row) for row in self.history]},
        }

    def _save(self, name: str = CHECKPOINT) -> None:
        if self.context.is_main:
            save_checkpoint(self.run_dir / name, self._payload())
        distributed.barrier(self.context)

    def _restore(self, checkpoint: dict) -> None:
        if (checkpoint["landmark_ids"] != list(self.split.landmark_ids)
                or checkpoint["class_counts"] != self.class_counts.tolist()):
            raise UserInputError("the training labels changed since the checkpoint was written; cannot resume")
        if "loss" not in checkpoint:
            raise UserInputError("the checkpoint was written by an older lmkcomp whose optimizer had other parameter "
                                 "groups; it cannot be resumed, start a new run")
        self.model.load_state_dict(checkpoint["model"])
        self.criterion.load_state_dict(checkpoint["loss"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        self.state = TrainingState(**checkpoint["state"])
        restore_rng_states(checkpoint["rng"])
        if "metrics" in checkpoint:
            self.metric_columns = list(checkpoint["metrics"]["columns"])
            self.history = [dict(row) for row in checkpoint["metrics"]["rows"]]
        else:  # written by an older lmkcomp, which appended to metrics.csv: the file holds the history
            self.metric_columns, self.history = read_metrics_csv(self.run_dir / METRICS_CSV)

    # ---------------------------------------------------------------- training

    def fit(self) -> list[dict]:
        """Train to the end (or from the resumed position); return the metrics rows."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.context.is_main:
            (self.run_dir / "config.json").write_text(json.dumps(to_dict(self.config), indent=2) + "\n")
        writer = self._tensorboard()
        rows = []
        if self.context.is_main and self.history:
            # a run killed between its checkpoint and metrics.csv gets the file the checkpoint describes
            self._write_metrics()
        try:
            while True:
                while self.state.epoch < self.config.total_epochs:
                    row = self._train_epoch()
                    row.update(self.validate())
                    rows.append(row)
                    self.history.append(csv_text(row, self.metric_columns))
                    self.state = TrainingState(epoch=self.state.epoch + 1, optimizer_step=self.state.optimizer_step,
                                               stage=self.state.stage)
                    self._save()
                    if self.context.is_main:
                        self._write_metrics()
                        self._log_row(row, writer)
                if self.config.curriculum is None:
                    break
                # rewritten if a resumed run finds its stage finished: same payload
                self._save(f"checkpoint-stage{self.state.stage}.pt")
                if self.state.stage == len(self.stages):
                    break
                self.advance_stage()
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
        sampler.set_epoch(self._sample_epoch(epoch), self.state.batch)
        loader = DataLoader(self.train_images, batch_sampler=sampler, num_workers=config.workers,
                            collate_fn=collate_skipping, pin_memory=self.device.type == "cuda")
        self.network.train()
        # an epoch whose batch count is not a multiple of grad_accum must not leak into the next
        self.optimizer.zero_grad(set_to_none=True)
        if phase == "finetune":
            freeze_batchnorm(self.model)
        accum = config.optim.grad_accum
        state = self.state
        # a resumed epoch goes on from the sums its checkpoint saved
        started = time.perf_counter() - state.seconds
        stage = f"stage {self.stage.number}/{len(self.stages)} " if config.curriculum is not None else ""
        bar = tqdm(total=len(sampler), desc=f"{stage}epoch {epoch + 1}/{config.total_epochs} {phase} {size}px",
                   unit="batch", disable=not (self.progress and self.context.is_main))
        for batch_number, batch in enumerate(checked_batches(loader, config.data.on_error), start=self.state.batch):
            if batch["image"] is None:
                bar.update(1)
                continue
            images = batch["image"].to(self.device, non_blocking=True)
            labels = batch["label"].to(self.device, non_blocking=True)
            if config.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast_context(self.device, config.amp):
                loss = self.network(images, labels)
            self.scaler.scale(loss / accum).backward()
            state.loss_sum += float(loss.detach())
            state.loss_count += 1
            state.images += len(labels)
            if (batch_number + 1) % accum == 0:
                self._optimizer_step()
                state.batch = batch_number + 1
                state.seconds = time.perf_counter() - started
                if config.checkpoint_every_steps and state.optimizer_step % config.checkpoint_every_steps == 0:
                    self._save()
            bar.update(1)
            bar.set_postfix(loss=f"{state.loss_sum / state.loss_count:.3f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
        bar.close()
        elapsed = time.perf_counter() - started
        mean_loss = distributed.mean_across(state.loss_sum / max(state.loss_count, 1), self.context)
        return {
            "epoch": epoch + 1, "phase": phase, "image_size": size, "train_loss": mean_loss,
            "lr": self.scheduler.get_last_lr()[0], "seconds": elapsed,
            "images_per_s": state.images * self.context.world_size / max(elapsed, 1e-9), "stage": self.stage.number,
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
            return {key: float("nan") for key in ("val_map@100", "val_gap", *HEALTH_COLUMNS)}
        _, size = self._phase(self.state.epoch)
        kwargs = dict(device=self.device, amp=self.config.amp, workers=self.config.workers,
                      channels_last=self.config.channels_last, progress=self.progress)
        database = embed_dataset(self.model, self.eval_train_images,
                                 ordered_batches(self.buckets, self.config.eval_batch_size, size), desc="embed train", **kwargs)
        queries = embed_dataset(self.model, self.eval_val_images,
                                ordered_batches(self.val_buckets, self.config.eval_batch_size, size), desc="embed val", **kwargs)
        return evaluate_split(queries, database, self.split)

    def _write_metrics(self) -> None:
        """Rewrite metrics.csv (atomically) from the history: it lists exactly the epochs the
        checkpoint holds, however often the run was killed and resumed."""
        with atomic_write(self.run_dir / METRICS_CSV, newline="") as handle:
            out = csv.DictWriter(handle, fieldnames=self.metric_columns, extrasaction="ignore")
            out.writeheader()
            out.writerows(self.history)

    def _log_row(self, row: dict, writer) -> None:
        # epochs counted across curriculum stages, so the curves of the stages follow each other
        step = self._sample_epoch(row["epoch"])
        for key in ("train_loss", "lr", "val_map@100", "val_gap", *HEALTH_COLUMNS, "images_per_s"):
            writer.add_scalar(key, row[key], step)
        writer.flush()
        log.info("stage %d epoch %d: %s", row["stage"], row["epoch"], row)


def csv_text(row: dict, columns: list[str]) -> dict[str, str]:
    """`row`'s values of `columns` as the csv module writes them (a checkpoint can hold only
    plain values, and numpy scalars are not)."""
    return {key: "" if row.get(key) is None else str(row[key]) for key in columns}


def read_metrics_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """(columns, rows) of a metrics.csv; the current columns and no row when there is none."""
    if not path.is_file():
        return list(METRIC_COLUMNS), []
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        return list(reader.fieldnames or METRIC_COLUMNS), rows


def run_is_finished(run_dir: str | Path, config: TrainConfig) -> bool:
    """True when `run_dir` holds a checkpoint that completed every epoch (of every stage) of `config`."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        return False
    checkpoint = load_checkpoint(path)
    state = checkpoint["state"]
    # checkpoints written before curricula existed have no stage: they had a single one
    return state["epoch"] >= config.total_epochs and state.get("stage", 1) >= checkpoint.get("stages", 1)


def summary_writer(path: Path):
    """A TensorBoard writer that keeps TensorFlow out of the training process.

    tensorboard imports TensorFlow when it can, and falls back to its bundled stub when it
    cannot; TensorFlow costs seconds and memory here and must not share a process with
    torchvision (importing TensorFlow, then torchvision, aborts the process with an LLVM
    error), so its import is refused while the writer module loads.
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
    """mAP@100 (relevant = database images of the query's class) and GAP of 3-NN soft voting,
    and the descriptor's health (`lmkcomp.features.health`): ROC AUC and median cosine of
    same- and different-landmark (held-out image, training image) pairs, the mean-vector norm
    of the training images' descriptors and the effective rank of the held-out ones."""
    scores, neighbours = exact_search(queries, database, k=k)
    query_ids = [f"q{i}" for i in range(len(queries))]
    database_ids = np.array([f"d{i}" for i in range(len(database))])
    # the database images of each class, grouped once (one scan per query would be val x train)
    by_class = {int(c): database_ids[rows].tolist() for c, rows in landmark_groups(split.train_classes).items()}
    relevant = {q: by_class.get(int(c), []) for q, c in zip(query_ids, split.val_classes)}
    retrieved = {q: database_ids[row].tolist() for q, row in zip(query_ids, neighbours)}
    labels, confidence = soft_voting(scores, split.train_classes[neighbours], k=3)
    predictions = {q: (int(label), float(conf)) for q, label, conf in zip(query_ids, labels, confidence)}
    truth = {q: [int(c)] for q, c in zip(query_ids, split.val_classes)}
    health = embedding_health(queries, split.val_classes, database, split.train_classes)
    return {
        "val_map@100": metrics.mean_average_precision(retrieved, {q: r for q, r in relevant.items() if r}),
        "val_gap": metrics.global_average_precision(predictions, truth),
        "val_auc": health.auc, "val_same_cos": health.same.median, "val_diff_cos": health.different.median,
        "train_mean_norm": health.database_mean_norm, "val_effective_rank": health.effective_rank,
    }
