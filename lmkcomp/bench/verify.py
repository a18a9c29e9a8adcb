"""`lmkcomp bench verify`: throughput per core and accuracy of pair verification, measured in one
run on the same local features and the same pairs. The rows:

- `official-delf reference`: the official DELF example re-written with scipy and scikit-image
  (`delf_reference`), the outside yardstick (its 20 px residual in original pixels, where the
  `official-delf` preset takes it at a 2,048 px long side); skipped, with a line saying so,
  without scikit-image;
- the `official-delf`, `fast` (pydegensac) and `fast-magsac` presets, so that `fast` and its
  faster MAGSAC variant stand side by side;
- `fast` with each homography verifier no preset row uses in place of its own (`fast
  model=NAME`: poselib); a verifier whose package is missing is skipped the same way.

Pairs come from the train and index images of a dataset, with true labels: the synthetic
data's `noise_truth.csv` when present (so that a noisy label does not turn a different-scene
pair into a "same landmark" one; train images showing no landmark are left out), else the
labels as given. Same-landmark pairs: a landmark drawn uniformly among those with two images
or more, then two of its images; different-landmark pairs: two images drawn uniformly, redrawn
while their landmarks agree. Pairs are drawn independently, so one may repeat.

Each row verifies every pair in this process with one OpenCV and one BLAS thread (pairs/s per
core), after a few untimed warm-up pairs; features are read into memory first, so disk reads
are not timed. Accuracy is the ROC AUC of the inlier count as a same-vs-different score.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from lmkcomp.bench.common import one_core, report
from lmkcomp.bench.delf_reference import OfficialDelfReference
from lmkcomp.checks import positive_int
from lmkcomp.csvfile import read_table
from lmkcomp.data.layout import LandmarkData
from lmkcomp.errors import UserInputError
from lmkcomp.local.extract import extract_local_split
from lmkcomp.local.extractors import create_local_extractor
from lmkcomp.local.record import LocalFeatures
from lmkcomp.local.store import LocalFeatureStore
from lmkcomp.local.verify import VERIFY_PRESETS, VerifyConfig, create_verifier, verify_config, verify_pair

PRESETS = ("official-delf", "fast", "fast-magsac")
#: the verifiers that can stand in for `fast`'s own (all fit a homography); those a preset of
#: `PRESETS` already uses get no `fast model=NAME` row
HOMOGRAPHY_VERIFIERS = ("homography", "magsac", "poselib")
_WARMUP_PAIRS = 5

#: the score of a pair: its number of inliers
Scorer = Callable[[LocalFeatures, LocalFeatures], int]


def labelled_images(data: LandmarkData) -> pd.DataFrame:
    """`split, id, landmark_id` of the train and index images that show a known landmark."""
    truth_csv = data.root / "noise_truth.csv"
    if truth_csv.is_file():
        truth = read_table(truth_csv, ["id", "true_landmark_id"]).frame
        truth = truth[truth["true_landmark_id"] != ""]
        train = pd.DataFrame({"id": truth["id"], "landmark_id": truth["true_landmark_id"].astype(np.int64)})
    else:
        train = data.train_labels()
    frames = [train.assign(split="train")]
    if data.has("index"):
        frames.append(data.index_labels.assign(split="index"))
    return pd.concat(frames, ignore_index=True)[["split", "id", "landmark_id"]]


def sample_pairs(images: pd.DataFrame, count: int, seed: int) -> pd.DataFrame:
    """`count` same-landmark then `count` different-landmark pairs of rows of `images`.

    Returns `a, b` (row positions in `images`) and `same` (bool).
    """
    count = positive_int("pairs", count)
    rng = np.random.default_rng(seed)
    labels = images["landmark_id"].to_numpy()
    groups = [members for members in images.groupby("landmark_id").indices.values() if len(members) >= 2]
    if not groups or len(np.unique(labels)) < 2:
        raise UserInputError("pairs need a landmark with two images or more, and two landmarks at least")
    same = [rng.choice(groups[rng.integers(len(groups))], size=2, replace=False) for _ in range(count)]
    different: list[tuple[int, int]] = []
    while len(different) < count:
        a, b = rng.integers(len(images), size=(2, 2 * count))
        different.extend(zip(*(x[labels[a] != labels[b]] for x in (a, b))))
    a, b = np.array([*same, *different[:count]]).T
    return pd.DataFrame({"a": a, "b": b, "same": np.arange(2 * count) < count})


def _stores(data: LandmarkData, images: pd.DataFrame, method: str, extractor_options: dict,
            local_features: Path | None, workdir: Path, progress: bool) -> dict[str, LocalFeatureStore]:
    """One store per split of `images`: given (`local_features/<split>`) or extracted into `workdir`."""
    stores = {}
    for split, rows in images.groupby("split"):
        if local_features is not None:
            store = LocalFeatureStore(local_features / split)
            if store.method != method:
                raise UserInputError(f"{store.directory}: holds {store.method} features, not {method}")
        else:
            store = extract_local_split(data, split, workdir / split, create_local_extractor(method, **extractor_options),
                                        ids=sorted(set(rows["id"])), progress=progress)
        stores[split] = store
    return stores


def _kit_scorer(config: VerifyConfig) -> Scorer:
    verifier = create_verifier(config)
    return lambda a, b: verify_pair(a, b, config, verifier).inliers


def scorers(method: str) -> tuple[dict[str, Scorer], list[str]]:
    """The rows to measure on `method` features, in table order (name -> scorer), and a line for
    each row skipped because an optional package is missing. Presets take their settings for
    `method` (`verify_config`); the reference, the official example's, keeps its own, and its
    RANSAC takes official-delf's seed."""
    rows: dict[str, Scorer] = {}
    skipped = []
    try:
        rows["official-delf reference"] = OfficialDelfReference(VERIFY_PRESETS["official-delf"].seed).inliers
    except UserInputError as exc:
        skipped.append(f"official-delf reference skipped: {exc}")
    for preset in PRESETS:
        rows[preset] = _kit_scorer(verify_config(preset, method))
    fast = verify_config("fast", method)
    covered = {VERIFY_PRESETS[preset].model for preset in PRESETS}
    for model in HOMOGRAPHY_VERIFIERS:
        if model not in covered:
            try:
                rows[f"fast model={model}"] = _kit_scorer(dataclasses.replace(fast, model=model))
            except UserInputError as exc:
                skipped.append(f"fast model={model} skipped: {exc}")
    return rows, skipped


