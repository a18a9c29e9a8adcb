"""The kNN table on disk: round trip, resuming a killed run, refusing a different table."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmkcomp.errors import UserInputError
from lmkcomp.search.knn_table import KnnTable, KnnTableWriter, write_knn_table


def make_ids(count: int, offset: int = 0) -> list[str]:
    return [f"{i + offset:016x}" for i in range(count)]


QUERIES = make_ids(7)
DATABASE = make_ids(5, offset=100)


def ranked(n: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random (scores, indices) rows, best first, indices into 5 database rows."""
    rng = np.random.default_rng(seed)
    indices = np.stack([rng.permutation(5)[:k] for _ in range(n)]).astype(np.int64)
    scores = -np.sort(-rng.random((n, k), dtype=np.float32), axis=1)
    return scores, indices


def test_round_trip_over_several_shards(tmp_path):
    scores, indices = ranked(7, 3)
    table = write_knn_table(tmp_path / "knn", QUERIES, DATABASE, scores, indices, meta={"spec": "Flat", "scales": (1, 2)},
                            shard_size=3)

    assert sorted(p.name for p in (tmp_path / "knn").glob("shard-*")) == [
        f"shard-{s:05d}-{kind}.npy" for s in range(3) for kind in ("indices", "scores")]
    reopened = KnnTable(tmp_path / "knn")
    for t in (table, reopened):
        assert len(t) == 7 and t.k == 3
        assert t.query_ids == QUERIES and t.database_ids == DATABASE
        assert t.meta == {"spec": "Flat", "scales": [1, 2]}
        np.testing.assert_array_equal(t.scores(), scores)
        np.testing.assert_array_equal(t.indices(), indices)
        assert t.scores().dtype == np.float32 and t.indices().dtype == np.int64
    assert reopened.neighbour_ids(4) == [DATABASE[i] for i in indices[4]]
    assert (tmp_path / "knn" / "database_ids.txt").read_text().splitlines() == DATABASE
    blocks = list(reopened.iter_blocks(4))
    assert [start for start, _, _ in blocks] == [0, 4]
    np.testing.assert_array_equal(np.concatenate([b for _, b, _ in blocks]), scores)
    np.testing.assert_array_equal(np.concatenate([i for _, _, i in blocks]), indices)


def test_missing_neighbours_pad_the_row_end_and_read_as_minus_inf(tmp_path):
    scores = np.array([[0.9, 0.5, 0.0]], dtype=np.float32)
    indices = np.array([[3, 1, -1]])
    table = write_knn_table(tmp_path / "knn", QUERIES[:1], DATABASE, scores, indices)
    assert table.scores()[0, 2] == -np.inf
    assert table.neighbour_ids(0) == [DATABASE[3], DATABASE[1]]


@pytest.mark.parametrize("indices, message", [
    ([[5, 1]], "outside"),
    ([[-2, 1]], "outside"),
    ([[-1, 1]], "before a neighbour"),
])
def test_bad_indices_are_refused(tmp_path, indices, message):
    writer = KnnTableWriter(tmp_path / "knn", QUERIES[:1], DATABASE, k=2)
    with pytest.raises(ValueError, match=message):
        writer.write_shard(0, np.array([[0.5, 0.4]]), np.array(indices))


def test_non_finite_score_names_the_query(tmp_path):
    writer = KnnTableWriter(tmp_path / "knn", QUERIES[:2], DATABASE, k=2)
    with pytest.raises(ValueError, match=f"query row 1 \\(id {QUERIES[1]}\\)"):
        writer.write_shard(0, np.array([[0.5, 0.4], [0.3, np.nan]]), np.array([[0, 1], [2, 3]]))


def test_k_above_the_database_size_is_refused(tmp_path):
    with pytest.raises(UserInputError, match="k 6 exceeds the 5 database ids"):
        KnnTableWriter(tmp_path / "knn", QUERIES, DATABASE, k=6)


