"""Search backends: exact ones equal a full sort of the similarity matrix (ties by lower index),
blocking changes nothing and bounds the blocks, approximate ones reach a recall bound."""

from __future__ import annotations

import sys

import faiss
import numpy as np
import pytest
import torch

from lmkcomp.errors import UserInputError
from lmkcomp.index_spec import IndexSpec
from lmkcomp.search import create_searcher, exact_search, index_database
from lmkcomp.search.exact import block_top_k, database_block_rows
from lmkcomp.search.searchers import parse_spec

EXACT_SPECS = ("numpy", "torch:cpu", "Flat", "flat")


@pytest.fixture(autouse=True)
def one_faiss_thread():
    """faiss's OpenMP k-means busy-waits; on a shared 2-core machine a second thread makes it crawl."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


def brute_force(queries: np.ndarray, database: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The whole similarity matrix, each row sorted by (score desc, index asc), first k."""
    similarity = queries.astype(np.float64) @ database.astype(np.float64).T
    order = np.array([sorted(range(len(database)), key=lambda j: (-row[j], j))[:k] for row in similarity])
    return np.take_along_axis(similarity, order, axis=1), order


def tied_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Small-integer vectors (exact float products, many equal scores) with duplicated database rows."""
    rng = np.random.default_rng(seed)
    database = rng.integers(-2, 3, size=(120, 6)).astype(np.float32)
    database = np.concatenate([database, database[::3]])
    return rng.integers(-2, 3, size=(23, 6)).astype(np.float32), database


def clustered_unit_vectors(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """300 tight clusters of 10 database vectors and one query near each of the first 100 centres:
    a query's true 10 nearest neighbours are its cluster, well apart from the rest."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((300, 32)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def around(points: np.ndarray, count: int) -> np.ndarray:
        x = points.repeat(count, axis=0) + 0.05 * rng.standard_normal((len(points) * count, 32)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    return around(centres[:100], 1), around(centres, 10)


def build(spec: str, database: np.ndarray, **options):
    searcher = create_searcher(spec, database.shape[1], **options)
    return index_database(searcher, lambda rows: database[rows], len(database), block_rows=50, progress=False)


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(a, b)) / exact.shape[1] for a, b in zip(found, exact)]))


@pytest.mark.parametrize("k", [1, 5, 40, 160])
def test_exact_search_equals_brute_force_with_ties(k):
    queries, database = tied_data()
    expected_scores, expected = brute_force(queries, database, k)
    scores, indices = exact_search(queries, database, k, query_block=7, database_block=33)
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_array_equal(scores, expected_scores)
    assert scores.dtype == np.float32 and indices.dtype == np.int64


@pytest.mark.parametrize("spec", EXACT_SPECS)
@pytest.mark.parametrize("k", [1, 7, 40, 160, 500])
def test_exact_searchers_equal_brute_force_with_ties(spec, k):
    queries, database = tied_data(1)
    expected_scores, expected = brute_force(queries, database, min(k, len(database)))
    options = {} if spec in ("Flat", "flat") else {"query_block": 5, "database_block": 17}
    scores, indices = build(spec, database, **options).search(queries, k)
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_array_equal(scores, expected_scores)


@pytest.mark.parametrize("spec", EXACT_SPECS)
def test_exact_searchers_agree_on_random_data_whatever_the_blocks(spec):
    rng = np.random.default_rng(2)
    database = rng.standard_normal((500, 16)).astype(np.float32)
    queries = rng.standard_normal((40, 16)).astype(np.float32)
    _, expected = exact_search(queries, database, 30, query_block=4096, database_block=4096)
    options = {} if spec in ("Flat", "flat") else {"query_block": 3, "database_block": 64}
    scores, indices = build(spec, database, **options).search(queries, 30)
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ database.T, expected, axis=1), rtol=1e-5, atol=1e-5)


def test_torch_multiplies_blocks_no_larger_than_asked(monkeypatch):
    rng = np.random.default_rng(3)
    database = rng.standard_normal((300, 8)).astype(np.float32)
    queries = rng.standard_normal((50, 8)).astype(np.float32)
    shapes = []
    matmul = torch.mm

    def counting_mm(a, b):
        shapes.append((a.shape[0], b.shape[1]))
        return matmul(a, b)

    searcher = create_searcher("torch:cpu", 8, query_block=16, database_block=64)
    searcher.add(database)
    monkeypatch.setattr(torch, "mm", counting_mm)
    _, indices = searcher.search(queries, 10)
    # 4 query blocks (16, 16, 16, 2) x 5 database blocks (64 x 4, 44): every pair once
    assert len(shapes) == 20 and max(rows for rows, _ in shapes) == 16 and max(cols for _, cols in shapes) == 64
    np.testing.assert_array_equal(indices, exact_search(queries, database, 10)[1])


