"""Backbones: any timm model, cut before its global pooling so it returns a feature map.

The landmark model pools the map itself (GeM), so the backbone must give a conv-like
``B x C x H x W`` map. Models whose features are tokens (``B x N x C``, e.g. ViT) or
channels-last maps are refused with a UserInputError when built rather than failing
inside the pooling later.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import timm
import torch
from torch import nn

from lmkcomp.errors import UserInputError
from lmkcomp.models.weights import load_weights

__all__ = ["create_backbone"]


def create_backbone(
    name: str, pretrained_path: str | Path | None = None, **timm_kwargs
) -> tuple[nn.Module, int]:
    """Build timm model `name` with ``num_classes=0, global_pool=""``; return it and its channels.

    Weights are never downloaded: the model starts from random initialisation and, when
    `pretrained_path` is given, the local checkpoint there is loaded non-strictly (a
    classifier in the checkpoint is reported as unexpected and ignored). `timm_kwargs` go
    to ``timm.create_model`` (e.g. ``drop_path_rate``).
    """
    if timm_kwargs.pop("pretrained", False):
        raise UserInputError("backbone weights are never downloaded; pass a local file as pretrained_path")
    timm_kwargs.update(num_classes=0, global_pool="")
    try:
        model = timm.create_model(name, pretrained=False, **timm_kwargs)
    except RuntimeError as err:
        if not str(err).startswith(("Unknown model", "Invalid pretrained tag")):
            raise
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UserInputError(f"unknown timm backbone {name!r}{hint}") from err
    channels = int(model.num_features)
    _check_feature_map(model, name, channels, in_chans=timm_kwargs.get("in_chans", 3))
    if pretrained_path is not None:
        load_weights(model, pretrained_path)
    return model, channels


def _check_feature_map(model: nn.Module, name: str, channels: int, in_chans: int) -> None:
    """Run one image of the model's default size through it and require ``1 x C x H x W``."""
    _, height, width = model.pretrained_cfg.get("input_size", (3, 224, 224))
    size = (in_chans, height, width)
    was_training = model.training
    model.eval()  # no batch-norm statistics updated by the probe
    try:
        with torch.no_grad():
            shape = tuple(model(torch.zeros(1, *size)).shape)
    finally:
        model.train(was_training)
    if len(shape) != 4 or shape[1] != channels:
        raise UserInputError(
            f"backbone {name!r} gives features of shape {shape}, not a 1 x {channels} x H x W "
            "feature map; only convolutional (conv-like) backbones are supported"
        )

