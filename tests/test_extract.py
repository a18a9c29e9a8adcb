"""Extraction into embedding stores (multi-scale, flip, resumable) and checkpoint evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lmkcomp.cli import main
from lmkcomp.data import gldv2
from lmkcomp.data.labels import split_labels
from lmkcomp.data.layout import LandmarkData
from lmkcomp.evaluate import evaluate_checkpoint
from lmkcomp.features import extract as extract_module
from lmkcomp.features.extract import embed_tensor, extract_split
from lmkcomp.features.health import embedding_health
from lmkcomp.features.store import EmbeddingStore
from lmkcomp.submission import validate_submission
from lmkcomp.train.checkpoint import load_trained_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tiny_root, tiny_checkpoint) -> tuple[LandmarkData, Path]:
    return LandmarkData(tiny_root), tiny_checkpoint


def test_store_is_id_aligned_and_normalised(trained, tmp_path):
    data, checkpoint = trained
    store = extract_split(checkpoint, data, "test", tmp_path / "test", shard_size=16, workers=0, progress=False)
    assert store.ids == data.split_ids("test")
    assert store.dtype == np.float16 and store.dim == 32
    assert np.allclose(np.linalg.norm(store.array(), axis=1), 1.0, atol=2e-3)
    assert store.meta["scales"] == [0.7071, 1.0, 1.4142] and store.meta["flip"] is True


def test_single_scale_equals_embed_and_repeated_scales_change_nothing(trained):
    _, checkpoint = trained
    model, _, _ = load_trained_model(checkpoint)
    images = torch.rand(3, 3, 64, 96)
    with torch.no_grad():
        assert torch.allclose(embed_tensor(model, images), model.embed(images), atol=1e-6)
        # the power mean of identical descriptors is that descriptor
        assert torch.allclose(embed_tensor(model, images, scales=(1.0, 1.0)), model.embed(images), atol=1e-5)
        assert not torch.allclose(embed_tensor(model, images, scales=(0.5, 1.0)), model.embed(images), atol=1e-3)


def test_extraction_resumes_only_missing_shards(trained, tmp_path, monkeypatch):
    data, checkpoint = trained
    out = tmp_path / "index"
    extract_split(checkpoint, data, "index", out, scales=(1.0,), flip=False, shard_size=20, workers=0, progress=False)
    before = {p.name: p.read_bytes() for p in out.glob("shard-*.npy")}
    assert len(before) >= 3
    (out / "shard-00001.npy").unlink()
    calls = []
    real = extract_module.embed_dataset

    def counting(*args, **kwargs):
        calls.append(kwargs.get("desc"))
        return real(*args, **kwargs)

    monkeypatch.setattr(extract_module, "embed_dataset", counting)
    with pytest.raises(Exception, match="shard 1 missing"):
        EmbeddingStore(out)
    extract_split(checkpoint, data, "index", out, scales=(1.0,), flip=False, shard_size=20, workers=0, progress=False)
    assert calls == ["extract index shard 1"]
    assert {p.name: p.read_bytes() for p in out.glob("shard-*.npy")} == before


def test_evaluate_writes_valid_scored_submissions(trained, tmp_path):
    data, checkpoint = trained
    result = evaluate_checkpoint(checkpoint, data, tmp_path / "features", "tiny-model", submissions=tmp_path / "subs",
                                 workers=0, progress=False)
    test_ids = data.split_ids("test")
    validate_submission(result["recognition_csv"], "recognition", test_ids)
    validate_submission(result["retrieval_csv"], "retrieval", test_ids)
    assert 0.0 <= result["gap"] <= 1.0 and 0.0 < result["map@100"] <= 1.0
    # the health figures are those of the test and index stores it extracted
    test, index = (EmbeddingStore(tmp_path / "features" / split) for split in ("test", "index"))
    expected = embedding_health(test.array(), split_labels(data, "test", test.ids), index.array(),
                                split_labels(data, "index", index.ids))
    assert (result["auc"], result["mean_norm"]) == (expected.auc, expected.database_mean_norm)
    assert 0.0 <= result["auc"] <= 1.0


def test_extract_cli_errors(tmp_path, capsys):
    code = main(["extract", "--checkpoint", str(tmp_path / "none.pt"), "--split", "test", "--out", str(tmp_path / "o")])
    assert code == 2 and "checkpoint not found" in capsys.readouterr().err
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"not a checkpoint")
    code = main(["extract", "--checkpoint", str(bogus), "--split", "test", "--out", str(tmp_path / "o")])
    assert code == 2 and "unreadable checkpoint" in capsys.readouterr().err


def test_clean_cli_on_extracted_train_embeddings(trained, tmp_path, capsys):
    data, checkpoint = trained
    store = tmp_path / "train"
    extract_split(checkpoint, data, "train", store, scales=(1.0,), flip=False, workers=0, progress=False)
    for method in ("dbscan", "references"):
        out = tmp_path / method
        code = main(["clean", "--method", method, "--data", str(data.root), "--train", str(store), "--out", str(out)])
        assert code == 0, capsys.readouterr().err
        assert "noise removal precision" in capsys.readouterr().out
        cleaned = gldv2.read_train_clean_csv(out / "train_clean.csv")
        assert set(cleaned["id"]) <= set(data.split_ids("train"))
    code = main(["clean", "--method", "dbscan", "--data", str(data.root), "--train", str(tmp_path / "nope"),
                 "--out", str(tmp_path / "x")])
    assert code == 2
