"""The one CSV reader: every CSV the kit reads follows the same rules (a byte order mark
accepted, blank lines skipped, exact line numbers), and no error message echoes a raw line."""

from __future__ import annotations

import os
from typing import Callable

import pytest

from lmkcomp.centroid.metadata import read_landmark_metadata
from lmkcomp.csvfile import CsvReader, describe_header, read_table, shown
from lmkcomp.data import gldv2
from lmkcomp.errors import CsvFormatError, UserInputError
from lmkcomp.local.pairs import read_pairs
from lmkcomp.submission import read_submission
from lmkcomp.train.curriculum import read_regions

A, B = "0123456789abcdef", "fedcba9876543210"
#: a first line that must never appear in a message (what a key or password file may hold)
SECRET = "API_TOKEN=sk-live-51f0c0ffee"

#: reader, header, a good row, a bad row and the start of the message the bad row gets
READERS: dict[str, tuple[Callable, str, str, str, str]] = {
    "train.csv": (gldv2.read_train_csv, "id,url,landmark_id", f"{A},http://x,3", "zz,http://y,4", "invalid image id"),
    "train_clean.csv": (gldv2.read_train_clean_csv, "landmark_id,images", f"3,{A}", "4,", "landmark 4 lists no images"),
    "submission": (lambda path: read_submission(path, "retrieval"), "id,images", f"{A},{B}", f"{B},nope",
                   "image id 'nope'"),
    "regions": (read_regions, "landmark_id,region", "3,Europe", "x4,Asia", "landmark_id 'x4'"),
    "metadata": (read_landmark_metadata, "landmark_id,city,latitude,longitude", "3,Paris,48.8,2.3",
                 "4,Rome,north,12.5", "latitude 'north'"),
    "pairs": (read_pairs, "query_id,candidate_id", f"{A},{B}", f"{A},nope", "invalid candidate_id 'nope'"),
}


@pytest.mark.parametrize("name", READERS)
def test_every_reader_accepts_a_bom_skips_blank_lines_and_names_the_exact_line(tmp_path, name):
    reader, header, good, bad, message = READERS[name]
    path = tmp_path / "file.csv"
    # a byte order mark, a blank line, a CRLF blank line and a line of spaces before the bad row
    path.write_bytes(("\ufeff" + f"{header}\n{good}\n\n\r\n   \n{bad}\n").encode("utf-8"))
    with pytest.raises(CsvFormatError) as excinfo:
        reader(path)
    assert str(excinfo.value).startswith(f"{path}:6: {message}")
    # without the bad row the same file reads
    path.write_bytes(("\ufeff" + f"{header}\n\n{good}\n\n").encode("utf-8"))
    reader(path)


@pytest.mark.parametrize("name", READERS)
def test_no_reader_echoes_a_first_line_that_is_not_a_header(tmp_path, name):
    reader = READERS[name][0]
    path = tmp_path / "secret"
    path.write_text(f"{SECRET}\nroot:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(CsvFormatError) as excinfo:
        reader(path)
    message = str(excinfo.value)
    assert message.startswith(f"{path}:1: missing column(s)")
    assert "; expected columns " in message and message.endswith("(the first line is not a header of column names)")
    assert "the first line is not a header of column names" in message
    assert "sk-live" not in message and "root:x" not in message and "\n" not in message


def test_a_header_of_column_names_is_described_by_its_names(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text(f"image,label\n{A},3\n")
    with pytest.raises(CsvFormatError, match=r"train\.csv:1: missing column\(s\) id, landmark_id; "
                                             r"expected columns id, landmark_id \(found columns image, label\)$"):
        gldv2.read_train_csv(path)


def test_a_row_with_another_number_of_fields_is_an_error_at_its_line(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text(f"id,landmark_id\n{A},3\n\n{B}\n")
    with pytest.raises(CsvFormatError, match=r"train\.csv:4: expected 2 fields \(id, landmark_id\), found 1$"):
        gldv2.read_train_csv(path)


def test_a_quoted_record_over_several_lines_is_named_at_its_last_line(tmp_path):
    path = tmp_path / "train_clean.csv"
    path.write_text(f'landmark_id,images\n3,"{A}\n{B}"\n4,"{A}\n"\n')
    with pytest.raises(CsvFormatError, match=rf"train_clean\.csv:5: image {A} is listed more than once"):
        gldv2.read_train_clean_csv(path)


def test_an_undecodable_byte_is_one_line_naming_where(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes(b"id,landmark_id\n" + b"\xff\xfe" * 10 + b"\n")
    with pytest.raises(CsvFormatError, match=r"train\.csv: not a UTF-8 text file \(an undecodable byte on line 1 "):
        read_table(path, ["id"])


def test_a_fifo_is_refused_without_opening_it(tmp_path):
    fifo = tmp_path / "train.csv"
    os.mkfifo(fifo)
    with pytest.raises(UserInputError, match=r"train\.csv: file not found \(or not a regular file\)"):
        with CsvReader(fifo):
            pass


def test_shown_values_are_short_and_escaped():
    assert shown("a\x1b[2Jb") == repr("a\x1b[2Jb")
    assert shown("x" * 500) == repr("x" * 80) + "..."
    assert describe_header(["id", "images"]) == "found columns id, images"
    assert describe_header([SECRET]) == "the first line is not a header of column names"
    assert describe_header(["x" * 41]) == "the first line is not a header of column names"


def test_a_field_longer_than_the_csv_modules_default_limit_reads(tmp_path):
    # a train_clean.csv row of a landmark with 10,000 images is 170,000 characters (csv's
    # default field limit is 131,072; pandas, which read these files before, has none)
    ids = [f"{n:016x}" for n in range(10_000)]
    path = tmp_path / "train_clean.csv"
    path.write_text("landmark_id,images\n7," + " ".join(ids) + "\n")
    assert gldv2.read_train_clean_csv(path)["id"].tolist() == ids
