"""Training the PyTorch DELF: CLI run, bit-identical resume after a kill, backbone weights, the
descriptor PCA, delf-torch extraction end to end, and user errors."""

from __future__ import annotations

import csv
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from delf_baseline.model import extract_multiscale, load_delf
from delf_baseline.pca import load_pca
from delf_baseline.train import DelfTrainConfig, DelfTrainer, fit_pca, sample_ids, save_pca
from lmkcomp.cli import main
from lmkcomp.data import synthetic
from lmkcomp.data.images import load_image_rgb, read_image_size
from lmkcomp.data.layout import LandmarkData
from lmkcomp.errors import UserInputError
from lmkcomp.local.extractors import create_local_extractor
from lmkcomp.local.store import LocalFeatureStore
from lmkcomp.train.checkpoint import load_checkpoint
from test_trainer import metrics_without_timing

pytestmark = pytest.mark.slow

# timm's tiny ResNet has a stride-16 layer3 (192 channels): fast enough for CPU tests
BACKBONE = "test_resnet"
CHANNELS = 192
# 108 train images (16 landmarks) after holding out a quarter: 7 batches of 16 per epoch
SETTINGS = dict(labels="train", val_fraction=0.25, backbone=BACKBONE, epochs=2, image_size=64, batch_size=16,
                lr=0.01, checkpoint_every_steps=2)


class Killed(Exception):
    pass


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a loaded machine two spinning OpenMP threads per process make these
    runs an order of magnitude slower. (Both runs a resume test compares use the same setting.)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    config = synthetic.preset_config("tiny", noise_fraction=0.0, min_train_per_landmark=5, long_side=96)
    synthetic.generate(root, config, seed=11, progress=False)
    return root


@pytest.fixture(scope="module")
def cli_run(tiny_root, tmp_path_factory) -> Path:
    """An uninterrupted 2-epoch run of `lmkcomp delf train` with SETTINGS."""
    out = tmp_path_factory.mktemp("delf") / "run"
    code = main(["delf", "train", "--data", str(tiny_root), "--out", str(out), "--backbone", BACKBONE,
                 "--labels", "train", "--val-fraction", "0.25", "--epochs", "2", "--image-size", "64",
                 "--batch-size", "16", "--lr", "0.01", "--checkpoint-every", "2", "--quiet"])
    assert code == 0
    return out


def read_metrics(run: Path) -> list[dict]:
    with (run / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_cli_run_learns_and_writes_metrics_and_checkpoint(cli_run, capsys):
    rows = read_metrics(cli_run)
    assert [row["epoch"] for row in rows] == ["1", "2"]
    losses = [float(row["train_loss"]) for row in rows]
    assert losses[1] < losses[0]
    for row in rows:
        # 36 held-out images: accuracy is a multiple of 1/36; chance-level loss is about ln 16
        assert 0.0 <= float(row["val_accuracy"]) <= 1.0
        assert float(row["val_accuracy"]) * 36 == pytest.approx(round(float(row["val_accuracy"]) * 36))
        assert 0.0 < float(row["val_loss"]) < 2 * np.log(16)
    # the rate of the next step: 14 steps, of which round(0.5 * 7) = 4 warm up, then cosine from
    # 0.01 down to 0.01 * min_lr_ratio (0.01), reached after the last step
    after_epoch_1 = 0.01 * (0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * (7 - 4) / (14 - 4))))
    assert float(rows[0]["lr"]) == pytest.approx(after_epoch_1, rel=1e-12)
    assert float(rows[1]["lr"]) == pytest.approx(0.01 * 0.01, rel=1e-12)
    model, payload = load_delf(cli_run / "delf.pt")
    assert payload["epoch"] == 2 and payload["state"]["optimizer_step"] == 14
    assert len(payload["landmark_ids"]) == model.settings.num_classes == 16
    # a finished run resumed does nothing more
    assert main(["delf", "train", "--data", str(payload["config"]["data"]), "--out", str(cli_run), "--backbone",
                 BACKBONE, "--labels", "train", "--val-fraction", "0.25", "--epochs", "2", "--image-size", "64",
                 "--batch-size", "16", "--lr", "0.01", "--resume", "--quiet"]) == 0
    assert "epoch 2 train loss" in capsys.readouterr().out
    assert load_checkpoint(cli_run / "delf.pt")["state"] == payload["state"]


