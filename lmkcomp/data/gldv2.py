"""The Google Landmarks v2 layouts: image ids, image paths and the dataset's CSV files.

Every reader reads with `lmkcomp.csvfile`, validates what it reads and rejects a bad file with
a `CsvFormatError` that names the file and the exact (1-based) line at fault, so a user never
trains on a CSV that was silently misread.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from lmkcomp.csvfile import CsvTable, read_table, shown
from lmkcomp.errors import UserInputError
from lmkcomp.fileio import atomic_write

#: GLDv2 image ids are 16 lower-case hexadecimal characters.
ID_PATTERN = re.compile(r"[0-9a-f]{16}")
SPLITS = ("train", "index", "test")
USAGES = ("Public", "Private", "Ignored")


def is_valid_id(image_id: str) -> bool:
    """True when `image_id` is a GLDv2 id (16 hexadecimal characters)."""
    return ID_PATTERN.fullmatch(image_id) is not None


def image_relpath(split: str, image_id: str) -> Path:
    """`{split}/{id[0]}/{id[1]}/{id[2]}/{id}.jpg`, the layout of every GLDv2 split.

    The id is validated first so that no id from a CSV can point outside the data root.
    """
    if split not in SPLITS:
        raise UserInputError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if not is_valid_id(image_id):
        raise UserInputError(f"invalid image id {shown(image_id)}: expected 16 hexadecimal characters")
    return Path(split, image_id[0], image_id[1], image_id[2], f"{image_id}.jpg")


def scan_split_ids(root: str | Path, split: str) -> list[str]:
    """Ids of every `.jpg` under `root/split` in the a/b/c layout, sorted.

    Kaggle's competition folders ship no CSV for the test and index splits: the files are
    the list. Files whose name is no valid id are reported, not skipped.
    """
    base = Path(root) / split
    if not base.is_dir():
        raise UserInputError(f"{base}: split folder not found")
    ids = []
    for path in base.glob("*/*/*/*.jpg"):
        image_id = path.stem
        if not is_valid_id(image_id) or path.relative_to(Path(root)) != image_relpath(split, image_id):
            raise UserInputError(f"{path}: file name is not a GLDv2 id in the {split}/a/b/c/ layout")
        ids.append(image_id)
    return sorted(ids)


# --------------------------------------------------------------------------------------------
# Reading CSVs


def _first(mask: pd.Series | np.ndarray) -> int | None:
    """Position of the first True of a boolean mask, None when there is none."""
    positions = np.flatnonzero(np.asarray(mask, dtype=bool))
    return int(positions[0]) if positions.size else None


#: landmark ids are stored as int64
_MAX_LANDMARK_ID = int(np.iinfo(np.int64).max)


def _check_ids(table: CsvTable, column: str = "id", unique: bool = True) -> None:
    """Every value of `column` is an image id, and (with `unique`) none is listed twice."""
    ids = table.frame[column]
    position = _first(~ids.str.fullmatch(ID_PATTERN.pattern))
    if position is not None:
        raise table.error(position, f"invalid image id {shown(ids.iloc[position])}: expected 16 hex characters")
    if unique:
        position = _first(ids.duplicated())
        if position is not None:
            raise table.error(position, f"duplicate id {ids.iloc[position]}")


def _parse_landmark_ids(table: CsvTable, column: str = "landmark_id") -> np.ndarray:
    """Parse a column of single non-negative integer landmark ids."""
    values = table.frame[column]
    position = _first(~values.str.fullmatch(r"\d+"))
    if position is not None:
        raise table.error(position, f"{column} {shown(values.iloc[position])} is not a non-negative integer")
    # only ids as long as the limit can pass it; compared as numbers (leading zeros are allowed)
    long_positions = np.flatnonzero(values.str.len().to_numpy() >= len(str(_MAX_LANDMARK_ID)))
    too_large = [int(position) for position in long_positions if int(values.iloc[position]) > _MAX_LANDMARK_ID]
    if too_large:
        raise table.error(too_large[0], f"{column} {shown(values.iloc[too_large[0]])} is too large "
                                        f"(at most {_MAX_LANDMARK_ID}, the int64 limit)")
    return values.astype(np.int64).to_numpy()


def read_train_csv(path: str | Path) -> pd.DataFrame:
    """`train.csv` (`id,url,landmark_id`; the 2020/2021 Kaggle files have no `url`).

    Returns a frame with columns `id` (str) and `landmark_id` (int64), in file order.
    """
    table = read_table(path, ["id", "landmark_id"])
    _check_ids(table)
    labels = _parse_landmark_ids(table)
    return pd.DataFrame({"id": table.frame["id"].to_numpy(), "landmark_id": labels})


def read_index_csv(path: str | Path) -> pd.DataFrame:
    """`index_image_to_landmark.csv` (`id,landmark_id`), same checks as `train.csv`."""
    return read_train_csv(path)


def read_train_clean_csv(path: str | Path) -> pd.DataFrame:
    """`train_clean.csv` (`landmark_id,images`, images space-separated), exploded to `id,landmark_id`.

    An image listed twice (in one landmark or two) is an error, as is a landmark listed twice.
    """
    table = read_table(path, ["landmark_id", "images"])
    labels = _parse_landmark_ids(table)
    position = _first(pd.Series(labels).duplicated())
    if position is not None:
        raise table.error(position, f"duplicate landmark_id {labels[position]}")
    ids: list[str] = []
    owners: list[int] = []
    rows: list[int] = []
    for position, (landmark, images) in enumerate(zip(labels, table.frame["images"])):
        tokens = images.split()
        if not tokens:
            raise table.error(position, f"landmark {landmark} lists no images")
        ids.extend(tokens)
        owners.extend([int(landmark)] * len(tokens))
        rows.extend([position] * len(tokens))
    id_series = pd.Series(ids, dtype=str)
    position = _first(~id_series.str.fullmatch(ID_PATTERN.pattern))
    if position is not None:
        raise table.error(rows[position], f"invalid image id {shown(ids[position])}")
    position = _first(id_series.duplicated())
    if position is not None:
        raise table.error(rows[position], f"image {ids[position]} is listed more than once")
    return pd.DataFrame({"id": ids, "landmark_id": np.asarray(owners, dtype=np.int64)})


def read_category_csv(path: str | Path) -> pd.DataFrame:
    """`train_label_to_category.csv` (`landmark_id,category`)."""
    table = read_table(path, ["landmark_id", "category"])
    labels = _parse_landmark_ids(table)
    return pd.DataFrame({"landmark_id": labels, "category": table.frame["category"].to_numpy()})


def _check_usage(table: CsvTable) -> None:
    usage = table.frame["Usage"]
    position = _first(~usage.isin(USAGES))
    if position is not None:
        raise table.error(position, f"Usage {shown(usage.iloc[position])} is not one of {', '.join(USAGES)}")


@dataclass(frozen=True)
class Solution:
    """Ground truth of one task: per test id, its expected answers and its Usage.

    `answers` holds landmark ids (ints) for recognition, index image ids (strs) for retrieval;
    an empty list is a non-landmark image (recognition) or an Ignored query (retrieval).
    """

    task: str
    answers: dict[str, list] = field(repr=False)
    usage: dict[str, str] = field(repr=False)

    def scored(self, split: str = "all") -> dict[str, list]:
        """The rows scored for `split`: `public`, `private`, or `all` (every non-Ignored row)."""
        wanted = {"public": ("Public",), "private": ("Private",), "all": ("Public", "Private")}
        if split not in wanted:
            raise UserInputError(f"unknown split {split!r}; expected public, private or all")
        keep = wanted[split]
        return {image_id: self.answers[image_id] for image_id, usage in self.usage.items() if usage in keep}


def read_recognition_solution(path: str | Path) -> Solution:
    """`recognition_solution_v2.1.csv` (`id,landmarks,Usage`; landmarks space-separated ints,
    empty for a non-landmark image)."""
    table = read_table(path, ["id", "landmarks", "Usage"])
    _check_ids(table)
    _check_usage(table)
    frame = table.frame
    answers: dict[str, list] = {}
    for position, (image_id, landmarks) in enumerate(zip(frame["id"], frame["landmarks"])):
        tokens = landmarks.split()
        if not all(token.isdigit() for token in tokens):
            raise table.error(position, f"landmarks {shown(landmarks)} are not integers")
        answers[image_id] = [int(token) for token in tokens]
    return Solution("recognition", answers, dict(zip(frame["id"], frame["Usage"])))


def read_retrieval_solution(path: str | Path) -> Solution:
    """`retrieval_solution_v2.1.csv` (`id,images,Usage`; images space-separated index ids,
    `None` for an Ignored query)."""
    table = read_table(path, ["id", "images", "Usage"])
    _check_ids(table)
    _check_usage(table)
    frame = table.frame
    answers: dict[str, list] = {}
    for position, (image_id, images, usage) in enumerate(zip(frame["id"], frame["images"], frame["Usage"])):
        tokens = [] if images in ("", "None") else images.split()
        bad = [token for token in tokens if not is_valid_id(token)]
        if bad:
            raise table.error(position, f"invalid index image id {shown(bad[0])}")
        if usage != "Ignored" and not tokens:
            raise table.error(position, f"{usage} query {image_id} has no relevant images")
        answers[image_id] = tokens
    return Solution("retrieval", answers, dict(zip(frame["id"], frame["Usage"])))


def read_id_column(path: str | Path) -> list[str]:
    """The ids of a CSV's `id` column, checked (valid and unique), in file order."""
    table = read_table(path, ["id"])
    _check_ids(table)
    return table.frame["id"].tolist()


