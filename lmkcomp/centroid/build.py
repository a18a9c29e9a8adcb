"""Landmark centroids by agglomerative clustering (Boiarov & Tyantov 2019, section 3.4.1).

For each landmark, its train embeddings (L2-normalised first) are clustered by scikit-learn's
`AgglomerativeClustering` with the configured linkage (complete, single or average), metric
(euclidean, or cosine distance 1 - cos) and `distance_threshold` (clusters stop merging at that
linkage distance). A cluster with at least `min_cluster_size` images is valid; the landmark
gets one centroid per valid cluster, or, when none is valid, one centroid from its largest
cluster (ties: the cluster scikit-learn numbers first). With `one_per_class` there is no
clustering: one centroid from all the landmark's images (the paper's "1 centroid" baseline).
A centroid is the mean of its cluster's embeddings, L2-normalised, so that a dot product with
a unit query is a cosine similarity.

Bounded cost: agglomerative clustering holds an n x n distance matrix, so a landmark with
more than `max_images` images is clustered on a random subsample of `max_images` of them
(seeded per landmark by `seed` and the landmark id), and every other image joins the cluster
whose normalised mean is most similar to it before sizes and centroids are computed.

References (for the references check of Algorithm 2): given per landmark, else its
`reference_k` most central images (`lmkcomp.clean.embedding_methods.central_references`, over
the same subsample for a large landmark); the index keeps the mean of their embeddings.

`build_centroids` with an output folder works in chunks of landmarks, each saved as a part file,
so a killed build resumes with the chunks still missing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from sklearn.cluster import AgglomerativeClustering
from tqdm import tqdm

from lmkcomp.centroid.index import (
    DEFAULT_INDEX_SPEC,
    FORMAT,
    FORMAT_VERSION,
    CentroidIndex,
    centroid_factory,
    load_centroids,
)
from lmkcomp.clean.embedding_methods import central_references, landmark_groups
from lmkcomp.errors import UserInputError
from lmkcomp.features.store import l2_normalize
from lmkcomp.fileio import atomic_write
from lmkcomp.manifest import first_setting_difference
from lmkcomp.manifest import MANIFEST_NAME, read_manifest, write_manifest

LINKAGES = ("complete", "single", "average")
METRICS = ("euclidean", "cosine")
#: landmarks per part file of a resumable build
CHUNK_LANDMARKS = 1000
PARTS_DIR = "parts"


@dataclass(frozen=True)
class ClusteringConfig:
    """How centroids are computed (see the module docstring).

    The default threshold 1.2 (euclidean between unit vectors, i.e. every pair of a complete-
    linkage cluster has cosine >= 0.28) split the large landmarks of the synthetic `small`
    preset into a few view clusters with the kit's CPU descriptors; `min_cluster_size` 50 is
    the paper's, for a database of 20 to 1000 images per landmark.
    """

    linkage: str = "complete"
    metric: str = "euclidean"
    distance_threshold: float = 1.2
    min_cluster_size: int = 50
    one_per_class: bool = False
    max_images: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.linkage not in LINKAGES:
            raise UserInputError(f"linkage {self.linkage!r}: expected one of {', '.join(LINKAGES)}")
        if self.metric not in METRICS:
            raise UserInputError(f"metric {self.metric!r}: expected one of {', '.join(METRICS)}")
        if not self.distance_threshold > 0:
            raise UserInputError(f"distance_threshold must be positive, got {self.distance_threshold!r}")
        for name in ("min_cluster_size", "max_images"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserInputError(f"{name} must be a positive integer, got {value!r}")
        if self.max_images < 2:
            raise UserInputError(f"max_images must be at least 2, got {self.max_images}")


def _agglomerative(unit: np.ndarray, config: ClusteringConfig) -> np.ndarray:
    if len(unit) == 1:
        return np.zeros(1, dtype=np.int64)
    model = AgglomerativeClustering(n_clusters=None, distance_threshold=config.distance_threshold,
                                    linkage=config.linkage, metric=config.metric)
    return model.fit_predict(unit).astype(np.int64)


def _cluster_means(unit: np.ndarray, labels: np.ndarray) -> np.ndarray:
    sums = np.zeros((labels.max() + 1, unit.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, unit)
    return l2_normalize(sums).astype(np.float32)


def cluster_labels(unit: np.ndarray, config: ClusteringConfig, rng: np.random.Generator) -> np.ndarray:
    """A cluster label per row of `unit` (L2-normalised embeddings of one landmark): all rows
    clustered, or the `max_images` subsample clustered and the others assigned to the most
    similar cluster mean."""
    n = len(unit)
    if n <= config.max_images:
        return _agglomerative(unit, config)
    sample = np.sort(rng.choice(n, size=config.max_images, replace=False))
    labels = np.empty(n, dtype=np.int64)
    labels[sample] = _agglomerative(unit[sample], config)
    rest = np.setdiff1d(np.arange(n), sample)
    labels[rest] = np.argmax(unit[rest] @ _cluster_means(unit[sample], labels[sample]).T, axis=1)
    return labels


def landmark_centroids(embeddings: np.ndarray, config: ClusteringConfig,
                       rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Centroids of one landmark's embeddings (n x D): `(centroids v x D, sizes v)`, largest
    cluster first (see the module docstring for the rule)."""
    unit = l2_normalize(np.asarray(embeddings, dtype=np.float32)).astype(np.float32)
    if len(unit) == 0:
        raise ValueError("a landmark needs at least one embedding")
    if config.one_per_class:
        return _cluster_means(unit, np.zeros(len(unit), dtype=np.int64)), np.array([len(unit)])
    rng = np.random.default_rng(config.seed) if rng is None else rng
    labels = cluster_labels(unit, config, rng)
    sizes = np.bincount(labels)
    # largest first; a stable sort keeps scikit-learn's numbering among equal sizes
    order = np.argsort(-sizes, kind="stable")
    valid = order[sizes[order] >= config.min_cluster_size]
    chosen = valid if len(valid) else order[:1]
    return _cluster_means(unit, labels)[chosen], sizes[chosen]


