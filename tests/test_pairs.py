"""Pair lists, the resumable pair table of `verify_pairs`, and kNN pair building."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lmkcomp.data.layout import LandmarkData
from lmkcomp.errors import UserInputError
from lmkcomp.local import pairs as pairs_module
from lmkcomp.local.extract import extract_local_split
from lmkcomp.local.pairs import chunk_file, knn_pairs, read_pair_table, read_pairs, verify_pairs
from lmkcomp.local.sift import SiftExtractor
from lmkcomp.local.store import LocalFeatureStore
from lmkcomp.local.verify import verify_config, verify_pair

CHUNK = 7
FAST = verify_config("fast")


@pytest.fixture(scope="module")
def store(tiny_root, tmp_path_factory) -> LocalFeatureStore:
    return extract_local_split(LandmarkData(tiny_root), "train", tmp_path_factory.mktemp("pairs-sift") / "sift",
                               SiftExtractor(contrast_threshold=0.01), progress=False)


@pytest.fixture(scope="module")
def pair_list(store) -> pd.DataFrame:
    """30 pairs, 5 chunks of CHUNK (the last short): consecutive images, same landmark or not."""
    ids = store.ids
    return pd.DataFrame({"query_id": ids[:30], "candidate_id": ids[1:31], "note": "ignored"})


@pytest.fixture(scope="module")
def reference(store, pair_list, tmp_path_factory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("reference") / "table"
    return read_pair_table(verify_pairs(pair_list, store, store, out, FAST, chunk_size=CHUNK, progress=False))


REAL_VERIFY = pairs_module._ChunkVerifier.verify


def count_chunks(monkeypatch, fail_at: int | None = None) -> list[str]:
    """Patch `_ChunkVerifier.verify` to record each chunk verified (in this process) and to raise
    on call `fail_at` (1-based), as a killed run would stop; returns the record."""
    calls: list[str] = []

    def verify(verifier, chunk):
        calls.append(chunk.path)
        if len(calls) == fail_at:
            raise RuntimeError("killed")
        return REAL_VERIFY(verifier, chunk)

    monkeypatch.setattr(pairs_module._ChunkVerifier, "verify", verify)
    return calls


def test_pair_table_holds_verify_pair_results(store, pair_list, reference):
    assert list(reference.columns) == ["query_id", "candidate_id", "n_putative", "inliers", "hull_area"]
    assert all(pd.api.types.is_string_dtype(reference[c]) for c in ("query_id", "candidate_id"))
    assert [str(t) for t in reference.dtypes[2:]] == ["int32", "int32", "float64"]
    assert reference["query_id"].tolist() == pair_list["query_id"].tolist()
    assert reference["candidate_id"].tolist() == pair_list["candidate_id"].tolist()
    for row in reference.itertuples():
        expected = verify_pair(store.get(row.query_id), store.get(row.candidate_id), FAST)
        assert (row.n_putative, row.inliers, row.hull_area) == (expected.n_putative, expected.inliers, expected.hull_area)
    # the pairs are not all trivially zero: some same-landmark pairs verify
    assert reference["inliers"].max() >= 10


def test_killed_run_resumes_with_the_missing_chunks(store, pair_list, reference, tmp_path, monkeypatch):
    out = tmp_path / "table"
    count_chunks(monkeypatch, fail_at=2)
    with pytest.raises(RuntimeError, match="killed"):
        verify_pairs(pair_list, store, store, out, FAST, chunk_size=CHUNK, progress=False)
    # the first chunk is on disk, the failed one and those after it are not
    assert sorted(p.name for p in out.iterdir()) == [chunk_file(0), "manifest.json"]
    with pytest.raises(UserInputError, match="incomplete pair table"):
        read_pair_table(out)
    resumed = count_chunks(monkeypatch)
    verify_pairs(pair_list, store, store, out, FAST, chunk_size=CHUNK, progress=False)
    assert resumed == [str(out / chunk_file(k)) for k in range(1, 5)]
    pd.testing.assert_frame_equal(read_pair_table(out), reference)


def test_deleted_chunk_alone_is_recomputed(store, pair_list, reference, tmp_path, monkeypatch):
    out = verify_pairs(pair_list, store, store, tmp_path / "table", FAST, chunk_size=CHUNK, progress=False)
    (out / chunk_file(2)).unlink()
    counted = count_chunks(monkeypatch)
    verify_pairs(pair_list, store, store, out, FAST, chunk_size=CHUNK, progress=False)
    assert counted == [str(out / chunk_file(2))]
    pd.testing.assert_frame_equal(read_pair_table(out), reference)


def test_other_run_in_the_same_folder_is_refused(store, pair_list, tmp_path):
    out = verify_pairs(pair_list.iloc[:3], store, store, tmp_path / "table", FAST, chunk_size=CHUNK, progress=False)
    with pytest.raises(UserInputError, match=r"config\.residual: 6\.0 on disk vs 4\.0 requested"):
        verify_pairs(pair_list.iloc[:3], store, store, out, verify_config("fast", residual=4.0), chunk_size=CHUNK,
                     progress=False)
    with pytest.raises(UserInputError, match="pairs_sha256"):
        verify_pairs(pair_list.iloc[1:4], store, store, out, FAST, chunk_size=CHUNK, progress=False)
    with pytest.raises(UserInputError, match="chunk_size"):
        verify_pairs(pair_list.iloc[:3], store, store, out, FAST, chunk_size=2, progress=False)


def test_two_workers_give_the_same_table(store, pair_list, reference, tmp_path):
    out = verify_pairs(pair_list, store, store, tmp_path / "table", FAST, workers=2, chunk_size=CHUNK, progress=False)
    pd.testing.assert_frame_equal(read_pair_table(out), reference)


def test_missing_id_is_named(store, pair_list, tmp_path):
    unknown = "0123456789abcdef"
    assert unknown not in store
    bad = pd.DataFrame({"query_id": [store.ids[0]], "candidate_id": [unknown]})
    with pytest.raises(UserInputError, match=f"candidate_id {unknown} has no local features"):
        verify_pairs(bad, store, store, tmp_path / "table", FAST, progress=False)


def test_empty_pair_list_gives_an_empty_table(store, tmp_path):
    empty = pd.DataFrame({"query_id": [], "candidate_id": []})
    table = read_pair_table(verify_pairs(empty, store, store, tmp_path / "table", FAST, progress=False))
    assert len(table) == 0 and list(table.columns)[:2] == ["query_id", "candidate_id"]


def test_read_pairs_checks_columns_and_ids(pair_list, tmp_path):
    csv = tmp_path / "pairs.csv"
    pair_list.to_csv(csv, index=False)
    pd.testing.assert_frame_equal(read_pairs(csv), pair_list[["query_id", "candidate_id"]])
    parquet = tmp_path / "pairs.parquet"
    pair_list.to_parquet(parquet)
    pd.testing.assert_frame_equal(read_pairs(parquet), pair_list[["query_id", "candidate_id"]])

    missing = tmp_path / "missing.csv"
    pair_list[["query_id", "note"]].to_csv(missing, index=False)
    with pytest.raises(UserInputError, match=f"{missing}:1: missing column\\(s\\) candidate_id"):
        read_pairs(missing)
    invalid = tmp_path / "invalid.csv"
    pair_list.assign(candidate_id=["x" * 16] + pair_list["candidate_id"].tolist()[1:]).to_csv(invalid, index=False)
    with pytest.raises(UserInputError, match=f"{invalid}:2: invalid candidate_id 'xxxxxxxxxxxxxxxx'"):
        read_pairs(invalid)
    with pytest.raises(UserInputError, match="not found"):
        read_pairs(tmp_path / "absent.csv")


# --------------------------------------------------------------------------------------------
# knn_pairs

IDS = [f"{i:016x}" for i in range(5)]
# Unit vectors at these angles (degrees); no two pairs at the same angular distance, so no ties.
ANGLES = [0, 10, 25, 90, 105]
LABELS = np.array([1, 1, 2, 1, 2])


def at(*degrees: float) -> np.ndarray:
    radians = np.deg2rad(degrees)
    return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)


def neighbours(frame: pd.DataFrame) -> dict[int, list[tuple[int, int]]]:
    """query -> [(candidate, rank)], ids shown as their index in IDS."""
    found: dict[int, list[tuple[int, int]]] = {}
    for row in frame.itertuples():
        found.setdefault(IDS.index(row.query_id), []).append((IDS.index(row.candidate_id), row.rank))
    return found


def test_knn_pairs_nearest_others_in_query_order():
    emb = at(*ANGLES)
    frame = knn_pairs(IDS, emb, IDS, emb, k=2)
    assert list(frame.columns) == ["query_id", "candidate_id", "similarity", "rank"]
    assert neighbours(frame) == {0: [(1, 1), (2, 2)], 1: [(0, 1), (2, 2)], 2: [(1, 1), (0, 2)],
                                 3: [(4, 1), (2, 2)], 4: [(3, 1), (2, 2)]}
    np.testing.assert_allclose(frame["similarity"].iloc[:2], np.cos(np.deg2rad([10, 25])), atol=1e-6)


def test_knn_pairs_beyond_this_machine_needs_a_shared_out_folder():
    class Cluster:  # any executor that is not this machine's process pool
        name = "ray"

        def run(self, *args, **kwargs):
            raise AssertionError("nothing may run before the folder is known to be shared")

    emb = at(*ANGLES)
    with pytest.raises(ValueError, match="needs `out`, a folder its workers share"):
        knn_pairs(IDS, emb, IDS, emb, k=2, executor=Cluster())


def test_knn_pairs_same_label_and_max_per_query():
    emb = at(*ANGLES)
    same = knn_pairs(IDS, emb, IDS, emb, k=3, same_label=(LABELS, LABELS))
    # ranks stay those of the unfiltered list; query 2 has no same-label image among its 3 nearest
    assert neighbours(same) == {0: [(1, 1), (3, 3)], 1: [(0, 1), (3, 3)], 3: [(1, 3)], 4: [(2, 2)]}
    capped = knn_pairs(IDS, emb, IDS, emb, k=3, same_label=(LABELS, LABELS), max_per_query=1)
    assert neighbours(capped) == {0: [(1, 1)], 1: [(0, 1)], 3: [(1, 3)], 4: [(2, 2)]}
    assert neighbours(knn_pairs(IDS, emb, IDS, emb, k=3, max_per_query=2)) == neighbours(
        knn_pairs(IDS, emb, IDS, emb, k=2))


def test_knn_pairs_self_and_separate_query_sets():
    emb = at(*ANGLES)
    with_self = knn_pairs(IDS, emb, IDS, emb, k=1, exclude_self=False)
    assert neighbours(with_self) == {q: [(q, 1)] for q in range(5)}
    np.testing.assert_allclose(with_self["similarity"], 1.0, atol=1e-6)
    # a query that is not in the database loses nothing to self-exclusion
    frame = knn_pairs(["f" * 16], at(20), IDS, emb, k=2)
    assert frame["candidate_id"].tolist() == [IDS[2], IDS[1]] and frame["rank"].tolist() == [1, 2]


def test_knn_pairs_sends_its_workers_the_ids_as_bytes(monkeypatch):
    """The sink that every worker gets holds 16 bytes a GLDv2 id (numpy's <U16: 64), and a
    split searched against itself sends one id array, not two."""
    from lmkcomp.search import sharded

    sinks = []
    search_shards = sharded.search_shards
    monkeypatch.setattr(pairs_module, "search_shards",
                        lambda queries, database, shards, sink, *args, **kwargs:
                        (sinks.append(sink), search_shards(queries, database, shards, sink, *args, **kwargs))[1])
    emb = at(*ANGLES)
    expected = {0: [(1, 1), (2, 2)], 1: [(0, 1), (2, 2)], 2: [(1, 1), (0, 2)], 3: [(4, 1), (2, 2)],
                4: [(3, 1), (2, 2)]}
    assert neighbours(knn_pairs(IDS, emb, IDS, emb, k=2)) == expected
    assert sinks[0].query_ids.dtype == np.dtype("S16") and sinks[0].db_ids is sinks[0].query_ids
    frame = knn_pairs(IDS[:1], emb[:1], list(IDS), emb, k=2)
    assert frame["candidate_id"].tolist() == [IDS[1], IDS[2]] and isinstance(frame["query_id"][0], str)
    assert sinks[1].query_ids.nbytes == 16 and sinks[1].db_ids.nbytes == 16 * len(IDS)


def test_knn_pairs_streams_store_rows_with_the_array_result(tmp_path, monkeypatch):
    from lmkcomp.features.store import EmbeddingShards, EmbeddingStore, EmbeddingWriter, StoreRows
    from lmkcomp.search.exact import ExactSearcher

    rng = np.random.default_rng(3)
    emb = rng.standard_normal((90, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids = [f"{i:016x}" for i in range(90)]
    writer = EmbeddingWriter(tmp_path / "train", ids[::-1], 8, dtype="float32", shard_size=16)
    for k, rows in writer.pending_shards():
        writer.write_shard(k, emb[::-1][rows])
    writer.finish()
    store = EmbeddingStore(tmp_path / "train")
    labels = rng.integers(0, 6, 90)
    expected = knn_pairs(ids, emb, ids, emb, k=7, same_label=(labels, labels), max_per_query=3)

    # on the class the workers open (a store without its ids), which EmbeddingStore extends
    monkeypatch.setattr(EmbeddingShards, "array", lambda *_: pytest.fail("the whole store was read"))
    read = EmbeddingShards.read
    largest = []
    monkeypatch.setattr(EmbeddingShards, "read", lambda self, a, b, dtype=np.float32: (largest.append(b - a),
                                                                                    read(self, a, b, dtype))[1])
    monkeypatch.setattr(pairs_module, "KNN_SHARD_ROWS", 20)
    monkeypatch.setattr(ExactSearcher, "block_rows", lambda self, queries: 25)  # a budget of 25 rows
    rows = StoreRows(store, store.position(ids))  # the store holds the ids in reverse order
    streamed = knn_pairs(ids, rows, ids, rows, k=7, same_label=(labels, labels), max_per_query=3)
    pd.testing.assert_frame_equal(streamed, expected)
    assert max(largest) <= 25  # query blocks of 20 rows, database blocks of 25
