"""Descriptor health: is a set of global descriptors any good at telling landmarks apart, and
has it collapsed? Measured on the embeddings and landmark labels alone, before any search.

Definitions (rows are L2-normalised first; a zero row stays zero):

- mean-vector norm: `||(1/N) sum_i x_i||`. Its square is the mean cosine similarity over all
  N^2 ordered pairs, self-pairs included, so it is about 0 for descriptors spread over the
  sphere and 1 when every row points the same way; an offset shared by all rows shows here.
- same / different pairs: two rows whose labels are equal / unequal, both labels >= 0 (label -1,
  no landmark, is in no pair). Within one set of rows the pairs are (i, j), i < j; given a
  database they are every query row with every database row, and nothing else.
- similarity of a pair: the cosine of its two rows, clipped to [-1, 1] against rounding.
- ROC AUC: the probability that a random same pair is more similar than a random different
  pair, ties counting half (Mann-Whitney U / (n_same * n_different)); 0.5 is chance.
- effective rank (Roy & Vetterli, 2007): `exp(-sum_i p_i log p_i)` with `p_i = s_i / sum_j s_j`,
  `s` the singular values of the centred rows; between 1 and the dimension, it counts the
  directions the descriptors really use.

Pair budget: all candidate pairs are measured when there are at most `max_pairs` of them;
otherwise each kind gets half of the budget (and the other kind's unused share), drawn
uniformly without replacement among the pairs *of that kind*. Among L landmarks of equal size
about 1 pair in L is a same pair (GLDv2 has 10^5 landmarks), so drawing from all pairs would
leave almost none; drawing uniformly within each kind keeps every statistic an unbiased estimate of the one the
exhaustive enumeration would give. Pairs are indexed by a bijection from [0, count) computed
from the label groups, so no pair list, and no N x N matrix, is ever built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from lmkcomp.features.store import l2_normalize

#: histogram of the similarities: HISTOGRAM_BINS equal bins over [-1, 1]
HISTOGRAM_BINS = 50
#: below this AUC a same pair beats a different pair little more often than a coin would have
#: it (0.5); 0.65 stays clear of the sampling noise of an AUC on a few hundred pairs of each
#: kind, whose standard error at chance is about 0.03
NEAR_CHANCE_AUC = 0.65
#: above this mean-vector norm the mean cosine of all pairs exceeds 0.9^2 = 0.81 (see the
#: module docstring): same landmark or not, pairs look alike; the descriptor has collapsed
COLLAPSED_MEAN_NORM = 0.9
#: the near-chance rule in words, for every warning that cites it
NEAR_CHANCE_RULE = f"AUC below {NEAR_CHANCE_AUC} or mean-vector norm above {COLLAPSED_MEAN_NORM}"
#: rows (seeded sample) behind the effective rank; its cost grows with rows x dim^2
RANK_ROWS = 20_000
#: floats of the row blocks gathered at once when measuring pair similarities
_BLOCK_FLOATS = 1 << 22


def histogram_edges() -> np.ndarray:
    """The `HISTOGRAM_BINS + 1` bin edges over [-1, 1] of every similarity histogram."""
    return np.linspace(-1.0, 1.0, HISTOGRAM_BINS + 1)


def _json_float(value: float) -> float | None:
    """`value`, or None for NaN: JSON has no NaN."""
    return None if math.isnan(value) else float(value)


@dataclass(frozen=True)
class SimilarityStats:
    """Cosine similarities of one kind of pair (same or different landmark).

    `candidates`: pairs of this kind; `count`: pairs measured (all of them, or a uniform sample);
    `median`, `p05`, `p95`: of the measured similarities (NaN when none); `histogram`: their
    counts in the bins of `histogram_edges()`.
    """

    candidates: int
    count: int
    median: float
    p05: float
    p95: float
    histogram: tuple[int, ...]

    @property
    def sampled(self) -> bool:
        return self.count < self.candidates

    def pairs_text(self) -> str:
        """"N pairs", or "N of M pairs, sampled"."""
        return f"{self.count} of {self.candidates} pairs, sampled" if self.sampled else f"{self.count} pairs"

    def density(self) -> np.ndarray:
        """The histogram as a probability density (integrates to 1; zeros when empty)."""
        counts = np.asarray(self.histogram, dtype=np.float64)
        width = 2.0 / HISTOGRAM_BINS
        return counts / (max(self.count, 1) * width)

    def to_dict(self) -> dict:
        return {"candidates": self.candidates, "count": self.count, "median": _json_float(self.median),
                "p05": _json_float(self.p05), "p95": _json_float(self.p95), "histogram": list(self.histogram)}


@dataclass(frozen=True)
class EmbeddingHealth:
    """What `embedding_health` measured (definitions in the module docstring).

    `database_rows` and `database_mean_norm` are None for pairs within one set of rows.
    `rank_rows`: the rows the effective rank was computed on.
    """

    rows: int
    dim: int
    database_rows: int | None
    mean_norm: float
    database_mean_norm: float | None
    same: SimilarityStats
    different: SimilarityStats
    auc: float
    effective_rank: float
    rank_rows: int
    max_pairs: int
    seed: int

    @property
    def near_chance(self) -> bool:
        """True when the AUC is below NEAR_CHANCE_AUC or the mean-vector norm above
        COLLAPSED_MEAN_NORM; a NaN AUC (no pairs of one kind) is not evidence either way."""
        return near_chance(self.auc, self.mean_norm)

    def to_dict(self) -> dict:
        """A JSON-ready dict; NaN becomes None (null), so the JSON never holds NaN."""
        return {
            "rows": self.rows, "dim": self.dim, "database_rows": self.database_rows,
            "mean_norm": _json_float(self.mean_norm),
            "database_mean_norm": None if self.database_mean_norm is None else _json_float(self.database_mean_norm),
            "same": self.same.to_dict(), "different": self.different.to_dict(),
            "auc": _json_float(self.auc), "effective_rank": _json_float(self.effective_rank),
            "rank_rows": self.rank_rows, "near_chance": self.near_chance,
            "histogram_edges": histogram_edges().tolist(), "max_pairs": self.max_pairs, "seed": self.seed,
        }

    def summary(self) -> str:
        """One paragraph for a person: every measure with what it means here."""
        pairs = (f"{self.rows} query rows x {self.database_rows} database rows" if self.database_rows is not None
                 else f"pairs within {self.rows} rows")
        text = [f"{self.dim}-d descriptors, {pairs}.",
                f"Mean-vector norm {self.mean_norm:.3f} (0 = spread over the sphere, 1 = all alike)."]
        for name, stats in (("Same-landmark", self.same), ("Different-landmark", self.different)):
            if stats.count:
                text.append(f"{name} cosine: median {stats.median:.3f}, 5-95 % {stats.p05:.3f} to {stats.p95:.3f} "
                            f"({stats.pairs_text()}).")
            else:
                text.append(f"No {name.lower()} pairs.")
        auc = "undefined" if math.isnan(self.auc) else f"{self.auc:.3f}"
        text.append(f"ROC AUC of same vs different {auc} (0.5 = chance, 1 = every same pair above every "
                    f"different one). Effective rank {self.effective_rank:.1f} of {self.dim} dimensions.")
        if self.near_chance:
            text.append(f"Near chance ({NEAR_CHANCE_RULE}): this descriptor barely tells landmarks apart.")
        return " ".join(text)


def near_chance(auc: float, mean_vector_norm: float) -> bool:
    """The near-chance rule: AUC below NEAR_CHANCE_AUC or mean-vector norm above
    COLLAPSED_MEAN_NORM (a NaN AUC, no pairs of one kind, is not evidence either way)."""
    return auc < NEAR_CHANCE_AUC or mean_vector_norm > COLLAPSED_MEAN_NORM


def roc_auc(positive_scores: np.ndarray, negative_scores: np.ndarray) -> float:
    """Mann-Whitney ROC AUC: the fraction of (positive, negative) pairs where the positive
    scores higher, ties counting half; NaN when either set is empty. O(n log n): the positives'
    average ranks among all scores, not a loop over pairs."""
    positive = np.asarray(positive_scores, dtype=np.float64).ravel()
    negative = np.asarray(negative_scores, dtype=np.float64).ravel()
    if positive.size == 0 or negative.size == 0:
        return math.nan
    scores = np.concatenate([positive, negative])
    if not np.isfinite(scores).all():
        raise ValueError("roc_auc: scores must be finite")
    order = np.argsort(scores, kind="stable")
    _, first, counts = np.unique(scores[order], return_index=True, return_counts=True)
    # a group of tied scores at sorted positions first..first+count-1 shares their mean 1-based rank
    ranks = np.empty(scores.size, dtype=np.float64)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    u = ranks[:positive.size].sum() - positive.size * (positive.size + 1) / 2.0
    return float(u / (positive.size * negative.size))


# --------------------------------------------------------------------------------------------
# Pairs


@dataclass(frozen=True)
class _Partners:
    """Pairs of one kind, as partner ranges: query position p (in label-grouped order) has
    `counts[p]` partners, and `partner(p, r)` is the grouped position of its r-th one."""

    counts: np.ndarray
    partner: Callable[[np.ndarray, np.ndarray], np.ndarray]

    @property
    def total(self) -> int:
        return int(self.counts.sum())


def _grouped(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The labelled rows sorted by label (stable), and their labels in that order."""
    rows = np.flatnonzero(labels >= 0)
    rows = rows[np.argsort(labels[rows], kind="stable")]
    return rows, labels[rows]


