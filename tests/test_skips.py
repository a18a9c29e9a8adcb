"""Skipping bad images holds for every kind of bad file, and bad files never hang a command.

Each kind of bad file sits where an image should be: an empty file, a FIFO (opening one for
reading blocks until a writer comes, so commands run in a subprocess with a time limit and a
regression fails instead of freezing the suite), a directory named like an image and a JPEG
cut inside its header. With skips, the stores record the skipped ids and the commands print
the count; without, the first bad file stops the command with one line and exit code 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from lmkcomp.cli import main
from lmkcomp.data import gldv2, synthetic
from lmkcomp.data.images import encode_jpeg
from lmkcomp.data.layout import LandmarkData
from lmkcomp.errors import ImageLoadError
from lmkcomp.features.store import EmbeddingStore, EmbeddingWriter
from lmkcomp.local.store import LocalFeatureStore
from lmkcomp.train.data import UNREADABLE_SIZE, image_sizes

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (os.mkfifo)")

REPO = Path(__file__).resolve().parent.parent
GOOD_IDS = ("0a00000000000000", "0b00000000000000", "0c00000000000000")
# the bad images' ids sort after the good ones: rows 3.. of a store, in this order
BAD_IDS = {"zero-byte": "f100000000000000", "fifo": "f200000000000000", "directory": "f300000000000000",
           "truncated header": "f400000000000000"}
REASONS = {"zero-byte": "empty file (0 bytes)", "fifo": "not a regular file (a FIFO)",
           "directory": "is a directory, not an image file",
           "truncated header": "truncated or corrupt image data: Truncated File Read"}


def jpeg(seed: int, size: tuple[int, int] = (48, 64)) -> bytes:
    """A noise JPEG of (height, width) `size` (noise gives SIFT something to find)."""
    return encode_jpeg(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8))


def make_bad(path: Path, kind: str) -> None:
    """Put a bad file of `kind` at `path`, where an image is expected."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "zero-byte":
        path.write_bytes(b"")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:
        path.write_bytes(jpeg(99)[:100])  # SOI and part of the header: identified, then cut


def bad_root(tmp_path: Path, kinds: list[str]) -> Path:
    """A dataset root (no dataset.json, like a Kaggle download) whose test split holds three good
    images and one bad file of each of `kinds`."""
    root = tmp_path / "data"
    for seed, image_id in enumerate(GOOD_IDS):
        path = root / gldv2.image_relpath("test", image_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg(seed))
    for kind in kinds:
        make_bad(root / gldv2.image_relpath("test", BAD_IDS[kind]), kind)
    return root


