"""The centroid index: landmark centroids in a faiss inner-product index, the landmark of each
centroid, and optionally each landmark's reference mean for the references check.

Layout of a centroid folder `DIR`:

- `DIR/centroids.npy`: C x D float32, L2-normalised rows, grouped by landmark (ascending);
- `DIR/landmark_ids.npy`: C int64, the landmark of each centroid row;
- `DIR/index.faiss`: the serialised faiss index of the centroids (inner product) that the
  index spec names (`lmkcomp.index_spec`): "flat" or "Flat" (exact, the default) or any other
  faiss factory string ("HNSW32", "IVF64,Flat"...), trained on the centroids themselves;
- `DIR/references.npz` (optional): `landmark_ids` (L int64, ascending) and `means` (L x D
  float32), the mean of each landmark's reference embeddings, not normalised: the mean
  similarity of a query q to references r_1..r_m is q . (1/m) sum_i r_i, one dot product;
- `DIR/manifest.json`: `format`, `version`, `complete`, `dim`, `count`, `index_spec`,
  `references` (bool) and `settings` (how the centroids were built), written last.

Every file is written atomically and the manifest is marked complete only after the others,
so a reader never loads a half-written folder.
"""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from lmkcomp.errors import UserInputError
from lmkcomp.fileio import atomic_write
from lmkcomp.index_spec import parse_index_spec
from lmkcomp.manifest import MANIFEST_NAME, read_manifest, write_manifest
from lmkcomp.search.faiss_backend import (
    factory_index,
    faiss_index_bytes,
    read_faiss_index,
    save_faiss_index,
    train_factory_index,
)

FORMAT = "lmkcomp-centroids"
FORMAT_VERSION = 1
DEFAULT_INDEX_SPEC = "Flat"
DEFAULT_QUERY_BLOCK = 4096


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_write(path, "wb") as handle:
        np.save(handle, array, allow_pickle=False)


def centroid_factory(spec: str) -> str:
    """The faiss factory string of a centroid index spec: "flat" -> "Flat", a factory string
    (bare or "faiss:FACTORY") as it is; anything else is a user error listing the known forms."""
    parsed = parse_index_spec(spec, {"flat": None}, "centroid index spec")
    return "Flat" if parsed.backend == "flat" else parsed.argument


