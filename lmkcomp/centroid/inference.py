"""Algorithm 2 of Boiarov & Tyantov 2019: which landmarks a query embedding shows, from the centroid index.

For a query q (L2-normalised embedding):

1. Scope: all centroids; with `geo_km` and known query coordinates, only the centroids of
   landmarks inside the `geo_km` x `geo_km` square around the query (`LandmarkMetadata.
   within_square`), and the threshold is `eta_geo` instead of `eta` (the paper lowers it there,
   since look-alikes rarely stand next to each other). An empty scope finds nothing.
2. Candidates: the `k` most similar distinct landmarks in scope, a landmark's similarity
   being the inner product with its most similar centroid (a landmark with several centroids
   counts once).
3. Threshold: if the best similarity is below eta the image is a non-landmark; otherwise the
   candidates with similarity >= eta go on.
4. References check (when `omega` is set): a candidate stays if the mean similarity of q to
   its landmark's reference embeddings is > omega; a landmark without references fails it.
5. Same city (when landmark metadata is given and `same_city`): the city is that of the top
   candidate (found by similarity, before the references check, as in Algorithm 2); a
   candidate in another city, or of unknown city, is dropped. The top candidate itself is
   never dropped by this rule.

The landmarks left are "found"; a Kaggle prediction is the first of them (its similarity is the
confidence), and an image with none gets no prediction.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from lmkcomp.calibration import Calibration, calibrate_recognition_threshold
from lmkcomp.centroid.index import DEFAULT_QUERY_BLOCK, CentroidIndex
from lmkcomp.centroid.metadata import LandmarkMetadata
from lmkcomp.errors import UserInputError
from lmkcomp.features.store import l2_normalize


@dataclass(frozen=True)
class InferenceConfig:
    """Settings of Algorithm 2 (see the module docstring). Similarities are cosines, so eta
    and omega are in [-1, 1] (the paper's eta = 250 was a dot product of unnormalised
    embeddings). `eta_geo` defaults to `eta`; `omega` None skips the references check;
    `geo_km` None disables the geo scope."""

    eta: float = 0.5
    k: int = 1
    omega: float | None = None
    geo_km: float | None = None
    eta_geo: float | None = None
    same_city: bool = True
    query_block: int = DEFAULT_QUERY_BLOCK

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise UserInputError(f"k must be a positive integer, got {self.k!r}")
        if self.geo_km is not None and not self.geo_km > 0:
            raise UserInputError(f"geo_km must be positive, got {self.geo_km!r}")
        if isinstance(self.query_block, bool) or not isinstance(self.query_block, int) or self.query_block < 1:
            raise UserInputError(f"query_block must be a positive integer, got {self.query_block!r}")


@dataclass(frozen=True)
class Recognitions:
    """Per query (rows) and candidate (columns, best first, k of them):

    - `landmark_ids`: n x k candidate landmarks in scope (-1: none), whatever their similarity;
    - `similarities`: n x k their similarities (NaN: none);
    - `found`: n x k, the candidate passed every rule;
    - `scoped`: n, the query was restricted by the geo scope.
    """

    landmark_ids: np.ndarray
    similarities: np.ndarray
    found: np.ndarray
    scoped: np.ndarray

    def found_landmarks(self, row: int) -> list[tuple[int, float]]:
        """`(landmark, similarity)` of every landmark found on query `row`, best first."""
        columns = np.flatnonzero(self.found[row])
        return [(int(self.landmark_ids[row, c]), float(self.similarities[row, c])) for c in columns]

    def predictions(self, ids: Sequence[str]) -> dict[str, tuple[int, float]]:
        """Kaggle predictions: id -> (first found landmark, its similarity); ids of queries
        where nothing was found are left out."""
        has = self.found.any(axis=1)
        first = np.argmax(self.found, axis=1)
        rows = np.flatnonzero(has)
        return {ids[r]: (int(self.landmark_ids[r, first[r]]), float(self.similarities[r, first[r]])) for r in rows}

    def best_candidates(self, ids: Sequence[str]) -> dict[str, tuple[int, float]]:
        """id -> (top candidate, its similarity) for every query with a candidate, before
        any rule: the raw scores for sweeping eta."""
        rows = np.flatnonzero(self.landmark_ids[:, 0] >= 0)
        return {ids[r]: (int(self.landmark_ids[r, 0]), float(self.similarities[r, 0])) for r in rows}


def _scoped_candidates(index: CentroidIndex, query: np.ndarray, allowed: np.ndarray,
                       k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-`k` distinct landmarks among `allowed` by exact inner product with their centroids."""
    landmarks = np.full(k, -1, dtype=np.int64)
    similarities = np.full(k, np.nan, dtype=np.float32)
    rows = index.rows_of(allowed)
    if len(rows) == 0:
        return landmarks, similarities
    scores = index.centroids[rows] @ query
    owners = index.landmark_ids[rows]
    # rows come grouped by landmark: the best centroid of each group
    starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
    best = np.maximum.reduceat(scores, starts)
    order = np.lexsort((owners[starts], -best))[:k]
    landmarks[:len(order)] = owners[starts][order]
    similarities[:len(order)] = best[order]
    return landmarks, similarities


