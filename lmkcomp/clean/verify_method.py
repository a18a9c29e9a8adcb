"""Cleaning by spatial verification (Ozaki & Yokoo 2019): an image stays when enough of its nearest
same-landmark images share its geometry.

For each train image x:

1. its `k` nearest train images by global descriptor (x itself left out);
2. of those, the first `max_neighbours` with x's label: its same-label neighbours;
3. each pair (x, neighbour) is spatially verified (`lmkcomp.local.pairs.verify_pairs`), and
   the neighbour counts as verified when the pair has at least `inlier_threshold` inliers;
4. x is kept when its verified neighbours number more than `min_verified`;

then landmarks left with fewer than `min_images` images are dropped (GLDv2-clean has none).

`neighbour_pair_table` does steps 1-3 up to the pair table (resumable, threshold-free), and
`clean_verify` does the rest from that table alone, so trying other thresholds costs no RANSAC.

The inlier threshold depends on the local features. Seed 001 used 30 with DELF; SIFT on the
synthetic 256 px images finds about 240 features an image and far fewer inliers, so it needs
a lower one: see `DEFAULT_INLIER_THRESHOLDS`. These were measured on renders; on other images
calibrate one for a target specificity on a pair table of labelled images (`lmkcomp verify`,
then `lmkcomp calibrate --scores PAIRS --labels CSV`: same-landmark pairs are the positives,
the others the negatives, through `lmkcomp.calibration`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from lmkcomp.checks import positive_int
from lmkcomp.clean.result import CleaningResult
from lmkcomp.errors import UserInputError
from lmkcomp.executors import Executor, LocalExecutor
from lmkcomp.features.store import StoreRows
from lmkcomp.local.pairs import knn_pairs, read_pair_table, verify_pairs
from lmkcomp.local.store import LocalFeatureStore
from lmkcomp.local.verify import VerifyConfig

#: Inliers that make a pair verified, by local-feature method. DELF's is Ozaki & Yokoo's. SIFT's was
#: measured with the `fast` preset on the synthetic small dataset (256 px images, at most 1000
#: SIFT features, thumbnail kNN, 52 K pairs): pairs showing the same landmark had a median of
#: 31 inliers, other pairs a 99th percentile of 6 and a maximum of 10 (a homography fits its
#: own 4-point sample, so chance pairs score 4 or 5). With min_verified 2, threshold 8 removed
#: 99.8% of the noisy images; 6 removed 97%, 5 only 85%, and each step above 8 loses more
#: correct images. At 128 px SIFT finds far fewer inliers and 5 does better. RootSIFT takes
#: SIFT's threshold: on `lmkcomp bench verify` (same data, 300 + 300 pairs) its different-
#: landmark pairs scored no more chance inliers than SIFT's (mean 0.6 vs 1.6, maximum 8 vs 7).
#: These figures are pydegensac's, which `fast` fits with. `fast-magsac` takes the same thresholds,
#: untuned: its chance pairs score 0.4 more inliers on average (the same maximum) on `lmkcomp bench
#: verify`, and at 8 it cleaned the demo's data with precision 0.857 where `fast` reaches 0.861
#: (recall 0.985 for both).
DEFAULT_INLIER_THRESHOLDS: dict[str, int] = {"delf-tf": 30, "sift": 8, "rootsift": 8}
REMOVED = "too few spatially verified neighbours"


def default_inlier_threshold(method: str) -> int:
    """`DEFAULT_INLIER_THRESHOLDS[method]`; a method without a measured threshold is an error."""
    try:
        return DEFAULT_INLIER_THRESHOLDS[method]
    except KeyError:
        raise UserInputError(f"no default inlier threshold for {method} features; give one "
                             f"(known defaults: {', '.join(f'{m} {t}' for m, t in DEFAULT_INLIER_THRESHOLDS.items())})") from None


def neighbour_pair_table(
    ids: Sequence[str],
    landmark_ids: ArrayLike,
    embeddings: ArrayLike | StoreRows,
    store: LocalFeatureStore,
    out: str | Path,
    config: VerifyConfig,
    k: int = 1000,
    max_neighbours: int = 100,
    workers: int = 1,
    chunk_size: int = 2000,
    progress: bool = True,
    knn_out: str | Path | None = None,
    executor: Executor | None = None,
    knn_shard_rows: int | None = None,
) -> pd.DataFrame:
    """Steps 1-3: each image paired with its same-label neighbours and verified into `out`.

    `embeddings` are L2-normalised global descriptors aligned with `ids` (an array, or
    `StoreRows` of an embedding store, streamed by the kNN); `store` holds the
    images' local features. The kNN pair list is written shard by shard to `knn_out`
    (resumable, see `knn_pairs`; a temporary folder when None), the pair table to `out`
    (resumable, see `verify_pairs`); returns the pair table, read back. `executor` runs both
    the kNN shards (`knn_shard_rows` images each, default `knn_pairs`') and the verification
    chunks (default: `workers` processes here).
    """
    landmark_ids = np.asarray(landmark_ids)
    executor = executor or LocalExecutor(workers)
    pairs = knn_pairs(ids, embeddings, ids, embeddings, k, same_label=(landmark_ids, landmark_ids),
                      max_per_query=max_neighbours, out=knn_out, executor=executor, progress=progress,
                      shard_rows=knn_shard_rows)
    return read_pair_table(verify_pairs(pairs, store, store, out, config, chunk_size=chunk_size, progress=progress,
                                        executor=executor))


def clean_verify(ids: Sequence[str], landmark_ids: ArrayLike, pair_table: pd.DataFrame, inlier_threshold: int = 30,
                 min_verified: int = 2, min_images: int = 2) -> CleaningResult:
    """Steps 3-4 and the landmark drop, from a pair table (`query_id, candidate_id, inliers`).

    A pair (x, y) of the table is a verified neighbour of x when y is another image with x's
    label and the pair has at least `inlier_threshold` inliers; repeated pairs count once.
    Images with at most `min_verified` verified neighbours are removed, then landmarks with
    fewer than `min_images` images left. An id of the table that is not in `ids` is a
    UserInputError (the table belongs to other images).
    """
    positive_int("inlier_threshold", inlier_threshold)
    positive_int("min_images", min_images)
    if isinstance(min_verified, bool) or not isinstance(min_verified, (int, np.integer)) or min_verified < 0:
        raise UserInputError(f"min_verified must be a non-negative integer, got {min_verified!r}")
    ids = list(ids)
    landmark_ids = np.asarray(landmark_ids)
    position = pd.Index(ids)
    rows = {}
    for column in ("query_id", "candidate_id"):
        rows[column] = position.get_indexer(pair_table[column])
        unknown = np.flatnonzero(rows[column] < 0)
        if unknown.size:
            raise UserInputError(f"pair table {column} {pair_table[column].iloc[unknown[0]]} is not among "
                                 f"the {len(ids)} images being cleaned")
    query, candidate = rows["query_id"], rows["candidate_id"]
    verified = ((pair_table["inliers"].to_numpy() >= inlier_threshold) & (query != candidate)
                & (landmark_ids[query] == landmark_ids[candidate]))
    distinct = np.unique(np.stack([query[verified], candidate[verified]], axis=1), axis=0)
    counts = np.bincount(distinct[:, 0], minlength=len(ids))
    result = CleaningResult("verify", ids, landmark_ids, np.ones(len(ids), dtype=bool),
                            settings={"inlier_threshold": inlier_threshold, "min_verified": min_verified,
                                      "min_images": min_images})
    result.remove(np.flatnonzero(counts <= min_verified), REMOVED)
    result.drop_small_landmarks(min_images)
    return result