def test_flat_with_faiss_kernel_settles_ties_like_brute_force(monkeypatch):
    from lmkcomp.search import faiss_backend

    # every query block goes to faiss.knn, whose choice among tied rows is arbitrary
    monkeypatch.setattr(faiss_backend, "FAISS_MIN_QUERIES", 1)
    queries, database = tied_data(5)
    for k in (1, 9, 60):
        expected_scores, expected = brute_force(queries, database, k)
        scores, indices = build("flat", database, database_block=37).search(queries, k)
        np.testing.assert_array_equal(indices, expected)
        np.testing.assert_array_equal(scores, expected_scores)


def test_block_top_k_prefilter_equals_a_full_sort():
    rng = np.random.default_rng(6)
    # rounded scores: many ties at and across the k-th place; wide rows take the group prefilter
    similarity = np.round(rng.standard_normal((9, 700)), 1).astype(np.float32)
    for k in (1, 10, 21, 22, 699, 700):
        scores, columns = block_top_k(similarity, k)
        order = np.array([sorted(range(700), key=lambda j: (-row[j], j))[:k] for row in similarity])
        np.testing.assert_array_equal(columns, order)
        np.testing.assert_array_equal(scores, np.take_along_axis(similarity, order, axis=1))


def test_memory_budget_sets_the_database_block():
    # 256 MiB / (4096 queries x 6 bytes + 2 blocks x 512 dims x 4 bytes) per database row
    assert database_block_rows(4096, 512, 256) == 268435456 // 28672 == 9362
    searcher = create_searcher("numpy", 512, memory_mb=64, query_block=1024)
    # half the budget is the working memory of a search, half for a database small enough to keep
    assert searcher.database_block == 32 * 2**20 // (1024 * 6 + 2 * 2048)
    assert create_searcher("flat", 8, database_block=5).database_block == 5
    with pytest.raises(UserInputError, match="memory_mb must be positive"):
        create_searcher("numpy", 8, memory_mb=0)


def test_a_database_that_fits_half_the_budget_is_read_once_and_kept():
    database = np.random.default_rng(9).standard_normal((100, 8)).astype(np.float32)
    reads = []

    def read_rows(rows):
        reads.append(len(rows))
        return database[rows]

    # 100 x 8 float32 rows are 3,200 bytes: kept with a budget of 6,400 bytes, streamed below it
    kept = create_searcher("numpy", 8, memory_mb=6400 / 2**20, query_block=4)
    kept.attach(read_rows, 100)
    read_at_attach = sum(reads)
    for _ in range(2):
        kept.search(database[:10], 3)
    assert read_at_attach == 100 and sum(reads) == 100
    reads.clear()
    streamed = create_searcher("numpy", 8, memory_mb=6399 / 2**20, query_block=4)
    streamed.attach(read_rows, 100)
    assert sum(reads) == 0
    np.testing.assert_array_equal(streamed.search(database[:10], 3)[1], kept.search(database[:10], 3)[1])
    # 10 queries in blocks of 4: three passes over the database
    assert sum(reads) == 300


def test_numpy_keeps_added_arrays_in_bounded_blocks():
    database = np.random.default_rng(4).standard_normal((300, 8)).astype(np.float32)
    searcher = create_searcher("numpy", 8, database_block=64)
    for start in range(0, 300, 50):
        searcher.add(database[start:start + 50])
    # each added array of 50 rows is kept whole since it fits in 64 rows
    assert [len(block) for block in searcher.blocks()] == [50] * 6
    assert searcher.count == 300


def test_ivf_flat_scanning_every_list_is_exact_and_nprobe_matters():
    queries, database = clustered_unit_vectors()
    _, exact = exact_search(queries, database, 10)
    _, found = build("IVF16,Flat", database, nprobe=16).search(queries, 10)
    assert recall(found, exact) == 1.0
    _, found = build("IVF16,Flat", database, nprobe=1).search(queries, 10)
    assert recall(found, exact) < 1.0


