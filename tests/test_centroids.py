"""The centroid method: clustering on hand-made points, Algorithm 2's rules on fixtures, the
folder format, a resumed build, and the CLI on the tiny preset with made-up embeddings."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lmkcomp import cli
from lmkcomp.centroid import build as build_module
from lmkcomp.centroid.build import ClusteringConfig, build_centroids, landmark_centroids
from lmkcomp.centroid.index import CentroidIndex, first_occurrences, load_centroids
from lmkcomp.centroid.inference import InferenceConfig, recognize
from lmkcomp.centroid.metadata import KM_PER_DEGREE, read_image_coordinates, read_landmark_metadata
from lmkcomp.data import gldv2, synthetic
from lmkcomp.errors import UserInputError
from lmkcomp.features.store import EmbeddingWriter
from lmkcomp.submission import read_submission


def unit(*rows) -> np.ndarray:
    x = np.array(rows, dtype=np.float64)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def around(direction, count: int, spread: float, rng) -> np.ndarray:
    """`count` unit vectors within about `spread` of `direction` (4-d)."""
    return unit(*(np.asarray(direction, float) + spread * rng.standard_normal((count, 4))))


def normalised_mean(x: np.ndarray) -> np.ndarray:
    m = x.mean(axis=0)
    return m / np.linalg.norm(m)


E1, E2, E3, E4 = np.eye(4)

# ---------------------------------------------------------------------------------------------
# Clustering


def test_two_tight_groups_give_two_centroids_largest_first():
    rng = np.random.default_rng(0)
    a, b = around(E1, 7, 0.02, rng), around(E2, 5, 0.02, rng)
    # e1 and e2 are sqrt(2) apart: a threshold of 0.5 never merges them, always merges a group
    centroids, sizes = landmark_centroids(np.concatenate([b, a]), ClusteringConfig(distance_threshold=0.5,
                                                                                  min_cluster_size=3))
    assert sizes.tolist() == [7, 5]
    np.testing.assert_allclose(centroids, [normalised_mean(a), normalised_mean(b)], atol=1e-6)


def test_no_valid_cluster_gives_the_largest_one():
    rng = np.random.default_rng(1)
    a, b = around(E1, 4, 0.02, rng), around(E3, 2, 0.02, rng)
    centroids, sizes = landmark_centroids(np.concatenate([b, a]), ClusteringConfig(distance_threshold=0.5,
                                                                                  min_cluster_size=5))
    assert sizes.tolist() == [4]
    np.testing.assert_allclose(centroids[0], normalised_mean(a), atol=1e-6)


def test_one_per_class_and_cosine_metric():
    rng = np.random.default_rng(2)
    x = np.concatenate([around(E1, 3, 0.02, rng), around(E2, 3, 0.02, rng)])
    centroids, sizes = landmark_centroids(x, ClusteringConfig(one_per_class=True))
    assert sizes.tolist() == [6]
    np.testing.assert_allclose(centroids[0], normalised_mean(x), atol=1e-6)
    # cosine distance between the groups is ~1: a threshold of 0.5 keeps them apart, 1.5 joins them
    for threshold, count in ((0.5, 2), (1.5, 1)):
        config = ClusteringConfig(metric="cosine", distance_threshold=threshold, min_cluster_size=3)
        assert len(landmark_centroids(x, config)[0]) == count


def test_single_linkage_chains_where_complete_linkage_splits():
    # points on an arc 0.3 apart: single linkage chains them (each step < 0.4), complete
    # linkage cannot hold the ends (distance > 0.4) in one cluster
    angles = np.arange(5) * 0.3
    x = unit(*np.stack([np.cos(angles), np.sin(angles), 0 * angles, 0 * angles], axis=1))
    single = ClusteringConfig(linkage="single", distance_threshold=0.4, min_cluster_size=1)
    complete = ClusteringConfig(linkage="complete", distance_threshold=0.4, min_cluster_size=1)
    assert len(landmark_centroids(x, single)[0]) == 1
    assert len(landmark_centroids(x, complete)[0]) > 1


def test_large_landmark_clusters_a_subsample_and_assigns_the_rest():
    rng = np.random.default_rng(3)
    a, b = around(E1, 6, 0.02, rng), around(E2, 6, 0.02, rng)
    # 10 of 12 images are clustered (at least 4 of each group); both clusters reach 6 members
    # only if the 2 others were assigned to their nearest cluster
    config = ClusteringConfig(distance_threshold=0.5, min_cluster_size=6, max_images=10)
    centroids, sizes = landmark_centroids(np.concatenate([a, b]), config, np.random.default_rng(7))
    assert sorted(sizes.tolist()) == [6, 6]
    expected = sorted([normalised_mean(a).tolist(), normalised_mean(b).tolist()])
    np.testing.assert_allclose(sorted(centroids.tolist()), expected, atol=1e-6)


def test_bad_clustering_settings_are_user_errors():
    with pytest.raises(UserInputError, match="linkage"):
        ClusteringConfig(linkage="ward")
    with pytest.raises(UserInputError, match="min_cluster_size"):
        ClusteringConfig(min_cluster_size=0)


def test_build_groups_centroids_by_landmark_with_references():
    rng = np.random.default_rng(4)
    # landmark 9: two views; landmark 3: one tight group plus a middle point that is the most
    # central image, so with reference_k=1 it is the only reference
    x9 = np.concatenate([around(E1, 3, 0.01, rng), around(E2, 3, 0.01, rng)])
    x3 = unit([1, 0, 0.2, 0], [1, 0, 0.1, 0], [1, 0, 0, 0])
    embeddings = np.concatenate([x9, x3])
    labels = np.array([9] * 6 + [3] * 3)
    index = build_centroids(labels, embeddings, ClusteringConfig(distance_threshold=0.5, min_cluster_size=3),
                            reference_k=1, progress=False)
    assert index.landmark_ids.tolist() == [3, 9, 9]
    assert index.max_centroids_per_landmark == 2
    assert index.reference_landmarks.tolist() == [3, 9]
    np.testing.assert_allclose(index.reference_means[0], x3[1], atol=1e-6)
    # given references override the central ones (rows of `embeddings`)
    given = build_centroids(labels, embeddings, ClusteringConfig(distance_threshold=0.5, min_cluster_size=3),
                            references={3: [6, 8]}, progress=False)
    assert given.reference_landmarks.tolist() == [3]  # reference_k 0: landmark 9 has none
    np.testing.assert_allclose(given.reference_means[0], (x3[0] + x3[2]) / 2, atol=1e-6)
    with pytest.raises(UserInputError, match="its own images"):
        build_centroids(labels, embeddings, references={3: [0]}, progress=False)


# ---------------------------------------------------------------------------------------------
# Index and Algorithm 2


def make_index(**kwargs) -> CentroidIndex:
    # landmark 1: two centroids (e1, and e1 tilted towards e2); landmark 2: e2; landmark 5: e3
    centroids = unit([1, 0, 0, 0], [1, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0])
    return CentroidIndex(centroids, np.array([1, 1, 2, 5]), **kwargs)


def test_first_occurrences_keeps_the_leftmost_of_each_value():
    columns, valid = first_occurrences(np.array([[4, 4, 7, 4, 9], [3, -1, 3, -1, -1]]), 3)
    assert columns.tolist() == [[0, 2, 4], [0, 0, 0]]
    assert valid.tolist() == [[True, True, True], [True, False, False]]


def test_top_landmarks_dedupes_landmarks_with_several_centroids():
    index = make_index()
    query = unit([1, 0.9, 0, 0])
    landmarks, similarities = index.top_landmarks(query, 3)
    # both centroids of landmark 1 beat e2; it appears once, with its best similarity
    assert landmarks.tolist() == [[1, 2, 5]]
    np.testing.assert_allclose(similarities[0], [query[0] @ unit([1, 0.5, 0, 0])[0], query[0, 1], 0.0], atol=1e-6)


def test_eta_rule_and_top_k():
    index = make_index()
    queries = unit([1, 0.9, 0, 0], [0.1, 0.1, 0.1, 1])  # the second is far from every centroid
    result = recognize(index, queries, InferenceConfig(eta=0.6, k=2))
    # query 0: landmark 1 (0.98) and 2 (0.67) pass eta; query 1: max similarity 0.1 < eta
    assert result.found_landmarks(0)[0][0] == 1 and [lm for lm, _ in result.found_landmarks(0)] == [1, 2]
    assert result.found_landmarks(1) == []
    assert set(result.predictions(["q0", "q1"])) == {"q0"}
    assert result.best_candidates(["q0", "q1"])["q1"][0] in (1, 2, 5)
    # a higher eta keeps only landmark 1
    assert [lm for lm, _ in recognize(index, queries, InferenceConfig(eta=0.9, k=2)).found_landmarks(0)] == [1]


def write_metadata(tmp_path):
    # landmark 1 at (50, 10) in city A; landmark 2 about 3.3 km north of it, city B; 5: city A, no coordinates
    path = tmp_path / "landmark_metadata.csv"
    pd.DataFrame({"landmark_id": [1, 2, 5], "name": ["x", "y", "z"], "region": ["R", "R", "R"],
                  "city": ["A", "B", "A"], "latitude": ["50.0", "50.03", ""],
                  "longitude": ["10.0", "10.0", ""]}).to_csv(path, index=False)
    return read_landmark_metadata(path)


def test_within_square_is_a_km_square(tmp_path):
    metadata = write_metadata(tmp_path)
    # 0.4 km south of landmark 1 is inside a 1 km square around the query, 0.6 km is not
    assert metadata.within_square(50.0 - 0.4 / KM_PER_DEGREE, 10.0, 1.0).tolist() == [1]
    assert metadata.within_square(50.0 - 0.6 / KM_PER_DEGREE, 10.0, 1.0).tolist() == []
    # east-west: at latitude 50 a degree of longitude is cos(50) * 111.32 = 71.6 km
    assert metadata.within_square(50.0, 10.0 + 0.45 / 71.56, 1.0).tolist() == [1]
    assert metadata.within_square(50.0, 10.0 + 0.55 / 71.56, 1.0).tolist() == []
    # a 10 km square holds both located landmarks, never the one without coordinates
    assert metadata.within_square(50.015, 10.0, 10.0).tolist() == [1, 2]


def test_geo_scope_restricts_candidates_and_uses_eta_geo(tmp_path):
    metadata = write_metadata(tmp_path)
    index = make_index()
    queries = unit([0.2, 1, 0, 0], [0.2, 1, 0, 0])  # both look most like landmark 2
    # query 0 stands at landmark 1, query 1 has no coordinates (unscoped)
    coordinates = np.array([[50.0, 10.0], [np.nan, np.nan]])
    result = recognize(index, queries, InferenceConfig(eta=0.9, eta_geo=0.3, k=2, geo_km=1.0), metadata, coordinates)
    assert result.scoped.tolist() == [True, False]
    assert [lm for lm, _ in result.found_landmarks(0)] == [1]   # only landmark 1 is in scope; 0.62 >= eta_geo
    assert [lm for lm, _ in result.found_landmarks(1)] == [2]   # unscoped: landmark 2 (0.98 >= 0.9)
    with pytest.raises(UserInputError, match="geo scope"):
        recognize(index, queries, InferenceConfig(geo_km=1.0))


def test_references_check(tmp_path):
    # landmark 1's references look like e1, landmark 2's like e4 (unlike its centroid)
    index = make_index(reference_landmarks=np.array([1, 2]),
                       reference_means=np.array([[0.9, 0, 0, 0], [0, 0, 0, 0.9]], dtype=np.float32))
    query = unit([1, 0.9, 0, 0])
    found = recognize(index, query, InferenceConfig(eta=0.5, k=3, omega=0.5))
    # landmark 1: mean reference similarity 0.9 * 0.74 = 0.67 > 0.5; landmark 2: 0 ; landmark 5: no references
    assert [lm for lm, _ in found.found_landmarks(0)] == [1]
    with pytest.raises(UserInputError, match="no references"):
        recognize(make_index(), query, InferenceConfig(omega=0.5))


def test_same_city_rule(tmp_path):
    metadata = write_metadata(tmp_path)
    index = make_index()
    query = unit([1, 0.9, 0.8, 0])  # landmark 1 first, then 2 (city B), then 5 (city A)
    config = InferenceConfig(eta=0.3, k=3)
    assert [lm for lm, _ in recognize(index, query, config, metadata).found_landmarks(0)] == [1, 5]
    no_rule = InferenceConfig(eta=0.3, k=3, same_city=False)
    assert [lm for lm, _ in recognize(index, query, no_rule, metadata).found_landmarks(0)] == [1, 2, 5]


def test_metadata_errors_name_the_line(tmp_path):
    path = tmp_path / "landmark_metadata.csv"
    path.write_text("landmark_id,city,latitude,longitude\n1,A,50,10\n2,B,north,10\n")
    with pytest.raises(UserInputError, match=r"landmark_metadata.csv:3: latitude 'north'"):
        read_landmark_metadata(path)
    images = tmp_path / "image_metadata.csv"
    images.write_text("id,split,latitude,longitude\n" + "a" * 16 + ",test,1.5,2.5\n" + "b" * 16 + ",test,,\n")
    coordinates = read_image_coordinates(images, ["b" * 16, "a" * 16, "c" * 16])
    np.testing.assert_array_equal(coordinates[1], [1.5, 2.5])
    assert np.isnan(coordinates[0]).all() and np.isnan(coordinates[2]).all()


# ---------------------------------------------------------------------------------------------
# Folder, resume, CLI


def test_save_load_round_trip(tmp_path):
    index = make_index(reference_landmarks=np.array([1, 2]), reference_means=np.ones((2, 4), np.float32),
                       settings={"note": "x"})
    index.save(tmp_path / "c")
    loaded = load_centroids(tmp_path / "c")
    np.testing.assert_array_equal(loaded.centroids, index.centroids)
    np.testing.assert_array_equal(loaded.landmark_ids, index.landmark_ids)
    np.testing.assert_array_equal(loaded.reference_means, index.reference_means)
    assert loaded.settings == {"note": "x"} and loaded.memory_bytes == index.memory_bytes
    # flat inner-product index: 4 centroids x 4 floats x 4 bytes of vectors, plus a header
    assert 64 + 32 <= index.memory_bytes < 64 + 32 + 200
    query = unit([0.3, 1, 0.2, 0])
    assert loaded.top_landmarks(query, 3)[0].tolist() == index.top_landmarks(query, 3)[0].tolist()
    manifest = (tmp_path / "c" / "manifest.json")
    manifest.write_text(manifest.read_text().replace('"complete": true', '"complete": false'))
    with pytest.raises(UserInputError, match="incomplete centroid index"):
        load_centroids(tmp_path / "c")


def test_the_faiss_file_is_faiss_own_and_a_damaged_one_is_named(tmp_path):
    """Saved streamed, not through serialize_index's copies: the same bytes, and memory_bytes
    counts exactly them (plus the landmark map)."""
    import faiss

    index = make_index()
    index.save(tmp_path / "c")
    written = (tmp_path / "c" / "index.faiss").read_bytes()
    assert written == faiss.serialize_index(index.faiss_index).tobytes()
    assert index.memory_bytes == len(written) + index.landmark_ids.nbytes
    (tmp_path / "c" / "index.faiss").write_bytes(b"not an index")
    with pytest.raises(UserInputError, match=r"index.faiss: unreadable faiss index: \S"):
        load_centroids(tmp_path / "c")


def test_build_resumes_after_a_kill(tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    labels = np.repeat([4, 6, 8], 3)
    embeddings = np.concatenate([around(E1, 3, 0.02, rng), around(E2, 3, 0.02, rng), around(E3, 3, 0.02, rng)])
    monkeypatch.setattr(build_module, "CHUNK_LANDMARKS", 1)
    computed = []
    original = build_module._compute_chunk

    def dies_on_the_second_chunk(landmarks, *args):
        computed.append(list(landmarks))
        if len(computed) == 2:
            raise KeyboardInterrupt
        return original(landmarks, *args)

    monkeypatch.setattr(build_module, "_compute_chunk", dies_on_the_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        build_centroids(labels, embeddings, out=tmp_path / "c", progress=False)
    with pytest.raises(UserInputError, match="incomplete"):
        load_centroids(tmp_path / "c")
    monkeypatch.setattr(build_module, "_compute_chunk", original)
    resumed = build_centroids(labels, embeddings, out=tmp_path / "c", progress=False)
    assert computed == [[4], [6]]  # the first chunk's part was kept
    assert resumed.landmark_ids.tolist() == [4, 6, 8]
    assert not (tmp_path / "c" / "parts").exists()
    # other settings on the same folder are refused, naming the key
    with pytest.raises(UserInputError, match="min_cluster_size: 50 on disk vs 2 requested"):
        build_centroids(labels, embeddings, ClusteringConfig(min_cluster_size=2), out=tmp_path / "c", progress=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny") / "data"
    synthetic.generate(root, synthetic.preset_config("tiny"), seed=0, workers=1, progress=False)
    return root


def write_store(path, ids, vectors):
    writer = EmbeddingWriter(path, ids, vectors.shape[1], dtype="float32")
    for k, rows in writer.pending_shards():
        writer.write_shard(k, vectors[rows])
    writer.finish()


def made_up_embedder(tiny, seed: int, dim: int = 16):
    """The train labels of `tiny` and `embed(labels)`: made-up embeddings, one random direction per
    landmark plus a little noise for each of its images, a random direction for a non-landmark
    (label -1); one generator seeded `seed` draws the directions, then every call's noise."""
    rng = np.random.default_rng(seed)
    train = gldv2.read_train_csv(tiny / "train.csv")
    landmarks = sorted(set(train["landmark_id"]))
    direction = dict(zip(landmarks, unit(*rng.standard_normal((len(landmarks), dim)))))

    def embed(labels):
        return np.stack([direction[lm] + 0.05 * rng.standard_normal(dim) if lm >= 0 else rng.standard_normal(dim)
                         for lm in labels]).astype(np.float32)

    return train, embed