def test_resume_writes_only_the_missing_shards(tmp_path):
    scores, indices = ranked(7, 2)
    writer = KnnTableWriter(tmp_path / "knn", QUERIES, DATABASE, k=2, shard_size=3, meta={"spec": "Flat"})
    assert [s for s, _ in writer.pending_shards()] == [0, 1, 2]
    writer.write_shard(1, scores[3:6], indices[3:6])
    # a kill between the two files of shard 0: its indices exist, its scores do not
    writer.write_shard(0, scores[:3], indices[:3])
    (tmp_path / "knn" / "shard-00000-scores.npy").unlink()
    with pytest.raises(UserInputError, match="incomplete kNN table"):
        KnnTable(tmp_path / "knn")

    resumed = KnnTableWriter(tmp_path / "knn", QUERIES, DATABASE, k=2, shard_size=3, meta={"spec": "Flat"})
    pending = resumed.pending_shards()
    assert pending == [(0, slice(0, 3)), (2, slice(6, 7))]
    for s, rows in pending:
        resumed.write_shard(s, scores[rows], indices[rows])
    table = resumed.finish()
    np.testing.assert_array_equal(table.indices(), indices)
    np.testing.assert_array_equal(table.scores(), scores)


def test_finish_refuses_missing_shards(tmp_path):
    writer = KnnTableWriter(tmp_path / "knn", QUERIES, DATABASE, k=2, shard_size=3)
    with pytest.raises(RuntimeError, match="3 shards not written, first: shard 0"):
        writer.finish()
    with pytest.raises(UserInputError, match="shard 0 missing"):
        KnnTable(tmp_path / "knn")


@pytest.mark.parametrize("change, message", [
    ({"k": 3}, "k 2 on disk vs 3 requested"),
    ({"meta": {"spec": "IVF16,Flat"}}, "meta 'spec': 'Flat' on disk vs 'IVF16,Flat' requested"),
    ({"query_ids": QUERIES[:3] + make_ids(1, 50) + QUERIES[4:]}, f"row 3: id {QUERIES[3]} on disk vs {make_ids(1, 50)[0]}"),
    ({"database_ids": DATABASE[:4] + make_ids(1, 50)}, f"database row 4: id {DATABASE[4]} on disk vs {make_ids(1, 50)[0]}"),
    ({"shard_size": 4}, "shard_size 3 on disk vs 4 requested"),
])
def test_a_different_table_in_the_folder_is_refused(tmp_path, change, message):
    arguments = {"query_ids": QUERIES, "database_ids": DATABASE, "k": 2, "shard_size": 3, "meta": {"spec": "Flat"}}
    KnnTableWriter(tmp_path / "knn", **arguments)
    with pytest.raises(UserInputError, match=f"already holds a different kNN table.*{message}"):
        KnnTableWriter(tmp_path / "knn", **{**arguments, **change})


def test_foreign_and_bad_folders(tmp_path):
    with pytest.raises(UserInputError, match="not a kNN table"):
        KnnTable(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "lmkcomp-embeddings", "version": 1}))
    with pytest.raises(UserInputError, match="not the manifest of a kNN table"):
        KnnTable(tmp_path)
    with pytest.raises(UserInputError, match="row 1: invalid image id"):
        KnnTableWriter(tmp_path / "other", [QUERIES[0], "not-an-id"], DATABASE, k=1)
    with pytest.raises(UserInputError, match="database ids: id .* appears twice"):
        KnnTableWriter(tmp_path / "other", QUERIES, DATABASE + DATABASE[:1], k=1)


def test_a_stray_shard_without_manifest_is_refused(tmp_path):
    (tmp_path / "knn").mkdir()
    np.save(tmp_path / "knn" / "shard-00000-scores.npy", np.zeros((1, 1), dtype=np.float32))
    with pytest.raises(UserInputError, match="holds shard files but no manifest.json"):
        KnnTableWriter(tmp_path / "knn", QUERIES, DATABASE, k=1)