def recognize(index: CentroidIndex, queries: np.ndarray, config: InferenceConfig = InferenceConfig(),
              landmark_metadata: LandmarkMetadata | None = None,
              coordinates: np.ndarray | None = None) -> Recognitions:
    """Algorithm 2 (module docstring) for every row of `queries` (n x D; rows are normalised
    here). `coordinates`: n x 2 (latitude, longitude), NaN where unknown; the geo scope needs
    it and `landmark_metadata`, the same-city rule needs `landmark_metadata`."""
    queries = l2_normalize(np.asarray(queries, dtype=np.float32)).astype(np.float32)
    if queries.ndim != 2 or queries.shape[1] != index.dim:
        raise UserInputError(f"queries of shape {queries.shape} for centroids of dimension {index.dim}")
    n, k = len(queries), config.k
    scoped = np.zeros(n, dtype=bool)
    if config.geo_km is not None:
        if landmark_metadata is None or coordinates is None:
            raise UserInputError("the geo scope needs landmark metadata and query coordinates")
        coordinates = np.asarray(coordinates, dtype=np.float64)
        if coordinates.shape != (n, 2):
            raise UserInputError(f"coordinates of shape {coordinates.shape} for {n} queries")
        scoped = np.isfinite(coordinates).all(axis=1)
    landmarks = np.full((n, k), -1, dtype=np.int64)
    similarities = np.full((n, k), np.nan, dtype=np.float32)
    free = np.flatnonzero(~scoped)
    if len(free):
        landmarks[free], similarities[free] = index.top_landmarks(queries[free], k, config.query_block)
    for row in np.flatnonzero(scoped):
        allowed = landmark_metadata.within_square(*coordinates[row], config.geo_km)
        landmarks[row], similarities[row] = _scoped_candidates(index, queries[row], allowed, k)

    eta = np.where(scoped, config.eta if config.eta_geo is None else config.eta_geo, config.eta)
    with np.errstate(invalid="ignore"):
        found = (landmarks >= 0) & (similarities >= eta[:, None])
        if config.omega is not None:
            found &= index.reference_similarity(queries, landmarks, config.query_block) > config.omega
    if config.same_city and landmark_metadata is not None:
        cities = landmark_metadata.city_of(landmarks)
        same = (cities == cities[:, :1]) & (cities[:, :1] >= 0)
        same[:, 0] = True
        found &= same
    return Recognitions(landmarks, similarities, found, scoped)


def calibrate_eta(index: CentroidIndex, queries: np.ndarray, query_ids: Sequence[str], labels: Mapping[str, int],
                  target_specificity: float) -> Calibration:
    """The lowest eta (a cosine, >= -1) at which at most 1 - `target_specificity` of a labelled
    split's non-landmark images keep a candidate (`lmkcomp.calibration.
    calibrate_recognition_threshold`).

    `queries`: the split's embeddings (rows of `query_ids`); `labels`: id -> landmark of its
    landmark images, every other image being a non-landmark. Each query scores the similarity
    of its top landmark over all centroids (Algorithm 2 with k = 1, no geo scope, references
    check or city rule: the rules eta alone decides).
    """
    query_ids = list(query_ids)
    top = recognize(index, queries, InferenceConfig(eta=-np.inf, k=1, same_city=False))
    best = top.best_candidates(query_ids)
    landmarks = [best[i][0] if i in best else -1 for i in query_ids]
    scores = [best[i][1] if i in best else -np.inf for i in query_ids]
    return calibrate_recognition_threshold(query_ids, landmarks, scores, labels, target_specificity, minimum=-1.0)


def knn_vote(index: CentroidIndex, queries: np.ndarray, neighbours: int,
             query_block: int = DEFAULT_QUERY_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """The kNN classification over centroids of the paper's Table 3 ("several centroids, k"):
    each of the `neighbours` most similar centroids votes for its landmark; the landmark with
    the most votes wins, ties going to the one whose best centroid is the more similar.
    Returns `(landmarks, similarities)` (n each): the winner and its best centroid's
    similarity. `neighbours` 1 is the nearest centroid's landmark.
    """
    queries = l2_normalize(np.asarray(queries, dtype=np.float32)).astype(np.float32)
    similarities, rows = index.search(queries, neighbours, query_block)
    landmarks = np.where(rows >= 0, index.landmark_ids[np.maximum(rows, 0)], -1)
    votes = (landmarks[:, :, None] == landmarks[:, None, :]).sum(axis=2)
    votes[landmarks < 0] = 0
    # columns are in descending similarity, so the first column holding the most votes is the
    # winner's best centroid
    winner = np.argmax(votes, axis=1)[:, None]
    return np.take_along_axis(landmarks, winner, axis=1)[:, 0], np.take_along_axis(similarities, winner, axis=1)[:, 0]


def write_recognition(index: CentroidIndex, queries: np.ndarray, query_ids: Sequence[str], out: str | Path,
                      config: InferenceConfig = InferenceConfig(), test_ids: Sequence[str] | None = None,
                      landmark_metadata: LandmarkMetadata | None = None,
                      coordinates: np.ndarray | None = None) -> tuple[Recognitions, Path]:
    """Run `recognize` and write the Kaggle recognition submission `out` (one row per test id,
    `test_ids` defaulting to `query_ids`; every test id needs a query embedding)."""
    from lmkcomp.submission import validate_submission, write_recognition_submission

    recognitions = recognize(index, queries, config, landmark_metadata, coordinates)
    test_ids = list(query_ids) if test_ids is None else list(test_ids)
    missing = sorted(set(test_ids) - set(query_ids))
    if missing:
        raise UserInputError(f"{len(missing)} test ids have no query embedding, first: {missing[0]}")
    out = Path(out)
    write_recognition_submission(out, test_ids, recognitions.predictions(list(query_ids)))
    validate_submission(out, "recognition", test_ids)
    return recognitions, out