def write_test_store_and_build(tiny, tmp_path, embed) -> tuple:
    """The test split's made-up embeddings (`embed` of each image's landmark, -1 for a
    distractor) in TMP/test, and `centroids build` of TMP/train into TMP/c; the solution and the
    test ids."""
    solution = gldv2.read_recognition_solution(tiny / "recognition_solution_v2.1.csv")
    test_ids = sorted(solution.answers)
    write_store(tmp_path / "test", test_ids, embed([solution.answers[i][0] if solution.answers[i] else -1
                                                    for i in test_ids]))
    assert cli.main(["centroids", "build", "--data", str(tiny), "--train", str(tmp_path / "train"),
                     "--out", str(tmp_path / "c"), "--quiet"]) == 0
    return solution, test_ids


def test_cli_build_and_recognize_on_tiny(tiny, tmp_path, capsys):
    # made-up embeddings by label; distractors in random directions
    train, embed = made_up_embedder(tiny, seed=0)
    write_store(tmp_path / "train", train["id"].tolist(), embed(train["landmark_id"]))
    # the default minimum cluster size (50) leaves every landmark one centroid: its largest cluster
    solution, test_ids = write_test_store_and_build(tiny, tmp_path, embed)
    assert "16 centroids of 16 landmarks (0 with several)" in capsys.readouterr().out
    out = tmp_path / "sub.csv"
    assert cli.main(["centroids", "recognize", "--centroids", str(tmp_path / "c"), "--queries",
                     str(tmp_path / "test"), "--out", str(out), "--data", str(tiny), "--eta", "0.8"]) == 0
    scores = json.loads(capsys.readouterr().out.splitlines()[-1])
    submission = read_submission(out, "recognition")
    predicted = {i for i, v in submission.predictions.items() if v is not None}
    landmark_images = {i for i in test_ids if solution.answers[i]}
    # distractors are random directions in 16-d: none reaches cosine 0.8; every landmark image does
    assert predicted == landmark_images
    assert scores["top1_accuracy"] == 1.0 and scores["gap"] == 1.0
    # a bad option is a user error (exit 2) naming the problem
    assert cli.main(["centroids", "recognize", "--centroids", str(tmp_path / "c"), "--queries",
                     str(tmp_path / "test"), "--out", str(out), "--geo-km", "1"]) == 2
    assert "--geo-km needs" in capsys.readouterr().err


