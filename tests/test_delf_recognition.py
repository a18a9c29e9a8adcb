"""DELF recognition: the feature indexes, votes, the shortlist, the threshold rule, save/load,
stored runs re-thresholded and calibrated, and `lmkcomp delf recognize` end to end on the tiny
synthetic dataset with SIFT and RootSIFT."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pytest

from delf_baseline.index import (
    FEATURE_INDEXES,
    PcaKdTreeIndex,
    build_database_index,
    default_nlist,
    default_pq_m,
    disk_bytes,
    load_database_index,
    open_database_index,
)
from delf_baseline.recognition import (
    NO_LANDMARK,
    DelfRecognizer,
    calibrate_inlier_threshold,
    calibration_scores,
    predictions_frame,
    recognize_store,
    run_recognition,
    submission_predictions,
    vote,
)
from lmkcomp.cli import main
from lmkcomp.data import synthetic
from lmkcomp.data.layout import LandmarkData
from lmkcomp.errors import UserInputError
from lmkcomp.idarrays import IdIndex
from lmkcomp.local.record import LocalFeatures
from lmkcomp.local.store import LocalFeatureStore, LocalFeatureWriter
from lmkcomp.submission import validate_submission

pytestmark = pytest.mark.slow

DIM = 32
FEATURES_PER_IMAGE = 300
DATABASE_IDS = [f"{i:016x}" for i in range(1, 6)]
LABELS = {image_id: 100 + i for i, image_id in enumerate(DATABASE_IDS)}
KINDS = ("flat", "pq", "pca10-kdtree")


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def make_images(seed: int = 0) -> list[LocalFeatures]:
    """Image j: features around its own axis e_j (descriptor unit(e_j + 0.5 u) with u a random
    unit vector per feature), so each image is a distinct cluster of distinct descriptors;
    locations spread over a 200 x 200 image."""
    rng = np.random.default_rng(seed)
    images = []
    for j in range(len(DATABASE_IDS)):
        centre = np.zeros(DIM)
        centre[j] = 1.0
        descriptors = unit(centre + 0.5 * unit(rng.standard_normal((FEATURES_PER_IMAGE, DIM))))
        locations = rng.uniform(0, 200, (FEATURES_PER_IMAGE, 2))
        images.append(LocalFeatures(locations, descriptors, np.ones(FEATURES_PER_IMAGE), np.ones(FEATURES_PER_IMAGE)))
    return images


def write_store(directory, ids, records) -> LocalFeatureStore:
    writer = LocalFeatureWriter(directory, ids, DIM, "handmade", shard_size=2)
    for k, rows in writer.pending_shards():
        writer.write_shard(k, records[rows])
    writer.finish()
    return LocalFeatureStore(directory)


def query_from(image: LocalFeatures, rows: np.ndarray, shift=(7.0, -4.0), seed: int = 1) -> LocalFeatures:
    """Features `rows` of `image`, shifted by `shift` px with slightly perturbed descriptors:
    the same scene seen again, so every feature should verify as an inlier."""
    rng = np.random.default_rng(seed)
    descriptors = unit(image.descriptors[rows] + 0.01 * rng.standard_normal((len(rows), DIM)))
    return LocalFeatures(image.locations[rows] + np.asarray(shift), descriptors, np.ones(len(rows)), np.ones(len(rows)))


@pytest.fixture(scope="module")
def images() -> list[LocalFeatures]:
    return make_images()


@pytest.fixture(scope="module")
def database(tmp_path_factory, images) -> LocalFeatureStore:
    return write_store(tmp_path_factory.mktemp("database"), DATABASE_IDS, images)


@pytest.fixture(scope="module")
def indexes(database) -> dict:
    # pq: 4 lists, so that its precomputed table (4 x 8 x 256 floats) stays below the flat
    # index of these 1500 features, as it does at scale
    options = {"pq": {"nlist": 4}}
    return {kind: build_database_index(database, kind, progress=False, **options.get(kind, {})) for kind in KINDS}


def test_vote_counts_one_vote_per_feature_and_image():
    neighbour_images = np.array([[2, 2, 1],   # feature 0: images 2 and 1, once each
                                 [0, -1, 2],  # feature 1: images 0 and 2 (-1: no neighbour)
                                 [1, 1, 1]])  # feature 2: image 1 once
    images, votes = vote(neighbour_images)
    # votes: image 1: 2, image 2: 2, image 0: 1; the tie goes to the lower image
    assert images.tolist() == [1, 2, 0] and votes.tolist() == [2, 2, 1]
    valid = np.array([[True, False, False], [True, True, True], [True, True, True]])
    images, votes = vote(neighbour_images, valid)
    assert dict(zip(images.tolist(), votes.tolist())) == {2: 2, 0: 1, 1: 1}
    assert images.tolist() == [2, 0, 1]


def test_query_near_one_image_votes_for_it_with_hand_counted_votes(indexes, database, images):
    # 30 features near image 2's and 10 near image 0's; each of their 60 nearest database
    # features lie in that same cluster (300 features a cluster), so each votes exactly once
    query_2 = query_from(images[2], np.arange(30))
    query_0 = query_from(images[0], np.arange(10), seed=2)
    query = LocalFeatures(np.vstack([query_2.locations, query_0.locations]),
                          np.vstack([query_2.descriptors, query_0.descriptors]), np.ones(40), np.ones(40))
    recognizer = DelfRecognizer(indexes["flat"], LABELS, database, inlier_threshold=5, verify="fast")
    shortlisted, votes = recognizer.shortlist(query)
    assert shortlisted.tolist() == [2, 0] and votes.tolist() == [30, 10]
    prediction = recognizer.recognize(query)
    assert prediction.landmark_id == LABELS[DATABASE_IDS[2]]
    assert [(c.image_id, c.votes) for c in prediction.candidates] == [(DATABASE_IDS[2], 30), (DATABASE_IDS[0], 10)]
    # the 30 shifted features of image 2 all verify; confidence = the best inlier count
    assert prediction.candidates[0].inliers == 30 and prediction.score == 30.0
    assert prediction.timings.knn_seconds > 0 and prediction.timings.ransac_seconds > 0
    # each query feature lies about 0.05 from its source feature: a 0.01 distance limit
    # leaves no neighbour to vote, so no candidate and no prediction
    strict = DelfRecognizer(indexes["flat"], LABELS, database, inlier_threshold=5, verify="fast", max_distance=0.01)
    assert strict.shortlist(query)[0].size == 0 and strict.recognize(query).landmark_id is None
    loose = DelfRecognizer(indexes["flat"], LABELS, database, inlier_threshold=5, verify="fast", max_distance=0.3)
    assert loose.shortlist(query)[1].tolist() == [30, 10]


def test_shortlist_keeps_the_top_c_images(indexes, database, images):
    # 5, 4, 3, 2 and 1 features near images 0..4: votes 5, 4, 3, 2, 1
    parts = [query_from(images[j], np.arange(5 - j), seed=10 + j) for j in range(5)]
    query = LocalFeatures(np.vstack([p.locations for p in parts]), np.vstack([p.descriptors for p in parts]),
                          np.ones(15), np.ones(15))
    recognizer = DelfRecognizer(indexes["flat"], LABELS, database, inlier_threshold=1, candidates=3, verify="fast")
    images_, votes = recognizer.shortlist(query)
    assert images_.tolist() == [0, 1, 2] and votes.tolist() == [5, 4, 3]
    assert len(recognizer.recognize(query).candidates) == 3


def test_below_the_inlier_threshold_is_a_non_landmark(indexes, database, images):
    query = query_from(images[3], np.arange(25))
    passing = DelfRecognizer(indexes["flat"], LABELS, database, inlier_threshold=25, verify="fast").recognize(query)
    failing = DelfRecognizer(indexes["flat"], LABELS, database, inlier_threshold=26, verify="fast").recognize(query)
    assert passing.landmark_id == LABELS[DATABASE_IDS[3]] and passing.score == 25.0
    assert failing.landmark_id is None and failing.score == 25.0
    assert failing.best.image_id == DATABASE_IDS[3]
    frame = predictions_frame({"a" * 16: passing, "b" * 16: failing})
    assert frame["landmark_id"].tolist() == [LABELS[DATABASE_IDS[3]], NO_LANDMARK]
    assert submission_predictions(frame) == {"a" * 16: (LABELS[DATABASE_IDS[3]], 25.0)}


def test_query_without_features_gets_no_candidates(indexes, database):
    recognizer = DelfRecognizer(indexes["pq"], LABELS, database, inlier_threshold=1)
    prediction = recognizer.recognize(LocalFeatures.empty(DIM))
    assert prediction.landmark_id is None and prediction.candidates == () and prediction.score == 0.0


@pytest.mark.parametrize("kind", KINDS)
def test_every_index_kind_finds_the_right_image(kind, indexes, database, images):
    query = query_from(images[4], np.arange(0, 300, 10))
    recognizer = DelfRecognizer(indexes[kind], LABELS, database, inlier_threshold=10, candidates=2, verify="fast")
    prediction = recognizer.recognize(query)
    assert prediction.candidates[0].image_id == DATABASE_IDS[4]
    assert prediction.landmark_id == LABELS[DATABASE_IDS[4]]
    index = indexes[kind]
    assert index.features.size == len(index.image_rows) == len(DATABASE_IDS) * FEATURES_PER_IMAGE
    np.testing.assert_array_equal(index.image_rows, np.repeat(np.arange(5, dtype=np.int32), FEATURES_PER_IMAGE))


def test_pca10_kdtree_works_in_ten_dimensions(indexes):
    features = indexes["pca10-kdtree"].features
    assert isinstance(features, PcaKdTreeIndex)
    assert features.dim == DIM and features.pca.projection.shape == (10, DIM)
    assert features.points.shape == (len(DATABASE_IDS) * FEATURES_PER_IMAGE, 10) and features.tree.m == 10
    np.testing.assert_allclose(np.linalg.norm(features.points, axis=1), 1.0, atol=1e-5)


def test_memory_is_positive_and_pq_smaller_than_flat(indexes):
    memory = {kind: index.memory_bytes() for kind, index in indexes.items()}
    assert all(value > 0 for value in memory.values())
    # flat holds 1500 x 32 float32 values plus the 1500 int32 image rows
    assert memory["flat"] >= 1500 * DIM * 4 + 1500 * 4
    # pq counts its codes (8 bytes a feature) and its precomputed table (4 x 8 x 256 floats)
    assert 1500 * 8 + 4 * 8 * 256 * 4 < memory["pq"] < memory["flat"]


def test_pq_defaults():
    # 4 sqrt(531000) = 2915 -> 4096, halved to 2048 so that 100000 samples give >= 39 a list
    assert default_nlist(531_000, 100_000) == 2048
    # 4 sqrt(1500) = 155 -> 128 -> 64 -> 32 (39 x 32 = 1248 <= 1500)
    assert default_nlist(1500, 1500) == 32
    assert (default_pq_m(128), default_pq_m(40), default_pq_m(30), default_pq_m(3)) == (32, 10, 6, 1)


def test_pq_index_is_reproducible_for_a_seed(database, images):
    query = query_from(images[1], np.arange(20)).descriptors
    first = build_database_index(database, "pq", seed=3, progress=False, nlist=4).features.search(query, 60)
    second = build_database_index(database, "pq", seed=3, progress=False, nlist=4).features.search(query, 60)
    np.testing.assert_array_equal(first[1], second[1])
    np.testing.assert_array_equal(first[0], second[0])


@pytest.mark.parametrize("kind", KINDS)
def test_save_and_load_round_trip(kind, indexes, images, tmp_path):
    index = indexes[kind]
    index.save(tmp_path / kind)
    loaded = load_database_index(tmp_path / kind)
    query = query_from(images[0], np.arange(50)).descriptors
    for (d1, p1), (d2, p2) in [(index.features.search(query, 60), loaded.features.search(query, 60))]:
        np.testing.assert_array_equal(p1, p2)
        np.testing.assert_allclose(d1, d2, rtol=1e-6)
    np.testing.assert_array_equal(loaded.image_rows, index.image_rows)
    assert loaded.ids == index.ids and loaded.request == index.request
    assert loaded.memory_bytes() == index.memory_bytes() and disk_bytes(tmp_path / kind) > 0


def test_a_worker_rebuilds_the_recognizer_with_its_ids_memory_mapped(indexes, database, images, tmp_path):
    """A recognition worker loads the index and is sent the labels in index order: it holds the
    database's ids as an `IdIndex` (8 bytes an id; GLDv2 train: 4.1 M), no list and no dict of them."""
    recognizer = DelfRecognizer(indexes["flat"], LABELS, database, inlier_threshold=5, verify="fast")
    indexes["flat"].save(tmp_path / "index")
    worker = recognizer.worker_setup(tmp_path / "index")()
    assert isinstance(worker.index.ids, IdIndex) and worker.index.ids == DATABASE_IDS
    assert worker.settings() == recognizer.settings()
    query = query_from(images[2], np.arange(40))
    assert worker.recognize(query).landmark_id == recognizer.recognize(query).landmark_id == LABELS[DATABASE_IDS[2]]
    with pytest.raises(ValueError, match=r"labels of shape \(3,\) for 5 indexed images"):
        DelfRecognizer(worker.index, np.zeros(3), database, inlier_threshold=5)


