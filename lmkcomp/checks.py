"""Checks of the values a caller passes in (settings, options, counts), shared by every layer.

Each returns the value in its canonical type, or raises a `UserInputError` that names it, so
that a bad value stops a run with one clear line before any work starts. (The argparse types
that turn command-line text into values are `lmkcomp.commands.args`'s.)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lmkcomp.errors import UserInputError


def positive_int(name: str, value: Any) -> int:
    """`value` as an int, or a UserInputError naming `name` unless it is an integer >= 1
    (a bool is not one)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise UserInputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def positive_number(name: str, value: Any) -> float:
    """`value` as a float, or a UserInputError naming `name` unless it is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not (math.isfinite(value) and value > 0):
        raise UserInputError(f"{name} must be a positive number, got {value!r}")
    return float(value)
