"""Landmark recognition from nearest neighbours.

Soft voting (2019 retrieval winner, seed 001): the query's top-k train neighbours each vote for
their landmark with weight (similarity) + (inlier term) where the inlier term is
min(inliers, cap) / cap when spatial verification counted inliers for that pair, else 0. The
predicted landmark has the largest total; the total is the confidence.
"""

from __future__ import annotations

import numpy as np


def soft_voting(
    neighbour_scores: np.ndarray,
    neighbour_labels: np.ndarray,
    k: int = 3,
    inliers: np.ndarray | None = None,
    inlier_cap: float = 70.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted label and confidence per query row.

    `neighbour_scores` and `neighbour_labels` are (n_queries, >= k) arrays, best neighbour first;
    `inliers` (same shape, optional) holds verified inlier counts. Only the first k columns vote.
    A tie between totals goes to the label of the better-ranked neighbour.
    """
    scores = np.asarray(neighbour_scores, dtype=np.float64)[:, :k]
    labels = np.asarray(neighbour_labels)[:, :k]
    weights = scores.copy()
    if inliers is not None:
        weights += np.minimum(np.asarray(inliers, dtype=np.float64)[:, :k], inlier_cap) / inlier_cap
    # totals[i, j] = summed weight of the label held by neighbour j of query i
    same = labels[:, :, None] == labels[:, None, :]
    totals = (same * weights[:, None, :]).sum(axis=2)
    best = totals.argmax(axis=1)  # first maximum = best-ranked neighbour among tied labels
    rows = np.arange(len(labels))
    return labels[rows, best], totals[rows, best]
