"""Checkpoints: written atomically, loaded with `weights_only=True`, self-describing.

A checkpoint holds the model and (for resuming) the optimizer, scheduler, grad-scaler and RNG
states, the position in training (epoch, batch), the resolved config and the label mapping
(class index -> landmark id), so extraction needs nothing but the file.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmkcomp.errors import UserInputError
from lmkcomp.fileio import atomic_write_bytes
from lmkcomp.torch_files import load_weights_only

FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """torch.save `payload` to `path` atomically (a kill never leaves a truncated file)."""
    buffer = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **payload}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint`; safe (`weights_only=True`)."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: checkpoint not found")
    payload = load_weights_only(path, "checkpoint")
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise UserInputError(f"{path}: not an lmkcomp checkpoint (format_version {FORMAT_VERSION} expected)")
    return payload


def rng_states() -> dict[str, Any]:
    """The global RNG states (torch, numpy, random) as weights_only-loadable values."""
    numpy_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]],
        "python": random.getstate(),
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, *rest = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


def load_trained_model(path: str | Path):
    """(model in eval mode, its TrainConfig, landmark ids by class index) from a checkpoint.

    Logit ``i < len(landmark_ids)`` is landmark ``landmark_ids[i]``; a model trained with
    non-landmark images has one more logit, the non-landmark class, at ``len(landmark_ids)``.
    """
    from lmkcomp.config import from_dict
    from lmkcomp.models import create_model
    from lmkcomp.train.config import TrainConfig

    checkpoint = load_checkpoint(path)
    config = from_dict(TrainConfig, checkpoint["config"])
    # the backbone's initial weights are replaced by the checkpoint's: do not reload them
    config.model.pretrained = None
    landmark_ids = list(checkpoint["landmark_ids"])
    # checkpoints written before non-landmark classes existed have no such key
    num_classes = len(landmark_ids) + (checkpoint.get("non_landmark_class") is not None)
    model = create_model(config.model, num_classes, class_counts=torch.as_tensor(checkpoint["class_counts"]))
    model.load_state_dict(checkpoint["model"])
    return model.eval(), config, landmark_ids
