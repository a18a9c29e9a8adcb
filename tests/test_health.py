"""Descriptor health (`lmkcomp.features.health`) on hand-made vectors, `lmkcomp inspect-embeddings`,
the similarity histograms and the demo report's section."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from lmkcomp import cli
from lmkcomp.data import gldv2
from lmkcomp.data.labels import split_labels
from lmkcomp.data.layout import LandmarkData
from lmkcomp.features import health as health_module
from lmkcomp.features.health import (HISTOGRAM_BINS, effective_rank, embedding_health, histogram_edges, roc_auc,
                                     sample_without_replacement)
from lmkcomp.features.store import EmbeddingStore, EmbeddingWriter
from lmkcomp.report import plots

E = np.eye(4, dtype=np.float32)


def brute_force(x, labels, y=None, y_labels=None):
    """Same and different similarities of every pair, from the full similarity matrix."""
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    if y is None:
        sims, i, j = unit @ unit.T, *np.triu_indices(len(x), k=1)
        a, b = labels[i], labels[j]
        values = sims[i, j]
    else:
        other = y / np.linalg.norm(y, axis=1, keepdims=True)
        values = (unit @ other.T).ravel()
        a, b = np.repeat(labels, len(y)), np.tile(y_labels, len(x))
    labelled = (a >= 0) & (b >= 0)
    return values[labelled & (a == b)], values[labelled & (a != b)]


# --------------------------------------------------------------------------------------------
# Measures on hand-made vectors


def test_shared_offset_shows_in_the_mean_vector_norm():
    # four directions +-e0, +-e1 that cancel, each plus the same offset e2, at different lengths;
    # normalised, each is (+-1, 0, 1) / sqrt(2) or (0, +-1, 1) / sqrt(2): the mean is e2 / sqrt(2)
    rows = np.array([[1, 0, 1], [-1, 0, 1], [0, 2, 2], [0, -3, 3]], dtype=np.float32)
    result = embedding_health(rows, np.array([0, 0, 1, 1]))
    assert result.mean_norm == pytest.approx(1 / math.sqrt(2), abs=1e-6)
    # a zero row stays zero but counts: the same sum over 5 rows; a distractor counts too
    with_zero = np.vstack([rows, np.zeros((1, 3), np.float32)])
    assert embedding_health(with_zero, np.array([0, 0, 1, 1, -1])).mean_norm == pytest.approx(
        4 / 5 / math.sqrt(2), abs=1e-6)
    # without the offset the four directions cancel
    assert embedding_health(rows[:, :2], np.array([0, 0, 1, 1])).mean_norm == pytest.approx(0, abs=1e-6)


def test_well_separated_classes_give_auc_one_and_reversed_zero():
    separated = np.stack([E[0], E[0] + 0.1 * E[2], E[1], E[1] + 0.1 * E[3]])
    result = embedding_health(separated, np.array([0, 0, 1, 1]))
    assert result.auc == 1.0 and not result.near_chance
    assert (result.same.count, result.different.count) == (2, 4)
    # same-landmark rows antipodal (cosine -1), every different pair orthogonal (cosine 0)
    reversed_ = embedding_health(np.stack([E[0], -E[0], E[1], -E[1]]), np.array([0, 0, 1, 1]))
    assert reversed_.auc == 0.0 and reversed_.near_chance
    assert reversed_.same.median == pytest.approx(-1) and reversed_.different.median == pytest.approx(0, abs=1e-7)


def test_identical_rows_have_effective_rank_one_and_mean_norm_one():
    rows = np.tile(np.array([[0.3, -1.2, 0.5, 2.0]], np.float32), (6, 1))
    result = embedding_health(rows, np.array([0, 0, 1, 1, 2, -1]))
    assert result.effective_rank == 1.0
    assert result.mean_norm == pytest.approx(1.0, abs=1e-6) and result.near_chance


def test_effective_rank_of_orthonormal_sets():
    # k orthonormal rows minus their mean span k - 1 directions with equal singular values
    assert effective_rank(np.eye(5, 8))[0] == pytest.approx(4.0, abs=1e-9)
    # +-e_i have mean zero and k equal singular values
    assert effective_rank(np.vstack([np.eye(5, 8), -np.eye(5, 8)]))[0] == pytest.approx(5.0, abs=1e-9)
    # the Gram-matrix branch (rows < dim) gives the same
    assert effective_rank(np.vstack([np.eye(3, 40), -np.eye(3, 40)]))[0] == pytest.approx(3.0, abs=1e-9)


def test_effective_rank_samples_rows_with_the_seed():
    rows = np.random.default_rng(0).standard_normal((300, 6))
    rank, used = effective_rank(rows, max_rows=100, seed=4)
    assert used == 100 and effective_rank(rows, max_rows=100, seed=4)[0] == rank
    assert effective_rank(rows, max_rows=100, seed=5)[0] != rank


def test_roc_auc_counts_ties_half():
    # positive-negative pairs: 0.9 beats both; each 0.5 ties 0.5 (a half) and beats 0.1: 5 of 6
    assert roc_auc([0.9, 0.5, 0.5], [0.5, 0.1]) == pytest.approx(5 / 6)
    assert roc_auc([0.5, 0.1], [0.9, 0.5, 0.5]) == pytest.approx(1 / 6)
    assert roc_auc([0.3, 0.3], [0.3]) == 0.5
    assert math.isnan(roc_auc([], [0.2])) and math.isnan(roc_auc([0.2], []))


def test_roc_auc_equals_the_pair_count_on_random_scores():
    rng = np.random.default_rng(1)
    positive, negative = rng.integers(0, 6, 50) / 5, rng.integers(0, 6, 70) / 5  # many ties
    wins = (positive[:, None] > negative[None, :]).sum() + 0.5 * (positive[:, None] == negative[None, :]).sum()
    assert roc_auc(positive, negative) == pytest.approx(wins / (50 * 70))


@pytest.mark.parametrize("cross", [False, True])
def test_exhaustive_pairs_match_brute_force(cross):
    rng = np.random.default_rng(2)
    rows = rng.standard_normal((40, 8)).astype(np.float32) + rng.standard_normal(8).astype(np.float32)
    labels = rng.integers(-1, 5, 40)
    database = (rng.standard_normal((30, 8)) + 0.5).astype(np.float32) if cross else None
    database_labels = rng.integers(-1, 6, 30) if cross else None
    result = embedding_health(rows, labels, database, database_labels)
    same, different = brute_force(rows, labels, database, database_labels)
    for stats, values in ((result.same, same), (result.different, different)):
        assert stats.count == stats.candidates == len(values) and not stats.sampled
        np.testing.assert_allclose([stats.p05, stats.median, stats.p95], np.quantile(values, [0.05, 0.5, 0.95]),
                                   atol=1e-6)
        assert stats.histogram == tuple(np.histogram(values, bins=histogram_edges())[0])
        assert len(stats.histogram) == HISTOGRAM_BINS and sum(stats.histogram) == stats.count
    assert result.auc == pytest.approx(roc_auc(same, different), abs=1e-6)


@pytest.mark.parametrize("cross", [False, True])
def test_sampled_pairs_are_of_their_kind(cross):
    # one-hot rows per landmark: every same pair has cosine 1, every different pair 0
    rng = np.random.default_rng(9)
    labels = rng.integers(-1, 6, 300)
    rows = np.eye(6)[labels] * (labels >= 0)[:, None]  # a distractor: a zero row, in no pair
    database_labels = rng.integers(-1, 6, 200) if cross else None
    database = np.eye(6)[database_labels] * (database_labels >= 0)[:, None] if cross else None
    result = embedding_health(rows, labels, database, database_labels, max_pairs=400)
    assert result.same.sampled and result.different.sampled
    assert result.same.p05 == pytest.approx(1) and result.different.p95 == pytest.approx(0)


def test_sampling_is_deterministic_and_bounded(monkeypatch):
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((5, 16))
    labels = rng.integers(0, 5, 400)
    rows = (centres[labels] + rng.standard_normal((400, 16))).astype(np.float16)
    full = embedding_health(rows, labels)
    first = embedding_health(rows, labels, max_pairs=1000, seed=7)
    assert first.same.count == first.different.count == 500
    assert first.same.candidates == full.same.count and first.different.candidates == full.different.count
    assert first.same.sampled and first.different.sampled
    assert embedding_health(rows, labels, max_pairs=1000, seed=7).to_dict() == first.to_dict()
    assert embedding_health(rows, labels, max_pairs=1000, seed=8).same.histogram != first.same.histogram
    # a sample of 500 estimates the exhaustive statistics
    assert first.same.median == pytest.approx(full.same.median, abs=0.05)
    assert first.different.median == pytest.approx(full.different.median, abs=0.05)
    assert first.auc == pytest.approx(full.auc, abs=0.03)
    # rows gathered a few at a time give the same numbers
    monkeypatch.setattr(health_module, "_BLOCK_FLOATS", 50)
    blocked = embedding_health(rows, labels, max_pairs=1000, seed=7).to_dict()
    for key in ("mean_norm", "auc", "effective_rank"):
        assert blocked[key] == pytest.approx(first.to_dict()[key], rel=1e-5)
    assert blocked["same"]["histogram"] == first.to_dict()["same"]["histogram"]


@pytest.mark.parametrize("total", [7, 12, 10**15])
def test_sample_without_replacement(total):
    first = sample_without_replacement(total, 6, np.random.default_rng(0))
    assert len(np.unique(first)) == 6 and (np.diff(first) > 0).all() and 0 <= first[0] and first[-1] < total
    np.testing.assert_array_equal(first, sample_without_replacement(total, 6, np.random.default_rng(0)))


def test_sample_without_replacement_is_uniform():
    rng = np.random.default_rng(1)
    hits = np.zeros(30)
    for _ in range(6000):
        hits[sample_without_replacement(30, 4, rng)] += 1
    # each value is in a sample with probability 4 / 30: 800 of 6000, standard deviation about 26
    assert np.abs(hits - 800).max() < 130


def test_a_kind_with_few_pairs_leaves_its_budget_to_the_other():
    labels = np.array([0, 0, 1, 1] + list(range(2, 102)))  # two same pairs among thousands
    rows = np.random.default_rng(4).standard_normal((104, 8))
    result = embedding_health(rows, labels, max_pairs=100)
    assert result.same.count == 2 and not result.same.sampled
    assert result.different.count == 98 and result.different.sampled


def test_cross_mode_uses_only_query_database_pairs():
    # within the queries, landmark 0 rows are identical (cosine 1); against the database every
    # same pair is orthogonal (cosine 0) and every different pair identical (cosine 1)
    queries = np.stack([E[0], E[0], E[0], E[1]])
    query_labels = np.array([0, 0, 0, 1])
    database = np.stack([E[1], E[1], E[0], E[0]])
    database_labels = np.array([0, 0, 1, -1])
    result = embedding_health(queries, query_labels, database, database_labels)
    assert result.same.count == 3 * 2 + 1 * 1 and result.different.count == 3 * 1 + 1 * 2
    assert result.same.p95 == pytest.approx(0, abs=1e-7) and result.different.p05 == pytest.approx(1)
    assert result.auc == 0.0
    assert result.database_rows == 4 and result.database_mean_norm == pytest.approx(math.sqrt(2) / 2)
    same, different = brute_force(queries, query_labels, database, database_labels)
    assert (len(same), len(different)) == (result.same.count, result.different.count)


def test_json_never_holds_nan_and_summary_reads():
    rows = np.random.default_rng(5).standard_normal((6, 4))
    result = embedding_health(rows, np.arange(6))  # every landmark once: no same pair
    assert math.isnan(result.auc) and math.isnan(result.same.median)
    record = result.to_dict()
    text = json.dumps(record, allow_nan=False)
    assert record["auc"] is None and record["same"]["median"] is None and record["database_mean_norm"] is None
    assert json.loads(text)["different"]["count"] == 15
    assert "No same-landmark pairs" in result.summary() and "undefined" in result.summary()


def test_inputs_are_checked():
    rows = np.zeros((3, 4))
    with pytest.raises(ValueError, match="integer labels"):
        embedding_health(rows, np.array([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="go together"):
        embedding_health(rows, np.array([0, 1, 1]), database=rows)
    with pytest.raises(ValueError, match="at least 2"):
        embedding_health(rows, np.array([0, 1, 1]), max_pairs=1)


# --------------------------------------------------------------------------------------------
# The command, the plot and the demo section

TRAIN_LABELS = [5, 5, 5, 8, 8, 9, 9, 9]
#: test images: landmark 5, 8, none, 9 (listed with 9 and 5: the first counts); the last is unlisted
TEST_ANSWERS = [[5], [8], [], [9, 5]]


def ids(count: int, offset: int) -> list[str]:
    return [f"{offset + i:016x}" for i in range(count)]


def write_store(directory, image_ids, rows, meta=None) -> EmbeddingStore:
    writer = EmbeddingWriter(directory, image_ids, rows.shape[1], dtype="float16", shard_size=3, meta=meta)
    for k, part in writer.pending_shards():
        writer.write_shard(k, rows[part])
    writer.finish()
    return EmbeddingStore(directory)


def landmark_rows(labels, seed: int, spread: float = 0.2) -> np.ndarray:
    """Rows near a fixed direction per landmark (-1: a random direction)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).standard_normal((10, 12))
    rows = np.array([centres[label] if label >= 0 else rng.standard_normal(12) for label in labels])
    return (rows + spread * rng.standard_normal(rows.shape)).astype(np.float32)


