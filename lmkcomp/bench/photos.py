"""`lmkcomp bench photos`: the kit's weight-free recognition against an all-pairs reference
pipeline, on your own photos, accuracy and cost side by side.

Protocol (the one the kit's real-photo defaults are judged by): every query photo is verified
against every labelled candidate photo, then each landmark scores the summed inliers of its
`k` best verified candidates and the best landmark is predicted with that sum as confidence
(`lmkcomp.voting.inlier_voting`). The kit's variants count each pair's inliers beyond the
model's minimal sample (`lmkcomp.voting.excess_inliers`), as `recognize --method
verified-voting` does; the reference counts its raw inliers.

Queries and candidates come from a photo source in the import's layouts
(`lmkcomp.data.folders`: `SRC/<landmark>/`, `SRC/<split>/<landmark>/`, or a CSV listing):

- with test photos and train photos given, the test photos (non-landmark ones included) are
  the queries and the train photos the candidates; index photos take no part;
- otherwise leave-one-out: every photo is a query against all the other landmark photos, and
  each unordered pair is verified once and serves both of its photos.

With `candidates` N > 0 a query's votes come only from its N nearest candidates by the
thumbnail descriptor, as `recognize --method verified-voting --candidates N` does at GLDv2
scale (every pair is still verified and timed).

Variants (`PHOTO_VARIANTS`), each a local-feature extractor and a verification config:

- `reference`: RootSIFT, at most 1,000 features on the photo scaled to a 512 px long side,
  mutual nearest neighbours without a ratio test, pydegensac's homography with pydegensac's
  own defaults (1 px, here taken at that 512 px side; confidence 0.999; at most 50,000
  iterations);
- `fast` (the kit's default for photos: `demo --from-folders`), `fast-magsac` and
  `official-delf`: RootSIFT at the extractor's defaults with that verification preset for
  RootSIFT (`lmkcomp.local.verify.verify_config`).

Per variant: GAP (`lmkcomp.metrics.global_average_precision`; non-landmark queries count
against it), top-1 accuracy on landmark queries, ROC AUC of the inliers of same- against
different-landmark pairs, extraction ms per photo and verified pairs per second on one core
(ratio to the first variant). Features of every photo are held in memory (about 0.5 MB a
photo), so this is a benchmark for hundreds of photos, not for GLDv2.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from lmkcomp.bench.common import one_core, report
from lmkcomp.data.folders import NON_LANDMARK, SourcePhoto, landmark_ids
from lmkcomp.data.images import load_image_rgb
from lmkcomp.errors import ImageLoadError, UserInputError
from lmkcomp.local.extractors import create_local_extractor
from lmkcomp.local.record import LocalFeatures
from lmkcomp.local.verify import VerifyConfig, create_verifier, verify_config, verify_pair
from lmkcomp.metrics import global_average_precision, top1_accuracy
from lmkcomp.voting import excess_inliers, inlier_voting

#: refuse sources with more pairs than this: at about 10 ms a pair and variant, an hour each
MAX_PAIRS = 400_000


@dataclass(frozen=True)
class PhotoVariant:
    """A local-feature extractor (`method` with `options`), the verification of its pairs, and
    whether votes count excess inliers (`excess`, the kit's rule) or raw ones."""

    description: str
    method: str
    options: dict = field(default_factory=dict)
    preset: str = "fast"
    overrides: dict = field(default_factory=dict)
    excess: bool = True

    def verify_config(self) -> VerifyConfig:
        return verify_config(self.preset, self.method, **self.overrides)


PHOTO_VARIANTS: dict[str, PhotoVariant] = {
    "reference": PhotoVariant("RootSIFT 512 px, mutual NN, DEGENSAC 1 px", "rootsift",
                              {"max_side": 512, "max_features": 1000},
                              overrides={"ratio": None, "residual": 1.0, "reference_side": 512.0}, excess=False),
    "fast": PhotoVariant("RootSIFT, fast (the kit's default)", "rootsift"),
    "fast-magsac": PhotoVariant("RootSIFT, fast-magsac", "rootsift", preset="fast-magsac"),
    "official-delf": PhotoVariant("RootSIFT, official-delf", "rootsift", preset="official-delf"),
}


def check_variants(names: Sequence[str]) -> None:
    """Refuse an empty list or a name `PHOTO_VARIANTS` lacks, before any photo is read."""
    unknown = [name for name in names if name not in PHOTO_VARIANTS]
    if unknown or not names:
        raise UserInputError(f"unknown photo benchmark variant {unknown[0] if unknown else ''!r}; "
                             f"known: {', '.join(PHOTO_VARIANTS)}")


@dataclass(frozen=True)
class PhotoProtocol:
    """Who is verified against whom: `paths` and `labels` of every photo used (landmark number,
    -1 for a non-landmark photo), `queries` (indices into them), `pairs` (P x 2: query photo,
    candidate photo) and `leave_one_out` (each pair then also serves its candidate as a query)."""

    paths: list[Path]
    labels: np.ndarray
    queries: np.ndarray
    pairs: np.ndarray
    leave_one_out: bool


def _check_pair_count(count: int) -> None:
    """Refuse more than MAX_PAIRS pairs, before any pair array is made."""
    if count > MAX_PAIRS:
        raise UserInputError(f"{count} pairs to verify per variant (more than {MAX_PAIRS}): this benchmark "
                             "verifies all pairs; use fewer photos")


def photo_protocol(photos: Sequence[SourcePhoto]) -> PhotoProtocol:
    """The queries and pairs of `photos` (module docstring)."""
    splits = {photo.split for photo in photos}
    numbers = landmark_ids(photo.landmark for photo in photos if photo.landmark != NON_LANDMARK)
    if {"train", "test"} <= splits:
        used = [photo for photo in photos if photo.split in ("train", "test")]
        labels = np.array([numbers.get(photo.landmark, -1) for photo in used], dtype=np.int64)
        is_test = np.array([photo.split == "test" for photo in used])
        queries, candidates = np.flatnonzero(is_test), np.flatnonzero(~is_test)
        _check_pair_count(len(queries) * len(candidates))
        pairs = np.stack(np.meshgrid(queries, candidates, indexing="ij"), axis=-1).reshape(-1, 2)
        leave_one_out = False
    else:
        used = list(photos)
        labels = np.array([numbers.get(photo.landmark, -1) for photo in used], dtype=np.int64)
        queries = np.arange(len(used))
        landmark_rows = np.flatnonzero(labels >= 0)
        distractors = len(used) - len(landmark_rows)
        _check_pair_count(len(used) * (len(used) - 1) // 2 - distractors * (distractors - 1) // 2)
        # every pair with a landmark photo, once: (a, b) with a < b, or a distractor and a landmark photo
        a, b = np.triu_indices(len(used), k=1)
        keep = (labels[a] >= 0) | (labels[b] >= 0)
        pairs = np.stack([a[keep], b[keep]], axis=1)
        if len(landmark_rows) < 2:
            raise UserInputError("leave-one-out needs at least two landmark photos")
        leave_one_out = True
    if not len(queries) or not len(pairs):
        raise UserInputError("no pair to verify: give test and train photos, or at least two landmark photos")
    return PhotoProtocol([photo.path for photo in used], labels, queries, pairs, leave_one_out)


def _votes(protocol: PhotoProtocol, inliers: np.ndarray, k: int, similarity: np.ndarray | None = None,
           candidates: int = 0) -> dict[str, tuple[int, float]]:
    """Each query's predicted landmark and summed `inliers` (`inlier_voting`), by query number.

    With `candidates` N > 0, a query's votes come from its N labelled candidates of highest
    `similarity` (photos x photos; ties to the lower photo number) only, taken nearest first,
    as `recognize --method verified-voting --candidates N` shortlists by embedding; 0: all."""
    query_photo, candidate_photo = protocol.pairs[:, 0], protocol.pairs[:, 1]
    if protocol.leave_one_out:  # each pair also serves its second photo as the query
        query_photo = np.concatenate([query_photo, protocol.pairs[:, 1]])
        candidate_photo = np.concatenate([candidate_photo, protocol.pairs[:, 0]])
        inliers = np.concatenate([inliers, inliers])
    row_of = np.full(len(protocol.paths), -1, dtype=np.int64)
    row_of[protocol.queries] = np.arange(len(protocol.queries))
    voting = np.flatnonzero((protocol.labels[candidate_photo] >= 0) & (row_of[query_photo] >= 0))
    if candidates:
        # by query, then most similar candidate first, then lower photo number
        voting = voting[np.lexsort((candidate_photo[voting], -similarity[query_photo[voting], candidate_photo[voting]],
                                    query_photo[voting]))]
        queries_in_order = query_photo[voting]
        first = np.r_[0, np.flatnonzero(np.diff(queries_in_order)) + 1]
        rank = np.arange(len(voting)) - np.repeat(first, np.diff(np.r_[first, len(voting)]))
        voting = voting[rank < candidates]
    predicted, score, found = inlier_voting(row_of[query_photo[voting]], protocol.labels[candidate_photo[voting]],
                                            inliers[voting], len(protocol.queries), k)
    return {str(query): (int(predicted[row]), float(score[row]))
            for row, query in enumerate(protocol.queries) if found[row]}


def _thumbnail_similarity(paths: Sequence[Path]) -> np.ndarray:
    """Cosine similarity of every pair of photos by the weight-free thumbnail descriptor."""
    from lmkcomp.features.weight_free import create_weight_free_descriptor

    descriptor = create_weight_free_descriptor("thumbnail")
    try:
        vectors = np.stack([descriptor.describe_file(path) for path in paths])
    except ImageLoadError as exc:
        raise UserInputError(str(exc)) from None
    return vectors @ vectors.T


def _extract(paths: Sequence[Path], variant: PhotoVariant, progress: bool) -> tuple[list[LocalFeatures], float]:
    """Every photo's features and the mean seconds per photo (decoding included)."""
    extractor = create_local_extractor(variant.method, **variant.options)
    features = []
    started = time.perf_counter()
    for path in tqdm(paths, desc=f"extract {variant.method} {variant.options or ''}".strip(), disable=not progress):
        try:
            features.append(extractor.extract(load_image_rgb(path)))
        except ImageLoadError as exc:
            raise UserInputError(f"{path}: {exc}") from None
    return features, (time.perf_counter() - started) / len(paths)


def _verify(features: list[LocalFeatures], pairs: np.ndarray, config: VerifyConfig, name: str,
            progress: bool) -> tuple[np.ndarray, float, int]:
    """The inliers of every pair, the pairs verified per second and the verifier's sample size."""
    verifier = create_verifier(config)
    score: Callable[[int, int], int] = lambda a, b: verify_pair(features[a], features[b], config, verifier).inliers
    started = time.perf_counter()
    inliers = np.array([score(a, b) for a, b in tqdm(pairs.tolist(), desc=f"verify {name}", disable=not progress)],
                       dtype=np.int64)
    return inliers, len(pairs) / (time.perf_counter() - started), verifier.sample_size


def run_photo_benchmark(photos: Sequence[SourcePhoto], variants: Sequence[str] = ("reference", "fast"), k: int = 3,
                        out: str | Path = "bench/photos.json", source: str = "", progress: bool = True,
                        candidates: int = 0) -> str:
    """Measure each of `variants` (`PHOTO_VARIANTS` names) on `photos` by the all-pairs
    protocol (module docstring), or, with `candidates` N > 0, with each query's votes taken
    from its N nearest candidates by thumbnail (`_votes`); writes JSON to `out` and returns
    the printed table."""
    check_variants(variants)
    if candidates < 0:
        raise UserInputError(f"candidates must be >= 0 (0: every candidate), got {candidates}")
    protocol = photo_protocol(photos)
    similarity = _thumbnail_similarity(protocol.paths) if candidates else None
    solution = {str(query): [int(protocol.labels[query])] if protocol.labels[query] >= 0 else []
                for query in protocol.queries}
    labelled = (protocol.labels[protocol.pairs[:, 0]] >= 0) & (protocol.labels[protocol.pairs[:, 1]] >= 0)
    same = protocol.labels[protocol.pairs[:, 0]] == protocol.labels[protocol.pairs[:, 1]]
    extracted: dict[tuple, tuple[list[LocalFeatures], float]] = {}
    rows = []
    with one_core():
        for name in variants:
            variant = PHOTO_VARIANTS[name]
            settings = (variant.method, tuple(sorted(variant.options.items())))
            if settings not in extracted:
                extracted[settings] = _extract(protocol.paths, variant, progress)
            features, seconds_per_photo = extracted[settings]
            config = variant.verify_config()
            inliers, pairs_per_s, sample_size = _verify(features, protocol.pairs, config, name, progress)
            votes = excess_inliers(inliers, sample_size) if variant.excess else inliers
            predictions = _votes(protocol, votes, k, similarity, candidates)
            both = same[labelled]
            rows.append({
                "variant": name,
                "description": variant.description,
                "gap": global_average_precision(predictions, solution),
                "top1": top1_accuracy(predictions, solution),
                "roc_auc": float(roc_auc_score(both, inliers[labelled])) if 0 < both.sum() < len(both) else None,
                "extract_ms_per_photo": 1000.0 * seconds_per_photo,
                "pairs_per_s": pairs_per_s,
                "ms_per_pair": 1000.0 / pairs_per_s,
                "mean_inliers_same": float(inliers[labelled & same].mean()) if (labelled & same).any() else None,
                "mean_inliers_different": (float(inliers[labelled & ~same].mean())
                                           if (labelled & ~same).any() else None),
            })
    landmark_queries = int(sum(1 for answer in solution.values() if answer))
    shortlist = f" of the {candidates} nearest by thumbnail" if candidates else ""
    title = (f"bench photos: {source or 'photos'}, {len(protocol.queries)} queries ({landmark_queries} of a landmark"
             f"{', leave-one-out' if protocol.leave_one_out else ''}), {len(protocol.pairs)} pairs verified per "
             f"variant, top-{k} inlier voting{shortlist}, 1 thread (ratio: pairs/s over {rows[0]['variant']})")
    columns = [("variant", "variant"), ("gap", "GAP"), ("top1", "top-1"), ("roc_auc", "ROC AUC"),
               ("extract_ms_per_photo", "extract ms/photo"), ("ms_per_pair", "ms/pair"), ("pairs_per_s", "pairs/s")]
    return report(title, rows, columns, out, ratio_of="pairs_per_s")
