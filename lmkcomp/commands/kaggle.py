"""`lmkcomp kaggle package|estimate|stage`: the offline wheels bundle a Kaggle kernel installs
from, a projection of a kernel's run time against the competition's limit, and a local stand-in
for a competition folder to rehearse the notebooks of ``kaggle_notebooks/`` on."""

from __future__ import annotations

import argparse

from lmkcomp.commands.args import layout_options, positive_int, verify_preset_options
from lmkcomp.errors import UserInputError

#: exit status of `lmkcomp kaggle estimate` when the projection exceeds the limit
EXIT_OVER_LIMIT = 1


def _cmd_package(args: argparse.Namespace) -> int:
    from lmkcomp.kaggle.package import (
        KAGGLE_MISSING,
        KAGGLE_PLATFORMS,
        KAGGLE_PYTHON_VERSIONS,
        BundledDependency,
        build_bundle,
    )

    dependencies = [] if args.no_dependencies else list(KAGGLE_MISSING)
    dependencies += [BundledDependency(requirement, "asked for with --extra") for requirement in args.extra]
    manifest = build_bundle(args.out, dependencies, python_versions=args.python_version or KAGGLE_PYTHON_VERSIONS,
                            platforms=args.platform or KAGGLE_PLATFORMS, source=args.source)
    size = sum(entry["size"] for entry in manifest["files"]) / 2**20
    print(f"{args.out}: {len(manifest['files'])} wheel file(s), {size:.1f} MiB: {', '.join(manifest['requirements'])}")
    print(f"upload it as a Kaggle dataset; a kernel installs with: {manifest['install']}")
    return 0


def _search_rate(args: argparse.Namespace):
    from lmkcomp.kaggle.estimate import SearchRate, search_rate_from_bench

    if args.search_queries_per_s is not None:
        return SearchRate(args.search_queries_per_s, args.search_database_size), "--search-queries-per-s"
    if args.search_bench:
        return search_rate_from_bench(args.search_bench, args.search_variant)
    raise UserInputError("give --search-bench (lmkcomp bench search JSON) or --search-queries-per-s")


def _cmd_estimate(args: argparse.Namespace) -> int:
    from lmkcomp.kaggle.estimate import (
        Rates,
        Workload,
        estimate_kernel,
        extract_rate_from_bench,
        format_estimate,
        verify_rate_from_bench,
    )

    if args.extract_images_per_s is not None:
        extract, extract_source = args.extract_images_per_s, "--extract-images-per-s"
    elif args.extract_bench:
        extract, extract_source = extract_rate_from_bench(args.extract_bench, args.extract_variant)
    else:
        raise UserInputError("give --extract-bench (lmkcomp bench extract JSON) or --extract-images-per-s")
    search, search_source = _search_rate(args)
    verify, verify_source = args.verify_pairs_per_s, "--verify-pairs-per-s"
    if verify is None and args.verify_bench:
        verify, verify_source = verify_rate_from_bench(args.verify_bench, args.verify_preset)
    workload = Workload(args.task, test_images=args.test_images, database_images=args.database_images,
                        extract_database=not args.precomputed_database, verify_per_query=args.verify_per_query)
    rates = Rates(extract, search, verify_pairs_per_s=verify, local_images_per_s=args.local_images_per_s,
                  cores=args.cores)
    estimate = estimate_kernel(workload, rates, args.limit_hours)
    print(f"Kaggle kernel estimate: {args.task}")
    print(f"  extract rate: {extract_source}")
    print(f"  search rate: {search_source}")
    if args.verify_per_query:
        print(f"  verify rate: {verify_source}, x {args.cores} cores")
    print(format_estimate(estimate))
    return EXIT_OVER_LIMIT if estimate.over_limit else 0


