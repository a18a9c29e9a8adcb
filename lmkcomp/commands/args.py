"""Argument types, parsing and output helpers shared by every `lmkcomp` subcommand."""

from __future__ import annotations

import argparse
import copy
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


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Help that ends each option's text with its default, "(default: VALUE)", a sequence written
    comma-separated as it is typed; nothing for an option without one (None, False, an empty
    list), a required positional, or a text that already places it with %(default)s."""

    @staticmethod
    def shown_default(action: argparse.Action) -> str | None:
        """How the default of `action` is shown, or None when it is not."""
        default = action.default
        if default is None or default is False or default == argparse.SUPPRESS or default == []:  # 0 is shown
            return None
        if not action.option_strings and action.nargs not in ("?", "*"):
            return None
        return ",".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)

    def _format_action(self, action: argparse.Action) -> str:
        shown = self.shown_default(action)
        if not action.help and shown is not None:
            action = copy.copy(action)  # argparse shows no help line for an empty text
            action.help, action.default = "(default: %(default)s)", shown
        return super()._format_action(action)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = self.shown_default(action)
        if shown is None or "%(default)" in text:
            return text
        return f"{text} (default: {shown.replace('%', '%%')})".lstrip()


def all_parsers(parser: argparse.ArgumentParser):
    """`parser` and, depth first, every subcommand parser below it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from all_parsers(child)


def _option(*flags: str, **settings) -> argparse.ArgumentParser:
    """A parent parser holding one option, declared once here for every command that has it."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(*flags, **settings)
    return parent


def verify_preset_options(default: str | None = "fast", when: str = "") -> argparse.ArgumentParser:
    """`--verify-preset`: the spatial-verification preset (`lmkcomp.local.verify.VERIFY_PRESETS`);
    `when` says which part of the command verifies (e.g. "verify: ")."""
    text = f"{when}verification preset: fast, fast-magsac or official-delf"
    if default is None:
        text += " (default: fast for sift and rootsift features, official-delf for DELF's)"
    return _option("--verify-preset", default=default, metavar="PRESET", help=text)


def data_options(help: str = "dataset root", required: bool = True, layout: bool = True) -> argparse.ArgumentParser:
    """`--data` (a dataset root) and, when `layout`, its `--layout` (`layout_options`)."""
    parent = _option("--data", required=required, help=help)
    if layout:
        _add_layout(parent)
    return parent


def layout_options() -> argparse.ArgumentParser:
    """`--layout` alone, for a command whose dataset root is a positional argument."""
    parent = argparse.ArgumentParser(add_help=False)
    _add_layout(parent)
    return parent


def _add_layout(parser: argparse.ArgumentParser) -> None:
    """`--layout`: how the dataset root is laid out (`lmkcomp.data.layout.LAYOUTS`)."""
    from lmkcomp.data.layout import LAYOUTS

    parser.add_argument("--layout", choices=tuple(LAYOUTS), default="gldv2", help="how the dataset root is laid out")


def quiet_options() -> argparse.ArgumentParser:
    """`--quiet`: no progress bars."""
    return _option("--quiet", action="store_true", help="no progress bars")


def set_options(help: str) -> argparse.ArgumentParser:
    """`--set KEY=VALUE`, repeatable, read with `overrides`; `help` says what it overrides."""
    return _option("--set", action="append", default=[], metavar="KEY=VALUE", help=help)


def device_options(help: str = "") -> argparse.ArgumentParser:
    """`--device`: auto (a GPU when this machine has one), cpu, cuda or cuda:N (as
    `lmkcomp.devices`, not imported here: it loads torch); `help` adds what runs there."""
    return _option("--device", default="auto", help="auto, cpu, cuda or cuda:N (auto: a GPU when this machine has "
                                                    "one)" + (f"; {help}" if help else ""))


def workers_options(help: str, default: int = 1) -> argparse.ArgumentParser:
    """`--workers`: the number of processes of a stage; `help` says which. One process unless a
    command has a reason for more (the demo, the main job, uses a 2-core machine's both cores)."""
    return _option("--workers", type=positive_int, default=default, help=help)


def shard_options(default: int, help: str) -> argparse.ArgumentParser:
    """`--shard-size`: how many items one shard (one file, one resumable task) holds; `help` says which."""
    return _option("--shard-size", type=positive_int, default=default, help=help)


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


def photo_source_options(required: bool) -> argparse.ArgumentParser:
    """Where a user's photos are (`lmkcomp.data.folders`): `--from-folders SRC` or `--from-csv
    LIST.csv`, one of them when `required`, and the `--non-landmark-folder`; read with
    `photos_from`."""
    parent = argparse.ArgumentParser(add_help=False)
    source = parent.add_mutually_exclusive_group(required=required)
    source.add_argument("--from-folders", metavar="SRC",
                        help="photos in SRC/<landmark>/<photos>, or SRC/<split>/<landmark>/<photos> (chosen when "
                             "SRC's folders are all named train, index or test), which keeps the given split")
    source.add_argument("--from-csv", metavar="LIST.csv",
                        help="the photos a CSV lists: columns path, landmark and optionally split (empty: none "
                             "given); paths relative to the CSV's folder")
    parent.add_argument("--non-landmark-folder", default="_non_landmark",
                        help="SRC subfolder (or landmark name in a listing) of non-landmark photos")
    return parent


def photos_from(args: argparse.Namespace) -> list:
    """The `SourcePhoto`s that `photo_source_options` point to."""
    from lmkcomp.data import folders

    if args.from_folders:
        return folders.scan_folders(args.from_folders, args.non_landmark_folder)
    return folders.read_listing(args.from_csv, args.non_landmark_folder)


def create_executor_from(args: argparse.Namespace):
    """The executor that `executor_options` and the command's `--workers` describe; a Ray one is
    connected at once, so that a missing Ray or an unreachable cluster is reported before any work."""
    from lmkcomp.executors import connect_ray, create_executor

    executor = create_executor(args.executor, getattr(args, "workers", 1), args.address)
    if args.executor == "ray":
        connect_ray(args.address, getattr(args, "workers", None))
    return executor


def pool_or_executor_from(args: argparse.Namespace):
    """For a stage whose local run has its own parallelism (a data loader, an image pool): None
    for `--executor local`, else the executor (`create_executor_from`, which also refuses an
    `--address` without `--executor ray` in both cases)."""
    executor = create_executor_from(args)
    return None if args.executor == "local" else executor


def refuse_executor_options(args: argparse.Namespace, why: str) -> None:
    """A UserInputError when `--executor` or `--address` is given to a path that runs in this
    process only; `why` begins the message."""
    if args.executor != "local" or args.address:
        raise UserInputError(f"{why}; leave out --executor and --address")


def checkpoint_data(args: argparse.Namespace):
    """The dataset of a command on a checkpoint: `--data` (with `--layout` where the command has
    one), else the dataset the checkpoint was trained on, at its recorded root and layout."""
    from lmkcomp.data.layout import LandmarkData

    if args.data:
        return LandmarkData(args.data, getattr(args, "layout", "gldv2"))
    from lmkcomp.train.checkpoint import load_checkpoint

    trained_on = load_checkpoint(args.checkpoint)["config"]["data"]
    return LandmarkData(trained_on["root"], trained_on.get("layout", "gldv2"))


def print_skipped(store) -> None:
    """Print the count of images a store written with skips could not read, if any."""
    from lmkcomp.manifest import describe_skipped

    line = describe_skipped(store.directory, store.skipped)
    if line is not None:
        print(line)