@pytest.mark.parametrize("kind", ("flat", "pq"))
def test_faiss_index_streams_exactly_faiss_serialization(kind, indexes, tmp_path):
    """Saving and counting stream the index through faiss's writer a piece at a time: the file
    holds exactly faiss's serialization, and a loaded index counts that length (plus, for pq,
    its precomputed table of 4 lists x 8 sub-quantizers x 256 float32 centroids)."""
    features = indexes[kind].features
    serialized = faiss.serialize_index(features.index).tobytes()
    features.save(tmp_path)
    assert (tmp_path / "faiss.index").read_bytes() == serialized
    loaded = FEATURE_INDEXES.get(kind).load(tmp_path, features.settings())
    assert loaded.memory_bytes() == len(serialized) + {"flat": 0, "pq": 4 * 8 * 256 * 4}[kind]


def test_unreadable_faiss_index_is_a_user_error(indexes, tmp_path):
    indexes["flat"].save(tmp_path)
    (tmp_path / "faiss.index").write_bytes(b"not an index")
    with pytest.raises(UserInputError, match=r"faiss.index: unreadable faiss index: Index type .* not recognized$"):
        load_database_index(tmp_path)
    (tmp_path / "faiss.index").unlink()
    with pytest.raises(UserInputError, match=r"faiss.index: unreadable faiss index: No such file or directory$"):
        load_database_index(tmp_path)