def _reference_rows(unit: np.ndarray, given: np.ndarray | None, k: int, rng: np.random.Generator,
                    max_images: int) -> np.ndarray:
    if given is not None or k == 0:
        return np.zeros(0, dtype=np.int64) if given is None else given
    candidates = np.arange(len(unit))
    if len(unit) > max_images:  # central_references is n x n
        candidates = np.sort(rng.choice(len(unit), size=max_images, replace=False))
    return central_references(unit, candidates, k)


def _local_references(references: Mapping[int, Sequence[int]],
                      groups: Mapping[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Given references (landmark -> rows of the embeddings) as positions in each landmark's
    member list; a reference that is not an image of its landmark is a user error."""
    local = {}
    for landmark, rows in references.items():
        members = groups.get(int(landmark))
        if members is None:
            continue
        rows = np.asarray(rows, dtype=np.int64)
        positions = np.minimum(np.searchsorted(members, rows), len(members) - 1)
        if len(rows) == 0 or not np.array_equal(members[positions], rows):
            raise UserInputError(f"landmark {landmark}: its references must be some of its own images")
        local[int(landmark)] = positions
    return local


def _compute_chunk(landmarks: Sequence[int], groups: Mapping[int, np.ndarray], embeddings: np.ndarray,
                   config: ClusteringConfig, references: Mapping[int, np.ndarray] | None,
                   reference_k: int) -> dict[str, np.ndarray]:
    """Centroids, their landmarks and (when references are wanted) each landmark's reference
    mean, for the landmarks of one chunk."""
    centroids, centroid_landmarks, means, referenced = [], [], [], []
    for landmark in landmarks:
        members = groups[landmark]
        unit = l2_normalize(np.asarray(embeddings[members], dtype=np.float32)).astype(np.float32)
        rng = np.random.default_rng([config.seed, landmark])
        found, _ = landmark_centroids(unit, config, rng)
        centroids.append(found)
        centroid_landmarks.append(np.full(len(found), landmark, dtype=np.int64))
        if reference_k or references is not None:
            given = None if references is None else references.get(landmark)
            rows = _reference_rows(unit, given, reference_k, rng, config.max_images)
            if len(rows):
                means.append(unit[rows].mean(axis=0))
                referenced.append(landmark)
    dim = embeddings.shape[1]
    return {
        "centroids": np.concatenate(centroids),
        "landmark_ids": np.concatenate(centroid_landmarks),
        "reference_landmarks": np.array(referenced, dtype=np.int64),
        "reference_means": np.stack(means).astype(np.float32) if means else np.zeros((0, dim), np.float32),
    }


def _fingerprint(landmark_ids: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(landmark_ids, dtype=np.int64).tobytes()).hexdigest()


def _open_build(out: Path, wanted: dict) -> bool:
    """Create the build's manifest, or check the one on disk; True when the build is complete."""
    if not (out / MANIFEST_NAME).is_file():
        if out.is_dir() and any(out.iterdir()):
            raise UserInputError(f"{out}: not empty and not a centroid index; choose another folder")
        out.mkdir(parents=True, exist_ok=True)
        write_manifest(out, {"format": FORMAT, "version": FORMAT_VERSION, "complete": False, "settings": wanted})
        return False
    found = read_manifest(out, MANIFEST_NAME, FORMAT, FORMAT_VERSION, "a centroid index")
    difference = first_setting_difference(found.get("settings"), wanted, "settings")
    if difference is not None:
        raise UserInputError(f"{out}: holds centroids built with other settings ({difference}); "
                             "choose another folder or delete it")
    return bool(found.get("complete"))


def build_centroids(landmark_ids: np.ndarray, embeddings: np.ndarray, config: ClusteringConfig = ClusteringConfig(),
                    out: str | Path | None = None, references: Mapping[int, Sequence[int]] | None = None,
                    reference_k: int = 0, index_spec: str = DEFAULT_INDEX_SPEC, source: dict | None = None,
                    progress: bool = True) -> CentroidIndex:
    """Centroids of every landmark of `landmark_ids` (one per row of `embeddings`, n x D, any
    float dtype; rows are normalised here).

    - `references`: landmark -> rows (of `embeddings`) of its given references; a landmark
      without given references gets its `reference_k` most central images (none when 0: it
      then fails every references check). With neither, the index has no references.
    - `out`: folder to save into (resumable, see the module docstring); None builds in memory.
      A complete folder built with the same settings is loaded, not rebuilt.
    - `source`: JSON-able description of the inputs (embedding store, labels), recorded in the
      settings so that resuming with other inputs is refused.
    """
    landmark_ids = np.asarray(landmark_ids, dtype=np.int64)
    if len(landmark_ids) != len(embeddings) or len(landmark_ids) == 0:
        raise UserInputError(f"{len(landmark_ids)} labels for {len(embeddings)} embeddings")
    if isinstance(reference_k, bool) or not isinstance(reference_k, int) or reference_k < 0:
        raise UserInputError(f"reference_k must be a non-negative integer, got {reference_k!r}")
    centroid_factory(index_spec)  # an unknown spec is refused before any clustering
    groups = landmark_groups(landmark_ids)
    landmarks = sorted(groups)
    given = None if references is None else _local_references(references, groups)
    settings = {"clustering": dataclasses.asdict(config), "reference_k": reference_k,
                "given_references": given is not None, "index_spec": index_spec, "images": len(landmark_ids),
                "landmarks": len(landmarks), "dim": int(embeddings.shape[1]), "labels_sha1": _fingerprint(landmark_ids),
                "source": json.loads(json.dumps(source or {}))}
    out = None if out is None else Path(out)
    if out is not None and _open_build(out, settings):
        return load_centroids(out)
    parts = []
    bar = tqdm(total=len(landmarks), desc="centroids", unit="landmark", disable=not progress)
    for k, start in enumerate(range(0, len(landmarks), CHUNK_LANDMARKS)):
        chunk = landmarks[start:start + CHUNK_LANDMARKS]
        part_path = None if out is None else out / PARTS_DIR / f"part-{k:05d}.npz"
        if part_path is not None and part_path.is_file():
            with np.load(part_path, allow_pickle=False) as arrays:
                part = {name: arrays[name] for name in arrays.files}
        else:
            part = _compute_chunk(chunk, groups, embeddings, config, given, reference_k)
            if part_path is not None:
                with atomic_write(part_path, "wb") as handle:
                    np.savez(handle, **part)
        parts.append(part)
        bar.update(len(chunk))
    bar.close()
    has_references = given is not None or reference_k > 0
    index = CentroidIndex(
        np.concatenate([p["centroids"] for p in parts]), np.concatenate([p["landmark_ids"] for p in parts]),
        index_spec, settings, np.concatenate([p["reference_landmarks"] for p in parts]) if has_references else None,
        np.concatenate([p["reference_means"] for p in parts]) if has_references else None,
    )
    if out is not None:
        index.save(out)
        for part in sorted((out / PARTS_DIR).glob("part-*.npz")):
            part.unlink()
        (out / PARTS_DIR).rmdir()
    return index