def test_resume_after_a_kill_mid_epoch_is_bit_identical(tiny_root, cli_run, tmp_path, monkeypatch):
    config = DelfTrainConfig(data=str(tiny_root), **SETTINGS)
    killed = DelfTrainer(config, tmp_path / "run", progress=False)
    real_update, calls = killed.scaler.update, {"n": 0}

    def die_in_step_11():
        # after the optimizer's 4th step of epoch 2, before the scheduler's
        calls["n"] += 1
        if calls["n"] == 7 + 4:
            raise Killed
        real_update()

    monkeypatch.setattr(killed.scaler, "update", die_in_step_11)
    with pytest.raises(Killed):
        killed.fit()
    # the last checkpoint is the one after step 10 (every 2 steps): epoch 2, next batch 3
    saved = load_checkpoint(tmp_path / "run" / "delf.pt")
    assert saved["state"]["epoch"] == 1 and saved["state"]["batch"] == 3 and saved["state"]["optimizer_step"] == 10
    assert [row["epoch"] for row in read_metrics(tmp_path / "run")] == ["1"]

    resumed = DelfTrainer(config, tmp_path / "run", resume=True, progress=False).fit()
    straight = load_checkpoint(cli_run / "delf.pt")
    final = load_checkpoint(tmp_path / "run" / "delf.pt")
    assert final["model"].keys() == straight["model"].keys()
    for key, value in straight["model"].items():
        assert torch.equal(value, final["model"][key]), key
    for key, state in straight["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, final["optimizer"]["state"][key][name]), (key, name)
    assert final["scheduler"] == straight["scheduler"]
    for row, reference in zip(resumed, read_metrics(cli_run), strict=True):
        for column in ("train_loss", "val_loss", "val_accuracy", "lr"):
            assert repr(row[column]) == reference[column], column
    # and its metrics.csv is the uninterrupted run's, text for text, but for the wall-clock columns
    assert metrics_without_timing(tmp_path / "run") == metrics_without_timing(cli_run)


def test_backbone_weights_from_a_local_file(tiny_root, tmp_path):
    torch.manual_seed(1)
    imagenet_like = timm.create_model(BACKBONE, pretrained=False).state_dict()
    # as saved by a DistributedDataParallel model, nested under "state_dict"
    torch.save({"state_dict": {f"module.{k}": v for k, v in imagenet_like.items()}, "epoch": 90},
               tmp_path / "backbone.pth")
    config = DelfTrainConfig(data=str(tiny_root), **{**SETTINGS, "weights": str(tmp_path / "backbone.pth")})
    trainer = DelfTrainer(config, tmp_path / "run", progress=False)
    report = trainer.weights_report
    assert report.missing == [] and report.mismatched == []
    assert "fc.weight" in report.unexpected and all(k.startswith(("layer4.", "fc.")) for k in report.unexpected)
    assert torch.equal(trainer.model.backbone.state_dict()["layer3.0.conv1.weight"],
                       imagenet_like["layer3.0.conv1.weight"])

    torch.save({"encoder.weight": torch.zeros(3)}, tmp_path / "other.pth")
    config = DelfTrainConfig(data=str(tiny_root), **{**SETTINGS, "weights": str(tmp_path / "other.pth")})
    with pytest.raises(UserInputError, match=r"other\.pth: no tensor matches backbone 'test_resnet'"):
        DelfTrainer(config, tmp_path / "run2", progress=False)


def test_backbone_weights_from_a_landmark_model_checkpoint(tiny_root, tmp_path):
    # a `cpu-v1`-style pretraining run: the whole landmark model under "model", backbone under "backbone."
    from lmkcomp.models import create_model
    from lmkcomp.models.model import ModelConfig

    torch.manual_seed(2)
    pretrained = create_model(ModelConfig(backbone=BACKBONE, embedding_size=16, head="softmax"), 5)
    torch.save({"model": pretrained.state_dict(), "epoch": 12}, tmp_path / "checkpoint-last.pt")
    config = DelfTrainConfig(data=str(tiny_root), **{**SETTINGS, "weights": str(tmp_path / "checkpoint-last.pt")})
    report = DelfTrainer(config, tmp_path / "run", progress=False).weights_report
    assert report.missing == [] and report.mismatched == []
    assert all(k.startswith("layer4.") for k in report.unexpected)
    assert report.left_out and all(k.startswith(("pooling.", "neck.", "head.")) for k in report.left_out)
    trainer_state = DelfTrainer(config, tmp_path / "run2", progress=False).model.backbone.state_dict()
    assert torch.equal(trainer_state["layer3.0.conv1.weight"], pretrained.backbone.state_dict()["layer3.0.conv1.weight"])


def test_sample_ids_is_seeded_ordered_and_bounded():
    ids = [f"{i:016x}" for i in range(50)]
    first = sample_ids(ids, 10, seed=3)
    assert first == sample_ids(ids, 10, seed=3) != sample_ids(ids, 10, seed=4)
    assert len(set(first)) == 10 and first == sorted(first) and set(first) <= set(ids)
    assert sample_ids(ids, 80, seed=3) == ids


def test_fit_pca_and_registered_extractor(tiny_root, cli_run, tmp_path):
    data = LandmarkData(tiny_root)
    model, _ = load_delf(cli_run / "delf.pt")
    ids = data.train_labels()["id"].tolist()[:3]
    pca = fit_pca(model, data, ids, dim=16, scales=(1.0,), max_features=100)
    assert pca.projection.shape == (16, CHANNELS)
    np.testing.assert_allclose(pca.projection @ pca.projection.T, np.eye(16), atol=1e-5)
    # the first direction is the top right singular vector of the centred descriptors
    x = np.concatenate([extract_multiscale(model, load_image_rgb(data.image_path("train", i)), (1.0,), 100).descriptors
                        for i in ids]).astype(np.float64)
    np.testing.assert_allclose(pca.mean, x.mean(axis=0), atol=1e-6)
    top = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)[2][0]
    assert abs(float(top @ pca.projection[0])) == pytest.approx(1.0, abs=1e-4)
    save_pca(pca, tmp_path / "pca.npz")
    assert load_pca(tmp_path / "pca.npz", dim=None).fingerprint() == pca.fingerprint()
    with pytest.raises(UserInputError, match=r"above \d+, the most directions"):
        fit_pca(model, data, ids[:1], dim=CHANNELS, scales=(0.5,), max_features=5)

    image = np.random.default_rng(0).integers(0, 256, size=(64, 96, 3), dtype=np.uint8)
    projected = create_local_extractor("delf-torch", checkpoint=cli_run / "delf.pt", pca=tmp_path / "pca.npz",
                                       scales=(0.5, 1.0), max_features=40)
    # a copy sent to a worker loads its own model
    projected = pickle.loads(pickle.dumps(projected))
    features = projected.extract(image)
    assert projected.dim == 16 and features.dim == 16 and len(features) <= 40
    np.testing.assert_allclose(np.linalg.norm(features.descriptors, axis=1), 1.0, atol=1e-5)
    settings = projected.settings()
    assert json.loads(json.dumps(settings)) == settings
    assert settings["method"] == "delf-torch" and settings["scales"] == [0.5, 1.0]


