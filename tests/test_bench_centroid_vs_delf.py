"""`lmkcomp bench centroid-vs-delf`: its query sets, thresholds and metrics on hand-made
numbers, and the whole bench on the tiny preset with a one-epoch descriptor."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmkcomp import cli
from lmkcomp.bench.centroid_vs_delf import calibrate_threshold, loglog_fit, query_sets, set_metrics
from lmkcomp.centroid.index import CentroidIndex
from lmkcomp.centroid.inference import knn_vote
from lmkcomp.data.layout import LandmarkData
from lmkcomp.features.store import EmbeddingWriter

pytestmark = pytest.mark.slow


def test_offline_set_has_the_paper_mix():
    solution = {f"{i:016x}": ([7] if i < 10 else []) for i in range(108)}
    sets = query_sets(solution, landmark_share=0.02, seed=0)
    assert sets["test"] == sorted(solution)
    offline = sets["offline"]
    landmark = [i for i in offline if solution[i]]
    # 98 non-landmarks: round(0.02 / 0.98 * 98) = 2 landmark images, i.e. 2 % of 100 queries
    assert len(offline) == 100 and len(landmark) == 2
    assert query_sets(solution, 0.02, seed=0) == sets  # seeded
    assert {tuple(query_sets(solution, 0.02, seed=s)["offline"]) for s in range(6)} != {tuple(offline)}


def test_calibrated_threshold_keeps_the_specificity():
    scores = np.linspace(0.0, 0.99, 100)  # 0.99 and 0.98 are the two highest
    threshold = calibrate_threshold(scores, 0.99)
    # 1 % of 100 may pass: only 0.99 is >= t, and t is just above 0.98
    assert (scores >= threshold).sum() == 1 and 0.98 < threshold < 0.981
    # inlier counts: no false positive allowed among 3 -> one more than the best count
    assert calibrate_threshold([10, 7, 3], 0.99, integer=True) == 11.0
    # images without a candidate (-inf) never pass, whatever the threshold
    assert calibrate_threshold([5, -np.inf, -np.inf], 0.5, integer=True) == 1.0


def test_set_metrics_on_hand_made_predictions():
    solution = {"a": [1], "b": [2], "c": [], "d": []}
    raw = {"a": (1, 0.9), "b": (3, 0.95), "c": (5, 0.8), "d": (6, 0.1)}
    metrics = set_metrics(raw, solution, threshold=0.5)
    # a right and kept; b wrong; c claimed (a false positive), d below the threshold
    assert metrics["sensitivity"] == 0.5 and metrics["specificity"] == 0.5 and metrics["top1"] == 0.5
    # ranked b (wrong), a (right: precision 1/2), c (wrong); GAP = (1/2) / 2 landmark images
    assert metrics["gap"] == pytest.approx(0.25)


def test_knn_vote_over_centroids():
    # landmark 1 has two centroids near the query, landmark 2 one that is nearer still
    centroids = np.array([[1, 0.2, 0], [1, -0.25, 0], [1, 0, 0.1], [0, 0, 1]], dtype=np.float32)
    index = CentroidIndex(centroids / np.linalg.norm(centroids, axis=1, keepdims=True), np.array([1, 1, 2, 5]))
    query = np.array([[1, 0, 0]], dtype=np.float32)
    assert knn_vote(index, query, 1)[0].tolist() == [2]   # the nearest centroid
    landmarks, similarities = knn_vote(index, query, 3)   # two votes for landmark 1
    assert landmarks.tolist() == [1]
    assert similarities[0] == pytest.approx(1 / np.sqrt(1.04), abs=1e-6)  # its best centroid


def test_loglog_fit_recovers_a_power_law():
    slope, intercept = loglog_fit([1e3, 1e4, 1e5], [2e-3 * 1e3 ** 0.5, 2e-3 * 1e4 ** 0.5, 2e-3 * 1e5 ** 0.5])
    assert slope == pytest.approx(0.5) and 10 ** intercept == pytest.approx(2e-3)


@pytest.fixture(scope="module")
def tiny_with_descriptor(tiny_root, tiny_checkpoint, tmp_path_factory):
    """The session's tiny dataset and one-epoch descriptor (timed by the bench), and made-up
    embedding stores of the three splits: a random direction per landmark plus a little noise,
    random directions for images without a landmark (cheaper than extracting)."""
    data = LandmarkData(tiny_root)
    label = {**dict(zip(data.train_labels()["id"], data.train_labels()["landmark_id"])),
             **dict(zip(data.index_labels["id"], data.index_labels["landmark_id"])),
             **{i: answers[0] for i, answers in data.recognition_solution.answers.items() if answers}}
    rng = np.random.default_rng(0)
    direction = {lm: rng.standard_normal(32) for lm in sorted(set(label.values()))}
    stores = tmp_path_factory.mktemp("embeddings")
    for split in ("train", "index", "test"):
        ids = data.split_ids(split)
        vectors = np.stack([direction[label[i]] + 0.2 * rng.standard_normal(32) if i in label
                            else rng.standard_normal(32) for i in ids]).astype(np.float32)
        writer = EmbeddingWriter(stores / split, ids, 32, dtype="float32")
        for k, rows in writer.pending_shards():
            writer.write_shard(k, vectors[rows])
        writer.finish()
    return tiny_root, tiny_checkpoint, stores


def test_bench_runs_on_tiny_and_writes_table_json_and_plot(tiny_with_descriptor, tmp_path, capsys):
    root, checkpoint, stores = tiny_with_descriptor
    out, plot = tmp_path / "bench.json", tmp_path / "bench.png"
    code = cli.main(["bench", "centroid-vs-delf", "--data", str(root), "--checkpoint", str(checkpoint),
                     "--train-embeddings", str(stores / "train"), "--index-embeddings", str(stores / "index"),
                     "--test-embeddings", str(stores / "test"),
                     "--workdir", str(tmp_path / "work"), "--verify", "fast", "--index-spec", "flat",
                     "--delf-candidates", "1,3", "--max-features", "100", "--ablation-thresholds", "1.0",
                     "--ablation-min-sizes", "5", "--ablation-k", "3", "--sweep-sizes", "40,80",
                     "--sweep-features", "10", "--sweep-queries", "2", "--timing-images", "2", "--timing-queries", "3",
                     "--out", str(out), "--plot", str(plot), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "bench centroid-vs-delf" in printed and "3 candidates" in printed and "log-log slopes" in printed
    result = json.loads(out.read_text())
    rows = result["rows"]
    settings = {(r["set"], r["method"], r["setting"]) for r in rows}
    for query_set in ("offline", "test"):
        for method, setting in (("centroids", "several per class"), ("centroids", "1 per class"),
                                ("centroids", "clustering threshold 1"), ("centroids", "min cluster size 5"),
                                ("centroids", "kNN vote k=3"), ("DELF", "1 candidates"), ("DELF", "3 candidates")):
            assert (query_set, method, setting) in settings
    for row in rows:
        assert 0 <= row["specificity"] <= 1 and 0 <= row["gap"] <= 1 and row["memory_bytes"] > 0
        assert row["total_ms"] == pytest.approx(row["knn_ms"] + row["ransac_ms"])
        assert row["end_to_end_ms"] == pytest.approx(row["features_ms"] + row["total_ms"])
        assert (row["ransac_ms"] > 0) == (row["method"] == "DELF")
        assert row["method"] == "centroids" or row["verify"] == "fast"
    # the offline set keeps every non-landmark query of the test set and few landmark ones
    offline = next(r for r in rows if r["set"] == "offline")
    test = next(r for r in rows if r["set"] == "test")
    assert offline["non_landmark_queries"] == test["non_landmark_queries"]
    assert 1 <= offline["landmark_queries"] < test["landmark_queries"]
    # one CNN pass was timed for centroids, and seven for reference; SIFT (rebuilt from the
    # database store's settings) makes no CNN pass
    assert result["features_ms"]["centroids"] > 0 and result["features_ms"]["descriptor 7 scales"] > 0
    assert result["features_ms"]["DELF"] > 0
    assert {(r["method"], r["passes"]) for r in rows} == {("centroids", 1), ("DELF", 0)}
    real = {r["setting"]: r for r in rows if r["set"] == "test"}
    assert result["this_dataset"]["end_to_end_time_ratio"] == pytest.approx(
        real["3 candidates"]["end_to_end_ms"] / real["several per class"]["end_to_end_ms"])
    assert "end to end with features" in printed
    assert [r["images"] for r in result["sweep"]["centroids"]] == [40, 80]
    assert [r["features"] for r in result["sweep"]["delf"]] == [400, 800]
    # the flat DELF index holds 40-d float32 vectors and an int32 image per feature
    assert result["sweep"]["delf"][1]["memory_bytes"] >= 800 * (40 * 4 + 4)
    assert np.isfinite(result["growth"]["slopes"]["delf_memory"])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the made-up embeddings put every landmark image near its landmark's direction (cosine
    # ~0.96) and non-landmark ones anywhere (cosine < 0.7 to a centroid in 32-d): the
    # threshold calibrated on the index split's distractors lets every landmark query through
    several = next(r for r in rows if r["set"] == "test" and r["setting"] == "several per class")
    assert several["top1"] == 1.0 and several["sensitivity"] == 1.0 and several["specificity"] >= 0.9
