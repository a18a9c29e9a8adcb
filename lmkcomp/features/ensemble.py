"""Ensembles of several models' embeddings: a weighted concatenation of L2-normalised parts.

For aligned stores `x_1 .. x_m` (same ids, same order) with weights `w_1 .. w_m > 0`, the
ensemble embedding of a row is

    e = l2_normalize(concat(w_1 * l2_normalize(x_1), ..., w_m * l2_normalize(x_m)))

so each model contributes in proportion to its weight whatever the scale of its raw
descriptors (six 512-d models give 3072-d). An optional PCA-whitening is then applied to `e`
(and re-normalises it).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Sequence

import numpy as np
from numpy.typing import DTypeLike

from lmkcomp.checks import positive_int
from lmkcomp.errors import UserInputError
from lmkcomp.features.store import EmbeddingStore, EmbeddingWriter, check_aligned, l2_normalize
from lmkcomp.features.whitening import PCAWhitening


def check_weights(weights: Sequence[float] | None, count: int) -> list[float]:
    """The weights of `count` models as floats: all 1 when None; one finite, positive weight each."""
    if weights is None:
        return [1.0] * count
    if len(weights) != count:
        raise UserInputError(f"{len(weights)} ensemble weights for {count} embedding stores")
    for position, weight in enumerate(weights):
        if not math.isfinite(weight) or weight <= 0:
            raise UserInputError(f"ensemble weight {position} must be a finite number > 0, got {weight}")
    return [float(weight) for weight in weights]


def combine_embeddings(parts: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """`l2_normalize(concat_i(weights[i] * l2_normalize(parts[i])))` for row-aligned `parts`."""
    return l2_normalize(np.concatenate([weight * l2_normalize(part) for part, weight in zip(parts, weights)],
                                       axis=1))


def _whitening_digest(whitening: PCAWhitening) -> str:
    """A short fingerprint of a whitening, recorded so a resumed run cannot switch whitening."""
    digest = hashlib.sha256()
    for array in (whitening.mean, whitening.projection):
        digest.update(np.ascontiguousarray(array, dtype=np.float64).tobytes())
    return digest.hexdigest()[:16]


def ensemble_stores(out_dir: str | Path, stores: Sequence[EmbeddingStore], weights: Sequence[float] | None = None,
                    whitening: PCAWhitening | None = None, dtype: DTypeLike = "float16",
                    block_rows: int = 65536) -> EmbeddingStore:
    """Write the ensemble of aligned `stores` to a new store in `out_dir` and open it.

    Rows are processed `block_rows` at a time, shard by shard through `EmbeddingWriter`, so a
    killed run resumes where it stopped when called again with the same arguments. The
    output's meta records each input store's folder, dim, weight and meta, and the whitening's
    fingerprint.
    """
    if not stores:
        raise UserInputError("no embedding stores to ensemble")
    weights = check_weights(weights, len(stores))
    block_rows = positive_int("block_rows", block_rows)
    check_aligned(stores)
    width = sum(store.dim for store in stores)
    if whitening is not None and whitening.d_in != width:
        raise UserInputError(f"whitening expects {whitening.d_in}-d descriptors, the ensemble is {width}-d")
    meta = {
        "ensemble": [{"store": str(store.directory), "dim": store.dim, "weight": weight, "meta": store.meta}
                     for store, weight in zip(stores, weights)],
        "whitening": None if whitening is None else _whitening_digest(whitening),
    }
    dim = width if whitening is None else whitening.d_out
    writer = EmbeddingWriter(out_dir, stores[0].ids, dim, dtype=dtype, meta=meta, command="lmkcomp ensemble")
    for k, rows in writer.pending_shards():
        # Unit-norm rows cannot overflow float16, so the shard is built in the output dtype.
        shard = np.empty((rows.stop - rows.start, dim), dtype=writer.dtype)
        for start in range(rows.start, rows.stop, block_rows):
            stop = min(start + block_rows, rows.stop)
            block = combine_embeddings([store.read(start, stop) for store in stores], weights)
            if whitening is not None:
                block = whitening.apply(block)
            shard[start - rows.start:stop - rows.start] = block
        writer.write_shard(k, shard)
    writer.finish()
    return EmbeddingStore(out_dir)
