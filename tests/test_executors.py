"""Executors: the local pool and Ray give the same artifacts as one process, whatever fails."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from lmkcomp.bench.raycluster import free_port
from lmkcomp.errors import UserInputError
from lmkcomp.executors import LocalExecutor, RayExecutor, connect_ray, create_executor
from lmkcomp.local.extract import extract_local_split
from lmkcomp.data.layout import LandmarkData
from lmkcomp.local.sift import SiftExtractor


def _square_setup(offset: int) -> dict:
    return {"offset": offset, "pid": os.getpid()}


def _write_square(context: dict, task: tuple[str, int]) -> int:
    path, value = task
    Path(path).write_text(f"{value * value + context['offset']}\n")
    return 1


def _tasks(folder: Path, count: int) -> list[tuple[str, int]]:
    return [(str(folder / f"shard-{value}.txt"), value) for value in range(count)]


def _contents(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.mark.parametrize("workers", [1, 2])
def test_local_executor_writes_every_shard_and_counts_them(tmp_path, workers):
    tasks = _tasks(tmp_path, 7)
    summary = LocalExecutor(workers).run(functools.partial(_square_setup, 3), _write_square, tasks,
                                         sizes=[1] * 7, desc="squares", unit="shard", progress=False)
    assert _contents(tmp_path) == {f"shard-{v}.txt": f"{v * v + 3}\n".encode() for v in range(7)}
    assert (summary.tasks, summary.items) == (7, 7)
    assert sum(report.tasks for report in summary.nodes.values()) == 7


def test_local_executor_raises_the_first_task_error(tmp_path):
    def setup():
        return None

    def work(context, task):
        raise UserInputError(f"bad task {task}")

    with pytest.raises(UserInputError, match="bad task 0"):
        LocalExecutor(1).run(setup, work, [0, 1], sizes=[1, 1], desc="x", unit="x", progress=False)


def test_create_executor_names_the_known_ones():
    assert isinstance(create_executor("local", 2), LocalExecutor)
    assert isinstance(create_executor("ray", 2, "auto"), RayExecutor)
    with pytest.raises(UserInputError, match="known: local, ray"):
        create_executor("dask")
    with pytest.raises(UserInputError, match="--address names a Ray cluster"):
        create_executor("local", 1, "127.0.0.1:6379")


def test_missing_ray_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(UserInputError, match="Ray is not installed"):
        connect_ray(None)


def test_unreachable_address_is_one_line_and_exit_2(tmp_path):
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    result = subprocess.run([sys.executable, "-m", "lmkcomp", "verify", "--pairs", str(tmp_path / "p.csv"),
                             "--queries-local", str(tmp_path), "--out", str(tmp_path / "t"), "--executor", "ray",
                             "--address", address], capture_output=True, text=True)
    # the pair list is missing too: the address must be what is reported, before anything is read
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"--address {address}: no Ray cluster answers there" in lines[0], result.stderr


@pytest.mark.parametrize("command", ["extract-local", "extract"])
def test_an_address_without_ray_is_refused_by_the_extractions(tmp_path, capsys, command):
    """Both extractions leave a local run to their own pool or data loader; the --address a local
    run cannot use is refused all the same (extract-local used to ignore it)."""
    from lmkcomp.cli import main

    argv = [command, "--data", str(tmp_path), "--split", "train", "--out", str(tmp_path / "out"),
            "--address", "127.0.0.1:1"]
    argv += ["--method", "sift"] if command == "extract-local" else ["--checkpoint", str(tmp_path / "missing.pt")]
    assert main(argv) == 2
    assert "--address names a Ray cluster: use it with --executor ray" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# On a two-node Ray cluster (separate processes on this machine)


@pytest.fixture(scope="module")
def sift_store(tiny_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("executor-sift") / "sift"
    extract_local_split(LandmarkData(tiny_root), "train", out, SiftExtractor(contrast_threshold=0.01), progress=False)
    return out


@pytest.fixture(scope="module")
def pair_csv(sift_store, tmp_path_factory) -> Path:
    from lmkcomp.local.store import LocalFeatureStore

    ids = LocalFeatureStore(sift_store).ids
    # every image against the next 6: 6 x (n - 6) pairs, same landmark and not
    pairs = pd.DataFrame([(ids[i], ids[i + j]) for i in range(len(ids) - 6) for j in range(1, 7)],
                         columns=["query_id", "candidate_id"])
    path = tmp_path_factory.mktemp("executor-pairs") / "pairs.csv"
    pairs.to_csv(path, index=False)
    return path


def _lmkcomp(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmkcomp", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def _artifacts(folder: Path) -> dict[str, bytes]:
    """Every file of an output folder but its lock, by name."""
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.name != ".lock"}


@pytest.fixture(scope="module")
def local_table(sift_store, pair_csv, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("executor-local") / "table"
    result = _lmkcomp("verify", "--pairs", str(pair_csv), "--queries-local", str(sift_store), "--out", str(out),
                      "--chunk-size", "10", "--quiet")
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.cluster
def test_verify_on_two_ray_nodes_is_byte_identical_to_local(ray_cluster, sift_store, pair_csv, local_table, tmp_path):
    out = tmp_path / "table"
    result = _lmkcomp("verify", "--pairs", str(pair_csv), "--queries-local", str(sift_store), "--out", str(out),
                      "--chunk-size", "10", "--executor", "ray", "--address", ray_cluster.address)
    assert result.returncode == 0, result.stderr
    assert _artifacts(out) == _artifacts(local_table)
    # the closing summary names both nodes
    assert "over 2 nodes" in result.stderr, result.stderr


@pytest.mark.cluster
def test_verify_address_from_the_environment(ray_cluster, sift_store, pair_csv, local_table, tmp_path):
    out = tmp_path / "table"
    result = _lmkcomp("verify", "--pairs", str(pair_csv), "--queries-local", str(sift_store), "--out", str(out),
                      "--chunk-size", "10", "--executor", "ray", "--quiet",
                      env={"LMKCOMP_RAY_ADDRESS": ray_cluster.address})
    assert result.returncode == 0, result.stderr
    assert _artifacts(out) == _artifacts(local_table)


def _running_task_pids() -> list[int]:
    """Ray worker processes running one of the kit's tasks now (Ray titles them after the task)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(b"ray::_ray_task"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@pytest.mark.cluster
