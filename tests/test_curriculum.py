"""The centroid method's training: non-landmark images and class, curriculum stages over regions."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lmkcomp.config import from_dict, load_config
from lmkcomp.data import gldv2, synthetic
from lmkcomp.data.layout import LandmarkData
from lmkcomp.errors import UserInputError
from lmkcomp.models import ModelConfig, create_model
from lmkcomp.train.checkpoint import load_checkpoint, load_trained_model
from lmkcomp.train.config import TrainConfig, resolve_config_path
from lmkcomp.train.curriculum import carry_over, curriculum_stages, read_regions
from lmkcomp.train.data import TrainingSplit, restrict_split
from lmkcomp.train.samplers import BucketBatchSampler
from lmkcomp.train.trainer import CHECKPOINT, Trainer, run_is_finished
from test_trainer import metrics_without_timing

pytestmark = pytest.mark.slow

TINY_WITH_NON_LANDMARKS = synthetic.preset_config("tiny", noise_fraction=0.0, long_side=96, train_distractor_ratio=0.4)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Torch's intra-op threads spin-wait: on a shared, busy CPU one thread is many times faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny-nonlandmark")
    synthetic.generate(root, TINY_WITH_NON_LANDMARKS, seed=11, progress=False)
    return root


def centroid_config(root: Path, **overrides) -> TrainConfig:
    values = {
        "data": {"root": str(root), "val_fraction": 0.25, "non_landmarks": "train_nonlandmark.csv",
                 "non_landmark_ratio": 0.4},
        "model": {"backbone": "test_resnet", "embedding_size": 32, "head": "softmax"},
        "optim": {"name": "sgd", "lr": 0.05, "weight_decay": 5e-3, "schedule": "step",
                  "part_lr": {"backbone": 0.01, "embedding": 0.05, "classifier": 0.05, "centers": 0.5}},
        "loss": {"name": "center", "center_weight": 5e-3},
        "curriculum": {"later_lr": {"backbone": 1e-4, "embedding": 1e-4, "classifier": 1e-2}},
        "epochs": 1, "batch_size": 8, "image_size": 64, "workers": 0, "seed": 0,
    }
    for dotted, value in overrides.items():
        node = values
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return from_dict(TrainConfig, values)


def landmarks_by_region(root: Path) -> dict[str, set[int]]:
    metadata = pd.read_csv(root / "landmark_metadata.csv")
    return {region: set(group["landmark_id"]) for region, group in metadata.groupby("region")}


# --- non-landmark images -------------------------------------------------------------------


def test_synthetic_non_landmark_train_images_stay_out_of_the_landmark_csvs(root):
    data = LandmarkData(root)
    non_landmarks = gldv2.read_id_column(root / "train_nonlandmark.csv")
    train_ids = data.split_ids("train")
    assert len(non_landmarks) == round(0.4 * len(train_ids))
    assert not set(non_landmarks) & set(train_ids)
    assert not set(non_landmarks) & set(data.train_labels(clean=True)["id"])
    assert pd.read_csv(root / "noise_truth.csv", dtype=str)["id"].tolist() == train_ids
    assert all(data.image_path("train", image_id).is_file() for image_id in non_landmarks)
    # every other image and label is the one the preset makes without them
    plain = synthetic.make_plan(synthetic.preset_config("tiny", noise_fraction=0.0, long_side=96,
                                                     train_distractor_ratio=0.0), seed=11)
    with_them = synthetic.make_plan(TINY_WITH_NON_LANDMARKS, seed=11)
    assert with_them.images[:len(plain.images)] == plain.images
    assert {i.image_id for i in with_them.images[len(plain.images):]} == set(non_landmarks)


def test_non_landmark_csv_errors_name_the_line(tmp_path):
    path = tmp_path / "nl.csv"
    path.write_text("id\n0123456789abcdef\nnot-an-id\n")
    with pytest.raises(UserInputError, match=r"nl\.csv:3: invalid image id 'not-an-id'"):
        gldv2.read_id_column(path)
    path.write_text("id\n0123456789abcdef\n0123456789abcdef\n")
    with pytest.raises(UserInputError, match=r"nl\.csv:3: duplicate id"):
        gldv2.read_id_column(path)
    path.write_text("image\n0123456789abcdef\n")
    with pytest.raises(UserInputError, match=r"nl\.csv:1: missing column\(s\) id"):
        gldv2.read_id_column(path)


def test_a_labelled_image_listed_as_non_landmark_is_refused(root, tmp_path):
    labelled = gldv2.read_train_csv(root / "train.csv")["id"].iloc[0]
    path = tmp_path / "nl.csv"
    path.write_text(f"id\n{labelled}\n")
    with pytest.raises(UserInputError, match="have a landmark label too"):
        Trainer(centroid_config(root, **{"data.non_landmarks": str(path)}), tmp_path / "run", progress=False)


def test_sampler_draws_non_landmarks_in_the_given_proportion():
    labels = np.concatenate([np.repeat(np.arange(20), 10), np.full(30, 20)])  # 200 landmark, 30 non-landmark
    non_landmark = labels == 20
    buckets = np.random.default_rng(0).integers(0, 3, size=len(labels))
    for balance in ("none", "class"):
        sampler = BucketBatchSampler(buckets, labels, batch_size=4, image_size=64, balance=balance,
                                     non_landmark=non_landmark, non_landmark_ratio=0.4)
        drawn = np.concatenate(sampler.global_batches(0))
        ratio = non_landmark[drawn].sum() / (~non_landmark[drawn]).sum()
        assert ratio == pytest.approx(0.4, abs=0.03), balance
    # 80 draws from a pool of 30: fresh permutations, so every image comes 2 or 3 times (before
    # the batches dropped per bucket)
    counts = np.bincount(np.concatenate(sampler.global_batches(1)), minlength=len(labels))[non_landmark]
    assert counts.max() <= 3 and counts.sum() >= 70
    plain = BucketBatchSampler(buckets, labels, batch_size=4, image_size=64, drop_last=False)
    assert non_landmark[np.concatenate(plain.global_batches(0))].sum() == 30  # without a ratio: once each, like any image


# --- curriculum stages ---------------------------------------------------------------------


def test_read_regions_and_its_errors(tmp_path):
    path = tmp_path / "regions.csv"
    path.write_text("landmark_id,zone\n7,North\n3,South\n")
    assert read_regions(path, "zone") == {7: "North", 3: "South"}
    with pytest.raises(UserInputError, match=r"regions\.csv:1: missing column\(s\) region"):
        read_regions(path)
    path.write_text("landmark_id,region\n7,North\n7,South\n")
    with pytest.raises(UserInputError, match=r"regions\.csv:3: duplicate landmark_id 7"):
        read_regions(path)
    path.write_text("landmark_id,region\nx7,North\n")
    with pytest.raises(UserInputError, match=r"regions\.csv:2: landmark_id 'x7'"):
        read_regions(path)


def test_stages_grow_by_parts():
    regions = {10: "A", 20: "B", 30: "A", 40: "C", 50: "A", 60: "B", 99: "D"}  # 99 is not trained
    landmarks = [10, 20, 30, 40, 50, 60]
    stages = curriculum_stages(landmarks, regions)  # most landmarks first: A (3), B (2), C (1)
    assert [(s.number, s.regions, s.landmark_ids) for s in stages] == [
        (1, ("A",), (10, 30, 50)), (2, ("A", "B"), (10, 20, 30, 50, 60)), (3, ("A", "B", "C"), (10, 20, 30, 40, 50, 60))]
    stages = curriculum_stages(landmarks, regions, [["B", "C"], ["A"]])
    assert [s.landmark_ids for s in stages] == [(20, 40, 60), (10, 20, 30, 40, 50, 60)]
    with pytest.raises(UserInputError, match="C are in no part"):
        curriculum_stages(landmarks, regions, [["A"], ["B"]])
    with pytest.raises(UserInputError, match="D have no training landmark"):
        curriculum_stages(landmarks, regions, [["A"], ["B", "C", "D"]])
    with pytest.raises(UserInputError, match="A listed more than once"):
        curriculum_stages(landmarks, regions, [["A"], ["A", "B", "C"]])
    with pytest.raises(UserInputError, match="1 training landmarks have no region"):
        curriculum_stages([*landmarks, 70], regions)


def test_restricted_split_renumbers_classes_by_landmark_id():
    split = TrainingSplit(["a", "b", "c", "d", "e"], np.array([0, 1, 2, 1, 0]), ["f", "g"], np.array([2, 0]),
                          [5, 17, 40])
    part, train_positions, val_positions = restrict_split(split, {40, 5})
    assert part.landmark_ids == [5, 40]
    assert part.train_ids == ["a", "c", "e"] and part.train_classes.tolist() == [0, 1, 0]
    assert part.val_ids == ["f", "g"] and part.val_classes.tolist() == [1, 0]
    assert train_positions.tolist() == [0, 2, 4] and val_positions.tolist() == [0, 1]


def test_carry_over_keeps_the_trunk_and_the_neck_linear_only():
    config = ModelConfig(backbone="test_resnet", embedding_size=16, head="softmax")
    torch.manual_seed(0)
    trained = create_model(config, 5)
    with torch.no_grad():  # stand-in for training: nothing left at its initial value
        for tensor in [*trained.parameters(), *trained.buffers()]:
            if tensor.is_floating_point():
                tensor.add_(torch.rand_like(tensor))
    torch.manual_seed(1)
    fresh = create_model(config, 9)
    fresh_state = {key: value.clone() for key, value in fresh.state_dict().items()}
    carry_over(trained, fresh)
    kept, reset = trained.state_dict(), fresh.state_dict()
    for key, value in reset.items():
        expected = kept[key] if key.startswith(("backbone.", "pooling.", "neck.layers.0.")) else fresh_state[key]
        assert torch.equal(value, expected), key
    bn = fresh.neck.layers[1]
    assert isinstance(bn, torch.nn.BatchNorm1d) and torch.equal(bn.running_var, torch.ones(16))
    assert fresh.head.fc.out_features == 9


def test_stage_boundary_reinitialises_exactly_the_stated_parts(root, tmp_path):
    config = centroid_config(root)
    trainer = Trainer(config, tmp_path / "run", progress=False)
    by_region = landmarks_by_region(root)
    stages = trainer.stages
    assert len(stages) == 2
    first = set(stages[0].landmark_ids)
    assert first == by_region[stages[0].regions[0]] & set(trainer.full_split.landmark_ids)
    assert trainer.split.landmark_ids == sorted(first) and trainer.non_landmark_class == len(first)
    assert trainer.model.head.fc.out_features == len(first) + 1
    assert tuple(trainer.criterion.centers.shape) == (len(first), 32)
    assert {g["part"]: g["initial_lr"] for g in trainer.optimizer.param_groups} == {
        "backbone": 0.01, "embedding": 0.05, "classifier": 0.05, "centers": 0.5}

    with torch.no_grad():  # stand-in for stage 1's training
        for tensor in [*trainer.model.parameters(), *trainer.model.buffers(), trainer.criterion.centers]:
            if tensor.is_floating_point():
                tensor.add_(torch.rand_like(tensor))
    before = {key: value.clone() for key, value in trainer.model.state_dict().items()}
    centers_before = trainer.criterion.centers.detach().clone()
    trainer.advance_stage()

    after = trainer.model.state_dict()
    for key, value in after.items():
        if key.startswith(("backbone.", "pooling.", "neck.layers.0.")):
            assert torch.equal(value, before[key]), key
    bn = trainer.model.neck.layers[1]
    assert torch.equal(bn.weight, torch.ones(32)) and torch.equal(bn.bias, torch.zeros(32))
    assert torch.equal(bn.running_mean, torch.zeros(32)) and torch.equal(bn.running_var, torch.ones(32))
    everything = sorted(trainer.full_split.landmark_ids)
    assert trainer.split.landmark_ids == everything and trainer.non_landmark_class == len(everything)
    assert trainer.model.head.fc.out_features == len(everything) + 1
    assert tuple(trainer.criterion.centers.shape) == (len(everything), 32)
    assert not torch.equal(trainer.criterion.centers[:len(first)].detach(), centers_before)
    # non-landmark samples carry the new last class; landmark samples their new class index
    classes = trainer.sample_classes
    assert (classes[len(trainer.split.train_ids):] == len(everything)).all()
    labels = gldv2.read_train_csv(root / "train.csv")
    landmark_of = dict(zip(labels["id"], labels["landmark_id"]))
    assert [everything[c] for c in classes[:len(trainer.split.train_ids)]] == [landmark_of[i] for i in trainer.split.train_ids]
    assert {g["part"]: g["initial_lr"] for g in trainer.optimizer.param_groups} == {
        "backbone": 1e-4, "embedding": 1e-4, "classifier": 1e-2, "centers": 0.5}
    assert (trainer.state.stage, trainer.state.epoch, trainer.state.optimizer_step) == (2, 0, 0)


def test_the_shipped_centroid_config_follows_the_paper():
    config = load_config(resolve_config_path("cpu-centroid"), TrainConfig)
    assert (config.loss.name, config.loss.center_weight) == ("center", 5e-5)
    assert (config.data.non_landmarks, config.data.non_landmark_ratio) == ("train_nonlandmark.csv", 0.4)
    assert (config.optim.name, config.optim.momentum, config.optim.weight_decay) == ("sgd", 0.9, 5e-3)
    assert (config.optim.schedule, config.optim.step_milestones, config.optim.step_gamma) == ("step", (0.4, 0.8), 0.1)
    assert config.model.head == "softmax" and config.curriculum is not None and config.curriculum.region_column == "region"


def test_the_shipped_pretrained_centroid_config_keeps_the_papers_learning_rate_ratios():
    config = load_config(resolve_config_path("cpu-centroid-v1"), TrainConfig)
    assert config.model.pretrained and config.model.pooling == "gem" and config.loss.name == "center"
    stage_one, later = config.optim.part_lr, config.curriculum.later_lr
    # the pretrained trunk 10x slower than the fresh parts, then trunk and embedding 10x slower than the classifier
    assert stage_one.embedding == stage_one.classifier == pytest.approx(10 * stage_one.backbone)
    assert later.backbone == later.embedding and later.classifier == pytest.approx(10 * later.backbone)


# --- whole runs ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet18_run(root, tmp_path_factory):
    """The curriculum of the tiny data (2 regions) with resnet18 at 64 px, 1 epoch per stage."""
    run = tmp_path_factory.mktemp("curriculum") / "run"
    config = centroid_config(root, **{"model.backbone": "resnet18"})
    rows = Trainer(config, run, progress=False).fit()
    return config, run, rows


def test_curriculum_run_writes_a_loadable_final_checkpoint(root, resnet18_run):
    config, run, rows = resnet18_run
    assert [(row["stage"], row["epoch"]) for row in rows] == [(1, 1), (2, 1)]
    with (run / "metrics.csv").open() as handle:
        assert [row["stage"] for row in csv.DictReader(handle)] == ["1", "2"]
    assert run_is_finished(run, config)
    model, saved, landmark_ids = load_trained_model(run / CHECKPOINT)
    labels = gldv2.read_train_csv(root / "train.csv")
    assert landmark_ids == sorted(set(labels["landmark_id"]))  # every tiny landmark has >= 2 images
    assert saved.curriculum is not None and model.head.fc.out_features == len(landmark_ids) + 1
    with torch.no_grad():
        assert model.embed(torch.rand(2, 3, 64, 64)).shape == (2, 32)
    stage1 = load_checkpoint(run / "checkpoint-stage1.pt")
    assert stage1["landmark_ids"] == sorted(landmarks_by_region(root)[stage1["regions"][0]] & set(landmark_ids))
    assert stage1["non_landmark_class"] == len(stage1["landmark_ids"])
    assert len(stage1["class_counts"]) == len(stage1["landmark_ids"]) + 1
    non_landmarks = len(gldv2.read_id_column(root / "train_nonlandmark.csv"))
    assert stage1["class_counts"][-1] == non_landmarks


class KilledInStage2(Exception):
    pass


def test_a_killed_curriculum_resumes_in_its_stage_and_ends_like_an_unbroken_one(root, resnet18_run, tmp_path,
                                                                                 monkeypatch):
    config, straight, _ = resnet18_run
    killed = Trainer(config, tmp_path / "killed", progress=False)
    real_advance = killed.advance_stage

    def advance_then_die_at_the_first_step():
        real_advance()
        real_step = killed._optimizer_step

        def step():
            real_step()
            raise KilledInStage2

        monkeypatch.setattr(killed, "_optimizer_step", step)

    monkeypatch.setattr(killed, "advance_stage", advance_then_die_at_the_first_step)
    with pytest.raises(KilledInStage2):
        killed.fit()
    # the last checkpoint is stage 1's end: the resumed run enters stage 2 again from it
    state = load_checkpoint(tmp_path / "killed" / CHECKPOINT)["state"]
    assert (state["stage"], state["epoch"], state["batch"]) == (1, 1, 0)
    assert (tmp_path / "killed" / "checkpoint-stage1.pt").is_file()
    assert not run_is_finished(tmp_path / "killed", config)

    Trainer(config, tmp_path / "killed", resume=True, progress=False).fit()
    final_a = load_checkpoint(straight / CHECKPOINT)
    final_b = load_checkpoint(tmp_path / "killed" / CHECKPOINT)
    assert final_a["landmark_ids"] == final_b["landmark_ids"]
    for key, value in final_a["model"].items():
        assert torch.allclose(value.float(), final_b["model"][key].float(), atol=1e-5), key
    torch.testing.assert_close(final_a["loss"]["centers"], final_b["loss"]["centers"], atol=1e-5, rtol=0)
    # metrics.csv lists every epoch of both stages, once, as the unbroken run's does
    assert metrics_without_timing(tmp_path / "killed") == metrics_without_timing(straight)
