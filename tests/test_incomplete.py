"""Every stage refuses an unfinished upstream artifact, and says which command finishes it.

A dataset whose make-dataset was killed has `"complete": false` in its dataset.json; a store
whose extraction was killed has shards missing or no `complete` flag. Readers refuse both with
one line naming the folder and the command to run again (every writer resumes).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmkcomp.cli import main
from lmkcomp.data import gldv2, synthetic
from lmkcomp.data.images import encode_jpeg
from lmkcomp.data.layout import LandmarkData
from lmkcomp.errors import UserInputError
from lmkcomp.features.store import EmbeddingStore, EmbeddingWriter
from lmkcomp.local.extract import extract_local_split
from lmkcomp.local.sift import SiftExtractor

INCOMPLETE_DATASET = ("dataset is incomplete (make-dataset was interrupted); "
                      "run the same make-dataset command again to finish it")
IDS = ("0a00000000000000", "0b00000000000000", "0c00000000000000")


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def unfinished_dataset(tmp_path: Path) -> Path:
    """A root as a killed make-dataset leaves it: its manifest written, `complete` false."""
    root = tmp_path / "data"
    root.mkdir()
    (root / "dataset.json").write_text(json.dumps({"generator": "lmkcomp.synthetic", "complete": False}))
    return root


def image_root(tmp_path: Path) -> Path:
    """A root with three test images and no dataset.json (as a Kaggle download)."""
    root = tmp_path / "images"
    for seed, image_id in enumerate(IDS):
        path = root / gldv2.image_relpath("test", image_id)
        path.parent.mkdir(parents=True)
        path.write_bytes(encode_jpeg(np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)))
    return root


# --------------------------------------------------------------------------------------------
# Datasets


@pytest.mark.slow
def test_an_interrupted_make_dataset_is_refused_until_it_is_finished(tmp_path, monkeypatch):
    root = tmp_path / "tiny"
    config = synthetic.preset_config("tiny", long_side=64)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(synthetic, "write_csvs", killed)  # killed after the images, before the CSVs
        with pytest.raises(KeyboardInterrupt):
            synthetic.generate(root, config, seed=1, progress=False)
    with pytest.raises(UserInputError) as refused:
        LandmarkData(root)
    assert str(refused.value) == f"{root}: {INCOMPLETE_DATASET}"
    synthetic.generate(root, config, seed=1, progress=False)  # the same command again
    assert LandmarkData(root).split_ids("test")


@pytest.mark.parametrize("command", [
    ["extract-local", "--method", "sift", "--split", "test", "--out", "{out}", "--data", "{root}"],
    ["extract", "--checkpoint", "{out}/absent.pt", "--split", "test", "--out", "{out}", "--data", "{root}"],
    ["train", "cpu-tiny", "--out", "{out}", "--data", "{root}"],
    ["baseline", "{root}", "--out", "{out}"],
    ["evaluate", "--checkpoint", "{out}/absent.pt", "--name", "x", "--workdir", "{out}", "--data", "{root}"],
    ["validate", "--task", "recognition", "--submission", "{out}/s.csv", "--data", "{root}"],
])
def test_every_stage_refuses_an_unfinished_dataset(tmp_path, capsys, command):
    root = unfinished_dataset(tmp_path)
    argv = [part.format(root=root, out=tmp_path / "out") for part in command]
    assert main(argv) == 2
    assert one_error_line(capsys) == f"lmkcomp: error: {root}: {INCOMPLETE_DATASET}"


@pytest.mark.parametrize("manifest", [None, '{"complete": true}', '["not", "ours"]', "not json"])
def test_only_a_manifest_saying_unfinished_is_refused(tmp_path, manifest):
    root = image_root(tmp_path)
    if manifest is not None:
        (root / "dataset.json").write_text(manifest)
    assert LandmarkData(root).split_ids("test") == list(IDS)
    (root / "dataset.json").write_text('{"complete": false}')
    with pytest.raises(UserInputError, match="dataset is incomplete"):
        LandmarkData(root)


# --------------------------------------------------------------------------------------------
# Stores


class KilledSift(SiftExtractor):
    """SIFT that is killed (KeyboardInterrupt) on its third image."""

    calls = 0

    def extract(self, image):
        KilledSift.calls += 1
        if KilledSift.calls == 3:
            raise KeyboardInterrupt
        return super().extract(image)


def test_a_killed_extract_local_store_is_refused_by_verify(tmp_path, capsys):
    root, store = image_root(tmp_path), tmp_path / "sift"
    with pytest.raises(KeyboardInterrupt):
        extract_local_split(LandmarkData(root), "test", store, KilledSift(), shard_size=1, progress=False)
    pairs = tmp_path / "pairs.csv"
    pd.DataFrame({"query_id": [IDS[0]], "candidate_id": [IDS[1]]}).to_csv(pairs, index=False)
    assert main(["verify", "--pairs", str(pairs), "--queries-local", str(store), "--out", str(tmp_path / "table"),
                 "--quiet"]) == 2
    assert one_error_line(capsys) == (
        f"lmkcomp: error: {store}: incomplete local-feature store (shard 2 missing (descriptors-00002.npy, "
        "locations-00002.npy, scales-00002.npy, scores-00002.npy, sizes-00002.npy, offsets-00002.npy)); "
        "run the same lmkcomp extract-local command again to finish it")


def test_an_unfinished_embedding_store_is_refused_naming_its_command(tmp_path, capsys):
    writer = EmbeddingWriter(tmp_path / "test", list(IDS), 4, shard_size=3, command="lmkcomp extract")
    writer.write_shard(0, np.eye(3, 4, dtype=np.float32))  # every shard written, finish() never called
    assert main(["ensemble", str(tmp_path / "out"), str(tmp_path / "test")]) == 2
    assert one_error_line(capsys) == (
        f"lmkcomp: error: {tmp_path / 'test'}: incomplete embedding store (not marked finished); "
        "run the same lmkcomp extract command again to finish it")
    writer.finish()
    assert len(EmbeddingStore(tmp_path / "test")) == 3
