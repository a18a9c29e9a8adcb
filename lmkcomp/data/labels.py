"""The landmark label of every image of a split, as one integer array aligned with given ids."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from lmkcomp.data import gldv2
from lmkcomp.data.layout import LandmarkData
from lmkcomp.errors import UserInputError

#: the label of an image that shows no landmark, or that its split's labels do not list
NO_LANDMARK = -1
SPLITS = ("train", "index", "test")


def read_labels(data: LandmarkData, source: str) -> pd.DataFrame:
    """`id, landmark_id` of the train images from "train" (train.csv), "train_clean"
    (train_clean.csv), or the path of a train_clean-format CSV (e.g. `lmkcomp clean`'s)."""
    if source == "train":
        return data.train_labels()
    if source == "train_clean":
        return data.train_labels(clean=True)
    return gldv2.read_train_clean_csv(source)


def split_labels(data: LandmarkData, split: str, ids: Sequence[str], train_labels: str = "train") -> np.ndarray:
    """Landmark id of each of `ids` (int64), NO_LANDMARK where there is none.

    train: from `train_labels`: "train" (train.csv), "train_clean" (train_clean.csv) or the path
    of a train_clean-format CSV; an image it does not list (e.g. one cleaning removed) has none.
    index: index_image_to_landmark.csv, which lists only the index images showing a landmark.
    test: the recognition solution; an empty `landmarks` field has none, and of several
    landmarks the first is taken.

    If none of `ids` is listed at all, the ids and the labels cannot be of the same split (or
    dataset): a UserInputError naming the labels' file.
    """
    if split not in SPLITS:
        raise UserInputError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if split == "test":
        source: Path = data.file("recognition_solution")
        answers = data.recognition_solution.answers
        known = {image_id: landmarks[0] if landmarks else NO_LANDMARK for image_id, landmarks in answers.items()}
    else:
        if split == "index":
            source, frame = data.file("index"), data.index_labels
        else:
            source = data.file(train_labels) if train_labels in ("train", "train_clean") else Path(train_labels)
            frame = read_labels(data, train_labels)
        known = dict(zip(frame["id"], frame["landmark_id"].tolist()))
    if not any(image_id in known for image_id in ids):
        raise UserInputError(f"{source}: lists none of the {len(ids)} {split} images given "
                             "(another split, or another dataset?)")
    return np.fromiter((known.get(image_id, NO_LANDMARK) for image_id in ids), dtype=np.int64, count=len(ids))