def run_lmkcomp(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """`python -m lmkcomp ARGS` from the repository, killed (and the test failed) after `timeout` s."""
    try:
        return subprocess.run([sys.executable, "-m", "lmkcomp", *args], cwd=REPO, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"lmkcomp {args[0]} hung (killed after {timeout} s)")


def call_unblocking(function: Callable[[], object], fifos: list[Path]) -> object:
    """`function()`'s result or exception (returned, not raised). Should it block opening one of
    `fifos`, the test fails after 10 s, and opening the FIFOs for writing releases the thread."""
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(function)
        try:
            error = future.exception(timeout=10)
        except TimeoutError:
            for fifo in fifos:
                with open(fifo, "wb"):
                    pass
            pytest.fail("blocked opening a FIFO")
    return error if error is not None else future.result()


def untrained_checkpoint(root: Path, path: Path) -> Path:
    """A checkpoint of a small untrained model (extraction only needs some model)."""
    import torch

    from lmkcomp.config import from_dict, to_dict
    from lmkcomp.models import create_model
    from lmkcomp.train.checkpoint import save_checkpoint
    from lmkcomp.train.config import TrainConfig

    config = from_dict(TrainConfig, {"data": {"root": str(root)}, "image_size": 32,
                                     "model": {"backbone": "test_resnet", "embedding_size": 16}})
    torch.manual_seed(0)
    model = create_model(config.model, 2)
    save_checkpoint(path, {"model": model.state_dict(), "config": to_dict(config), "landmark_ids": [1, 2],
                           "class_counts": [1, 1]})
    return path


def skipped_count_line(store_dir: Path, count: int) -> str:
    return f"{count} images could not be read and were skipped; their ids are in {store_dir / 'manifest.json'}"


def expected_skipped(kinds: list[str]) -> list[dict]:
    return [{"row": len(GOOD_IDS) + i, "id": BAD_IDS[kind], "reason": REASONS[kind]} for i, kind in enumerate(kinds)]


# --------------------------------------------------------------------------------------------
# The image-size pre-scan (extract and train read every header before loading any image)


@pytest.mark.parametrize("kind", list(BAD_IDS))
def test_size_prescan_honours_skip_for_each_bad_kind(tmp_path, kind):
    root = bad_root(tmp_path, [kind])
    data = LandmarkData(root)
    ids, bad = [*GOOD_IDS, BAD_IDS[kind]], root / gldv2.image_relpath("test", BAD_IDS[kind])
    sizes = call_unblocking(lambda: image_sizes(data, "test", ids, progress=False, on_error="skip"), [bad])
    assert sizes == [(64, 48)] * 3 + [UNREADABLE_SIZE]
    error = call_unblocking(lambda: image_sizes(data, "test", ids, progress=False), [bad])
    assert isinstance(error, ImageLoadError) and error.path == str(bad) and error.reason == REASONS[kind]


def test_unreadable_sizes_stay_out_of_the_cache(tmp_path):
    root = bad_root(tmp_path, ["zero-byte"])
    ids, cache = [*GOOD_IDS, BAD_IDS["zero-byte"]], tmp_path / "sizes.csv"
    image_sizes(LandmarkData(root), "test", ids, cache, progress=False, on_error="skip")
    assert BAD_IDS["zero-byte"] not in cache.read_text()
    # repaired, the image is measured next time
    (root / gldv2.image_relpath("test", BAD_IDS["zero-byte"])).write_bytes(jpeg(5, (20, 30)))
    assert image_sizes(LandmarkData(root), "test", ids, cache, progress=False)[-1] == (30, 20)


@pytest.mark.slow
def test_trainer_prescan_honours_on_error_skip(tmp_path):
    from lmkcomp.config import from_dict
    from lmkcomp.train.config import TrainConfig
    from lmkcomp.train.trainer import Trainer

    root = tmp_path / "tiny"
    synthetic.generate(root, synthetic.preset_config("tiny", long_side=64), seed=3, progress=False)
    data = LandmarkData(root)
    labels = data.train_labels()
    # an image of the largest landmark: no class-size filter leaves it out of training
    bad = labels[labels["landmark_id"] == labels["landmark_id"].mode()[0]]["id"].iloc[0]
    data.image_path("train", bad).write_bytes(b"")
    settings = {"data": {"root": str(root)}, "model": {"backbone": "test_resnet", "embedding_size": 16},
                "epochs": 1, "image_size": 32, "workers": 0}
    with pytest.raises(ImageLoadError, match="empty file"):
        Trainer(from_dict(TrainConfig, settings), tmp_path / "strict", progress=False)
    settings["data"]["on_error"] = "skip"
    trainer = Trainer(from_dict(TrainConfig, settings), tmp_path / "lenient", progress=False)
    assert bad in trainer.full_split.train_ids + trainer.full_split.val_ids


# --------------------------------------------------------------------------------------------
# The commands, end to end


def test_extract_local_skip_bad_stores_every_bad_kind_and_counts_it(tmp_path):
    kinds = list(BAD_IDS)
    root, out = bad_root(tmp_path, kinds), tmp_path / "sift"
    done = run_lmkcomp("extract-local", "--method", "sift", "--data", str(root), "--split", "test", "--out", str(out),
                       "--skip-bad", "--workers", "2", "--quiet")
    assert done.returncode == 0, done.stderr
    assert skipped_count_line(out, len(kinds)) in done.stdout.splitlines()
    store = LocalFeatureStore(out)
    assert store.skipped == expected_skipped(kinds)
    assert all(len(store.get(BAD_IDS[kind])) == 0 for kind in kinds)
    assert all(len(store.get(image_id)) > 0 for image_id in GOOD_IDS)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["skipped"] == expected_skipped(kinds) and manifest["command"] == "lmkcomp extract-local"


@pytest.mark.slow
def test_extract_skip_bad_stores_every_bad_kind_as_zero_rows_and_counts_it(tmp_path):
    kinds = list(BAD_IDS)
    root, out = bad_root(tmp_path, kinds), tmp_path / "embeddings"
    checkpoint = untrained_checkpoint(root, tmp_path / "model.pt")
    done = run_lmkcomp("extract", "--checkpoint", str(checkpoint), "--data", str(root), "--split", "test",
                       "--out", str(out), "--skip-bad", "--workers", "2", "--quiet")
    assert done.returncode == 0, done.stderr
    assert skipped_count_line(out, len(kinds)) in done.stdout.splitlines()
    store = EmbeddingStore(out)
    assert store.skipped == expected_skipped(kinds)
    assert json.loads((out / "manifest.json").read_text())["command"] == "lmkcomp extract"
    norms = np.linalg.norm(store.array(), axis=1)
    assert np.all(norms[len(GOOD_IDS):] == 0) and np.allclose(norms[:len(GOOD_IDS)], 1.0, atol=2e-3)


@pytest.mark.parametrize("command", ["extract-local", pytest.param("extract", marks=pytest.mark.slow)])
def test_a_fifo_without_skip_stops_the_command_with_one_line(tmp_path, command):
    root = bad_root(tmp_path, ["fifo"])
    args = ["--method", "sift"] if command == "extract-local" else [
        "--checkpoint", str(untrained_checkpoint(root, tmp_path / "model.pt")), "--workers", "1"]
    done = run_lmkcomp(command, *args, "--data", str(root), "--split", "test", "--out", str(tmp_path / "out"),
                       "--quiet")
    fifo = root / gldv2.image_relpath("test", BAD_IDS["fifo"])
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"lmkcomp: error: {fifo}: cannot load image: not a regular file (a FIFO)"]