def test_open_database_index_reuses_and_refuses(database, tmp_path):
    folder = tmp_path / "index"
    built = open_database_index(folder, database, "pca10-kdtree", progress=False)
    reused = open_database_index(folder, database, "pca10-kdtree", progress=False)
    np.testing.assert_array_equal(reused.features.points, built.features.points)
    with pytest.raises(UserInputError, match="another kind"):
        open_database_index(folder, database, "flat", progress=False)
    with pytest.raises(UserInputError, match="another options"):
        open_database_index(folder, database, "pca10-kdtree", progress=False, leafsize=8)
    # a save killed before its manifest leaves a folder that is refused, not half-read
    (folder / "manifest.json").unlink()
    with pytest.raises(UserInputError, match="not a DELF database index"):
        load_database_index(folder)


def test_bad_index_name_and_option_are_user_errors(database):
    with pytest.raises(UserInputError, match=r"known: faiss\[:FACTORY\], flat, pca10-kdtree, pq, or a faiss"):
        build_database_index(database, "hnsw", progress=False)
    with pytest.raises(UserInputError, match="pq index"):
        build_database_index(database, "pq", progress=False, nprobes=3)
    assert FEATURE_INDEXES.names() == ["faiss", "flat", "pca10-kdtree", "pq"]


def test_run_recognition_resumes_with_the_same_predictions(indexes, database, images, tmp_path):
    query_ids = [f"{i:016x}" for i in range(100, 104)]
    records = [query_from(images[j], np.arange(20), seed=j) for j in (0, 1, 2, 3)]
    queries = write_store(tmp_path / "queries", query_ids, records)
    recognizer = DelfRecognizer(indexes["flat"], LABELS, database, inlier_threshold=10, candidates=2, verify="fast")
    frame = run_recognition(recognizer, queries, tmp_path / "run", chunk_size=3, progress=False)
    assert frame["landmark_id"].tolist() == [LABELS[DATABASE_IDS[j]] for j in (0, 1, 2, 3)]
    (tmp_path / "run" / "chunk-00001.parquet").unlink()
    again = run_recognition(recognizer, queries, tmp_path / "run", chunk_size=3, progress=False)
    assert again[["id", "landmark_id", "score"]].equals(frame[["id", "landmark_id", "score"]])
    in_memory = recognize_store(recognizer, queries, progress=False)
    assert [p.landmark_id for p in in_memory.values()] == frame["landmark_id"].tolist()
    other = DelfRecognizer(indexes["flat"], LABELS, database, inlier_threshold=10, candidates=3, verify="fast")
    with pytest.raises(UserInputError, match="another recognizer"):
        run_recognition(other, queries, tmp_path / "run", chunk_size=3, progress=False)