def first_occurrences(values: np.ndarray, k: int, fill: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Per row of `values` (n x m), the columns of the first `k` distinct values, left to right.

    Returns `(columns, valid)`, both n x k: `columns[i, j]` is the column of the j-th distinct
    value of row i (0 where there is none) and `valid[i, j]` says whether there is one. Entries
    equal to `fill` are never taken (faiss pads missing neighbours with -1).
    """
    n, m = values.shape
    order = np.argsort(values, axis=1, kind="stable")
    ordered = np.take_along_axis(values, order, axis=1)
    first_sorted = np.ones((n, m), dtype=bool)
    first_sorted[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    # a stable sort keeps equal values in column order, so the first of each run is the leftmost
    first = np.empty_like(first_sorted)
    np.put_along_axis(first, order, first_sorted, axis=1)
    first &= values != fill
    rank = np.cumsum(first, axis=1) - 1
    columns = np.zeros((n, k), dtype=np.int64)
    rows, cols = np.nonzero(first & (rank < k))
    columns[rows, rank[rows, cols]] = cols
    valid = np.arange(k)[None, :] < np.minimum(first.sum(axis=1), k)[:, None]
    return columns, valid


class CentroidIndex:
    """Centroids (C x D, L2-normalised), the landmark of each, a faiss index over them, and
    optional reference means (see the module docstring).

    Attributes: `centroids`, `landmark_ids`, `index_spec`, `settings` (JSON-able dict),
    `reference_landmarks` and `reference_means` (None without references), `faiss_index`.
    """

    def __init__(self, centroids: np.ndarray, landmark_ids: np.ndarray, index_spec: str = DEFAULT_INDEX_SPEC,
                 settings: dict | None = None, reference_landmarks: np.ndarray | None = None,
                 reference_means: np.ndarray | None = None, faiss_index: faiss.Index | None = None):
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self.landmark_ids = np.asarray(landmark_ids, dtype=np.int64)
        if self.centroids.ndim != 2 or len(self.centroids) == 0 or len(self.centroids) != len(self.landmark_ids):
            raise ValueError(f"centroids of shape {self.centroids.shape} for {len(self.landmark_ids)} landmark ids")
        if np.any(np.diff(self.landmark_ids) < 0):
            raise ValueError("centroid rows must be grouped by landmark, in ascending landmark order")
        self.index_spec = index_spec
        self.settings = dict(settings or {})
        if (reference_landmarks is None) != (reference_means is None):
            raise ValueError("reference_landmarks and reference_means go together")
        self.reference_landmarks = None if reference_landmarks is None else np.asarray(reference_landmarks, np.int64)
        self.reference_means = None if reference_means is None else np.asarray(reference_means, np.float32)
        self.faiss_index = self._build_faiss() if faiss_index is None else faiss_index
        # rows of each landmark are contiguous: landmark i owns rows [starts[i], starts[i + 1])
        self.landmarks, starts = np.unique(self.landmark_ids, return_index=True)
        self._starts = np.append(starts, len(self.landmark_ids))

    @property
    def dim(self) -> int:
        return self.centroids.shape[1]

    def __len__(self) -> int:
        return len(self.centroids)

    def _build_faiss(self) -> faiss.Index:
        """The faiss index of the centroids, made and trained as the searchers' are
        (`factory_index`, `train_factory_index`: the same errors, no polysemous training)."""
        factory = centroid_factory(self.index_spec)
        index = factory_index(self.dim, factory, faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained:
            train_factory_index(index, factory, self.centroids)
        index.add(self.centroids)
        return index

    @property
    def memory_bytes(self) -> int:
        """Bytes to hold the searchable index: the serialised faiss index (its vectors and
        structures) plus the row -> landmark map. Reference means are not counted: they serve
        the optional references check, not the search."""
        return int(faiss_index_bytes(self.faiss_index) + self.landmark_ids.nbytes)

    @property
    def max_centroids_per_landmark(self) -> int:
        return int(np.diff(self._starts).max())

    def rows_of(self, landmarks: np.ndarray) -> np.ndarray:
        """Centroid rows of the known landmarks among `landmarks`, in ascending landmark order."""
        positions = np.searchsorted(self.landmarks, np.intersect1d(landmarks, self.landmarks))
        if len(positions) == 0:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.arange(self._starts[p], self._starts[p + 1]) for p in positions])

    def search(self, queries: np.ndarray, k: int,
               query_block: int = DEFAULT_QUERY_BLOCK) -> tuple[np.ndarray, np.ndarray]:
        """faiss top-`k` centroids by inner product, `query_block` queries at a time:
        `(similarities, rows)`, both n x min(k, C), best first; rows are -1 where faiss found
        fewer (approximate specs)."""
        k = min(k, len(self))
        n = len(queries)
        similarities = np.empty((n, k), dtype=np.float32)
        rows = np.empty((n, k), dtype=np.int64)
        for start in range(0, n, query_block):
            block = np.ascontiguousarray(queries[start:start + query_block], dtype=np.float32)
            similarities[start:start + len(block)], rows[start:start + len(block)] = self.faiss_index.search(block, k)
        return similarities, rows

    def top_landmarks(self, queries: np.ndarray, k: int,
                      query_block: int = DEFAULT_QUERY_BLOCK) -> tuple[np.ndarray, np.ndarray]:
        """The `k` most similar distinct landmarks of each query: `(landmarks, similarities)`,
        n x k, best first; a landmark's similarity is that of its most similar centroid.
        Missing entries (fewer than k landmarks) are -1 and NaN.

        Searching `k` x (most centroids of one landmark) centroids guarantees `k` distinct
        landmarks among them with an exact index.
        """
        searched = k * self.max_centroids_per_landmark
        landmarks = np.full((len(queries), k), -1, dtype=np.int64)
        similarities = np.full((len(queries), k), np.nan, dtype=np.float32)
        for start in range(0, len(queries), query_block):
            block_sims, block_rows = self.search(queries[start:start + query_block], searched, query_block)
            block_landmarks = np.where(block_rows >= 0, self.landmark_ids[np.maximum(block_rows, 0)], -1)
            columns, valid = first_occurrences(block_landmarks, k)
            chosen = np.take_along_axis(block_landmarks, columns, axis=1)
            chosen_sims = np.take_along_axis(block_sims, columns, axis=1)
            landmarks[start:start + len(block_rows)] = np.where(valid, chosen, -1)
            similarities[start:start + len(block_rows)] = np.where(valid, chosen_sims, np.nan)
        return landmarks, similarities

    def reference_similarity(self, queries: np.ndarray, landmarks: np.ndarray,
                             query_block: int = DEFAULT_QUERY_BLOCK) -> np.ndarray:
        """Mean similarity of query i to the references of `landmarks[i, j]` (n x k); NaN where
        the landmark has no references or is -1. Gathers `query_block` x k reference means at
        a time."""
        if self.reference_means is None:
            raise UserInputError("this centroid index has no references; rebuild it with references "
                                 "(lmkcomp centroids build --references-k K or --references CSV)")
        positions = np.searchsorted(self.reference_landmarks, landmarks)
        positions = np.minimum(positions, len(self.reference_landmarks) - 1)
        known = (landmarks >= 0) & (self.reference_landmarks[positions] == landmarks)
        similarity = np.empty(landmarks.shape, dtype=np.float32)
        for start in range(0, len(landmarks), query_block):
            block = slice(start, start + query_block)
            similarity[block] = np.einsum("nd,nkd->nk", np.asarray(queries[block], dtype=np.float32),
                                          self.reference_means[positions[block]])
        return np.where(known, similarity, np.nan).astype(np.float32)

    # ----------------------------------------------------------------------------------------
    # Folder

    def save(self, directory: str | Path) -> None:
        """Write the folder layout of the module docstring, the manifest last."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        manifest = {"format": FORMAT, "version": FORMAT_VERSION, "complete": False, "dim": self.dim,
                    "count": len(self), "index_spec": self.index_spec,
                    "references": self.reference_means is not None, "settings": self.settings}
        if (directory / MANIFEST_NAME).is_file():
            # mark the old folder incomplete before its files are replaced
            write_manifest(directory, manifest)
        _save_npy(directory / "centroids.npy", self.centroids)
        _save_npy(directory / "landmark_ids.npy", self.landmark_ids)
        save_faiss_index(self.faiss_index, directory / "index.faiss")
        if self.reference_means is not None:
            with atomic_write(directory / "references.npz", "wb") as handle:
                np.savez(handle, landmark_ids=self.reference_landmarks, means=self.reference_means)
        elif (directory / "references.npz").exists():
            (directory / "references.npz").unlink()
        write_manifest(directory, {**manifest, "complete": True})

    @classmethod
    def load(cls, directory: str | Path) -> CentroidIndex:
        """The index saved in `directory`; an incomplete or foreign folder is a user error."""
        return load_centroids(directory)


