"""`lmkcomp calibrate`: thresholds from stored labelled scores, on a hand-made CSV and on a pair
table of the tiny preset, and what a given threshold achieves on them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lmkcomp.calibration import rates_at
from lmkcomp.cli import main
from lmkcomp.data.layout import LandmarkData
from lmkcomp.local.extract import extract_local_split
from lmkcomp.local.pairs import read_pair_table, verify_pairs
from lmkcomp.local.sift import SiftExtractor
from lmkcomp.local.verify import verify_config


def _refuse_nan(constant: str):
    raise AssertionError(f"invalid JSON constant {constant}")


def run(capsys, *argv: str) -> dict:
    capsys.readouterr()
    assert main(["calibrate", *argv]) == 0
    return json.loads(capsys.readouterr().out, parse_constant=_refuse_nan)


def test_csv_scores_hit_the_target_and_a_given_threshold_is_re_applied(tmp_path, capsys):
    # 10 negatives (cosines 0.00 .. 0.45) and 3 positives; "-inf": a query without a candidate
    csv = tmp_path / "scores.csv"
    negatives = [f"0.{5 * i:02d}" for i in range(10)]
    rows = ["id,score,landmark", *(f"n{i},{s},0" for i, s in enumerate(negatives)),
            "p1,0.9,1", "p2,0.42,1", "p3,-inf,1"]
    csv.write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = run(capsys, "--scores", str(csv), "--target-specificity", "0.9")
    # 90 % of 10: one negative (0.45) may stay claimed, so t is just above 0.40
    assert result["threshold"] == np.nextafter(0.40, 1.0)
    assert result["specificity"] == 0.9 and result["false_positives"] == 1
    assert result["sensitivity"] == pytest.approx(2 / 3) and result["negatives"] == 10
    applied = run(capsys, "--scores", str(csv), "--threshold", "0.5")
    assert applied["specificity"] == 1.0 and applied["sensitivity"] == pytest.approx(1 / 3)
    assert "target_specificity" not in applied


def test_whole_number_scores_get_a_whole_threshold(tmp_path, capsys):
    csv = tmp_path / "inliers.csv"
    csv.write_text("inliers,same\n40,yes\n12,yes\n9,no\n4,no\n0,no\n0,no\n", encoding="utf-8")
    result = run(capsys, "--scores", str(csv), "--score-column", "inliers", "--label-column", "same",
                 "--target-specificity", "0.75")
    assert result["threshold"] == 5 and result["specificity"] == 0.75 and result["sensitivity"] == 1.0


def test_bad_input_is_one_line_naming_the_place(tmp_path, capsys):
    csv = tmp_path / "scores.csv"
    csv.write_text("score,landmark\n0.5,1\n0.2,maybe\n", encoding="utf-8")
    assert main(["calibrate", "--scores", str(csv)]) == 2
    assert capsys.readouterr().err == f"lmkcomp: error: {csv}:3: landmark 'maybe' is not 1 or 0\n"
    csv.write_text("score,landmark\n0.5,1\n0.7,1\n", encoding="utf-8")
    assert main(["calibrate", "--scores", str(csv)]) == 2
    assert "no negative scores" in capsys.readouterr().err
    assert main(["calibrate", "--scores", str(tmp_path)]) == 2
    assert "a pair table needs --labels" in capsys.readouterr().err


def test_demote_over_from_recognize_scores(tmp_path, capsys, caplog):
    # recognize's columns: 4 non-landmark images predicted as landmarks counted 3, 3, 2 and 1
    # times, one without a prediction; a landmark image right (count 3) and one wrong (-inf)
    csv = tmp_path / "calibration-scores.csv"
    csv.write_text("id,best_landmark,confidence,landmark,score,landmark_predictions\n"
                   "a,7,0.9,0,0.9,3\nb,7,0.8,0,0.8,3\nc,8,0.7,0,0.7,2\nd,9,0.6,0,0.6,1\ne,7,-inf,0,-inf,0\n"
                   "f,7,0.95,1,0.95,3\ng,8,0.5,1,-inf,2\n", encoding="utf-8")
    # 60 %: 2 of 5 may be kept; N = 2 keeps c and d
    result = run(capsys, "--scores", str(csv), "--demote-over", "--target-specificity", "0.6")
    assert result["demote_over"] == 2 and "threshold" not in result
    assert result["specificity"] == 0.6 and result["sensitivity"] == 0.0 and result["false_positives"] == 2
    assert result["predictions"] == 6 and result["demote_over_share"] == 2 / 6
    applied = run(capsys, "--scores", str(csv), "--demote-over", "--threshold", "3")
    assert applied["demote_over"] == 3 and applied["specificity"] == 0.2 and applied["sensitivity"] == 0.5
    assert "target_specificity" not in applied
    # 100 % needs N = 0: N = 1 is reported with what it achieves, and a warning
    assert not caplog.records
    strict = run(capsys, "--scores", str(csv), "--demote-over", "--target-specificity", "1")
    assert strict["demote_over"] == 1 and strict["specificity"] == 0.8
    assert "demotion alone cannot reach a 1 specificity" in caplog.text


def test_demote_over_bad_input(tmp_path, capsys):
    csv = tmp_path / "scores.csv"
    csv.write_text("score,landmark,landmark_predictions\n0.5,1,2\n0.2,0,two\n", encoding="utf-8")
    assert main(["calibrate", "--scores", str(csv), "--demote-over"]) == 2
    assert capsys.readouterr().err == (f"lmkcomp: error: {csv}:3: landmark_predictions 'two' is not a whole number "
                                       ">= 0\n")
    csv.write_text("score,landmark,landmark_predictions\n0.5,1,2\n0.2,0,1\n", encoding="utf-8")
    assert main(["calibrate", "--scores", str(csv), "--demote-over", "--threshold", "0"]) == 2
    assert "demote-over is a prediction count N >= 1, got 0.0" in capsys.readouterr().err
    assert main(["calibrate", "--scores", str(tmp_path), "--demote-over"]) == 2
    assert "--demote-over reads the calibration-scores.csv of lmkcomp recognize" in capsys.readouterr().err
    csv.write_text("score,landmark\n0.5,1\n0.2,0\n", encoding="utf-8")  # delf recognize's: no counts
    assert main(["calibrate", "--scores", str(csv), "--demote-over"]) == 2
    assert "landmark_predictions" in capsys.readouterr().err


@pytest.mark.slow
def test_pair_table_same_landmark_threshold(tiny_root, tmp_path, capsys):
    root = tiny_root
    data = LandmarkData(root)
    store = extract_local_split(data, "train", tmp_path / "sift", SiftExtractor(contrast_threshold=0.01),
                                progress=False)
    # each image against the next 3: same-landmark pairs and others
    ids = store.ids
    pairs = pd.DataFrame({"query_id": [a for i, a in enumerate(ids) for b in ids[i + 1:i + 4]],
                          "candidate_id": [b for i, a in enumerate(ids) for b in ids[i + 1:i + 4]]})
    table = verify_pairs(pairs, store, store, tmp_path / "pairs", verify_config("fast"), progress=False)
    result = run(capsys, "--scores", str(table), "--labels", str(root / "train.csv"), "--target-specificity", "0.95")
    labels = dict(zip(data.train_labels()["id"], data.train_labels()["landmark_id"]))
    frame = read_pair_table(table)
    same = np.array([labels[a] == labels[b] for a, b in zip(frame["query_id"], frame["candidate_id"])])
    inliers = frame["inliers"].to_numpy()
    assert isinstance(result["threshold"], int) and result["threshold"] >= 1
    assert result["positives"] == same.sum() > 0 and result["negatives"] == (~same).sum() > 0
    assert result["specificity"] >= 0.95
    # the lowest such threshold: one inlier less misses the target
    if result["threshold"] > 1:
        assert rates_at(result["threshold"] - 1, inliers[same], inliers[~same]).specificity < 0.95
