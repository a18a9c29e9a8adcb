"""Training losses, and class weights against the GLDv2 long tail.

Every loss is called as ``loss(logits, labels, embeddings=None)``: ``logits`` ``B x C`` from
the head, ``labels`` ``B`` class indices, ``embeddings`` ``B x D`` the neck output. Plain
cross-entropy ignores the embeddings; the Center loss penalises them.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmkcomp.errors import UserInputError
from lmkcomp.registry import Registry

__all__ = ["LOSSES", "CenterLoss", "CrossEntropy", "class_weights_inverse_log", "create_loss", "loss_options"]

LOSSES: Registry[nn.Module] = Registry("loss")


def _check_label_smoothing(label_smoothing: float) -> None:
    if not 0.0 <= label_smoothing < 1.0:
        raise UserInputError(f"label smoothing must be in [0, 1), got {label_smoothing}")


@LOSSES.register("ce")
class CrossEntropy(nn.CrossEntropyLoss):
    """Cross-entropy on logits, optionally weighted per class and with label smoothing."""

    def __init__(self, class_weights: Tensor | None = None, label_smoothing: float = 0.0):
        _check_label_smoothing(label_smoothing)
        super().__init__(weight=class_weights, label_smoothing=label_smoothing)

    def forward(self, logits: Tensor, labels: Tensor, embeddings: Tensor | None = None) -> Tensor:
        return super().forward(logits, labels)


@LOSSES.register("center")
class CenterLoss(nn.Module):
    """Softmax cross-entropy plus the modified Center loss of Boiarov & Tyantov (2019), Eq. 1.

    For a batch of ``m`` rows with embeddings ``x_i`` and labels ``y_i``, where the classes
    ``0 .. num_centers - 1`` are landmarks and any higher class (the non-landmark class
    ``n + 1`` of the paper) has no center::

        loss = CE(logits, y) + (lambda / 2m) * sum_{i: y_i < num_centers} ||x_i - c_{y_i}||^2

    i.e. Eq. 1 divided by the batch size ``m`` (non-landmark rows count in ``m`` but add no
    center term: they only enter the softmax). ``lambda`` is `center_weight`.

    Gradients:

    - embeddings: ``d loss / d x_i = (lambda / m) (x_i - c_{y_i})`` for landmark rows, ``0``
      from the center term for non-landmark rows;
    - centers: not the derivative of the ``lambda``-weighted term but the update of Wen et al.
      (2016), ``grad c_j = sum_{i: y_i = j} (c_j - x_i) / (1 + n_j)`` with ``n_j`` the rows of
      class ``j`` in the batch (classes absent from the batch get 0). The centers are a
      parameter that the optimizer steps with its own learning rate ``alpha`` (the
      ``centers`` part of ``optim.part_lr``): with plain SGD (no momentum, no weight decay,
      which is how the trainer sets up that group) one step is exactly Wen et al.'s
      ``c_j <- c_j - alpha * grad c_j``, so ``alpha`` (Wen et al. use 0.5) does not depend on
      ``lambda``. Implemented as a term whose value is exactly zero and whose gradient with
      respect to the centers is the update above (``s - s.detach()``). Under DDP each process
      computes it over its share of the batch and the processes' gradients are averaged.

    The centers start from a standard normal draw, the scale of the batch-normalised embedding.
    """

    def __init__(
        self,
        num_centers: int,
        embedding_size: int,
        center_weight: float = 5e-5,
        class_weights: Tensor | None = None,
        label_smoothing: float = 0.0,
    ):
        super().__init__()
        if num_centers < 1 or embedding_size < 1:
            raise UserInputError(f"Center loss needs num_centers >= 1 and embedding_size >= 1, got {num_centers}, {embedding_size}")
        if center_weight < 0:
            raise UserInputError(f"Center loss weight (lambda) must be >= 0, got {center_weight}")
        _check_label_smoothing(label_smoothing)
        self.num_centers = num_centers
        self.center_weight = center_weight
        self.label_smoothing = label_smoothing
        self.register_buffer("class_weights", class_weights)
        self.centers = nn.Parameter(torch.randn(num_centers, embedding_size))

    def forward(self, logits: Tensor, labels: Tensor, embeddings: Tensor | None = None) -> Tensor:
        if embeddings is None:
            raise ValueError("the Center loss needs the embeddings")
        softmax = F.cross_entropy(logits, labels, weight=self.class_weights, label_smoothing=self.label_smoothing)
        landmark = labels < self.num_centers
        x, y = embeddings[landmark], labels[landmark]
        centers = self.centers[y]
        pull = 0.5 * self.center_weight * (x - centers.detach()).square().sum() / len(labels)
        per_class = torch.bincount(y, minlength=self.num_centers).to(x.dtype)
        update = 0.5 * ((x.detach() - centers).square().sum(dim=1) / (1.0 + per_class[y])).sum()
        return softmax + pull + (update - update.detach())


def loss_options(name: str) -> frozenset[str]:
    """Keyword options the loss registered as `name` takes, beyond class weights and smoothing."""
    params = inspect.signature(LOSSES.get(name)).parameters
    return frozenset(params) - {"class_weights", "label_smoothing"}


def create_loss(name: str = "ce", class_weights: Tensor | None = None, label_smoothing: float = 0.0,
                **options) -> nn.Module:
    """Build the loss registered as `name`; it is called as ``loss(logits, labels, embeddings)``.

    `options` go to the loss (e.g. ``num_centers``, ``embedding_size``, ``center_weight`` for
    "center"); one it does not take is a UserInputError that lists the ones it does.
    """
    accepted = loss_options(name)
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise UserInputError(
            f"loss {name!r} takes no option {', '.join(unknown)}; it takes: {', '.join(sorted(accepted)) or 'none'}"
        )
    return LOSSES.create(name, class_weights=class_weights, label_smoothing=label_smoothing, **options)


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
