"""Landmark recognition from nearest neighbours or from a classifier head: array-level functions.

Every function here works on in-memory arrays of one block of queries (or of all predictions)
and states its exact definition; `lmkcomp.inference` runs them over embedding stores and kNN
tables of any size.

- Soft voting (2019 retrieval winner, Ozaki & Yokoo): the query's top-k train neighbours each vote
  for their landmark with weight (similarity) + (inlier term), where the inlier term is
  min(inliers, cap) / cap when spatial verification counted inliers for that pair, else 0. The
  predicted landmark has the largest total; the total is the confidence. With k = 1 and no
  inliers this is the plain nearest-neighbour baseline (label and similarity of the nearest
  train image).
- Inlier voting (weight-free, as an all-pairs verification pipeline votes): every verified
  (query, train image) pair votes for the train image's landmark with its inlier count (the
  kit's verified voting counts only the inliers beyond the model's minimal sample,
  `excess_inliers`); a landmark scores the sum of its `k` best counts, and the best-scoring
  landmark is predicted.
- Distractor demotion (Ozaki & Yokoo 2019): landmarks predicted for unusually many test images are
  demoted below all the others.
- Non-landmark penalty (2020/2021 recognition winners): a neighbour's similarity minus how
  much the train image, and the query, look like a bank of non-landmark pictures.
- Classifier head: argmax of the head's class scores, computed in class blocks.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from lmkcomp.errors import UserInputError
from lmkcomp.features.store import l2_normalize


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


def excess_inliers(inliers: ArrayLike, sample_size: int) -> np.ndarray:
    """``max(inliers - sample_size, 0)`` per pair, as int64.

    RANSAC fits its model to `sample_size` correspondences (4 for a homography), and the model
    passes through them: any two unrelated images with that many putative matches reach that
    many inliers. Only the inliers beyond them are evidence that the pair shares a landmark.
    Summed over a landmark's `k` best pairs (`inlier_voting`), raw counts give a landmark with
    many train images k x `sample_size` votes from chance alone, which outvotes the single true
    pair of a landmark with one train image (realdev, leave-one-out: 4 of 23 queries lost that
    way on a 4x upscaled copy of the photos; the small synthetic preset, 53 train images of
    15 landmarks: GAP 0.781 -> 0.836 with `fast`).
    """
    if sample_size < 0:
        raise ValueError(f"sample_size must be >= 0, got {sample_size}")
    return np.maximum(np.asarray(inliers, dtype=np.int64) - sample_size, 0)


def inlier_voting(
    query_rows: ArrayLike, candidate_labels: ArrayLike, inliers: ArrayLike, n_queries: int, k: int = 3
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predicted label, score and whether a prediction exists, for query rows 0 .. n_queries-1.

    Pair i (in the given order, e.g. nearest candidate first) joins query `query_rows[i]` to a
    train image of landmark `candidate_labels[i]` with `inliers[i]` verified inliers. For each
    query, each landmark among its pairs scores the sum of its `k` largest inlier counts; the
    prediction is the landmark with the largest score, the score its confidence. Among tied
    landmarks (all zero included) the one whose first pair comes first wins, so a query
    without a single inlier takes the landmark of its first pair with score 0. A query with
    no pair at all has no prediction (label -1, score 0, False).
    """
    rows = np.asarray(query_rows, dtype=np.int64)
    labels = np.asarray(candidate_labels, dtype=np.int64)
    counts = np.asarray(inliers, dtype=np.int64)
    if not rows.shape == labels.shape == counts.shape or rows.ndim != 1:
        raise ValueError(f"query_rows {rows.shape}, candidate_labels {labels.shape} and inliers {counts.shape} "
                         "must be equal-length vectors")
    if k < 1:
        raise UserInputError(f"k must be >= 1, got {k}")
    if len(rows) and not 0 <= rows.min() <= rows.max() < n_queries:
        raise ValueError(f"query rows must lie in [0, {n_queries})")
    predicted = np.full(n_queries, -1, dtype=np.int64)
    score = np.zeros(n_queries, dtype=np.float64)
    found = np.zeros(n_queries, dtype=bool)
    if not len(rows):
        return predicted, score, found
    order = np.arange(len(rows))
    # by query, landmark, then most inliers first (then pair order): the first k of each
    # (query, landmark) run are its k best pairs
    ranked = np.lexsort((order, -counts, labels, rows))
    rows, labels, counts, order = rows[ranked], labels[ranked], counts[ranked], order[ranked]
    starts = np.flatnonzero(np.r_[True, (rows[1:] != rows[:-1]) | (labels[1:] != labels[:-1])])
    rank_in_run = np.arange(len(rows)) - np.repeat(starts, np.diff(np.r_[starts, len(rows)]))
    run_score = np.add.reduceat(np.where(rank_in_run < k, counts, 0), starts)
    run_first = np.minimum.reduceat(order, starts)
    run_rows, run_labels = rows[starts], labels[starts]
    # per query, the run of the largest score, then of the earliest first pair
    best = np.lexsort((run_first, -run_score, run_rows))
    first_of_query = best[np.r_[True, run_rows[best][1:] != run_rows[best][:-1]]]
    chosen = run_rows[first_of_query]
    predicted[chosen] = run_labels[first_of_query]
    score[chosen] = run_score[first_of_query]
    found[chosen] = True
    return predicted, score, found


