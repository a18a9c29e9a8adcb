"""Training losses on head logits, and class weights against the GLDv2 long tail."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lmkcomp.errors import UserInputError
from lmkcomp.registry import Registry

__all__ = ["LOSSES", "class_weights_inverse_log", "create_loss"]

LOSSES: Registry[nn.Module] = Registry("loss")


@LOSSES.register("ce")
def cross_entropy(class_weights: Tensor | None = None, label_smoothing: float = 0.0) -> nn.Module:
    """Cross-entropy on logits, optionally weighted per class and with label smoothing."""
    if not 0.0 <= label_smoothing < 1.0:
        raise UserInputError(f"label smoothing must be in [0, 1), got {label_smoothing}")
    return nn.CrossEntropyLoss(weight=class_weights, label_smoothing=label_smoothing)


def create_loss(name: str = "ce", class_weights: Tensor | None = None, label_smoothing: float = 0.0) -> nn.Module:
    """Build the loss registered as `name`; it is called as ``loss(logits, labels)``."""
    return LOSSES.create(name, class_weights=class_weights, label_smoothing=label_smoothing)


def class_weights_inverse_log(class_counts: Tensor | Sequence[int]) -> Tensor:
    """Per-class loss weights ``w_c = 1 / log(n_c + 1)``, rescaled so that ``mean(w) = 1``.

    Rare classes weigh more, but only logarithmically. ``n_c + 1`` rather than ``n_c``
    because ``log(1) = 0`` would make a single-image class infinitely heavy; the shift
    keeps the weights finite and still strictly decreasing in ``n_c``. The rescaling
    keeps the loss on the scale of the unweighted one. Returns float32.
    """
    counts = torch.as_tensor(class_counts, dtype=torch.float64).flatten()
    if counts.numel() == 0 or bool((counts < 1).any()):
        raise UserInputError("class counts for class weights must be non-empty and all >= 1")
    weights = 1.0 / torch.log(counts + 1.0)
    return (weights / weights.mean()).float()
