"""Kaggle submission files for GLDv2: writers, readers, a validator and the scorer.

Recognition: ``id,landmarks`` with landmarks = ``"<landmark_id> <confidence>"`` or empty.
Retrieval: ``id,images`` with up to 100 space-separated index ids, best first.
Readers stream the file: each row is checked as it is read, the first problem raises at once
naming the file and line, and memory is bounded by the rows kept, not by the file.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Container, Iterator, Mapping, Sequence

from lmkcomp import metrics
from lmkcomp.csvfile import CsvReader, shown
from lmkcomp.data.gldv2 import ID_PATTERN, Solution, is_valid_id, write_csv_rows
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
#
# A submission is read as a stream: each row is checked as soon as it is read, so the first bad
# row is reported without reading the rest of the file, and memory does not grow with the file
# beyond the predictions the caller asks to keep (`keep`) and one id and line number per row.
# Passing `known` bounds even that: a row whose id is not known is an error as soon as it is read.


#: The longest CSV record accepted, in characters, line ends included (a record is one line, or
#: several when a quoted field holds line ends). A retrieval row of 100 ids is 1,717 characters;
#: 64 Ki leaves a wide margin while bounding what a malformed file can make the reader hold.
MAX_ROW_CHARS = 65536
#: A non-empty retrieval `images` field: 1 to 100 ids separated by whitespace (`str.split`'s)
_IMAGES_FIELD = re.compile(rf"{ID_PATTERN.pattern}(?:\s+{ID_PATTERN.pattern}){{0,{MAX_RETRIEVED - 1}}}")


def _rows(path: Path, task: str, max_row_chars: int = MAX_ROW_CHARS) -> Iterator[tuple[int, str, str]]:
    """Yield (line number, id, value) for each data row as it is read, after checking the header.

    Read with `CsvReader` (a byte order mark accepted, blank lines skipped, a row's line is its
    last line's); fields are stripped. Any row longer than `max_row_chars` characters, line ends
    included, is an error (see `MAX_ROW_CHARS`).
    """
    expected = HEADERS[task]
    with CsvReader(path, max_record_chars=max_row_chars, error=SubmissionError) as reader:
        reader.require_columns(expected, exact=True)
        for line, row in reader:
            if len(row) != 2:
                raise SubmissionError(path, line, f"expected 2 fields (id and {expected[1]}), found {len(row)}")
            yield line, row[0].strip(), row[1].strip()


def _recognition_problem(value: str) -> str | None:
    """Why `value` is not a recognition `landmarks` field, or None: a valid field is empty or
    `<landmark_id> <confidence>`, a non-negative integer and a finite number."""
    if not value:
        return None
    tokens = value.split()
    if len(tokens) != 2:
        return f"landmarks {shown(value)}: expected exactly '<landmark_id> <confidence>'"
    if not tokens[0].isdigit():
        return f"landmark id {shown(tokens[0])} is not a non-negative integer"
    try:
        score = float(tokens[1])
    except ValueError:
        return f"confidence {shown(tokens[1])} is not a number"
    return None if math.isfinite(score) else f"confidence {shown(tokens[1])} is not finite"


def _retrieval_problem(value: str) -> str | None:
    """Why `value` is not a retrieval `images` field, or None: a valid field holds 0 to 100
    whitespace-separated image ids."""
    if not value or _IMAGES_FIELD.fullmatch(value):  # one regex pass: the common, valid case
        return None
    tokens = value.split()
    if len(tokens) > MAX_RETRIEVED:
        return f"{len(tokens)} images; at most {MAX_RETRIEVED} are allowed"
    bad = next(token for token in tokens if not is_valid_id(token))
    return f"image id {shown(bad)} is not 16 hexadecimal characters"


def _decode_recognition(field: str) -> tuple[int, float] | None:
    """A valid `landmarks` field as (landmark id, confidence); None when empty."""
    if not field:
        return None
    landmark_id, confidence = field.split()
    return int(landmark_id), float(confidence)


_PROBLEM = {"recognition": _recognition_problem, "retrieval": _retrieval_problem}
_DECODE = {"recognition": _decode_recognition, "retrieval": str.split}


class Predictions(Mapping[str, Any]):
    """Image id -> prediction, stored as the checked text fields of the file and decoded on
    each access: recognition `(landmark_id, confidence)` or None (an empty row), retrieval the
    list of index ids, best first. A row of 100 ids is held as one 1.7 KB string rather than
    a list of 100 strings (about 7.4 KB)."""

    def __init__(self, task: str, fields: dict[str, str]):
        self.task = task
        self._fields = fields
        self._decode = _DECODE[task]

    def __getitem__(self, image_id: str) -> Any:
        return self._decode(self._fields[image_id])

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def restricted(self, keep: Container[str]) -> Predictions:
        """The predictions of the ids in `keep` whose row is not empty."""
        return Predictions(self.task, {image_id: field for image_id, field in self._fields.items()
                                       if field and image_id in keep})


@dataclass(frozen=True)
class Submission:
    """A checked submission: `lines` maps every row's id to its line; `predictions` holds the
    kept rows, in file order; `filled` counts the rows with a non-empty prediction."""

    task: str
    path: Path
    predictions: Predictions
    lines: dict[str, int]
    filled: int


def read_submission(
    path: str | Path,
    task: str,
    keep: Container[str] | None = None,
    *,
    known: tuple[Container[str], str] | None = None,
    max_row_chars: int = MAX_ROW_CHARS,
) -> Submission:
    """Read and check a submission as a stream, raising at its first bad row.

    Each row is checked in this order: its id is 16 hex characters, the id has no earlier row,
    its value is well formed for `task`, and, when `known` = (ids, what they are) is given, the
    id is one of those ids ("id X is not <what>"). `keep`: the ids whose predictions are
    kept (None: every row's; an empty container: none, when only checking).
    """
    _check_task(task)
    path = Path(path)
    problem = _PROBLEM[task]
    fields: dict[str, str] = {}
    lines: dict[str, int] = {}
    filled = 0
    for line, image_id, value in _rows(path, task, max_row_chars):
        if not is_valid_id(image_id):
            raise SubmissionError(path, line, f"id {shown(image_id)} is not 16 hexadecimal characters")
        if image_id in lines:
            raise SubmissionError(path, line, f"id {image_id} appears again (first on line {lines[image_id]})")
        message = problem(value)
        if message is not None:
            raise SubmissionError(path, line, message)
        if known is not None and image_id not in known[0]:
            raise SubmissionError(path, line, f"id {image_id} is not {known[1]}")
        lines[image_id] = line
        filled += bool(value)
        if keep is None or image_id in keep:
            fields[image_id] = value
    return Submission(task, path, Predictions(task, fields), lines, filled)


def validate_submission(
    path: str | Path,
    task: str,
    test_ids: Sequence[str],
    keep: Container[str] | None = None,
    *,
    max_row_chars: int = MAX_ROW_CHARS,
) -> Submission:
    """Check a submission as Kaggle would: format, no unknown id (raised at its row), every test
    id exactly once. `keep` as in `read_submission`; pass `()` to check without keeping."""
    submission = read_submission(path, task, keep, known=(frozenset(test_ids), "a test image"),
                                 max_row_chars=max_row_chars)
    missing = [image_id for image_id in test_ids if image_id not in submission.lines]
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise SubmissionError(submission.path, None, f"{len(missing)} test id(s) have no row: {shown}")
    return submission


# --------------------------------------------------------------------------------------------
# Scoring


def _scored_predictions(submission: Submission, solution: Solution, split: str) -> tuple[dict, Predictions]:
    """The rows of `split` and the submission's non-empty predictions for them; a row whose id
    the solution does not know is an error."""
    for image_id, line in submission.lines.items():
        if image_id not in solution.answers:
            raise SubmissionError(submission.path, line, f"id {image_id} is not in the solution")
    scored = solution.scored(split)
    return scored, submission.predictions.restricted(scored)


def score_recognition(submission: Submission, solution: Solution, split: str = "all") -> dict:
    """GAP (with and without non-landmark images) and Top-1 accuracy on `split`."""
    scored, predictions = _scored_predictions(submission, solution, split)
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
    scored, predictions = _scored_predictions(submission, solution, split)
    mean_position, median_position = metrics.mean_median_position(predictions, scored)
    # one pass for both precisions (each access to `predictions` splits a row's text again)
    precisions = metrics.mean_precisions(predictions, scored, max_predictions=10)
    return {
        "map@100": metrics.mean_average_precision(predictions, scored),
        "mean_precision@1": float(precisions[0]),
        "mean_precision@10": float(precisions[9]),
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
