"""faiss indexes by inner product, described by a faiss index-factory string.

- "Flat": exact search (every database vector compared), the fastest exact search on a CPU.
- "IVF<nlist>,Flat": an inverted file: database vectors grouped under `nlist` k-means centroids;
  a query scans the `nprobe` lists whose centroids are closest. Approximate.
- "IVF<nlist>,PQ<m>": the same, with each vector compressed to `m` bytes by product quantization
  (scores are approximated from the codes); the choice for a database too large for memory as
  float32 (GLDv2 train: 4.1 M x 512 x 4 B = 8.4 GB flat, 131 MB as PQ32 codes).

On a machine where faiss sees a GPU (`faiss.get_num_gpus()`), device "auto" or "cuda" moves the
index to it. faiss GPU indexes return at most 2048 neighbours per query: a larger k is refused
with a message that names the alternatives, rather than silently cut.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import faiss
import numpy as np

from lmkcomp.checks import positive_int
from lmkcomp.errors import UserInputError
from lmkcomp.fileio import atomic_write
from lmkcomp.index_spec import faiss_reason
from lmkcomp.search.base import check_vectors
from lmkcomp.search.exact import (
    BYTES_PER_SIMILARITY,
    DEFAULT_DATABASE_BLOCK,
    ExactSearcher,
    gemm_top_k,
    search_chunks,
)

GPU_MAX_K = 2048
#: query rows per block from which faiss's brute-force kernel (`faiss.knn`: BLAS, then a heap)
#: beats the kit's GEMM + `block_top_k`: measured on 2 cores (faiss 1.15, 512-d, k 100, 40 K
#: rows), faiss ran 480-620 queries/s from 8 to 240 queries against the GEMM kernel's
#: 1,300-2,300, and 1,600-3,900 from 256 on against 1,000-2,300
FAISS_MIN_QUERIES = 256
# Training sample of an IVF index: rows per coarse centroid (faiss warns below 39) and a floor
# that also covers the 256 centroids of each PQ sub-quantizer.
TRAIN_ROWS_PER_LIST = 64
MIN_TRAIN_ROWS = 2**15


class FaissSearcher:
    """A faiss index built by `faiss.index_factory(dim, factory, METRIC_INNER_PRODUCT)`.

    `nprobe` (IVF indexes only): inverted lists scanned per query (faiss default 1).
    `device`: "auto" (a GPU when faiss has one), "cpu", "cuda" or "cuda:N".
    `train_size`: database rows sampled to train an IVF / PQ index (default: 64 per list, at
    least 32768).
    """

    def __init__(self, dim: int, factory: str = "Flat", nprobe: int | None = None, device: str = "auto",
                 train_size: int | None = None):
        self.dim = positive_int("dim", dim)
        self.factory = factory
        index = factory_index(self.dim, factory, faiss.METRIC_INNER_PRODUCT)
        # exact: a flat index compares every vector; its ties across the k-th place are fixed up
        self.exact = isinstance(faiss.downcast_index(index), faiss.IndexFlat)
        ivf = faiss.try_extract_index_ivf(index)
        # read before the index may move to a GPU, where its IVF and PQ parts are not visible
        self.training_minimum = training_minimum(index)
        self.nprobe = None if nprobe is None else set_nprobe(index, factory, nprobe)
        self.gpu = self._use_gpu(device)
        if self.gpu is not None:
            # the resources object must outlive the index that uses it
            self._gpu_resources = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(self._gpu_resources, self.gpu, index)
        self._index = index
        self.trainable = not index.is_trained
        self.needs_training = self.trainable
        nlist = ivf.nlist if ivf is not None else 0
        self.train_size = (positive_int("train_size", train_size) if train_size is not None
                           else max(MIN_TRAIN_ROWS, TRAIN_ROWS_PER_LIST * nlist))

    @staticmethod
    def _use_gpu(device: str) -> int | None:
        """The GPU number to use, or None for the CPU."""
        gpus = faiss.get_num_gpus()
        if device == "auto":
            return 0 if gpus > 0 else None
        if device == "cpu":
            return None
        name, _, number = device.partition(":")
        if name != "cuda" or (number and not number.isdigit()):
            raise UserInputError(f"unknown device {device!r}; expected auto, cpu, cuda or cuda:N")
        gpu = int(number or 0)
        if gpu >= gpus:
            raise UserInputError(f"device {device!r} requested but faiss sees {gpus} GPUs "
                                 "(faiss-cpu installed? a GPU machine needs faiss-gpu)")
        return gpu

    @property
    def count(self) -> int:
        return int(self._index.ntotal)

    def settings(self) -> dict:
        settings = {"backend": "faiss", "factory": self.factory}
        if self.nprobe is not None:
            settings["nprobe"] = self.nprobe
        if self.trainable:
            settings["train_size"] = self.train_size
        return settings

    def train(self, sample: np.ndarray) -> None:
        """Learn the coarse centroids / PQ codebooks from `sample` (faiss's k-means is seeded).

        Too few rows for a part of the index (fewer than an IVF's lists, or than a PQ's
        centroids) is a user error naming that part of the spec, as is any other refusal of
        faiss to train on them.
        """
        train_factory_index(self._index, self.factory, check_vectors(sample, self.dim), self.training_minimum)
        self.needs_training = False

    def add(self, vectors: np.ndarray) -> None:
        """Append `vectors` (n, dim) as database rows `count, count + 1, ...`."""
        if self.needs_training:
            raise RuntimeError(f"faiss index {self.factory!r} must be trained before vectors are added")
        self._index.add(np.ascontiguousarray(check_vectors(vectors, self.dim), dtype=np.float32))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, indices) of the top `min(k, count)` rows per query, best first.

        Equal scores are ordered by the lower index (for "Flat", exactly as `exact_search` ranks:
        among rows tied at the k-th place the lowest indices are kept); rows with fewer than k
        candidates (IVF lists too short for k) end with index -1 and score -inf.
        """
        queries = np.ascontiguousarray(check_vectors(queries, self.dim), dtype=np.float32)
        k = min(positive_int("k", k), self.count)
        # One more than k shows whether the k-th score of an exact search ties with a row left
        # out; faiss keeps an arbitrary member of such a tie, so those rows are searched again.
        settle_ties = self.exact and k < self.count
        if self.gpu is not None and k + settle_ties > GPU_MAX_K:
            raise UserInputError(f"k {k} too large for a faiss GPU index, which returns at most {GPU_MAX_K} neighbours"
                                 f"{' (k + 1 for exact Flat search, to settle ties)' if settle_ties else ''}; "
                                 "search on device cpu, or with the torch backend (spec torch:cuda)")
        if not settle_ties:
            return _rank(*self._index.search(queries, k))
        scores, indices = _rank(*self._index.search(queries, k + 1))
        crowded = np.flatnonzero(scores[:, k] == scores[:, k - 1])
        scores, indices = scores[:, :k], indices[:, :k]
        if crowded.size:
            scores[crowded], indices[crowded] = search_chunks(queries[crowded], _StoredVectors(self._index), k)
        return scores, indices


def factory_index(dim: int, factory: str, metric: int) -> faiss.Index:
    """`faiss.index_factory(dim, factory, metric)`, untrained and empty; a factory string faiss
    does not understand is a UserInputError with faiss's reason.

    The factory's PQ indexes also learn a code ordering for polysemous (Hamming) filtering,
    which plain search never uses and which makes training about 20 times slower: turned off.
    """
    try:
        index = faiss.index_factory(dim, factory, metric)
    except RuntimeError as exc:
        raise UserInputError(f"faiss index {factory!r} not understood: {faiss_reason(exc)}") from None
    quantizing = _quantizing(index)
    if getattr(quantizing, "do_polysemous_training", False):
        quantizing.do_polysemous_training = False
    return index


def set_nprobe(index: faiss.Index, factory: str, nprobe: int) -> int:
    """Set the inverted lists an IVF `index` (made from `factory`) scans per query; returns
    `nprobe`. A non-positive nprobe, or one for an index without inverted lists, is a UserInputError."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        raise UserInputError(f"nprobe applies to IVF indexes only, not to faiss index {factory!r}")
    ivf.nprobe = positive_int("nprobe", nprobe)
    return ivf.nprobe


def train_factory_index(index: faiss.Index, factory: str, sample: np.ndarray,
                        minimum: list[tuple[str, int, str]] | None = None) -> None:
    """Train `index` (made from `factory`) on `sample`: its coarse centroids, PQ codebooks...

    `minimum` is `training_minimum` of the index (default: read from `index`). Too few rows for
    a part of the index (fewer than an IVF's lists, or than a PQ's centroids) is a user error
    naming that part of the spec, as is any other refusal of faiss to train on them (with
    faiss's reason).
    """
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    for part, rows, what in training_minimum(index) if minimum is None else minimum:
        if len(sample) < rows:
            raise UserInputError(
                f"faiss index {factory!r}: {part} needs at least {rows} training vectors ({what}), got "
                f"{len(sample)}; lower the number in {part}, or search exactly (--index-spec flat)")
    try:
        index.train(sample)
    except RuntimeError as exc:
        raise UserInputError(f"faiss index {factory!r} cannot be trained on {len(sample)} vectors: "
                             f"{faiss_reason(exc)}") from None


def _quantizing(index: faiss.Index) -> faiss.Index:
    """The part of `index` that encodes vectors: its IVF, else itself, past a pre-transform."""
    ivf = faiss.try_extract_index_ivf(index)
    quantizing = faiss.downcast_index(ivf if ivf is not None else index)
    if isinstance(quantizing, faiss.IndexPreTransform):
        quantizing = faiss.downcast_index(quantizing.index)
    return quantizing


def training_minimum(index: faiss.Index) -> list[tuple[str, int, str]]:
    """(spec part, fewest training rows, why) for each trained part of an index: an IVF's
    k-means needs a row per list, a product quantizer's a row per sub-quantizer centroid."""
    minimum = []
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        minimum.append((f"IVF{ivf.nlist}", int(ivf.nlist), "one per inverted list"))
    pq = getattr(_quantizing(index), "pq", None)
    if pq is not None:
        part = f"PQ{pq.M}" + ("" if pq.nbits == 8 else f"x{pq.nbits}")
        minimum.append((part, int(pq.ksub), f"one per centroid of its {pq.nbits}-bit sub-quantizers"))
    return minimum


def faiss_top_k(queries: np.ndarray, block: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """`gemm_top_k`'s result by `faiss.knn`: k + 1 neighbours show a tie across the k-th place,
    whose rows (faiss keeps an arbitrary member of a tie) are ranked again by `gemm_top_k`."""
    k = min(k, len(block))
    settle_ties = k < len(block)
    scores, columns = _rank(*faiss.knn(queries, block, k + settle_ties, metric=faiss.METRIC_INNER_PRODUCT))
    if not settle_ties:
        return scores, columns
    crowded = np.flatnonzero(scores[:, k] == scores[:, k - 1])
    scores, columns = scores[:, :k], columns[:, :k]
    if crowded.size:
        scores[crowded], columns[crowded] = gemm_top_k(queries[crowded], block, k)
    return scores, columns


class FlatSearcher(ExactSearcher):
    """The "flat" spec: exact streaming search (`ExactSearcher`) by the faster kernel for the
    query block at hand: `faiss_top_k` from `FAISS_MIN_QUERIES` queries, `gemm_top_k` below."""

    def settings(self) -> dict:
        return {"backend": "flat"}

    def top_k(self, queries: np.ndarray, block: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        kernel = faiss_top_k if len(queries) >= FAISS_MIN_QUERIES else gemm_top_k
        return kernel(queries, block, k)

    def similarity_memory(self, queries: int) -> tuple[int, float]:
        # faiss's kernel holds no similarity matrix of its own size (it works in fixed tiles);
        # a query block smaller than FAISS_MIN_QUERIES (the last of a search) goes to the GEMM
        # kernel, so the blocks leave room for its similarities
        return min(queries, FAISS_MIN_QUERIES - 1), BYTES_PER_SIMILARITY


def _rank(scores: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """faiss results (heap order, -1 for a missing neighbour) as (score desc, index asc), -1 last with score -inf."""
    scores[indices < 0] = -np.inf
    order = np.argsort(np.where(indices < 0, np.iinfo(np.int64).max, indices), axis=1, kind="stable")
    scores, indices = np.take_along_axis(scores, order, axis=1), np.take_along_axis(indices, order, axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(indices, order, axis=1)


class _StoredVectors:
    """The vectors of a flat faiss index, one block at a time (iterable any number of times)."""

    def __init__(self, index, block_rows: int = DEFAULT_DATABASE_BLOCK):
        self._index = index
        self._block_rows = block_rows

    def __iter__(self) -> Iterator[np.ndarray]:
        total = self._index.ntotal
        for start in range(0, total, self._block_rows):
            yield self._index.reconstruct_n(start, min(self._block_rows, total - start))


# --------------------------------------------------------------------------------------------
# Index files. `faiss.serialize_index` / `deserialize_index` hold the whole serialized index
# twice beside the index (a C++ byte vector and its numpy copy): loading a 271 MB flat index
# that way peaked at about three times its size. These stream it instead.


def write_faiss_index(index: faiss.Index, write: Callable[[bytes], int]) -> int:
    """Serialize `index` (the bytes of `faiss.write_index`) through `write`, which takes each
    piece of at most 1 MiB (faiss's callback writer's block) and returns its length; returns
    the total length. Only one piece is held at a time."""
    written = 0

    def counted(piece: bytes) -> int:
        nonlocal written
        written += write(piece)
        return len(piece)

    faiss.write_index(index, faiss.PyCallbackIOWriter(counted))
    return written


def faiss_index_bytes(index: faiss.Index) -> int:
    """The length of `index` serialized, counted without holding the bytes."""
    return write_faiss_index(index, len)


def save_faiss_index(index: faiss.Index, path: str | Path) -> int:
    """Write `index` to `path` atomically, streamed; returns its length in bytes."""
    with atomic_write(path, "wb") as handle:
        return write_faiss_index(index, handle.write)


def read_faiss_index(path: str | Path) -> faiss.Index:
    """The index saved at `path`; a missing or unreadable file is a UserInputError naming it."""
    try:
        return faiss.read_index(str(path))
    except RuntimeError as exc:  # faiss's, also for a missing file
        raise UserInputError(f"{path}: unreadable faiss index: {faiss_reason(exc)}") from None
