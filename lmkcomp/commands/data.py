"""`lmkcomp make-dataset`: a synthetic mini-GLDv2, or photo folders imported, in the GLDv2 layout."""

from __future__ import annotations

import argparse

from lmkcomp.commands.args import (
    create_executor_from,
    executor_options,
    fraction,
    photo_source_options,
    positive_int,
    quiet_options,
    refuse_executor_options,
    workers_options,
)


def _cmd_make_dataset(args: argparse.Namespace) -> int:
    from lmkcomp.data import folders, synthetic

    if args.from_folders or args.from_csv:
        refuse_executor_options(args, f"{'--from-folders' if args.from_folders else '--from-csv'}: an import runs "
                                      "in this process")
        options = dict(seed=args.seed, test_fraction=args.test_fraction, index_fraction=args.index_fraction,
                       max_side=args.long_side or folders.DEFAULT_MAX_SIDE, jpeg_quality=args.jpeg_quality,
                       skip_bad=args.skip_bad, force=args.force, progress=not args.quiet)
        if args.from_folders:
            report = folders.import_folders(args.from_folders, args.out, args.non_landmark_folder, **options)
        else:
            report = folders.import_listing(args.from_csv, args.out, args.non_landmark_folder, **options)
        print(f"{args.out}: {folders.describe(report)}")
        return 0
    changes = {}
    if args.long_side is not None:
        changes["long_side"] = args.long_side
    if args.noise_fraction is not None:
        changes["noise_fraction"] = args.noise_fraction
    if args.train_distractor_ratio is not None:
        changes["train_distractor_ratio"] = args.train_distractor_ratio
    config = synthetic.preset_config(args.preset, **changes)
    manifest = synthetic.generate(args.out, config, seed=args.seed, progress=not args.quiet,
                                  executor=create_executor_from(args))
    print(f"{args.out}: {synthetic.describe(manifest)}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    make = commands.add_parser("make-dataset", parents=[
        executor_options(),
        photo_source_options(required=False),
        workers_options("rendering processes (--executor local), or the CPUs of a Ray instance started here "
            "(--executor ray without --address); an import (--from-folders, --from-csv) runs in "
            "this process"),
        quiet_options()], help="write a synthetic mini-GLDv2, or import photo folders, in the GLDv2 layout")
    make.add_argument("out", help="output folder (created; a synthetic dataset resumes; an import needs an empty folder, or --force to replace an earlier import)")
    make.add_argument("--preset", choices=("tiny", "small", "medium", "v1"), default="small",
                      help="synthetic size; v1 is the train-only pretraining corpus (landmarks no other preset has)")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--long-side", "--max-side", type=positive_int,
                      help="image long side in pixels (synthetic default 256; import: photos larger than this are "
                           "downscaled to it, default 2048)")
    make.add_argument("--noise-fraction", type=fraction, help="fraction of train images with a wrong label (default 0.2)")
    make.add_argument("--train-distractor-ratio", type=float, metavar="RATIO",
                      help="non-landmark train images (train_nonlandmark.csv) per landmark train image (default 0.1)")
    make.add_argument("--test-fraction", type=fraction, default=0.1,
                      help="import: share of a landmark's photos split off as test when it has none given (0: none)")
    make.add_argument("--index-fraction", type=fraction, default=0.2,
                      help="import: share of a landmark's photos split off as index when it has none given (0: none, "
                           "which keeps a given train split whole)")
    make.add_argument("--jpeg-quality", type=positive_int, default=95,
                      help="import: JPEG quality of photos that are re-encoded (PNGs, rotated or downscaled photos; "
                           "the layout stores {id}.jpg); upright JPEGs within the long side are copied as they are")
    make.add_argument("--force", action="store_true", help="import: replace an earlier import in OUT")
    make.add_argument("--skip-bad", action="store_true", help="skip unreadable photos (listed in skipped.csv) instead of failing")
    make.set_defaults(run=_cmd_make_dataset, output_folder="out")