def test_a_killed_ray_worker_loses_nothing(ray_cluster, sift_store, pair_csv, local_table, tmp_path):
    out = tmp_path / "table"
    killed: list[int] = []

    def kill_one_worker() -> None:
        deadline = time.monotonic() + 60
        while not killed and time.monotonic() < deadline:
            pids = _running_task_pids()
            if pids:
                os.kill(pids[0], 9)
                killed.append(pids[0])
            time.sleep(0.01)

    killer = threading.Thread(target=kill_one_worker)
    killer.start()
    # official-delf: slow enough pairs that the kill lands mid-stage
    result = _lmkcomp("verify", "--pairs", str(pair_csv), "--queries-local", str(sift_store), "--out", str(out),
                      "--chunk-size", "10", "--executor", "ray", "--address", ray_cluster.address, "--quiet",
                      "--verify-preset", "official-delf")
    killer.join()
    assert killed, "no Ray task was seen running"
    assert result.returncode == 0, result.stderr
    reference = tmp_path / "reference"
    assert _lmkcomp("verify", "--pairs", str(pair_csv), "--queries-local", str(sift_store), "--out", str(reference),
                    "--chunk-size", "10", "--quiet", "--verify-preset", "official-delf").returncode == 0
    from lmkcomp.local.pairs import read_pair_table

    table = read_pair_table(out)
    assert len(table) == len(pd.read_csv(pair_csv)) and not table.duplicated(["query_id", "candidate_id"]).any()
    assert {k: v for k, v in _artifacts(out).items() if not k.endswith(".tmp")} == _artifacts(reference)


