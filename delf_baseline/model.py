"""A trainable PyTorch DELF: ResNet features at stride 16, an attention MLP, attention pooling.

The design follows DELF (Noh et al., "Large-Scale Image Retrieval with Attentive Deep Local
Features", 2017) as released in the official TF2 code:

- Features: a timm ResNet cut after its stride-16 stage (`layer3`, ResNet-50's `conv4_x`),
  giving F (B x C x H x W). Each cell is one local feature.
- Attention: `a = softplus(conv1x1(relu(conv1x1(F))))`, one score a >= 0 per cell.
- Pooling for training: `p = (1 / (H W)) * sum_cells a * F / |F|_2`, the mean over cells of
  the attention-weighted, L2-normalised features (the official `reduce_mean` of
  `attention * l2_normalize(features)`), then a linear classifier gives the logits. Cells
  the classifier finds useful thus get high attention, which is what selects keypoints at
  extraction time.
- Unlike the official two-stage recipe (descriptors fine-tuned first, then attention trained
  on gradient-stopped features), backbone and attention are trained jointly by the one loss.

Extraction (`extract_multiscale`) runs an image pyramid, maps each cell to its receptive-field
centre in original-image pixels, keeps the features of highest attention and L2-normalises
the descriptors (optionally PCA-projected and normalised again).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from delf_baseline.pca import PcaProjection, load_pca
from delf_baseline.savedmodel import OFFICIAL_SCALES, postprocess
from lmkcomp.devices import resolve_device
from lmkcomp.errors import UserInputError
from lmkcomp.local.record import LocalFeatures
from lmkcomp.train.augment import IMAGENET_MEAN, IMAGENET_STD
from lmkcomp.train.checkpoint import load_checkpoint

#: the feature map's stride in input pixels: DELF takes ResNet's third stage
FEATURE_STRIDE = 16
#: receptive-field centre of cell 0 in input pixels. In a timm ResNet every strided layer
#: (stem conv 7x7 / pad 3 or 3x3 / pad 1, max-pool 3x3 / pad 1, block conv 3x3 / pad 1) has an
#: odd kernel k with padding (k - 1) / 2, so it maps output cell j to input centre s * j;
#: stride-1 layers keep centres, hence cell j of the stride-16 map is centred on pixel 16 j.
RF_OFFSET = 0.0
#: channels of the attention MLP's hidden layer (official DELF: 512)
DEFAULT_ATTENTION_HIDDEN = 512
#: pyramid levels whose short side falls below this many pixels are skipped: their feature
#: map would be empty or a single cell dominated by padding
MIN_SIDE = FEATURE_STRIDE


@dataclass(frozen=True)
class DelfSettings:
    """What builds a `TorchDelf`; stored in checkpoints so that loading needs nothing else."""

    backbone: str = "resnet18"
    num_classes: int = 1
    attention_hidden: int = DEFAULT_ATTENTION_HIDDEN


class TorchDelf(nn.Module):
    """DELF network (see the module docstring); built from random weights, never downloaded."""

    def __init__(self, settings: DelfSettings):
        super().__init__()
        self.settings = settings
        try:
            self.backbone = timm.create_model(settings.backbone, features_only=True, out_indices=(3,),
                                              pretrained=False)
        except RuntimeError as err:
            raise UserInputError(f"cannot build backbone {settings.backbone!r}: {err}") from err
        # out_indices=(3,) is layer3 for ResNets; other families number their stages otherwise,
        # and some (ViT) take one input size only, where DELF feeds an image pyramid
        stage = self.backbone.feature_info.module_name()[0]
        if stage != "layer3":
            raise UserInputError(f"backbone {settings.backbone!r}: feature index 3 is {stage!r}, not a ResNet's "
                                 "'layer3' (use a ResNet, e.g. resnet50)")
        stride = self.backbone.feature_info.reduction()[0]
        if stride != FEATURE_STRIDE:
            raise UserInputError(f"backbone {settings.backbone!r}: feature index 3 has stride {stride}, "
                                 f"DELF needs {FEATURE_STRIDE} (use a ResNet)")
        channels = self.backbone.feature_info.channels()[0]
        self.attention = nn.Sequential(
            nn.Conv2d(channels, settings.attention_hidden, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(settings.attention_hidden, 1, kernel_size=1),
            nn.Softplus(),
        )
        self.classifier = nn.Linear(channels, settings.num_classes)

    @property
    def feature_dim(self) -> int:
        """C, the raw descriptor dimension."""
        return self.classifier.in_features

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """`images` B x 3 x H x W (ImageNet-normalised) -> `features` B x C x h x w (raw),
        `attention` B x 1 x h x w (>= 0) and `logits` B x num_classes of the attention pool."""
        features = self.backbone(images)[0]
        attention = self.attention(features)
        pooled = (attention * F.normalize(features, dim=1)).mean(dim=(2, 3))
        return {"logits": self.classifier(pooled), "attention": attention, "features": features}


def cell_centres(height: int, width: int) -> np.ndarray:
    """(x, y) receptive-field centre, in pixels of the network's input, of every cell of an
    `height` x `width` feature map, row-major (cell (i, j) is row i * width + j):
    `x = j * FEATURE_STRIDE + RF_OFFSET`, `y = i * FEATURE_STRIDE + RF_OFFSET`."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.stack([cols.ravel(), rows.ravel()], axis=1) * float(FEATURE_STRIDE) + RF_OFFSET