def test_cli_recognize_calibrates_eta_on_the_index_split(tiny, tmp_path, capsys):
    # made-up embeddings as above: landmark images near their landmark's direction, the index
    # split's non-landmark images (16) in random directions
    train, embed = made_up_embedder(tiny, seed=1)
    write_store(tmp_path / "train", train["id"].tolist(), embed(train["landmark_id"]))
    index_frame = gldv2.read_index_csv(tiny / "index_image_to_landmark.csv")
    index_labels = dict(zip(index_frame["id"], index_frame["landmark_id"]))
    index_ids = gldv2.scan_split_ids(tiny, "index")
    index_vectors = embed([index_labels.get(i, -1) for i in index_ids])
    write_store(tmp_path / "index", index_ids, index_vectors)
    solution, test_ids = write_test_store_and_build(tiny, tmp_path, embed)
    argv = ["centroids", "recognize", "--centroids", str(tmp_path / "c"), "--queries", str(tmp_path / "test"),
            "--out", str(tmp_path / "sub.csv"), "--data", str(tiny), "--calibration-embeddings", str(tmp_path / "index")]
    capsys.readouterr()
    assert cli.main(argv) == 0
    calibration = json.loads(capsys.readouterr().out.splitlines()[0])
    # 16 non-landmarks at 99 %: none may keep a candidate, so eta is the float just above the
    # best similarity of a non-landmark index image to any centroid
    centroids = load_centroids(tmp_path / "c")
    non_landmark = np.array([i not in index_labels for i in index_ids])
    best = recognize(centroids, index_vectors[non_landmark], InferenceConfig(eta=-1.0, same_city=False))
    assert calibration["threshold"] == np.nextafter(float(np.max(best.similarities[:, 0])), 1.0)
    assert calibration["negatives"] == 16 and calibration["specificity"] == 1.0
    assert calibration["sensitivity"] == 1.0
    predicted = {i for i, v in read_submission(tmp_path / "sub.csv", "recognition").predictions.items() if v}
    assert predicted == {i for i in test_ids if solution.answers[i]}
    assert cli.main([*argv, "--eta", "0.5"]) == 2
    assert "give a threshold or calibrate one, not both" in capsys.readouterr().err