def test_another_threshold_reads_the_stored_run_and_equals_a_full_run(indexes, database, images, tmp_path,
                                                                      monkeypatch):
    # queries sharing 12, 22, 30 and 40 features with images 0..3: best inlier counts 12..40
    query_ids = [f"{i:016x}" for i in range(100, 104)]
    records = [query_from(images[j], np.arange(n), seed=j) for j, n in enumerate((12, 22, 30, 40))]
    queries = write_store(tmp_path / "queries", query_ids, records)

    def recognizer(threshold: int) -> DelfRecognizer:
        return DelfRecognizer(indexes["flat"], LABELS, database, inlier_threshold=threshold, candidates=2,
                              verify="fast")

    run_recognition(recognizer(10), queries, tmp_path / "stored", chunk_size=3, progress=False)
    columns = ["id", "landmark_id", "score", "best_landmark", "best_image", "candidates"]
    full = {t: run_recognition(recognizer(t), queries, tmp_path / f"full-{t}", progress=False)[columns]
            for t in (1, 22, 23, 41)}
    # re-thresholding the stored run computes nothing: no query is recognised again
    monkeypatch.setattr(DelfRecognizer, "recognize", lambda *args: pytest.fail("recomputed a stored query"))
    for threshold, expected in full.items():
        again = run_recognition(recognizer(threshold), queries, tmp_path / "stored", chunk_size=3, progress=False)
        pd.testing.assert_frame_equal(again[columns], expected)
    assert full[22]["landmark_id"].tolist() == [NO_LANDMARK] + [LABELS[DATABASE_IDS[j]] for j in (1, 2, 3)]
    assert full[23]["landmark_id"].tolist()[:2] == [NO_LANDMARK, NO_LANDMARK]