def to_input_tensor(image_rgb: np.ndarray, device: torch.device | str = "cpu") -> Tensor:
    """H x W x 3 uint8 RGB -> 1 x 3 x H x W float tensor normalised like the training images."""
    if image_rgb.dtype != np.uint8 or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 uint8 RGB array, got shape {image_rgb.shape} "
                         f"dtype {image_rgb.dtype}")
    image = torch.from_numpy(np.ascontiguousarray(image_rgb)).to(device).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=image.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=image.device).view(3, 1, 1)
    return ((image - mean) / std).unsqueeze(0)


@torch.no_grad()
def extract_multiscale(model: TorchDelf, image_rgb: np.ndarray, scales: Sequence[float] = OFFICIAL_SCALES,
                       max_features: int = 1000, score_threshold: float | None = None,
                       pca: PcaProjection | None = None) -> LocalFeatures:
    """DELF local features of an H x W x 3 uint8 RGB image, locations in its pixels.

    For each scale s the image is resized to `round(s H) x round(s W)` (bilinear, antialiased
    when shrinking); levels with a side below `MIN_SIDE` are skipped. Every cell with
    attention >= `score_threshold` (all when None) becomes a candidate: location = its
    receptive-field centre (`cell_centres`) mapped to original pixels by the level's exact
    resize factor (pixel centres at integer coordinates), scale = the cell spacing
    `FEATURE_STRIDE` in original pixels, score = attention. The `max_features` candidates of
    highest score over all levels are kept (one global top-k, as the official extractor's
    final selection; it has no per-level quota). Descriptors are the L2-normalised features,
    then with `pca` projected and L2-normalised again (`delf_baseline.savedmodel.postprocess`).
    The model must be in eval mode.
    """
    height, width = image_rgb.shape[:2]
    device = next(model.parameters()).device
    image = to_input_tensor(image_rgb, device)
    boxes, descriptors, scores = [], [], []
    for scale in scales:
        level_h, level_w = round(height * scale), round(width * scale)
        if min(level_h, level_w) < MIN_SIDE:
            continue
        level = image if (level_h, level_w) == (height, width) else F.interpolate(
            image, size=(level_h, level_w), mode="bilinear", align_corners=False, antialias=scale < 1.0)
        output = model(level)
        features = output["features"][0].float().flatten(1).T.cpu().numpy()
        attention = output["attention"][0, 0].float().flatten().cpu().numpy()
        factor_x, factor_y = width / level_w, height / level_h
        centres = cell_centres(*output["features"].shape[2:])
        x = (centres[:, 0] + 0.5) * factor_x - 0.5
        y = (centres[:, 1] + 0.5) * factor_y - 0.5
        # postprocess reads boxes: a square of the cell spacing around each centre
        half_x, half_y = FEATURE_STRIDE * factor_x / 2, FEATURE_STRIDE * factor_y / 2
        level_boxes = np.stack([y - half_y, x - half_x, y + half_y, x + half_x], axis=1)
        keep = np.ones(attention.shape, bool) if score_threshold is None else attention >= score_threshold
        boxes.append(level_boxes[keep])
        descriptors.append(features[keep])
        scores.append(attention[keep])
    if not scores:
        return LocalFeatures.empty(model.feature_dim if pca is None else pca.dim)
    return postprocess(np.concatenate(boxes), np.concatenate(descriptors), np.concatenate(scores),
                       (width, height), (width, height), max_features, pca)


