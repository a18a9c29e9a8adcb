"""Subcommands grouped by area, one module each. Every area module defines
`register(commands)`, which adds its top-level subcommands, and may define
`register_benches(benches)`, which adds its `lmkcomp bench` subcommands; it imports its heavy
dependencies only when a command runs."""

from __future__ import annotations

import argparse
import importlib

#: the area modules in workflow order, which is the order of `lmkcomp --help`: data, training,
#: extraction, search / verification / cleaning, submissions, the centroid and DELF methods,
#: calibration and scoring, baselines and the demo, then Kaggle kernels and cluster planning
AREAS = ("data", "train", "extract", "health", "search", "local", "clean", "inference", "centroids", "delf",
         "calibrate", "submission", "demo", "kaggle", "cluster")


def register_all(commands: argparse._SubParsersAction) -> None:
    """Add every area's subcommands in `AREAS` order, then `bench` (last) with every area's benchmarks."""
    modules = [importlib.import_module(f"{__name__}.{area}") for area in AREAS]
    for module in modules:
        module.register(commands)
    bench = commands.add_parser("bench", help="benchmarks: print a table, write JSON")
    benches = bench.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    for module in modules:
        if hasattr(module, "register_benches"):
            module.register_benches(benches)
