"""A throwaway Ray cluster on this machine: each node a `ray start --block` process group of its
own, on free ports, without token authentication; stopped by process id. The test suite's
two-node cluster and `lmkcomp bench executors` start theirs with `running_cluster`.

Each node is a separate set of processes, as a node of a real cluster would be (its own raylet
and object store), only sharing this machine's cores and disk.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

#: how long a `ray start` node may take to join, in seconds (a cold start here takes about 5)
NODE_START_TIMEOUT = 60
#: the environment a driver and the nodes share: no token (Ray's shared ~/.ray/auth_token is then
#: neither needed nor written), no usage reports (offline)
CLUSTER_ENVIRONMENT = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
# The ports a node would otherwise take from Ray's fixed defaults, so that several clusters (test
# sessions, a bench, a user's own) can share this machine.
_PORT_FLAGS = ("--node-manager-port", "--object-manager-port", "--metrics-export-port", "--runtime-env-agent-port",
               "--dashboard-agent-grpc-port", "--dashboard-agent-listen-port")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class LocalRayCluster:
    """A head node and worker nodes at `address`, each process a `ray start --block` group."""

    address: str
    temp_dir: str
    processes: list[subprocess.Popen] = field(default_factory=list)

    def stop(self) -> None:
        """SIGKILL each node's process group (raylet, GCS, agents; SIGTERM would drain for 30 s),
        last node first, and remove the cluster's temporary folder."""
        for process in reversed(self.processes):
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _ray_start_command(cpus: int, *args: str) -> list[str]:
    ports = [str(item) for flag in _PORT_FLAGS for item in (flag, free_port())]
    return [sys.executable, "-c", "import sys; from ray.scripts.scripts import main; sys.exit(main())",
            "start", *args, *ports, "--num-cpus", str(cpus), "--disable-usage-stats", "--block"]


def _node_environment(python_path: Sequence[str] = ()) -> dict[str, str]:
    env = {**os.environ, **CLUSTER_ENVIRONMENT}
    # The workers import lmkcomp from where this process does (a checkout on PYTHONPATH included).
    checkout = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [checkout, *python_path, env.get("PYTHONPATH", "")]))
    env.pop("RAY_ADDRESS", None)
    return env


def _wait_for_nodes(address: str, count: int, log_dir: str) -> None:
    """Wait until `count` nodes with CPUs are alive, asked from a separate process (connecting this
    one would make it a driver of the cluster until it exits)."""
    probe = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
             "print(sum(1 for n in ray.nodes() if n['Alive'] and n['Resources'].get('CPU')))")
    deadline = time.monotonic() + NODE_START_TIMEOUT
    while True:
        result = subprocess.run([sys.executable, "-c", probe, address], capture_output=True, text=True,
                                env={**os.environ, **CLUSTER_ENVIRONMENT})
        if result.returncode == 0 and result.stdout.strip() == str(count):
            return
        if time.monotonic() > deadline:
            break
        time.sleep(1)
    logs = "".join(path.read_text(errors="replace")[-1500:] for path in sorted(Path(log_dir).glob("node-*.log")))
    raise RuntimeError(f"the Ray cluster at {address} did not reach {count} nodes: {result.stderr[-1500:]}\n{logs}")


def start_cluster(cpus_per_node: Sequence[int], python_path: Sequence[str] = ()) -> LocalRayCluster:
    """Start one node per entry of `cpus_per_node` (the first is the head), each with that many
    CPUs, and wait until all have joined; `python_path` adds folders to the workers' import path.
    The caller stops it (`LocalRayCluster.stop`)."""
    if not cpus_per_node:
        raise ValueError("a cluster needs one node at least")
    # Ray's socket paths must stay under the 107-byte limit of a Unix socket name: a short folder.
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    port = free_port()
    cluster = LocalRayCluster(f"127.0.0.1:{port}", temp_dir)
    env = _node_environment(python_path)

    def start(number: int, cpus: int, *args: str) -> None:
        with open(Path(temp_dir) / f"node-{number}.log", "w") as log:
            cluster.processes.append(subprocess.Popen(_ray_start_command(cpus, *args), env=env, stdout=log,
                                                      stderr=subprocess.STDOUT, start_new_session=True))

    try:
        start(0, cpus_per_node[0], "--head", "--port", str(port), "--ray-client-server-port", str(free_port()),
              "--temp-dir", temp_dir, "--include-dashboard=false")
        _wait_for_nodes(cluster.address, 1, temp_dir)
        for number, cpus in enumerate(cpus_per_node[1:], start=1):
            start(number, cpus, "--address", cluster.address)
        _wait_for_nodes(cluster.address, len(cpus_per_node), temp_dir)
    except BaseException:
        cluster.stop()
        raise
    return cluster


@contextmanager
def running_cluster(cpus_per_node: Sequence[int], python_path: Sequence[str] = ()) -> Iterator[LocalRayCluster]:
    """`start_cluster(cpus_per_node, python_path)` for the `with` block, with this process's
    environment set so that the drivers it starts (subprocesses, or itself) connect as the nodes
    expect; on leaving, the environment is restored, this process's own connection to the cluster
    (if it made one) ended, and the cluster stopped."""
    cluster = start_cluster(cpus_per_node, python_path)
    saved = {name: os.environ.get(name) for name in CLUSTER_ENVIRONMENT}
    os.environ.update(CLUSTER_ENVIRONMENT)
    try:
        yield cluster
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            ray.shutdown()
        cluster.stop()