def load_delf(checkpoint: str | Path, device: torch.device | str = "cpu") -> tuple[TorchDelf, dict[str, Any]]:
    """(model in eval mode on `device`, checkpoint payload) from a checkpoint written by
    `delf_baseline.train.DelfTrainer` (`lmkcomp delf train`)."""
    payload = load_checkpoint(checkpoint)
    if "delf" not in payload:
        raise UserInputError(f"{checkpoint}: not a DELF checkpoint (written by lmkcomp delf train)")
    model = TorchDelf(DelfSettings(**payload["delf"]))
    model.load_state_dict(payload["model"])
    return model.to(device).eval(), payload


@dataclass(frozen=True)
class DelfTorchExtractor:
    """The `delf-torch` local extractor: `extract_multiscale` with a trained `TorchDelf`.

    - `checkpoint`: a `delf_baseline.train.DelfTrainer` checkpoint (`lmkcomp delf train`),
      loaded (weights only) on first use in each process, so the extractor pickles to
      workers without its model.
    - `pca`: optional PCA file (`.npz` from `lmkcomp delf pca` / `fit_pca`, or the
      official folder), all its directions used.
    - `scales`, `max_features`, `score_threshold`: see `extract_multiscale`.
    - `device`: where the model runs; not a setting (it does not change the features beyond
      floating-point rounding).
    """

    checkpoint: str | Path
    pca: str | Path | None = None
    scales: tuple[float, ...] = OFFICIAL_SCALES
    max_features: int = 1000
    score_threshold: float | None = None
    device: str = "cpu"
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    method: ClassVar[str] = "delf-torch"

    def __post_init__(self) -> None:
        object.__setattr__(self, "checkpoint", str(self.checkpoint))
        object.__setattr__(self, "pca", None if self.pca is None else str(self.pca))
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        if not self.scales or min(self.scales) <= 0:
            raise UserInputError(f"scales must be positive and not empty, got {self.scales!r}")
        if isinstance(self.max_features, bool) or not isinstance(self.max_features, int) or self.max_features < 1:
            raise UserInputError(f"max_features must be a positive integer, got {self.max_features!r}")
        if self.score_threshold is not None and not math.isfinite(self.score_threshold):
            raise UserInputError(f"score_threshold must be a finite number or None, got {self.score_threshold!r}")
        resolve_device(self.device)  # a missing GPU fails here, not in each worker's first image

    def __getstate__(self) -> dict[str, Any]:
        # the loaded model stays behind: each process loads its own
        return {**self.__dict__, "_cache": {}}

    def _loaded(self) -> tuple[TorchDelf, PcaProjection | None]:
        if not self._cache:
            model, _ = load_delf(self.checkpoint, self.device)
            self._cache["model"] = model
            self._cache["pca"] = None if self.pca is None else load_pca(self.pca, dim=None)
        return self._cache["model"], self._cache["pca"]

    @property
    def dim(self) -> int:
        model, pca = self._loaded()
        return model.feature_dim if pca is None else pca.dim

    def settings(self) -> dict[str, Any]:
        return {"method": self.method, "checkpoint": self.checkpoint, "pca": self.pca,
                "scales": list(self.scales), "max_features": self.max_features,
                "score_threshold": self.score_threshold}

    def extract(self, image_rgb: np.ndarray) -> LocalFeatures:
        model, pca = self._loaded()
        return extract_multiscale(model, image_rgb, self.scales, self.max_features, self.score_threshold, pca)
