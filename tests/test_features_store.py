"""The sharded embedding store: writing, resuming, reading, alignment checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmkcomp.errors import UserInputError
from lmkcomp.features import store as store_module
from lmkcomp.features.store import (
    EmbeddingStore,
    EmbeddingWriter,
    check_aligned,
    l2_normalize,
    shard_rows,
)


def make_ids(count: int, offset: int = 0) -> list[str]:
    return [f"{i + offset:016x}" for i in range(count)]


def random_rows(count: int, dim: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32)


def write_store(directory, ids, data, shard_size, dtype="float32", meta=None, shards=None) -> EmbeddingWriter:
    """Write the shards numbered in `shards` (all when None); finish only when all were written."""
    writer = EmbeddingWriter(directory, ids, data.shape[1], dtype=dtype, shard_size=shard_size, meta=meta)
    for k, rows in writer.pending_shards():
        if shards is None or k in shards:
            writer.write_shard(k, data[rows])
    if shards is None:
        writer.finish()
    return writer


def test_shard_rows_cut_every_shard_size_rows():
    assert shard_rows(23, 10) == [10, 10, 3]
    assert shard_rows(20, 10) == [10, 10]
    assert shard_rows(3, 10) == [3]


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_round_trip_over_several_shards(tmp_path, dtype):
    ids = make_ids(23)
    data = random_rows(23, 5)
    write_store(tmp_path / "emb", ids, data, shard_size=10, dtype=dtype, meta={"split": "index", "scales": (1, 2)})

    store = EmbeddingStore(tmp_path / "emb")
    assert store.ids == ids
    assert len(store) == 23 and store.dim == 5 and store.dtype == np.dtype(dtype)
    assert store.meta == {"split": "index", "scales": [1, 2]}
    assert sorted(p.name for p in (tmp_path / "emb").glob("shard-*.npy")) == [
        "shard-00000.npy", "shard-00001.npy", "shard-00002.npy"]
    assert np.load(tmp_path / "emb" / "shard-00002.npy").shape == (3, 5)

    full = store.array()
    assert full.dtype == np.float32
    np.testing.assert_array_equal(full, data.astype(dtype).astype(np.float32))

    blocks = list(store.iter_blocks(7))
    assert [start for start, _ in blocks] == [0, 7, 14, 21]
    np.testing.assert_array_equal(np.concatenate([block for _, block in blocks]), full)
    # a read that spans the boundary between shards 0 and 1
    np.testing.assert_array_equal(store.read(8, 13), full[8:13])
    assert store.read(8, 13, dtype=np.float64).dtype == np.float64

    np.testing.assert_array_equal(store.position([ids[5], ids[22], ids[0]]), [5, 22, 0])


def test_manifest_records_the_layout(tmp_path):
    write_store(tmp_path / "emb", make_ids(23), random_rows(23, 4), shard_size=10, meta={"checkpoint": "a.pt"})
    manifest = json.loads((tmp_path / "emb" / "manifest.json").read_text())
    assert manifest["dim"] == 4 and manifest["dtype"] == "float32" and manifest["count"] == 23
    assert manifest["shard_size"] == 10 and manifest["complete"] is True
    assert [shard["rows"] for shard in manifest["shards"]] == [10, 10, 3]
    assert manifest["meta"] == {"checkpoint": "a.pt"}
    assert (tmp_path / "emb" / "ids.txt").read_text().splitlines() == make_ids(23)


def test_position_of_unknown_id_is_an_error(tmp_path):
    write_store(tmp_path / "emb", make_ids(5), random_rows(5, 3), shard_size=2)
    with pytest.raises(UserInputError, match="ffffffffffffffff"):
        EmbeddingStore(tmp_path / "emb").position([make_ids(1)[0], "f" * 16])


def test_resume_lists_only_missing_shards(tmp_path):
    ids, data = make_ids(25), random_rows(25, 4)
    write_store(tmp_path / "emb", ids, data, shard_size=10, shards={0, 2})

    writer = EmbeddingWriter(tmp_path / "emb", ids, 4, dtype="float32", shard_size=10)
    assert writer.pending_shards() == [(1, slice(10, 20))]
    writer.write_shard(1, data[10:20])
    assert writer.pending_shards() == []
    writer.finish()
    np.testing.assert_array_equal(EmbeddingStore(tmp_path / "emb").array(), data)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"ids": make_ids(25, offset=1)}, "row 0"),
        ({"ids": make_ids(24)}, "count 25 on disk vs 24"),
        ({"dim": 8}, "dim 4 on disk vs 8"),
        ({"dtype": "float16"}, "dtype"),
        ({"shard_size": 5}, "shard_size"),
        ({"meta": {"checkpoint": "b.pt"}}, "meta 'checkpoint': 'a.pt' on disk vs 'b.pt'"),
    ],
)
def test_reopening_a_different_store_is_an_error(tmp_path, change, message):
    write_store(tmp_path / "emb", make_ids(25), random_rows(25, 4), shard_size=10, meta={"checkpoint": "a.pt"},
                shards={0})
    arguments = {"ids": make_ids(25), "dim": 4, "dtype": "float32", "shard_size": 10, "meta": {"checkpoint": "a.pt"}}
    arguments.update(change)
    with pytest.raises(UserInputError, match=message):
        EmbeddingWriter(tmp_path / "emb", **arguments)


def test_a_reopened_writer_writes_the_shards_of_the_writer_that_began_the_store(tmp_path):
    """A worker's writer (`reopen`) holds the store's ids memory-mapped; the shards and skipped
    rows it records are those the driver's own writer would write, byte for byte."""
    ids, data = make_ids(25), random_rows(25, 4)
    data[[3, 17]] = 0
    skipped = {0: [(3, "file not found")], 1: [(7, "empty file")], 2: []}
    driver = EmbeddingWriter(tmp_path / "two", ids, 4, dtype="float16", shard_size=10, meta={"checkpoint": "a.pt"})
    worker = EmbeddingWriter.reopen(tmp_path / "two")
    assert not isinstance(worker.ids, list) and worker.ids == ids and worker.ids[10:20] == ids[10:20]
    for k, rows in worker.pending_shards():
        worker.write_shard(k, data[rows], skipped[k])
    driver.finish()
    reference = EmbeddingWriter(tmp_path / "one", ids, 4, dtype="float16", shard_size=10, meta={"checkpoint": "a.pt"})
    for k, rows in reference.pending_shards():
        reference.write_shard(k, data[rows], skipped[k])
    reference.finish()
    files = {path.name: path.read_bytes() for path in sorted((tmp_path / "one").iterdir())}
    assert {path.name: path.read_bytes() for path in sorted((tmp_path / "two").iterdir())} == files
    assert [(e["row"], e["id"]) for e in EmbeddingStore(tmp_path / "two").skipped] == [(3, ids[3]), (17, ids[17])]


