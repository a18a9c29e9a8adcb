"""GLDv2 CSV readers and writers: round trips and every rejection, with the line named."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmkcomp.data import gldv2
from lmkcomp.data.layout import LandmarkData
from lmkcomp.errors import CsvFormatError, UserInputError

A, B, C, D = "0123456789abcdef", "fedcba9876543210", "00000000000000aa", "ffffffffffffff00"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_image_relpath_follows_abc_layout():
    assert gldv2.image_relpath("train", A) == Path("train/0/1/2/0123456789abcdef.jpg")


@pytest.mark.parametrize("bad", ["../../etc/passwd", "0123456789ABCDEF", "0123", "0123456789abcdeg"])
def test_image_relpath_rejects_ids_that_are_not_hex16(bad):
    with pytest.raises(UserInputError, match="invalid image id"):
        gldv2.image_relpath("train", bad)


def test_train_csv_round_trip(tmp_path):
    path = tmp_path / "train.csv"
    gldv2.write_train_csv(path, [A, B], [7, 203093], ["u1", "u2"])
    assert path.read_text() == "id,url,landmark_id\n" f"{A},u1,7\n" f"{B},u2,203093\n"
    frame = gldv2.read_train_csv(path)
    assert frame["id"].tolist() == [A, B]
    assert frame["landmark_id"].tolist() == [7, 203093]


def test_train_csv_without_url_column_is_accepted(tmp_path):
    # the 2020 / 2021 Kaggle train.csv has only id,landmark_id
    frame = gldv2.read_train_csv(write(tmp_path / "train.csv", f"id,landmark_id\n{A},3\n"))
    assert frame["landmark_id"].tolist() == [3]


def test_train_csv_missing_column(tmp_path):
    path = write(tmp_path / "train.csv", f"id,url\n{A},x\n")
    with pytest.raises(CsvFormatError, match=r"train\.csv:1: missing column\(s\) landmark_id"):
        gldv2.read_train_csv(path)


def test_train_csv_duplicate_id_names_its_line(tmp_path):
    path = write(tmp_path / "train.csv", f"id,url,landmark_id\n{A},u,1\n{B},u,2\n{A},u,3\n")
    with pytest.raises(CsvFormatError, match=rf"train\.csv:4: duplicate id {A}"):
        gldv2.read_train_csv(path)


@pytest.mark.parametrize("value", ["abc", "1.5", "-3", ""])
def test_train_csv_non_integer_landmark_names_its_line(tmp_path, value):
    path = write(tmp_path / "train.csv", f"id,url,landmark_id\n{A},u,1\n{B},u,{value}\n")
    with pytest.raises(CsvFormatError, match=r"train\.csv:3: landmark_id .* is not a non-negative integer"):
        gldv2.read_train_csv(path)


def test_train_csv_bad_id_names_its_line(tmp_path):
    path = write(tmp_path / "train.csv", f"id,url,landmark_id\n{A},u,1\nnot-an-id,u,2\n")
    with pytest.raises(CsvFormatError, match=r"train\.csv:3: invalid image id 'not-an-id'"):
        gldv2.read_train_csv(path)


def test_empty_and_missing_files(tmp_path):
    with pytest.raises(CsvFormatError, match="empty file"):
        gldv2.read_train_csv(write(tmp_path / "train.csv", ""))
    with pytest.raises(UserInputError, match="file not found"):
        gldv2.read_train_csv(tmp_path / "nope.csv")


def test_train_clean_round_trip_and_explode(tmp_path):
    path = tmp_path / "train_clean.csv"
    gldv2.write_train_clean_csv(path, {9: [C, D], 2: [A]})
    assert path.read_text() == f"landmark_id,images\n2,{A}\n9,{C} {D}\n"
    frame = gldv2.read_train_clean_csv(path)
    assert list(zip(frame["id"], frame["landmark_id"])) == [(A, 2), (C, 9), (D, 9)]


def test_train_clean_image_listed_twice_names_the_second_line(tmp_path):
    path = write(tmp_path / "train_clean.csv", f"landmark_id,images\n1,{A} {B}\n2,{C} {A}\n")
    with pytest.raises(CsvFormatError, match=rf"train_clean\.csv:3: image {A} is listed more than once"):
        gldv2.read_train_clean_csv(path)


def test_train_clean_duplicate_landmark(tmp_path):
    path = write(tmp_path / "train_clean.csv", f"landmark_id,images\n1,{A}\n1,{B}\n")
    with pytest.raises(CsvFormatError, match=r"train_clean\.csv:3: duplicate landmark_id 1"):
        gldv2.read_train_clean_csv(path)


def test_recognition_solution_round_trip_and_splits(tmp_path):
    solution = gldv2.Solution(
        "recognition", {A: [1], B: [], C: [2, 3], D: [4]}, {A: "Public", B: "Private", C: "Private", D: "Ignored"}
    )
    path = tmp_path / "recognition_solution_v2.1.csv"
    gldv2.write_solution_csv(path, solution)
    assert path.read_text().splitlines()[2] == f"{B},,Private"
    loaded = gldv2.read_recognition_solution(path)
    assert loaded.answers == solution.answers
    assert loaded.scored("public") == {A: [1]}
    assert loaded.scored("private") == {B: [], C: [2, 3]}
    assert loaded.scored("all") == {A: [1], B: [], C: [2, 3]}
    with pytest.raises(UserInputError, match="unknown split"):
        loaded.scored("leaderboard")


def test_retrieval_solution_none_for_ignored(tmp_path):
    solution = gldv2.Solution("retrieval", {A: [C, D], B: []}, {A: "Public", B: "Ignored"})
    path = tmp_path / "retrieval_solution_v2.1.csv"
    gldv2.write_solution_csv(path, solution)
    assert path.read_text() == f"id,images,Usage\n{A},{C} {D},Public\n{B},None,Ignored\n"
    assert gldv2.read_retrieval_solution(path).answers == {A: [C, D], B: []}


def test_solution_bad_usage_and_bad_landmarks(tmp_path):
    path = write(tmp_path / "s.csv", f"id,landmarks,Usage\n{A},1,Public\n{B},2,Secret\n")
    with pytest.raises(CsvFormatError, match=r"s\.csv:3: Usage 'Secret'"):
        gldv2.read_recognition_solution(path)
    path = write(tmp_path / "s.csv", f"id,landmarks,Usage\n{A},1 x,Public\n")
    with pytest.raises(CsvFormatError, match=r"s\.csv:2: landmarks '1 x' are not integers"):
        gldv2.read_recognition_solution(path)
    path = write(tmp_path / "r.csv", f"id,images,Usage\n{A},None,Public\n")
    with pytest.raises(CsvFormatError, match=r"r\.csv:2: Public query .* has no relevant images"):
        gldv2.read_retrieval_solution(path)


def test_layout_reads_ids_from_files_and_csvs(tmp_path):
    for split, image_id in (("test", B), ("test", A), ("index", C)):
        path = tmp_path / gldv2.image_relpath(split, image_id)
        path.parent.mkdir(parents=True)
        path.write_bytes(b"")
    write(tmp_path / "train.csv", f"id,landmark_id\n{D},5\n")
    data = LandmarkData(tmp_path, "kaggle")
    assert data.split_ids("test") == [A, B]  # sorted
    assert data.split_ids("index") == [C]
    assert data.split_ids("train") == [D]
    with pytest.raises(UserInputError, match="no recognition_solution file"):
        data.file("recognition_solution")
    with pytest.raises(UserInputError, match="unknown layout 'kaggel'"):
        LandmarkData(tmp_path, "kaggel")


def test_scan_rejects_a_misplaced_file(tmp_path):
    wrong = tmp_path / "test" / "a" / "b" / "c" / f"{A}.jpg"  # A starts with 0/1/2, not a/b/c
    wrong.parent.mkdir(parents=True)
    wrong.write_bytes(b"")
    with pytest.raises(UserInputError, match="not a GLDv2 id in the test/a/b/c/ layout"):
        gldv2.scan_split_ids(tmp_path, "test")