def measure(pairs: list[tuple[LocalFeatures, LocalFeatures]], score: Scorer) -> tuple[float, np.ndarray]:
    """`(pairs per second, inliers of each pair)` of scoring `pairs`, in this thread."""
    for a, b in pairs[:_WARMUP_PAIRS]:
        score(a, b)
    started = time.perf_counter()
    inliers = np.array([score(a, b) for a, b in pairs])
    return len(pairs) / (time.perf_counter() - started), inliers


def run_verify_benchmark(data: LandmarkData, pairs: int = 300, method: str = "sift", out: str | Path = "bench/verify.json",
                         local_features: str | Path | None = None, extractor_options: dict | None = None,
                         seed: int = 0, progress: bool = True) -> str:
    """Measure every row of `scorers(method)` on `pairs` same- and `pairs` different-landmark pairs.

    Features: the complete stores `local_features/train` and `local_features/index` (as
    `lmkcomp extract-local` writes them) when given, else `method` features extracted with
    `extractor_options` for the sampled images only, into a temporary folder.
    Writes JSON to `out`; returns the printed table.
    """
    images = labelled_images(data)
    chosen = sample_pairs(images, pairs, seed)
    used = images.iloc[np.unique(chosen[["a", "b"]].to_numpy())]
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as workdir:
        stores = _stores(data, used, method, extractor_options or {},
                         None if local_features is None else Path(local_features), Path(workdir), progress)
        records = {row: stores[images.at[row, "split"]].get(images.at[row, "id"]).in_memory() for row in used.index}
    features = [(records[a], records[b]) for a, b in zip(chosen["a"], chosen["b"])]
    same = chosen["same"].to_numpy()
    named, skipped = scorers(method)
    rows = []
    with one_core():
        for name, score in named.items():
            pairs_per_s, inliers = measure(features, score)
            rows.append({
                "preset": name,
                "pairs_per_s": pairs_per_s,
                "roc_auc": float(roc_auc_score(same, inliers)),
                "mean_inliers_same": float(inliers[same].mean()),
                "mean_inliers_different": float(inliers[~same].mean()),
                "max_inliers_different": int(inliers[~same].max()),
            })
    title = (f"bench verify: {pairs} same + {pairs} different-landmark pairs, {method} features, {data.root}, "
             f"1 thread (ratio: pairs/s over {rows[0]['preset']})")
    columns = [("preset", "verification"), ("pairs_per_s", "pairs/s/core"), ("roc_auc", "ROC AUC"),
               ("mean_inliers_same", "inliers same"), ("mean_inliers_different", "inliers diff")]
    return "\n".join([*skipped, report(title, rows, columns, out, ratio_of="pairs_per_s")])