def test_cli_fit_pca_then_extract_local(tiny_root, cli_run, tmp_path):
    pca_path = tmp_path / "pca.npz"
    assert main(["delf", "pca", "--checkpoint", str(cli_run / "delf.pt"), "--data", str(tiny_root),
                 "--out", str(pca_path), "--dim", "8", "--images", "3", "--seed", "1", "--scales", "0.5,1",
                 "--max-features", "60", "--quiet"]) == 0
    pca = load_pca(pca_path, dim=None)
    assert (pca.input_dim, pca.dim) == (CHANNELS, 8)

    store_dir = tmp_path / "local"
    assert main(["extract-local", "--method", "delf-torch", "--data", str(tiny_root), "--split", "test",
                 "--out", str(store_dir), "--max-features", "50", "--set", f"checkpoint={cli_run / 'delf.pt'}",
                 "--set", f"pca={pca_path}", "--set", "scales=[0.5, 1.0]", "--quiet"]) == 0
    store = LocalFeatureStore(store_dir)
    data = LandmarkData(tiny_root)
    assert store.method == "delf-torch" and store.dim == 8 and sorted(store.ids) == sorted(data.split_ids("test"))
    for image_id in store.ids:
        features = store.get(image_id)
        width, height = read_image_size(data.image_path("test", image_id))
        assert 0 < len(features) <= 50 and features.descriptors.shape[1] == 8
        x, y = np.asarray(features.locations, np.float64).T
        assert (x >= -0.5).all() and (x <= width - 0.5).all() and (y >= -0.5).all() and (y <= height - 0.5).all()

    # Two worker processes give the same store. Run as a child process with a time limit: pool
    # processes forked after this process had started torch's threads deadlocked (the old code
    # hung here for good).
    parallel_dir = tmp_path / "local-2"
    subprocess.run([sys.executable, "-m", "lmkcomp", "extract-local", "--method", "delf-torch", "--data",
                    str(tiny_root), "--split", "test", "--out", str(parallel_dir), "--max-features", "50",
                    "--set", f"checkpoint={cli_run / 'delf.pt'}", "--set", f"pca={pca_path}",
                    "--set", "scales=[0.5, 1.0]", "--workers", "2", "--quiet"], check=True, timeout=300)
    parallel = LocalFeatureStore(parallel_dir)
    for image_id in store.ids:
        a, b = store.get(image_id), parallel.get(image_id)
        np.testing.assert_array_equal(a.locations, b.locations)
        np.testing.assert_allclose(a.descriptors.astype(np.float32), b.descriptors.astype(np.float32), atol=2e-3)


