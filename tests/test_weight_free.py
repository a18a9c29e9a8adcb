"""The weight-free path: the thumbnail descriptor as an embedding store, verified inlier
voting as a recognition method, and the photo demo."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lmkcomp.baseline import thumbnail_embeddings
from lmkcomp.calibration import calibrate_threshold
from lmkcomp.cli import main
from lmkcomp.data.layout import LandmarkData
from lmkcomp.features.store import EmbeddingStore
from lmkcomp.features.weight_free import ThumbnailDescriptor, extract_weight_free_split
from lmkcomp.inference import RecognitionConfig, predict_landmarks, recognize
from lmkcomp.voting import excess_inliers, inlier_voting

REALDEV = Path(__file__).resolve().parents[2] / "shared" / "realdev"


# --------------------------------------------------------------------------------------------
# Thumbnail store


def test_thumbnail_of_a_half_black_half_white_image(tmp_path):
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    image[:, 16:] = 255
    Image.fromarray(image).save(tmp_path / "half.png")
    row = ThumbnailDescriptor().describe_file(tmp_path / "half.png").reshape(16, 16, 3)
    # 384 values 0 and 384 values 255: centred to -/+127.5, each 1/sqrt(768) once normalised
    assert np.allclose(row[:, :8], -1 / math.sqrt(768)) and np.allclose(row[:, 8:], 1 / math.sqrt(768))


def test_thumbnail_store_holds_the_baseline_rows_and_resumes(tiny_root, tmp_path):
    data = LandmarkData(tiny_root)
    out = tmp_path / "thumb"
    store = extract_weight_free_split(data, "test", out, shard_size=10, progress=False)
    expected = thumbnail_embeddings(data, "test", data.split_ids("test"), progress=False)
    assert store.ids == data.split_ids("test") and store.dim == 768
    assert np.array_equal(store.array(), expected)
    assert store.meta == {"descriptor": "thumbnail", "settings": {"side": 16}, "split": "test"}
    (out / "shard-00001.npy").unlink()
    resumed = extract_weight_free_split(data, "test", out, shard_size=10, workers=2, progress=False)
    assert np.array_equal(resumed.array(), expected)


def test_extract_descriptor_cli(tiny_root, tmp_path, capsys):
    out = tmp_path / "thumb"
    assert main(["extract", "--descriptor", "thumbnail", "--data", str(tiny_root), "--split", "index",
                 "--out", str(out), "--quiet"]) == 0
    assert EmbeddingStore(out).meta["descriptor"] == "thumbnail"
    assert main(["extract", "--descriptor", "colour-histogram", "--data", str(tiny_root), "--split", "index",
                 "--out", str(tmp_path / "x")]) == 2
    assert main(["extract", "--descriptor", "thumbnail", "--split", "index", "--out", str(tmp_path / "y")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors == ["lmkcomp: error: unknown weight-free descriptor 'colour-histogram'; known: thumbnail",
                      "lmkcomp: error: --descriptor needs --data (the dataset root): there is no checkpoint to name it"]


# --------------------------------------------------------------------------------------------
# Inlier voting (array level)


def test_excess_inliers_leave_out_the_minimal_sample():
    assert excess_inliers([0, 3, 4, 5, 40], 4).tolist() == [0, 0, 0, 1, 36]
    assert excess_inliers([2, 3], 3).tolist() == [0, 0]


def test_inlier_voting_sums_the_k_best_inliers_of_each_landmark():
    # query 0: landmark 7 has one pair of 14; landmark 5 has 10 + 3 + 2 (+ 1 beyond k = 3) = 15
    # query 1: no pair; query 2: no inlier at all, so its first pair's landmark (9) with 0
    labels, scores, found = inlier_voting([0, 0, 0, 0, 0, 2, 2], [7, 5, 5, 5, 5, 9, 8], [14, 10, 3, 2, 1, 0, 0],
                                          3, k=3)
    assert labels.tolist() == [5, -1, 9] and scores.tolist() == [15, 0, 0] and found.tolist() == [True, False, True]
    # k = 1: the single best pair decides
    assert inlier_voting([0, 0, 0], [7, 5, 5], [14, 10, 10], 1, k=1)[0].tolist() == [7]
    # a tie goes to the landmark whose first pair comes first
    assert inlier_voting([0, 0], [7, 5], [4, 4], 1)[0].tolist() == [7]
    assert inlier_voting([0, 0], [5, 7], [4, 4], 1)[0].tolist() == [5]


# --------------------------------------------------------------------------------------------
# Verified voting over stores


@pytest.fixture(scope="module")
def stores(tiny_root, tmp_path_factory):
    """Thumbnail and SIFT stores of the tiny dataset's test and train splits."""
    from lmkcomp.local.extract import extract_local_split
    from lmkcomp.local.extractors import create_local_extractor

    folder = tmp_path_factory.mktemp("weight-free")
    data = LandmarkData(tiny_root)
    for split in ("test", "train"):
        extract_weight_free_split(data, split, folder / "thumb" / split, progress=False)
        extract_local_split(data, split, folder / "sift" / split, create_local_extractor("sift"), progress=False)
    return folder