def test_inlier_threshold_calibrated_on_the_non_landmark_images():
    # a labelled split of 3 landmark images and 4 non-landmark ones; q2's best candidate shows
    # another landmark, so it is never a right prediction
    frame = pd.DataFrame({"id": ["q1", "q2", "q3", "n1", "n2", "n3", "n4"],
                          "score": [30.0, 50.0, 12.0, 9.0, 4.0, 4.0, 0.0],
                          "best_landmark": [7, 8, 9, 7, 8, 8, NO_LANDMARK]})
    labels = {"q1": 7, "q2": 7, "q3": 9}
    scores = calibration_scores(frame, labels)
    assert scores["landmark"].tolist() == [1, 1, 1, 0, 0, 0, 0]
    assert scores["score"].tolist() == [30.0, -np.inf, 12.0, 9.0, 4.0, 4.0, 0.0]
    # 75 %: one of 4 non-landmarks may keep a prediction, so t is just above the second
    # highest (4, tied): 5, which loses no right landmark
    loose = calibrate_inlier_threshold(frame, labels, 0.75)
    assert loose.threshold == 5 and loose.specificity == 0.75 and loose.sensitivity == pytest.approx(2 / 3)
    strict = calibrate_inlier_threshold(frame, labels, 0.99)
    assert strict.threshold == 10 and strict.specificity == 1.0 and strict.sensitivity == pytest.approx(2 / 3)
    with pytest.raises(UserInputError, match="no non-landmark image among the 3 calibration queries"):
        calibrate_inlier_threshold(frame.iloc[:3], labels, 0.99)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """The tiny preset at its own size (seed 0), shared by the CLI tests below; read-only."""
    root = tmp_path_factory.mktemp("delf-tiny") / "data"
    synthetic.generate(root, synthetic.preset_config("tiny"), 0, workers=1, progress=False)
    return root


