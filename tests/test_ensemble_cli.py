"""`lmkcomp ensemble` end to end: alignment errors exit 2, weights and whitening apply."""

from __future__ import annotations

import numpy as np

from lmkcomp.cli import main
from lmkcomp.features.store import EmbeddingStore, EmbeddingWriter

IDS = [f"{i:016x}" for i in range(6)]


def make_store(path, ids, dim, seed):
    rng = np.random.default_rng(seed)
    writer = EmbeddingWriter(path, ids, dim, dtype="float32", shard_size=4)
    for shard, rows in writer.pending_shards():
        writer.write_shard(shard, rng.normal(size=(rows.stop - rows.start, dim)).astype(np.float32))
    writer.finish()
    return EmbeddingStore(path)


def test_ensemble_cli(tmp_path, capsys):
    a = make_store(tmp_path / "a", IDS, 3, 0)
    b = make_store(tmp_path / "b", IDS, 2, 1)
    assert main(["ensemble", str(tmp_path / "ab"), str(tmp_path / "a"), str(tmp_path / "b"), "--weights", "1,2",
                 "--dtype", "float32"]) == 0
    out = EmbeddingStore(tmp_path / "ab")
    expected_a = a.array() / np.linalg.norm(a.array(), axis=1, keepdims=True)
    expected_b = 2 * b.array() / np.linalg.norm(b.array(), axis=1, keepdims=True)
    expected = np.hstack([expected_a, expected_b])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert out.ids == IDS and np.allclose(out.array(), expected, atol=1e-6)
    assert "6 x 5 ensemble of 2 models" in capsys.readouterr().out

    assert main(["ensemble", str(tmp_path / "w"), str(tmp_path / "a"), str(tmp_path / "b"), "--dtype", "float32",
                 "--fit-whitening", str(tmp_path / "a"), str(tmp_path / "b"), "--pca-dim", "3"]) == 0
    assert EmbeddingStore(tmp_path / "w").dim == 3 and (tmp_path / "w" / "whitening.npz").is_file()

    make_store(tmp_path / "c", IDS[::-1], 2, 2)
    assert main(["ensemble", str(tmp_path / "ac"), str(tmp_path / "a"), str(tmp_path / "c")]) == 2
    assert "row 0" in capsys.readouterr().err
