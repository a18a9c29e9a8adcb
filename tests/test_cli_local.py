"""`lmkcomp extract-local`, `lmkcomp verify` and `lmkcomp clean --method verify` end to end on tiny."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from lmkcomp.baseline import thumbnail_embeddings
from lmkcomp.cli import EXIT_USER_ERROR, main
from lmkcomp.data import synthetic
from lmkcomp.data.layout import LandmarkData
from lmkcomp.features.store import EmbeddingWriter
from lmkcomp.local.pairs import read_pair_table
from lmkcomp.local.store import LocalFeatureStore


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny dataset (128 px), its train thumbnails as an embedding store, and SIFT features
    extracted through the CLI."""
    root = tmp_path_factory.mktemp("tiny128")
    synthetic.generate(root, synthetic.preset_config("tiny", long_side=128), seed=4, progress=False)
    data = LandmarkData(root)
    ids = data.train_labels()["id"].tolist()
    embeddings = thumbnail_embeddings(data, "train", ids, progress=False)
    writer = EmbeddingWriter(root / "thumbnails", ids, embeddings.shape[1], "float32")
    for k, rows in writer.pending_shards():
        writer.write_shard(k, embeddings[rows])
    writer.finish()
    code = main(["extract-local", "--method", "sift", "--data", str(root), "--split", "train",
                 "--out", str(root / "sift"), "--max-features", "500", "--set", "contrast_threshold=0.02",
                 "--shard-size", "32", "--quiet"])
    assert code == 0
    return root


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmkcomp: error: ")
    return lines[0]


def test_extract_local_writes_a_store(tiny):
    store = LocalFeatureStore(tiny / "sift")
    assert store.method == "sift" and len(store) == len(LandmarkData(tiny).split_ids("train"))
    assert store.meta["settings"]["max_features"] == 500 and store.meta["settings"]["contrast_threshold"] == 0.02
    assert max(len(store.read(row)) for row in range(len(store))) <= 500


def test_verify_writes_a_pair_table(tiny, tmp_path, capsys):
    ids = LandmarkData(tiny).split_ids("train")
    pairs = tmp_path / "pairs.csv"
    pd.DataFrame({"query_id": ids[:6], "candidate_id": ids[1:7], "score": 1.0}).to_csv(pairs, index=False)
    code = main(["verify", "--pairs", str(pairs), "--queries-local", str(tiny / "sift"), "--out", str(tmp_path / "table"),
                 "--verify-preset", "official-delf", "--set", "iterations=200", "--chunk-size", "4", "--quiet"])
    assert code == 0
    assert "6 pairs verified (official-delf)" in capsys.readouterr().out
    table = read_pair_table(tmp_path / "table")
    assert table["candidate_id"].tolist() == ids[1:7]
    manifest = json.loads((tmp_path / "table" / "manifest.json").read_text())
    assert manifest["config"]["model"] == "delf-affine" and manifest["config"]["iterations"] == 200
    # the preset's k-d tree distance for these SIFT features, not DELF's 0.8
    assert manifest["config"]["max_distance"] == 0.4


def test_clean_by_verification(tiny, tmp_path, capsys, monkeypatch):
    from lmkcomp.features.store import EmbeddingShards

    # the train-vs-train kNN streams the store, as it must at GLDv2 size (EmbeddingStore extends
    # EmbeddingShards, which the search opens)
    monkeypatch.setattr(EmbeddingShards, "array", lambda *_: pytest.fail("the whole store was read"))
    out = tmp_path / "clean"
    code = main(["clean", "--method", "verify", "--data", str(tiny), "--train", str(tiny / "thumbnails"),
                 "--train-local", str(tiny / "sift"), "--out", str(out), "--max-neighbours", "5",
                 "--inlier-threshold", "5", "--quiet"])
    assert code == 0
    assert "noise removal precision" in capsys.readouterr().out
    for name in ("train_clean.csv", "removed.csv", "report.json", "pairs/manifest.json"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["method"] == "verify"
    assert report["settings"] == {"inlier_threshold": 5, "min_verified": 2, "min_images": 2, "knn": 1000,
                                  "max_neighbours": 5, "preset": "fast", "local_features": "sift"}


def test_bad_pairs_file_is_a_one_line_user_error(tiny, tmp_path, capsys):
    pairs = tmp_path / "bad_pairs.csv"
    pairs.write_text("query_id,other\n0123456789abcdef,0123456789abcdef\n")
    code = main(["verify", "--pairs", str(pairs), "--queries-local", str(tiny / "sift"), "--out", str(tmp_path / "t")])
    assert code == EXIT_USER_ERROR
    line = one_error_line(capsys)
    assert str(pairs) in line and "candidate_id" in line
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("argv, message", [
    (["extract-local", "--method", "surf", "--split", "train", "--out", "{tmp}/x"], "unknown local feature 'surf'"),
    (["extract-local", "--method", "sift", "--set", "octaves=3", "--split", "train", "--out", "{tmp}/x"],
     "unknown sift option 'octaves'; valid options: contrast_threshold, max_features, max_side"),
    (["clean", "--method", "verify", "--train", "{root}/thumbnails", "--out", "{tmp}/c"],
     "--method verify needs --train-local"),
    (["clean", "--method", "verify", "--train", "{root}/thumbnails", "--train-local", "{root}/sift",
      "--verify-preset", "slow", "--out", "{tmp}/c"], "unknown verification preset 'slow'"),
])
def test_user_errors_exit_2(tiny, tmp_path, capsys, argv, message):
    argv = [a.format(root=tiny, tmp=tmp_path) for a in argv] + ["--data", str(tiny)]
    assert main(argv) == EXIT_USER_ERROR
    assert message in one_error_line(capsys)
