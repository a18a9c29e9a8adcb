"""`lmkcomp score` and `lmkcomp validate` (a submission scored as the official evaluation does, or
checked as Kaggle would), and `lmkcomp bench submission` (their time and peak memory on a large
synthetic retrieval submission)."""

from __future__ import annotations

import argparse
import json

from lmkcomp.commands.args import layout_options, positive_float, positive_int


def _cmd_score(args: argparse.Namespace) -> int:
    from lmkcomp.data import gldv2
    from lmkcomp.submission import read_submission, score_submission

    reader = gldv2.read_recognition_solution if args.task == "recognition" else gldv2.read_retrieval_solution
    solution = reader(args.solution)
    # streamed: an unknown id fails at its row, and only the scored rows' predictions are kept
    submission = read_submission(args.submission, args.task, solution.scored(args.split),
                                 known=(solution.answers, "in the solution"))
    result = score_submission(submission, solution, args.split)
    print(json.dumps(result, sort_keys=False))
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from lmkcomp.data import gldv2
    from lmkcomp.data.layout import LandmarkData
    from lmkcomp.submission import validate_submission

    if args.test_ids:
        test_ids = gldv2.read_sample_submission(args.test_ids)
    else:
        test_ids = LandmarkData(args.data, args.layout).split_ids("test")
    submission = validate_submission(args.submission, args.task, test_ids, keep=())  # checks, keeps no prediction
    print(f"{args.submission}: valid {args.task} submission, {len(test_ids)} test ids, {submission.filled} with predictions")
    return 0


def _cmd_bench_submission(args: argparse.Namespace) -> int:
    from lmkcomp.bench.submission import run_submission_benchmark

    print(run_submission_benchmark(args.size_mb, args.seed, args.out, args.workdir, args.repeats))
    print(f"wrote {args.out}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    score = commands.add_parser("score", help="score a submission as the official evaluation does; prints JSON")
    score.add_argument("--task", choices=("recognition", "retrieval"), required=True)
    score.add_argument("--solution", required=True, help="recognition_solution_v2.1.csv or retrieval_solution_v2.1.csv")
    score.add_argument("--submission", required=True)
    score.add_argument("--split", choices=("public", "private", "all"), default="all", help="rows scored (all = every non-Ignored row)")
    score.set_defaults(run=_cmd_score)

    validate = commands.add_parser("validate", parents=[layout_options()], help="check a submission file as Kaggle would")
    validate.add_argument("--task", choices=("recognition", "retrieval"), required=True)
    validate.add_argument("--submission", required=True)
    source = validate.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="dataset root whose test split defines the expected ids")
    source.add_argument("--test-ids", help="a sample_submission.csv listing the expected ids")
    validate.set_defaults(run=_cmd_validate)


def register_benches(benches: argparse._SubParsersAction) -> None:
    bench = benches.add_parser("submission", help="wall time and peak memory of validate and score on a large "
                               "synthetic retrieval submission, each in a fresh process")
    bench.add_argument("--size-mb", type=positive_float, default=200.0,
                       help="submission size in MB (rows of 100 index ids, 1,717 bytes each)")
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--repeats", type=positive_int, default=3, help="runs of each command; the fastest is reported")
    bench.add_argument("--workdir", help="write (and keep) the synthetic files here (default: a temporary folder)")
    bench.add_argument("--out", default="bench/submission.json", help="JSON output")
    bench.set_defaults(run=_cmd_bench_submission, output_folder="workdir")
