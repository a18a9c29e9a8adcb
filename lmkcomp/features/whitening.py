"""PCA-whitening of global descriptors, learned on train descriptors and applied to index/test.

Fit (all in float64, streaming over blocks so that 4 M x 3072 train descriptors never sit in
memory at once; memory is one block in float64 plus two d x d matrices):

- `mean` = the mean descriptor, `C` = the covariance with divisor n;
- `C = V diag(lambda) V^T`, eigenvalues in decreasing order; each eigenvector's sign is fixed
  so that its largest-magnitude entry is positive, which makes the fit reproducible;
- `lambda' = lambda + shrinkage * mean(lambda)` (mean over all d_in eigenvalues);
- keep the first `dim` eigenpairs: projection `P = diag(1 / sqrt(lambda' + eps)) V^T`
  (d_out x d_in), or `P = V^T` without whitening.

`PCAWhitening.apply(x)` = `l2_normalize((x - mean) P^T)`.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from numpy.typing import ArrayLike

from lmkcomp.errors import UserInputError
from lmkcomp.features.store import l2_normalize
from lmkcomp.fileio import atomic_write

FORMAT_VERSION = 1


@dataclass(frozen=True, eq=False)
class PCAWhitening:
    """A learned PCA(-whitening): `mean` (d_in,), `projection` P (d_out, d_in), the kept
    `eigenvalues` (d_out,) before shrinkage, and the `whiten` / `shrinkage` / `eps` it was fit with."""

    mean: np.ndarray
    projection: np.ndarray
    eigenvalues: np.ndarray
    whiten: bool
    shrinkage: float
    eps: float

    def __post_init__(self) -> None:
        d_out, d_in = np.shape(self.projection)
        if np.shape(self.mean) != (d_in,) or np.shape(self.eigenvalues) != (d_out,):
            raise ValueError(f"inconsistent shapes: mean {np.shape(self.mean)}, projection "
                             f"{np.shape(self.projection)}, eigenvalues {np.shape(self.eigenvalues)}")

    @property
    def d_in(self) -> int:
        return self.projection.shape[1]

    @property
    def d_out(self) -> int:
        return self.projection.shape[0]

    def project(self, x: ArrayLike) -> np.ndarray:
        """`(x - mean) P^T`, not normalised; float32 for float16/float32 input, else float64."""
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.d_in:
            raise ValueError(f"expected descriptors of shape (n, {self.d_in}), got {x.shape}")
        dtype = np.result_type(x.dtype, np.float32)
        return (x.astype(dtype, copy=False) - self.mean.astype(dtype)) @ self.projection.astype(dtype).T

    def apply(self, x: ArrayLike) -> np.ndarray:
        """`l2_normalize((x - mean) P^T)`: the descriptors to search with."""
        return l2_normalize(self.project(x))

    def save(self, path: str | Path) -> None:
        """Write the fit to `path` as an `.npz` archive, atomically."""
        with atomic_write(path, "wb") as handle:
            np.savez(handle, version=FORMAT_VERSION, mean=self.mean, projection=self.projection,
                     eigenvalues=self.eigenvalues, whiten=self.whiten, shrinkage=self.shrinkage, eps=self.eps)

    @classmethod
    def load(cls, path: str | Path) -> PCAWhitening:
        """Read a fit written by `save`; a missing or malformed file is a UserInputError."""
        try:
            with np.load(path, allow_pickle=False) as archive:
                if int(archive["version"]) != FORMAT_VERSION:
                    raise UserInputError(f"{path}: whitening format version {int(archive['version'])}; "
                                         f"this lmkcomp reads version {FORMAT_VERSION}")
                return cls(mean=archive["mean"], projection=archive["projection"],
                           eigenvalues=archive["eigenvalues"], whiten=bool(archive["whiten"]),
                           shrinkage=float(archive["shrinkage"]), eps=float(archive["eps"]))
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
            raise UserInputError(f"{path}: not a readable whitening file: {exc}") from None


def _as_blocks(data: np.ndarray | Iterable[np.ndarray]) -> Iterable[np.ndarray]:
    return [data] if isinstance(data, np.ndarray) else data


def _covariance(data: np.ndarray | Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (divisor n) of all rows of all blocks, accumulated in float64."""
    count = 0
    shift = total = gram = None
    for block in _as_blocks(data):
        block = np.asarray(block)
        if block.ndim != 2 or (shift is not None and block.shape[1] != shift.shape[0]):
            raise UserInputError(f"descriptor blocks must be 2-D with one width; got a block of shape {block.shape}")
        if block.shape[0] == 0:
            continue
        block = block.astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(block).all(axis=1))
        if bad.size:
            raise UserInputError(f"PCA-whitening: training descriptor {count + int(bad[0])} is not finite")
        if shift is None:
            # Summing x - shift (shift = first block's mean) rather than x keeps the final
            # gram - n mean mean^T from cancelling catastrophically when the mean is large
            # compared with the spread, as it is for non-negative pooled descriptors.
            shift = block.mean(axis=0)
            total = np.zeros_like(shift)
            gram = np.zeros((shift.shape[0], shift.shape[0]))
        block -= shift
        count += block.shape[0]
        total += block.sum(axis=0)
        gram += block.T @ block
    if count < 2:
        raise UserInputError(f"PCA-whitening needs at least 2 descriptors, got {count}")
    centred_mean = total / count
    covariance = gram / count - np.outer(centred_mean, centred_mean)
    return shift + centred_mean, covariance


def fit_pca_whitening(data: np.ndarray | Iterable[np.ndarray], dim: int | None = None, whiten: bool = True,
                      shrinkage: float = 0.0, eps: float = 1e-12) -> PCAWhitening:
    """Fit PCA(-whitening) on `data`, one (n, d_in) array or an iterable of such blocks,
    e.g. `(block for _, block in store.iter_blocks(65536))`.

    `dim` (default d_in) is the number of components kept; see the module docstring for the
    exact definition. With fewer descriptors than dimensions the smallest eigenvalues are ~0
    and whitening amplifies noise: use `dim` or `shrinkage` then.
    """
    if shrinkage < 0 or not np.isfinite(shrinkage):
        raise UserInputError(f"whitening shrinkage must be a finite number >= 0, got {shrinkage}")
    if eps <= 0:
        raise UserInputError(f"whitening eps must be > 0, got {eps}")
    mean, covariance = _covariance(data)
    d_in = mean.shape[0]
    if dim is None:
        dim = d_in
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not 1 <= dim <= d_in:
        raise UserInputError(f"whitening dim must be an integer in [1, {d_in}], got {dim!r}")
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1]
    # Round-off makes the eigenvalues of a singular covariance slightly negative.
    eigenvalues = np.clip(eigenvalues[order], 0.0, None)
    eigenvectors = eigenvectors[:, order]
    largest = np.argmax(np.abs(eigenvectors), axis=0)
    eigenvectors = eigenvectors * np.sign(eigenvectors[largest, np.arange(d_in)])
    shrunk = eigenvalues + shrinkage * eigenvalues.mean()
    projection = eigenvectors[:, :dim].T
    if whiten:
        projection = projection / np.sqrt(shrunk[:dim] + eps)[:, None]
    return PCAWhitening(mean=mean, projection=projection, eigenvalues=eigenvalues[:dim],
                        whiten=whiten, shrinkage=float(shrinkage), eps=float(eps))
