"""The torch device a `--device` option or a `device` setting names, checked before any work.

A device the machine does not have (``cuda`` without a GPU, ``cuda:3`` on a two-GPU machine)
is a user error naming the setting, raised before a model is built or a file is read, rather
than torch's error from deep inside the first tensor copy.
"""

from __future__ import annotations

import torch

from lmkcomp.errors import UserInputError

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def parse_device(name: str, setting: str = "device") -> torch.device:
    """The torch device "cpu", "cuda" or "cuda:N" names, checked for its spelling only (not
    for being on this machine: for a device of another node). `setting` is what the user wrote
    it as (e.g. "--device"), for messages."""
    if not isinstance(name, str):
        raise UserInputError(f"{setting} {name!r}: expected {DEVICE_CHOICES}")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserInputError(f"{setting} {name!r}: unknown device; expected {DEVICE_CHOICES}") from None
    if device.type not in ("cpu", "cuda"):
        raise UserInputError(f"{setting} {name!r}: not supported; expected {DEVICE_CHOICES}")
    return device


def resolve_device(name: str, setting: str = "device") -> torch.device:
    """The torch device `name` names: "auto" (a GPU when torch sees one, else the CPU), "cpu",
    "cuda" or "cuda:N", which this machine must have. `setting` is what the user wrote it as
    (e.g. "--device"), for messages."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = parse_device(name, setting)
    if device.type == "cuda":
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus == 0:
            raise UserInputError(f"{setting} {name!r}: torch sees no CUDA GPU on this machine; use cpu or auto")
        if device.index is not None and device.index >= gpus:
            raise UserInputError(f"{setting} {name!r}: torch sees {gpus} CUDA GPU(s), numbered from 0")
    return device