def test_user_errors_exit_2_with_a_clear_message(tiny_root, cli_run, tmp_path, capsys):
    def run(*argv: str) -> str:
        assert main(list(argv)) == 2
        return capsys.readouterr().err

    common = ["--backbone", BACKBONE, "--epochs", "1", "--image-size", "64", "--quiet"]
    assert "dataset root not found" in run("delf", "train", "--data", str(tmp_path / "missing"),
                                           "--out", str(tmp_path / "a"), *common)
    bad = tmp_path / "bad.csv"
    bad.write_text("landmark_id,images\n3,0123456789abcdef\nseven,fedcba9876543210\n")
    assert f"{bad}:3" in run("delf", "train", "--data", str(tiny_root), "--out", str(tmp_path / "b"),
                             "--labels", str(bad), *common)
    bad.write_text("landmark_id,images\n3,0123456789abcdef\n")
    assert "image 0123456789abcdef not in the train split" in run(
        "delf", "train", "--data", str(tiny_root), "--out", str(tmp_path / "c"), "--labels", str(bad), *common)
    assert "'blocks.3', not a ResNet's 'layer3'" in run("delf", "train", "--data", str(tiny_root), "--out",
                                                        str(tmp_path / "e"), "--backbone", "vit_small_patch16_224")
    assert "already holds a DELF training run" in run("delf", "train", "--data", str(tiny_root), "--out", str(cli_run),
                                                      *common)
    assert "nothing to resume" in run("delf", "train", "--data", str(tiny_root), "--out", str(tmp_path / "d"),
                                      "--resume", *common)
    assert "started with epochs=2, not 1" in run("delf", "train", "--data", str(tiny_root), "--out", str(cli_run),
                                                 "--labels", "train", "--val-fraction", "0.25", "--batch-size", "16",
                                                 "--lr", "0.01", "--resume", *common)
    assert "must end in .npz" in run("delf", "pca", "--checkpoint", str(cli_run / "delf.pt"), "--data",
                                     str(tiny_root), "--out", str(tmp_path / "pca.txt"))
    assert "checkpoint not found" in run("delf", "pca", "--checkpoint", str(tmp_path / "none.pt"), "--data",
                                         str(tiny_root), "--out", str(tmp_path / "pca.npz"))
