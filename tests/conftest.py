"""Session-wide fixtures: a tiny synthetic dataset, a descriptor trained on it, and a two-node Ray
cluster on this machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmkcomp.bench.raycluster import LocalRayCluster, running_cluster
from lmkcomp.data import synthetic


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """The `tiny` synthetic dataset at 128 px (seed 4), made once per session; read-only for tests."""
    root = tmp_path_factory.mktemp("tiny128-session")
    synthetic.generate(root, synthetic.preset_config("tiny", long_side=128), seed=4, progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_root, tmp_path_factory) -> Path:
    """`checkpoint-last.pt` of a `test_resnet` descriptor (32-d embeddings) trained for one epoch
    on `tiny_root` (64 px crops, batch 8, no loader processes), trained once per session; for
    tests that need *a* trained checkpoint, not particular weights. Read-only for tests."""
    from lmkcomp.config import from_dict
    from lmkcomp.train.config import TrainConfig
    from lmkcomp.train.trainer import Trainer

    run = tmp_path_factory.mktemp("tiny-checkpoint-session")
    config = from_dict(TrainConfig, {
        "data": {"root": str(tiny_root)}, "model": {"backbone": "test_resnet", "embedding_size": 32},
        "epochs": 1, "batch_size": 8, "image_size": 64, "workers": 0,
    })
    Trainer(config, run, progress=False).fit()
    return run / "checkpoint-last.pt"


@pytest.fixture(scope="session")
def ray_cluster() -> LocalRayCluster:
    """Two Ray nodes of one CPU each, started as separate processes on this machine (the issue's
    two-node cluster; `lmkcomp.bench.raycluster`), with this process's environment set for
    drivers to connect without a token; stopped by their process ids at the end of the session.
    Tests using it are marked `cluster`."""
    pytest.importorskip("ray")
    # The test modules go on the nodes' path too: some tests send their own functions as tasks.
    with running_cluster((1, 1), python_path=[str(Path(__file__).resolve().parent)]) as cluster:
        yield cluster


def pytest_collection_modifyitems(items) -> None:
    """A test on the Ray cluster starts Ray's processes (about 15 s for the session's cluster, then
    seconds a test): it is `slow` too, so that the quick subset, `-m "not slow"`, leaves it out."""
    for item in items:
        if item.get_closest_marker("cluster") is not None:
            item.add_marker(pytest.mark.slow)
