"""The optimizer, with one parameter group per model part, and the learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from lmkcomp.models.model import LandmarkModel
from lmkcomp.train.config import OptimConfig, PartLearningRates

__all__ = ["PARTS", "create_optimizer", "create_scheduler", "lr_factor", "part_learning_rates", "part_parameters"]

#: the parts of a landmark model that can learn at different rates (and in this group order)
PARTS = ("backbone", "embedding", "classifier", "centers")


def part_parameters(model: LandmarkModel, loss: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The parameters of each part: ``backbone`` (trunk and pooling), ``embedding`` (the neck),
    ``classifier`` (the head) and ``centers`` (the loss's own, e.g. the Center loss's centers)."""
    return {
        "backbone": [*model.backbone.parameters(), *model.pooling.parameters()],
        "embedding": list(model.neck.parameters()),
        "classifier": list(model.head.parameters()),
        "centers": list(loss.parameters()),
    }


def part_learning_rates(optim: OptimConfig, override: PartLearningRates | None = None) -> dict[str, float]:
    """Learning rate of each part: `override`'s where set, else ``optim.part_lr``'s, else the
    default (``optim.lr``; the classifier ``optim.lr * optim.head_lr_scale``)."""
    rates = {part: optim.lr for part in PARTS}
    rates["classifier"] = optim.lr * optim.head_lr_scale
    for source in (optim.part_lr, override):
        if source is not None:
            rates.update({part: value for part, value in vars(source).items() if value is not None})
    return rates


def create_optimizer(optim: OptimConfig, model: LandmarkModel, loss: nn.Module,
                     rates: dict[str, float]) -> torch.optim.Optimizer:
    """SGD (Nesterov momentum) or AdamW over the groups of each non-empty part, named by ``"part"``.

    Each part has a group of its weight matrices and kernels, with weight decay, and a group
    of its one-dimensional parameters (batch-norm scales and shifts, biases, GeM's p), without:
    decay pulls a batch-norm scale or a bias towards zero, which shrinks or shifts the
    embedding instead of regularising it. Only parameters that learn are listed (the neck's
    batch-norm shift is fixed). The centers group has no weight decay and, under SGD, no
    momentum: a step is then exactly the Center loss update ``c <- c - alpha * grad c`` with
    ``alpha`` its learning rate (under AdamW the centers take Adam's normalised steps
    instead). Every group follows the schedule.
    """
    groups = []
    for part, params in part_parameters(model, loss).items():
        learning = [param for param in params if param.requires_grad]
        if part == "centers":
            split = [(learning, 0.0)]
        else:
            split = [([p for p in learning if p.ndim > 1], optim.weight_decay),
                     ([p for p in learning if p.ndim <= 1], 0.0)]
        for members, decay in split:
            if not members:
                continue
            group = {"part": part, "params": members, "lr": rates[part], "weight_decay": decay}
            if part == "centers" and optim.name == "sgd":
                group.update(momentum=0.0, nesterov=False)
            groups.append(group)
    if optim.name == "sgd":
        return torch.optim.SGD(groups, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay, nesterov=True)
    return torch.optim.AdamW(groups, lr=optim.lr, weight_decay=optim.weight_decay)


def lr_factor(optim: OptimConfig, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Multiplier of every group's learning rate at optimizer step ``step`` (0-based).

    Linear warm-up over `warmup_steps`, then ``"cosine"``: from 1 down to ``min_lr_ratio`` over
    the remaining steps; ``"step"``: ``step_gamma ** (milestones passed)``, a milestone ``f``
    being passed once ``step >= f * total_steps``.
    """

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        if optim.schedule == "step":
            return optim.step_gamma ** sum(step >= milestone * total_steps for milestone in optim.step_milestones)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return optim.min_lr_ratio + (1.0 - optim.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def create_scheduler(optimizer: torch.optim.Optimizer, optim: OptimConfig, warmup_steps: int,
                     total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The per-step schedule of :func:`lr_factor` on every group."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(optim, warmup_steps, total_steps))