def _verified(folder: Path, **changes) -> RecognitionConfig:
    return RecognitionConfig(method="verified-voting", test_local=str(folder / "sift" / "test"),
                             train_local=str(folder / "sift" / "train"), **{"candidates": 20, **changes})


def test_verified_voting_predicts_the_landmark_with_the_most_inliers(tiny_root, stores, tmp_path):
    from lmkcomp.local.pairs import read_pair_table

    data = LandmarkData(tiny_root)
    test, train = EmbeddingStore(stores / "thumb" / "test"), EmbeddingStore(stores / "thumb" / "train")
    # every test image against every train image: no train embeddings needed
    result = recognize(data, test, None, "verified", _verified(stores, candidates=0), tmp_path / "work",
                       tmp_path / "subs", progress=False)
    knn = recognize(data, test, train, "knn", RecognitionConfig(), tmp_path / "work", tmp_path / "subs",
                    progress=False)
    # inlier votes rank the 16 non-landmark test images far below the verified landmark images
    # (measured: GAP 0.571 against 0.109; top-1 0.571 both)
    assert result["scores"]["gap"] > knn["scores"]["gap"] + 0.3
    assert result["scores"]["top1_accuracy"] >= knn["scores"]["top1_accuracy"]
    # the submission's landmark per test image is the one whose 3 best verified pairs sum the
    # most inliers beyond the homography's 4
    table = read_pair_table(Path(result["files"]["pair tables"]) / "block-00000")
    labels = data.train_labels().set_index("id")["landmark_id"]
    table["landmark"] = labels.reindex(table["candidate_id"]).to_numpy()
    table["excess"] = (table["inliers"] - 4).clip(lower=0)
    assert len(table) == len(train) * len(test)
    top3 = (table.sort_values("excess", ascending=False, kind="stable").groupby(["query_id", "landmark"])["excess"]
            .apply(lambda s: s.head(3).sum()))
    submitted = pd.read_csv(result["csv"], dtype=str).set_index("id")["landmarks"]
    for query, sums in top3.groupby(level=0):
        landmark, score = submitted[query].split()
        assert float(score) == sums.max() and sums.loc[(query, int(landmark))] == sums.max()


def test_verified_voting_applies_a_calibrated_threshold_without_verifying_again(tiny_root, stores, tmp_path):
    data = LandmarkData(tiny_root)
    test, train = EmbeddingStore(stores / "thumb" / "test"), EmbeddingStore(stores / "thumb" / "train")
    run = recognize(data, test, train, "v", _verified(stores), tmp_path, tmp_path / "subs", progress=False)
    scores = pd.read_csv(run["files"]["calibration scores"])
    assert len(scores) == len(data.recognition_solution.scored("all"))  # every scored test image, 16 of them non-landmark
    calibration = calibrate_threshold(scores["score"][scores["landmark"] == 1], scores["score"][scores["landmark"] == 0],
                                      0.9, integer=True, minimum=1)
    assert calibration.specificity >= 0.9
    chunks = sorted(Path(run["files"]["pair tables"]).rglob("chunk-*.parquet"))
    assert sum(pd.read_parquet(chunk).shape[0] for chunk in chunks) == 20 * len(test)  # the 20 nearest each
    written = [chunk.stat().st_mtime_ns for chunk in chunks]
    first = predict_landmarks(test, train, data, _verified(stores), tmp_path, progress=False)
    second = predict_landmarks(test, train, data, _verified(stores, min_score=calibration.threshold), tmp_path,
                               progress=False)
    assert [chunk.stat().st_mtime_ns for chunk in chunks] == written
    assert np.array_equal(second.valid, first.valid & (first.confidences >= calibration.threshold))
    assert np.array_equal(second.labels, first.labels) and second.valid.sum() < first.valid.sum()
    # recognize with the threshold: the same votes to calibrate on, but fewer predictions to count for demotion
    thresholded = recognize(data, test, train, "v", _verified(stores, min_score=calibration.threshold), tmp_path,
                            tmp_path / "subs", progress=False)
    again = pd.read_csv(thresholded["files"]["calibration scores"])
    assert again[["id", "best_landmark", "confidence", "score"]].equals(scores[["id", "best_landmark", "confidence",
                                                                                "score"]])
    below = again["confidence"] < calibration.threshold
    assert below.any() and (again["landmark_predictions"][below] == 0).all()
    assert (again["landmark_predictions"][~below] >= 1).all()


