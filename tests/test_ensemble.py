"""Ensembles of embedding stores and PCA-whitening."""

from __future__ import annotations

import numpy as np
import pytest

from lmkcomp.errors import UserInputError
from lmkcomp.features.ensemble import combine_embeddings, ensemble_stores
from lmkcomp.features.store import EmbeddingStore, EmbeddingWriter
from lmkcomp.features.whitening import PCAWhitening, fit_pca_whitening

IDS = [f"{i:016x}" for i in range(3)]


def make_store(directory, rows, ids=IDS, shard_size=2) -> EmbeddingStore:
    rows = np.asarray(rows, dtype=np.float32)
    writer = EmbeddingWriter(directory, ids, rows.shape[1], dtype="float32", shard_size=shard_size)
    for k, part in writer.pending_shards():
        writer.write_shard(k, rows[part])
    writer.finish()
    return EmbeddingStore(directory)


@pytest.fixture
def two_stores(tmp_path) -> list[EmbeddingStore]:
    a = make_store(tmp_path / "a", [[3, 4], [1, 0], [0, 2]])
    b = make_store(tmp_path / "b", [[0, 1], [1, 1], [5, 0]])
    return [a, b]


def test_weighted_ensemble_by_hand(tmp_path, two_stores):
    # normalised a: (.6, .8), (1, 0), (0, 1); normalised b: (0, 1), (1/r2, 1/r2), (1, 0).
    # With weights 1 and 2 every concatenation has squared norm 1 + 4 = 5.
    r2, r5 = np.sqrt(2), np.sqrt(5)
    expected = np.array([[0.6, 0.8, 0.0, 2.0],
                         [1.0, 0.0, 2 / r2, 2 / r2],
                         [0.0, 1.0, 2.0, 0.0]]) / r5
    out = ensemble_stores(tmp_path / "ens", two_stores, weights=[1, 2], dtype="float32", block_rows=2)
    assert out.ids == IDS and out.dim == 4 and out.dtype == np.float32
    np.testing.assert_allclose(out.array(), expected, rtol=1e-6)
    assert [part["weight"] for part in out.meta["ensemble"]] == [1.0, 2.0]
    assert out.meta["whitening"] is None


def test_default_weights_are_equal(tmp_path, two_stores):
    out = ensemble_stores(tmp_path / "ens", two_stores, dtype="float16")
    expected = np.array([[0.6, 0.8, 0.0, 1.0], [1.0, 0.0, 2 ** -0.5, 2 ** -0.5], [0.0, 1.0, 1.0, 0.0]]) / np.sqrt(2)
    assert out.dtype == np.float16
    np.testing.assert_allclose(out.array(), expected, atol=1e-3)


def test_rerun_resumes_and_other_weights_are_refused(tmp_path, two_stores):
    first = ensemble_stores(tmp_path / "ens", two_stores, weights=[1, 2]).array()
    np.testing.assert_array_equal(ensemble_stores(tmp_path / "ens", two_stores, weights=[1, 2]).array(), first)
    with pytest.raises(UserInputError, match="meta 'ensemble'"):
        ensemble_stores(tmp_path / "ens", two_stores, weights=[1, 3])


@pytest.mark.parametrize("weights, message", [([1.0], "1 ensemble weights for 2"),
                                              ([1, 2, 3], "3 ensemble weights for 2"),
                                              ([1, 0], "weight 1 must be"),
                                              ([1, float("nan")], "weight 1 must be")])
def test_bad_weights_are_rejected(tmp_path, two_stores, weights, message):
    with pytest.raises(UserInputError, match=message):
        ensemble_stores(tmp_path / "ens", two_stores, weights=weights)
    assert not (tmp_path / "ens").exists()


def test_misaligned_stores_are_rejected(tmp_path, two_stores):
    other = make_store(tmp_path / "c", [[1, 0], [0, 1], [1, 1]], ids=[IDS[0], IDS[2], IDS[1]])
    with pytest.raises(UserInputError, match="not aligned: row 1"):
        ensemble_stores(tmp_path / "ens", [two_stores[0], other])
    with pytest.raises(UserInputError, match="no embedding stores"):
        ensemble_stores(tmp_path / "ens", [])


def test_ensemble_with_whitening(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"{i:016x}" for i in range(40)]
    a = make_store(tmp_path / "a", rng.normal(size=(40, 3)), ids=ids, shard_size=16)
    b = make_store(tmp_path / "b", rng.normal(size=(40, 2)), ids=ids, shard_size=7)
    concatenated = combine_embeddings([a.array(), b.array()], [1.0, 0.5])
    whitening = fit_pca_whitening(concatenated, dim=3)

    out = ensemble_stores(tmp_path / "ens", [a, b], weights=[1.0, 0.5], whitening=whitening, dtype="float32",
                          block_rows=5)
    assert out.dim == 3
    np.testing.assert_allclose(out.array(), whitening.apply(concatenated), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out.array(), axis=1), 1.0, rtol=1e-5)
    assert isinstance(out.meta["whitening"], str)

    with pytest.raises(UserInputError, match="whitening expects 4-d descriptors, the ensemble is 5-d"):
        ensemble_stores(tmp_path / "other", [a, b], whitening=fit_pca_whitening(rng.normal(size=(10, 4))))


# --------------------------------------------------------------------------------------------
# PCA-whitening


