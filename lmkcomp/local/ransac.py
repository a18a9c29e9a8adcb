"""A seeded, vectorised RANSAC for 2-D affine transforms, after the official DELF example.

The DELF example verifies matches with scikit-image's `ransac(..., AffineTransform,
min_samples=3, residual_threshold=20, max_trials=1000)`, which is unseeded and scores one
trial at a time. This is the same algorithm, made reproducible and computed in blocks:

1. a trial draws 3 distinct correspondences uniformly (from a numpy Generator seeded with
   `seed`) and solves the affine map src -> dst through them exactly; collinear samples
   (zero triangle area) give no model and are skipped;
2. its inliers are the correspondences with Euclidean residual |A src - dst| < `residual`;
3. the best trial has the most inliers, ties going to the smaller sum of squared inlier
   residuals, then to the earlier trial;
4. `trials` trials are run, or fewer once `confidence` < 1 is reached: after each block, the
   run stops when trials done >= log(1 - confidence) / log(1 - w^3), w being the best inlier
   ratio so far (confidence 1, the DELF setting, never stops early);
5. the model is refit by least squares on the best trial's inliers, which are returned as
   they were (as scikit-image does).
"""

from __future__ import annotations

import math

import numpy as np

# Trials per block are capped so a block's residual matrix (correspondences x trials, two
# float64 coordinates) stays around 4 MiB whatever the number of correspondences.
_BLOCK_ELEMENTS = 1 << 18
# |det| of [[x1, y1, 1], [x2, y2, 1], [x3, y3, 1]] is twice the triangle's area in px^2.
_MIN_DET = 1e-6


def fit_affine(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares affine map src -> dst (both N x 2, N >= 3) as a 3 x 3 matrix, last row 0 0 1."""
    design = np.column_stack([src, np.ones(len(src))])
    solution, *_ = np.linalg.lstsq(design, dst, rcond=None)
    return np.vstack([solution.T, [0.0, 0.0, 1.0]])


def sample_triples(rng: np.random.Generator, n: int, count: int) -> np.ndarray:
    """`count` x 3 indices, each row 3 distinct values drawn uniformly from range(n), n >= 3."""
    first = rng.integers(0, n, count)
    second = rng.integers(0, n - 1, count)
    second += second >= first
    low, high = np.minimum(first, second), np.maximum(first, second)
    # The k-th smallest value of range(n) without {low, high}: skip low, then skip high.
    third = rng.integers(0, n - 2, count)
    third += third >= low
    third += third >= high
    return np.stack([first, second, third], axis=1)


def ransac_affine(src: np.ndarray, dst: np.ndarray, residual: float, trials: int, confidence: float = 1.0,
                  seed: int = 0) -> tuple[np.ndarray | None, np.ndarray]:
    """`(model, inliers)` for correspondences src[i] -> dst[i] (N x 2 each), as described above.

    `model` is the refit 3 x 3 affine matrix, None when no trial found 3 inliers; `inliers` is
    a boolean mask of length N (all False without a model).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    n = len(src)
    no_model = (None, np.zeros(n, dtype=bool))
    if n < 3:
        return no_model
    rng = np.random.default_rng(seed)
    homogeneous = np.column_stack([src, np.ones(n)])
    threshold = residual * residual
    block = max(1, min(trials, _BLOCK_ELEMENTS // n))
    best_count, best_sse, best_mask = 0, math.inf, None
    done, needed = 0, trials
    while done < min(trials, needed):
        size = min(block, trials - done)
        samples = sample_triples(rng, n, size)
        systems = homogeneous[samples]  # size x 3 x 3
        valid = np.abs(np.linalg.det(systems)) > _MIN_DET
        done += size
        if not valid.any():
            continue
        # Each model maps [x, y, 1] to (x', y'): 3 x 2, solved exactly through its 3 points.
        models = np.linalg.solve(systems[valid], dst[samples[valid]])
        error_x = homogeneous @ models[:, :, 0].T - dst[:, :1]  # n x trials
        error_y = homogeneous @ models[:, :, 1].T - dst[:, 1:]
        squared = error_x * error_x + error_y * error_y
        inliers = squared < threshold
        counts = inliers.sum(axis=0)
        sse = np.where(inliers, squared, 0.0).sum(axis=0)
        # lexsort's last key is the primary one: most inliers, then smallest SSE, then earliest.
        winner = np.lexsort((np.arange(len(counts)), sse, -counts))[0]
        if counts[winner] > best_count or (counts[winner] == best_count and sse[winner] < best_sse):
            best_count, best_sse, best_mask = int(counts[winner]), float(sse[winner]), inliers[:, winner].copy()
            if confidence < 1.0:
                needed = _trials_needed(best_count / n, confidence)
    if best_mask is None or best_count < 3:
        return no_model
    return fit_affine(src[best_mask], dst[best_mask]), best_mask


def _trials_needed(inlier_ratio: float, confidence: float) -> float:
    """Trials after which an all-inlier sample of 3 was drawn with probability `confidence`."""
    all_inliers = inlier_ratio**3
    if all_inliers >= 1.0:
        return 0.0
    return math.log(1.0 - confidence) / math.log(1.0 - all_inliers)
