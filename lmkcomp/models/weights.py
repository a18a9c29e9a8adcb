"""Load a local checkpoint into a module, tolerating the usual differences.

Checkpoints come from other trainers: wrapped in a dict with the epoch and the optimizer,
saved from a DistributedDataParallel (``module.``) or ``torch.compile`` (``_orig_mod.``)
model, or with a classifier of another size. :func:`load_weights` loads every tensor that
fits and reports the rest in a :class:`LoadReport` instead of failing on the first one.
Nothing is ever downloaded, and pickles are read with ``weights_only=True`` so a
checkpoint cannot run code.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from lmkcomp.errors import UserInputError
from lmkcomp.torch_files import load_weights_only

__all__ = ["BACKBONE_PREFIX", "LoadReport", "backbone_state", "load_backbone_weights", "load_state", "load_weights",
           "log_report", "read_state_dict"]

log = logging.getLogger(__name__)

# Keys under which training scripts commonly nest the model's state dict.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
# Prefixes added by DistributedDataParallel and torch.compile wrappers.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
#: the prefix of the backbone's tensors in a whole landmark model's state dict (an ``lmkcomp
#: train`` checkpoint); plain backbone weights (timm names) have none
BACKBONE_PREFIX = "backbone."
# How many keys a summary names per category before it says "...".
_SUMMARY_KEYS = 5


@dataclass
class LoadReport:
    """What :func:`load_weights` did with each tensor of a checkpoint."""

    path: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    # (key, shape in the checkpoint, shape in the module); such tensors are skipped.
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    # checkpoint tensors left out on purpose (e.g. another dataset's classifier)
    left_out: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """True when every module tensor was loaded and every checkpoint tensor used."""
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        """One line: counts, and the first few keys of each problem."""
        total = len(self.loaded) + len(self.missing) + len(self.mismatched)
        parts = [f"{self.path}: loaded {len(self.loaded)}/{total} tensors"]
        if self.missing:
            parts.append(f"{len(self.missing)} missing ({_first(self.missing)})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected ({_first(self.unexpected)})")
        if self.mismatched:
            shapes = [f"{k}: checkpoint {tuple(a)} vs model {tuple(b)}" for k, a, b in self.mismatched]
            parts.append(f"{len(self.mismatched)} shape mismatches ({_first(shapes)})")
        if self.left_out:
            parts.append(f"{len(self.left_out)} left out, their parts start afresh ({_first(self.left_out)})")
        return "; ".join(parts)


def _first(items: list[str]) -> str:
    shown = ", ".join(items[:_SUMMARY_KEYS])
    return shown + (", ..." if len(items) > _SUMMARY_KEYS else "")


def _strip_prefixes(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix) :], True
    return key


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a local checkpoint as a flat ``name -> tensor`` dict with wrapper prefixes removed.

    ``.safetensors`` files are read with safetensors; anything else with
    `lmkcomp.torch_files.load_weights_only`. A dict holding the state dict
    under ``state_dict``, ``model_state_dict`` or ``model`` is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        try:
            raw = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, RuntimeError, EOFError, ValueError) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise UserInputError(f"{path}: cannot load weights: {reason}") from err
    else:
        raw = load_weights_only(path, "weights file")

    if isinstance(raw, Mapping):
        for key in _WRAPPER_KEYS:
            if isinstance(raw.get(key), Mapping):
                raw = raw[key]
                break
    if not isinstance(raw, Mapping) or not all(isinstance(v, Tensor) for v in raw.values()):
        raise UserInputError(
            f"{path}: not a state dict (expected name -> tensor, possibly under "
            f"{' / '.join(repr(k) for k in _WRAPPER_KEYS)})"
        )
    return {_strip_prefixes(str(k)): v for k, v in raw.items()}


def load_weights(module: nn.Module, path: str | Path, strict: bool = False) -> LoadReport:
    """Copy the tensors of the checkpoint at `path` into `module` where names and shapes match.

    Tensors whose shapes differ are skipped (e.g. a classifier trained on another number
    of classes). With ``strict=True`` any missing, unexpected or mismatched tensor is a
    UserInputError and nothing is loaded. The summary is logged at INFO when everything
    matched and at WARNING otherwise.
    """
    report = load_state(module, read_state_dict(path), str(path), strict)
    log_report(report)
    return report


def backbone_state(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """The backbone's tensors of `state` under timm's names, and the keys left out.

    A whole landmark model (keys under :data:`BACKBONE_PREFIX`, e.g. a `cpu-v1` pretraining
    run) gives its backbone with the prefix removed and leaves out its pooling, neck and head;
    any other state dict is taken as backbone weights already.
    """
    if not any(key.startswith(BACKBONE_PREFIX) for key in state):
        return dict(state), []
    kept = {key[len(BACKBONE_PREFIX):]: value for key, value in state.items() if key.startswith(BACKBONE_PREFIX)}
    return kept, [key for key in state if not key.startswith(BACKBONE_PREFIX)]


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> LoadReport:
    """Load the backbone weights at `path` into `backbone` (non-strict, reported like
    :func:`load_weights`): plain timm weights, or the backbone of an ``lmkcomp train``
    checkpoint (:func:`backbone_state`), whose other parts are reported as left out."""
    state, left_out = backbone_state(read_state_dict(path))
    report = load_state(backbone, state, str(path))
    report.left_out = left_out
    log_report(report)
    return report


def log_report(report: LoadReport) -> None:
    """Log `report`'s summary: at INFO when everything matched, else at WARNING."""
    log.log(logging.INFO if report.clean else logging.WARNING, "%s", report.summary())


def load_state(module: nn.Module, checkpoint: Mapping[str, Tensor], path: str, strict: bool = False) -> LoadReport:
    """:func:`load_weights` on an already read ``name -> tensor`` dict (`path` names it in the
    report), without logging."""
    expected = module.state_dict()
    report = LoadReport(path=path)
    usable: dict[str, Tensor] = {}
    for key, tensor in checkpoint.items():
        if key not in expected:
            report.unexpected.append(key)
        elif tensor.shape != expected[key].shape:
            report.mismatched.append((key, tuple(tensor.shape), tuple(expected[key].shape)))
        else:
            usable[key] = tensor
    mismatched = {key for key, _, _ in report.mismatched}
    report.missing = [k for k in expected if k not in usable and k not in mismatched]
    report.loaded = list(usable)

    if strict and not report.clean:
        raise UserInputError(f"checkpoint does not match the model exactly: {report.summary()}")
    module.load_state_dict(usable, strict=False)
    return report
