"""A dataset root and its layout: all a user gives to point the kit at GLDv2 data.

Two layouts are known:

- ``gldv2``: the full public release (and the kit's synthetic mini-GLDv2): ``train.csv``,
  ``train_clean.csv``, ``train_label_to_category.csv``, ``index_image_to_landmark.csv``,
  ``recognition_solution_v2.1.csv``, ``retrieval_solution_v2.1.csv``, ``sample_submission.csv``
  and the ``train/ index/ test/`` image folders.
- ``kaggle``: a competition's data folder as a kernel sees it under ``/kaggle/input/<comp>/``:
  ``train.csv`` (2019: ``id,url,landmark_id``; 2020/2021: ``id,landmark_id``),
  ``sample_submission.csv`` and the image folders the competition ships (recognition:
  ``train/ test/``; retrieval: ``index/ test/``). Solutions are hidden, so scoring needs the
  ``gldv2`` layout or explicit solution files.

In both, the ids of the test and index splits are the image files on disk (Kaggle ships no CSV
for them); train ids and labels come from ``train.csv`` (or ``train_clean.csv``).

A root that `lmkcomp make-dataset` writes holds its manifest, ``dataset.json``, whose
``complete`` is set only once every image and CSV is written: a root whose manifest says
otherwise is refused. Downloaded data has no such file and is taken as it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd

from lmkcomp.data import gldv2
from lmkcomp.errors import CsvFormatError, UserInputError


@dataclass(frozen=True)
class Layout:
    """A named set of files a dataset root may hold: role -> file name."""

    name: str
    files: dict[str, str]


LAYOUTS: dict[str, Layout] = {
    "gldv2": Layout(
        "gldv2",
        {
            "train": "train.csv",
            "train_clean": "train_clean.csv",
            "categories": "train_label_to_category.csv",
            "index": "index_image_to_landmark.csv",
            "recognition_solution": "recognition_solution_v2.1.csv",
            "retrieval_solution": "retrieval_solution_v2.1.csv",
            "sample_submission": "sample_submission.csv",
        },
    ),
    "kaggle": Layout("kaggle", {"train": "train.csv", "sample_submission": "sample_submission.csv"}),
}


def get_layout(name: str) -> Layout:
    """The layout called `name`; an unknown name is a user error listing the known ones."""
    try:
        return LAYOUTS[name]
    except KeyError:
        raise UserInputError(f"unknown layout {name!r}; known layouts: {', '.join(LAYOUTS)}") from None


#: the manifest `lmkcomp make-dataset` writes in a dataset root (see `lmkcomp.data.synthetic`)
DATASET_MANIFEST = "dataset.json"


def check_dataset_complete(root: Path) -> None:
    """Refuse a dataset root whose `dataset.json` says `"complete": false`: its make-dataset was
    interrupted, and images or CSVs may be missing. A root without that file is accepted, and
    so is one whose file make-dataset did not write (no JSON object with a `complete` flag)."""
    path = root / DATASET_MANIFEST
    if not path.is_file():
        return
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return  # make-dataset writes it atomically: a file it cannot parse is someone else's
    if isinstance(manifest, dict) and manifest.get("complete") is False:
        raise UserInputError(f"{root}: dataset is incomplete (make-dataset was interrupted); run the same "
                             "make-dataset command again to finish it")


class LandmarkData:
    """Read access to a dataset root in one of the known layouts.

    CSVs are read (and validated) on first use and cached on the instance. A root that
    make-dataset did not finish is refused (`check_dataset_complete`).
    """

    def __init__(self, root: str | Path, layout: str = "gldv2"):
        self.root = Path(root)
        self.layout = get_layout(layout)
        if not self.root.is_dir():
            raise UserInputError(f"{self.root}: dataset root not found")
        check_dataset_complete(self.root)

    def file(self, role: str) -> Path:
        """Path of the file that plays `role` (e.g. "train", "recognition_solution")."""
        if role not in self.layout.files:
            raise UserInputError(f"the {self.layout.name} layout has no {role} file")
        return self.root / self.layout.files[role]

    def has(self, role: str) -> bool:
        """True when the layout defines `role` and its file exists."""
        return role in self.layout.files and self.file(role).is_file()

    def image_path(self, split: str, image_id: str) -> Path:
        """Absolute path of an image: `root/{split}/{a}/{b}/{c}/{id}.jpg`."""
        return self.root / gldv2.image_relpath(split, image_id)

    def split_ids(self, split: str) -> list[str]:
        """Ids of a split: train from `train.csv`; index and test from the files on disk."""
        if split == "train":
            return self.train_labels()["id"].tolist()
        return gldv2.scan_split_ids(self.root, split)

    def train_labels(self, clean: bool = False) -> pd.DataFrame:
        """`id, landmark_id` of the train split (`train_clean.csv` when `clean`)."""
        return self._train_clean if clean else self._train

    @cached_property
    def _train(self) -> pd.DataFrame:
        path = self.file("train")
        labels = gldv2.read_train_csv(path)
        if labels.empty:  # every consumer of the train split needs at least one image
            raise CsvFormatError(path, None, "no images: the file holds only its header; the train split needs "
                                 "at least one labelled image")
        return labels

    @cached_property
    def _train_clean(self) -> pd.DataFrame:
        return gldv2.read_train_clean_csv(self.file("train_clean"))

    @cached_property
    def index_labels(self) -> pd.DataFrame:
        """`id, landmark_id` of the index images that show a landmark."""
        return gldv2.read_index_csv(self.file("index"))

    @cached_property
    def recognition_solution(self) -> gldv2.Solution:
        return gldv2.read_recognition_solution(self.file("recognition_solution"))

    @cached_property
    def retrieval_solution(self) -> gldv2.Solution:
        return gldv2.read_retrieval_solution(self.file("retrieval_solution"))
