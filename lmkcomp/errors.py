"""Errors caused by a user's input (files, CSVs, configs, arguments).

The CLI turns every `UserInputError` into a one-line message and exit code 2, with no
traceback: the message alone must tell the user which file, line or key is wrong.
"""

from __future__ import annotations

from pathlib import Path


class UserInputError(Exception):
    """Bad input from the user: the message names the file, line or key at fault."""


class CsvFormatError(UserInputError):
    """A CSV file that does not follow its expected format."""

    def __init__(self, path: str | Path, line: int | None, message: str):
        self.path = str(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class ImageLoadError(UserInputError):
    """An image that is missing, truncated, or not an image at all."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: cannot load image: {reason}")
