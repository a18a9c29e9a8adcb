"""Argument types, parsing and output helpers shared by every `lmkcomp` subcommand."""

from __future__ import annotations

import argparse
import math
from typing import Callable, Sequence

from lmkcomp.errors import UserInputError


def overrides(pairs: Sequence[str]) -> dict:
    """`--set KEY=VALUE` pairs as a dict; each value is parsed as YAML (numbers, booleans, lists)."""
    import yaml

    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserInputError(f"--set {pair!r}: expected KEY=VALUE (e.g. model.head=cosface)")
        result[key] = yaml.safe_load(value)
    return result


def scales(text: str) -> tuple[float, ...]:
    """Comma-separated positive numbers, e.g. `0.7071,1,1.4142`."""
    try:
        values = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated numbers, e.g. 0.7071,1,1.4142") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: scales must be positive")
    return values


def fraction(text: str) -> float:
    """A number in [0, 1)."""
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction in [0, 1)")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def positive_float(text: str) -> float:
    """A number > 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argument type: an integer >= `minimum`."""
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text} is below {minimum}")
        return value

    return parse


def positive_ints(text: str) -> tuple[int, ...]:
    """Comma-separated integers >= 1, e.g. `5,20` or `10000,100000`."""
    try:
        return tuple(positive_int(part) for part in text.split(","))
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated positive integers, e.g. 5,20") from None


def specificity(text: str) -> float:
    """A target specificity: a number in (0, 1]."""
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a specificity in (0, 1]")
    return value


def json_safe(value):
    """`value` (nested dicts and lists) with every non-finite float, e.g. a rate whose
    denominator is zero, replaced by None, so that `json.dumps(..., allow_nan=False)` holds."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def executor_options() -> argparse.ArgumentParser:
    """The parent parser of every stage that runs in shards: where they run (`--executor`,
    `--address`). `--workers`, declared by each such command, is the number of processes here
    (`local`) or the CPUs of a Ray instance started here (`ray` without an address)."""
    from lmkcomp.executors import ADDRESS_VARIABLE, EXECUTORS

    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("execution")
    group.add_argument("--executor", choices=EXECUTORS, default="local",
                       help="local: --workers processes on this machine; ray: tasks on a Ray cluster "
                            "(README: Running on a cluster)")
    group.add_argument("--address", default=None, metavar="auto|HOST:PORT",
                       help=f"the Ray cluster for --executor ray (default: ${ADDRESS_VARIABLE}, else a Ray "
                            "instance started here with --workers CPUs)")
    return parent


def create_executor_from(args: argparse.Namespace):
    """The executor that `executor_options` and the command's `--workers` describe; a Ray one is
    connected at once, so that a missing Ray or an unreachable cluster is reported before any work."""
    from lmkcomp.executors import connect_ray, create_executor

    executor = create_executor(args.executor, getattr(args, "workers", 1), args.address)
    if args.executor == "ray":
        connect_ray(args.address, getattr(args, "workers", None))
    return executor


def print_skipped(store) -> None:
    """Print the count of images a store written with skips could not read, if any."""
    from lmkcomp.manifest import describe_skipped

    line = describe_skipped(store.directory, store.skipped)
    if line is not None:
        print(line)