def correlated_gaussian(count: int = 20000, dim: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(dim, dim)) * np.linspace(3.0, 0.2, dim)
    # a mean far larger than the spread, as for non-negative pooled descriptors
    return rng.normal(size=(count, dim)) @ mixing.T + 50.0


def test_whitened_training_data_has_identity_covariance():
    x = correlated_gaussian()
    assert np.abs(np.cov(x.T) - np.diag(np.diag(np.cov(x.T)))).max() > 0.5  # really correlated
    whitening = fit_pca_whitening(x)
    z = whitening.project(x.astype(np.float64))
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-8)
    np.testing.assert_allclose(np.cov(z.T, bias=True), np.eye(6), atol=1e-8)
    assert np.all(np.diff(whitening.eigenvalues) <= 0)
    np.testing.assert_allclose(np.linalg.norm(whitening.apply(x), axis=1), 1.0, rtol=1e-5)


def test_streaming_fit_equals_fit_on_the_full_array():
    x = correlated_gaussian()
    full = fit_pca_whitening(x, dim=4)
    streamed = fit_pca_whitening((block for block in np.array_split(x, [5, 1000, 1001, 7000, 15000])), dim=4)
    np.testing.assert_allclose(streamed.mean, full.mean, rtol=1e-12)
    np.testing.assert_allclose(streamed.projection, full.projection, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(streamed.eigenvalues, full.eigenvalues, rtol=1e-10)


def test_fit_is_unaffected_by_a_large_common_offset():
    # Accumulating raw sums would lose the covariance to cancellation at this offset.
    x = correlated_gaussian()
    near, far = fit_pca_whitening(x), fit_pca_whitening(np.array_split(x + 1e6, 4))
    np.testing.assert_allclose(far.mean, near.mean + 1e6, rtol=1e-12)
    np.testing.assert_allclose(far.projection, near.projection, rtol=1e-6, atol=1e-9)


def test_dim_reduction_keeps_the_leading_components():
    x = correlated_gaussian()
    whitening = fit_pca_whitening(x, dim=2)
    assert whitening.projection.shape == (2, 6) and whitening.d_out == 2
    assert whitening.apply(x[:10]).shape == (10, 2)
    covariance = np.cov(x.T, bias=True)
    np.testing.assert_allclose(whitening.eigenvalues, np.linalg.eigvalsh(covariance)[::-1][:2], rtol=1e-9)
    np.testing.assert_allclose(np.cov(whitening.project(x).T, bias=True), np.eye(2), atol=1e-6)


def test_pca_without_whitening_only_rotates():
    x = correlated_gaussian()
    pca = fit_pca_whitening(x, whiten=False)
    np.testing.assert_allclose(pca.projection @ pca.projection.T, np.eye(6), atol=1e-10)
    np.testing.assert_allclose(np.cov(pca.project(x).T, bias=True), np.diag(pca.eigenvalues), rtol=1e-6, atol=1e-6)


def test_shrinkage_adds_a_share_of_the_mean_eigenvalue():
    x = correlated_gaussian()
    eigenvalues = fit_pca_whitening(x, whiten=False).eigenvalues
    shrunk = fit_pca_whitening(x, shrinkage=0.5)
    variances = np.diag(np.cov(shrunk.project(x).T, bias=True))
    np.testing.assert_allclose(variances, eigenvalues / (eigenvalues + 0.5 * eigenvalues.mean()), rtol=1e-6)


def test_save_load_round_trip(tmp_path):
    x = correlated_gaussian(count=500)
    whitening = fit_pca_whitening(x, dim=3, shrinkage=0.1)
    whitening.save(tmp_path / "w.npz")
    loaded = PCAWhitening.load(tmp_path / "w.npz")
    for name in ("mean", "projection", "eigenvalues"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(whitening, name))
    assert (loaded.whiten, loaded.shrinkage, loaded.eps) == (True, 0.1, whitening.eps)
    np.testing.assert_array_equal(loaded.apply(x[:5]), whitening.apply(x[:5]))


def test_unreadable_whitening_files_are_user_errors(tmp_path):
    with pytest.raises(UserInputError, match="missing.npz"):
        PCAWhitening.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(UserInputError, match="junk.npz"):
        PCAWhitening.load(tmp_path / "junk.npz")
    np.savez(tmp_path / "partial.npz", version=1, mean=np.zeros(3))
    with pytest.raises(UserInputError, match="partial.npz"):
        PCAWhitening.load(tmp_path / "partial.npz")


@pytest.mark.parametrize("kwargs, message", [({"dim": 7}, r"dim must be an integer in \[1, 6\]"),
                                             ({"dim": 0}, "dim must be"),
                                             ({"shrinkage": -1.0}, "shrinkage")])
def test_bad_whitening_settings_are_rejected(kwargs, message):
    with pytest.raises(UserInputError, match=message):
        fit_pca_whitening(correlated_gaussian(count=50), **kwargs)


def test_too_few_or_non_finite_descriptors_are_rejected():
    with pytest.raises(UserInputError, match="at least 2"):
        fit_pca_whitening(np.ones((1, 3)))
    x = correlated_gaussian(count=50)
    x[27, 2] = np.inf
    with pytest.raises(UserInputError, match="descriptor 27 is not finite"):
        fit_pca_whitening(np.array_split(x, [20]))
