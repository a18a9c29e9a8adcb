"""The landmark descriptor model: backbone -> pooling -> neck -> head.

The 2019 GLDv2 retrieval winner's recipe is the default: GeM pooling (p = 3, learnt), an
FC + BN neck to a 512-d embedding, ArcFace with m = 0.3, s = 30. The 2020/2021 winners'
sub-centre ArcFace (k = 3) with dynamic margins is ``head="subcenter_arcface",
dynamic_margin=True``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn

from lmkcomp.errors import UserInputError
from lmkcomp.models.backbones import create_backbone
from lmkcomp.models.heads import create_head, head_options
from lmkcomp.models.neck import Neck, NeckActivation
from lmkcomp.models.pooling import create_pooling
from lmkcomp.models.weights import LoadReport, load_state, log_report, read_state_dict

__all__ = ["LandmarkModel", "ModelConfig", "create_model", "freeze_batchnorm", "load_pretrained"]


@dataclass
class ModelConfig:
    """Everything that defines a :class:`LandmarkModel` except the classes.

    `pretrained` is a local file (never downloaded) that the model starts from (see
    :func:`load_pretrained`): backbone weights such as ImageNet ones, or a checkpoint of an
    ``lmkcomp train`` run (e.g. on the `v1` corpus), whose backbone and pooling are
    transferred, its neck too with `pretrained_neck`, while the head always starts afresh
    for the new classes. `gem_p` and `gem_trainable` apply to ``pooling="gem"``; `margin` ..
    `margin_max` apply to the heads that take them (see
    :func:`lmkcomp.models.heads.head_options`).
    """

    backbone: str
    pretrained: str | None = None
    pretrained_neck: bool = False
    pooling: str = "gem"
    gem_p: float = 3.0
    gem_trainable: bool = True
    embedding_size: int = 512
    neck_activation: NeckActivation = "none"
    neck_dropout: float = 0.0
    head: str = "arcface"
    margin: float = 0.3
    scale: float = 30.0
    #: sub-centres per class; None: the head's own default (1 for arcface, 3 for subcenter_arcface)
    subcenters: int | None = None
    dynamic_margin: bool = False
    margin_min: float = 0.05
    margin_max: float = 0.5


class LandmarkModel(nn.Module):
    """``images -> backbone feature map -> pooling -> neck (embedding) -> head (logits)``."""

    def __init__(self, backbone: nn.Module, pooling: nn.Module, neck: Neck, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        self.neck = neck
        self.head = head

    @property
    def pooling_p(self) -> float:
        """Power of the pooling's power mean (GeM's current p; 1 for avg, inf for max).

        Multi-scale extraction combines the :meth:`pool_features` of several scales with
        :func:`lmkcomp.models.pooling.power_mean` at this power before the neck.
        """
        return float(self.pooling.power)

    def pool_features(self, images: Tensor) -> Tensor:
        """Pooled backbone features ``B x C``, before the neck."""
        return self.pooling(self.backbone(images))

    def forward(self, images: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        """``{"embedding": B x D neck output (not normalised), "logits": B x classes}``.

        With `labels`, margin heads add their margin to the target logits (training);
        without, the logits carry no margin.
        """
        embedding = self.neck(self.pool_features(images))
        return {"embedding": embedding, "logits": self.head(embedding, labels)}

    def embed(self, images: Tensor) -> Tensor:
        """L2-normalised descriptors ``B x D`` for retrieval; the head is not run."""
        return self.embed_pooled(self.pool_features(images))

    def embed_pooled(self, pooled: Tensor) -> Tensor:
        """L2-normalised descriptors from already pooled features (e.g. combined scales)."""
        return F.normalize(self.neck(pooled), dim=1)


def create_model(
    config: ModelConfig, num_classes: int, class_counts: Tensor | Sequence[int] | None = None
) -> LandmarkModel:
    """Build the model that `config` describes with a head over `num_classes` classes.

    `class_counts` (training images per class) is needed with ``dynamic_margin=True``.
    """
    backbone, channels = create_backbone(config.backbone)
    pooling_kwargs = {"p": config.gem_p, "trainable": config.gem_trainable} if config.pooling == "gem" else {}
    pooling = create_pooling(config.pooling, **pooling_kwargs)
    neck = Neck(channels, config.embedding_size, config.neck_activation, config.neck_dropout)

    accepted = head_options(config.head)
    if config.dynamic_margin and "dynamic_margin" not in accepted:
        raise UserInputError(f"head {config.head!r} has no dynamic margins; use arcface or subcenter_arcface")
    options = {
        "margin": config.margin,
        "scale": config.scale,
        "subcenters": config.subcenters,
        "dynamic_margin": config.dynamic_margin,
        "margin_min": config.margin_min,
        "margin_max": config.margin_max,
    }
    # ModelConfig carries every head's options; each head gets only those it takes, and those
    # left unset keep the head's defaults (a default of 3 sub-centres here once turned every
    # "arcface" into sub-centre ArcFace)
    head_kwargs = {key: value for key, value in options.items() if key in accepted and value is not None}
    head = create_head(config.head, config.embedding_size, num_classes, class_counts=class_counts, **head_kwargs)
    model = LandmarkModel(backbone, pooling, neck, head)
    if config.pretrained is not None:
        load_pretrained(model, config.pretrained, config.pretrained_neck)
    return model


#: parts of a landmark model that a pretrained ``lmkcomp train`` checkpoint hands on; the head
#: never (its classes are another dataset's), the neck on request
TRANSFERRED_PARTS = ("backbone.", "pooling.")


def load_pretrained(model: LandmarkModel, path: str | Path, neck: bool = False) -> LoadReport:
    """Start `model` from the weights at `path`; return what was loaded, missing and left out.

    A checkpoint of a whole landmark model (an ``lmkcomp train`` run's ``checkpoint-*.pt``,
    recognised by its ``backbone.`` keys) gives its backbone and pooling, and its neck when
    `neck`; the rest (its head, whose classes were another dataset's) is left out and starts
    afresh. Any other file is read as weights of the backbone alone (timm names, e.g.
    ImageNet weights saved from another machine). Shapes that differ are skipped; missing,
    unexpected and mismatched tensors are reported. The report is logged and kept as
    ``model.pretrained_report``.
    """
    state = read_state_dict(path)
    if any(key.startswith("backbone.") for key in state):
        parts = TRANSFERRED_PARTS + (("neck.",) if neck else ())
        wanted = {key: value for key, value in state.items() if key.startswith(parts)}
        # the model's own parts that were not asked for are not "missing": they start afresh
        target = nn.ModuleDict({name.rstrip("."): getattr(model, name.rstrip(".")) for name in parts})
        report = load_state(target, wanted, str(path))
        report.left_out = [key for key in state if key not in wanted]
        if report.missing or report.mismatched:
            # a part half transferred is a random start in disguise
            raise UserInputError(f"{path}: the checkpoint's {'/'.join(p.rstrip('.') for p in parts)} do not fit "
                                 f"this model ({report.summary()}); was it trained with another backbone?")
    else:
        report = load_state(model.backbone, state, str(path))
    if not report.loaded:
        raise UserInputError(f"{path}: no tensor fits the model ({report.summary()}); is it for another backbone?")
    log_report(report)
    model.pretrained_report = report
    return report


def freeze_batchnorm(model: nn.Module) -> int:
    """Put every batch norm of `model` in eval mode and stop its parameters' gradients.

    For the 2019 winner's last epoch at full resolution: batches are then too small for
    reliable statistics, so the running ones are kept. ``model.train()`` switches batch
    norms back to training mode, so call this after it. Returns how many layers were
    frozen.
    """
    frozen = 0
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
            module.requires_grad_(False)
            frozen += 1
    return frozen
