"""Neck: pooled backbone features ``B x C`` -> the ``B x D`` descriptor that retrieval uses."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from lmkcomp.errors import UserInputError

__all__ = ["Neck"]

NeckActivation = Literal["none", "prelu"]


class Neck(nn.Module):
    """``[Dropout] -> Linear(bias=False) -> BatchNorm1d(shift fixed at 0) -> [PReLU]`` (the 2019
    winner's FC + BN).

    The linear layer has no bias because the batch norm right after it subtracts the
    batch mean anyway. The batch norm's shift (``bias``) stays at zero and is not learnt, as in
    re-identification's "BNNeck" (Luo et al., 2019): a learnt shift adds one vector to every
    embedding, which a softmax classifier does not mind but which pulls all L2-normalised
    descriptors towards one direction. Its scale is learnt. Dropout is left out when
    ``dropout == 0``, PReLU unless ``activation == "prelu"``.
    """

    def __init__(
        self,
        in_features: int,
        embedding_size: int = 512,
        activation: NeckActivation = "none",
        dropout: float = 0.0,
    ):
        super().__init__()
        if activation not in ("none", "prelu"):
            raise UserInputError(f"unknown neck activation {activation!r}; known: none, prelu")
        if not 0.0 <= dropout < 1.0:
            raise UserInputError(f"neck dropout must be in [0, 1), got {dropout}")
        layers: list[nn.Module] = []
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        norm = nn.BatchNorm1d(embedding_size)
        norm.bias.requires_grad_(False)
        layers += [nn.Linear(in_features, embedding_size, bias=False), norm]
        if activation == "prelu":
            layers.append(nn.PReLU())
        self.layers = nn.Sequential(*layers)
        self.embedding_size = embedding_size

    def forward(self, features: Tensor) -> Tensor:
        return self.layers(features)
