"""Baseline submissions that need no training: they prove the loop from data to score works
and give a floor that every learned method must beat.

Methods, by name:

- ``thumbnail``: each image becomes a 16x16 colour thumbnail, mean-centred and L2-normalised
  (the `thumbnail` weight-free descriptor, which `lmkcomp extract --descriptor thumbnail` also
  writes as an embedding store for `recognize` and `retrieve`); recognition predicts the
  landmark of the nearest train image (confidence = cosine similarity), retrieval returns the 100 nearest index images.
- ``constant``: recognition predicts the most frequent train landmark for every test image
  (confidence 1); retrieval returns the first 100 index ids for every query.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from lmkcomp.data.layout import LandmarkData
from lmkcomp.errors import UserInputError
from lmkcomp.features.weight_free import ThumbnailDescriptor
from lmkcomp.search import exact_search


def thumbnail_embeddings(data: LandmarkData, split: str, ids: Sequence[str], progress: bool = True) -> np.ndarray:
    """(len(ids), 768) float32 rows of the `thumbnail` descriptor
    (`lmkcomp.features.weight_free`), the rows `lmkcomp extract --descriptor thumbnail` stores."""
    descriptor = ThumbnailDescriptor()
    rows = np.empty((len(ids), descriptor.dim), dtype=np.float32)
    for row, image_id in enumerate(tqdm(ids, desc=f"thumbnails {split}", unit="img", disable=not progress)):
        rows[row] = descriptor.describe_file(data.image_path(split, image_id))
    return rows


@dataclass(frozen=True)
class BaselineResult:
    test_ids: list[str]
    recognition: dict[str, tuple[int, float]]
    retrieval: dict[str, list[str]]


def _thumbnail(data: LandmarkData, progress: bool) -> BaselineResult:
    train = data.train_labels()
    train_ids = train["id"].tolist()
    test_ids = data.split_ids("test")
    index_ids = data.split_ids("index")
    test = thumbnail_embeddings(data, "test", test_ids, progress)
    scores, neighbours = exact_search(test, thumbnail_embeddings(data, "train", train_ids, progress), k=1)
    labels = train["landmark_id"].to_numpy()
    recognition = {i: (int(labels[n[0]]), float(s[0])) for i, s, n in zip(test_ids, scores, neighbours)}
    _, nearest = exact_search(test, thumbnail_embeddings(data, "index", index_ids, progress), k=100)
    retrieval = {i: [index_ids[j] for j in row] for i, row in zip(test_ids, nearest)}
    return BaselineResult(test_ids, recognition, retrieval)


def _constant(data: LandmarkData, progress: bool) -> BaselineResult:
    labels = data.train_labels()["landmark_id"]
    most_frequent = int(labels.value_counts().sort_index(kind="stable").idxmax())
    test_ids = data.split_ids("test")
    first_index = data.split_ids("index")[:100]
    return BaselineResult(
        test_ids, {i: (most_frequent, 1.0) for i in test_ids}, {i: list(first_index) for i in test_ids}
    )


BASELINES: dict[str, Callable[[LandmarkData, bool], BaselineResult]] = {"thumbnail": _thumbnail, "constant": _constant}


def run_baseline(data: LandmarkData, method: str = "thumbnail", progress: bool = True) -> BaselineResult:
    """Predictions of the named baseline for the test split, for both tasks."""
    if method not in BASELINES:
        raise UserInputError(f"unknown baseline {method!r}; expected one of {', '.join(BASELINES)}")
    return BASELINES[method](data, progress)
