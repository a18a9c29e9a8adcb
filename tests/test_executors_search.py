"""The kNN stages on executors: `lmkcomp search`, `clean --method verify`, the `--pairs-out`
listing of `recognize` and `delf recognize` write the same bytes whether their query shards run
in this process, in two local processes or on a two-node Ray cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmkcomp.baseline import thumbnail_embeddings
from lmkcomp.data.layout import LandmarkData
from lmkcomp.features.store import EmbeddingWriter
from lmkcomp.local.extract import extract_local_split
from lmkcomp.local.sift import SiftExtractor


def _lmkcomp(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmkcomp", *args], capture_output=True, text=True,
                          env={**os.environ})


def _artifacts(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` but locks, by relative path."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*"))
            if path.is_file() and path.name != ".lock"}


def _run(out: Path, *args: str) -> dict[str, bytes]:
    result = _lmkcomp(*args)
    assert result.returncode == 0, result.stderr
    return _artifacts(out)


@pytest.fixture(scope="module")
def stores(tiny_root, tmp_path_factory) -> dict[str, Path]:
    """Thumbnail embeddings and SIFT features of the train and test splits of `tiny_root`."""
    folder = tmp_path_factory.mktemp("executor-search")
    data = LandmarkData(tiny_root)
    paths = {}
    for split in ("train", "test"):
        ids = data.split_ids(split) if split == "test" else data.train_labels()["id"].tolist()
        vectors = thumbnail_embeddings(data, split, ids, progress=False)
        writer = EmbeddingWriter(folder / split, ids, vectors.shape[1], "float16", shard_size=16)
        for k, rows in writer.pending_shards():
            writer.write_shard(k, vectors[rows])
        writer.finish()
        paths[split] = folder / split
    for split, name in (("train", "sift"), ("test", "sift-test")):
        extract_local_split(data, split, folder / name, SiftExtractor(contrast_threshold=0.01), progress=False)
        paths[name] = folder / name
    return paths


def _search_args(stores, out: Path, *extra: str) -> list[str]:
    return ["search", "--queries", str(stores["test"]), "--database", str(stores["train"]), "--out", str(out),
            "--k", "7", "--shard-size", "6", "--quiet", *extra]


@pytest.fixture(scope="module")
def local_search(stores, tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("search-local") / "knn"
    return _run(out, *_search_args(stores, out))


def test_search_in_two_processes_is_byte_identical(stores, local_search, tmp_path):
    assert sum(name.endswith("-indices.npy") for name in local_search) > 2  # several shards, so several tasks
    assert _run(tmp_path / "knn", *_search_args(stores, tmp_path / "knn", "--workers", "2")) == local_search


def test_a_trained_index_is_refused_off_this_process(stores, tmp_path):
    result = _lmkcomp(*_search_args(stores, tmp_path / "knn", "--index-spec", "IVF4,Flat", "--workers", "2"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "index 'IVF4,Flat' is trained, and is searched in this process only" in lines[0]


def _clean_args(tiny_root, stores, out: Path, *extra: str) -> list[str]:
    return ["clean", "--method", "verify", "--data", str(tiny_root), "--train", str(stores["train"]),
            "--train-local", str(stores["sift"]), "--out", str(out), "--knn", "20", "--max-neighbours", "4",
            "--inlier-threshold", "5", "--knn-shard-rows", "25", "--quiet", *extra]


@pytest.fixture(scope="module")
def local_clean(tiny_root, stores, tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("clean-local") / "clean"
    return _run(out, *_clean_args(tiny_root, stores, out))


@pytest.mark.slow  # two spawned pools and a whole stage: about 9 s
def test_clean_verify_in_two_processes_is_byte_identical(tiny_root, stores, local_clean, tmp_path):
    shards = [name for name in local_clean if name.startswith("knn-pairs/pairs-")]
    assert len(shards) > 2 and "pairs/chunk-000000.parquet" in local_clean and "train_clean.csv" in local_clean
    assert _run(tmp_path / "clean", *_clean_args(tiny_root, stores, tmp_path / "clean", "--workers", "2")) == local_clean


def test_clean_knn_pairs_equal_the_in_memory_listing(tiny_root, stores, local_clean, tmp_path):
    """The shards, read in order, are the pair list of one search of the whole array."""
    from lmkcomp.features.store import EmbeddingStore
    from lmkcomp.local.pairs import knn_pair_file, knn_pairs

    store = EmbeddingStore(stores["train"])
    labels = LandmarkData(tiny_root).train_labels()["landmark_id"].to_numpy()
    shards = sorted(name for name in local_clean if name.startswith("knn-pairs/pairs-"))
    assert shards[0] == f"knn-pairs/{knn_pair_file(0)}"
    (tmp_path / "knn-pairs").mkdir()
    for name in shards:
        (tmp_path / name).write_bytes(local_clean[name])
    written = pd.concat([pd.read_parquet(tmp_path / name) for name in shards], ignore_index=True)
    expected = knn_pairs(store.ids, store.array(), store.ids, store.array(), 20, same_label=(labels, labels),
                         max_per_query=4, shard_rows=25)
    pd.testing.assert_frame_equal(written, expected)


def _recognize_args(tiny_root, stores, work: Path, *extra: str) -> list[str]:
    return ["recognize", "--queries", str(stores["test"]), "--train", str(stores["train"]), "--data", str(tiny_root),
            "--name", "x", "--workdir", str(work), "--pairs-out", str(work / "pairs.csv"), "--quiet", *extra]


@pytest.fixture(scope="module")
def local_recognition_pairs(tiny_root, stores, tmp_path_factory) -> dict[str, bytes]:
    work = tmp_path_factory.mktemp("recognize-local") / "work"
    return _run(work, *_recognize_args(tiny_root, stores, work))


def _recognition(tiny_root, stores, work: Path, *extra: str) -> bytes:
    """The submission of `recognize` (soft voting, no --pairs-out) run in `work` with `extra`."""
    result = _lmkcomp("recognize", "--queries", str(stores["test"]), "--train", str(stores["train"]),
                      "--data", str(tiny_root), "--name", "x", "--workdir", str(work), "--submissions",
                      str(work / "subs"), "--quiet", *extra)
    assert result.returncode == 0, result.stderr
    return (work / "subs" / "recognition_x.csv").read_bytes()


def test_recognize_searches_on_its_executor(tiny_root, stores, tmp_path):
    """Soft voting's own kNN search runs on the executor too (--workers 2: a process pool), and
    gives the same submission."""
    one = _recognition(tiny_root, stores, tmp_path / "one")
    assert _recognition(tiny_root, stores, tmp_path / "two", "--workers", "2") == one
    assert len(one.splitlines()) > 10


def _delf_args(tiny_root, stores, work: Path, *extra: str) -> list[str]:
    return ["delf", "recognize", "--database-local", str(stores["sift"]), "--data", str(tiny_root),
            "--queries-local", str(stores["sift-test"]), "--index-spec", "pca10-kdtree", "--candidates", "3",
            "--inlier-threshold", "5", "--name", "tiny", "--workdir", str(work), "--submissions", str(work / "subs"),
            "--chunk-size", "6", "--quiet", *extra]


@pytest.fixture(scope="module")
def local_delf(tiny_root, stores, tmp_path_factory) -> bytes:
    work = tmp_path_factory.mktemp("delf-local") / "work"
    result = _lmkcomp(*_delf_args(tiny_root, stores, work))
    assert result.returncode == 0, result.stderr
    submission = (work / "subs" / "recognition_tiny.csv").read_bytes()
    # a row "id,LANDMARK SCORE": some test image was recognised, so the comparisons compare something
    assert any(b" " in line for line in submission.splitlines()[1:])
    return submission


@pytest.mark.slow  # two spawned pools and a whole stage: about 9 s
def test_delf_recognize_in_two_processes_is_byte_identical(tiny_root, stores, local_delf, tmp_path):
    result = _lmkcomp(*_delf_args(tiny_root, stores, tmp_path, "--workers", "2"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "subs" / "recognition_tiny.csv").read_bytes() == local_delf
    assert len(list((tmp_path / "tiny" / "predictions").glob("chunk-*.parquet"))) > 2


# --------------------------------------------------------------------------------------------
# On a two-node Ray cluster (separate processes on this machine)


@pytest.mark.cluster
def test_search_on_two_ray_nodes_is_byte_identical(ray_cluster, stores, local_search, tmp_path):
    out = tmp_path / "knn"
    result = _lmkcomp(*_search_args(stores, out, "--executor", "ray", "--address", ray_cluster.address))
    assert result.returncode == 0, result.stderr
    assert _artifacts(out) == local_search


@pytest.mark.cluster
def test_clean_verify_on_two_ray_nodes_is_byte_identical(ray_cluster, tiny_root, stores, local_clean, tmp_path):
    out = tmp_path / "clean"
    assert _run(out, *_clean_args(tiny_root, stores, out, "--executor", "ray", "--address",
                                  ray_cluster.address)) == local_clean


@pytest.mark.cluster
def test_recognize_pairs_out_on_two_ray_nodes_is_byte_identical(ray_cluster, tiny_root, stores,
                                                                local_recognition_pairs, tmp_path):
    listing = _run(tmp_path, *_recognize_args(tiny_root, stores, tmp_path, "--executor", "ray", "--address",
                                              ray_cluster.address))
    assert "pairs.csv" in listing and listing == local_recognition_pairs


@pytest.mark.cluster
def test_delf_recognize_on_two_ray_nodes_is_byte_identical(ray_cluster, tiny_root, stores, local_delf, tmp_path):
    result = _lmkcomp(*_delf_args(tiny_root, stores, tmp_path, "--executor", "ray", "--address", ray_cluster.address))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "subs" / "recognition_tiny.csv").read_bytes() == local_delf


def _verified_voting(tiny_root, stores, work: Path, *extra: str) -> bytes:
    """The submission of `recognize --method verified-voting` on the 5 nearest train images."""
    return _recognition(tiny_root, stores, work, "--method", "verified-voting", "--queries-local",
                        str(stores["sift-test"]), "--train-local", str(stores["sift"]), "--candidates", "5", *extra)


@pytest.mark.cluster
def test_verified_voting_on_two_ray_nodes_is_byte_identical(ray_cluster, tiny_root, stores, tmp_path):
    """Its search and its verification blocks run as Ray tasks and give the local submission."""
    local = _verified_voting(tiny_root, stores, tmp_path / "local")
    assert any(b" " in line for line in local.splitlines()[1:])  # some test image got a landmark
    on_ray = _verified_voting(tiny_root, stores, tmp_path / "ray", "--executor", "ray", "--address",
                              ray_cluster.address)
    assert on_ray == local
    assert list((tmp_path / "ray").glob("verified-voting/*/block-00000/chunk-*.parquet"))
