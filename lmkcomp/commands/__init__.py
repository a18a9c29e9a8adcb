"""Subcommands grouped by area, one module each. Every module of this package that defines
`register(commands, benches)` adds its parsers to the top-level subcommands and to the
`lmkcomp bench` subcommands; it imports its heavy dependencies only when a command runs."""

from __future__ import annotations

import argparse
import importlib
import pkgutil


def register_all(commands: argparse._SubParsersAction, benches: argparse._SubParsersAction) -> None:
    """Let every area module (in name order, so `--help` is stable) add its subcommands."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "register"):
            module.register(commands, benches)
