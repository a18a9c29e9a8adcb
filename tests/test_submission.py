"""Submission writers, the validator's errors, `lmkcomp score` end to end on files, and the
streaming reader: errors at the first bad row, bounded rows, bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from lmkcomp.cli import main
from lmkcomp.data import gldv2
from lmkcomp.submission import (
    MAX_RETRIEVED,
    MAX_ROW_CHARS,
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
    with pytest.raises(SubmissionError, match=r"sub\.csv:1: missing column\(s\) landmarks; "
                                             r"expected columns id, landmarks \(found columns id, images\)"):
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


# --------------------------------------------------------------------------------------------
# Streaming: the first bad row fails at once, long rows are cut short, memory is bounded


def test_row_quoting_is_csv_quoting(tmp_path):
    # quoted fields, and a quoted field holding a line end (the row's line is its last line's)
    path = write(tmp_path / "sub.csv", f'id,images\n"{IA}","{X1} {X2}"\n{IB},"{X3}\n{X1}"\n')
    submission = read_submission(path, "retrieval")
    assert submission.predictions == {IA: [X1, X2], IB: [X3, X1]}
    assert submission.lines == {IA: 2, IB: 4}


def test_a_byte_order_mark_is_accepted(tmp_path):
    # Excel's "CSV UTF-8" starts with a byte order mark; train.csv accepted one, a submission did not
    path = tmp_path / "sub.csv"
    path.write_text(f"id,images\n{IA},{X1}\n", encoding="utf-8-sig")
    assert read_submission(path, "retrieval").predictions == {IA: [X1]}


def test_line_numbers_count_blank_lines(tmp_path):
    path = write(tmp_path / "sub.csv", f"id,images\n\n{IA},{X1}\n\n\n{IB},nope\n")
    with pytest.raises(SubmissionError, match=r"sub\.csv:6: image id 'nope'"):
        read_submission(path, "retrieval")


class TracedPeak:
    """`with TracedPeak() as traced:` ... then `traced.bytes` is the peak Python allocated inside."""

    def __enter__(self) -> TracedPeak:
        tracemalloc.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.bytes = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


def file_with_unreadable_tail(path: Path, rows: list[str]) -> Path:
    """`rows` after the header, then 64 KiB of blank lines (past any read-ahead of the text
    layer) and bytes that are not UTF-8: a reader that goes on to the end fails on them."""
    text = "id,images\n" + "".join(row + "\n" for row in rows)
    path.write_bytes(text.encode() + b"\n" * 65536 + b"\xff" * 4096)
    return path


def test_an_unknown_id_fails_at_its_row_without_reading_on(tmp_path):
    test_ids = [f"{n:016x}" for n in range(60)]
    rows = [f"{image_id},{X1} {X2}" for image_id in test_ids[:43]] + [f"{'f' * 16},{X1}"]  # line 45
    path = file_with_unreadable_tail(tmp_path / "sub.csv", rows + [f"{image_id}," for image_id in test_ids[43:]])
    with pytest.raises(SubmissionError, match=rf"sub\.csv:45: id {'f' * 16} is not a test image"):
        validate_submission(path, "retrieval", test_ids)


def retrieval_solution(tmp_path: Path) -> Path:
    """A and B scored (Public), C Ignored."""
    path = tmp_path / "retrieval_solution_v2.1.csv"
    gldv2.write_solution_csv(path, gldv2.Solution("retrieval", {IA: [X1], IB: [X2], IC: []},
                                                  {IA: "Public", IB: "Public", IC: "Ignored"}))
    return path


def test_score_rejects_an_id_outside_the_solution_at_its_row(tmp_path, capsys):
    path = file_with_unreadable_tail(tmp_path / "sub.csv", [f"{IA},", f"{IB},", f"{'9' * 16},"])
    code, out, err = run_cli(capsys, "score", "--task", "retrieval", "--solution", str(retrieval_solution(tmp_path)),
                             "--submission", str(path))
    assert (code, out) == (2, "")
    assert err == f"lmkcomp: error: {path}:4: id {'9' * 16} is not in the solution\n"


def test_an_over_long_row_is_reported_at_its_line_after_reading_a_bounded_part(tmp_path, capsys):
    # 8 MB on line 3: the reader stops after MAX_ROW_CHARS + 1 characters of it
    path = tmp_path / "sub.csv"
    path.write_text(f"id,images\n{IA},{X1}\n{IB}," + X2 * 500_000 + "\n")
    with TracedPeak() as traced, pytest.raises(SubmissionError,
                                               match=rf"sub\.csv:3: row longer than {MAX_ROW_CHARS} characters"):
        read_submission(path, "retrieval")
    assert traced.bytes < 1_000_000
    # the CLI: one line, exit 2
    code, out, err = run_cli(capsys, "validate", "--task", "retrieval", "--submission", str(path), "--test-ids",
                             str(write(tmp_path / "sample.csv", f"id,images\n{IA},\n{IB},\n")))
    assert (code, out) == (2, "")
    assert err.startswith(f"lmkcomp: error: {path}:3: row longer than") and err.count("\n") == 1


def test_the_row_limit_counts_a_record_over_its_lines(tmp_path):
    # line 2 (34 characters) fits a limit of 40; the record quoted over lines 4-6 (35 + 17 + 18
    # characters) goes over it on line 5, and fits a limit of 70 exactly
    path = write(tmp_path / "sub.csv", f'id,images\n{IA},{X1}\n\n{IB},"{X2}\n{X3}\n{X1}"\n')
    with pytest.raises(SubmissionError, match=r"sub\.csv:5: row longer than 40 characters"):
        read_submission(path, "retrieval", max_row_chars=40)
    assert read_submission(path, "retrieval", max_row_chars=70).predictions[IB] == [X2, X3, X1]


def many_rows(tmp_path: Path, count: int) -> tuple[Path, list[str]]:
    """A retrieval submission of `count` rows of 100 ids (1,717 bytes each) and its test ids."""
    test_ids = [f"{n:016x}" for n in range(count)]
    images = " ".join(f"{n:016x}" for n in range(10**6, 10**6 + MAX_RETRIEVED))
    path = tmp_path / "sub.csv"
    path.write_text("id,images\n" + "".join(f"{image_id},{images}\n" for image_id in test_ids))
    return path, test_ids


def test_validate_keeps_no_predictions_and_score_only_the_scored_ones(tmp_path, capsys):
    # 2,000 rows of 100 ids (3.4 MB); held as lists of str they would take about 15 MB
    path, test_ids = many_rows(tmp_path, 2000)
    sample = tmp_path / "sample_submission.csv"
    gldv2.write_sample_submission(sample, test_ids)
    solution = tmp_path / "solution.csv"
    gldv2.write_solution_csv(solution, gldv2.Solution(
        "retrieval", {image_id: [X1] if n < 20 else [] for n, image_id in enumerate(test_ids)},
        {image_id: "Public" if n < 20 else "Ignored" for n, image_id in enumerate(test_ids)}))
    with TracedPeak() as traced:
        code, out, _ = run_cli(capsys, "validate", "--task", "retrieval", "--submission", str(path),
                               "--test-ids", str(sample))
    assert code == 0 and "2000 test ids, 2000 with predictions" in out
    assert traced.bytes < 2_000_000
    with TracedPeak() as traced:
        code, out, _ = run_cli(capsys, "score", "--task", "retrieval", "--solution", str(solution),
                               "--submission", str(path))
    assert code == 0 and json.loads(out)["num_scored"] == 20
    assert traced.bytes < 2_000_000
    # the library keeps what it is asked to: the kept rows only, as their text
    submission = validate_submission(path, "retrieval", test_ids, keep=test_ids[:3])
    assert list(submission.predictions) == test_ids[:3] and submission.filled == 2000
    assert submission.predictions[test_ids[0]] == [f"{n:016x}" for n in range(10**6, 10**6 + MAX_RETRIEVED)]


def test_not_utf8_is_a_submission_error(tmp_path):
    path = tmp_path / "sub.csv"
    path.write_bytes(f"id,images\n{IA},".encode() + b"\xff\n")
    with pytest.raises(SubmissionError,
                       match=r"sub\.csv: not a UTF-8 text file \(an undecodable byte on line 1 or later\)"):
        read_submission(path, "retrieval")