def test_corrupt_pixels_in_a_loader_worker_are_one_line(tmp_path, capsys):
    # the header reads, so the pre-scan passes and a DataLoader worker process meets the error
    root = bad_root(tmp_path, [])
    path = root / gldv2.image_relpath("test", GOOD_IDS[1])
    path.write_bytes(path.read_bytes()[:-200])
    checkpoint = untrained_checkpoint(root, tmp_path / "model.pt")
    code = main(["extract", "--checkpoint", str(checkpoint), "--data", str(root), "--split", "test",
                 "--out", str(tmp_path / "out"), "--workers", "2", "--quiet"])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"lmkcomp: error: {path}: cannot load image: truncated")


# --------------------------------------------------------------------------------------------
# Skipped rows in a store's manifest


def test_a_rewritten_shard_replaces_its_skipped_entries(tmp_path):
    ids = [f"{row:016x}" for row in range(6)]
    writer = EmbeddingWriter(tmp_path / "store", ids, 2, shard_size=3)
    rows = np.ones((3, 2), dtype=np.float32)
    rows[1] = 0
    writer.write_shard(0, rows, [(1, "empty file (0 bytes)")])
    writer.write_shard(1, rows, [(1, "not an image file")])
    # shard 0 written again (a resumed run) with its image repaired: its entry goes, shard 1's stays
    writer.write_shard(0, np.ones((3, 2), dtype=np.float32))
    writer.finish()
    assert EmbeddingStore(tmp_path / "store").skipped == [{"row": 4, "id": ids[4], "reason": "not an image file"}]
    with pytest.raises(ValueError, match="all zero"):
        writer.write_shard(1, np.ones((3, 2), dtype=np.float32), [(1, "not an image file")])
