"""The synthetic mini-GLDv2: layout, CSV consistency, long tail, noise, determinism, resume."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmkcomp.data import gldv2, synthetic
from lmkcomp.data.images import load_image_rgb
from lmkcomp.data.layout import LandmarkData
from lmkcomp.errors import UserInputError

TINY = synthetic.preset_config("tiny")


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    synthetic.generate(root, TINY, seed=3, progress=False)
    return root


def test_layout_files_and_headers(tiny):
    expected = {
        "train.csv": "id,url,landmark_id",
        "train_clean.csv": "landmark_id,images",
        "train_label_to_category.csv": "landmark_id,category",
        "index_image_to_landmark.csv": "id,landmark_id",
        "recognition_solution_v2.1.csv": "id,landmarks,Usage",
        "retrieval_solution_v2.1.csv": "id,images,Usage",
        "sample_submission.csv": "id,landmarks",
        "noise_truth.csv": "id,landmark_id,true_landmark_id,noise",
        "landmark_metadata.csv": "landmark_id,name,region,city,latitude,longitude,family",
        "image_metadata.csv": "id,split,latitude,longitude",
    }
    for name, header in expected.items():
        assert (tiny / name).read_text().splitlines()[0] == header, name


def test_every_listed_image_exists_and_loads(tiny):
    data = LandmarkData(tiny, "gldv2")
    train_ids = data.split_ids("train")
    for image_id in train_ids:
        assert data.image_path("train", image_id).is_file()
    sample = load_image_rgb(data.image_path("train", train_ids[0]))
    assert sample.dtype == np.uint8 and sample.ndim == 3 and max(sample.shape[:2]) == TINY.long_side
    files = sum(1 for _ in tiny.glob("*/*/*/*/*.jpg"))
    # the preset's non-landmark train images (the bank) are files in train/ but not in train.csv
    bank = gldv2.read_id_column(tiny / "train_nonlandmark.csv")
    assert len(bank) == round(TINY.train_distractor_ratio * len(train_ids)) > 0
    assert not set(bank) & set(train_ids)
    for image_id in bank:
        assert data.image_path("train", image_id).is_file()
    assert files == len(train_ids) + len(bank) + len(data.split_ids("index")) + len(data.split_ids("test"))


def test_solutions_agree_with_splits(tiny):
    data = LandmarkData(tiny, "gldv2")
    test_ids = data.split_ids("test")
    assert sorted(data.recognition_solution.answers) == test_ids
    assert sorted(data.retrieval_solution.answers) == test_ids
    assert sorted(gldv2.read_sample_submission(data.file("sample_submission"))) == test_ids
    index_labels = dict(zip(data.index_labels["id"], data.index_labels["landmark_id"]))
    assert set(index_labels) <= set(data.split_ids("index"))
    train_landmarks = set(data.train_labels()["landmark_id"])
    for image_id, landmarks in data.recognition_solution.answers.items():
        relevant = data.retrieval_solution.answers[image_id]
        assert set(landmarks) <= train_landmarks
        # every relevant index image shows the query's landmark
        assert all(index_labels[r] == landmarks[0] for r in relevant)
        if not landmarks:
            assert data.retrieval_solution.usage[image_id] == "Ignored"
    distractors = sum(1 for answers in data.recognition_solution.answers.values() if not answers)
    assert distractors > len(test_ids) / 2  # most test images are distractors, as in GLDv2
    assert 0 < len(index_labels) < len(data.split_ids("index"))  # the index has distractors too


def test_noise_truth_matches_train_and_is_only_ground_truth(tiny):
    truth = pd.read_csv(tiny / "noise_truth.csv", dtype=str, keep_default_na=False)
    train = gldv2.read_train_csv(tiny / "train.csv")
    assert truth["id"].tolist() == train["id"].tolist()
    assert truth["landmark_id"].astype(int).tolist() == train["landmark_id"].tolist()
    clean = truth[truth["noise"] == "none"]
    assert (clean["true_landmark_id"] == clean["landmark_id"]).all()
    swapped = truth[truth["noise"] == "other_landmark"]
    assert (swapped["true_landmark_id"] != swapped["landmark_id"]).all()
    assert (truth.loc[truth["noise"] == "non_landmark", "true_landmark_id"] == "").all()
    assert set(truth["noise"]) <= {"none", "other_landmark", "non_landmark"}


def test_train_clean_is_an_imperfect_subset(tmp_path):
    plan = synthetic.make_plan(synthetic.preset_config("small"), seed=0)
    synthetic.write_csvs(tmp_path, plan)  # CSVs only: no rendering needed
    clean = gldv2.read_train_clean_csv(tmp_path / "train_clean.csv")
    truth = pd.read_csv(tmp_path / "noise_truth.csv", dtype=str, keep_default_na=False).set_index("id")
    noisy_share_before = (truth["noise"] != "none").mean()
    noisy_share_after = (truth.loc[clean["id"], "noise"] != "none").mean()
    assert 0.15 < noisy_share_before < 0.25  # default noise fraction 0.2
    assert noisy_share_after < noisy_share_before / 3
    assert len(clean) < (truth["noise"] == "none").sum()  # misses some good images
    assert clean.groupby("landmark_id").size().min() >= 2


def test_long_tail_and_lookalikes_on_small_plan():
    plan = synthetic.make_plan(synthetic.preset_config("small"), seed=0)
    per_landmark = Counter(image.label for image in plan.images if image.split == "train")
    counts = np.array(sorted(per_landmark.values()))
    assert 1800 <= counts.sum() <= 2400  # the small preset is about 2,000 train images
    assert np.mean((counts >= 2) & (counts <= 5)) > 0.5  # most landmarks have 2-5 images
    assert counts.max() >= 10 * np.median(counts)  # and a few have very many
    family_sizes = Counter(lm.family for lm in plan.landmarks)
    assert sum(size for size in family_sizes.values() if size > 1) >= 0.2 * len(plan.landmarks)
    assert all(lm.region and lm.city for lm in plan.landmarks)
    assert len({lm.landmark_id for lm in plan.landmarks}) == len(plan.landmarks)


def test_same_seed_is_byte_identical_whatever_the_workers(tiny, tmp_path):
    again = tmp_path / "again"
    synthetic.generate(again, TINY, seed=3, workers=2, progress=False)
    assert tree_digest(again) == tree_digest(tiny)


def test_other_seed_differs(tmp_path):
    first = synthetic.make_plan(TINY, seed=1)
    second = synthetic.make_plan(TINY, seed=2)
    assert [i.image_id for i in first.images] != [i.image_id for i in second.images]


def test_resume_renders_only_what_is_missing(tiny, tmp_path):
    copy = tmp_path / "copy"
    synthetic.generate(copy, TINY, seed=3, progress=False)
    manifest = copy / synthetic.MANIFEST
    manifest.write_text(manifest.read_text().replace('"complete": true', '"complete": false'))
    victims = sorted(copy.glob("train/*/*/*/*.jpg"))[:3]
    for victim in victims:
        victim.unlink()
    synthetic.generate(copy, TINY, seed=3, progress=False)
    assert tree_digest(copy) == tree_digest(tiny)


def test_refuses_a_folder_made_with_other_settings(tiny, tmp_path):
    with pytest.raises(UserInputError, match="other settings"):
        synthetic.generate(tiny, TINY, seed=4, progress=False)
    (tmp_path / "stray.txt").write_text("mine")
    with pytest.raises(UserInputError, match="not empty"):
        synthetic.generate(tmp_path, TINY, seed=3, progress=False)


def test_unknown_option_and_preset():
    with pytest.raises(UserInputError, match="unknown dataset option"):
        synthetic.preset_config("tiny", colour="red")
    with pytest.raises(UserInputError, match="unknown dataset preset .huge."):
        synthetic.preset_config("huge")


def stream_fingerprints(keys: list[list[int]]) -> set[tuple[int, ...]]:
    """The first draws of the random stream behind each key: two landmarks (or styles) are the
    same picture only when their streams are the same."""
    return {tuple(np.random.default_rng(key).integers(0, 2**63 - 1, size=4).tolist()) for key in keys}


def test_v1_landmarks_are_in_no_other_preset():
    v1 = synthetic.preset_config("v1")
    v1_plan = synthetic.make_plan(v1, seed=0)
    v1_scenes = stream_fingerprints([synthetic.scene_key(v1, 0, s) for s in range(len(v1_plan.landmarks))])
    v1_styles = stream_fingerprints([synthetic.style_key(v1, 0, f) for f in range(len(v1_plan.landmarks))])
    assert len(v1_scenes) == len(v1_plan.landmarks) == 1000
    for preset in ("tiny", "small", "medium"):
        config = synthetic.preset_config(preset)
        for seed in range(3):  # whatever the seeds of either
            count = config.num_landmarks
            assert not v1_scenes & stream_fingerprints([synthetic.scene_key(config, seed, s) for s in range(count)])
            assert not v1_styles & stream_fingerprints([synthetic.style_key(config, seed, f) for f in range(count)])
    # and the keys are the ones rendering uses: the first landmark of v1 and of small (same seed,
    # same position) are different pictures
    small = synthetic.preset_config("small")
    rng = np.random.default_rng(7)
    v1_photo = synthetic.scenes.render_photo(synthetic._build_scene(synthetic.RenderTask(Path(), 0, v1, 0, -1, [])),
                                             rng, 64)
    rng = np.random.default_rng(7)
    small_photo = synthetic.scenes.render_photo(
        synthetic._build_scene(synthetic.RenderTask(Path(), 0, small, 0, -1, [])), rng, 64)
    assert v1_photo.shape == small_photo.shape and np.abs(v1_photo.astype(int) - small_photo).mean() > 10


def test_v1_is_a_train_only_corpus_with_more_images_per_landmark():
    plan = synthetic.make_plan(synthetic.preset_config("v1"), seed=0)
    splits = Counter(image.split for image in plan.images)
    assert set(splits) == {"train"} and 10_000 < splits["train"] < 20_000
    per_landmark = Counter(image.label for image in plan.images)
    assert min(per_landmark.values()) >= 6
    noisy = sum(image.noise != synthetic.NOISE_NONE for image in plan.images) / len(plan.images)
    assert noisy < 0.1
