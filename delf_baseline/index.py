"""The local-feature database index of DELF recognition: every local descriptor of every
database image in one nearest-neighbour index, each indexed feature mapped back to its image.

Feature indexes (the `FEATURE_INDEXES` registry), all searched with Euclidean distances:

- `flat`: faiss `IndexFlatL2`, exact search over the raw descriptors (4 D bytes a feature).
- `pq`: faiss IVF-PQ, product quantisation as in DELF's own index (Sundaresan et al. 2018: PQ combined
  with a tree-structured coarse search): factory string `IVF{nlist},PQ{m}x{nbits}`, trained
  on the sample (coarse k-means, then PQ codebooks on the residuals), searched in `nprobe`
  lists. Defaults: `nlist` = the power of two nearest (in ratio) to 4 sqrt(N) for N indexed
  features, halved while the sample holds fewer than 39 training points a list (faiss's
  minimum); `m` = the largest divisor of D up to D / 4 (32 bytes a SIFT code, 10 a 40-d
  DELF code); `nbits` 8; `nprobe` 16.
- `faiss`: any faiss index-factory string, bare ("IVF1024,PQ32", "HNSW32", "Flat") or as
  "faiss:FACTORY" (the kit's index-spec vocabulary, `lmkcomp.index_spec`), by L2 distance:
  trained on the sample when the factory needs training (its k-means seeded with `seed`),
  then filled block by block. Option `nprobe` (IVF factories only; default faiss's 1).
- `pca10-kdtree`: Sundaresan et al.'s index: PCA of the sample to `components` = 10 dimensions (the
  mean and the strongest right singular vectors of the centred sample), each projection
  L2-normalised again as official DELF does after its own PCA, and a `scipy.spatial.cKDTree`
  (exact search, `leafsize` 16, queried with `workers` threads, default all cores).

A `DatabaseIndex` joins a feature index to `image_rows` (int32, feature -> position in `ids`)
and saves to / loads from a folder:

- `manifest.json` (written last; its absence means an unfinished save): `format`, `version`,
  `request` (what was asked: kind, options, seed, train_size, the database store's method,
  meta and dim, and the SHA-256 of the indexed ids), `settings` (the feature index's
  resolved options, e.g. the `nlist` used), `features` and `images` (counts);
- `ids.txt`, `image_rows.npy`, and the feature index's own files (`faiss.index`, or
  `pca.npz` + `points.npy`).

Memory (`memory_bytes`) is what searching holds in RAM, stated per kind in each class.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator, Protocol, Sequence

import faiss
import numpy as np
from scipy.spatial import cKDTree
from tqdm import tqdm

from delf_baseline.pca import PcaProjection
from lmkcomp.checks import positive_int
from lmkcomp.errors import UserInputError
from lmkcomp.features.store import l2_normalize
from lmkcomp.features.whitening import fit_pca_whitening
from lmkcomp.fileio import atomic_write, atomic_write_bytes
from lmkcomp.index_spec import IndexSpec, parse_index_spec
from lmkcomp.local.store import LocalFeatureStore
from lmkcomp.manifest import (
    IDS_NAME,
    MANIFEST_NAME,
    check_ids,
    ids_sha256,
    open_ids,
    read_manifest,
    write_manifest,
)
from lmkcomp.registry import Registry
from lmkcomp.search.faiss_backend import (
    factory_index,
    faiss_index_bytes,
    read_faiss_index,
    save_faiss_index,
    set_nprobe,
    train_factory_index,
)

FORMAT = "lmkcomp-delf-index"
FORMAT_VERSION = 1
IMAGE_ROWS_NAME = "image_rows.npy"
#: Features gathered per `add` call while building: bounds the float32 block (1 GiB at 1024-d).
ADD_BLOCK = 1 << 18
#: faiss's minimum of training points per k-means centroid (below it, it warns).
MIN_POINTS_PER_CENTROID = 39
#: the factory of the spec "faiss" alone, as for the searchers
DEFAULT_FACTORY = "Flat"


def _as_float32(descriptors: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(descriptors, dtype=np.float32)


class FeatureIndex(Protocol):
    """Nearest neighbours among the indexed descriptors, by position in insertion order."""

    #: the registry name
    kind: ClassVar[str]
    #: D, the dimension of the descriptors it indexes and is queried with
    dim: int

    @property
    def size(self) -> int:
        """Number of indexed features."""
        ...

    def settings(self) -> dict[str, Any]:
        """The resolved options (JSON), enough to describe the index."""
        ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """`(distances, positions)`, both Q x k, nearest first: Euclidean distances (in the
        index's space: approximate for `pq`, after PCA for `pca10-kdtree`) and positions of
        indexed features; where fewer than k were found, position -1 and distance inf."""
        ...

    def memory_bytes(self) -> int:
        """Bytes held in RAM for searching (each class states what it counts)."""
        ...

    def save(self, directory: Path) -> None:
        """Write the index's own files into `directory`, each atomically."""
        ...

    @classmethod
    def build(cls, dim: int, sample: np.ndarray, blocks: Iterable[np.ndarray], count: int, seed: int = 0,
              **options: Any) -> FeatureIndex:
        """Train on `sample` (descriptors drawn from the database) and index every block of
        `blocks` (`count` descriptors in all, in database order), with the kind's `options`."""
        ...

    @classmethod
    def load(cls, directory: Path, settings: dict[str, Any]) -> FeatureIndex:
        """The index saved in `directory` by `save`, with the resolved `settings()` it had."""
        ...


#: name -> a `FeatureIndex` class
FEATURE_INDEXES: Registry[type] = Registry("feature index")


def _parse(spec: str) -> IndexSpec:
    """`spec` in the kit's index-spec vocabulary (`lmkcomp.index_spec`): a `FEATURE_INDEXES`
    name ("faiss" alone meaning "faiss:Flat"), or a faiss factory string, bare or as
    "faiss:FACTORY"; anything else is a user error listing the known forms."""
    backends = {name: "FACTORY" if name == FactoryIndex.kind else None for name in FEATURE_INDEXES.names()}
    parsed = parse_index_spec(spec, backends, "DELF feature index")
    if parsed.backend == FactoryIndex.kind:
        return IndexSpec(FactoryIndex.kind, parsed.argument or DEFAULT_FACTORY)
    return parsed


def feature_index_class(spec: str) -> type:
    """The `FEATURE_INDEXES` class that a DELF feature-index spec names (see `_parse`):
    `FactoryIndex` for a faiss factory string."""
    return FEATURE_INDEXES.get(_parse(spec).backend)


def canonical_spec(spec: str) -> str:
    """`spec` as a build request records it: a kind name as given, a faiss factory as the bare
    factory string (so that "faiss:HNSW32" and "HNSW32" ask for the same index)."""
    parsed = _parse(spec)
    return parsed.argument if parsed.backend == FactoryIndex.kind else parsed.backend


def build_feature_index(spec: str, dim: int, sample: np.ndarray, blocks: Iterable[np.ndarray], count: int,
                        seed: int = 0, **options: Any) -> FeatureIndex:
    """The feature index that `spec` names, built by its class's `build` (see `FeatureIndex`)
    with `options`; for a faiss factory string, with that factory. An option the kind does
    not take is a UserInputError."""
    parsed = _parse(spec)
    index_class = FEATURE_INDEXES.get(parsed.backend)
    fixed = {"factory": parsed.argument} if parsed.backend == FactoryIndex.kind else {}
    try:
        return index_class.build(dim, sample, blocks, count, seed=seed, **fixed, **options)
    except TypeError as exc:  # an option this kind does not take
        raise UserInputError(f"{spec} index: {exc}") from None


@contextlib.contextmanager
def _blas_distances() -> Iterator[None]:
    """Let faiss compute exact L2 distances with BLAS while in the block.

    Recent faiss (1.15 here) switches to BLAS only when queries x dimension >= 128000, a
    threshold tuned for many threads (faiss pull request 5109 reports the regression with
    few threads). A query image's 200-1000 SIFT descriptors fall below it, and on this kit's
    2-core machine the per-query path was 18 times slower (11.5 s against 0.65 s for 200
    queries on 531 K features). 20 means BLAS from 20 queries under the older rule and
    always under the newer one; the previous value is restored on leaving.
    """
    previous = faiss.cvar.distance_compute_blas_threshold
    faiss.cvar.distance_compute_blas_threshold = 20
    try:
        yield
    finally:
        faiss.cvar.distance_compute_blas_threshold = previous


def _faiss_results(distances: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """faiss's squared L2 distances and -1 labels -> Euclidean distances, inf where missing."""
    missing = positions < 0
    distances = np.sqrt(np.maximum(distances, 0.0))
    distances[missing] = np.inf
    return distances, positions.astype(np.int64)


class _FaissIndex:
    """A faiss index saved as `faiss.index` (the bytes of `faiss.write_index`).

    `memory_bytes` is the length of the serialized index (for `flat` the N x D float32
    vectors; for `pq` the codes, the int64 ids of the inverted lists, the coarse centroids
    and the PQ codebooks) plus what faiss computes on loading and does not serialize: an
    IVF-PQ's precomputed table (see `IvfPqIndex`).

    Saving, loading and counting stream the bytes (`lmkcomp.search.faiss_backend`'s
    `save_faiss_index`, `read_faiss_index`, `faiss_index_bytes`): `faiss.serialize_index` / `deserialize_index` hold the whole serialized
    index twice beside the index (a C++ byte vector and its numpy copy), so loading a
    271 MB flat index peaked at about three times its size.
    """

    FILE: ClassVar[str] = "faiss.index"

    def __init__(self, index: faiss.Index, options: dict[str, Any]):
        self.index = index
        self.dim = index.d
        self._options = options
        self._serialized_bytes: int | None = None

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def settings(self) -> dict[str, Any]:
        return dict(self._options)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        # For pq, this speeds up the coarse quantizer's exact search the same way.
        with _blas_distances():
            return _faiss_results(*self.index.search(_as_float32(queries), k))

    def memory_bytes(self) -> int:
        # The index does not change once built: count its serialized bytes once.
        if self._serialized_bytes is None:
            self._serialized_bytes = faiss_index_bytes(self.index)
        return self._serialized_bytes + self._unserialized_bytes()

    def _unserialized_bytes(self) -> int:
        # an IVF-PQ's precomputed table of residual terms (see `IvfPqIndex`); empty otherwise
        ivf = faiss.try_extract_index_ivf(self.index)
        table = getattr(faiss.downcast_index(ivf), "precomputed_table", None) if ivf is not None else None
        return 0 if table is None else table.size() * np.dtype(np.float32).itemsize

    def save(self, directory: Path) -> None:
        self._serialized_bytes = save_faiss_index(self.index, directory / self.FILE)

    @classmethod
    def _read(cls, directory: Path) -> faiss.Index:
        return read_faiss_index(directory / cls.FILE)


@FEATURE_INDEXES.register("flat")
class FlatIndex(_FaissIndex):
    """Exact search: faiss `IndexFlatL2` over the float32 descriptors. No options."""

    kind: ClassVar[str] = "flat"

    @classmethod
    def build(cls, dim: int, sample: np.ndarray, blocks: Iterable[np.ndarray], count: int,
              seed: int = 0) -> FlatIndex:
        """Index every block; `sample`, `count` and `seed` are not needed by exact search."""
        index = faiss.IndexFlatL2(dim)
        for block in blocks:
            index.add(_as_float32(block))
        return cls(index, {})

    @classmethod
    def load(cls, directory: Path, settings: dict[str, Any]) -> FlatIndex:
        return cls(cls._read(directory), settings)


def default_nlist(count: int, sample_size: int) -> int:
    """The power of two nearest (in ratio, i.e. rounding log2) to 4 sqrt(count), halved
    while `sample_size` gives fewer than 39 training points a list; at least 1."""
    nlist = 2 ** max(0, round(math.log2(4 * math.sqrt(max(count, 1)))))
    while nlist > 1 and sample_size < MIN_POINTS_PER_CENTROID * nlist:
        nlist //= 2
    return nlist


def default_pq_m(dim: int) -> int:
    """The largest divisor of `dim` that is at most dim / 4 (1 when dim < 4)."""
    return next(m for m in range(max(1, dim // 4), 0, -1) if dim % m == 0)


@FEATURE_INDEXES.register("pq")
class IvfPqIndex(_FaissIndex):
    """faiss IVF-PQ `IVF{nlist},PQ{m}x{nbits}`, searched in `nprobe` lists (see the module).

    faiss speeds up its residual encoding with a precomputed float32 table of nlist x m x
    2^nbits terms (when under 2 GB), built on training and again on loading: `memory_bytes`
    counts it on top of the serialized index. It does not grow with the database, but on a
    small one it can outweigh the codes (2048 x 32 x 256 floats = 64 MiB for SIFT at
    nlist 2048).
    """

    kind: ClassVar[str] = "pq"

    @classmethod
    def build(cls, dim: int, sample: np.ndarray, blocks: Iterable[np.ndarray], count: int, seed: int = 0,
              nlist: int | None = None, m: int | None = None, nbits: int = 8, nprobe: int = 16) -> IvfPqIndex:
        """Train on `sample` (at least 2^nbits descriptors), then add every block."""
        nlist = default_nlist(count, len(sample)) if nlist is None else positive_int("nlist", nlist)
        m = default_pq_m(dim) if m is None else positive_int("m", m)
        nbits, nprobe = positive_int("nbits", nbits), positive_int("nprobe", nprobe)
        if dim % m:
            raise UserInputError(f"pq index: m = {m} does not divide the descriptor dimension {dim}")
        if len(sample) < max(nlist, 2 ** nbits):
            raise UserInputError(f"pq index: {len(sample)} training descriptors; nlist {nlist} and "
                                 f"nbits {nbits} need at least {max(nlist, 2 ** nbits)}")
        index = faiss.index_factory(dim, f"IVF{nlist},PQ{m}x{nbits}")
        ivf = faiss.downcast_index(index)
        # index_factory turns on polysemous training, a reordering of the PQ centroids that
        # only Hamming-filtered search uses, not this one; it took seconds per sub-quantizer
        # here (45 s instead of 0.4 s to train 8 sub-quantizers on 1500 descriptors).
        ivf.do_polysemous_training = False
        # faiss's k-means draws its initial centroids from these seeds.
        ivf.cp.seed = seed
        ivf.pq.cp.seed = seed
        index.train(_as_float32(sample))
        for block in blocks:
            index.add(_as_float32(block))
        ivf.nprobe = nprobe
        return cls(index, {"nlist": nlist, "m": m, "nbits": nbits, "nprobe": nprobe})

    @classmethod
    def load(cls, directory: Path, settings: dict[str, Any]) -> IvfPqIndex:
        index = cls._read(directory)
        faiss.extract_index_ivf(index).nprobe = settings["nprobe"]
        return cls(index, settings)


@FEATURE_INDEXES.register("faiss")
class FactoryIndex(_FaissIndex):
    """Any faiss index-factory string by L2 distance, e.g. "IVF1024,PQ32", "HNSW32", "Flat".

    Trained on the sample when the factory needs it (too few descriptors for a part of the
    factory, or any refusal of faiss, is a UserInputError naming it, as for the searchers);
    the k-means of an IVF's coarse quantizer and of a PQ's codebooks is seeded with `seed`.
    An HNSW graph is built by several threads and may differ between builds. `settings()`:
    `factory`, and `nprobe` when given.
    """

    kind: ClassVar[str] = "faiss"

    @classmethod
    def build(cls, dim: int, sample: np.ndarray, blocks: Iterable[np.ndarray], count: int, seed: int = 0,
              factory: str = DEFAULT_FACTORY, nprobe: int | None = None) -> FactoryIndex:
        """Train on `sample` if the factory needs it, then add every block; `count` is not needed."""
        index = factory_index(dim, factory, faiss.METRIC_L2)
        settings: dict[str, Any] = {"factory": factory}
        if nprobe is not None:
            settings["nprobe"] = set_nprobe(index, factory, nprobe)
        if not index.is_trained:
            ivf = faiss.try_extract_index_ivf(index)
            if ivf is not None:
                ivf.cp.seed = seed
            quantizing = faiss.downcast_index(ivf) if ivf is not None else faiss.downcast_index(index)
            if hasattr(quantizing, "pq"):
                quantizing.pq.cp.seed = seed
            train_factory_index(index, factory, sample)
        for block in blocks:
            index.add(_as_float32(block))
        return cls(index, settings)

    @classmethod
    def load(cls, directory: Path, settings: dict[str, Any]) -> FactoryIndex:
        index = cls._read(directory)
        if "nprobe" in settings:
            set_nprobe(index, settings["factory"], settings["nprobe"])
        return cls(index, settings)


def fit_pca_projection(sample: np.ndarray, components: int) -> PcaProjection:
    """PCA of `sample` (N x D): its mean and the `components` eigenvectors of its covariance
    with the largest eigenvalues (the top right singular vectors of the centred sample),
    strongest first, one per row."""
    sample = np.asarray(sample, dtype=np.float64)
    if not 1 <= components <= min(sample.shape):
        raise UserInputError(f"PCA to {components} dimensions needs at least {components} training "
                             f"descriptors of dimension >= {components}; got {sample.shape[0]} of {sample.shape[1]}")
    # the kit's one PCA fit (as the trained DELF's descriptor PCA uses), without whitening
    fitted = fit_pca_whitening(sample, dim=components, whiten=False)
    return PcaProjection(fitted.mean, fitted.projection)


def project_normalised(pca: PcaProjection, descriptors: np.ndarray) -> np.ndarray:
    """N x D descriptors -> their L2-normalised N x K projections, float32."""
    return l2_normalize(pca.apply(descriptors)).astype(np.float32)


# Bytes of one node of scipy's k-d tree (`ckdtreenode`: split_dim, children, split, start_idx,
# end_idx, two child pointers and their two indices: nine 8-byte fields).
_KDTREE_NODE_BYTES = 72


@FEATURE_INDEXES.register("pca10-kdtree")
class PcaKdTreeIndex:
    """Sundaresan et al.'s index: PCA to `components` (10) dimensions, L2-normalised, in a k-d tree.

    The projected points are rounded to float32 (as saved) before the tree (float64) is
    built, so a loaded index answers exactly as the one built. Saved as `pca.npz` (`mean`,
    `projection`) and `points.npy` (N x components float32); the tree is rebuilt on load.
    `memory_bytes` = the tree's float64 points + its int64 permutation + its nodes
    (`tree.size` x 72 bytes) + the PCA's mean and projection.
    """

    kind: ClassVar[str] = "pca10-kdtree"
    PCA_FILE: ClassVar[str] = "pca.npz"
    POINTS_FILE: ClassVar[str] = "points.npy"

    def __init__(self, pca: PcaProjection, points: np.ndarray, leafsize: int = 16, workers: int = -1):
        self.pca = pca
        self.dim = pca.input_dim
        self.points = np.asarray(points, dtype=np.float32)
        self.leafsize = positive_int("leafsize", leafsize)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers == 0 or workers < -1:
            raise UserInputError(f"kd-tree workers must be a positive integer or -1 (all cores), got {workers!r}")
        self.workers = workers
        self.tree = cKDTree(self.points.astype(np.float64), leafsize=self.leafsize)

    @property
    def size(self) -> int:
        return len(self.points)

    def settings(self) -> dict[str, Any]:
        return {"components": self.pca.dim, "leafsize": self.leafsize, "workers": self.workers}

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        projected = project_normalised(self.pca, queries).astype(np.float64)
        distances, positions = self.tree.query(projected, k=k, workers=self.workers)
        distances = np.asarray(distances, dtype=np.float32).reshape(len(projected), k)
        positions = np.asarray(positions, dtype=np.int64).reshape(len(projected), k)
        # scipy marks missing neighbours with position n (and distance inf).
        positions[positions >= self.size] = -1
        return distances, positions

    def memory_bytes(self) -> int:
        return (self.tree.data.nbytes + self.tree.indices.nbytes + self.tree.size * _KDTREE_NODE_BYTES
                + self.pca.mean.nbytes + self.pca.projection.nbytes)

    def save(self, directory: Path) -> None:
        with atomic_write(directory / self.PCA_FILE, "wb") as handle:
            np.savez(handle, mean=self.pca.mean, projection=self.pca.projection)
        with atomic_write(directory / self.POINTS_FILE, "wb") as handle:
            np.save(handle, self.points, allow_pickle=False)

    @classmethod
    def build(cls, dim: int, sample: np.ndarray, blocks: Iterable[np.ndarray], count: int, seed: int = 0,
              components: int = 10, leafsize: int = 16, workers: int = -1) -> PcaKdTreeIndex:
        """Fit the PCA on `sample`, project every block, build the tree (exact; no seed needed)."""
        pca = fit_pca_projection(sample, positive_int("components", components))
        projections = [project_normalised(pca, block) for block in blocks]
        points = np.concatenate(projections) if projections else np.zeros((0, pca.dim), np.float32)
        return cls(pca, points, leafsize, workers)

    @classmethod
    def load(cls, directory: Path, settings: dict[str, Any]) -> PcaKdTreeIndex:
        try:
            with np.load(directory / cls.PCA_FILE, allow_pickle=False) as arrays:
                pca = PcaProjection(arrays["mean"], arrays["projection"])
            points = np.load(directory / cls.POINTS_FILE, allow_pickle=False)
        except (OSError, ValueError, KeyError) as exc:
            raise UserInputError(f"{directory}: unreadable pca10-kdtree index files: {exc}") from None
        if points.ndim != 2 or points.shape[1] != pca.dim:
            raise UserInputError(f"{directory / cls.POINTS_FILE}: shape {points.shape}, expected N x {pca.dim}")
        return cls(pca, points, settings["leafsize"], settings["workers"])


# --------------------------------------------------------------------------------------------
# The database index


def _request(store: LocalFeatureStore, kind: str, ids: Sequence[str], seed: int, train_size: int,
             options: dict[str, Any]) -> dict[str, Any]:
    """What an index build is asked for, as its manifest keeps it (through JSON: tuples become
    lists), so that a request and a saved index compare equal when they describe the same build."""
    request = {"kind": kind, "options": options, "seed": seed, "train_size": train_size,
               "database": {"method": store.method, "meta": store.meta, "dim": store.dim},
               "ids_sha256": ids_sha256(ids)}
    return json.loads(json.dumps(request))


@dataclass(frozen=True, eq=False)
class DatabaseIndex:
    """Every local feature of the database images `ids` in one `FeatureIndex`.

    `image_rows[p]` (int32) is the position in `ids` of the image that indexed feature `p`
    belongs to; features are indexed image by image in `ids` order. `request` is what was
    asked for (see the module docstring); images without features are in `ids` but own no row.
    """

    features: FeatureIndex
    image_rows: np.ndarray
    #: a list as built; an `IdIndex` (memory-mapped, a read-only sequence of str) as loaded
    ids: Sequence[str]
    request: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.features.kind

    @property
    def dim(self) -> int:
        return self.features.dim

    def memory_bytes(self) -> int:
        """The feature index's `memory_bytes` plus `image_rows` (4 bytes a feature). The id
        list is left out: every recognition method keeps one of its database."""
        return self.features.memory_bytes() + self.image_rows.nbytes

    def save(self, directory: str | Path) -> Path:
        """Write the index into `directory` (see the module docstring); returns it as a Path.

        An existing manifest is removed first and the new one written last, so a save that is
        killed leaves a folder that `load_database_index` refuses, never a mixed one.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / MANIFEST_NAME).unlink(missing_ok=True)
        atomic_write_bytes(directory / IDS_NAME, "".join(f"{i}\n" for i in self.ids).encode("ascii"))
        with atomic_write(directory / IMAGE_ROWS_NAME, "wb") as handle:
            np.save(handle, self.image_rows, allow_pickle=False)
        self.features.save(directory)
        write_manifest(directory, {
            "format": FORMAT, "version": FORMAT_VERSION, "request": self.request,
            "settings": {"kind": self.kind, **self.features.settings()},
            "features": self.features.size, "images": len(self.ids),
        })
        return directory


def disk_bytes(directory: str | Path) -> int:
    """Total size in bytes of the files of a saved index folder."""
    return sum(path.stat().st_size for path in Path(directory).iterdir() if path.is_file())


def _read_index_manifest(directory: Path) -> dict:
    return read_manifest(directory, MANIFEST_NAME, FORMAT, FORMAT_VERSION, "a DELF database index")


def read_index_request(directory: str | Path) -> dict:
    """What the index saved in `directory` was built from (its manifest's request), read without
    loading the index."""
    return _read_index_manifest(Path(directory))["request"]


def load_database_index(directory: str | Path) -> DatabaseIndex:
    """The index saved in `directory`; a folder without a finished save is a UserInputError."""
    directory = Path(directory)
    manifest = _read_index_manifest(directory)
    settings = dict(manifest.get("settings") or {})
    kind = settings.pop("kind", None)
    features = feature_index_class(kind).load(directory, settings)
    ids = open_ids(directory)  # what a recognition worker loads: no list of the database's ids
    try:
        image_rows = np.load(directory / IMAGE_ROWS_NAME, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UserInputError(f"{directory / IMAGE_ROWS_NAME}: unreadable: {exc}") from None
    if image_rows.dtype != np.int32 or image_rows.shape != (features.size,) or len(ids) != manifest.get("images"):
        raise UserInputError(f"{directory}: image_rows ({image_rows.dtype}, {image_rows.shape}) or ids "
                             f"({len(ids)}) do not match the {features.size} features and "
                             f"{manifest.get('images')} images of its manifest")
    return DatabaseIndex(features, image_rows, ids, manifest["request"])


def _feature_blocks(store: LocalFeatureStore, rows: Sequence[int], progress: bool) -> Iterator[np.ndarray]:
    """The descriptors of the store's `rows`, in order, concatenated into blocks of about ADD_BLOCK."""
    pending: list[np.ndarray] = []
    gathered = 0
    for row in tqdm(rows, desc="index local features", unit="img", disable=not progress):
        descriptors = store.read(row).descriptors
        if len(descriptors):
            pending.append(descriptors)
            gathered += len(descriptors)
        if gathered >= ADD_BLOCK:
            yield _as_float32(np.concatenate(pending))
            pending, gathered = [], 0
    if pending:
        yield _as_float32(np.concatenate(pending))


def _training_sample(store: LocalFeatureStore, rows: Sequence[int], counts: np.ndarray, size: int,
                     rng: np.random.Generator) -> np.ndarray:
    """`size` descriptors (all when fewer): whole images with features drawn in a seeded random
    order until they hold `size` features, then `size` of those features drawn uniformly.
    `counts` (features per row) must hold at least one feature."""
    order = rng.permutation(np.flatnonzero(counts))
    needed = int(np.searchsorted(np.cumsum(counts[order]), size)) + 1
    chosen = np.sort(order[:needed])
    sample = np.concatenate([store.read(rows[i]).descriptors for i in chosen])
    if len(sample) > size:
        sample = sample[np.sort(rng.choice(len(sample), size, replace=False))]
    return _as_float32(sample)


def build_database_index(store: LocalFeatureStore, kind: str, ids: Sequence[str] | None = None, seed: int = 0,
                         train_size: int = 100_000, progress: bool = True, **options: Any) -> DatabaseIndex:
    """Index the local features of `ids` (default: every image of `store`) with the feature
    index that the spec `kind` names ("flat", "pq", "pca10-kdtree", or a faiss factory string:
    see `feature_index_class`) and its `options`.

    Trained (coarse centroids, PQ codebooks, PCA) on a sample of `train_size` descriptors drawn with `seed`
    (see `_training_sample`); the same store, ids, kind, options and seed give the same index.
    An id missing from the store is a UserInputError.
    """
    kind = canonical_spec(kind)  # an unknown spec is refused before any reading
    ids = list(store.ids if ids is None else ids)
    check_ids(ids)
    rows = store.rows(ids).tolist()
    missing = [image_id for image_id, row in zip(ids, rows) if row < 0]
    if missing:
        raise UserInputError(f"{store.directory}: {len(missing)} database image(s) have no local features, "
                             f"first: {missing[0]}")
    counts = np.array([len(store.read(row)) for row in rows], dtype=np.int64)
    if counts.sum() == 0:
        raise UserInputError(f"{store.directory}: the {len(ids)} database images have no local features")
    rng = np.random.default_rng(seed)
    sample = _training_sample(store, rows, counts, positive_int("train_size", train_size), rng)
    features = build_feature_index(kind, store.dim, sample, _feature_blocks(store, rows, progress),
                                   int(counts.sum()), seed=seed, **options)
    image_rows = np.repeat(np.arange(len(ids), dtype=np.int32), counts)
    return DatabaseIndex(features, image_rows, ids, _request(store, kind, ids, seed, train_size, options))


def open_database_index(directory: str | Path, store: LocalFeatureStore, kind: str, ids: Sequence[str] | None = None,
                        seed: int = 0, train_size: int = 100_000, progress: bool = True,
                        **options: Any) -> DatabaseIndex:
    """The index of `build_database_index(store, kind, ids, seed, train_size, **options)`,
    loaded from `directory` when it holds that one, else built and saved there.

    A folder holding a finished index built with other arguments is a UserInputError (the
    first difference named), so a changed option never silently reuses a stale index.
    """
    directory = Path(directory)
    ids = list(store.ids if ids is None else ids)
    if (directory / MANIFEST_NAME).is_file():
        index = load_database_index(directory)
        wanted = _request(store, canonical_spec(kind), ids, seed, train_size, options)
        different = [key for key in wanted if index.request.get(key) != wanted[key]]
        if different:
            key = different[0]
            raise UserInputError(f"{directory}: holds a DELF index built with another {key} "
                                 f"({index.request.get(key)!r} vs {wanted[key]!r} requested); "
                                 "choose another folder or delete this one")
        return index
    index = build_database_index(store, kind, ids, seed, train_size, progress, **options)
    index.save(directory)
    return index