def read_sample_submission(path: str | Path) -> list[str]:
    """Test ids listed in a Kaggle `sample_submission.csv` (recognition or retrieval format)."""
    return read_id_column(path)


# --------------------------------------------------------------------------------------------
# Writing CSVs (atomically, byte-identical for identical inputs)


def write_csv_rows(path: str | Path, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    """Write a header and rows as CSV, atomically, with `\\n` line ends (byte-stable output)."""
    with atomic_write(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def write_train_csv(path: str | Path, ids: Sequence[str], landmark_ids: Sequence[int], urls: Sequence[str]) -> None:
    """Write `train.csv` as GLDv2 does: `id,url,landmark_id`."""
    write_csv_rows(path, ["id", "url", "landmark_id"], zip(ids, urls, (int(x) for x in landmark_ids)))


def write_index_csv(path: str | Path, ids: Sequence[str], landmark_ids: Sequence[int]) -> None:
    """Write `index_image_to_landmark.csv`: `id,landmark_id`."""
    write_csv_rows(path, ["id", "landmark_id"], zip(ids, (int(x) for x in landmark_ids)))


def write_train_clean_csv(path: str | Path, images_by_landmark: Mapping[int, Sequence[str]]) -> None:
    """Write `train_clean.csv`: `landmark_id,images`, landmarks ascending."""
    rows = ((int(lm), " ".join(images)) for lm, images in sorted(images_by_landmark.items()) if images)
    write_csv_rows(path, ["landmark_id", "images"], rows)


def write_category_csv(path: str | Path, categories: Mapping[int, str]) -> None:
    """Write `train_label_to_category.csv`: `landmark_id,category`."""
    write_csv_rows(path, ["landmark_id", "category"], sorted(categories.items()))


def write_solution_csv(path: str | Path, solution: Solution) -> None:
    """Write a recognition or retrieval solution in the v2.1 format."""
    column = "landmarks" if solution.task == "recognition" else "images"
    rows = []
    for image_id, answers in solution.answers.items():
        usage = solution.usage[image_id]
        if solution.task == "retrieval" and usage == "Ignored" and not answers:
            text = "None"
        else:
            text = " ".join(str(answer) for answer in answers)
        rows.append((image_id, text, usage))
    write_csv_rows(path, ["id", column, "Usage"], rows)


def write_sample_submission(path: str | Path, test_ids: Sequence[str]) -> None:
    """Write a recognition `sample_submission.csv` (every test id, empty prediction)."""
    write_csv_rows(path, ["id", "landmarks"], ((image_id, "") for image_id in test_ids))
