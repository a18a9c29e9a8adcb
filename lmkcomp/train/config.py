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
    #: "train", "train_clean", or the path of a cleaned CSV in train_clean format, taken as given
    #: (relative to the working directory): `lmkcomp clean` writes it outside the data root
    labels: str = "train"
    min_images_per_class: int = 2
    #: share of the images of classes with >= 3 images held out as validation queries
    val_fraction: float = 0.1
    #: decode images at most this large (JPEG draft mode makes big photos cheap)
    max_side: int | None = None
    on_error: Literal["raise", "skip"] = "raise"
    #: CSV with an ``id`` column of non-landmark images in the train folder (a relative path is
    #: inside ``root`` and may not lead out of it, by ``..`` or a symbolic link; an absolute path
    #: is read as given; the synthetic generator writes ``train_nonlandmark.csv``). They train an
    #: extra class after the landmark classes (the centroid method's class n + 1).
    non_landmarks: str | None = None
    #: non-landmark images drawn per landmark image in each epoch (the centroid method: 0.4)
    non_landmark_ratio: float = 0.4

    def validate(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise UserInputError("data.val_fraction: must be in [0, 1)")
        if self.min_images_per_class < 1:
            raise UserInputError("data.min_images_per_class: must be at least 1")
        if self.non_landmark_ratio < 0:
            raise UserInputError("data.non_landmark_ratio: must be >= 0")


@dataclass
class PartLearningRates:
    """Learning rate of each part of the model; a part left null takes its default.

    Parts: ``backbone`` (the timm trunk and the pooling), ``embedding`` (the neck's FC + BN),
    ``classifier`` (the head) and ``centers`` (the Center loss's class centers, Wen et al.'s
    ``alpha``). Defaults: ``optim.lr`` for every part but the classifier, which takes
    ``optim.lr * optim.head_lr_scale``.
    """

    backbone: float | None = None
    embedding: float | None = None
    classifier: float | None = None
    centers: float | None = None

    def validate(self) -> None:
        for name, value in vars(self).items():
            if value is not None and value <= 0:
                raise UserInputError(f"learning rate of the {name} part must be positive, got {value}")


@dataclass
class OptimConfig:
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.05
    #: the classifier (head) learns this many times faster than the rest, unless part_lr sets it
    head_lr_scale: float = 1.0
    weight_decay: float = 1e-4
    momentum: float = 0.9
    #: learning rate per model part (backbone, embedding, classifier, centers)
    part_lr: PartLearningRates = field(default_factory=PartLearningRates)
    warmup_epochs: float = 0.3
    #: after the warm-up, "cosine" anneals to lr * min_lr_ratio; "step" multiplies the learning
    #: rates by step_gamma at each of step_milestones (fractions of the training steps)
    schedule: Literal["cosine", "step"] = "cosine"
    min_lr_ratio: float = 0.01
    step_milestones: tuple[float, ...] = (0.4, 0.8)
    step_gamma: float = 0.1
    grad_clip: float | None = None
    grad_accum: int = 1

    def validate(self) -> None:
        if self.lr <= 0:
            raise UserInputError("optim.lr: must be positive")
        if self.grad_accum < 1:
            raise UserInputError("optim.grad_accum: must be at least 1")
        if any(not 0.0 < m < 1.0 for m in self.step_milestones) or list(self.step_milestones) != sorted(self.step_milestones):
            raise UserInputError("optim.step_milestones: must be increasing fractions in (0, 1)")
        if not 0.0 < self.step_gamma <= 1.0:
            raise UserInputError("optim.step_gamma: must be in (0, 1]")


@dataclass
class LossConfig:
    #: a registered loss: "ce" (cross-entropy) or "center" (cross-entropy + the modified Center
    #: loss: centers for the landmark classes only, none for the non-landmark class)
    name: str = "ce"
    #: lambda of the Center loss
    center_weight: float = 5e-5


@dataclass
class CurriculumConfig:
    """Curriculum learning over regions (Boiarov & Tyantov 2019, Algorithm 1).

    The landmarks are divided into parts by region; stage ``k`` trains on the landmarks of
    parts ``1..k`` for ``epochs`` (+ ``finetune_epochs``) with its own learning-rate schedule.
    Stage 1 uses ``optim.part_lr``; every later stage starts from the previous stage's model
    with the embedding's batch norm, the classifier (rebuilt for the new classes) and the
    centers re-initialised, and trains with ``later_lr`` (a part left null there keeps
    stage 1's rate; the paper: backbone 1e-4, embedding 1e-4, classifier 1e-2).
    """

    #: CSV with ``landmark_id`` and `region_column` (a relative path is inside ``data.root`` and
    #: may not lead out of it; an absolute path is read as given)
    regions_csv: str = "landmark_metadata.csv"
    region_column: str = "region"
    #: the parts in training order, each a list of regions; empty: one part per region,
    #: the region with most training landmarks first
    parts: list[list[str]] = field(default_factory=list)
    later_lr: PartLearningRates = field(default_factory=PartLearningRates)


@dataclass
class TrainConfig:
    data: DataConfig
    model: ModelConfig
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    #: train stage by stage over regions (null: one run on every landmark)
    curriculum: CurriculumConfig | None = None
    #: epochs of the run (of each stage with a curriculum)
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
    #: extra epochs at the end at finetune_image_size with BatchNorm frozen (Ozaki & Yokoo 2019)
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