def test_reopening_a_writer_refuses_an_id_list_the_manifest_does_not_count(tmp_path):
    write_store(tmp_path / "emb", make_ids(25), random_rows(25, 4), shard_size=10, shards={0})
    (tmp_path / "emb" / "ids.txt").write_text("".join(f"{i}\n" for i in make_ids(24)))
    with pytest.raises(UserInputError, match="ids.txt: 24 ids, but the manifest counts 25 images"):
        EmbeddingWriter.reopen(tmp_path / "emb")


def test_ids_differing_mid_list_are_named_by_row(tmp_path):
    ids = make_ids(25)
    write_store(tmp_path / "emb", ids, random_rows(25, 4), shard_size=10, shards={0})
    swapped = ids[:17] + [ids[18], ids[17]] + ids[19:]
    with pytest.raises(UserInputError, match=f"row 17: id {ids[17]} on disk vs {ids[18]} requested"):
        EmbeddingWriter(tmp_path / "emb", swapped, 4, dtype="float32", shard_size=10)


def test_missing_shard_is_named(tmp_path):
    write_store(tmp_path / "emb", make_ids(25), random_rows(25, 4), shard_size=10)
    (tmp_path / "emb" / "shard-00001.npy").unlink()
    with pytest.raises(UserInputError, match=r"incomplete embedding store \(shard 1 missing\); run the command "
                                             "that wrote it again, with the same arguments, to finish it"):
        EmbeddingStore(tmp_path / "emb")


