"""One index-spec vocabulary for the searchers, the centroid index and the DELF feature index:
an unknown spec is one line listing the known forms, and each user still takes the specs it
took before."""

from __future__ import annotations

import numpy as np
import pytest

from delf_baseline.index import (
    FactoryIndex,
    FlatIndex,
    IvfPqIndex,
    PcaKdTreeIndex,
    build_database_index,
    feature_index_class,
    load_database_index,
    open_database_index,
)
from lmkcomp.bench.centroid_vs_delf import BenchSettings, sweep_delf
from lmkcomp.centroid.build import build_centroids
from lmkcomp.centroid.index import CentroidIndex, centroid_factory
from lmkcomp.errors import UserInputError
from lmkcomp.index_spec import IndexSpec, is_faiss_factory, parse_index_spec
from lmkcomp.local.record import LocalFeatures
from lmkcomp.local.store import LocalFeatureStore, LocalFeatureWriter
from lmkcomp.search import create_searcher

BACKENDS = {"flat": None, "torch": "DEVICE"}


def unit_rows(count: int, dim: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_the_parser_reads_backends_arguments_and_factory_strings():
    assert parse_index_spec("flat", BACKENDS, "spec") == IndexSpec("flat")
    assert parse_index_spec("torch:cuda:1", BACKENDS, "spec") == IndexSpec("torch", "cuda:1")
    assert parse_index_spec("Flat", BACKENDS, "spec") == IndexSpec("faiss", "Flat")
    assert parse_index_spec("faiss:HNSW32", BACKENDS, "spec") == IndexSpec("faiss", "HNSW32")
    assert parse_index_spec("PCA64,IVF256,PQ16", BACKENDS, "spec") == IndexSpec("faiss", "PCA64,IVF256,PQ16")
    assert is_faiss_factory("IVF1024,PQ32x8") and not is_faiss_factory("IVF1024,pq32") and not is_faiss_factory("")
    with pytest.raises(UserInputError, match="the flat backend takes nothing after ':'"):
        parse_index_spec("flat:cpu", BACKENDS, "spec")
    with pytest.raises(UserInputError, match="unknown spec 'Flat'; known: flat, torch\\[:DEVICE\\]$"):
        parse_index_spec("Flat", BACKENDS, "spec", factory=False)
    with pytest.raises(UserInputError, match="unknown spec 'faiss:'"):
        parse_index_spec("faiss:", BACKENDS, "spec")
    with pytest.raises(UserInputError, match="empty spec"):
        parse_index_spec(" ", BACKENDS, "spec")


@pytest.mark.parametrize("build, message", [
    (lambda spec: create_searcher(spec, 8),
     "unknown searcher spec 'nunpy'; known: faiss[:FACTORY], flat, numpy, torch[:DEVICE], or a faiss factory "
     "string, bare or as faiss:FACTORY (Flat, IVF1024,Flat, IVF1024,PQ32, HNSW32, ...)"),
    (lambda spec: CentroidIndex(unit_rows(4, 8, 0), np.arange(4), spec),
     "unknown centroid index spec 'nunpy'; known: flat, or a faiss factory string"),
    (feature_index_class,
     "unknown DELF feature index 'nunpy'; known: faiss[:FACTORY], flat, pca10-kdtree, pq, or a faiss factory "
     "string, bare or as faiss:FACTORY (Flat, IVF1024,Flat, IVF1024,PQ32, HNSW32, ...)"),
])
def test_a_typo_is_one_line_listing_the_known_forms(build, message):
    with pytest.raises(UserInputError) as raised:
        build("nunpy")
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


@pytest.mark.parametrize("spec, backend", [
    ("flat", "flat"), ("numpy", "numpy"), ("torch", "torch"), ("torch:cpu", "torch"), ("faiss", "faiss"),
    ("faiss:Flat", "faiss"), ("Flat", "faiss"), ("IVF4,Flat", "faiss"), ("HNSW8", "faiss"), ("IVF4,PQ4", "faiss"),
])
def test_searchers_take_the_specs_they_took(spec, backend):
    database, queries = unit_rows(600, 8, 1), unit_rows(5, 8, 2)
    searcher = create_searcher(spec, 8, **({"nprobe": 4} if spec.startswith("IVF") else {}))
    assert searcher.settings()["backend"] in ((backend, "numpy") if backend == "flat" else (backend,))
    if searcher.needs_training:
        searcher.train(database)
    if getattr(searcher, "streams", False):
        searcher.attach(lambda rows: database[rows], len(database))
    else:
        searcher.add(database)
    _, indices = searcher.search(queries, 1)
    if not spec.startswith(("IVF4,PQ", "HNSW")):  # PQ codes and HNSW are approximate
        np.testing.assert_array_equal(indices[:, 0], np.argmax(queries @ database.T, axis=1))


@pytest.mark.parametrize("spec, factory", [
    ("Flat", "Flat"), ("flat", "Flat"), ("faiss:Flat", "Flat"), ("HNSW8", "HNSW8"), ("IVF2,Flat", "IVF2,Flat"),
])
def test_the_centroid_index_takes_faiss_factory_strings_and_flat(spec, factory):
    assert centroid_factory(spec) == factory
    centroids = unit_rows(40, 8, 3)
    index = CentroidIndex(centroids, np.arange(40), spec)
    landmarks, _ = index.top_landmarks(centroids[:6], 1)
    if spec.lower().endswith("flat") and not spec.startswith("IVF"):
        np.testing.assert_array_equal(landmarks[:, 0], np.arange(6))
    assert index.faiss_index.ntotal == 40


def test_a_centroid_build_refuses_an_unknown_spec_before_clustering():
    with pytest.raises(UserInputError, match="unknown centroid index spec 'nunpy'"):
        build_centroids(np.array([0, 0, 1]), unit_rows(3, 8, 4), index_spec="nunpy", progress=False)


def test_the_delf_feature_index_takes_its_three_kinds_and_faiss_factory_strings():
    assert [feature_index_class(kind) for kind in ("flat", "pq", "pca10-kdtree")] == [FlatIndex, IvfPqIndex,
                                                                                      PcaKdTreeIndex]
    assert {feature_index_class(spec) for spec in ("Flat", "IVF4,Flat", "faiss:HNSW8", "faiss")} == {FactoryIndex}


DELF_DIM = 8
#: images of the hand-made DELF database: 5 images of 40 features, 3 without features between them
DELF_COUNTS = (40, 0, 40, 40, 0, 40, 0, 40)


@pytest.fixture(scope="module")
def delf_store(tmp_path_factory) -> LocalFeatureStore:
    """Hand-made local features: 200 random unit descriptors of dimension 8 over 8 images."""
    descriptors = np.split(unit_rows(sum(DELF_COUNTS), DELF_DIM, 5), np.cumsum(DELF_COUNTS)[:-1])
    ids = [f"{i:016x}" for i in range(1, len(DELF_COUNTS) + 1)]
    records = [LocalFeatures(np.zeros((len(d), 2)), d, np.ones(len(d)), np.ones(len(d))) for d in descriptors]
    writer = LocalFeatureWriter(tmp_path_factory.mktemp("delf-store"), ids, DELF_DIM, "handmade", shard_size=3)
    for shard, rows in writer.pending_shards():
        writer.write_shard(shard, records[rows])
    writer.finish()
    return LocalFeatureStore(writer.directory)


@pytest.mark.parametrize("spec, options, settings", [
    ("IVF4,Flat", {"nprobe": 4}, {"factory": "IVF4,Flat", "nprobe": 4}),  # every list scanned: exact
    ("faiss:HNSW8", {}, {"factory": "HNSW8"}),
])
def test_a_delf_index_from_a_faiss_factory_finds_the_flat_neighbours_after_a_reload(delf_store, tmp_path, spec,
                                                                                    options, settings):
    queries = unit_rows(12, DELF_DIM, 6)
    flat = build_database_index(delf_store, "flat", progress=False)
    index = build_database_index(delf_store, spec, progress=False, train_size=120, **options)
    assert isinstance(index.features, FactoryIndex) and index.features.settings() == settings
    index.save(tmp_path / "index")
    loaded = load_database_index(tmp_path / "index")
    assert loaded.kind == "faiss" and loaded.features.settings() == settings and loaded.request == index.request
    np.testing.assert_array_equal(loaded.image_rows, flat.image_rows)
    expected_distances, expected = flat.features.search(queries, 5)
    for built in (index, loaded):
        distances, positions = built.features.search(queries, 5)
        np.testing.assert_array_equal(positions, expected)
        np.testing.assert_allclose(distances, expected_distances, rtol=1e-5)
    # the factory spelled bare or as faiss:FACTORY asks for the same index: reused, not refused
    bare = spec.removeprefix("faiss:")
    reused = open_database_index(tmp_path / "index", delf_store, f"faiss:{bare}", progress=False, train_size=120,
                                 **options)
    assert reused.request["kind"] == bare


@pytest.mark.parametrize("spec, options, message", [
    ("IVF512,Flat", {}, "faiss index 'IVF512,Flat': IVF512 needs at least 512 training vectors "
                        "(one per inverted list), got 200; lower the number in IVF512"),
    ("IVF4,PQ3", {}, "faiss index 'IVF4,PQ3' not understood: "),
    ("HNSW8", {"nprobe": 4}, "nprobe applies to IVF indexes only, not to faiss index 'HNSW8'"),
    ("HNSW8", {"nlist": 4}, "HNSW8 index: FactoryIndex.build() got an unexpected keyword argument 'nlist'"),
])
def test_a_bad_faiss_factory_for_the_delf_index_reads_as_the_searchers_do(delf_store, spec, options, message):
    with pytest.raises(UserInputError) as raised:
        build_database_index(delf_store, spec, progress=False, **options)
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)


def test_the_centroid_vs_delf_bench_takes_the_delf_index_vocabulary():
    with pytest.raises(UserInputError, match="unknown DELF feature index 'nunpy'"):
        BenchSettings(delf_index="nunpy")
    assert BenchSettings(delf_index="IVF2,Flat").delf_index == "IVF2,Flat"
    # its database-size sweep builds the factory's index: 4 images of 30 features
    [row] = sweep_delf((4,), 30, "IVF2,Flat", candidates=2, queries=2, seed=0, progress=False)
    assert row["features"] == 120 and row["memory_bytes"] >= 120 * 40 * 4 and row["knn_ms"] > 0
