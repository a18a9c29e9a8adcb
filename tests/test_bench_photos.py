"""`lmkcomp bench photos`: who is verified against whom, the votes, and a run on generated photos."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmkcomp.bench import photos as bench_photos
from lmkcomp.bench.photos import PHOTO_VARIANTS, PhotoProtocol, _votes, photo_protocol
from lmkcomp.cli import main
from lmkcomp.data.folders import NON_LANDMARK, SourcePhoto
from lmkcomp.data.layout import LandmarkData
from lmkcomp.errors import UserInputError


def photo(name: str, landmark: str, split: str | None = None) -> SourcePhoto:
    return SourcePhoto(Path(f"/photos/{name}.jpg"), landmark, split)


def test_given_test_photos_are_queried_against_every_train_photo():
    photos = [photo("a1", "a", "train"), photo("a2", "a", "test"), photo("b1", "b", "train"),
              photo("x", NON_LANDMARK, "test"), photo("b2", "b", "index")]
    protocol = photo_protocol(photos)
    assert [path.stem for path in protocol.paths] == ["a1", "a2", "b1", "x"]  # index photos take no part
    assert protocol.labels.tolist() == [0, 0, 1, -1] and not protocol.leave_one_out
    assert protocol.queries.tolist() == [1, 3]
    assert protocol.pairs.tolist() == [[1, 0], [1, 2], [3, 0], [3, 2]]


def test_without_a_split_every_photo_is_left_out_in_turn():
    photos = [photo("a1", "a"), photo("a2", "a"), photo("b1", "b"), photo("x", NON_LANDMARK)]
    protocol = photo_protocol(photos)
    assert protocol.leave_one_out and protocol.queries.tolist() == [0, 1, 2, 3]
    # each unordered pair once, none between two non-landmark photos
    assert protocol.pairs.tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
    with pytest.raises(UserInputError, match="at least two landmark photos"):
        photo_protocol([photo("a1", "a"), photo("x", NON_LANDMARK)])


def test_too_many_pairs_are_refused_by_their_count(monkeypatch):
    monkeypatch.setattr(bench_photos, "MAX_PAIRS", 5)
    # leave-one-out: 4 photos, 6 pairs, less the one between the two non-landmark photos = 5
    loo = [photo("a1", "a"), photo("a2", "a"), photo("x", NON_LANDMARK), photo("y", NON_LANDMARK)]
    assert len(photo_protocol(loo).pairs) == 5
    # one more landmark photo: 10 pairs, less the one between the two non-landmark photos = 9
    with pytest.raises(UserInputError, match=r"^9 pairs to verify per variant \(more than 5\)"):
        photo_protocol([*loo, photo("b1", "b")])
    given = [photo(f"t{i}", "a", "train") for i in range(3)] + [photo(f"q{i}", "a", "test") for i in range(2)]
    with pytest.raises(UserInputError, match=r"^6 pairs to verify per variant"):
        photo_protocol(given)


def test_votes_sum_the_k_best_inliers_of_each_landmark_both_ways_when_leaving_one_out():
    # photos 0, 1: landmark 0; 2, 3: landmark 1; 4: a non-landmark photo
    protocol = PhotoProtocol([Path(str(i)) for i in range(5)], np.array([0, 0, 1, 1, -1]), np.arange(5),
                             np.array([[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3], [4, 0], [4, 2]]), True)
    inliers = np.array([9, 4, 6, 1, 2, 30, 5, 6])
    votes = _votes(protocol, inliers, k=2)
    # photo 0: landmark 0 has 9 (photo 1); landmark 1 has 4 + 6 -> landmark 1 with 10
    # photo 1: landmark 0 has 9; landmark 1 has 1 + 2 -> landmark 0 with 9
    # photo 2: landmark 0 has 4 + 1; landmark 1 has 30 (photo 3); the non-landmark photo 4 never votes
    # photo 4: landmark 0 has 5, landmark 1 has 6
    assert votes == {"0": (1, 10.0), "1": (0, 9.0), "2": (1, 30.0), "3": (1, 30.0), "4": (1, 6.0)}


def test_a_shortlist_keeps_each_querys_nearest_candidates_by_similarity():
    protocol = PhotoProtocol([Path(str(i)) for i in range(5)], np.array([0, 0, 1, 1, -1]), np.arange(5),
                             np.array([[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3], [4, 0], [4, 2]]), True)
    inliers = np.array([9, 4, 6, 1, 2, 30, 5, 6])
    similarity = np.array([[1.0, 0.1, 0.9, 0.5, 0.0],
                           [0.1, 1.0, 0.2, 0.3, 0.0],
                           [0.9, 0.2, 1.0, 0.4, 0.9],
                           [0.5, 0.3, 0.4, 1.0, 0.0],
                           [0.0, 0.0, 0.9, 0.0, 1.0]])
    votes = _votes(protocol, inliers, 3, similarity, candidates=1)
    # photo 0's nearest is 2 (landmark 1, 4 inliers); photo 1's is 3 (landmark 1, 2); photo 2's
    # nearest labelled one is 0 (0.9 ties with the unlabelled photo 4, which never votes):
    # landmark 0 with 4; photo 3's is 0 (landmark 0, 6); photo 4's is 2 (landmark 1, 6)
    assert votes == {"0": (1, 4.0), "1": (1, 2.0), "2": (0, 4.0), "3": (0, 6.0), "4": (1, 6.0)}
    # two candidates: photo 0 adds photo 3 (landmark 1): 4 + 6
    assert _votes(protocol, inliers, 3, similarity, candidates=2)["0"] == (1, 10.0)


def test_the_reference_is_the_issues_pipeline():
    reference = PHOTO_VARIANTS["reference"]
    config = reference.verify_config()
    assert reference.method == "rootsift" and reference.options == {"max_side": 512, "max_features": 1000}
    assert (config.matcher, config.ratio, config.model, config.residual, config.reference_side) == (
        "mutual", None, "homography", 1.0, 512.0)
    assert (config.confidence, config.iterations) == (0.999, 50_000)  # pydegensac's own defaults


def test_bench_photos_on_generated_photo_folders(tiny_root, tmp_path, capsys):
    train = pd.read_csv(tiny_root / "train.csv")
    data = LandmarkData(tiny_root)
    src = tmp_path / "src"
    for landmark in sorted(train["landmark_id"].unique())[:3]:
        for image_id in train.loc[train["landmark_id"] == landmark, "id"].head(3):
            target = src / f"landmark{landmark}" / f"{image_id}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(data.image_path("train", image_id), target)
    n = len(list(src.glob("*/*.jpg")))
    out = tmp_path / "photos.json"
    assert main(["bench", "photos", "--from-folders", str(src), "--variants", "reference,fast", "--out", str(out),
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"{n} queries ({n} of a landmark, leave-one-out), {n * (n - 1) // 2} pairs verified per variant" in printed
    rows = json.loads(out.read_text())["rows"]
    assert [row["variant"] for row in rows] == ["reference", "fast"]
    for row in rows:
        assert 0 <= row["gap"] <= 1 and 0 <= row["top1"] <= 1 and row["pairs_per_s"] > 0
        assert row["ms_per_pair"] == pytest.approx(1000 / row["pairs_per_s"])
    # photos of one landmark share far more inliers than photos of two
    assert rows[1]["mean_inliers_same"] > 2 * rows[1]["mean_inliers_different"]


def test_bench_photos_refuses_an_unknown_variant(tmp_path, capsys):
    (tmp_path / "src" / "a").mkdir(parents=True)
    assert main(["bench", "photos", "--from-folders", str(tmp_path / "src"), "--variants", "slow"]) == 2
    assert "unknown photo benchmark variant 'slow'" in capsys.readouterr().err
