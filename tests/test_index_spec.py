"""One index-spec vocabulary for the searchers, the centroid index and the DELF feature index:
an unknown spec is one line listing the known forms, and each user still takes the specs it
took before."""

from __future__ import annotations

import numpy as np
import pytest

from delf_baseline.index import FlatIndex, IvfPqIndex, PcaKdTreeIndex, feature_index_class
from lmkcomp.centroid.build import build_centroids
from lmkcomp.centroid.index import CentroidIndex, centroid_factory
from lmkcomp.errors import UserInputError
from lmkcomp.index_spec import IndexSpec, is_faiss_factory, parse_index_spec
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
    (feature_index_class, "unknown DELF feature index 'nunpy'; known: flat, pca10-kdtree, pq"),
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


def test_the_delf_feature_index_takes_its_three_kinds():
    assert [feature_index_class(kind) for kind in ("flat", "pq", "pca10-kdtree")] == [FlatIndex, IvfPqIndex,
                                                                                      PcaKdTreeIndex]
