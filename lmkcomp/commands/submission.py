"""`lmkcomp bench submission`: time and peak memory of `lmkcomp validate` and `lmkcomp score` on a
large synthetic retrieval submission (the commands themselves live in `lmkcomp.cli`)."""

from __future__ import annotations

import argparse

from lmkcomp.commands.args import positive_float, positive_int


def _cmd_bench_submission(args: argparse.Namespace) -> int:
    from lmkcomp.bench.submission import run_submission_benchmark

    print(run_submission_benchmark(args.size_mb, args.seed, args.out, args.workdir, args.repeats))
    print(f"wrote {args.out}")
    return 0


def register(commands: argparse._SubParsersAction, benches: argparse._SubParsersAction) -> None:
    bench = benches.add_parser("submission", help="wall time and peak memory of validate and score on a large "
                               "synthetic retrieval submission, each in a fresh process")
    bench.add_argument("--size-mb", type=positive_float, default=200.0,
                       help="submission size in MB (rows of 100 index ids, 1,717 bytes each)")
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--repeats", type=positive_int, default=3, help="runs of each command; the fastest is reported")
    bench.add_argument("--workdir", help="write (and keep) the synthetic files here (default: a temporary folder)")
    bench.add_argument("--out", default="bench/submission.json", help="JSON output")
    bench.set_defaults(run=_cmd_bench_submission, output_folder="workdir")