def _load_array(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UserInputError(f"{path}: unreadable array: {exc}") from None


def load_centroids(directory: str | Path) -> CentroidIndex:
    """Load a centroid folder written by `CentroidIndex.save` (see the module docstring)."""
    directory = Path(directory)
    manifest = read_manifest(directory, MANIFEST_NAME, FORMAT, FORMAT_VERSION, "a centroid index")
    if manifest.get("complete") is not True:
        raise UserInputError(f"{directory}: incomplete centroid index; rerun lmkcomp centroids build to finish it")
    centroids = _load_array(directory / "centroids.npy")
    landmark_ids = _load_array(directory / "landmark_ids.npy")
    expected = (manifest["count"], manifest["dim"])
    if centroids.shape != expected or centroids.dtype != np.float32:
        raise UserInputError(f"{directory / 'centroids.npy'}: {centroids.dtype} array of shape {centroids.shape}, "
                             f"expected float32 of shape {expected}")
    if landmark_ids.shape != (manifest["count"],) or landmark_ids.dtype != np.int64:
        raise UserInputError(f"{directory / 'landmark_ids.npy'}: expected {manifest['count']} int64 landmark ids")
    index = read_faiss_index(directory / "index.faiss")
    if index.ntotal != manifest["count"] or index.d != manifest["dim"]:
        raise UserInputError(f"{directory / 'index.faiss'}: {index.ntotal} vectors of dimension {index.d}, "
                             f"expected {manifest['count']} of dimension {manifest['dim']}")
    reference_landmarks = reference_means = None
    if manifest.get("references"):
        path = directory / "references.npz"
        try:
            with np.load(path, allow_pickle=False) as arrays:
                reference_landmarks, reference_means = arrays["landmark_ids"], arrays["means"]
        except (OSError, ValueError, KeyError) as exc:
            raise UserInputError(f"{path}: unreadable references: {exc}") from None
        if reference_means.shape != (len(reference_landmarks), manifest["dim"]):
            raise UserInputError(f"{path}: means of shape {reference_means.shape} "
                                 f"for {len(reference_landmarks)} landmarks")
    try:
        return CentroidIndex(centroids, landmark_ids, manifest["index_spec"], manifest.get("settings"),
                             reference_landmarks, reference_means, faiss_index=index)
    except ValueError as exc:
        raise UserInputError(f"{directory}: {exc}") from None