def test_unfinished_store_is_refused_and_cannot_finish_early(tmp_path):
    ids, data = make_ids(25), random_rows(25, 4)
    writer = write_store(tmp_path / "emb", ids, data, shard_size=10, shards={0, 2})
    with pytest.raises(RuntimeError, match="shard 1"):
        writer.finish()
    writer.write_shard(1, data[10:20])
    with pytest.raises(UserInputError, match="not marked finished"):
        EmbeddingStore(tmp_path / "emb")
    writer.finish()
    assert len(EmbeddingStore(tmp_path / "emb")) == 25


def test_non_finite_rows_are_rejected_and_nothing_written(tmp_path):
    ids, data = make_ids(25), random_rows(25, 4)
    writer = EmbeddingWriter(tmp_path / "emb", ids, 4, dtype="float16", shard_size=10)
    bad = data[10:20].copy()
    bad[3, 2] = np.nan
    with pytest.raises(UserInputError, match=f"row 13 \\(id {ids[13]}\\)"):
        writer.write_shard(1, bad)
    overflow = data[10:20].copy()
    overflow[5, 0] = 1e6  # finite in float32, inf in float16
    with pytest.raises(UserInputError, match=f"row 15 \\(id {ids[15]}\\)"):
        writer.write_shard(1, overflow)
    assert not (tmp_path / "emb" / "shard-00001.npy").exists()
    assert [k for k, _ in writer.pending_shards()] == [0, 1, 2]


def test_wrong_shape_or_shard_number_is_rejected(tmp_path):
    writer = EmbeddingWriter(tmp_path / "emb", make_ids(25), 4, shard_size=10)
    with pytest.raises(ValueError, match=r"\(5, 4\)"):
        writer.write_shard(2, random_rows(10, 4))  # the last shard holds 5 rows
    with pytest.raises(ValueError):
        writer.write_shard(0, random_rows(10, 3))
    with pytest.raises(IndexError):
        writer.write_shard(3, random_rows(5, 4))
    assert len(writer.pending_shards()) == 3