def test_ivf_pq_recall_on_clustered_data():
    queries, database = clustered_unit_vectors()
    _, exact = exact_search(queries, database, 10)
    searcher = build("IVF16,PQ8", database, nprobe=4)
    assert searcher.settings() == {"backend": "faiss", "factory": "IVF16,PQ8", "nprobe": 4, "train_size": 32768}
    scores, found = searcher.search(queries, 10)
    assert recall(found, exact) >= 0.9
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_training_sample_is_seeded_and_bounded():
    database = np.random.default_rng(5).standard_normal((400, 8)).astype(np.float32)
    seen = []

    def read_rows(rows):
        seen.append(rows)
        return database[rows]

    for _ in range(2):
        index_database(create_searcher("IVF4,Flat", 8, train_size=100), read_rows, 400, block_rows=150, seed=7,
                       progress=False)
    np.testing.assert_array_equal(seen[0], seen[4])  # same seed, same sample
    assert len(seen[0]) == 100 and np.all(np.diff(seen[0]) > 0)
    assert [len(rows) for rows in seen[1:4]] == [150, 150, 100]


def test_ivf_rows_missing_neighbours_end_with_minus_one():
    database = np.eye(8, dtype=np.float32)[[0] * 3 + [1] * 60]  # one list holds only 3 vectors
    searcher = build("IVF2,Flat", database, nprobe=1, train_size=63)
    scores, indices = searcher.search(np.eye(8, dtype=np.float32)[:1], 5)
    np.testing.assert_array_equal(indices, [[0, 1, 2, -1, -1]])
    assert np.all(np.isneginf(scores[0, 3:]))


def test_specs_pick_backends():
    assert parse_spec("numpy") == IndexSpec("numpy", "")
    assert parse_spec("torch:cuda") == IndexSpec("torch", "cuda")
    assert parse_spec("faiss:IVF64,PQ8") == IndexSpec("faiss", "IVF64,PQ8")
    assert parse_spec("IVF64,PQ8") == IndexSpec("faiss", "IVF64,PQ8")
    assert create_searcher("torch:cpu", 4).device == torch.device("cpu")
    assert create_searcher("faiss:Flat", 4).settings() == {"backend": "faiss", "factory": "Flat"}
    assert create_searcher("flat", 4).settings() == {"backend": "flat"}


def test_without_faiss_flat_is_numpy_and_faiss_specs_say_what_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` now raises ImportError
    monkeypatch.delitem(sys.modules, "lmkcomp.search.faiss_backend", raising=False)
    assert create_searcher("flat", 4).settings() == {"backend": "numpy"}
    with pytest.raises(UserInputError, match="faiss searchers need faiss"):
        create_searcher("IVF16,Flat", 4)


@pytest.mark.parametrize("spec, options, message", [
    ("IVFx,Flat", {}, "faiss index 'IVFx,Flat' not understood"),
    ("Flat", {"nprobe": 4}, "nprobe applies to IVF indexes only"),
    ("numpy", {"nprobe": 4}, "the numpy searcher has no option nprobe"),
    ("numpy:cuda", {}, "takes nothing after ':'"),
    ("torch:cpu", {"device": "cuda"}, "sets device 'cpu' but the options say 'cuda'"),
    ("Flat", {"device": "gpu"}, "unknown device 'gpu'"),
    ("", {}, "empty searcher spec"),
])
def test_bad_specs_and_options_are_user_errors(spec, options, message):
    with pytest.raises(UserInputError, match=message):
        create_searcher(spec, 8, **options)


@pytest.mark.skipif(faiss.get_num_gpus() > 0 or torch.cuda.is_available(), reason="checks the CPU-only messages")
def test_a_gpu_requested_without_one_is_a_user_error():
    with pytest.raises(UserInputError, match="faiss sees 0 GPUs"):
        create_searcher("Flat", 8, device="cuda")
    with pytest.raises(UserInputError, match="torch sees no CUDA GPU"):
        create_searcher("torch:cuda", 8)


def test_faiss_gpu_k_limit_is_refused_clearly():
    searcher = build("Flat", np.random.default_rng(6).standard_normal((3000, 4)).astype(np.float32))
    searcher.gpu = 0  # as if the index lived on a GPU: the check happens before faiss is called
    with pytest.raises(UserInputError, match="at most 2048 neighbours"):
        searcher.search(np.zeros((1, 4), dtype=np.float32), 2048)
    searcher.gpu = None
    assert searcher.search(np.ones((1, 4), dtype=np.float32), 2048)[1].shape == (1, 2048)
