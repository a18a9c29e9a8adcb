"""Model parts of the GeM + ArcFace/CosFace landmark-descriptor trainer.

Each part has a factory and, where there are alternatives, a registry of named variants:
backbones (any conv-like timm model), poolings (``POOLINGS``), the neck, heads
(``HEADS``) and losses (``LOSSES``); :func:`create_model` assembles them from a
:class:`ModelConfig`.
"""

from __future__ import annotations

from lmkcomp.models.backbones import create_backbone
from lmkcomp.models.heads import HEADS, create_head, dynamic_margins, head_options
from lmkcomp.models.losses import LOSSES, class_weights_inverse_log, create_loss
from lmkcomp.models.model import LandmarkModel, ModelConfig, create_model, freeze_batchnorm
from lmkcomp.models.neck import Neck
from lmkcomp.models.pooling import POOLINGS, create_pooling, power_mean
from lmkcomp.models.weights import LoadReport, load_weights, read_state_dict

__all__ = [
    "HEADS",
    "LOSSES",
    "POOLINGS",
    "LandmarkModel",
    "LoadReport",
    "ModelConfig",
    "Neck",
    "class_weights_inverse_log",
    "create_backbone",
    "create_head",
    "create_loss",
    "create_model",
    "create_pooling",
    "dynamic_margins",
    "freeze_batchnorm",
    "head_options",
    "load_weights",
    "power_mean",
    "read_state_dict",
]