def test_recognize_cli_errors(tiny_root, stores, tmp_path, capsys):
    common = ["recognize", "--data", str(tiny_root), "--queries", str(stores / "thumb" / "test"), "--name", "x",
              "--workdir", str(tmp_path), "--submissions", str(tmp_path), "--method", "verified-voting", "--quiet"]
    assert main(common + ["--train", str(stores / "thumb" / "train")]) == 2
    assert main(common + ["--queries-local", str(stores / "sift" / "test"), "--train-local",
                          str(stores / "sift" / "train")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors[0].startswith("lmkcomp: error: verified voting needs the local features of the test and train")
    assert errors[1].startswith("lmkcomp: error: verified voting of the nearest --candidates needs a train embedding")
    with pytest.raises(SystemExit):
        main(common + ["--candidates", "-1"])


# --------------------------------------------------------------------------------------------
# Real photos and the photo demo


@pytest.mark.slow
@pytest.mark.skipif(not REALDEV.is_dir(), reason=f"{REALDEV} (the real development photos) is absent")
def test_photo_demo_on_realdev(tmp_path):
    from lmkcomp.demo.photos import run_photo_demo

    rows = run_photo_demo(REALDEV, workdir=tmp_path / "demo", submissions=tmp_path / "subs", progress=False)
    knn, verified = rows[-2], rows[-1]
    assert verified.gap > knn.gap and verified.map100 >= knn.map100
    page = (tmp_path / "subs" / "report" / "index.html").read_text(encoding="utf-8")
    assert "verified voting" in page and "RootSIFT" in page and "synthetic rendering" not in page


@pytest.mark.slow
def test_photo_demo_on_generated_folders(tiny_root, tmp_path):
    from lmkcomp.demo.photos import run_photo_demo

    data = LandmarkData(tiny_root)
    labels = data.train_labels()
    for landmark in labels["landmark_id"].value_counts().index[:3]:
        folder = tmp_path / "src" / f"landmark{landmark}"
        folder.mkdir(parents=True)
        for image_id in labels[labels["landmark_id"] == landmark]["id"].head(6):
            shutil.copy(data.image_path("train", image_id), folder / f"{image_id}.jpg")
    rows = run_photo_demo(tmp_path / "src", workdir=tmp_path / "demo", submissions=tmp_path / "subs", progress=False)
    assert [row.stage for row in rows[:3]] == ["import photos", "thumbnail embeddings (no weights)",
                                               "extract RootSIFT local features"]
    assert all(row.gap is not None and row.map100 is not None for row in rows[3:])
    assert (tmp_path / "subs" / "report" / "index.html").is_file()
    again = run_photo_demo(tmp_path / "src", workdir=tmp_path / "demo", submissions=tmp_path / "subs",
                           progress=False, report=False)
    assert [row.gap for row in again[3:]] == [row.gap for row in rows[3:]]


def test_demo_from_folders_refuses_training_options(tmp_path, capsys):
    assert main(["demo", "--from-folders", str(tmp_path), "--pretrained", "x.pt", "--workdir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == ("lmkcomp: error: --pretrained: not with --from-folders, whose demo "
                                               "trains nothing")