# --------------------------------------------------------------------------------------------
# Distractor demotion


def prediction_counts(best_landmarks: ArrayLike, valid: ArrayLike) -> np.ndarray:
    """How many valid predictions share each query's predicted landmark (int64): for a valid row
    i, ``|{j : valid[j] and best_landmarks[j] == best_landmarks[i]}|`` (itself included, so >= 1);
    0 for a row without a valid prediction. Counted over every row given, as
    `demote_frequent_labels` counts the predicted set: it demotes exactly the rows
    whose count exceeds its `max_predictions`."""
    labels = np.asarray(best_landmarks).reshape(-1)
    valid = np.asarray(valid, dtype=bool).reshape(-1)
    if labels.shape != valid.shape:
        raise ValueError(f"best_landmarks {labels.shape} and valid {valid.shape} must be equal-length vectors")
    counts = np.zeros(len(labels), dtype=np.int64)
    if valid.any():
        _, inverse, per_landmark = np.unique(labels[valid], return_inverse=True, return_counts=True)
        counts[valid] = per_landmark[inverse.reshape(-1)]
    return counts


def demote_frequent_labels(
    labels: ArrayLike, confidences: ArrayLike, max_predictions: int = 30, factor: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Confidences with the predictions of over-predicted landmarks demoted (Ozaki & Yokoo 2019).

    Test sets are mostly non-landmark pictures, and those tend to vote for the same few
    "distractor" landmarks (train classes full of generic scenes). A landmark predicted for
    more than `max_predictions` rows is treated as one. With `c` the confidences, `D` the rows
    predicting such a landmark and `K` the other rows:

    - `factor` None (push below): `c'[D] = c[D] - (max c[D] - min c[K]) - 1`, so every demoted
      prediction ranks below every kept one while the order and gaps within `D` are unchanged;
      when `K` is empty nothing changes (there is nothing to rank below).
    - `factor` given: `c'[D] = factor * c[D]` (meant for non-negative confidences).

    Rows in `K` keep their confidence. Returns (new confidences as float64, boolean mask of `D`).
    """
    labels = np.asarray(labels)
    confidences = np.asarray(confidences, dtype=np.float64)
    if labels.shape != confidences.shape or labels.ndim != 1:
        raise ValueError(f"labels {labels.shape} and confidences {confidences.shape} must be equal-length vectors")
    if max_predictions < 0:
        raise UserInputError(f"max_predictions must be >= 0, got {max_predictions}")
    demoted = prediction_counts(labels, np.ones(len(labels), dtype=bool)) > max_predictions
    result = confidences.copy()
    if not demoted.any():
        return result, demoted
    if factor is not None:
        result[demoted] *= factor
    elif not demoted.all():
        result[demoted] -= confidences[demoted].max() - confidences[~demoted].min() + 1.0
    return result, demoted


# --------------------------------------------------------------------------------------------
# Non-landmark bank


def mean_top_similarity(bank_scores: ArrayLike, n: int) -> np.ndarray:
    """Mean of the first `n` columns of kNN scores against a non-landmark bank, per row.

    `bank_scores` is (rows, >= n), best first (a kNN table's scores), so this is the mean
    similarity of each row to its `n` most similar non-landmark pictures.
    """
    bank_scores = np.asarray(bank_scores, dtype=np.float64)
    if bank_scores.ndim != 2 or bank_scores.shape[1] < n or n < 1:
        raise UserInputError(f"the mean of the top {n} bank similarities needs at least {n} neighbours per row; "
                             f"got a kNN table of width {bank_scores.shape[-1]}")
    return bank_scores[:, :n].mean(axis=1)


def nonlandmark_penalized_scores(
    neighbour_scores: ArrayLike, neighbour_bank_similarity: ArrayLike, query_bank_similarity: ArrayLike
) -> np.ndarray:
    """A - B - C per (query, neighbour) (2020/2021 recognition winners).

    A = `neighbour_scores[i, j]`, the similarity of query i to its j-th train neighbour;
    B = `neighbour_bank_similarity[i, j]`, that train image's mean top-5 similarity to the
    non-landmark bank; C = `query_bank_similarity[i]`, the query's mean top-10 similarity to
    the bank (both from `mean_top_similarity`). A train image or a query that looks like
    generic non-landmark scenes loses weight, so such test images end low in the GAP ranking.
    """
    a = np.asarray(neighbour_scores, dtype=np.float64)
    b = np.asarray(neighbour_bank_similarity, dtype=np.float64)
    c = np.asarray(query_bank_similarity, dtype=np.float64)
    if a.shape != b.shape or c.shape != a.shape[:1]:
        raise ValueError(f"shapes A {a.shape}, B {b.shape}, C {c.shape}: expected (n, k), (n, k), (n,)")
    return a - b - c[:, None]


# --------------------------------------------------------------------------------------------
# Classifier head


def classifier_predictions(
    embeddings: ArrayLike,
    weight: ArrayLike,
    bias: ArrayLike | None = None,
    cosine: bool = True,
    subcenters: int = 1,
    class_block: int = 16384,
) -> tuple[np.ndarray, np.ndarray]:
    """(class index, confidence) per embedding row from a classifier head's weights.

    Cosine heads (`cosine=True`: ArcFace, CosFace, AdaCos, sub-centre ArcFace): rows
    `j*subcenters .. j*subcenters + subcenters - 1` of `weight` are class j's sub-centres;
    the score of class j is the largest cosine between the L2-normalised embedding and its
    L2-normalised sub-centres (the head's logits without scale and margin); the prediction is
    the class with the largest score (the lowest index among ties) and the confidence is that
    cosine. Softmax head (`cosine=False`): logits `e W^T + b` on the embeddings as given; the
    prediction is the argmax logit and the confidence its softmax probability,
    `exp(max logit - logsumexp(logits))`.

    Classes are scored `class_block` at a time, so memory is about
    rows x class_block x subcenters floats whatever the number of classes.
    """
    embeddings = np.asarray(embeddings, dtype=np.float32)
    weight = np.asarray(weight)
    if weight.ndim != 2 or embeddings.ndim != 2 or weight.shape[1] != embeddings.shape[1]:
        raise ValueError(f"embeddings {embeddings.shape} and head weight {weight.shape} do not match")
    if subcenters < 1 or weight.shape[0] % subcenters:
        raise ValueError(f"{weight.shape[0]} weight rows are not a whole number of classes of {subcenters} sub-centres")
    if not cosine and subcenters != 1:
        raise ValueError("a softmax head has no sub-centres")
    num_classes = weight.shape[0] // subcenters
    n = embeddings.shape[0]
    if cosine:
        embeddings = l2_normalize(embeddings)
    best = np.full(n, -np.inf, dtype=np.float64)
    best_class = np.zeros(n, dtype=np.int64)
    log_total = np.full(n, -np.inf, dtype=np.float64)  # running logsumexp of the logits (softmax)
    for start in range(0, num_classes, class_block):
        stop = min(start + class_block, num_classes)
        block = np.asarray(weight[start * subcenters:stop * subcenters], dtype=np.float32)
        if cosine:
            scores = (embeddings @ l2_normalize(block).T).reshape(n, stop - start, subcenters).max(axis=2)
        else:
            scores = embeddings @ block.T
            if bias is not None:
                scores += np.asarray(bias[start:stop], dtype=np.float32)
        scores = scores.astype(np.float64)
        block_best = scores.argmax(axis=1)
        block_max = scores[np.arange(n), block_best]
        if not cosine:
            log_total = np.logaddexp(log_total, block_max + np.log(np.exp(scores - block_max[:, None]).sum(axis=1)))
        better = block_max > best  # strict: an earlier class keeps a tie
        best_class[better] = start + block_best[better]
        best[better] = block_max[better]
    confidence = best if cosine else np.exp(best - log_total)
    return best_class, confidence