def test_interrupted_shard_write_leaves_no_shard(tmp_path, monkeypatch):
    writer = EmbeddingWriter(tmp_path / "emb", make_ids(25), 4, shard_size=10)

    def save_half_then_die(handle, array, allow_pickle):
        handle.write(b"\x93NUMPY partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(store_module.np, "save", save_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        writer.write_shard(0, random_rows(10, 4))
    monkeypatch.undo()
    assert [k for k, _ in writer.pending_shards()] == [0, 1, 2]
    assert sorted(p.name for p in (tmp_path / "emb").iterdir()) == ["ids.txt", "manifest.json"]


@pytest.mark.parametrize(
    "ids, message",
    [
        ([], "no ids"),
        (["0" * 16, "xyz"], "row 1: invalid image id 'xyz'"),
        (["0" * 16, "1" * 16, "0" * 16], "appears twice, at rows 0 and 2"),
    ],
)
def test_invalid_ids_are_rejected(tmp_path, ids, message):
    with pytest.raises(UserInputError, match=message):
        EmbeddingWriter(tmp_path / "emb", ids, 4)


def test_invalid_settings_are_rejected(tmp_path):
    with pytest.raises(UserInputError, match="dtype"):
        EmbeddingWriter(tmp_path / "a", make_ids(3), 4, dtype="float64")
    with pytest.raises(UserInputError, match="dim"):
        EmbeddingWriter(tmp_path / "b", make_ids(3), 0)
    with pytest.raises(UserInputError, match="shard_size"):
        EmbeddingWriter(tmp_path / "c", make_ids(3), 4, shard_size=0)


def test_folder_with_shards_but_no_manifest_is_refused(tmp_path):
    (tmp_path / "emb").mkdir()
    np.save(tmp_path / "emb" / "shard-00000.npy", np.zeros((2, 2)))
    with pytest.raises(UserInputError, match="no manifest.json"):
        EmbeddingWriter(tmp_path / "emb", make_ids(2), 2)


def test_damaged_stores_are_user_errors(tmp_path):
    with pytest.raises(UserInputError, match="not an embedding store"):
        EmbeddingStore(tmp_path)
    write_store(tmp_path / "emb", make_ids(5), random_rows(5, 3), shard_size=2)
    np.save(tmp_path / "emb" / "shard-00001.npy", np.zeros((2, 4), np.float32))
    with pytest.raises(UserInputError, match="shard-00001.npy.*shape"):
        EmbeddingStore(tmp_path / "emb")
    (tmp_path / "emb" / "ids.txt").write_text("\n".join(make_ids(4)) + "\n")
    with pytest.raises(UserInputError, match="4 ids"):
        EmbeddingStore(tmp_path / "emb")
    (tmp_path / "emb" / "manifest.json").write_text("{not json")
    with pytest.raises(UserInputError, match="unreadable manifest"):
        EmbeddingStore(tmp_path / "emb")


def test_check_aligned(tmp_path):
    ids = make_ids(6)
    data = random_rows(6, 2)
    a = EmbeddingStore(write_store(tmp_path / "a", ids, data, shard_size=4).directory)
    same = EmbeddingStore(write_store(tmp_path / "same", ids, data, shard_size=3).directory)
    reordered = ids[:3] + [ids[4], ids[3], ids[5]]
    b = EmbeddingStore(write_store(tmp_path / "b", reordered, data, shard_size=4).directory)
    short = EmbeddingStore(write_store(tmp_path / "short", ids[:5], data[:5], shard_size=4).directory)

    check_aligned([a, same])
    check_aligned([a])
    with pytest.raises(UserInputError, match=f"row 3: {ids[3]} in .*a vs {ids[4]} in .*b"):
        check_aligned([a, same, b])
    with pytest.raises(UserInputError, match=r"row 5: .* vs no id .*\(6 vs 5 ids\)"):
        check_aligned([a, short])


def test_l2_normalize():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [300.0, 400.0]], dtype=np.float16)
    y = l2_normalize(x)
    assert y.dtype == np.float32  # float16 squares of 300 and 400 would overflow
    np.testing.assert_allclose(y, [[0.6, 0.8], [0.0, 0.0], [0.6, 0.8]], rtol=1e-3)


def test_store_rows_read_what_is_indexed_in_the_order_asked(tmp_path):
    from lmkcomp.features.store import StoreRows

    data = np.arange(40, dtype=np.float32).reshape(10, 4)
    ids = [f"{i:016x}" for i in range(10)]
    writer = EmbeddingWriter(tmp_path / "s", ids, 4, dtype="float16", shard_size=3)
    for k, rows in writer.pending_shards():
        writer.write_shard(k, data[rows])
    writer.finish()
    rows = StoreRows(EmbeddingStore(tmp_path / "s"), [7, 2, 2, 9, 0])
    assert rows.shape == (5, 4) and len(rows) == 5
    np.testing.assert_array_equal(rows[1:4], data[[2, 2, 9]])
    np.testing.assert_array_equal(rows[np.array([4, 0, 3])], data[[0, 7, 9]])
    assert rows[np.array([], dtype=np.int64)].shape == (0, 4) and rows[1:4].dtype == np.float32
    with pytest.raises(IndexError):
        StoreRows(EmbeddingStore(tmp_path / "s"), [10])