@pytest.fixture
def root(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    train_ids = ids(len(TRAIN_LABELS), 0x100)
    gldv2.write_train_csv(data / "train.csv", train_ids, TRAIN_LABELS, [""] * len(train_ids))
    test_ids = ids(len(TEST_ANSWERS), 0x200)
    gldv2.write_solution_csv(data / "recognition_solution_v2.1.csv", gldv2.Solution(
        "recognition", dict(zip(test_ids, TEST_ANSWERS)), dict.fromkeys(test_ids, "Private")))
    write_store(tmp_path / "train", train_ids, landmark_rows(TRAIN_LABELS, 0), meta={"split": "train"})
    test_labels = [5, 8, -1, 9, -1]
    write_store(tmp_path / "test", ids(5, 0x200), landmark_rows(test_labels, 1))  # records no split
    return data


def read_json(path) -> dict:
    def refuse(constant):
        raise AssertionError(f"{constant} in the JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_split_labels_of_the_test_split(root):
    labels = split_labels(LandmarkData(root), "test", ids(5, 0x200))
    np.testing.assert_array_equal(labels, [5, 8, -1, 9, -1])


def test_inspect_embeddings_within_a_store(root, tmp_path, capsys):
    out = tmp_path / "health-train.json"
    assert cli.main(["inspect-embeddings", str(tmp_path / "train"), "--data", str(root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "mean-vector norm" in printed and "ROC AUC" in printed and "effective rank" in printed
    assert "WARNING" not in printed
    record = read_json(out)
    # landmarks of 3, 2 and 3 images: 3 + 1 + 3 same pairs of 28
    assert record["same"]["count"] == 7 and record["different"]["count"] == 21
    assert record["auc"] == 1.0 and record["split"] == "train" and record["against"] is None


def test_inspect_embeddings_test_against_train(root, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["inspect-embeddings", str(tmp_path / "test"), "--split", "test", "--data", str(root),
                     "--against", str(tmp_path / "train")]) == 0
    assert "database" in capsys.readouterr().out
    record = read_json(tmp_path / "health.json")  # the default --out, in the current folder
    # labelled test images 5, 8, 9 against train landmarks 5 (3 images), 8 (2), 9 (3)
    assert record["same"]["count"] == 3 + 2 + 3 and record["different"]["count"] == 3 * 8 - 8
    assert record["against_split"] == "train" and record["database_rows"] == 8


def test_inspect_embeddings_warns_near_chance(root, tmp_path, capsys):
    random_rows = np.random.default_rng(6).standard_normal((8, 12)).astype(np.float32) + 30
    write_store(tmp_path / "collapsed", ids(8, 0x100), random_rows, meta={"split": "train"})
    assert cli.main(["inspect-embeddings", str(tmp_path / "collapsed"), "--data", str(root),
                     "--out", str(tmp_path / "h.json")]) == 0
    assert "WARNING: near chance" in capsys.readouterr().out
    assert read_json(tmp_path / "h.json")["near_chance"] is True


@pytest.mark.parametrize("arguments, message", [
    (["missing"], "not an embedding store"),
    (["test"], "records no split; pass --split"),
    (["train", "--split", "test"], "lists none of the 8 test images"),
    (["train", "--labels", "nowhere.csv"], "nowhere.csv: file not found"),
])
def test_inspect_embeddings_user_errors(root, tmp_path, capsys, arguments, message):
    store, *options = arguments
    code = cli.main(["inspect-embeddings", str(tmp_path / store), "--data", str(root), "--out",
                     str(tmp_path / "h.json"), *options])
    error = capsys.readouterr().err
    assert code == 2 and message in error and error.count("\n") == 1
    assert not (tmp_path / "h.json").exists()


def test_inspect_embeddings_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["inspect-embeddings", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: health.json" in text and "(default: 200000)" in text and "(default: train)" in text


def test_similarity_histograms_draw_each_descriptor(tmp_path):
    labels = np.array(TRAIN_LABELS)
    separated = embedding_health(landmark_rows(TRAIN_LABELS, 0), labels)
    random = embedding_health(np.random.default_rng(7).standard_normal((8, 12)), labels)
    path = plots.similarity_histograms({"train": separated, "random": random}, tmp_path / "sims.png")
    image = cv2.imread(str(path))
    assert image is not None and image.shape[1] > 2 * image.shape[0] and image.std() > 10


def test_demo_report_section(root, tmp_path):
    from lmkcomp.demo.pipeline import DemoArtifacts
    from lmkcomp.demo.report import _descriptor_health

    run = tmp_path / "run"
    (run / "features").mkdir(parents=True)
    (tmp_path / "train").rename(run / "features" / "train")
    (tmp_path / "test").rename(run / "features" / "test")
    out = tmp_path / "report"
    (out / "img").mkdir(parents=True)
    section = _descriptor_health(LandmarkData(root), DemoArtifacts(run), out, "The trained global descriptor", seed=0)
    assert [row[0] for row in section.rows] == ["train", "test vs train"]
    assert section.rows[0][4] == 1.0  # AUC of the well-separated train rows
    assert not any(text.startswith("WARNING") for text in section.paragraphs)
    assert (out / section.figures[0].path).stat().st_size > 1000
