"""The Google Landmarks v2 layouts: image ids, image paths and the dataset's CSV files.

Every reader validates what it reads and rejects a bad file with a `CsvFormatError` that names
the file and the (1-based, header = line 1) line at fault, so a user never trains on a CSV that
was silently misread.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from lmkcomp.errors import CsvFormatError, UserInputError
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
        raise UserInputError(f"invalid image id {image_id!r}: expected 16 hexadecimal characters")
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


def read_csv_columns(path: str | Path, required: Sequence[str]) -> pd.DataFrame:
    """Read a CSV as strings, check the required columns are present."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: file not found")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except pd.errors.EmptyDataError:
        raise CsvFormatError(path, 1, "empty file: expected a header row") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        line = _parser_error_line(str(exc))
        raise CsvFormatError(path, line, f"malformed CSV: {exc}") from None
    missing = [name for name in required if name not in frame.columns]
    if missing:
        raise CsvFormatError(
            path, 1, f"missing column(s) {', '.join(missing)}; header has {', '.join(frame.columns)}"
        )
    return frame


def _parser_error_line(message: str) -> int | None:
    match = re.search(r"line (\d+)", message)
    return int(match.group(1)) if match else None


#: landmark ids are stored as int64
_MAX_LANDMARK_ID = int(np.iinfo(np.int64).max)


def _line_of(row_position: int) -> int:
    """CSV line of the row at `row_position` (0-based data row; the header is line 1)."""
    return row_position + 2


def _check_ids(path: Path, ids: pd.Series, unique: bool = True) -> None:
    bad = ~ids.str.fullmatch(ID_PATTERN.pattern)
    if bad.any():
        position = int(np.flatnonzero(bad.to_numpy())[0])
        raise CsvFormatError(
            path, _line_of(position), f"invalid image id {ids.iloc[position]!r}: expected 16 hex characters"
        )
    if unique:
        duplicated = ids.duplicated()
        if duplicated.any():
            position = int(np.flatnonzero(duplicated.to_numpy())[0])
            raise CsvFormatError(path, _line_of(position), f"duplicate id {ids.iloc[position]}")


def _parse_landmark_ids(path: Path, values: pd.Series, column: str) -> np.ndarray:
    """Parse a column of single non-negative integer landmark ids."""
    numeric = values.str.fullmatch(r"\d+")
    if not numeric.all():
        position = int(np.flatnonzero(~numeric.to_numpy())[0])
        raise CsvFormatError(
            path, _line_of(position), f"{column} {values.iloc[position]!r} is not a non-negative integer"
        )
    # only ids as long as the limit can pass it; compared as numbers (leading zeros are allowed)
    long_positions = np.flatnonzero(values.str.len().to_numpy() >= len(str(_MAX_LANDMARK_ID)))
    too_large = [position for position in long_positions if int(values.iloc[position]) > _MAX_LANDMARK_ID]
    if too_large:
        position = int(too_large[0])
        raise CsvFormatError(path, _line_of(position), f"{column} {values.iloc[position]} is too large "
                             f"(at most {_MAX_LANDMARK_ID}, the int64 limit)")
    return values.astype(np.int64).to_numpy()


def read_train_csv(path: str | Path) -> pd.DataFrame:
    """`train.csv` (`id,url,landmark_id`; the 2020/2021 Kaggle files have no `url`).

    Returns a frame with columns `id` (str) and `landmark_id` (int64), in file order.
    """
    path = Path(path)
    frame = read_csv_columns(path, ["id", "landmark_id"])
    _check_ids(path, frame["id"])
    labels = _parse_landmark_ids(path, frame["landmark_id"], "landmark_id")
    return pd.DataFrame({"id": frame["id"].to_numpy(), "landmark_id": labels})


def read_index_csv(path: str | Path) -> pd.DataFrame:
    """`index_image_to_landmark.csv` (`id,landmark_id`), same checks as `train.csv`."""
    return read_train_csv(path)


