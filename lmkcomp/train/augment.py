"""Augmentation pipelines by name, after the 2019 retrieval winner (Ozaki & Yokoo):

- ``none``: resize to the batch size, normalise (validation and extraction use this);
- ``soft``: random resized crop (scale 0.5-1, aspect kept near the batch's) + normalise;
- ``hard``: ``soft`` plus random brightness / contrast shift, shear and scale (affine).

Every pipeline ends at a fixed (height, width) chosen by the aspect-ratio bucket of the batch,
so images are never squashed to squares. Each call is seeded from (seed, epoch, sample), which
makes a run reproducible whatever the number of data-loading workers and lets a resumed run see
exactly the augmentations the uninterrupted one would have.
"""

from __future__ import annotations

import albumentations as A
import numpy as np
from albumentations.pytorch import ToTensorV2

from lmkcomp.registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

AUGMENTATIONS: Registry[list] = Registry("augmentation")


def _ratio_band(height: int, width: int, spread: float = 1.15) -> tuple[float, float]:
    ratio = width / height
    return ratio / spread, ratio * spread


@AUGMENTATIONS.register("none")
def _none(height: int, width: int) -> list:
    return [A.Resize(height, width, interpolation=1)]


@AUGMENTATIONS.register("soft")
def _soft(height: int, width: int) -> list:
    return [A.RandomResizedCrop(size=(height, width), scale=(0.5, 1.0), ratio=_ratio_band(height, width))]


@AUGMENTATIONS.register("hard")
def _hard(height: int, width: int) -> list:
    return [
        A.Affine(scale=(0.85, 1.15), shear=(-12, 12), p=0.7, border_mode=1),
        A.RandomResizedCrop(size=(height, width), scale=(0.35, 1.0), ratio=_ratio_band(height, width, 1.25)),
        A.RandomBrightnessContrast(brightness_limit=0.3, contrast_limit=0.2, p=0.8),
    ]


def create_transform(name: str, height: int, width: int) -> A.Compose:
    """The named pipeline producing a normalised CHW float tensor of size (height, width)."""
    steps = AUGMENTATIONS.create(name, height=height, width=width)
    return A.Compose([*steps, A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD), ToTensorV2()])


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed for one sample's augmentation, independent of worker scheduling."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])
