"""The local-feature extractors by name, and the interface every extractor implements.

An extractor turns one RGB image into a `LocalFeatures` record whose locations are in the
pixels of the image it was given (it may work on a downscaled copy internally and map back).
It must be picklable, since split-wide extraction sends it to worker processes: extractors
that hold a model should load it lazily, on first use in each process.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from lmkcomp.config import typed_options
from lmkcomp.local.record import LocalFeatures
from lmkcomp.local.sift import SiftExtractor
from lmkcomp.registry import Registry


class LocalExtractor(Protocol):
    """What `extract_local_split` and the store need from an extractor."""

    #: the store's `method`: names the kind of features (e.g. "sift", "rootsift", "delf")
    method: str
    #: descriptor dimension D
    dim: int

    def settings(self) -> dict[str, Any]:
        """Every option that changes the features, JSON-serialisable: recorded in the store's
        meta so that a resumed extraction with other settings is refused."""
        ...

    def extract(self, image_rgb: np.ndarray) -> LocalFeatures:
        """Features of an H x W x 3 uint8 RGB image, locations in its pixels."""
        ...


LOCAL_EXTRACTORS: Registry[LocalExtractor] = Registry("local feature")


@LOCAL_EXTRACTORS.register("sift")
def _sift(**options: Any) -> LocalExtractor:
    return SiftExtractor(root=False, **typed_options(SiftExtractor, options, "sift", exclude=("root",)))


@LOCAL_EXTRACTORS.register("rootsift")
def _rootsift(**options: Any) -> LocalExtractor:
    return SiftExtractor(root=True, **typed_options(SiftExtractor, options, "rootsift", exclude=("root",)))


# The DELF extractors live in `delf_baseline`, which builds on lmkcomp: named by import path,
# imported on first use, so that lmkcomp's library never imports delf_baseline.
# delf-tf: an official DELF / DELG TensorFlow SavedModel. Its `extract` imports TensorFlow, which
# must never share a process with torchvision: from a process that has torch loaded, run
# `delf_baseline.savedmodel.run_in_subprocess`.
LOCAL_EXTRACTORS.register_path("delf-tf", "delf_baseline.savedmodel:DelfSavedModelExtractor")
# delf-torch: a DELF trained with `delf_baseline.train`.
LOCAL_EXTRACTORS.register_path("delf-torch", "delf_baseline.model:DelfTorchExtractor")


def create_local_extractor(name: str, **options: Any) -> LocalExtractor:
    """The extractor registered as `name`, built with `options` (e.g. `max_features=1000`).

    Each option is checked against the extractor's declared fields (`typed_options`): an
    unknown one, or one of the wrong type, is a user error naming it: by the factory itself, or
    here for an extractor class registered by import path.
    """
    factory = LOCAL_EXTRACTORS.get(name)
    if isinstance(factory, type):
        options = typed_options(factory, options, name)
    return factory(**options)
