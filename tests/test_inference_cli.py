"""`lmkcomp recognize` and `lmkcomp retrieve` end to end on embedding stores written here.

The dataset is a tiny synthetic plan's CSVs (labels, solutions, sample submission; no images
are rendered). Each landmark gets a random direction and each image a noisy copy of the
direction of what it really shows, so the stores behave like a good descriptor. Every
submission is compared with the same pipeline recomputed here in plain numpy.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmkcomp.voting import prediction_counts
from lmkcomp.cli import EXIT_USER_ERROR, main
from lmkcomp.data import synthetic
from lmkcomp.data.layout import LandmarkData
from lmkcomp.features.store import EmbeddingStore, EmbeddingWriter
from lmkcomp.inference import RecognitionConfig
from lmkcomp.local.pairs import SCHEMA, chunk_file
from lmkcomp.voting import demote_frequent_labels, soft_voting
from lmkcomp.reranking import discriminative_rerank, spatial_rerank
from lmkcomp.search import exact_search
from lmkcomp.submission import read_submission, score_submission, validate_submission

DIM = 16


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def write_store(path: Path, ids: list[str], vectors: np.ndarray) -> None:
    writer = EmbeddingWriter(path, ids, DIM, "float32", shard_size=32)
    for k, rows in writer.pending_shards():
        writer.write_shard(k, vectors[rows])
    writer.finish()


class World:
    """The dataset root, the stores and their arrays (row order = store order)."""

    def __init__(self, root: Path):
        self.root = root
        # 40 landmarks: 117 index images, so the top 100 leaves some out (for insertion)
        plan = synthetic.make_plan(synthetic.preset_config("tiny", num_landmarks=40, train_distractor_ratio=0.0), seed=3)
        synthetic.write_csvs(root, plan)
        rng = np.random.default_rng(0)
        directions = unit(rng.normal(size=(len(plan.landmarks), DIM)))
        self.landmark_ids = np.array([lm.landmark_id for lm in plan.landmarks])
        self.directions = directions
        self.ids, self.vectors, self.labels = {}, {}, {}
        for split in ("train", "index", "test"):
            images = [image for image in plan.images if image.split == split]
            base = np.array([directions[i.source] if i.source >= 0 else unit(rng.normal(size=DIM)) for i in images])
            self.ids[split] = [i.image_id for i in images]
            self.vectors[split] = unit(base + 0.5 * unit(rng.normal(size=(len(images), DIM)))).astype(np.float32)
            self.labels[split] = np.array([i.label for i in images])
            write_store(root / split, self.ids[split], self.vectors[split])
        # a non-landmark bank: random pictures
        self.ids["bank"] = [f"{0xb000 + i:016x}" for i in range(30)]
        self.vectors["bank"] = unit(rng.normal(size=(30, DIM))).astype(np.float32)
        write_store(root / "bank", self.ids["bank"], self.vectors["bank"])
        self.data = LandmarkData(root)

    def store(self, name: str) -> str:
        return str(self.root / name)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return World(tmp_path_factory.mktemp("inference"))


def run(world: World, tmp_path: Path, command: str, *args: str) -> None:
    code = main([command, "--queries", world.store("test"), "--data", str(world.root), "--submissions",
                 str(tmp_path / "subs"), "--workdir", str(tmp_path / "work"), "--quiet", *args])
    assert code == 0


def predictions(path: Path) -> dict:
    return read_submission(path, "recognition").predictions


def expected_voting(world: World, queries: np.ndarray, k: int, inliers=None):
    scores, neighbours = exact_search(queries, world.vectors["train"], k)
    return soft_voting(scores, world.labels["train"][neighbours], k=k, inliers=inliers)


def check_recognition(world: World, path: Path, labels: np.ndarray, confidences: np.ndarray) -> None:
    found = predictions(path)
    assert [found[i][0] for i in world.ids["test"]] == labels.tolist()
    assert [found[i][1] for i in world.ids["test"]] == pytest.approx(confidences.tolist(), rel=1e-5, abs=1e-5)


def printed_scores(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# recognize


def test_soft_voting_submission_validates_scores_and_matches_numpy(world, tmp_path, capsys):
    run(world, tmp_path, "recognize", "--train", world.store("train"), "--name", "sv")
    path = tmp_path / "subs" / "recognition_sv.csv"
    scores = printed_scores(capsys)
    submission = validate_submission(path, "recognition", world.ids["test"])
    assert scores == score_submission(submission, world.data.recognition_solution)
    # a good descriptor: most landmark test images are recognised
    assert scores["top1_accuracy"] > 0.8 and scores["gap"] > 0.5
    check_recognition(world, path, *expected_voting(world, world.vectors["test"], 3))


def test_nearest_with_demotion_reuses_the_knn_table(world, tmp_path, capsys):
    run(world, tmp_path, "recognize", "--train", world.store("train"), "--name", "sv")
    run(world, tmp_path, "recognize", "--train", world.store("train"), "--name", "nn", "--method", "nearest",
        "--demote-over", "3")
    out = capsys.readouterr().out
    # one search served both runs (10 neighbours are cached; soft voting reads 3, nearest 1)
    assert len(list((tmp_path / "work" / "knn").iterdir())) == 1
    scores, neighbours = exact_search(world.vectors["test"], world.vectors["train"], 1)
    labels = world.labels["train"][neighbours[:, 0]]
    confidences, demoted = demote_frequent_labels(labels, scores[:, 0], max_predictions=3)
    assert demoted.any() and f"{demoted.sum()} demoted as distractors" in out
    check_recognition(world, tmp_path / "subs" / "recognition_nn.csv", labels, confidences)


def test_demote_over_calibrated_from_soft_voting_scores_gives_the_reported_specificity(world, tmp_path, capsys):
    run(world, tmp_path, "recognize", "--train", world.store("train"), "--name", "sv")
    out = capsys.readouterr().out
    csv = tmp_path / "work" / "recognition" / "sv" / "calibration-scores.csv"
    assert f"calibration scores: {csv}" in out
    frame = pd.read_csv(csv)
    scored = world.data.recognition_solution.scored("all")
    assert frame["id"].tolist() == [i for i in world.ids["test"] if i in scored]
    # the counts are over every test image's prediction, scored or not (soft voting predicts all of them)
    labels, confidences = expected_voting(world, world.vectors["test"], 3)
    counts = dict(zip(world.ids["test"], prediction_counts(labels, np.ones(len(labels), dtype=bool))))
    assert frame["landmark_predictions"].tolist() == [counts[i] for i in frame["id"]]
    assert frame["confidence"].to_numpy() == pytest.approx([dict(zip(world.ids["test"], confidences))[i]
                                                            for i in frame["id"]], rel=1e-5)

    assert main(["calibrate", "--scores", str(csv), "--demote-over", "--target-specificity", "0.6"]) == 0
    report = json.loads(capsys.readouterr().out)
    over = report["demote_over"]
    # measured: N = 2 keeps 15 of the 46 non-landmark images' predictions (0.674); N = 3 would keep more
    assert over == 2 and report["specificity"] >= 0.6 and "threshold" not in report
    assert report["predictions"] == len(frame) and report["demote_over_share"] == over / len(frame)
    assert main(["calibrate", "--scores", str(csv), "--demote-over", "--threshold", str(over + 1)]) == 0
    assert json.loads(capsys.readouterr().out)["specificity"] < 0.6

    run(world, tmp_path, "recognize", "--train", world.store("train"), "--name", "demoted", "--demote-over", str(over))
    assert f"{sum(c > over for c in counts.values())} demoted as distractors" in capsys.readouterr().out
    before, after = predictions(tmp_path / "subs" / "recognition_sv.csv"), predictions(
        tmp_path / "subs" / "recognition_demoted.csv")
    kept = np.array([after[i][1] == before[i][1] for i in frame["id"]])  # a demoted confidence moved below the rest
    assert kept.tolist() == (frame["landmark_predictions"] <= over).tolist()
    right = frame["score"].to_numpy() > -np.inf
    negative = frame["landmark"].to_numpy() == 0
    assert report["false_positives"] == (kept & negative).sum()
    assert report["specificity"] == 1 - (kept & negative).sum() / negative.sum()
    assert report["sensitivity"] == (kept & ~negative & right).sum() / (~negative).sum()


def write_pair_table(out: Path, frame: pd.DataFrame) -> None:
    """A pair table as `lmkcomp verify` writes it, with inliers made up by the test."""
    out.mkdir()
    n = len(frame)
    (out / "manifest.json").write_text(json.dumps({"format": "lmkcomp-pair-table", "version": 1, "pairs": n,
                                                   "chunk_size": max(n, 1)}))
    table = pa.table([frame["query_id"].tolist(), frame["candidate_id"].tolist(), frame["inliers"].tolist(),
                      frame["inliers"].tolist(), [0.0] * n], schema=SCHEMA)
    pq.write_table(table, out / chunk_file(0))


def test_inliers_and_nonlandmark_bank(world, tmp_path, capsys):
    pairs_csv = tmp_path / "pairs.csv"
    run(world, tmp_path, "recognize", "--train", world.store("train"), "--name", "x", "--pairs-out", str(pairs_csv))
    pairs = pd.read_csv(pairs_csv, dtype=str)
    _, neighbours = exact_search(world.vectors["test"], world.vectors["train"], 3)
    assert pairs["query_id"].tolist() == np.repeat(world.ids["test"], 3).tolist()
    assert pairs["candidate_id"].tolist() == np.asarray(world.ids["train"])[neighbours].ravel().tolist()
    assert not (tmp_path / "subs").exists()  # --pairs-out writes no submission

    # made-up inliers for every other pair; unverified pairs count 0
    rng = np.random.default_rng(1)
    inliers = rng.integers(0, 120, size=len(pairs))
    inliers[1::2] = 0
    write_pair_table(tmp_path / "table", pairs[::2].assign(inliers=inliers[::2]))
    run(world, tmp_path, "recognize", "--train", world.store("train"), "--name", "both", "--inliers",
        str(tmp_path / "table"), "--nonlandmark-bank", world.store("bank"))

    a, neighbours = exact_search(world.vectors["test"], world.vectors["train"], 3)
    b = exact_search(world.vectors["train"], world.vectors["bank"], 5)[0].mean(axis=1)
    c = exact_search(world.vectors["test"], world.vectors["bank"], 10)[0].mean(axis=1)
    adjusted = a - b[neighbours] - c[:, None]
    labels, confidences = soft_voting(adjusted, world.labels["train"][neighbours], 3, inliers=inliers.reshape(-1, 3))
    check_recognition(world, tmp_path / "subs" / "recognition_both.csv", labels, confidences)


def test_classifier_head_from_a_checkpoint(world, tmp_path, capsys):
    import torch

    from lmkcomp.config import to_dict
    from lmkcomp.models import create_model
    from lmkcomp.models.model import ModelConfig
    from lmkcomp.train.checkpoint import save_checkpoint
    from lmkcomp.train.config import DataConfig, TrainConfig

    # sub-centre ArcFace over the landmarks in reverse order (class j is landmark ids[j]) and a
    # non-landmark class last; sub-centre 1 of each landmark class is its landmark's direction,
    # 0 and 2 point elsewhere; the non-landmark class has the first test image's vector
    landmark_ids = world.landmark_ids[::-1].copy()
    classes = len(landmark_ids) + 1
    model_config = ModelConfig(backbone="test_resnet", embedding_size=DIM, head="subcenter_arcface")
    model = create_model(model_config, classes)
    position = {landmark: i for i, landmark in enumerate(world.landmark_ids)}
    weight = np.random.default_rng(2).normal(size=(classes, 3, DIM))
    weight[:-1, 1] = 3 * world.directions[[position[landmark] for landmark in landmark_ids]]
    weight[-1, 0] = world.vectors["test"][0]
    with torch.no_grad():
        model.head.weight.copy_(torch.from_numpy(weight.reshape(-1, DIM)))
    config = TrainConfig(data=DataConfig(root=str(world.root)), model=model_config)
    save_checkpoint(tmp_path / "model.pt", {"model": model.state_dict(), "config": to_dict(config),
                                            "landmark_ids": landmark_ids.tolist(), "non_landmark_class": classes - 1,
                                            "class_counts": [2] * classes})
    run(world, tmp_path, "recognize", "--method", "classifier", "--checkpoint", str(tmp_path / "model.pt"),
        "--name", "head")
    assert printed_scores(capsys)["top1_accuracy"] > 0.8

    cosine = world.vectors["test"] @ unit(weight).reshape(-1, DIM).T
    per_class = cosine.reshape(len(world.ids["test"]), classes, 3).max(axis=2)
    best = per_class.argmax(axis=1)
    found = predictions(tmp_path / "subs" / "recognition_head.csv")
    # images predicted non-landmark (the first test image at least) get an empty row
    landmark = best < classes - 1
    assert not landmark[0] and landmark.sum() > len(landmark) // 2
    assert [found[i] is not None for i in world.ids["test"]] == landmark.tolist()
    kept = [i for i, ok in zip(world.ids["test"], landmark) if ok]
    assert [found[i][0] for i in kept] == landmark_ids[best[landmark]].tolist()
    assert [found[i][1] for i in kept] == pytest.approx(per_class.max(axis=1)[landmark], rel=1e-5)


def test_user_errors(world, tmp_path, capsys):
    code = main(["recognize", "--queries", world.store("test"), "--data", str(world.root), "--name", "x",
                 "--workdir", str(tmp_path), "--quiet"])
    assert code == EXIT_USER_ERROR and "needs a train embedding store" in capsys.readouterr().err
    code = main(["recognize", "--queries", world.store("test"), "--data", str(world.root), "--name", "x",
                 "--method", "classifier", "--workdir", str(tmp_path), "--quiet"])
    assert code == EXIT_USER_ERROR and "needs a checkpoint" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# retrieve


def retrieved(world: World, path: Path) -> list[list[str]]:
    found = read_submission(path, "retrieval").predictions
    return [found[i] for i in world.ids["test"]]


def expand(vectors: np.ndarray, database: np.ndarray, n: int, alpha: float, skip_self: bool) -> np.ndarray:
    """Row by row: L2(x + sum over the top n other database rows of s^alpha y), s > 0."""
    scores, neighbours = exact_search(vectors, database, n + 1)
    out = []
    for i, (row_scores, row) in enumerate(zip(scores, neighbours)):
        kept = [(s, j) for s, j in zip(row_scores, row) if not (skip_self and j == i)][:n]
        out.append(vectors[i] + sum(s ** alpha * database[j] for s, j in kept if s > 0))
    return unit(np.array(out))


def test_plain_retrieval_validates_and_scores(world, tmp_path, capsys):
    run(world, tmp_path, "retrieve", "--index", world.store("index"), "--name", "plain")
    path = tmp_path / "subs" / "retrieval_plain.csv"
    scores = printed_scores(capsys)
    assert scores == score_submission(validate_submission(path, "retrieval", world.ids["test"]),
                                      world.data.retrieval_solution)
    assert scores["map@100"] > 0.5
    _, order = exact_search(world.vectors["test"], world.vectors["index"], 100)
    assert retrieved(world, path) == np.asarray(world.ids["index"])[order].tolist()


def test_dba_and_query_expansion(world, tmp_path, capsys):
    run(world, tmp_path, "retrieve", "--index", world.store("index"), "--name", "qe", "--dba-n", "2",
        "--dba-alpha", "1", "--qe-n", "3", "--qe-alpha", "3")
    database = expand(world.vectors["index"], world.vectors["index"], 2, 1.0, skip_self=True)
    queries = expand(world.vectors["test"], database, 3, 3.0, skip_self=False)
    _, order = exact_search(queries, database, 100)
    assert retrieved(world, tmp_path / "subs" / "retrieval_qe.csv") == np.asarray(world.ids["index"])[order].tolist()
    assert len(list((tmp_path / "work" / "expanded").iterdir())) == 2


def test_spatial_and_discriminative_reranking(world, tmp_path, capsys):
    scores, order = exact_search(world.vectors["test"], world.vectors["index"], 100)
    index_ids = np.asarray(world.ids["index"])
    run(world, tmp_path, "retrieve", "--index", world.store("index"), "--name", "x", "--verify-top", "10",
        "--pairs-out", str(tmp_path / "pairs.csv"))
    pairs = pd.read_csv(tmp_path / "pairs.csv", dtype=str)
    assert pairs["query_id"].tolist() == np.repeat(world.ids["test"], 10).tolist()
    assert pairs["candidate_id"].tolist() == index_ids[order[:, :10]].ravel().tolist()
    inliers = np.zeros(order.shape, dtype=np.int64)
    inliers[:, :10] = np.random.default_rng(3).integers(0, 50, size=(len(order), 10))
    write_pair_table(tmp_path / "table", pairs.assign(inliers=inliers[:, :10].ravel()))
    run(world, tmp_path, "retrieve", "--index", world.store("index"), "--name", "rr", "--inliers",
        str(tmp_path / "table"), "--verify-top", "10", "--rerank", "--train", world.store("train"),
        "--insert-threshold", "1.5")

    spatial, _ = spatial_rerank(order, scores, inliers, top=10)
    test_labels, test_confidences = expected_voting(world, world.vectors["test"], 3)
    index_labels, index_confidences = expected_voting(world, world.vectors["index"], 3)
    expected = discriminative_rerank(spatial, test_labels, test_confidences, index_labels, index_confidences, 1.5)
    found = retrieved(world, tmp_path / "subs" / "retrieval_rr.csv")
    assert found == index_ids[expected].tolist()
    # every step acted: spatial re-ordering, moves, and insertions of unretrieved images
    assert (spatial != order).any() and (expected != spatial).any()
    assert any(set(new) - set(old) for new, old in zip(expected.tolist(), order.tolist()))


def test_reranking_labels_read_the_test_and_index_inlier_tables(world, tmp_path, monkeypatch):
    from lmkcomp.inference import retrieval as retrieval_module

    seen = []
    real = retrieval_module.predict_landmarks

    def recording(queries, train, data, config, workdir, progress=True, executor=None):
        seen.append((Path(queries.directory).name, config.inliers))
        return real(queries, train, data, replace(config, inliers=None), workdir, progress, executor)

    monkeypatch.setattr(retrieval_module, "predict_landmarks", recording)
    config = retrieval_module.RetrievalConfig(rerank=True, index_inliers="INDEX-TABLE",
                                              recognition=RecognitionConfig(inliers="TEST-TABLE"))
    stores = {name: EmbeddingStore(world.store(name)) for name in ("test", "index", "train")}
    retrieval_module.retrieve(world.data, stores["test"], stores["index"], "labels", config, stores["train"],
                              tmp_path / "work", tmp_path / "subs", progress=False)
    assert seen == [("test", "TEST-TABLE"), ("index", "INDEX-TABLE")]
