"""`search_stores` on embedding stores (subsets, resume, refusal), `lmkcomp search` and
`lmkcomp bench search`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_search import one_faiss_thread  # noqa: F401  (autouse: faiss k-means on one thread)

from lmkcomp import cli
from lmkcomp.errors import UserInputError
from lmkcomp.features.store import EmbeddingShards, EmbeddingStore, EmbeddingWriter
from lmkcomp.search import KnnTable, exact_search, search_stores
from lmkcomp.search.knn_table import KnnShardWriter


def make_ids(count: int, offset: int = 0) -> list[str]:
    return [f"{i + offset:016x}" for i in range(count)]


def write_store(directory, ids, data, shard_size=16) -> EmbeddingStore:
    writer = EmbeddingWriter(directory, ids, data.shape[1], dtype="float32", shard_size=shard_size)
    for k, rows in writer.pending_shards():
        writer.write_shard(k, data[rows])
    writer.finish()
    return EmbeddingStore(directory)


def write_float16_store(directory, ids, data, shard_size=50) -> EmbeddingStore:
    writer = EmbeddingWriter(directory, ids, data.shape[1], dtype="float16", shard_size=shard_size)
    for k, rows in writer.pending_shards():
        writer.write_shard(k, data[rows])
    writer.finish()
    return EmbeddingStore(directory)


@pytest.fixture
def stores(tmp_path):
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((23, 8)).astype(np.float32)
    database = rng.standard_normal((70, 8)).astype(np.float32)
    return (write_store(tmp_path / "test", make_ids(23), queries),
            write_store(tmp_path / "train", make_ids(70, offset=1000), database), queries, database)


@pytest.mark.parametrize("spec", ["flat", "Flat", "numpy", "torch:cpu"])
def test_search_stores_equals_exact_search(tmp_path, stores, spec):
    query_store, database_store, queries, database = stores
    table = search_stores(query_store, database_store, tmp_path / "knn", k=5, spec=spec, query_block=4, shard_size=10,
                          progress=False)
    expected_scores, expected = exact_search(queries, database, 5)
    np.testing.assert_array_equal(table.indices(), expected)
    np.testing.assert_allclose(table.scores(), expected_scores, rtol=1e-5, atol=1e-6)
    assert table.query_ids == query_store.ids and table.database_ids == database_store.ids
    assert table.meta["spec"] == spec
    assert table.meta["database"] == str((tmp_path / "train").resolve())
    assert table.meta["queries"] == str((tmp_path / "test").resolve())
    assert table.neighbour_ids(0) == [database_store.ids[i] for i in expected[0]]


@pytest.mark.parametrize("spec", ["flat", "numpy", "torch:cpu"])
def test_streamed_float16_search_equals_in_memory_search_with_ties(tmp_path, spec):
    rng = np.random.default_rng(7)
    # halves and quarters are exact in float16, and their products in float32: many equal scores
    database = (rng.integers(-2, 3, size=(150, 6)) / 4).astype(np.float16)
    database = np.concatenate([database, database[::4]])
    queries = (rng.integers(-2, 3, size=(31, 6)) / 2).astype(np.float16)
    query_store = write_float16_store(tmp_path / "test", make_ids(31), queries)
    database_store = write_float16_store(tmp_path / "train", make_ids(len(database), 1000), database)
    table = search_stores(query_store, database_store, tmp_path / "knn", k=25, spec=spec, query_block=8,
                          database_block=11, progress=False)
    expected_scores, expected = exact_search(queries.astype(np.float32), database.astype(np.float32), 25)
    np.testing.assert_array_equal(table.indices(), expected)
    np.testing.assert_array_equal(table.scores(), expected_scores)


def test_search_workers_open_the_stores_without_their_ids(tmp_path, stores, monkeypatch):
    """A worker needs the stores' rows only: reading GLDv2 train's 4.1 M ids would cost each
    worker about 300 MB. The stores given are opened here, before ids.txt becomes unreadable."""
    from lmkcomp.features import store as store_module
    from lmkcomp.local.pairs import knn_pairs
    from lmkcomp.search.sharded import StoreSelection

    query_store, database_store, queries, database = stores
    rows = store_module.StoreRows(database_store, np.arange(len(database_store)))
    expected_pairs = knn_pairs(database_store.ids, database, database_store.ids, database, 3)

    def no_ids(directory, *_):
        pytest.fail(f"{directory}: a search worker read the ids")

    monkeypatch.setattr(store_module, "read_ids", no_ids)
    opened = StoreSelection(str(database_store.directory), np.array([3, 1])).open()
    assert not hasattr(opened.store, "ids") and len(opened.store) == 70
    np.testing.assert_array_equal(opened[0:2], database[[3, 1]])
    table = search_stores(query_store, database_store, tmp_path / "knn", k=5, shard_size=10, progress=False)
    np.testing.assert_array_equal(table.indices(), exact_search(queries, database, 5)[1])
    pairs = knn_pairs(database_store.ids, rows, database_store.ids, rows, 3)
    assert pairs.equals(expected_pairs)


def test_a_store_larger_than_the_block_budget_is_read_one_block_at_a_time(tmp_path, monkeypatch):
    from lmkcomp.search.exact import ExactSearcher

    rng = np.random.default_rng(8)
    database = rng.standard_normal((300, 16)).astype(np.float16)
    queries = rng.standard_normal((20, 16)).astype(np.float16)
    query_store = write_float16_store(tmp_path / "test", make_ids(20), queries)
    database_store = write_float16_store(tmp_path / "train", make_ids(300, 1000), database, shard_size=64)
    reads, blocks = [], []
    read = EmbeddingShards.read
    top_k = ExactSearcher.top_k

    def counting_read(self, start, stop, dtype=np.float32):
        if self.directory == database_store.directory:
            reads.append(stop - start)
        return read(self, start, stop, dtype)

    def counting_top_k(self, queries, block, k):
        blocks.append(len(block))
        return top_k(self, queries, block, k)

    monkeypatch.setattr(EmbeddingShards, "read", counting_read)  # the workers open the shards alone
    monkeypatch.setattr(ExactSearcher, "top_k", counting_top_k)
    # 40 rows of working memory (half the budget) for the 20 queries of one search: 2 blocks x 16
    # dims x 4 bytes + 20 x 6 bytes a row; the 300 x 16 float32 database does not fit the other half
    budget_mb = 2 * 40 * 248 / 2**20
    table = search_stores(query_store, database_store, tmp_path / "knn", k=10, spec="numpy", memory_mb=budget_mb,
                          progress=False)
    np.testing.assert_array_equal(table.indices(), exact_search(queries.astype(np.float32),
                                                                database.astype(np.float32), 10)[1])
    # one pass over the database (one query block), in blocks of the budget's 40 rows at most;
    # reads are cut at shard boundaries (64 rows), never a whole shard or store at once
    assert max(blocks) == 40 and sum(blocks) == 300 and len(blocks) == 8
    assert max(reads) <= 40 and sum(reads) == 300


def test_database_and_query_subsets_keep_store_order(tmp_path, stores):
    query_store, database_store, queries, database = stores
    chosen = [database_store.ids[i] for i in (41, 3, 17, 60, 8, 33, 2)]
    table = search_stores(query_store, database_store, tmp_path / "knn", k=3, query_ids=query_store.ids[5:1:-1],
                          database_ids=chosen, progress=False)
    rows = np.array(sorted([41, 3, 17, 60, 8, 33, 2]))
    assert table.database_ids == [database_store.ids[i] for i in rows]
    assert table.query_ids == query_store.ids[2:6]
    _, expected = exact_search(queries[2:6], database[rows], 3)
    np.testing.assert_array_equal(table.indices(), expected)


def test_k_is_cut_to_the_database_size(tmp_path, stores):
    query_store, database_store, _, _ = stores
    table = search_stores(query_store, database_store, tmp_path / "knn", k=100, database_ids=database_store.ids[:4],
                          progress=False)
    assert table.k == 4 and sorted(table.indices()[0]) == [0, 1, 2, 3]


def test_a_killed_search_resumes_with_the_pending_shards(tmp_path, stores, monkeypatch):
    query_store, database_store, queries, database = stores
    written = []
    write_shard = KnnShardWriter.write_shard

    def dying_write_shard(self, s, scores, indices):
        if len(written) == 1:
            raise KeyboardInterrupt
        written.append(s)
        write_shard(self, s, scores, indices)

    monkeypatch.setattr(KnnShardWriter, "write_shard", dying_write_shard)
    with pytest.raises(KeyboardInterrupt):
        search_stores(query_store, database_store, tmp_path / "knn", k=4, shard_size=10, progress=False)
    with pytest.raises(UserInputError, match="incomplete kNN table"):
        KnnTable(tmp_path / "knn")

    written.clear()
    monkeypatch.setattr(KnnShardWriter, "write_shard", lambda self, s, *arrays: (written.append(s),
                                                                                 write_shard(self, s, *arrays)))
    table = search_stores(query_store, database_store, tmp_path / "knn", k=4, shard_size=10, progress=False)
    assert written == [1, 2]
    np.testing.assert_array_equal(table.indices(), exact_search(queries, database, 4)[1])

    with pytest.raises(UserInputError, match="meta 'searcher': .*'flat'.* on disk vs .*'numpy'.* requested"):
        search_stores(query_store, database_store, tmp_path / "knn", k=4, spec="numpy", shard_size=10, progress=False)


def test_stores_of_other_dimensions_are_refused(tmp_path, stores):
    query_store, _, _, _ = stores
    other = write_store(tmp_path / "other", make_ids(5, 500), np.ones((5, 4), dtype=np.float32))
    with pytest.raises(UserInputError, match="8-d embeddings but .* 4-d ones"):
        search_stores(query_store, other, tmp_path / "knn", progress=False)
    with pytest.raises(UserInputError, match="1 ids not in the store"):
        search_stores(query_store, query_store, tmp_path / "knn", database_ids=make_ids(1, 9999), progress=False)


def test_cli_search_with_a_database_subset_csv(tmp_path, stores, capsys):
    _, database_store, queries, database = stores
    labelled = tmp_path / "train.csv"
    labelled.write_text("id,url,landmark_id\n" + "".join(f"{i},,7\n" for i in database_store.ids[10:40]))
    code = cli.main(["search", "--queries", str(tmp_path / "test"), "--database", str(tmp_path / "train"),
                     "--out", str(tmp_path / "knn"), "--k", "6", "--index-spec", "IVF4,Flat", "--nprobe", "4",
                     "--database-ids", str(labelled), "--quiet"])
    assert code == 0
    assert "23 queries x 6 neighbours among 30 database images" in capsys.readouterr().out
    table = KnnTable(tmp_path / "knn")
    assert table.meta["searcher"] == {"backend": "faiss", "factory": "IVF4,Flat", "nprobe": 4, "train_size": 32768}
    # nprobe = nlist scans every list: the exact neighbours
    np.testing.assert_array_equal(table.indices(), exact_search(queries, database[10:40], 6)[1])


def test_cli_search_bad_index_is_exit_2(tmp_path, stores, capsys):
    code = cli.main(["search", "--queries", str(tmp_path / "test"), "--database", str(tmp_path / "train"),
                     "--out", str(tmp_path / "knn"), "--index-spec", "Flat", "--nprobe", "3", "--quiet"])
    assert code == 2
    assert "lmkcomp: error: nprobe applies to IVF indexes only" in capsys.readouterr().err


def test_bench_search_writes_json(tmp_path, monkeypatch, capsys):
    # the variants run in subprocesses, which inherit this: no busy-waiting OpenMP threads
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    out = tmp_path / "search.json"
    code = cli.main(["bench", "search", "--sizes", "600", "--num-queries", "20", "--k", "5", "--dim", "16",
                     "--variants", "flat,ivf-flat", "--nprobe", "2", "--project-to", "6000", "--out", str(out)])
    assert code == 0
    assert "flat (projected)" in capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    assert [(row["size"], row["variant"]) for row in rows] == [(600, "flat"), (600, "ivf-flat"), (6000, "flat (projected)")]
    assert all("error" not in row for row in rows)
    # the exact reference against itself, then IVF scanning 2 of 32 lists
    assert rows[0]["recall"] == 1.0 and 0.0 < rows[1]["recall"] < 1.0
    assert rows[1]["spec"] == "IVF32,Flat" and rows[1]["options"] == {"nprobe": 2}
    assert rows[2]["projected"] and not rows[0]["projected"] and "recall" not in rows[2]
    assert rows[2]["queries_per_s"] == pytest.approx(rows[0]["queries_per_s"] / 10)
    assert rows[2]["build_s"] == pytest.approx(rows[0]["build_s"] * 10)
    # a streaming searcher's anonymous memory is its budget's, whatever the database size
    assert rows[2]["anonymous_mb"] == rows[0]["anonymous_mb"] > 0


def test_clustered_rows_have_the_stated_cosines():
    from lmkcomp.bench.scale import cluster_centres, clustered_rows

    centres = cluster_centres(4, 512, seed=0)
    rows = clustered_rows(centres, 2000, 0.05, (0, 0, 0))
    assert rows.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    # 1 / sqrt(1 + 512 x 0.05^2) = 0.66 to the own centre; about 0 to the others
    to_centres = np.sort(rows @ centres.T, axis=1)
    assert abs(np.median(to_centres[:, -1]) - 0.66) < 0.02 and np.abs(to_centres[:, :-1]).max() < 0.25
    np.testing.assert_array_equal(rows, clustered_rows(centres, 2000, 0.05, (0, 0, 0)))


def test_bench_scale_writes_stores_once_and_projects(tmp_path, capsys):
    out = tmp_path / "scale.json"
    arguments = ["bench", "scale", "--num-train", "700", "--num-index", "300", "--num-test", "90", "--dim", "16", "--sample", "40",
                 "--k", "10", "--clusters", "20", "--workdir", str(tmp_path / "w"), "--out", str(out), "--quiet"]
    assert cli.main(arguments) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(row["search"], row["database_rows"], row["sample"], row["full_queries"]) for row in rows] == [
        ("train-vs-train", 700, 40, 700), ("test-vs-index", 300, 40, 90)]
    for row in rows:
        assert row["projected_hours"] == pytest.approx(row["full_queries"] / row["queries_per_s"] / 3600)
        table = KnnTable(row["out"])
        assert len(table) == 40 and table.k == 10
    # a train image's nearest train image is itself
    train_table = KnnTable(rows[0]["out"])
    assert [train_table.database_ids[i] for i in train_table.indices()[:, 0]] == train_table.query_ids
    written = (tmp_path / "w" / "train" / "shard-00000.npy").stat().st_mtime_ns
    assert cli.main(arguments) == 0
    assert (tmp_path / "w" / "train" / "shard-00000.npy").stat().st_mtime_ns == written
    assert cli.main([*arguments[:-3], "--sample", "91", "--quiet"]) == 2
    assert "sample 91 exceeds the 90 rows of the query stores" in capsys.readouterr().err


def test_chosen_ids_must_be_in_the_store_and_unique(tmp_path, stores):
    query_store, database_store, _, _ = stores
    twice = [database_store.ids[3], database_store.ids[1], database_store.ids[3]]
    with pytest.raises(UserInputError, match=f"id {database_store.ids[3]} appears twice"):
        search_stores(query_store, database_store, tmp_path / "knn", k=2, database_ids=twice, progress=False)
    with pytest.raises(UserInputError, match="not in the store"):
        search_stores(query_store, database_store, tmp_path / "knn", k=2, query_ids=["f" * 16], progress=False)
