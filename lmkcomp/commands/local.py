"""`lmkcomp extract-local` (local features of a split into a sharded store), `lmkcomp verify`
(image pairs spatially verified into a resumable pair table) and `lmkcomp bench verify`
(pairs/s and same-vs-different ROC AUC of the verification presets) and `lmkcomp bench photos`
(the weight-free path against an all-pairs reference on the user's photos)."""

from __future__ import annotations

import argparse

from lmkcomp.commands.args import (
    create_executor_from,
    data_options,
    executor_options,
    int_at_least,
    overrides,
    photo_source_options,
    photos_from,
    pool_or_executor_from,
    positive_int,
    print_skipped,
    quiet_options,
    set_options,
    shard_options,
    verify_preset_options,
    workers_options,
)


def _extractor_options(args: argparse.Namespace) -> dict:
    """Local extractor options from --max-features and --max-side (the extractor's own default when absent)."""
    options = {"max_features": args.max_features}
    if args.max_side is not None:
        options["max_side"] = args.max_side
    return options


def _cmd_extract_local(args: argparse.Namespace) -> int:
    from lmkcomp.data.layout import LandmarkData
    from lmkcomp.local.extract import extract_local_split
    from lmkcomp.local.extractors import create_local_extractor

    # The local executor is left to extract_local_split's own pool, which shares each shard's
    # images between the workers; other executors run one task per shard.
    executor = pool_or_executor_from(args)
    options = {**_extractor_options(args), **overrides(args.set)}  # --set wins over --max-features
    extractor = create_local_extractor(args.method, **options)
    store = extract_local_split(LandmarkData(args.data, args.layout), args.split, args.out, extractor,
                                shard_size=args.shard_size, workers=args.workers, progress=not args.quiet,
                                skip_bad=args.skip_bad, executor=executor)
    print(f"{args.out}: {args.method} local features of {len(store)} {args.split} images")
    print_skipped(store)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from lmkcomp.local.pairs import read_pair_table, read_pairs, verify_pairs
    from lmkcomp.local.store import LocalFeatureStore
    from lmkcomp.local.verify import verify_config

    executor = create_executor_from(args)
    settings = overrides(args.set)
    verify_config(args.verify_preset, **settings)  # a bad setting fails before any file is read
    pairs = read_pairs(args.pairs)
    query_store = LocalFeatureStore(args.queries_local)
    config = verify_config(args.verify_preset, query_store.method, **settings)  # with the features' own settings
    candidate_store = LocalFeatureStore(args.candidates_local) if args.candidates_local else query_store
    out = verify_pairs(pairs, query_store, candidate_store, args.out, config, chunk_size=args.chunk_size,
                       progress=not args.quiet, executor=executor)
    inliers = read_pair_table(out)["inliers"]
    print(f"{out}: {len(inliers)} pairs verified ({args.verify_preset}), median {inliers.median():.0f} inliers")
    return 0


def _cmd_bench_verify(args: argparse.Namespace) -> int:
    from lmkcomp.bench.verify import run_verify_benchmark
    from lmkcomp.data.layout import LandmarkData

    print(run_verify_benchmark(LandmarkData(args.data, args.layout), args.num_pairs, args.method, args.out,
                               local_features=args.local_root, extractor_options=_extractor_options(args),
                               seed=args.seed, progress=not args.quiet))
    print(f"wrote {args.out}")
    return 0