def _local_stores(root: Path, out: Path, method: str) -> dict[str, str]:
    """`extract-local --method METHOD` (300 features) of the train and test splits into `out`."""
    stores = {}
    for split in ("train", "test"):
        assert main(["extract-local", "--method", method, "--data", str(root), "--split", split,
                     "--max-features", "300", "--out", str(out / split), "--quiet"]) == 0
        stores[split] = str(out / split)
    return stores


def _delf_argv(root: Path, stores: dict[str, str], tmp_path: Path, name: str) -> list[str]:
    """`delf recognize` of the test stores against the train stores (PCA-10 k-d tree, 5 candidates)."""
    return ["delf", "recognize", "--database-local", stores["train"], "--data", str(root),
            "--queries-local", stores["test"], "--index-spec", "pca10-kdtree", "--candidates", "5", "--name", name,
            "--workdir", str(tmp_path / "work"), "--submissions", str(tmp_path / "subs"), "--quiet"]


def test_delf_recognize_cli_on_tiny_sift(tiny_data, tmp_path, capsys):
    root = tiny_data
    stores = _local_stores(root, tmp_path, "sift")
    capsys.readouterr()
    argv = _delf_argv(root, stores, tmp_path, "tiny")
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    test_ids = LandmarkData(root).split_ids("test")
    submission = validate_submission(tmp_path / "subs" / "recognition_tiny.csv", "recognition", test_ids)
    assert result["predicted"] == sum(1 for value in submission.predictions.values() if value) > 0
    # landmark test images are found: better than no correct prediction at all
    assert result["gap"] > 0 and result["sensitivity"] > 0
    assert result["index_memory_bytes"] > 0 and result["index_disk_bytes"] > 0
    assert result["mean_total_seconds"] > 0
    # bad option: a user error naming the index kinds, exit code 2
    assert main([*argv[:8], "--index-spec", "hnsw", *argv[10:]]) == 2
    assert "known: faiss[:FACTORY], flat, pca10-kdtree, pq, or a faiss factory string" in capsys.readouterr().err
    # a faiss factory string, scanning all 4 lists, on the same stores (another name: another run)
    assert main([*argv[:8], "--index-spec", "IVF4,Flat", "--index-option", "nprobe=4", "--candidates", "5",
                 "--name", "ivf", *argv[14:]]) == 0
    ivf = json.loads(capsys.readouterr().out.splitlines()[-1])
    manifest = json.loads((tmp_path / "work" / "ivf" / "index-IVF4,Flat" / "manifest.json").read_text())
    assert manifest["settings"] == {"kind": "faiss", "factory": "IVF4,Flat", "nprobe": 4}
    assert ivf["index"] == "IVF4,Flat" and ivf["gap"] > 0 and ivf["sensitivity"] > 0
    validate_submission(tmp_path / "subs" / "recognition_ivf.csv", "recognition", test_ids)
    # a verification setting is typed, and --set seed may repeat --seed's key
    assert main([*argv, "--set", "seed=3", "--set", "ratio=abc"]) == 2
    assert capsys.readouterr().err == "lmkcomp: error: verification option ratio: expected float, got 'abc'\n"


