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


def _ray_start(*args: str) -> list[str]:
    """`ray start ARGS --block`, with every port a node would otherwise take from Ray's fixed
    defaults chosen free: several test sessions (or a user's own cluster) may share this machine."""
    ports = ["--node-manager-port", "--object-manager-port", "--metrics-export-port", "--runtime-env-agent-port",
             "--dashboard-agent-grpc-port", "--dashboard-agent-listen-port"]
    chosen = [str(item) for flag in ports for item in (flag, _free_port())]
    return [sys.executable, "-c", "import sys; from ray.scripts.scripts import main; sys.exit(main())",
            "start", *args, *chosen, "--num-cpus", "1", "--disable-usage-stats", "--block"]


def _wait_for_nodes(address: str, count: int, log_dir: str) -> None:
    """Wait until `count` nodes with CPUs are alive in the cluster, asked from a separate process
    (connecting this one would make it a driver of the cluster for the whole session)."""
    probe = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
             "print(sum(1 for n in ray.nodes() if n['Alive'] and n['Resources'].get('CPU')))")
    deadline = time.monotonic() + _NODE_START_TIMEOUT
    while time.monotonic() < deadline:
        result = subprocess.run([sys.executable, "-c", probe, address], capture_output=True, text=True,
                                env={**os.environ, "RAY_AUTH_MODE": "disabled"})
        if result.returncode == 0 and result.stdout.strip() == str(count):
            return
        time.sleep(1)
    logs = "".join(path.read_text(errors="replace")[-1500:] for path in sorted(Path(log_dir).glob("node-*.log")))
    raise RuntimeError(f"the Ray cluster at {address} did not reach {count} nodes: {result.stderr[-1500:]}\n{logs}")


def _disconnect_ray() -> None:
    """End this process's connection to the cluster, if a test made it a driver."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="session")
def ray_cluster() -> RayCluster:
    """Two Ray nodes of one CPU each, started as separate processes on this machine (the issue's
    two-node cluster); stopped by their process ids at the end of the session. Tests using it are
    marked `cluster`."""
    pytest.importorskip("ray")
    port = _free_port()
    # Ray's socket paths must stay under the 107-byte limit of a Unix socket name: a short folder.
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    # No token authentication: a cluster of this session only, and Ray's shared token file
    # (~/.ray/auth_token) is then neither needed nor written.
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    # The workers import lmkcomp as this process does (a checkout on PYTHONPATH included), and
    # the test modules, whose functions some tests send as tasks.
    here = Path(__file__).resolve().parent
    env["PYTHONPATH"] = os.pathsep.join([str(here.parent), str(here), env.get("PYTHONPATH", "")])
    env.pop("RAY_ADDRESS", None)
    address = f"127.0.0.1:{port}"
    def start(number: int, *args: str) -> subprocess.Popen:
        with open(Path(temp_dir) / f"node-{number}.log", "w") as log:
            return subprocess.Popen(_ray_start(*args), env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    cluster = RayCluster(address, [], temp_dir)
    try:
        cluster.processes.append(start(0, "--head", "--port", str(port), "--ray-client-server-port", str(_free_port()),
                                       "--temp-dir", temp_dir, "--include-dashboard=false"))
        _wait_for_nodes(address, 1, temp_dir)
        cluster.processes.append(start(1, "--address", address))
        _wait_for_nodes(address, 2, temp_dir)
    except BaseException:
        cluster.stop()
        raise
    # Drivers started by the tests (lmkcomp subprocesses) connect without a token, as the nodes expect.
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    try:
        yield cluster
    finally:
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved
        _disconnect_ray()
        cluster.stop()