@pytest.fixture(scope="module")
def damaged_root(tiny_root, tmp_path_factory) -> Path:
    """The tiny dataset with two train images of different 20-image shards emptied (unreadable)."""
    import shutil

    root = tmp_path_factory.mktemp("executor-damaged") / "data"
    shutil.copytree(tiny_root, root)
    data = LandmarkData(root)
    ids = data.split_ids("train")
    for image_id in (ids[3], ids[45]):
        data.image_path("train", image_id).write_bytes(b"")
    return root


def test_extract_local_in_a_local_pool_is_byte_identical_skips_included(damaged_root, tmp_path):
    """Through an executor each shard is written by a worker's reopened writer (ids memory-mapped),
    the skipped images of both workers recorded in the one manifest."""
    data, extractor = LandmarkData(damaged_root), SiftExtractor(max_features=50)
    for out, executor in ((tmp_path / "one", None), (tmp_path / "pool", LocalExecutor(2))):
        extract_local_split(data, "train", out, extractor, shard_size=20, progress=False, skip_bad=True,
                            executor=executor)
    assert _artifacts(tmp_path / "pool") == _artifacts(tmp_path / "one")
    assert [entry["row"] for entry in json.loads((tmp_path / "pool" / "manifest.json").read_text())["skipped"]] == \
        [3, 45]


@pytest.mark.cluster
def test_extract_local_on_two_ray_nodes_is_byte_identical_skips_included(ray_cluster, damaged_root, tmp_path):
    common = ["extract-local", "--method", "sift", "--data", str(damaged_root), "--split", "train",
              "--shard-size", "20", "--skip-bad", "--quiet"]
    local, pool, remote = tmp_path / "local", tmp_path / "pool", tmp_path / "ray"
    for out, extra in ((local, []), (pool, ["--workers", "2"]),
                       (remote, ["--executor", "ray", "--address", ray_cluster.address])):
        result = _lmkcomp(*common, "--out", str(out), *extra)
        assert result.returncode == 0, result.stderr
        assert "2 images could not be read" in result.stdout + result.stderr
    expected = _artifacts(local)
    assert _artifacts(pool) == expected
    # the workers recorded their shards' skipped images in the one manifest, under its lock
    assert {k: v for k, v in _artifacts(remote).items() if k != ".manifest.lock"} == \
        {k: v for k, v in expected.items() if k != ".manifest.lock"}
    skipped = json.loads((remote / "manifest.json").read_text())["skipped"]
    assert [entry["row"] for entry in skipped] == [3, 45]


def _refuse(context, task) -> int:
    raise UserInputError(f"shard {task}: refused")


@pytest.mark.cluster
def test_ray_executor_spreads_tasks_and_reraises_user_errors(ray_cluster, tmp_path):
    executor = RayExecutor(ray_cluster.address)
    tasks = _tasks(tmp_path, 12)
    summary = executor.run(functools.partial(_square_setup, 1), _write_square, tasks, sizes=[1] * 12,
                           desc="squares", unit="shard", progress=False)
    assert _contents(tmp_path) == {f"shard-{v}.txt": f"{v * v + 1}\n".encode() for v in range(12)}
    assert summary.tasks == 12 and sum(r.tasks for r in summary.nodes.values()) == 12
    # a task's user error reads as it would in one process, not as Ray's wrapped traceback
    with pytest.raises(UserInputError, match="shard 0: refused"):
        executor.run(functools.partial(_square_setup, 1), _refuse, [0], sizes=[1], desc="x", unit="x",
                     progress=False)
    # a GPU stage on a cluster without GPUs is refused before any task is sent
    from lmkcomp.executors import Resources

    with pytest.raises(UserInputError, match="no GPU"):
        executor.run(functools.partial(_square_setup, 1), _write_square, tasks, sizes=[1] * 12, desc="x",
                     unit="x", resources=Resources(gpus=1), progress=False)
