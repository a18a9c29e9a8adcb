"""The PyTorch DELF: model outputs, receptive-field mapping, extraction, training, extractor."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from delf_baseline.model import DelfSettings, TorchDelf, extract_multiscale, load_delf
from delf_baseline.pca import load_pca
from delf_baseline.train import fit_pca, save_pca, train_delf
from lmkcomp.data import synthetic
from lmkcomp.data.layout import LandmarkData
from lmkcomp.local.extractors import create_local_extractor

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


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[LandmarkData, Path, list[float]]:
    root = tmp_path_factory.mktemp("tiny")
    config = synthetic.preset_config("tiny", noise_fraction=0.0, min_train_per_landmark=5, long_side=96)
    synthetic.generate(root, config, seed=11, progress=False)
    data = LandmarkData(root)
    result = train_delf(data, root / "run", backbone=BACKBONE, epochs=3, image_size=64, batch_size=16,
                        lr=3e-3, labels="train", attention_hidden=32)
    return data, result.checkpoint, result.epoch_losses


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


def test_training_lowers_the_loss(trained):
    _, checkpoint, losses = trained
    assert checkpoint.is_file()
    assert len(losses) == 3 and losses[-1] < losses[0]


def test_fit_pca_and_registered_extractor(trained, tmp_path, image):
    data, checkpoint, _ = trained
    extractor = create_local_extractor("delf-torch", checkpoint=checkpoint, max_features=40)
    model, payload = load_delf(checkpoint)
    assert payload["epoch"] == 3 and len(payload["landmark_ids"]) == model.settings.num_classes
    ids = data.train_labels()["id"].tolist()[:3]
    pca = fit_pca(model, data, ids, dim=16, scales=(1.0,), max_features=100)
    assert pca.projection.shape == (16, CHANNELS)
    np.testing.assert_allclose(pca.projection @ pca.projection.T, np.eye(16), atol=1e-4)
    save_pca(pca, tmp_path / "pca.npz")
    assert load_pca(tmp_path / "pca.npz", dim=None).fingerprint() == pca.fingerprint()

    projected = create_local_extractor("delf-torch", checkpoint=checkpoint, pca=tmp_path / "pca.npz",
                                       scales=(0.5, 1.0), max_features=40)
    # a copy sent to a worker loads its own model
    projected = pickle.loads(pickle.dumps(projected))
    features = projected.extract(image)
    assert projected.dim == 16 and features.dim == 16 and len(features) <= 40
    np.testing.assert_allclose(np.linalg.norm(features.descriptors, axis=1), 1.0, atol=1e-5)
    settings = projected.settings()
    assert json.loads(json.dumps(settings)) == settings
    assert settings["method"] == "delf-torch" and settings["scales"] == [0.5, 1.0]
    assert extractor.extract(image).dim == CHANNELS
