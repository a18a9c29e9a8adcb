"""The trainer on the tiny synthetic preset: learning, checkpoints, exact resume, config errors."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from lmkcomp.cli import main
from lmkcomp.config import from_dict, load_config
from lmkcomp.data import synthetic
from lmkcomp.data.layout import LandmarkData
from lmkcomp.errors import UserInputError
from lmkcomp.train.checkpoint import load_checkpoint, load_trained_model
from lmkcomp.train.config import TrainConfig
from lmkcomp.train.data import read_labels, split_for_training
from lmkcomp.train.trainer import Trainer, evaluate_split

pytestmark = pytest.mark.slow

BUILTIN = Path(__file__).resolve().parents[1] / "lmkcomp" / "configs"


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    # clean labels and more images per landmark than the default tiny preset, so a few CPU
    # epochs have something to learn from
    config = synthetic.preset_config("tiny", noise_fraction=0.0, min_train_per_landmark=5, long_side=96)
    synthetic.generate(root, config, seed=11, progress=False)
    return root


def tiny_config(root: Path, **overrides) -> TrainConfig:
    values = {
        "data": {"root": str(root), "val_fraction": 0.25},
        "model": {"backbone": "test_resnet", "embedding_size": 64, "head": "arcface", "scale": 16.0},
        "optim": {"name": "adamw", "lr": 0.003, "warmup_epochs": 0.3},
        "epochs": 3, "batch_size": 8, "image_size": 64, "augment": "soft", "workers": 0, "seed": 0,
    }
    for dotted, value in overrides.items():
        node = values
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return from_dict(TrainConfig, values)


def read_metrics(run: Path) -> list[dict]:
    with (run / "metrics.csv").open() as handle:
        return list(csv.DictReader(handle))


def metrics_without_timing(run: Path) -> tuple[str, list[list[str]]]:
    """metrics.csv's header line and rows as written, less the wall-clock columns."""
    lines = (run / "metrics.csv").read_text().splitlines()
    rows = list(csv.reader(lines))
    timing = {rows[0].index("seconds"), rows[0].index("images_per_s")}
    return lines[0], [[value for i, value in enumerate(row) if i not in timing] for row in rows[1:]]


