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