def read_train_clean_csv(path: str | Path) -> pd.DataFrame:
    """`train_clean.csv` (`landmark_id,images`, images space-separated), exploded to `id,landmark_id`.

    An image listed twice (in one landmark or two) is an error, as is a landmark listed twice.
    """
    path = Path(path)
    frame = read_csv_columns(path, ["landmark_id", "images"])
    labels = _parse_landmark_ids(path, frame["landmark_id"], "landmark_id")
    duplicated = pd.Series(labels).duplicated().to_numpy()
    if duplicated.any():
        position = int(np.flatnonzero(duplicated)[0])
        raise CsvFormatError(path, _line_of(position), f"duplicate landmark_id {labels[position]}")
    ids: list[str] = []
    owners: list[int] = []
    lines: list[int] = []
    for position, (landmark, images) in enumerate(zip(labels, frame["images"])):
        tokens = images.split()
        if not tokens:
            raise CsvFormatError(path, _line_of(position), f"landmark {landmark} lists no images")
        ids.extend(tokens)
        owners.extend([int(landmark)] * len(tokens))
        lines.extend([_line_of(position)] * len(tokens))
    id_series = pd.Series(ids, dtype=str)
    bad = ~id_series.str.fullmatch(ID_PATTERN.pattern)
    if bad.any():
        position = int(np.flatnonzero(bad.to_numpy())[0])
        raise CsvFormatError(path, lines[position], f"invalid image id {ids[position]!r}")
    duplicated = id_series.duplicated().to_numpy()
    if duplicated.any():
        position = int(np.flatnonzero(duplicated)[0])
        raise CsvFormatError(path, lines[position], f"image {ids[position]} is listed more than once")
    return pd.DataFrame({"id": ids, "landmark_id": np.asarray(owners, dtype=np.int64)})


def read_category_csv(path: str | Path) -> pd.DataFrame:
    """`train_label_to_category.csv` (`landmark_id,category`)."""
    path = Path(path)
    frame = read_csv_columns(path, ["landmark_id", "category"])
    labels = _parse_landmark_ids(path, frame["landmark_id"], "landmark_id")
    return pd.DataFrame({"landmark_id": labels, "category": frame["category"].to_numpy()})


def _check_usage(path: Path, usage: pd.Series) -> None:
    bad = ~usage.isin(USAGES)
    if bad.any():
        position = int(np.flatnonzero(bad.to_numpy())[0])
        raise CsvFormatError(
            path, _line_of(position), f"Usage {usage.iloc[position]!r} is not one of {', '.join(USAGES)}"
        )


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
    path = Path(path)
    frame = read_csv_columns(path, ["id", "landmarks", "Usage"])
    _check_ids(path, frame["id"])
    _check_usage(path, frame["Usage"])
    answers: dict[str, list] = {}
    for position, (image_id, landmarks) in enumerate(zip(frame["id"], frame["landmarks"])):
        tokens = landmarks.split()
        if not all(token.isdigit() for token in tokens):
            raise CsvFormatError(path, _line_of(position), f"landmarks {landmarks!r} are not integers")
        answers[image_id] = [int(token) for token in tokens]
    return Solution("recognition", answers, dict(zip(frame["id"], frame["Usage"])))


def read_retrieval_solution(path: str | Path) -> Solution:
    """`retrieval_solution_v2.1.csv` (`id,images,Usage`; images space-separated index ids,
    `None` for an Ignored query)."""
    path = Path(path)
    frame = read_csv_columns(path, ["id", "images", "Usage"])
    _check_ids(path, frame["id"])
    _check_usage(path, frame["Usage"])
    answers: dict[str, list] = {}
    for position, (image_id, images, usage) in enumerate(zip(frame["id"], frame["images"], frame["Usage"])):
        tokens = [] if images in ("", "None") else images.split()
        bad = [token for token in tokens if not is_valid_id(token)]
        if bad:
            raise CsvFormatError(path, _line_of(position), f"invalid index image id {bad[0]!r}")
        if usage != "Ignored" and not tokens:
            raise CsvFormatError(path, _line_of(position), f"{usage} query {image_id} has no relevant images")
        answers[image_id] = tokens
    return Solution("retrieval", answers, dict(zip(frame["id"], frame["Usage"])))


def read_id_column(path: str | Path) -> list[str]:
    """The ids of a CSV's `id` column, checked (valid and unique), in file order."""
    path = Path(path)
    frame = read_csv_columns(path, ["id"])
    _check_ids(path, frame["id"])
    return frame["id"].tolist()


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