def _within_pairs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, _Partners, _Partners]:
    """Pairs p < q of grouped positions: same pairs run to the end of p's group, different
    pairs from there to the end (the later groups), so each unordered pair occurs once."""
    rows, grouped = _grouped(labels)
    stop = np.searchsorted(grouped, grouped, "right")
    same = _Partners(stop - np.arange(len(rows)) - 1, lambda p, r: p + 1 + r)
    different = _Partners(len(rows) - stop, lambda p, r: stop[p] + r)
    return rows, rows, same, different


def _cross_pairs(labels: np.ndarray,
                 database_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, _Partners, _Partners]:
    """Every labelled query with every labelled database row: the same pairs are the database
    group of the query's label, the different pairs the database rows before and after it."""
    rows, grouped = _grouped(labels)
    database_rows, database_grouped = _grouped(database_labels)
    start = np.searchsorted(database_grouped, grouped, "left")
    size = np.searchsorted(database_grouped, grouped, "right") - start
    same = _Partners(size, lambda p, r: start[p] + r)
    different = _Partners(len(database_rows) - size, lambda p, r: np.where(r < start[p], r, r + size[p]))
    return rows, database_rows, same, different


def sample_without_replacement(total: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """`size` (<= `total`) distinct integers of [0, total), every subset equally likely, sorted.

    Memory O(size) however large `total` (numpy's `choice` permutes all of a population under
    50 times the sample): past 2 * size, iid draws are kept in draw order while new, each new
    one being uniform among those not yet kept.
    """
    if total <= 2 * size:
        return np.sort(rng.permutation(total)[:size])
    kept = np.empty(0, dtype=np.int64)
    while len(kept) < size:
        need = size - len(kept)
        # each draw is new with probability over 1/2, so 2 * need draws mostly suffice
        draws = rng.integers(0, total, size=2 * need)
        _, first = np.unique(draws, return_index=True)
        fresh = draws[np.sort(first)]
        kept = np.concatenate([kept, fresh[~np.isin(fresh, kept)][:need]])
    return np.sort(kept)


def _draw(partners: _Partners, budget: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Grouped positions (p, q) of every pair when there are at most `budget`, else of `budget`
    pairs drawn uniformly without replacement."""
    total = partners.total
    index = np.arange(total, dtype=np.int64) if total <= budget else sample_without_replacement(total, budget, rng)
    ends = np.cumsum(partners.counts)
    p = np.searchsorted(ends, index, "right")
    r = index - (ends[p] - partners.counts[p])
    return p, partners.partner(p, r)


def _inverse_norms(x: np.ndarray) -> np.ndarray:
    """1 / max(||row||, 1e-12) per row, as `l2_normalize` divides, computed block by block."""
    out = np.empty(len(x), dtype=np.float32)
    step = max(1, _BLOCK_FLOATS // max(x.shape[1], 1))
    for start in range(0, len(x), step):
        block = x[start:start + step].astype(np.float32)
        out[start:start + step] = 1.0 / np.maximum(np.linalg.norm(block, axis=1), 1e-12)
    return out


def _similarities(x: np.ndarray, x_scale: np.ndarray, i: np.ndarray,
                  y: np.ndarray, y_scale: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Cosine of rows x[i[k]] and y[j[k]] for every k, gathering a bounded block of rows at a time."""
    out = np.empty(len(i), dtype=np.float32)
    step = max(1, _BLOCK_FLOATS // max(x.shape[1], 1))
    for start in range(0, len(i), step):
        a, b = i[start:start + step], j[start:start + step]
        dots = np.einsum("ij,ij->i", x[a].astype(np.float32), y[b].astype(np.float32))
        out[start:start + step] = dots * x_scale[a] * y_scale[b]
    return np.clip(out, -1.0, 1.0, out=out)


def _stats(similarities: np.ndarray, candidates: int) -> SimilarityStats:
    histogram = tuple(int(c) for c in np.histogram(similarities, bins=histogram_edges())[0])
    if similarities.size == 0:
        return SimilarityStats(candidates, 0, math.nan, math.nan, math.nan, histogram)
    p05, median, p95 = (float(v) for v in np.quantile(similarities, [0.05, 0.5, 0.95]))
    return SimilarityStats(candidates, int(similarities.size), median, p05, p95, histogram)


# --------------------------------------------------------------------------------------------
# Row statistics


def mean_norm(embeddings: np.ndarray) -> float:
    """`||mean of the L2-normalised rows||` (module docstring), accumulated in float64 by blocks."""
    total = np.zeros(embeddings.shape[1], dtype=np.float64)
    step = max(1, _BLOCK_FLOATS // max(embeddings.shape[1], 1))
    for start in range(0, len(embeddings), step):
        total += l2_normalize(embeddings[start:start + step]).sum(axis=0, dtype=np.float64)
    return float(np.linalg.norm(total / len(embeddings)))


def effective_rank(embeddings: np.ndarray, max_rows: int = RANK_ROWS, seed: int = 0) -> tuple[float, int]:
    """(effective rank, rows used) of the L2-normalised, centred rows; at most `max_rows` rows,
    a seeded uniform sample without replacement when there are more.

    The squared singular values are the eigenvalues of the min(rows, dim)-square covariance
    or Gram matrix (float64). All rows identical leaves no spread at all: 1.0 by convention,
    the measure's minimum.
    """
    rows = len(embeddings)
    if rows > max_rows:
        x = l2_normalize(embeddings[sample_without_replacement(rows, max_rows, np.random.default_rng(seed))])
    else:
        x = l2_normalize(embeddings)
    centre = x.mean(axis=0, dtype=np.float64)
    # centred in float64, block by block: float32 centring would leave rounding noise in the
    # null directions, which the square roots below would turn into spurious spread
    if x.shape[1] <= x.shape[0]:
        square = np.zeros((x.shape[1], x.shape[1]))
        step = max(1, _BLOCK_FLOATS // x.shape[1])
        for start in range(0, len(x), step):
            block = x[start:start + step] - centre
            square += block.T @ block
    else:
        centred = x - centre
        square = centred @ centred.T
    eigenvalues = np.linalg.eigvalsh(square)
    # rounding leaves eigenvalues of about largest * size * eps where the true ones are 0;
    # their square roots would add spurious directions
    cutoff = eigenvalues.max(initial=0.0) * len(square) * np.finfo(np.float64).eps
    singular = np.sqrt(eigenvalues[eigenvalues > cutoff])
    if singular.size == 0:
        return 1.0, len(x)
    p = singular / singular.sum()
    return float(np.exp(-(p * np.log(p)).sum())), len(x)


# --------------------------------------------------------------------------------------------
# The measurement


def _check_rows(name: str, embeddings: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    embeddings = np.asarray(embeddings)
    labels = np.asarray(labels)
    if embeddings.ndim != 2 or len(embeddings) == 0:
        raise ValueError(f"{name}: expected a non-empty (rows, dim) array, got shape {embeddings.shape}")
    if labels.shape != (len(embeddings),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name}: expected {len(embeddings)} integer labels, "
                         f"got {labels.dtype} of shape {labels.shape}")
    return embeddings, labels.astype(np.int64)


def embedding_health(embeddings: np.ndarray, labels: np.ndarray, database: np.ndarray | None = None,
                     database_labels: np.ndarray | None = None, max_pairs: int = 200_000,
                     seed: int = 0) -> EmbeddingHealth:
    """Mean-vector norm, same / different landmark similarities, their ROC AUC and the effective
    rank of `embeddings` (rows; labels -1 = no landmark), as the module docstring defines them.

    With `database` (and its labels), pairs are query row x database row only; mean norm and
    effective rank stay those of `embeddings`, and `database_mean_norm` is added. At most
    `max_pairs` pairs are measured (>= 2: one of each kind). `seed` (>= 0) fixes the pair and
    row samples. Beyond the inputs, memory holds the measured similarities, blocks of rows, and
    at most RANK_ROWS normalised rows with a min(rows, dim)-square matrix for the effective rank.
    """
    if max_pairs < 2:
        raise ValueError(f"max_pairs must be at least 2 (a pair of each kind), got {max_pairs}")
    embeddings, labels = _check_rows("embeddings", embeddings, labels)
    if (database is None) != (database_labels is None):
        raise ValueError("database and database_labels go together")
    if database is None:
        other = embeddings
        query_rows, other_rows, same, different = _within_pairs(labels)
    else:
        other, other_labels = _check_rows("database", database, database_labels)
        if other.shape[1] != embeddings.shape[1]:
            raise ValueError(f"database of dim {other.shape[1]}, embeddings of dim {embeddings.shape[1]}")
        query_rows, other_rows, same, different = _cross_pairs(labels, other_labels)
    scale = _inverse_norms(embeddings)
    other_scale = scale if database is None else _inverse_norms(other)
    pair_rng = np.random.default_rng(seed)

    def measure(partners: _Partners, budget: int) -> np.ndarray:
        p, q = _draw(partners, budget, pair_rng)
        return _similarities(embeddings, scale, query_rows[p], other, other_scale, other_rows[q])

    # each kind gets half the budget plus whatever the other kind leaves unused
    same_budget = max(max_pairs // 2, max_pairs - different.total)
    same_similarities = measure(same, same_budget)
    different_similarities = measure(different, max_pairs - len(same_similarities))
    rank, rank_rows = effective_rank(embeddings, seed=seed)
    return EmbeddingHealth(
        rows=len(embeddings), dim=embeddings.shape[1], database_rows=None if database is None else len(other),
        mean_norm=mean_norm(embeddings), database_mean_norm=None if database is None else mean_norm(other),
        same=_stats(same_similarities, same.total), different=_stats(different_similarities, different.total),
        auc=roc_auc(same_similarities, different_similarities), effective_rank=rank, rank_rows=rank_rows,
        max_pairs=max_pairs, seed=seed,
    )
