"""The one CSV reader of the kit: every CSV it reads (dataset files, submissions, pair lists,
region and metadata tables, caches) goes through `CsvReader`, so all of them follow one set of
rules:

- UTF-8, with or without a byte order mark (Excel writes one);
- fields split as `csv.reader` splits them (quotes, quoted line ends); header names stripped;
- blank lines skipped anywhere, without shifting the line numbers of the rows after them;
- every error names the file and the exact 1-based line of the record at fault (a record that
  spans lines, through a quoted line end, is reported at its last line);
- no error message echoes a raw line of the file: a header that is wrong is described by the
  expected columns and, only when it looks like a header of column names, the names found
  (short and escaped); values are shown through `shown` (truncated and escaped).

Records are streamed: memory is bounded by what the caller keeps, and `max_record_chars` bounds
even one record (a submission reader reads files of hundreds of MB).
"""

from __future__ import annotations

import array
import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence, TextIO

import numpy as np
import pandas as pd

from lmkcomp.errors import CsvFormatError, UserInputError

#: longest value or list of names an error message shows, in characters
SHOWN_CHARS = 80
#: a header cell that reads as a column name: a letter or digit first, then letters, digits and
#: ``_ . - ( ) space``, at most 40 characters. A first line of other text (a password file, a
#: key, a binary file) is not shown back in a message.
_COLUMN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.() -]{0,39}")
#: the longest field `csv` splits, in characters (its default, 128 Ki, is less than a
#: train_clean.csv row of a landmark with 10,000 images: 170,000 characters). The submission
#: reader bounds whole records far below this with `max_record_chars`.
MAX_FIELD_CHARS = 1 << 26

# The kit reads every CSV here, so setting the csv module's one process-wide limit is safe.
csv.field_size_limit(MAX_FIELD_CHARS)


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """`value` quoted for an error message: at most `limit` characters of it, non-printable
    characters escaped (as `repr` escapes them), "..." after a cut. A value that is not a
    string is shown by its `repr`, cut the same way (a list parsed from a whole file, say)."""
    if isinstance(value, str):
        return repr(value[:limit]) + ("..." if len(value) > limit else "")
    text = repr(value)
    return text[:limit] + ("..." if len(text) > limit else "")


def describe_header(names: Sequence[str]) -> str:
    """What an error message says about a header that was found: its column names when every
    cell reads as a column name (joined, cut to `SHOWN_CHARS`), else only that it is not one."""
    if names and all(_COLUMN_NAME.fullmatch(name) for name in names):
        text = ", ".join(names)
        return f"found columns {text[:SHOWN_CHARS]}{'...' if len(text) > SHOWN_CHARS else ''}"
    return "the first line is not a header of column names"


class _BoundedLines:
    """The lines of a text file for `csv.reader`, each read with a bounded buffer.

    `line` counts the lines handed out (as `csv.reader.line_num` does). A record longer than
    `max_chars` characters, line ends included, raises `error` naming the line where it went
    over; at most `max_chars + 1` characters of it are ever held. The consumer calls
    `end_record` after each record that `csv.reader` returns.
    """

    def __init__(self, handle: TextIO, path: Path, max_chars: int, error: type[CsvFormatError]):
        self.handle = handle
        self.path = path
        self.max_chars = max_chars
        self.error = error
        self.line = 0
        self.record_chars = 0

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        room = self.max_chars - self.record_chars
        # readline stops after room + 1 characters: enough to tell an over-long record
        text = self.handle.readline(room + 1)
        if not text:
            raise StopIteration
        self.line += 1
        self.record_chars += len(text)
        if self.record_chars > self.max_chars:
            raise self.error(self.path, self.line, f"row longer than {self.max_chars} characters")
        return text

    def end_record(self) -> None:
        self.record_chars = 0


