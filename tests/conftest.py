"""Session-wide fixtures: a tiny synthetic dataset, and a two-node Ray cluster on this machine."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from lmkcomp.data import synthetic

# How long a `ray start` node may take to join, in seconds (a cold start here takes about 5).
_NODE_START_TIMEOUT = 60


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """The `tiny` synthetic dataset at 128 px (seed 4), made once per session; read-only for tests."""
    root = tmp_path_factory.mktemp("tiny128-session")
    synthetic.generate(root, synthetic.preset_config("tiny", long_side=128), seed=4, progress=False)
    return root


@dataclass
class RayCluster:
    """A Ray head and one worker node, each a `ray start --block` process group of its own."""

    address: str
    processes: list[subprocess.Popen]
    temp_dir: str

    def stop(self) -> None:
        # SIGKILL to each node's process group (raylet, GCS, agents): SIGTERM would drain for 30 s.
        for process in reversed(self.processes):
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _ray_command() -> list[str]:
    return [sys.executable, "-c", "import sys; from ray.scripts.scripts import main; sys.exit(main())"]


def _wait_for_nodes(address: str, count: int) -> None:
    """Wait until `count` nodes with CPUs are alive in the cluster, asked from a separate process
    (connecting this one would make it a driver of the cluster for the whole session)."""
    probe = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
             "print(sum(1 for n in ray.nodes() if n['Alive'] and n['Resources'].get('CPU')))")
    deadline = time.monotonic() + _NODE_START_TIMEOUT
    while time.monotonic() < deadline:
        result = subprocess.run([sys.executable, "-c", probe, address], capture_output=True, text=True)
        if result.returncode == 0 and result.stdout.strip() == str(count):
            return
        time.sleep(1)
    raise RuntimeError(f"the Ray cluster at {address} did not reach {count} nodes: {result.stderr[-2000:]}")


@pytest.fixture(scope="session")
def ray_cluster() -> RayCluster:
    """Two Ray nodes of one CPU each, started as separate processes on this machine (the issue's
    two-node cluster); stopped by their process ids at the end of the session. Tests using it are
    marked `cluster`."""
    pytest.importorskip("ray")
    port = _free_port()
    # Ray's socket paths must stay under the 107-byte limit of a Unix socket name: a short folder.
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    # The workers import lmkcomp as this process does (a checkout on PYTHONPATH included).
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    env.pop("RAY_ADDRESS", None)
    address = f"127.0.0.1:{port}"
    head = subprocess.Popen([*_ray_command(), "start", "--head", "--num-cpus", "1", "--port", str(port),
                             "--temp-dir", temp_dir, "--include-dashboard=false", "--disable-usage-stats", "--block"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    cluster = RayCluster(address, [head], temp_dir)
    try:
        _wait_for_nodes(address, 1)
        cluster.processes.append(subprocess.Popen(
            [*_ray_command(), "start", "--address", address, "--num-cpus", "1", "--block"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        _wait_for_nodes(address, 2)
    except BaseException:
        cluster.stop()
        raise
    yield cluster
    cluster.stop()
