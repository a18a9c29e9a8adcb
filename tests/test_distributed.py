"""DDP under torchrun with 2 CPU processes (gloo) follows the same loss curve as 1 process: on
one node (`--standalone`) and as two nodes meeting at a c10d rendezvous endpoint (two separate
launchers, as on two machines)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lmkcomp.bench.raycluster import free_port
from lmkcomp.data import synthetic

pytestmark = pytest.mark.slow

EPOCHS = 3
LAUNCHER = [sys.executable, "-m", "torch.distributed.run"]
#: seconds a training run may take
_TIMEOUT = 600


def _train_command(config: Path, out: Path) -> list[str]:
    return ["-m", "lmkcomp", "train", str(config), "--out", str(out), "--quiet"]


def _environment() -> dict[str, str]:
    # gloo on the loopback interface: both "nodes" are this machine
    return {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}


def _loss_curve(out: Path) -> list[float]:
    with (out / "metrics.csv").open() as handle:
        return [float(row["train_loss"]) for row in csv.DictReader(handle)]


def run_training(config: Path, out: Path, processes: int) -> list[float]:
    """Train in one process, or in `processes` under `torchrun --standalone`; the loss curve."""
    launcher = [*LAUNCHER, "--standalone", f"--nproc_per_node={processes}"] if processes > 1 else [sys.executable]
    completed = subprocess.run([*launcher, *_train_command(config, out)], capture_output=True, text=True,
                               env=_environment(), timeout=_TIMEOUT, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return _loss_curve(out)


def run_two_node_training(config: Path, out: Path) -> list[float]:
    """Train as two nodes of one process each: two `torchrun --nnodes 2 --node-rank R` launchers
    started separately, meeting at a c10d rendezvous on 127.0.0.1; the loss curve (rank 0 writes)."""
    endpoint = f"127.0.0.1:{free_port()}"
    launchers = [
        subprocess.Popen([*LAUNCHER, "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(rank),
                          "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "lmkcomp-test",
                          "--local-addr", "127.0.0.1", *_train_command(config, out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         # the launcher's INFO log states the world it joined
                         env={**_environment(), "LOGLEVEL": "INFO"})
        for rank in (0, 1)
    ]
    try:
        results = [launcher.communicate(timeout=_TIMEOUT) for launcher in launchers]
    finally:
        for launcher in launchers:
            launcher.kill()
    for launcher, (stdout, stderr) in zip(launchers, results):
        assert launcher.returncode == 0, stderr[-3000:]
        # one world of two processes, not two worlds of one
        assert "global_world_sizes=[2]" in stdout + stderr, stderr[-3000:]
    return _loss_curve(out)


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("distributed")
    root = folder / "data"
    synthetic.generate(root, synthetic.preset_config("tiny", noise_fraction=0.0, min_train_per_landmark=5,
                                                     long_side=96), seed=11, progress=False)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump({
        "data": {"root": str(root), "val_fraction": 0.25},
        "model": {"backbone": "test_resnet", "embedding_size": 64, "scale": 16.0},
        "optim": {"lr": 0.05},
        "epochs": EPOCHS, "batch_size": 8, "image_size": 64, "workers": 0, "seed": 0,
    }))
    return path


@pytest.fixture(scope="module")
def single_curve(config, tmp_path_factory) -> list[float]:
    return run_training(config, tmp_path_factory.mktemp("one") / "run", 1)


def _assert_matches(single: list[float], distributed: list[float]) -> None:
    assert len(single) == len(distributed) == EPOCHS
    # Each process sees half of every global batch, so gradients match the single process up
    # to batch-norm statistics (computed per process): the curves agree within a tolerance.
    for a, b in zip(single, distributed):
        assert b == pytest.approx(a, rel=0.15), (single, distributed)
    assert distributed[-1] < distributed[0]


def test_two_gloo_processes_match_one(config, single_curve, tmp_path):
    _assert_matches(single_curve, run_training(config, tmp_path / "two", 2))


def test_two_nodes_at_a_rendezvous_endpoint_match_one(config, single_curve, tmp_path):
    _assert_matches(single_curve, run_two_node_training(config, tmp_path / "two-nodes"))
