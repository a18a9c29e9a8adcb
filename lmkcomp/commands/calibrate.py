"""`lmkcomp calibrate`: a "same landmark / is a landmark" threshold from stored, labelled scores
(`lmkcomp.calibration`), or what a given threshold achieves on them; nothing is recomputed.

Scores come from one of:

- a CSV file with a score column and a 0/1 label column (1: should be claimed), e.g. the
  `calibration-scores.csv` that `lmkcomp delf recognize` or `lmkcomp recognize` writes
  (`score`, `landmark`);
- a pair table folder of `lmkcomp verify` or `lmkcomp clean --method verify` (`inliers` per
  pair) with `--labels`, an `id,landmark_id` CSV: a pair is positive when both images carry
  the same landmark, negative otherwise (other landmarks, or an image without a label).

Whole-number scores (inlier counts) get a whole-number threshold of at least 1.

`--demote-over` calibrates `recognize --demote-over N` instead, on `recognize`'s CSV: its
`landmark_predictions` column with `score` and `landmark`
(`lmkcomp.calibration.calibrate_demote_over`); the report names N `demote_over` and adds
`predictions` (rows with a prediction) and `demote_over_share` (N / predictions), since N
holds for a test set of about as many images and scales with it.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from lmkcomp.commands.args import json_safe, specificity
from lmkcomp.errors import UserInputError

log = logging.getLogger(__name__)

TRUE_LABELS = frozenset({"1", "true", "yes"})
FALSE_LABELS = frozenset({"0", "false", "no"})


#: `recognize`'s calibration-scores.csv column of the counts that demotion compares with N
COUNT_COLUMN = "landmark_predictions"


def csv_scores(path: Path, score_column: str, label_column: str,
               count_column: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """`(scores, positive, counts)` from a CSV: scores as floats ("-inf" allowed: no score),
    labels 1/0 (or true/false, yes/no), and with `count_column` its whole numbers >= 0 (else
    None); a bad value is a CsvFormatError naming its line."""
    from lmkcomp.csvfile import read_table

    table = read_table(path, [score_column, label_column, *([count_column] if count_column else [])])
    scores = np.empty(len(table.frame), dtype=np.float64)
    positive = np.empty(len(table.frame), dtype=bool)
    for row, (score, label) in enumerate(zip(table.frame[score_column], table.frame[label_column])):
        try:
            scores[row] = float(score)
        except ValueError:
            raise table.error(row, f"{score_column} {score!r} is not a number") from None
        if label.strip().lower() not in TRUE_LABELS | FALSE_LABELS:
            raise table.error(row, f"{label_column} {label!r} is not 1 or 0")
        positive[row] = label.strip().lower() in TRUE_LABELS
    if count_column is None:
        return scores, positive, None
    counts = np.empty(len(table.frame), dtype=np.int64)
    for row, count in enumerate(table.frame[count_column]):
        if not count.strip().isdigit():
            raise table.error(row, f"{count_column} {count!r} is not a whole number >= 0")
        counts[row] = int(count)
    return scores, positive, counts


def pair_scores(folder: Path, labels_csv: str) -> tuple[np.ndarray, np.ndarray]:
    """`(inliers, same_landmark)` of every pair of a pair table, by the labels of `labels_csv`."""
    from lmkcomp.data import gldv2
    from lmkcomp.local.pairs import read_pair_table

    table = read_pair_table(folder)
    frame = gldv2.read_train_csv(labels_csv)
    known = pd.Index(frame["id"])
    if not known.is_unique:
        raise UserInputError(f"{labels_csv}: image {known[known.duplicated()][0]} is listed twice")
    landmarks = frame["landmark_id"].to_numpy()
    query, candidate = known.get_indexer(table["query_id"]), known.get_indexer(table["candidate_id"])
    same = (query >= 0) & (candidate >= 0) & (landmarks[query] == landmarks[candidate])
    return table["inliers"].to_numpy(dtype=np.float64), same


def _demote_over_report(source: Path, args: argparse.Namespace) -> dict:
    """The report of `--demote-over` (module docstring)."""
    from lmkcomp.calibration import calibrate_demote_over, demote_over_rates

    if source.is_dir():
        raise UserInputError(f"{source}: --demote-over reads the calibration-scores.csv of lmkcomp recognize, "
                             "not a pair table")
    scores, positive, counts = csv_scores(source, args.score_column, args.label_column, COUNT_COLUMN)
    if args.threshold is not None:
        result = demote_over_rates(args.threshold, counts, scores, positive)
    else:
        result = calibrate_demote_over(counts, scores, positive, args.target_specificity)
        if result.caveat():
            log.warning("%s", result.caveat())
    report = {"scores": str(source), "demote_over": result.threshold, **result.as_dict()}
    del report["threshold"]
    predictions = int((counts >= 1).sum())
    report["predictions"] = predictions
    report["demote_over_share"] = result.threshold / predictions if predictions else None
    return report


def _threshold_report(source: Path, args: argparse.Namespace) -> dict:
    """The report of a score threshold (module docstring)."""
    from lmkcomp.calibration import calibrate_threshold, rates_at

    if source.is_dir():
        if not args.labels:
            raise UserInputError(f"{source}: a pair table needs --labels (an id,landmark_id CSV) to tell same-landmark "
                                 "pairs from the others")
        scores, positive = pair_scores(source, args.labels)
    else:
        scores, positive, _ = csv_scores(source, args.score_column, args.label_column)
    finite = scores[np.isfinite(scores)]
    integer = bool(np.all(finite == np.floor(finite)))
    if args.threshold is not None:
        result = rates_at(args.threshold, scores[positive], scores[~positive])
    else:
        result = calibrate_threshold(scores[positive], scores[~positive], args.target_specificity, integer=integer,
                                     minimum=1 if integer else -math.inf)
        if result.caveat():
            log.warning("%s", result.caveat())
    return {"scores": str(source), **result.as_dict()}


def _cmd_calibrate(args: argparse.Namespace) -> int:
    source = Path(args.scores)
    report = (_demote_over_report if args.demote_over else _threshold_report)(source, args)
    if args.threshold is not None:
        del report["target_specificity"]  # only recorded by calibration
    print(json.dumps(json_safe(report), allow_nan=False))
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "calibrate", help="the lowest threshold reaching a target specificity on stored labelled scores (or the "
                          "specificity and sensitivity of a given threshold), without recomputing them")
    parser.add_argument("--scores", required=True, metavar="TABLE",
                        help="a CSV with a score and a 0/1 label column (e.g. delf recognize's "
                             "WORKDIR/NAME/calibration-scores.csv, recognize's WORKDIR/recognition/NAME/"
                             "calibration-scores.csv), or a pair table folder (verify, clean)")
    parser.add_argument("--score-column", default="score", help="CSV: the score column")
    parser.add_argument("--label-column", default="landmark", help="CSV: the label column, 1 for what should be "
                                                                   "claimed, 0 for what should not")
    parser.add_argument("--labels", metavar="CSV", help="pair table: id,landmark_id of the images (train.csv, "
                                                        "index_image_to_landmark.csv); unlabelled images match none")
    parser.add_argument("--demote-over", action="store_true",
                        help=f"calibrate recognize --demote-over N instead, from recognize's CSV: a prediction is "
                             f"kept when its landmark's {COUNT_COLUMN} is <= N (and it is not wrong); N is the "
                             "largest that reaches the target, at least 1, and holds for a test set of about as "
                             "many images (the report gives its share of the predictions, to scale it)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--target-specificity", type=specificity, default=0.99,
                       help="share of the negatives left below the threshold")
    group.add_argument("--threshold", type=float, help="report this threshold's specificity and sensitivity instead "
                                                       "(with --demote-over: this N's)")
    parser.set_defaults(run=_cmd_calibrate)
