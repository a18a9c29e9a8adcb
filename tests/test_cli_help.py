"""The `lmkcomp` command line reads as one tool: commands in workflow order, every default in
`--help`, one flag per concept, and the shared options declared alike everywhere."""

from __future__ import annotations

import argparse
import pkgutil

import pytest

from lmkcomp import commands
from lmkcomp.cli import build_parser
from lmkcomp.commands.args import DefaultsHelpFormatter, all_parsers, positive_int

#: `lmkcomp --help`'s commands, in workflow order
WORKFLOW = ("make-dataset", "train", "extract", "ensemble", "inspect-embeddings", "search", "extract-local", "verify",
            "clean", "recognize", "retrieve", "evaluate", "centroids", "delf", "calibrate", "score", "validate",
            "baseline", "demo", "kaggle", "plan", "bench")
#: flags that name an embedding store (a path, never a count or a spec)
STORE_FLAGS = ("--queries", "--train", "--index")
#: flags renamed for one name per concept: the query store is --queries, the train store --train,
#: a searcher or feature-index spec --index-spec
RETIRED_FLAGS = ("--test", "--embeddings", "--delf-index")


def _options(parser: argparse.ArgumentParser):
    """Every (parser, action) with option strings, over all the subcommands."""
    for each in all_parsers(parser):
        for action in each._actions:
            if action.option_strings:
                yield each, action


def _subcommands(parser: argparse.ArgumentParser) -> list[str]:
    return [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)][0].choices


def test_commands_are_listed_in_workflow_order():
    parser = build_parser()
    assert tuple(_subcommands(parser)) == WORKFLOW
    help_text = parser.format_help()
    positions = [help_text.index(f"\n    {name} ") if f"\n    {name} " in help_text else help_text.index(f"\n    {name}\n")
                 for name in WORKFLOW]
    assert positions == sorted(positions)
    delf = next(each for each in all_parsers(parser) if each.prog.endswith(" delf"))
    assert tuple(_subcommands(delf)) == ("train", "pca", "recognize")


def test_every_area_module_is_registered():
    modules = {info.name for info in pkgutil.iter_modules(commands.__path__)} - {"args"}
    assert modules == set(commands.AREAS)


def _help_of(text: str, flag: str) -> str:
    """The lines of `flag` in a help text: its own, up to the next option's."""
    lines = text.splitlines()
    start = next(row for row, line in enumerate(lines) if line.lstrip().startswith(flag))
    end = next((row for row in range(start + 1, len(lines)) if not lines[row].startswith("   ")), len(lines))
    return " ".join(lines[start:end])


def test_every_help_shows_its_defaults(monkeypatch):
    monkeypatch.setenv("COLUMNS", "2000")  # one line per option: no wrapped value to rejoin
    parser = build_parser()
    checked = 0
    for each in all_parsers(parser):
        text = each.format_help()
        assert "(default: None)" not in text and "(default: False)" not in text, each.prog
        for action in each._actions:
            shown = DefaultsHelpFormatter.shown_default(action)
            if shown is None or not action.option_strings:
                continue
            assert f"default: {shown}" in _help_of(text, action.option_strings[0]), (each.prog, action.option_strings)
            checked += 1
    assert checked > 150  # every command's options, not a handful
    seed = next(each for each in all_parsers(parser) if each.prog == "lmkcomp bench search").format_help()
    assert "default: 0" in _help_of(seed, "--seed")  # a zero default is shown, not taken for "none"


def test_one_flag_per_concept():
    parser = build_parser()
    seen = set()
    for each, action in _options(parser):
        for flag in action.option_strings:
            seen.add(flag)
            assert flag not in RETIRED_FLAGS, (each.prog, flag)
            if flag in STORE_FLAGS:  # a store path: no count type, no spec default
                assert action.type is None and action.default is None, (each.prog, flag)
            if flag.startswith("--num-"):
                assert action.type is positive_int, (each.prog, flag)
            if flag == "--index-spec":
                assert action.default is not None, (each.prog, flag)
    assert {"--queries", "--train", "--index", "--index-spec", "--num-queries"} <= seen


@pytest.mark.parametrize(("flag", "check"), [
    # one process by default; the demo, the main job, uses both of a 2-core machine's cores
    ("--workers", lambda prog, action: action.type is positive_int
     and action.default == (2 if prog == "lmkcomp demo" else 1)),
    ("--device", lambda prog, action: action.default == "auto"),
    ("--layout", lambda prog, action: action.default == "gldv2" and "kaggle" in action.choices),
    ("--quiet", lambda prog, action: isinstance(action, argparse._StoreTrueAction)),
    ("--set", lambda prog, action: isinstance(action, argparse._AppendAction) and action.metavar == "KEY=VALUE"),
    ("--shard-size", lambda prog, action: action.type is positive_int),
    # a dataset size, never a verification preset (that one is --verify-preset)
    ("--preset", lambda prog, action: action.choices is not None and "tiny" in action.choices),
    ("--verify-preset", lambda prog, action: action.metavar == "PRESET" and action.default in ("fast", None)),
])
def test_shared_options_are_declared_alike(flag, check):
    actions = [(each.prog, action) for each, action in _options(build_parser()) if flag in action.option_strings]
    assert len(actions) >= 3
    assert all(check(prog, action) for prog, action in actions), \
        [prog for prog, action in actions if not check(prog, action)]