def random_map(split, trials: int = 5) -> float:
    """mAP@100 of random unit embeddings on the same validation split (the chance level)."""
    rng = np.random.default_rng(0)
    values = []
    for _ in range(trials):
        q = rng.normal(size=(len(split.val_ids), 16)).astype(np.float32)
        d = rng.normal(size=(len(split.train_ids), 16)).astype(np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        values.append(evaluate_split(q, d, split)["val_map@100"])
    return float(np.mean(values))


def test_builtin_configs_parse():
    for name in ("cpu-small", "gpu-gldv2"):
        config = load_config(BUILTIN / f"{name}.yaml", TrainConfig)
        assert config.model.backbone and config.epochs >= 1


def test_config_errors_name_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data: {root: x}\nmodel: {backbone: resnet18, hed: arcface}\n")
    with pytest.raises(UserInputError, match=r"bad\.yaml: model\.hed: unknown key"):
        load_config(path, TrainConfig)
    path.write_text("data: {root: x}\nmodel: {backbone: resnet18}\naugment: medium\n")
    with pytest.raises(UserInputError, match=r"augment: 'medium' is not one of"):
        load_config(path, TrainConfig)


def test_training_lowers_loss_and_beats_chance(tiny_root, tmp_path):
    run = tmp_path / "run"
    config = tiny_config(tiny_root, epochs=12)
    rows = Trainer(config, run, progress=False).fit()
    losses = [row["train_loss"] for row in rows]
    assert losses[-1] < losses[0]
    labels = read_labels(LandmarkData(tiny_root), "train")
    split = split_for_training(labels, config.data.min_images_per_class, config.data.val_fraction, config.seed)
    chance = random_map(split)
    # measured here: mAP@100 0.31 (chance 0.10), AUC 0.78, mean-vector norm 0.15; the bounds
    # leave a wide margin, so no machine's rounding can move the test across them
    last = rows[-1]
    assert last["val_map@100"] > 2 * chance, (last["val_map@100"], chance)
    assert last["val_auc"] > 0.65 and last["train_mean_norm"] < 0.5, last
    assert last["val_same_cos"] > last["val_diff_cos"] + 0.15, last
    assert [r["epoch"] for r in read_metrics(run)] == [str(e) for e in range(1, 13)]
    assert (run / "tensorboard").is_dir()
    # the checkpoint is self-describing: config, label map, and the weights reproduce embeddings
    model, saved, landmark_ids = load_trained_model(run / "checkpoint-last.pt")
    assert saved.model.backbone == "test_resnet" and landmark_ids == split.landmark_ids
    with torch.no_grad():
        embedding = model.embed(torch.rand(2, 3, 64, 64))
    assert torch.allclose(embedding.norm(dim=1), torch.ones(2), atol=1e-5)


class KilledMidEpoch(Exception):
    pass


def test_resume_after_a_kill_mid_epoch_matches_uninterrupted(tiny_root, tmp_path, monkeypatch):
    config = tiny_config(tiny_root, epochs=2, checkpoint_every_steps=1)
    straight = Trainer(config, tmp_path / "straight", progress=False).fit()

    interrupted = Trainer(config, tmp_path / "killed", progress=False)
    real_step = interrupted._optimizer_step
    die_at = interrupted._steps_in_epoch(0) + 2  # two steps into the second epoch
    calls = {"n": 0}

    def step_then_die():
        real_step()
        calls["n"] += 1
        if calls["n"] == die_at:
            raise KilledMidEpoch

    monkeypatch.setattr(interrupted, "_optimizer_step", step_then_die)
    with pytest.raises(KilledMidEpoch):
        interrupted.fit()
    state = load_checkpoint(tmp_path / "killed" / "checkpoint-last.pt")["state"]
    # killed after its 2nd step of epoch 2 but before that step's checkpoint: the last one
    # saved is mid-epoch, after the 1st step, and the resumed run redoes the 2nd
    assert state["epoch"] == 1 and state["batch"] == 1

    resumed = Trainer(config, tmp_path / "killed", resume=True, progress=False).fit()
    assert resumed[-1]["epoch"] == 2
    assert resumed[-1]["val_map@100"] == pytest.approx(straight[-1]["val_map@100"], abs=1e-6)
    assert resumed[-1]["val_gap"] == pytest.approx(straight[-1]["val_gap"], abs=1e-6)
    final_a = load_checkpoint(tmp_path / "straight" / "checkpoint-last.pt")["model"]
    final_b = load_checkpoint(tmp_path / "killed" / "checkpoint-last.pt")["model"]
    for key, value in final_a.items():
        assert torch.allclose(value.float(), final_b[key].float(), atol=1e-5), key
    # metrics.csv as the uninterrupted run wrote it, text for text, the resumed epoch's
    # train_loss included (it once restarted its sums at the resume); only the wall-clock
    # columns differ
    assert metrics_without_timing(tmp_path / "killed") == metrics_without_timing(tmp_path / "straight")


def test_run_folder_protection(tiny_root, tmp_path, capsys):
    config = tiny_config(tiny_root, epochs=1)
    Trainer(config, tmp_path / "run", progress=False).fit()
    with pytest.raises(UserInputError, match="already holds a training run"):
        Trainer(config, tmp_path / "run", progress=False)
    with pytest.raises(UserInputError, match="another config"):
        Trainer(tiny_config(tiny_root, epochs=1, batch_size=4), tmp_path / "run", resume=True, progress=False)
    code = main(["train", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "x")])
    assert code == 2 and "no such config file" in capsys.readouterr().err


def test_tensorboard_writer_does_not_import_tensorflow(tmp_path):
    import subprocess
    import sys

    code = ("import sys; from lmkcomp.train.trainer import summary_writer; w = summary_writer(sys.argv[1]); "
            "w.add_scalar('loss', 1.0, 0); w.close(); print('tensorflow' in sys.modules)")
    completed = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "False"
    assert list(tmp_path.glob("events.out.tfevents.*"))


def test_train_command_reports_health_and_warns_near_chance(tiny_root, tmp_path, capsys):
    import yaml

    from lmkcomp.config import to_dict

    path = tmp_path / "config.yaml"
    # one epoch of a few steps: the descriptor is still near chance, and the command says so
    path.write_text(yaml.safe_dump(to_dict(tiny_config(tiny_root, epochs=1, batch_size=16))))
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    out = capsys.readouterr().out
    row = read_metrics(tmp_path / "run")[-1]
    assert f"same-vs-different AUC {float(row['val_auc']):.3f}" in out
    assert f"mean-vector norm {float(row['train_mean_norm']):.3f}" in out
    assert float(row["val_auc"]) < 0.65 and "WARNING: the descriptor is near chance" in out, (row, out)


def test_cpu_small_is_the_softmax_descriptor_the_readme_describes():
    # README ("Demo output", "Heads compared"): `cpu-small` from scratch is the softmax descriptor
    assert load_config(BUILTIN / "cpu-small.yaml", TrainConfig).model.head == "softmax"