class CsvReader:
    """A CSV file opened for reading: `header` (stripped names, read on entry) and, iterating,
    each data record as (line, fields), blank lines skipped.

    Use as a context manager: ``with CsvReader(path) as reader: for line, fields in reader:``.
    A missing file, or one that is not a regular file, is a `UserInputError` (nothing is opened
    that could block, such as a FIFO); a file with no header, a byte that is not UTF-8, or a
    record `csv` cannot split is an `error` (a `CsvFormatError`) at its line. With
    `max_record_chars`, a record longer than that (line ends included) is an error too, and no
    more than that is held in memory (see `_BoundedLines`).
    """

    def __init__(self, path: str | Path, *, max_record_chars: int | None = None,
                 error: type[CsvFormatError] = CsvFormatError):
        self.path = Path(path)
        self.max_record_chars = max_record_chars
        self.error = error
        self.header: list[str] = []
        self._handle: TextIO | None = None

    def __enter__(self) -> CsvReader:
        if not self.path.is_file():  # is_file follows links and is False for FIFOs and devices
            raise UserInputError(f"{self.path}: file not found (or not a regular file)")
        # utf-8-sig drops a leading byte order mark and reads a file without one unchanged
        self._handle = self.path.open(newline="", encoding="utf-8-sig")
        if self.max_record_chars is None:
            self._lines = None
            self._reader = csv.reader(self._handle)
        else:
            self._lines = _BoundedLines(self._handle, self.path, self.max_record_chars, self.error)
            self._reader = csv.reader(self._lines)
        try:
            first = next(self._records(), None)
        except BaseException:
            self.__exit__()
            raise
        if first is None:
            self.__exit__()
            raise self.error(self.path, 1, "empty file: expected a header row")
        self.header = [name.strip() for name in first[1]]
        return self

    def __exit__(self, *exc_info) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    @property
    def line(self) -> int:
        """The last line read so far (the line of the record just returned)."""
        return self._reader.line_num

    def _records(self) -> Iterator[tuple[int, list[str]]]:
        reader, lines = self._reader, self._lines
        try:
            for fields in reader:
                if lines is not None:
                    lines.end_record()
                # a blank line is [] to csv.reader; a line of only spaces is one blank field
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    continue
                yield reader.line_num, fields
        except csv.Error as exc:
            raise self.error(self.path, reader.line_num, f"malformed CSV: {exc}") from None
        except UnicodeDecodeError:
            # the text layer decodes ahead in chunks: the bad byte is on this line or a later one
            raise self.error(self.path, None, f"not a UTF-8 text file (an undecodable byte on line "
                                              f"{reader.line_num + 1} or later)") from None

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        return self._records()

    def require_columns(self, required: Sequence[str], *, exact: bool = False) -> list[int]:
        """Positions of the `required` columns in the header. A missing one, a name the header
        holds twice, or, with `exact`, any difference from `required` is an error at the header's
        line that lists the expected columns and describes what was found (`describe_header`)."""
        header = self.header
        missing = [name for name in required if name not in header]
        duplicated = sorted({name for name in header if header.count(name) > 1})
        if missing or duplicated or (exact and header != list(required)):
            problem = (f"missing column(s) {', '.join(missing)}" if missing
                       else f"column(s) {', '.join(duplicated)} appear more than once" if duplicated
                       else "unexpected header")
            raise self.error(self.path, self.line, f"{problem}; expected columns {', '.join(required)} "
                                                   f"({describe_header(header)})")
        return [header.index(name) for name in required]


@dataclass(frozen=True)
class CsvTable:
    """A CSV read whole: `frame` holds every column of the header as strings, one row per data
    record in file order; `lines[i]` is the line of row `i`, for error messages."""

    path: Path
    frame: pd.DataFrame
    lines: np.ndarray

    def line(self, position: int) -> int:
        """The 1-based line of the row at `position` (0-based)."""
        return int(self.lines[position])

    def error(self, position: int, message: str) -> CsvFormatError:
        """A `CsvFormatError` at the line of the row at `position`."""
        return CsvFormatError(self.path, self.line(position), message)


def read_table(path: str | Path, required: Sequence[str]) -> CsvTable:
    """Read a whole CSV as strings after checking its header has the `required` columns.

    Every record must have as many fields as the header: another count is an error at its line.
    Other columns are kept (a caller may read optional ones).
    """
    with CsvReader(path) as reader:
        reader.require_columns(required)
        names = reader.header
        width = len(names)
        columns: list[list[str]] = [[] for _ in names]
        lines = array.array("q")
        for line, fields in reader:
            if len(fields) != width:
                raise CsvFormatError(reader.path, line, f"expected {width} fields ({', '.join(names)}), "
                                                        f"found {len(fields)}")
            for column, value in zip(columns, fields):
                column.append(value)
            lines.append(line)
    frame = pd.DataFrame({name: pd.Series(column, dtype=object) for name, column in zip(names, columns)})
    return CsvTable(Path(path), frame, np.frombuffer(lines, dtype=np.int64) if lines else np.zeros(0, np.int64))
