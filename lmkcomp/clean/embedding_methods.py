"""Cleaning by global embeddings alone: DBSCAN per landmark (DBSCAN poster 2022) and reference
centroids (Boiarov & Tyantov 2019, Algorithm 3). Embeddings are L2-normalised rows aligned with `ids`."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from lmkcomp.clean.result import CleaningResult
from lmkcomp.errors import UserInputError


def landmark_groups(landmark_ids: np.ndarray) -> dict[int, np.ndarray]:
    """Landmark -> its rows, ascending (a stable sort by landmark keeps row order)."""
    order = np.argsort(landmark_ids, kind="stable")
    values, starts = np.unique(landmark_ids[order], return_index=True)
    return {int(v): order[s:e] for v, s, e in zip(values, starts, [*starts[1:], len(order)])}


def clean_dbscan(ids: Sequence[str], landmark_ids: np.ndarray, embeddings: np.ndarray, eps: float = 0.33,
                 min_samples: int = 2) -> CleaningResult:
    """Per landmark, DBSCAN with cosine distance `eps`; keep the largest cluster only.

    Cosine distance d = 1 - cos between unit vectors equals |a - b|^2 / 2, so DBSCAN runs with
    Euclidean radius sqrt(2 eps) on a tree index instead of a dense n x n cosine matrix (a
    GLDv2 landmark can have thousands of images). Ties between equally large clusters go to
    the cluster found first. A landmark without any cluster loses all its images.
    """
    from sklearn.cluster import DBSCAN

    landmark_ids = np.asarray(landmark_ids)
    result = CleaningResult("dbscan", list(ids), landmark_ids, np.ones(len(ids), dtype=bool),
                            settings={"eps": eps, "min_samples": min_samples})
    radius = float(np.sqrt(2.0 * eps))
    for _, members in landmark_groups(landmark_ids).items():
        labels = DBSCAN(eps=radius, min_samples=min_samples).fit_predict(embeddings[members])
        clustered = labels[labels >= 0]
        if clustered.size == 0:
            result.remove(members, "no DBSCAN cluster")
            continue
        main = np.bincount(clustered).argmax()
        result.remove(members[labels != main], "outside the main DBSCAN cluster")
    return result


def central_references(embeddings: np.ndarray, members: np.ndarray, k: int) -> np.ndarray:
    """The `k` members with the highest mean cosine similarity to the other members."""
    if len(members) <= k:
        return members
    block = embeddings[members]
    similarity = block @ block.T
    centrality = (similarity.sum(axis=1) - np.diag(similarity)) / (len(members) - 1)
    return members[np.argsort(-centrality, kind="stable")[:k]]


def clean_references(ids: Sequence[str], landmark_ids: np.ndarray, embeddings: np.ndarray, gamma: float = 0.5,
                     references: Mapping[int, Sequence[str]] | None = None, k: int = 5) -> CleaningResult:
    """Reject images whose similarity to their landmark's reference centroid is below `gamma`.

    The references are given per landmark (e.g. checked by hand, as Boiarov & Tyantov 2019 did), or else the
    `k` most central images of the landmark. The centroid is the mean of the references'
    embeddings, L2-normalised so that `gamma` is a cosine threshold whatever the spread.
    """
    landmark_ids = np.asarray(landmark_ids)
    position = {image_id: i for i, image_id in enumerate(ids)}
    result = CleaningResult("references", list(ids), landmark_ids, np.ones(len(ids), dtype=bool),
                            settings={"gamma": gamma, "k": k, "given_references": references is not None})
    for landmark, members in landmark_groups(landmark_ids).items():
        if references is not None and landmark in references:
            unknown = [r for r in references[landmark] if r not in position]
            if unknown:
                raise UserInputError(f"reference {unknown[0]} of landmark {landmark} is not a train image")
            chosen = np.array([position[r] for r in references[landmark]])
        else:
            chosen = central_references(embeddings, members, k)
        centroid = embeddings[chosen].mean(axis=0)
        centroid /= max(float(np.linalg.norm(centroid)), 1e-12)
        similarity = embeddings[members] @ centroid
        result.remove(members[similarity < gamma], f"similarity to reference centroid below {gamma}")
    return result
