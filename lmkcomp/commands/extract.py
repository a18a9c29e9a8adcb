"""`lmkcomp extract` (embeddings of a split, by a trained checkpoint or a weight-free descriptor)
and `lmkcomp ensemble` (aligned embedding stores combined into one)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lmkcomp.commands.args import (
    checkpoint_data,
    data_options,
    device_options,
    executor_options,
    pool_or_executor_from,
    positive_int,
    print_skipped,
    quiet_options,
    refuse_executor_options,
    scales,
    shard_options,
    workers_options,
)
from lmkcomp.errors import UserInputError


def _cmd_extract(args: argparse.Namespace) -> int:
    from lmkcomp.data.layout import LandmarkData

    if args.descriptor:
        from lmkcomp.features.weight_free import extract_weight_free_split

        if not args.data:
            raise UserInputError("--descriptor needs --data (the dataset root): there is no checkpoint to name it")
        refuse_executor_options(args, "--descriptor decodes in this machine's --workers processes")
        store = extract_weight_free_split(LandmarkData(args.data, args.layout), args.split, args.out,
                                          args.descriptor, dtype=args.dtype, shard_size=args.shard_size,
                                          workers=args.workers, skip_bad=args.skip_bad, progress=not args.quiet)
        print(f"{args.out}: {len(store)} x {store.dim} {store.dtype} {args.descriptor} embeddings of {args.split}")
        print_skipped(store)
        return 0
    from lmkcomp.features.extract import extract_split

    executor = pool_or_executor_from(args)
    store = extract_split(
        args.checkpoint, checkpoint_data(args), args.split, args.out, scales=args.scales, flip=not args.no_flip,
        dtype=args.dtype, image_size=args.image_size, batch_size=args.batch_size, device=args.device, amp=args.amp,
        workers=args.workers, shard_size=args.shard_size, on_error="skip" if args.skip_bad else "raise",
        progress=not args.quiet, threads=args.threads,
        # local: in this process, images loaded by --workers DataLoader processes; ray: shards as tasks
        executor=executor,
    )
    print(f"{args.out}: {len(store)} x {store.dim} {store.dtype} embeddings of {args.split}")
    print_skipped(store)
    return 0


def _cmd_ensemble(args: argparse.Namespace) -> int:
    from lmkcomp.features.ensemble import ensemble_stores
    from lmkcomp.features.store import EmbeddingStore
    from lmkcomp.features.whitening import PCAWhitening, fit_pca_whitening

    stores = [EmbeddingStore(path) for path in args.inputs]
    whitening = None
    if args.whitening:
        whitening = PCAWhitening.load(args.whitening)
    elif args.fit_whitening:
        train = [EmbeddingStore(path) for path in args.fit_whitening]
        fit_dir = Path(args.out).with_name(Path(args.out).name + "-whitening-train")
        train_ensemble = ensemble_stores(fit_dir, train, args.weights)
        whitening = fit_pca_whitening((block for _, block in train_ensemble.iter_blocks(65536)), dim=args.pca_dim)
        whitening.save(Path(args.out) / "whitening.npz")
    store = ensemble_stores(args.out, stores, args.weights, whitening=whitening, dtype=args.dtype)
    print(f"{args.out}: {len(store)} x {store.dim} ensemble of {len(stores)} models")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    extract = commands.add_parser("extract", parents=[
        executor_options(),
        data_options("dataset root (default: the one the model was trained on)", required=False),
        device_options("with --executor ray each task asks Ray for a GPU when it is a CUDA device"),
        workers_options("--executor local: image-loading processes; ray: the CPUs of a Ray instance started "
            "here (without --address), each task loading its own images"),
        shard_options(50_000, "rows per store shard, the unit of resuming and of --executor ray's tasks"),
        quiet_options()],
                                  help="embed a split with a trained checkpoint or a weight-free descriptor "
                                       "(sharded, resumable)")
    model = extract.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint")
    model.add_argument("--descriptor", metavar="NAME",
                       help="a weight-free descriptor instead of a model: thumbnail (the 16x16 colour thumbnail of "
                            "lmkcomp baseline); needs --data; --workers are then decoding processes")
    extract.add_argument("--split", choices=("train", "index", "test"), required=True)
    extract.add_argument("--out", required=True, help="embedding store folder")
    extract.add_argument("--scales", type=scales, default=(0.7071, 1.0, 1.4142))
    extract.add_argument("--no-flip", action="store_true", help="no horizontal-flip TTA")
    extract.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    extract.add_argument("--image-size", type=positive_int, help="default: the checkpoint's final training size")
    extract.add_argument("--batch-size", type=positive_int, default=64)
    extract.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none")
    extract.add_argument("--threads", type=positive_int,
                         help="torch CPU threads per extracting process (default: local, torch's own, this machine's "
                              "cores; ray, 1, and a CPU task reserves this many CPUs); on the CPU the embeddings' "
                              "last bits depend on it, so compare stores made with the same number")
    extract.add_argument("--skip-bad", action="store_true", help="zero rows for unreadable images (counted) instead of failing")
    extract.set_defaults(run=_cmd_extract, output_folder="out")

    ensemble = commands.add_parser("ensemble", help="combine aligned embedding stores: per-model L2, weights, concat, L2")
    ensemble.add_argument("out")
    ensemble.add_argument("inputs", nargs="+", help="embedding stores of one split, same ids")
    ensemble.add_argument("--weights", type=scales, help="one positive weight per input (default all 1)")
    ensemble.add_argument("--whitening", help="apply a saved PCA-whitening (whitening.npz)")
    ensemble.add_argument("--fit-whitening", nargs="+", metavar="TRAIN_STORE", help="learn PCA-whitening on these train stores (same models, same order)")
    ensemble.add_argument("--pca-dim", type=positive_int)
    ensemble.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    ensemble.set_defaults(run=_cmd_ensemble)
