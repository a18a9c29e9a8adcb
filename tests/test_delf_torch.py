"""The PyTorch DELF model: outputs, receptive-field mapping, multi-scale extraction (training: test_delf_train)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from delf_baseline.model import DelfSettings, TorchDelf, extract_multiscale

# timm's tiny ResNet has a stride-16 layer3 (192 channels): fast enough for CPU tests
BACKBONE = "test_resnet"
CHANNELS = 192


@pytest.fixture(scope="module")
def model() -> TorchDelf:
    torch.manual_seed(0)
    return TorchDelf(DelfSettings(backbone=BACKBONE, num_classes=5, attention_hidden=32)).eval()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(64, 96, 3), dtype=np.uint8)


def test_forward_shapes_and_non_negative_attention(model):
    outputs = model(torch.randn(2, 3, 64, 96))
    assert outputs["features"].shape == (2, CHANNELS, 4, 6)
    assert outputs["attention"].shape == (2, 1, 4, 6)
    assert outputs["logits"].shape == (2, 5)
    assert (outputs["attention"] >= 0).all()


def test_cells_map_to_receptive_field_centres(model, image):
    # scale 1: cell (i, j) is centred on pixel (16 j, 16 i)
    features = extract_multiscale(model, image, scales=(1.0,), max_features=10_000)
    expected = {(16.0 * j, 16.0 * i) for i in range(4) for j in range(6)}
    assert {tuple(xy) for xy in features.locations.tolist()} == expected
    # scale 0.5 (32 x 48, 2 x 3 cells): cell (1, 2) is centred on level pixel (32, 16),
    # which is original pixel ((32 + 0.5) * 2 - 0.5, (16 + 0.5) * 2 - 0.5)
    features = extract_multiscale(model, image, scales=(0.5,), max_features=10_000)
    assert len(features) == 6
    assert (64.5, 32.5) in {tuple(xy) for xy in features.locations.tolist()}
    np.testing.assert_allclose(features.scales, 32.0)


def test_multiscale_extraction_selects_top_scores(model, image):
    features = extract_multiscale(model, image, max_features=50)
    assert len(features) == 50
    assert (np.diff(features.scores) <= 0).all()
    assert features.dim == CHANNELS
    np.testing.assert_allclose(np.linalg.norm(features.descriptors, axis=1), 1.0, atol=1e-5)
    height, width = image.shape[:2]
    x, y = features.locations.T
    assert (x >= -0.5).all() and (x <= width - 0.5).all() and (y >= -0.5).all() and (y <= height - 0.5).all()
    # the threshold only removes features
    threshold = float(np.median(features.scores))
    kept = extract_multiscale(model, image, max_features=50, score_threshold=threshold)
    assert 0 < len(kept) <= 50 and (kept.scores >= threshold).all()
