"""make-dataset and extract on executors: the same files from one process, a local pool and a
two-node Ray cluster."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmkcomp.config import from_dict
from lmkcomp.data import synthetic
from lmkcomp.data.layout import LandmarkData
from lmkcomp.devices import parse_device, resolve_device
from lmkcomp.errors import UserInputError
from lmkcomp.executors import LocalExecutor
from lmkcomp.features.extract import extract_split
from lmkcomp.features.store import EmbeddingStore


def _lmkcomp(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmkcomp", *args], capture_output=True, text=True, env=os.environ)


def _tree(root: Path) -> dict[str, str]:
    """Digest of every file under `root` but the output folder's lock, by relative path."""
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file() and path.name != ".lock"}


# --------------------------------------------------------------------------------------------
# make-dataset

_MAKE = ("--preset", "tiny", "--long-side", "64", "--seed", "5")


@pytest.fixture(scope="module")
def one_process_dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("make-one") / "data"
    result = _lmkcomp("make-dataset", str(out), *_MAKE, "--quiet")
    assert result.returncode == 0, result.stderr
    return out


def test_make_dataset_with_two_workers_writes_the_same_files(one_process_dataset, tmp_path):
    out = tmp_path / "data"
    result = _lmkcomp("make-dataset", str(out), *_MAKE, "--workers", "2", "--quiet")
    assert result.returncode == 0, result.stderr
    assert _tree(out) == _tree(one_process_dataset)
    assert any(name.endswith(".jpg") for name in _tree(out))


def test_an_import_refuses_the_ray_executor(tmp_path):
    (tmp_path / "photos").mkdir()
    result = _lmkcomp("make-dataset", str(tmp_path / "out"), "--from-folders", str(tmp_path / "photos"),
                      "--executor", "ray")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--from-folders: an import runs in this process" in lines[0], result.stderr


@pytest.mark.cluster
def test_make_dataset_on_two_ray_nodes_is_byte_identical_and_resumes(ray_cluster, one_process_dataset, tmp_path):
    out = tmp_path / "data"
    result = _lmkcomp("make-dataset", str(out), *_MAKE, "--executor", "ray", "--address", ray_cluster.address)
    assert result.returncode == 0, result.stderr
    assert _tree(out) == _tree(one_process_dataset)
    assert "over 2 nodes" in result.stderr, result.stderr
    # as a killed run leaves it: some images missing, the manifest not complete
    manifest = out / synthetic.MANIFEST
    manifest.write_text(manifest.read_text().replace('"complete": true', '"complete": false'))
    for victim in sorted(out.glob("*/*/*/*/*.jpg"))[::7]:
        victim.unlink()
    result = _lmkcomp("make-dataset", str(out), *_MAKE, "--executor", "ray", "--address", ray_cluster.address,
                      "--quiet")
    assert result.returncode == 0, result.stderr
    assert _tree(out) == _tree(one_process_dataset)


# --------------------------------------------------------------------------------------------
# extract


def test_parse_device_checks_the_spelling_only():
    assert parse_device("cuda:1").type == "cuda"  # a device of another node: not looked for here
    with pytest.raises(UserInputError, match="unknown device"):
        parse_device("gpu0", "--device")
    if not resolve_device("auto").type == "cuda":
        with pytest.raises(UserInputError, match="no CUDA GPU"):
            resolve_device("cuda", "--device")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, str]:
    """A one-epoch test_resnet checkpoint on a tiny dataset, and an index image of that
    dataset broken afterwards (its id), for the skipped-row bookkeeping of the workers."""
    from lmkcomp.train.config import TrainConfig
    from lmkcomp.train.trainer import Trainer

    root = tmp_path_factory.mktemp("extract-data")
    synthetic.generate(root, synthetic.preset_config("tiny", long_side=96), seed=2, progress=False)
    run = tmp_path_factory.mktemp("extract-run")
    config = from_dict(TrainConfig, {
        "data": {"root": str(root)}, "model": {"backbone": "test_resnet", "embedding_size": 32},
        "epochs": 1, "batch_size": 8, "image_size": 64, "workers": 0,
    })
    Trainer(config, run, progress=False).fit()
    data = LandmarkData(root)
    broken = data.split_ids("index")[11]
    data.image_path("index", broken).write_bytes(b"not a jpeg")
    return root, run / "checkpoint-last.pt", broken


_EXTRACT = ("--split", "index", "--scales", "1,1.4142", "--dtype", "float32", "--batch-size", "4",
            "--shard-size", "8", "--skip-bad", "--device", "cpu")


@pytest.fixture(scope="module")
def one_process_store(trained, tmp_path_factory) -> Path:
    """`extract` as it runs by default (in this process), with one torch thread."""
    root, checkpoint, _ = trained
    out = tmp_path_factory.mktemp("extract-one") / "store"
    result = _lmkcomp("extract", "--checkpoint", str(checkpoint), "--data", str(root), "--out", str(out), *_EXTRACT,
                      "--workers", "1", "--threads", "1", "--quiet")
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.slow
def test_extract_in_a_local_pool_is_byte_identical_to_one_process(trained, one_process_store, tmp_path):
    root, checkpoint, broken = trained
    out = tmp_path / "store"
    store = extract_split(checkpoint, LandmarkData(root), "index", out, scales=(1.0, 1.4142), dtype="float32",
                          batch_size=4, shard_size=8, device="cpu", on_error="skip", progress=False,
                          executor=LocalExecutor(2))
    reference = EmbeddingStore(one_process_store)
    assert len(store) == len(reference) > 3 * 8  # several shards, so several tasks
    assert [entry["id"] for entry in store.skipped] == [broken]
    # the manifest names the checkpoint as given: the CLI's and this call's are the same path
    assert _tree(out) == _tree(one_process_store)


@pytest.mark.slow
@pytest.mark.cluster
def test_extract_on_two_ray_nodes_is_byte_identical_to_one_process(ray_cluster, trained, one_process_store, tmp_path):
    root, checkpoint, _ = trained
    out = tmp_path / "store"
    result = _lmkcomp("extract", "--checkpoint", str(checkpoint), "--data", str(root), "--out", str(out), *_EXTRACT,
                      "--executor", "ray", "--address", ray_cluster.address)
    assert result.returncode == 0, result.stderr
    assert "over 2 nodes" in result.stderr, result.stderr
    assert _tree(out) == _tree(one_process_store)