def _refuse_nan(constant: str):
    raise AssertionError(f"invalid JSON constant {constant}")


def test_delf_recognize_calibrates_rootsift_on_the_index_split(tiny_data, tmp_path, capsys, caplog):
    root = tmp_path / "data"  # a copy: this test edits the solution and removes the index split
    shutil.copytree(tiny_data, root)
    stores = _local_stores(root, tmp_path, "rootsift")
    capsys.readouterr()
    argv = _delf_argv(root, stores, tmp_path, "rs")
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1], parse_constant=_refuse_nan)
    # no measured threshold for rootsift: calibrated on the index split's 16 non-landmark images
    assert result["threshold_from"] == "calibrated on the index split"
    calibration = result["calibration"]
    assert calibration["negatives"] == 16 and calibration["specificity"] >= 0.99
    assert result["inlier_threshold"] == calibration["threshold"] >= 1
    assert result["gap"] > 0 and result["sensitivity"] > 0
    scores = pd.read_csv(tmp_path / "work" / "rs" / "calibration-scores.csv")
    assert len(scores) == 63 and (scores["landmark"] == 0).sum() == 16

    # another threshold: the stored scores are re-thresholded, nothing is recomputed
    chunk = tmp_path / "work" / "rs" / "predictions" / "chunk-00000.parquet"
    written = chunk.stat().st_mtime_ns
    assert main([*argv, "--inlier-threshold", "1"]) == 0
    loose = json.loads(capsys.readouterr().out.splitlines()[-1], parse_constant=_refuse_nan)
    assert chunk.stat().st_mtime_ns == written
    assert loose["threshold_from"] == "given" and loose["predicted"] >= result["predicted"]

    # a test split without a scored non-landmark image: specificity is undefined, and null in JSON
    solution = root / "recognition_solution_v2.1.csv"
    rows = pd.read_csv(solution, dtype=str, keep_default_na=False)
    rows.loc[rows["landmarks"] == "", "Usage"] = "Ignored"
    rows.to_csv(solution, index=False)
    assert main([*argv, "--inlier-threshold", "1"]) == 0
    undefined = json.loads(capsys.readouterr().out.splitlines()[-1], parse_constant=_refuse_nan)
    assert undefined["specificity"] is None and undefined["sensitivity"] == loose["sensitivity"]

    # calibration reads non-landmarks off the index labels: another split's features are refused
    assert main([*argv, "--calibration-local", stores["test"]]) == 2
    assert "features of the test split; calibration needs the index split's" in capsys.readouterr().err

    # neither a threshold nor a labelled index split, nor one measured for rootsift: threshold 1
    # (every verified query predicted, ranked by inliers), with one warning line saying why
    shutil.rmtree(root / "index")
    caplog.clear()
    assert main([*argv[:-5], "--workdir", str(tmp_path / "other"), *argv[-3:]]) == 0
    fallback = json.loads(capsys.readouterr().out.splitlines()[-1], parse_constant=_refuse_nan)
    assert fallback["inlier_threshold"] == 1 and fallback["threshold_from"] == "none to calibrate on"
    assert fallback["predicted"] == loose["predicted"]  # the same as the given threshold 1
    warnings = [record.getMessage() for record in caplog.records if "inlier threshold" in record.getMessage()]
    assert len(warnings) == 1 and "no labelled index split" in warnings[0] and "none measured for rootsift" in warnings[0]
