"""Cleaning methods on hand-made points and on the tiny preset's injected noise."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lmkcomp.clean.embedding_methods import central_references, clean_dbscan, clean_references
from lmkcomp.clean.result import CleaningResult, write_result
from lmkcomp.data import gldv2, synthetic
from lmkcomp.errors import UserInputError

IDS = [f"{i:016x}" for i in range(7)]


def unit(*rows) -> np.ndarray:
    x = np.array(rows, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_dbscan_keeps_the_main_cluster():
    # landmark 1: three points near e1, one near e2 (cosine distance ~1 from the rest)
    # landmark 2: two points 90 degrees apart -> no cluster with eps 0.33 -> both removed
    # landmark 3: a single image -> DBSCAN noise with min_samples 2 -> removed
    embeddings = unit([1, 0.05, 0], [1, 0, 0.05], [1, 0.02, 0.02], [0, 1, 0], [1, 0, 0], [0, 0, 1], [0, 1, 1])
    labels = np.array([1, 1, 1, 1, 2, 2, 3])
    result = clean_dbscan(IDS, labels, embeddings)
    assert result.keep.tolist() == [True, True, True, False, False, False, False]
    assert result.reasons[3] == "outside the main DBSCAN cluster" and result.reasons[4] == "no DBSCAN cluster"


def test_dbscan_radius_is_the_cosine_eps():
    # two points at cosine distance 0.30 stay together with eps 0.33, split with eps 0.25
    angle = np.arccos(0.70)
    embeddings = unit([1, 0], [np.cos(angle), np.sin(angle)])
    assert clean_dbscan(IDS[:2], np.array([5, 5]), embeddings, eps=0.33).keep.all()
    assert not clean_dbscan(IDS[:2], np.array([5, 5]), embeddings, eps=0.25).keep.any()


def test_central_references_and_centroid_threshold():
    embeddings = unit([1, 0.1], [1, -0.1], [1, 0], [0, 1])
    members = np.arange(4)
    # mean similarity to the others: e0 (0.980 + 0.995 + 0.0995) / 3 = 0.692, e2 (0.995 + 0.995 + 0) / 3
    # = 0.663, e1 (0.980 + 0.995 - 0.0995) / 3 = 0.625, e3 ~ 0: the two most central are e0, e2
    assert central_references(embeddings, members, 2).tolist() == [0, 2]
    assert 3 not in central_references(embeddings, members, 3)
    result = clean_references(IDS[:4], np.array([8] * 4), embeddings, gamma=0.5, k=3)
    assert result.keep.tolist() == [True, True, True, False]
    # given references: the outlier itself as reference flips the decision
    flipped = clean_references(IDS[:4], np.array([8] * 4), embeddings, gamma=0.5, references={8: [IDS[3]]})
    assert flipped.keep.tolist() == [False, False, False, True]
    with pytest.raises(UserInputError, match="is not a train image"):
        clean_references(IDS[:4], np.array([8] * 4), embeddings, references={8: ["f" * 16]})


def test_write_result_and_score(tmp_path):
    result = CleaningResult("demo", IDS[:4], np.array([1, 1, 1, 2]), np.ones(4, dtype=bool))
    result.remove([1], "looks wrong")
    result.drop_small_landmarks(2)  # landmark 2 keeps a single image -> removed
    truth = tmp_path / "noise_truth.csv"
    gldv2.write_csv_rows(truth, ["id", "landmark_id", "true_landmark_id", "noise"],
                         [(IDS[0], 1, 1, "none"), (IDS[1], 1, "", "non_landmark"), (IDS[2], 1, 7, "other_landmark"),
                          (IDS[3], 2, 2, "none")])
    report = write_result(result, tmp_path / "out", noise_truth=truth)
    assert (tmp_path / "out" / "train_clean.csv").read_text() == f"landmark_id,images\n1,{IDS[0]} {IDS[2]}\n"
    removed = pd.read_csv(tmp_path / "out" / "removed.csv", dtype=str)
    assert removed["reason"].tolist() == ["looks wrong", "landmark left with too few images"]
    # removed {1, 3}; noisy {1, 2}: precision 1/2, recall 1/2
    assert report["against_noise_truth"]["precision"] == pytest.approx(0.5)
    assert report["against_noise_truth"]["recall"] == pytest.approx(0.5)
    assert report["landmarks_before"] == 2 and report["landmarks_after"] == 1


@pytest.fixture(scope="module")
def tiny_truth(tmp_path_factory) -> pd.DataFrame:
    root = tmp_path_factory.mktemp("tiny")
    plan = synthetic.make_plan(synthetic.preset_config("tiny", min_train_per_landmark=4), seed=4)
    synthetic.write_csvs(root, plan)  # labels and ground truth only; no pixels needed here
    return pd.read_csv(root / "noise_truth.csv", dtype=str, keep_default_na=False)


def truth_embeddings(truth: pd.DataFrame, seed: int = 0, spread: float = 0.15) -> np.ndarray:
    """A descriptor that sees what each image really shows: one direction per true landmark,
    a random one per non-landmark image, plus noise."""
    rng = np.random.default_rng(seed)
    directions = {}
    rows = []
    for true in truth["true_landmark_id"]:
        if true == "":
            base = rng.normal(size=64)
        else:
            base = directions.setdefault(true, rng.normal(size=64))
        rows.append(base / np.linalg.norm(base) + spread * rng.normal(size=64) / 8)
    x = np.array(rows)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("method", ["dbscan", "references"])
def test_methods_remove_the_noise_they_can_see_on_tiny(tiny_truth, method):
    embeddings = truth_embeddings(tiny_truth)
    labels = tiny_truth["landmark_id"].astype(int).to_numpy()
    ids = tiny_truth["id"].tolist()
    result = (clean_dbscan(ids, labels, embeddings) if method == "dbscan"
              else clean_references(ids, labels, embeddings, gamma=0.5, k=3))
    noisy = (tiny_truth["noise"] != "none").to_numpy()
    # every noisy image in a landmark whose majority is right is removed, and few good ones are
    majority_right = tiny_truth.groupby("landmark_id")["noise"].transform(lambda s: (s == "none").mean() > 0.5).to_numpy()
    assert not result.keep[noisy & majority_right].any()
    assert result.keep[~noisy & majority_right].mean() > 0.9