def _cmd_bench_photos(args: argparse.Namespace) -> int:
    from lmkcomp.bench.photos import check_variants, run_photo_benchmark

    check_variants(args.variants)
    source = args.from_folders or args.from_csv
    print(run_photo_benchmark(photos_from(args), args.variants, args.k, args.out, source=source,
                              progress=not args.quiet, candidates=args.candidates))
    print(f"wrote {args.out}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    extract_local = commands.add_parser("extract-local", parents=[
        executor_options(),
        data_options(),
        set_options("another extractor option, e.g. contrast_threshold=0.01"),
        workers_options("extraction processes"),
        shard_options(1000, "images per shard"),
        quiet_options()], help="local features (SIFT, RootSIFT, ...) of a split into a "
                                        "sharded, resumable store")
    extract_local.add_argument("--method", required=True, help="a LOCAL_EXTRACTORS name: sift, rootsift, ...")
    extract_local.add_argument("--split", choices=("train", "index", "test"), required=True)
    extract_local.add_argument("--out", required=True, help="local feature store folder")
    extract_local.add_argument("--max-features", type=positive_int, default=1000, help="features kept per image, best first")
    extract_local.add_argument("--max-side", type=positive_int, help="detect on images downscaled to this long side")
    extract_local.add_argument("--skip-bad", action="store_true", help="store unreadable images with no features instead of failing")
    extract_local.set_defaults(run=_cmd_extract_local, output_folder="out")

    verify = commands.add_parser("verify", parents=[
        executor_options(),
        set_options("override a preset field, e.g. residual=4"),
        workers_options("verification processes"),
        verify_preset_options(),
        quiet_options()],
                                 help="spatially verify a list of image pairs into a resumable pair table")
    verify.add_argument("--pairs", required=True, help="CSV or parquet with columns query_id,candidate_id")
    verify.add_argument("--queries-local", required=True, metavar="STORE", help="local feature store of the query images")
    verify.add_argument("--candidates-local", metavar="STORE",
                        help="local feature store of the candidates (default: --queries-local)")
    verify.add_argument("--out", required=True, help="pair table folder (resumable)")
    verify.add_argument("--chunk-size", type=positive_int, default=2000, help="pairs per chunk file")
    verify.set_defaults(run=_cmd_verify, output_folder="out")


def register_benches(benches: argparse._SubParsersAction) -> None:
    bench_verify = benches.add_parser("verify", parents=[
        data_options("dataset root (train and index images with labels)"),
        quiet_options()], help="pairs/s per core and same-vs-different ROC AUC of the "
                                      "fast, fast-magsac and official-delf verification presets, an "
                                      "official-style reference and fast with poselib")
    bench_verify.add_argument("--num-pairs", type=positive_int, default=300, help="same-landmark pairs, and as many different")
    bench_verify.add_argument("--method", default="sift", help="local feature method (a LOCAL_EXTRACTORS name)")
    bench_verify.add_argument("--local-root", metavar="DIR",
                              help="reuse the stores DIR/train and DIR/index instead of extracting")
    bench_verify.add_argument("--max-features", type=positive_int, default=1000)
    bench_verify.add_argument("--max-side", type=positive_int, help="extract on images downscaled to this long side")
    bench_verify.add_argument("--seed", type=int, default=0, help="pair sampling seed")
    bench_verify.add_argument("--out", default="bench/verify.json", help="JSON output")
    bench_verify.set_defaults(run=_cmd_bench_verify)
    bench_photos = benches.add_parser("photos", parents=[photo_source_options(required=True), quiet_options()],
                                      help="your photos, all pairs verified, top-k inlier voting: GAP, top-1, ROC AUC "
                                           "and cost per pair of the kit's weight-free path against a RootSIFT + "
                                           "DEGENSAC reference")
    bench_photos.add_argument("--variants", type=lambda text: text.split(","), default="reference,fast",
                              metavar="NAME,...",
                              help="reference, fast (the kit's default), fast-magsac, official-delf; ratios are "
                                   "to the first")
    bench_photos.add_argument("--k", type=positive_int, default=3, help="a landmark's best verified photos whose "
                                                                         "inliers add up")
    bench_photos.add_argument("--candidates", type=int_at_least(0), default=0, metavar="N",
                              help="votes from each query's N nearest candidates by thumbnail, as verified voting's "
                                   "--candidates; 0: every candidate (all pairs)")
    bench_photos.add_argument("--out", default="bench/photos.json", help="JSON output")
    bench_photos.set_defaults(run=_cmd_bench_photos)
