"""Global poolings: a backbone feature map ``B x C x H x W`` -> one descriptor ``B x C``.

Each pooling is a power mean over the ``H x W`` positions and says its power in ``p``:
GeM has a (learnable) ``p``, average pooling is ``p = 1`` and max pooling ``p = inf``.
Multi-scale extraction pools each scale, then combines the scales with the same power
mean (:func:`power_mean`), so that several scales act like one larger pooling window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lmkcomp.errors import UserInputError
from lmkcomp.registry import Registry

__all__ = ["POOLINGS", "AvgPool", "GeM", "MaxPool", "create_pooling", "power_mean"]

POOLINGS: Registry[nn.Module] = Registry("pooling")


@POOLINGS.register("gem")
class GeM(nn.Module):
    """Generalized mean pooling (Radenovic et al., 2018).

    ``f_c = (mean_{h,w} clamp(x_{c,h,w}, eps)^p)^(1/p)``; ``p = 1`` is average pooling and
    ``p -> inf`` tends to max pooling. ``p`` is one scalar shared by all channels, learnt
    with the network unless ``trainable=False``. The clamp keeps ``x^p`` defined (and its
    gradient finite) where features are zero or negative.
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6, trainable: bool = True):
        super().__init__()
        if p <= 0:
            raise UserInputError(f"GeM power p must be > 0, got {p}")
        self.p = nn.Parameter(torch.tensor(float(p)), requires_grad=trainable)
        self.eps = eps

    @property
    def power(self) -> float:
        return float(self.p.detach())

    def forward(self, x: Tensor) -> Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(-2, -1)).pow(1.0 / self.p)

    def extra_repr(self) -> str:
        return f"p={self.power:.4f}, eps={self.eps}, trainable={self.p.requires_grad}"


@POOLINGS.register("avg")
class AvgPool(nn.Module):
    """Average over ``H x W``: the power mean with ``p = 1``."""

    power = 1.0

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(-2, -1))


@POOLINGS.register("max")
class MaxPool(nn.Module):
    """Maximum over ``H x W`` (MAC): the power mean with ``p = inf``."""

    power = math.inf

    def forward(self, x: Tensor) -> Tensor:
        return x.amax(dim=(-2, -1))


def create_pooling(name: str, **kwargs) -> nn.Module:
    """Build the pooling registered as `name` (``gem``, ``avg``, ``max``)."""
    return POOLINGS.create(name, **kwargs)


def power_mean(features: Sequence[Tensor], p: float, eps: float = 1e-6) -> Tensor:
    """Combine same-shaped pooled descriptors (e.g. one per scale) by a power mean.

    ``(mean_s clamp(f_s, eps)^p)^(1/p)``; ``p = 1`` is the plain mean (no clamp) and
    ``p = inf`` the element-wise maximum. Use the pooling's own ``power`` so that
    combining scales matches how each scale was pooled.
    """
    if not features:
        raise ValueError("power_mean needs at least one descriptor")
    stacked = torch.stack(list(features))
    if math.isinf(p):
        return stacked.amax(dim=0)
    if p == 1.0:
        return stacked.mean(dim=0)
    return stacked.clamp(min=eps).pow(p).mean(dim=0).pow(1.0 / p)
