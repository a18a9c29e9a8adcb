"""`lmkcomp baseline` (trivial but valid submissions for both tasks) and `lmkcomp demo` (the kit
end to end on synthetic data or on your photos, with a score table)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lmkcomp.commands.args import layout_options, quiet_options, workers_options
from lmkcomp.errors import UserInputError


def _cmd_baseline(args: argparse.Namespace) -> int:
    from lmkcomp.baseline import run_baseline
    from lmkcomp.data.layout import LandmarkData
    from lmkcomp.submission import write_recognition_submission, write_retrieval_submission

    data = LandmarkData(args.data, args.layout)
    result = run_baseline(data, args.method, progress=not args.quiet)
    out = Path(args.out)
    recognition_csv = out / f"recognition_baseline-{args.method}.csv"
    retrieval_csv = out / f"retrieval_baseline-{args.method}.csv"
    write_recognition_submission(recognition_csv, result.test_ids, result.recognition)
    write_retrieval_submission(retrieval_csv, result.test_ids, result.retrieval)
    print(f"wrote {recognition_csv} and {retrieval_csv}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from lmkcomp.demo import run_demo

    if args.from_folders:
        from lmkcomp.demo.photos import run_photo_demo

        given = [flag for flag, value in (("--train-config", args.train_config), ("--pretrained", args.pretrained),
                                          ("--no-train", args.no_train)) if value]
        if given:
            raise UserInputError(f"{', '.join(given)}: not with --from-folders, whose demo trains nothing")
        run_photo_demo(args.from_folders, args.seed, args.workdir, args.submissions, workers=args.workers,
                       progress=not args.quiet, force=args.force, report=not args.no_report)
        return 0
    run_demo(args.preset, args.seed, args.workdir, args.submissions, workers=args.workers,
             train_config="" if args.no_train else args.train_config, progress=not args.quiet, force=args.force,
             report=not args.no_report, pretrained=args.pretrained)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    baseline = commands.add_parser("baseline", parents=[
        layout_options(),
        quiet_options()], help="write trivial but valid submissions for both tasks")
    baseline.add_argument("data", help="dataset root")
    baseline.add_argument("--method", choices=("thumbnail", "constant"), default="thumbnail")
    baseline.add_argument("--out", default="submissions")
    baseline.set_defaults(run=_cmd_baseline)

    demo = commands.add_parser("demo", parents=[
        workers_options("processes of the rendering, extraction, local-feature, cleaning and verification stages "
                        "(2: the demo's 10 minutes are timed on 2 cores)", default=2),
        quiet_options()], help="the kit end to end on the synthetic dataset (or your photos: --from-folders), with a score table and an HTML report")
    demo.add_argument("--preset", choices=("tiny", "small", "medium"), default="small")
    demo.add_argument("--from-folders", metavar="SRC",
                      help="your photos instead of the synthetic data: SRC/<landmark>/<photos> or SRC/<split>/"
                           "<landmark>/<photos>, imported keeping the split; runs the weight-free path (thumbnail "
                           "kNN, RootSIFT verified voting, verified retrieval) with the same report, no training")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--workdir", default="runs/demo", help="dataset and artifacts (reused when present)")
    demo.add_argument("--submissions", default="submissions")
    demo.add_argument("--train-config", help="descriptor config trained in the demo (default: cpu-tiny for the tiny "
                      "preset, else cpu-small)")
    demo.add_argument("--no-train", action="store_true", help="skip training (dataset and baselines only)")
    demo.add_argument("--pretrained", metavar="CHECKPOINT", help="fine-tune the descriptor from this training run's "
                      "checkpoint (e.g. runs/v1/pretrain/checkpoint-last.pt of lmkcomp train cpu-v1) instead of "
                      "training from scratch; its stages get their own run folder")
    demo.add_argument("--force", action="store_true", help="rerun every stage after the dataset instead of reusing them")
    demo.add_argument("--no-report", action="store_true", help="skip the HTML report (SUBMISSIONS/report/index.html)")
    demo.set_defaults(run=_cmd_demo)