def _cmd_stage(args: argparse.Namespace) -> int:
    from lmkcomp.data.layout import LandmarkData
    from lmkcomp.kaggle.paths import stage_competition

    data = LandmarkData(args.data, args.layout)
    for task in args.task or ("recognition", "retrieval"):
        print(f"{stage_competition(data, args.input, task)}: {task} competition folder")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    from lmkcomp.kaggle.estimate import GLDV2_IMAGES, KAGGLE_LIMIT_HOURS

    kaggle = commands.add_parser("kaggle", help="offline Kaggle kernels: wheels bundle, run-time estimate, local rehearsal")
    actions = kaggle.add_subparsers(dest="kaggle_command", required=True, metavar="ACTION")

    package = actions.add_parser("package", help="the folder of wheels (with manifest.json) to upload as a Kaggle "
                                 "dataset for offline kernels")
    package.add_argument("out", help="bundle folder (new, empty, or an earlier bundle, which is replaced)")
    package.add_argument("--extra", action="append", default=[], metavar="REQUIREMENT",
                         help="another requirement to bundle, e.g. timm==1.0.31 when the image's timm is older than "
                              "the kit needs, or faiss-gpu-cu12 (repeatable)")
    package.add_argument("--no-dependencies", action="store_true",
                         help="leave out the default dependencies Kaggle's image lacks (pydegensac, faiss-cpu)")
    package.add_argument("--python-version", action="append", metavar="X.Y",
                         help="the kernel's Python (repeatable; default 3.11)")
    package.add_argument("--platform", action="append", metavar="TAG",
                         help="pip platform tag of the kernel (repeatable; default manylinux_2_31 down to "
                              "manylinux_2_17 x86_64)")
    package.add_argument("--source", help="the kit's source checkout (default: the one this lmkcomp runs from)")
    package.set_defaults(run=_cmd_package)

    estimate = actions.add_parser(
        "estimate", parents=[verify_preset_options(when="the --verify-bench row of this ")], help="project a kernel's run time on the full GLDv2 sizes from benchmark figures; "
                         f"exit status {EXIT_OVER_LIMIT} and a WARNING line when it exceeds the limit")
    estimate.add_argument("--task", choices=("recognition", "retrieval"), required=True)
    estimate.add_argument("--extract-bench", metavar="JSON", help="lmkcomp bench extract output (bench/extract.json)")
    estimate.add_argument("--extract-variant", help="its row to use, e.g. bf16 (default: the fastest)")
    estimate.add_argument("--extract-images-per-s", type=float, help="extraction rate (instead of --extract-bench)")
    estimate.add_argument("--search-bench", metavar="JSON", help="lmkcomp bench search output (bench/search.json)")
    estimate.add_argument("--search-variant", default="torch",
                          help="its variant to use, at its largest measured database (torch: exact search "
                               "on the GPU, what the notebooks run)")
    estimate.add_argument("--search-queries-per-s", type=float, help="search rate (instead of --search-bench)")
    estimate.add_argument("--search-database-size", type=positive_int,
                          help="database rows --search-queries-per-s was measured on (scaled linearly to the "
                               "task's database; default: measured on that database)")
    estimate.add_argument("--verify-per-query", type=int, default=0, metavar="K",
                          help="pairs spatially verified per test image (0: none)")
    estimate.add_argument("--verify-bench", metavar="JSON", help="lmkcomp bench verify output (bench/verify.json)")
    estimate.add_argument("--verify-pairs-per-s", type=float, help="pairs/s on one core (instead of --verify-bench)")
    estimate.add_argument("--local-images-per-s", type=float, help="local feature extraction rate (needed with K > 0)")
    estimate.add_argument("--cores", type=positive_int, default=2, help="verification processes")
    estimate.add_argument("--test-images", type=positive_int, default=GLDV2_IMAGES["test"])
    estimate.add_argument("--database-images", type=positive_int,
                          help=f"train (recognition; default GLDv2-clean {GLDV2_IMAGES['train_clean']:,}) or index "
                               f"(retrieval; default {GLDV2_IMAGES['index']:,}) images")
    estimate.add_argument("--precomputed-database", action="store_true",
                          help="the database embeddings come in an attached dataset: no extraction in the kernel")
    estimate.add_argument("--limit-hours", type=float, default=KAGGLE_LIMIT_HOURS)
    estimate.set_defaults(run=_cmd_estimate)

    stage = actions.add_parser("stage", parents=[layout_options()], help="lay out a GLDv2-layout dataset as Kaggle competition folders "
                               "(INPUT/landmark-recognition-2021/ ...) to rehearse the notebooks")
    stage.add_argument("data", help="dataset root")
    stage.add_argument("input", help="the stand-in for /kaggle/input")
    stage.add_argument("--task", action="append", choices=("recognition", "retrieval"),
                       help="competition to lay out (repeatable; default both)")
    stage.set_defaults(run=_cmd_stage)
