"""Kaggle submission files for GLDv2: writers, readers, a validator and the scorer.

Recognition: ``id,landmarks`` with landmarks = ``"<landmark_id> <confidence>"`` or empty.
Retrieval: ``id,images`` with up to 100 space-separated index ids, best first.
Readers check the format line by line and name the file and line of the first problem.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from lmkcomp import metrics
from lmkcomp.data.gldv2 import Solution, is_valid_id, write_csv_rows
from lmkcomp.errors import CsvFormatError, UserInputError

TASKS = ("recognition", "retrieval")
HEADERS = {"recognition": ["id", "landmarks"], "retrieval": ["id", "images"]}
MAX_RETRIEVED = 100

RecognitionPredictions = dict[str, tuple[int, float]]
RetrievalPredictions = dict[str, list[str]]


class SubmissionError(CsvFormatError):
    """A submission file that Kaggle would reject."""


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise UserInputError(f"unknown task {task!r}; expected recognition or retrieval")


# --------------------------------------------------------------------------------------------
# Writing


def write_recognition_submission(
    path: str | Path, test_ids: Sequence[str], predictions: Mapping[str, tuple[int, float]]
) -> None:
    """One row per test id, in `test_ids` order; ids without a prediction get an empty field."""
    rows = []
    for image_id in test_ids:
        prediction = predictions.get(image_id)
        rows.append((image_id, "" if prediction is None else f"{int(prediction[0])} {float(prediction[1]):.6g}"))
    write_csv_rows(path, HEADERS["recognition"], rows)


def write_retrieval_submission(path: str | Path, test_ids: Sequence[str], predictions: Mapping[str, Sequence[str]]) -> None:
    """One row per test id, at most 100 index ids each, best first."""
    rows = []
    for image_id in test_ids:
        images = list(predictions.get(image_id, ()))
        if len(images) > MAX_RETRIEVED:
            raise ValueError(f"{image_id}: {len(images)} retrieved images; at most {MAX_RETRIEVED} are allowed")
        rows.append((image_id, " ".join(images)))
    write_csv_rows(path, HEADERS["retrieval"], rows)


# --------------------------------------------------------------------------------------------
# Reading


def _rows(path: Path, task: str):
    """Yield (line number, id, value) for each data row, after checking the header."""
    if not path.is_file():
        raise UserInputError(f"{path}: file not found")
    expected = HEADERS[task]
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise SubmissionError(path, 1, f"empty file: expected the header {','.join(expected)}")
            if [column.strip() for column in header] != expected:
                raise SubmissionError(path, 1, f"header is {','.join(header)!r}; expected {','.join(expected)}")
            for row in reader:
                line = reader.line_num
                if not row:
                    continue
                if len(row) != 2:
                    raise SubmissionError(path, line, f"expected 2 fields (id and {expected[1]}), found {len(row)}")
                yield line, row[0].strip(), row[1].strip()
    except UnicodeDecodeError:
        raise SubmissionError(path, None, "not a UTF-8 text file") from None
    except csv.Error as exc:
        raise SubmissionError(path, None, f"malformed CSV: {exc}") from None


def _parse_recognition_value(path: Path, line: int, value: str) -> tuple[int, float] | None:
    if not value:
        return None
    tokens = value.split()
    if len(tokens) != 2:
        raise SubmissionError(path, line, f"landmarks {value!r}: expected exactly '<landmark_id> <confidence>'")
    if not tokens[0].isdigit():
        raise SubmissionError(path, line, f"landmark id {tokens[0]!r} is not a non-negative integer")
    try:
        score = float(tokens[1])
    except ValueError:
        raise SubmissionError(path, line, f"confidence {tokens[1]!r} is not a number") from None
    if not math.isfinite(score):
        raise SubmissionError(path, line, f"confidence {tokens[1]!r} is not finite")
    return int(tokens[0]), score


def _parse_retrieval_value(path: Path, line: int, value: str) -> list[str]:
    tokens = value.split()
    if len(tokens) > MAX_RETRIEVED:
        raise SubmissionError(path, line, f"{len(tokens)} images; at most {MAX_RETRIEVED} are allowed")
    for token in tokens:
        if not is_valid_id(token):
            raise SubmissionError(path, line, f"image id {token!r} is not 16 hexadecimal characters")
    return tokens


@dataclass(frozen=True)
class Submission:
    """A parsed submission: predictions in file order (`None`: an empty recognition row)."""

    task: str
    path: Path
    predictions: dict
    lines: dict[str, int]


def read_submission(path: str | Path, task: str) -> Submission:
    """Parse and check the format of a submission; duplicate ids are errors."""
    _check_task(task)
    path = Path(path)
    parse = _parse_recognition_value if task == "recognition" else _parse_retrieval_value
    predictions: dict = {}
    lines: dict[str, int] = {}
    for line, image_id, value in _rows(path, task):
        if not is_valid_id(image_id):
            raise SubmissionError(path, line, f"id {image_id!r} is not 16 hexadecimal characters")
        if image_id in lines:
            raise SubmissionError(path, line, f"id {image_id} appears again (first on line {lines[image_id]})")
        predictions[image_id] = parse(path, line, value)
        lines[image_id] = line
    return Submission(task, path, predictions, lines)


def validate_submission(path: str | Path, task: str, test_ids: Sequence[str]) -> Submission:
    """Check a submission as Kaggle would: format, every test id exactly once, no unknown id."""
    submission = read_submission(path, task)
    expected = set(test_ids)
    for image_id, line in submission.lines.items():
        if image_id not in expected:
            raise SubmissionError(submission.path, line, f"id {image_id} is not a test image")
    missing = [image_id for image_id in test_ids if image_id not in submission.lines]
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise SubmissionError(submission.path, None, f"{len(missing)} test id(s) have no row: {shown}")
    return submission


# --------------------------------------------------------------------------------------------
# Scoring


def _known_predictions(submission: Submission, solution: Solution) -> dict:
    """Predictions restricted to non-empty rows; an id the solution does not know is an error."""
    for image_id, line in submission.lines.items():
        if image_id not in solution.answers:
            raise SubmissionError(submission.path, line, f"id {image_id} is not in the solution")
    return {image_id: value for image_id, value in submission.predictions.items() if value is not None}


def score_recognition(submission: Submission, solution: Solution, split: str = "all") -> dict:
    """GAP (with and without non-landmark images) and Top-1 accuracy on `split`."""
    scored = solution.scored(split)
    predictions = {k: v for k, v in _known_predictions(submission, solution).items() if k in scored}
    return {
        "gap": metrics.global_average_precision(predictions, scored),
        "gap_ignore_non_landmark": metrics.global_average_precision(predictions, scored, ignore_non_landmarks=True),
        "top1_accuracy": metrics.top1_accuracy(predictions, scored),
        "split": split,
        "num_scored": len(scored),
        "num_landmark_images": sum(1 for answers in scored.values() if answers),
    }


def score_retrieval(submission: Submission, solution: Solution, split: str = "all") -> dict:
    """mAP@100, mean precision@1/@10 and the mean / median position of the first hit on `split`."""
    scored = solution.scored(split)
    predictions = {k: v for k, v in _known_predictions(submission, solution).items() if k in scored}
    mean_position, median_position = metrics.mean_median_position(predictions, scored)
    return {
        "map@100": metrics.mean_average_precision(predictions, scored),
        "mean_precision@1": metrics.mean_precision_at(predictions, scored, 1),
        "mean_precision@10": metrics.mean_precision_at(predictions, scored, 10),
        "mean_position": mean_position,
        "median_position": median_position,
        "split": split,
        "num_scored": len(scored),
    }


def score_submission(submission: Submission, solution: Solution, split: str = "all") -> dict:
    """Score a parsed submission against the solution of its task."""
    if solution.task != submission.task:
        raise UserInputError(f"{submission.path} is a {submission.task} submission but the solution is for {solution.task}")
    scorer = score_recognition if submission.task == "recognition" else score_retrieval
    return scorer(submission, solution, split)
