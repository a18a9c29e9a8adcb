"""The trainer's typed config (YAML -> `TrainConfig`), every key validated."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lmkcomp.errors import UserInputError
from lmkcomp.models.model import ModelConfig


@dataclass
class DataConfig:
    root: str
    layout: str = "gldv2"
    #: "train", "train_clean", or the path of a cleaned CSV in train_clean format
    labels: str = "train"
    min_images_per_class: int = 2
    #: share of the images of classes with >= 3 images held out as validation queries
    val_fraction: float = 0.1
    #: decode images at most this large (JPEG draft mode makes big photos cheap)
    max_side: int | None = None
    on_error: Literal["raise", "skip"] = "raise"

    def validate(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise UserInputError("data.val_fraction: must be in [0, 1)")
        if self.min_images_per_class < 1:
            raise UserInputError("data.min_images_per_class: must be at least 1")


@dataclass
class OptimConfig:
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.05
    #: the head (class weights) learns this many times faster than the backbone
    head_lr_scale: float = 1.0
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_epochs: float = 0.3
    #: cosine annealing ends at lr * min_lr_ratio
    min_lr_ratio: float = 0.01
    grad_clip: float | None = None
    grad_accum: int = 1

    def validate(self) -> None:
        if self.lr <= 0:
            raise UserInputError("optim.lr: must be positive")
        if self.grad_accum < 1:
            raise UserInputError("optim.grad_accum: must be at least 1")


@dataclass
class TrainConfig:
    data: DataConfig
    model: ModelConfig
    optim: OptimConfig = field(default_factory=OptimConfig)
    epochs: int = 4
    batch_size: int = 32
    #: batches of aspect ratio a are resized to about image_size^2 pixels (sides multiples of 32)
    image_size: int = 128
    augment: Literal["none", "soft", "hard"] = "soft"
    #: group images by aspect ratio (False: every image is a square image_size x image_size)
    aspect_buckets: bool = True
    balance: Literal["none", "class"] = "none"
    #: weight the loss by 1/log(n_c)
    class_weights: bool = False
    label_smoothing: float = 0.0
    #: extra epochs at the end at finetune_image_size with BatchNorm frozen (seed 001)
    finetune_epochs: int = 0
    finetune_image_size: int = 192
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = False
    compile: bool = False
    device: str = "auto"
    workers: int = 2
    seed: int = 0
    #: also checkpoint every N optimizer steps inside an epoch (0: only at epoch ends)
    checkpoint_every_steps: int = 0
    eval_batch_size: int = 64

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "image_size", "finetune_image_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise UserInputError(f"{name}: must be at least 1")
        if self.finetune_epochs < 0 or self.workers < 0 or self.checkpoint_every_steps < 0:
            raise UserInputError("finetune_epochs, workers and checkpoint_every_steps must be >= 0")

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.finetune_epochs


BUILTIN_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def resolve_config_path(name: str) -> Path:
    """A config file path, or the name of one shipped in lmkcomp/configs (e.g. "cpu-small")."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = BUILTIN_CONFIGS / f"{name}.yaml"
    if shipped.is_file():
        return shipped
    known = sorted(p.stem for p in BUILTIN_CONFIGS.glob("*.yaml"))
    raise UserInputError(f"{name}: no such config file, nor a built-in config ({', '.join(known)})")
