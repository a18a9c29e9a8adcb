"""Submission writers, the validator's errors, and `lmkcomp score` end to end on files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lmkcomp.cli import main
from lmkcomp.data import gldv2
from lmkcomp.submission import (
    SubmissionError,
    read_submission,
    validate_submission,
    write_recognition_submission,
    write_retrieval_submission,
)

# Five test images as in the reference's worked GAP example, renamed to GLDv2 ids.
IA, IB, IC, ID, IE = (f"{c}" * 16 for c in "abcde")
X1, X2, X3 = "1" * 16, "2" * 16, "3" * 16


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def recognition_solution(tmp_path) -> Path:
    # A:[0,12], B:[100,200,300], C:[1], D:[], E:[] ; all Public except E Private
    return write(
        tmp_path / "recognition_solution_v2.1.csv",
        "id,landmarks,Usage\n"
        f"{IA},0 12,Public\n{IB},100 200 300,Public\n{IC},1,Public\n{ID},,Public\n{IE},,Private\n",
    )


def test_recognition_round_trip(tmp_path):
    path = tmp_path / "sub.csv"
    write_recognition_submission(path, [IA, IB], {IA: (12, 0.25)})
    assert path.read_text() == f"id,landmarks\n{IA},12 0.25\n{IB},\n"
    assert read_submission(path, "recognition").predictions == {IA: (12, 0.25), IB: None}


def test_retrieval_round_trip_and_limit(tmp_path):
    path = tmp_path / "sub.csv"
    write_retrieval_submission(path, [IA, IB], {IA: [X1, X2]})
    assert path.read_text() == f"id,images\n{IA},{X1} {X2}\n{IB},\n"
    assert read_submission(path, "retrieval").predictions == {IA: [X1, X2], IB: []}
    with pytest.raises(ValueError, match="at most 100"):
        write_retrieval_submission(path, [IA], {IA: [X1] * 101})


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (f"{IB},7", r"sub\.csv:3: landmarks '7': expected exactly"),
        (f"{IB},7 0.5 1", r"sub\.csv:3: landmarks '7 0\.5 1': expected exactly"),
        (f"{IB},x 0.5", r"sub\.csv:3: landmark id 'x' is not a non-negative integer"),
        (f"{IB},7 high", r"sub\.csv:3: confidence 'high' is not a number"),
        (f"{IB},7 nan", r"sub\.csv:3: confidence 'nan' is not finite"),
        (f"{IA},7 0.5", rf"sub\.csv:3: id {IA} appears again \(first on line 2\)"),
        ("xyz,7 0.5", r"sub\.csv:3: id 'xyz' is not 16 hexadecimal characters"),
        (f"{IB},7 0.5,extra", r"sub\.csv:3: expected 2 fields"),
    ],
)
def test_recognition_format_errors_name_the_line(tmp_path, row, message):
    path = write(tmp_path / "sub.csv", f"id,landmarks\n{IA},1 0.9\n{row}\n")
    with pytest.raises(SubmissionError, match=message):
        read_submission(path, "recognition")


def test_wrong_header(tmp_path):
    path = write(tmp_path / "sub.csv", f"id,images\n{IA},\n")
    with pytest.raises(SubmissionError, match=r"sub\.csv:1: header is 'id,images'; expected id,landmarks"):
        read_submission(path, "recognition")


def test_retrieval_format_errors(tmp_path):
    too_many = " ".join([X1] * 101)
    path = write(tmp_path / "sub.csv", f"id,images\n{IA},{too_many}\n")
    with pytest.raises(SubmissionError, match=r"sub\.csv:2: 101 images; at most 100"):
        read_submission(path, "retrieval")
    path = write(tmp_path / "sub.csv", f"id,images\n{IA},{X1} nope\n")
    with pytest.raises(SubmissionError, match=r"sub\.csv:2: image id 'nope'"):
        read_submission(path, "retrieval")


def test_validator_requires_every_test_id_once(tmp_path):
    path = write(tmp_path / "sub.csv", f"id,landmarks\n{IA},1 0.9\n{IB},\n")
    assert validate_submission(path, "recognition", [IA, IB]).predictions[IA] == (1, 0.9)
    with pytest.raises(SubmissionError, match=r"sub\.csv: 1 test id\(s\) have no row: " + IC):
        validate_submission(path, "recognition", [IA, IB, IC])
    with pytest.raises(SubmissionError, match=rf"sub\.csv:3: id {IB} is not a test image"):
        validate_submission(path, "recognition", [IA])


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_score_recognition_worked_example(tmp_path, capsys, recognition_solution):
    # predictions B:(0,0.01), C:(1,10.0), D:(150,15.0); A and E empty.
    # ranking D(15, wrong) C(10, right: P=1/2) B(0.01, wrong); M = 3 landmark images
    # GAP = (1/2)/3 = 1/6 ; ignoring non-landmark D: C first, P=1 -> 1/3 ; top-1 = 1/3
    sub = write(tmp_path / "sub.csv", f"id,landmarks\n{IA},\n{IB},0 0.01\n{IC},1 10.0\n{ID},150 15.0\n{IE},\n")
    code, out, _ = run_cli(capsys, "score", "--task", "recognition", "--solution", str(recognition_solution), "--submission", str(sub))
    assert code == 0
    result = json.loads(out)
    assert result["gap"] == pytest.approx(1 / 6)
    assert result["gap_ignore_non_landmark"] == pytest.approx(1 / 3)
    assert result["top1_accuracy"] == pytest.approx(1 / 3)


def test_score_splits_restrict_rows(tmp_path, capsys, recognition_solution):
    # E (Private, non-landmark) predicted with the highest score: it only hurts the private split.
    # private: M = 0 landmark images -> GAP 0 ; public: E not ranked, C alone correct -> 1/3
    sub = write(tmp_path / "sub.csv", f"id,landmarks\n{IC},1 10.0\n{IE},5 99.0\n")
    _, out, _ = run_cli(capsys, "score", "--task", "recognition", "--solution", str(recognition_solution),
                        "--submission", str(sub), "--split", "public")
    assert json.loads(out)["gap"] == pytest.approx(1 / 3)
    _, out, _ = run_cli(capsys, "score", "--task", "recognition", "--solution", str(recognition_solution),
                        "--submission", str(sub), "--split", "all")
    # all: E(wrong) then C(right, P=1/2) -> (1/2)/3
    assert json.loads(out)["gap"] == pytest.approx(1 / 6)


def test_score_retrieval_by_hand(tmp_path, capsys):
    solution = tmp_path / "retrieval_solution_v2.1.csv"
    gldv2.write_solution_csv(solution, gldv2.Solution(
        "retrieval", {IA: [X1, X2], IB: [X3], IC: []}, {IA: "Public", IB: "Private", IC: "Ignored"}))
    # A: X3 (miss), X1 (hit, P@2 = 1/2), X1 repeated (skipped), X2 (hit, P@4 = 2/4) -> AP = (1/2 + 1/2)/2 = 1/2
    # B: no prediction -> AP 0 ; C is Ignored.  mAP = 1/4
    # first-hit positions: A 2, B 101 -> mean 51.5, median 51.5 ; P@1 = 0 ; P@10 = (2/10 + 0)/2 = 0.1
    sub = write(tmp_path / "sub.csv", f"id,images\n{IA},{X3} {X1} {X1} {X2}\n{IB},\n{IC},{X1}\n")
    code, out, _ = run_cli(capsys, "score", "--task", "retrieval", "--solution", str(solution), "--submission", str(sub))
    assert code == 0
    result = json.loads(out)
    assert result["map@100"] == pytest.approx(0.25)
    assert result["mean_precision@1"] == pytest.approx(0.0)
    assert result["mean_precision@10"] == pytest.approx(0.1)
    assert result["mean_position"] == pytest.approx(51.5)
    assert result["median_position"] == pytest.approx(51.5)


def test_score_unknown_id_is_an_error(tmp_path, capsys, recognition_solution):
    sub = write(tmp_path / "sub.csv", f"id,landmarks\n{IA},0 1\n{'9' * 16},1 1\n")
    code, out, err = run_cli(capsys, "score", "--task", "recognition", "--solution", str(recognition_solution), "--submission", str(sub))
    assert code == 2 and out == ""
    assert f"sub.csv:3: id {'9' * 16} is not in the solution" in err


def test_score_malformed_file_exits_2_with_one_line_and_no_traceback(tmp_path, recognition_solution):
    sub = write(tmp_path / "sub.csv", f"id,landmarks\n{IA},0 1\n{IB},zero one\n")
    completed = subprocess.run(
        [sys.executable, "-m", "lmkcomp", "score", "--task", "recognition", "--solution", str(recognition_solution),
         "--submission", str(sub)], capture_output=True, text=True, check=False,
    )
    assert completed.returncode == 2
    assert completed.stdout == ""
    assert completed.stderr.strip().count("\n") == 0
    assert f"{sub}:3: landmark id 'zero'" in completed.stderr
    assert "Traceback" not in completed.stderr
