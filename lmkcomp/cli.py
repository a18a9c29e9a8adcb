"""The `lmkcomp` command line: argument parsing, and the error boundary.

The boundary (`main`) turns every expected failure (`expected_failure_message`: bad input, an
OSError on a user's path, a missing GPU) into one line, ``lmkcomp: error: ...``, and exit code
2; a genuine bug keeps its traceback, and ``--debug`` shows the traceback of every error.

Each subcommand is a thin wrapper over a library function; heavy imports (torch, the
generator) happen inside the subcommand so that `lmkcomp score` starts fast.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import shlex
import sys
import traceback
from pathlib import Path
from typing import Sequence

from lmkcomp import __version__
from lmkcomp.commands import register_all
from lmkcomp.commands.args import create_executor_from, executor_options, fraction, overrides, positive_int, scales
from lmkcomp.errors import UserInputError

EXIT_USER_ERROR = 2
#: OSErrors that a user's path or disk causes (not the kit): one line each, exit code 2
USER_PATH_ERRNOS = frozenset({errno.ENOENT, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.EEXIST,
                              errno.ENOTEMPTY, errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENAMETOOLONG,
                              errno.ELOOP, errno.EFBIG})


def _cmd_make_dataset(args: argparse.Namespace) -> int:
    from lmkcomp.data import folders, synthetic

    if args.from_folders or args.from_csv:
        if args.executor != "local" or args.address:
            flag = "--from-folders" if args.from_folders else "--from-csv"
            raise UserInputError(f"{flag}: an import runs in this process; leave out --executor and --address")
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




def _cmd_train(args: argparse.Namespace) -> int:
    from lmkcomp.config import load_config
    from lmkcomp.train.config import TrainConfig, resolve_config_path
    from lmkcomp.train.trainer import Trainer

    changes = overrides(args.set)
    if args.data:
        changes["data.root"] = args.data
    config = load_config(resolve_config_path(args.config), TrainConfig, changes)
    rows = Trainer(config, args.out, resume=args.resume, progress=not args.quiet).fit()
    if rows:
        from lmkcomp.features.health import NEAR_CHANCE_RULE, near_chance

        last = rows[-1]
        print(f"{args.out}: epoch {last['epoch']} val mAP@100 {last['val_map@100']:.4f} val GAP {last['val_gap']:.4f}, "
              f"same-vs-different AUC {last['val_auc']:.3f}, mean-vector norm {last['train_mean_norm']:.3f}")
        if near_chance(last["val_auc"], last["train_mean_norm"]):
            print(f"WARNING: the descriptor is near chance ({NEAR_CHANCE_RULE}); train longer, on more images, or "
                  "from pretrained weights")
    return 0


def _cmd_extract(args: argparse.Namespace) -> int:
    from lmkcomp.data.layout import LandmarkData

    if args.descriptor:
        from lmkcomp.features.weight_free import extract_weight_free_split

        if not args.data:
            raise UserInputError("--descriptor needs --data (the dataset root): there is no checkpoint to name it")
        if args.executor != "local" or args.address:
            raise UserInputError("--descriptor decodes in this machine's --workers processes: leave out --executor "
                                 "and --address")
        store = extract_weight_free_split(LandmarkData(args.data, args.layout or "gldv2"), args.split, args.out,
                                          args.descriptor, dtype=args.dtype, shard_size=args.shard_size,
                                          workers=args.workers, skip_bad=args.skip_bad, progress=not args.quiet)
        print(f"{args.out}: {len(store)} x {store.dim} {store.dtype} {args.descriptor} embeddings of {args.split}")
        _print_skipped(store)
        return 0
    from lmkcomp.features.extract import extract_split
    from lmkcomp.train.checkpoint import load_checkpoint

    executor = create_executor_from(args)
    root = args.data or load_checkpoint(args.checkpoint)["config"]["data"]["root"]
    layout = args.layout or "gldv2"
    store = extract_split(
        args.checkpoint, LandmarkData(root, layout), args.split, args.out, scales=args.scales, flip=not args.no_flip,
        dtype=args.dtype, image_size=args.image_size, batch_size=args.batch_size, device=args.device, amp=args.amp,
        workers=args.workers, shard_size=args.shard_size, on_error="skip" if args.skip_bad else "raise",
        progress=not args.quiet, threads=args.threads,
        # local: in this process, images loaded by --workers DataLoader processes; ray: shards as tasks
        executor=None if args.executor == "local" else executor,
    )
    print(f"{args.out}: {len(store)} x {store.dim} {store.dtype} embeddings of {args.split}")
    _print_skipped(store)
    return 0


def _print_skipped(store) -> None:
    """The count of images a store written with skips could not read, if any."""
    from lmkcomp.manifest import describe_skipped

    line = describe_skipped(store.directory, store.skipped)
    if line is not None:
        print(line)


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


def _cmd_bench_models(args: argparse.Namespace) -> int:
    from lmkcomp.bench.models import VARIANTS, run_benchmark

    chosen = [v for v in VARIANTS if args.variants is None or v["name"] in args.variants]
    unknown = set(args.variants or ()) - {v["name"] for v in VARIANTS}
    if unknown:
        raise UserInputError(f"unknown variant(s) {', '.join(sorted(unknown))}; known: {', '.join(v['name'] for v in VARIANTS)}")
    out = args.out or f"bench/{args.bench}.json"
    print(run_benchmark(args.bench, args.backbone, args.image_size, args.batch_size, args.device, args.steps,
                        args.warmup, out, scales=args.scales, flip=args.flip, variants=chosen))
    print(f"wrote {out}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from lmkcomp.data.layout import LandmarkData
    from lmkcomp.evaluate import evaluate_checkpoint
    from lmkcomp.train.checkpoint import load_checkpoint

    root = args.data or load_checkpoint(args.checkpoint)["config"]["data"]["root"]
    result = evaluate_checkpoint(args.checkpoint, LandmarkData(root, "gldv2"), args.workdir, args.name,
                                 submissions=args.submissions, scales=args.scales, flip=args.flip,
                                 device=args.device, workers=args.workers, progress=not args.quiet)
    print(json.dumps(result))
    return 0


def _cmd_bench_heads(args: argparse.Namespace) -> int:
    from lmkcomp.bench.heads import VARIANTS, run_heads_benchmark
    from lmkcomp.config import load_config
    from lmkcomp.train.config import TrainConfig, resolve_config_path

    changes = overrides(args.set)
    if args.data:
        changes["data.root"] = args.data
    unknown = set(args.variants or ()) - set(VARIANTS)
    if unknown:
        raise UserInputError(f"unknown variant(s) {', '.join(sorted(unknown))}; known: {', '.join(VARIANTS)}")
    config = load_config(resolve_config_path(args.config), TrainConfig, changes)
    out = args.out or "bench/heads.json"
    print(run_heads_benchmark(config, args.workdir, out, args.variants, progress=not args.quiet))
    print(f"wrote {out}")
    return 0


def _cmd_clean(args: argparse.Namespace) -> int:
    from lmkcomp.clean.embedding_methods import clean_dbscan, clean_references
    from lmkcomp.clean.result import write_result
    from lmkcomp.data import gldv2
    from lmkcomp.data.layout import LandmarkData
    from lmkcomp.features.store import EmbeddingStore, StoreRows
    from lmkcomp.train.data import read_labels

    if args.method != "verify" and (args.executor != "local" or args.address):
        raise UserInputError(f"--executor and --address apply to --method verify, not {args.method}")
    data = LandmarkData(args.data, args.layout)
    labels = read_labels(data, args.labels)
    store = EmbeddingStore(args.embeddings)
    # read on demand: the train-vs-train kNN streams the store, the per-landmark methods read
    # one landmark's rows at a time
    embeddings = StoreRows(store, store.position(labels["id"].tolist()))
    ids, landmarks = labels["id"].tolist(), labels["landmark_id"].to_numpy()
    if args.method == "dbscan":
        result = clean_dbscan(ids, landmarks, embeddings, eps=args.eps, min_samples=args.min_samples)
    elif args.method == "verify":
        result = _clean_by_verification(args, ids, landmarks, embeddings)
    else:
        references = None
        if args.references:
            frame = gldv2.read_train_clean_csv(args.references)
            references = frame.groupby("landmark_id")["id"].apply(list).to_dict()
        result = clean_references(ids, landmarks, embeddings, gamma=args.gamma, references=references, k=args.k)
    result.drop_small_landmarks(args.min_images)
    # the synthetic data's ground truth, when present, scores the result; methods never read it
    report = write_result(result, args.out, noise_truth=data.root / "noise_truth.csv")
    summary = f"{args.out}: kept {report['kept']} of {report['images']} images, {report['landmarks_after']} landmarks"
    if "against_noise_truth" in report:
        truth = report["against_noise_truth"]
        summary += f"; noise removal precision {truth['precision']:.3f}, recall {truth['recall']:.3f}"
    print(summary)
    return 0


def _clean_by_verification(args: argparse.Namespace, ids: list[str], landmarks, embeddings):
    from lmkcomp.clean.verify_method import clean_verify, default_inlier_threshold, neighbour_pair_table
    from lmkcomp.local.store import LocalFeatureStore
    from lmkcomp.local.verify import verify_config

    if not args.local_features:
        raise UserInputError("--method verify needs --local-features (lmkcomp extract-local of the train split)")
    executor = create_executor_from(args)
    store = LocalFeatureStore(args.local_features)
    config = verify_config(args.preset)
    table = neighbour_pair_table(ids, landmarks, embeddings, store, args.pair_table or Path(args.out) / "pairs", config,
                                 k=args.knn, max_neighbours=args.max_neighbours, progress=not args.quiet,
                                 knn_out=Path(args.out) / "knn-pairs", executor=executor,
                                 knn_shard_rows=args.knn_shard_rows)
    threshold = default_inlier_threshold(store.method) if args.inlier_threshold is None else args.inlier_threshold
    result = clean_verify(ids, landmarks, table, threshold, args.min_verified, args.min_images)
    result.settings.update(knn=args.knn, max_neighbours=args.max_neighbours, preset=args.preset,
                           local_features=store.method)
    return result


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
    executor = create_executor_from(args) if args.executor != "local" else None
    options = {**_extractor_options(args), **overrides(args.set)}  # --set wins over --max-features
    extractor = create_local_extractor(args.method, **options)
    store = extract_local_split(LandmarkData(args.data, args.layout), args.split, args.out, extractor,
                                shard_size=args.shard_size, workers=args.workers, progress=not args.quiet,
                                skip_bad=args.skip_bad, executor=executor)
    print(f"{args.out}: {args.method} local features of {len(store)} {args.split} images")
    _print_skipped(store)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from lmkcomp.local.pairs import read_pair_table, read_pairs, verify_pairs
    from lmkcomp.local.store import LocalFeatureStore
    from lmkcomp.local.verify import verify_config

    executor = create_executor_from(args)
    config = verify_config(args.preset, **overrides(args.set))
    pairs = read_pairs(args.pairs)
    query_store = LocalFeatureStore(args.features)
    candidate_store = LocalFeatureStore(args.candidate_features) if args.candidate_features else query_store
    out = verify_pairs(pairs, query_store, candidate_store, args.out, config, chunk_size=args.chunk_size,
                       progress=not args.quiet, executor=executor)
    inliers = read_pair_table(out)["inliers"]
    print(f"{out}: {len(inliers)} pairs verified ({args.preset}), median {inliers.median():.0f} inliers")
    return 0


def _cmd_bench_verify(args: argparse.Namespace) -> int:
    from lmkcomp.bench.verify import run_verify_benchmark
    from lmkcomp.data.layout import LandmarkData

    print(run_verify_benchmark(LandmarkData(args.data, args.layout), args.pairs, args.features, args.out,
                               local_features=args.local_features, extractor_options=_extractor_options(args),
                               seed=args.seed, progress=not args.quiet))
    print(f"wrote {args.out}")
    return 0








def build_parser() -> argparse.ArgumentParser:
    from lmkcomp.data.layout import LAYOUTS

    parser = argparse.ArgumentParser(prog="lmkcomp", description="Google Landmarks v2 competition kit")
    parser.add_argument("--version", action="version", version=f"lmkcomp {__version__}")
    parser.add_argument("--verbose", action="store_true", help="log debugging details")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of every error, bad input included (before the command: "
                             "lmkcomp --debug COMMAND ...)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    make = commands.add_parser("make-dataset", parents=[executor_options()], help="write a synthetic mini-GLDv2, or import photo folders, in the GLDv2 layout")
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
    make.add_argument("--workers", type=positive_int, default=1,
                      help="rendering processes (--executor local), or the CPUs of a Ray instance started here "
                           "(--executor ray without --address); an import (--from-folders, --from-csv) runs in "
                           "this process")
    photo_source = make.add_mutually_exclusive_group()
    photo_source.add_argument("--from-folders", metavar="SRC",
                        help="import photos instead of generating: SRC/<landmark>/<photos>, split with the seed, or "
                             "SRC/<split>/<landmark>/<photos> (chosen when SRC's folders are all named train, index "
                             "or test), which keeps the given split")
    photo_source.add_argument("--from-csv", metavar="LIST.csv",
                        help="import the photos a CSV lists: columns path, landmark and optionally split (empty: "
                             "split with the seed); paths relative to the CSV's folder")
    make.add_argument("--non-landmark-folder", default="_non_landmark",
                      help="SRC subfolder (or landmark name in a listing) of non-landmark photos")
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
    make.add_argument("--quiet", action="store_true", help="no progress bars")
    make.set_defaults(run=_cmd_make_dataset, output_folder="out")

    score = commands.add_parser("score", help="score a submission as the official evaluation does; prints JSON")
    score.add_argument("--task", choices=("recognition", "retrieval"), required=True)
    score.add_argument("--solution", required=True, help="recognition_solution_v2.1.csv or retrieval_solution_v2.1.csv")
    score.add_argument("--submission", required=True)
    score.add_argument("--split", choices=("public", "private", "all"), default="all", help="rows scored (all = every non-Ignored row)")
    score.set_defaults(run=_cmd_score)

    validate = commands.add_parser("validate", help="check a submission file as Kaggle would")
    validate.add_argument("--task", choices=("recognition", "retrieval"), required=True)
    validate.add_argument("--submission", required=True)
    source = validate.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="dataset root whose test split defines the expected ids")
    source.add_argument("--test-ids", help="a sample_submission.csv listing the expected ids")
    validate.add_argument("--layout", choices=tuple(LAYOUTS), default="gldv2")
    validate.set_defaults(run=_cmd_validate)

    baseline = commands.add_parser("baseline", help="write trivial but valid submissions for both tasks")
    baseline.add_argument("data", help="dataset root")
    baseline.add_argument("--layout", choices=tuple(LAYOUTS), default="gldv2")
    baseline.add_argument("--method", choices=("thumbnail", "constant"), default="thumbnail")
    baseline.add_argument("--out", default="submissions")
    baseline.add_argument("--quiet", action="store_true")
    baseline.set_defaults(run=_cmd_baseline)

    train = commands.add_parser("train", help="train a GeM + margin-head descriptor (resumable)")
    train.add_argument("config", help="YAML config, or a built-in one: cpu-small, gpu-gldv2")
    train.add_argument("--out", required=True, help="run folder (checkpoint, metrics.csv, tensorboard/)")
    train.add_argument("--data", help="dataset root (overrides data.root)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. model.head=cosface")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    train.add_argument("--quiet", action="store_true")
    train.set_defaults(run=_cmd_train, output_folder="out")

    extract = commands.add_parser("extract", parents=[executor_options()],
                                  help="embed a split with a trained checkpoint or a weight-free descriptor "
                                       "(sharded, resumable)")
    model = extract.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint")
    model.add_argument("--descriptor", metavar="NAME",
                       help="a weight-free descriptor instead of a model: thumbnail (the 16x16 colour thumbnail of "
                            "lmkcomp baseline); needs --data; --workers are then decoding processes")
    extract.add_argument("--split", choices=("train", "index", "test"), required=True)
    extract.add_argument("--out", required=True, help="embedding store folder")
    extract.add_argument("--data", help="dataset root (default: the one the model was trained on)")
    extract.add_argument("--layout", choices=tuple(LAYOUTS))
    extract.add_argument("--scales", type=scales, default=(0.7071, 1.0, 1.4142))
    extract.add_argument("--no-flip", action="store_true", help="no horizontal-flip TTA")
    extract.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    extract.add_argument("--image-size", type=positive_int, help="default: the checkpoint's final training size")
    extract.add_argument("--batch-size", type=positive_int, default=64)
    extract.add_argument("--device", default="auto",
                         help="auto, cpu, cuda or cuda:N (auto: a GPU when this machine has one); with --executor "
                              "ray each task asks Ray for a GPU when it is a CUDA device")
    extract.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none")
    extract.add_argument("--workers", type=int, default=2,
                         help="--executor local: image-loading processes; ray: the CPUs of a Ray instance started "
                              "here (without --address), each task loading its own images")
    extract.add_argument("--threads", type=positive_int,
                         help="torch CPU threads per extracting process (default: local, torch's own, this machine's "
                              "cores; ray, 1, and a CPU task reserves this many CPUs); on the CPU the embeddings' "
                              "last bits depend on it, so compare stores made with the same number")
    extract.add_argument("--shard-size", type=positive_int, default=50_000,
                         help="rows per store shard, the unit of resuming and of --executor ray's tasks")
    extract.add_argument("--skip-bad", action="store_true", help="zero rows for unreadable images (counted) instead of failing")
    extract.add_argument("--quiet", action="store_true")
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

    bench = commands.add_parser("bench", help="benchmarks: print a table, write JSON")
    benches = bench.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    register_all(commands, benches)
    for name, text in (("train", "training images/s and peak memory"), ("extract", "extraction images/s and peak memory")):
        sub = benches.add_parser(name, help=text + " with/without channels_last, AMP, torch.compile")
        sub.add_argument("--backbone", default="resnet18")
        sub.add_argument("--image-size", type=positive_int, default=224)
        sub.add_argument("--batch-size", type=positive_int, default=16)
        sub.add_argument("--device", default="auto")
        sub.add_argument("--steps", type=positive_int, default=5)
        sub.add_argument("--warmup", type=positive_int, default=2)
        sub.add_argument("--variants", type=lambda text: text.split(","), help="comma-separated subset, e.g. fp32,bf16")
        sub.add_argument("--scales", type=scales, default=(1.0,) if name == "train" else (0.7071, 1.0, 1.4142))
        sub.add_argument("--flip", action="store_true", help="extract: add horizontal-flip TTA")
        sub.add_argument("--out", help=f"JSON output (default bench/{name}.json)")
        sub.set_defaults(run=_cmd_bench_models)

    bench_verify = benches.add_parser("verify", help="pairs/s per core and same-vs-different ROC AUC of the "
                                      "fast, fast-magsac and official-delf verification presets, an "
                                      "official-style reference and fast with poselib")
    bench_verify.add_argument("--data", required=True, help="dataset root (train and index images with labels)")
    bench_verify.add_argument("--layout", choices=tuple(LAYOUTS), default="gldv2")
    bench_verify.add_argument("--pairs", type=positive_int, default=300, help="same-landmark pairs, and as many different")
    bench_verify.add_argument("--features", default="sift", help="local feature method (a LOCAL_EXTRACTORS name)")
    bench_verify.add_argument("--local-features", metavar="DIR",
                              help="reuse the stores DIR/train and DIR/index instead of extracting")
    bench_verify.add_argument("--max-features", type=positive_int, default=1000)
    bench_verify.add_argument("--max-side", type=positive_int, help="extract on images downscaled to this long side")
    bench_verify.add_argument("--seed", type=int, default=0, help="pair sampling seed")
    bench_verify.add_argument("--out", default="bench/verify.json", help="JSON output")
    bench_verify.add_argument("--quiet", action="store_true")
    bench_verify.set_defaults(run=_cmd_bench_verify)

    heads = benches.add_parser("heads", help="train one config per head (and GeM vs avg) and score each on the test split")
    heads.add_argument("config", nargs="?", default="cpu-small")
    heads.add_argument("--data", help="dataset root (overrides data.root)")
    heads.add_argument("--workdir", default="runs/bench-heads")
    heads.add_argument("--variants", type=lambda text: text.split(","))
    heads.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    heads.add_argument("--out", help="JSON output (default bench/heads.json)")
    heads.add_argument("--quiet", action="store_true")
    heads.set_defaults(run=_cmd_bench_heads, output_folder="workdir")

    evaluate = commands.add_parser("evaluate", help="score a checkpoint on the test split (kNN retrieval, soft-voting recognition)")
    evaluate.add_argument("--checkpoint", required=True)
    evaluate.add_argument("--name", required=True, help="submission name: submissions/<task>_<name>.csv")
    evaluate.add_argument("--data", help="dataset root (default: the one the model was trained on)")
    evaluate.add_argument("--workdir", default="runs/evaluate", help="where the embeddings go")
    evaluate.add_argument("--submissions", default="submissions")
    evaluate.add_argument("--scales", type=scales, default=(1.0,))
    evaluate.add_argument("--flip", action="store_true")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--workers", type=int, default=2)
    evaluate.add_argument("--quiet", action="store_true")
    evaluate.set_defaults(run=_cmd_evaluate)

    clean = commands.add_parser("clean", parents=[executor_options()], help="clean the train labels; writes train_clean.csv, removed.csv, report.json")
    clean.add_argument("--method", choices=("dbscan", "references", "verify"), required=True)
    clean.add_argument("--data", required=True, help="dataset root")
    clean.add_argument("--layout", choices=tuple(LAYOUTS), default="gldv2")
    clean.add_argument("--labels", default="train", help="train, train_clean, or a train_clean-format CSV")
    clean.add_argument("--embeddings", required=True, help="embedding store of the train split (lmkcomp extract)")
    clean.add_argument("--out", required=True)
    clean.add_argument("--eps", type=float, default=0.33, help="dbscan: cosine distance radius")
    clean.add_argument("--min-samples", type=positive_int, default=2, help="dbscan: core point neighbours")
    clean.add_argument("--gamma", type=float, default=0.5, help="references: cosine threshold to the centroid")
    clean.add_argument("--k", type=positive_int, default=5, help="references: most central images used when none are given")
    clean.add_argument("--references", help="references: CSV (landmark_id,images) of reference images per landmark")
    clean.add_argument("--local-features", metavar="STORE", help="verify: local features of the train split (lmkcomp extract-local)")
    clean.add_argument("--knn", type=positive_int, default=1000, help="verify: nearest train images searched per image")
    clean.add_argument("--knn-shard-rows", type=positive_int, default=8192, metavar="N",
                       help="verify: images per kNN task, searched at once (OUT/knn-pairs: one file each)")
    clean.add_argument("--max-neighbours", type=positive_int, default=100, help="verify: same-label neighbours verified per image")
    clean.add_argument("--inlier-threshold", type=positive_int,
                       help="verify: inliers that make a neighbour verified (default by feature: delf-tf 30, sift 8; "
                            "calibrate one with lmkcomp calibrate --scores PAIRS --labels CSV on a verified pair "
                            "table of labelled images); a rerun with another value reuses the pair table")
    clean.add_argument("--min-verified", type=int, default=2, help="verify: keep images with more verified neighbours than this")
    clean.add_argument("--preset", default="fast", help="verify: verification preset, fast, fast-magsac or official-delf")
    clean.add_argument("--pair-table", metavar="DIR", help="verify: resumable pair table folder (default OUT/pairs)")
    clean.add_argument("--workers", type=positive_int, default=1, help="verify: kNN and verification processes")
    clean.add_argument("--quiet", action="store_true", help="verify: no progress bars")
    clean.add_argument("--min-images", type=positive_int, default=2, help="drop landmarks left with fewer images")
    clean.set_defaults(run=_cmd_clean, output_folder="out")

    extract_local = commands.add_parser("extract-local", parents=[executor_options()], help="local features (SIFT, RootSIFT, ...) of a split into a "
                                        "sharded, resumable store")
    extract_local.add_argument("--method", required=True, help="a LOCAL_EXTRACTORS name: sift, rootsift, ...")
    extract_local.add_argument("--data", required=True, help="dataset root")
    extract_local.add_argument("--layout", choices=tuple(LAYOUTS), default="gldv2")
    extract_local.add_argument("--split", choices=("train", "index", "test"), required=True)
    extract_local.add_argument("--out", required=True, help="local feature store folder")
    extract_local.add_argument("--max-features", type=positive_int, default=1000, help="features kept per image, best first")
    extract_local.add_argument("--max-side", type=positive_int, help="detect on images downscaled to this long side")
    extract_local.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                               help="another extractor option, e.g. contrast_threshold=0.01")
    extract_local.add_argument("--workers", type=positive_int, default=1, help="extraction processes")
    extract_local.add_argument("--shard-size", type=positive_int, default=1000, help="images per shard")
    extract_local.add_argument("--skip-bad", action="store_true", help="store unreadable images with no features instead of failing")
    extract_local.add_argument("--quiet", action="store_true")
    extract_local.set_defaults(run=_cmd_extract_local, output_folder="out")

    verify = commands.add_parser("verify", parents=[executor_options()],
                                 help="spatially verify a list of image pairs into a resumable pair table")
    verify.add_argument("--pairs", required=True, help="CSV or parquet with columns query_id,candidate_id")
    verify.add_argument("--features", required=True, help="local feature store of the query images")
    verify.add_argument("--candidate-features", help="local feature store of the candidates (default: --features)")
    verify.add_argument("--out", required=True, help="pair table folder (resumable)")
    verify.add_argument("--preset", default="fast", help="verification preset: fast, fast-magsac or official-delf")
    verify.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a preset field, e.g. residual=4")
    verify.add_argument("--workers", type=positive_int, default=1, help="verification processes")
    verify.add_argument("--chunk-size", type=positive_int, default=2000, help="pairs per chunk file")
    verify.add_argument("--quiet", action="store_true")
    verify.set_defaults(run=_cmd_verify, output_folder="out")

    demo = commands.add_parser("demo", help="the kit end to end on the synthetic dataset, with a score table")
    demo.add_argument("--preset", choices=("tiny", "small", "medium"), default="small")
    demo.add_argument("--from-folders", metavar="SRC",
                      help="your photos instead of the synthetic data: SRC/<landmark>/<photos> or SRC/<split>/"
                           "<landmark>/<photos>, imported keeping the split; runs the weight-free path (thumbnail "
                           "kNN, RootSIFT verified voting, verified retrieval) with the same report, no training")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--workdir", default="runs/demo", help="dataset and artifacts (reused when present)")
    demo.add_argument("--submissions", default="submissions")
    demo.add_argument("--workers", type=positive_int, default=2)
    demo.add_argument("--train-config", help="descriptor config trained in the demo (default: cpu-tiny for the tiny "
                      "preset, else cpu-small)")
    demo.add_argument("--no-train", action="store_true", help="skip training (dataset and baselines only)")
    demo.add_argument("--pretrained", metavar="CHECKPOINT", help="fine-tune the descriptor from this training run's "
                      "checkpoint (e.g. runs/v1/pretrain/checkpoint-last.pt of lmkcomp train cpu-v1) instead of "
                      "training from scratch; its stages get their own run folder")
    demo.add_argument("--force", action="store_true", help="rerun every stage after the dataset instead of reusing them")
    demo.add_argument("--no-report", action="store_true", help="skip the HTML report (SUBMISSIONS/report/index.html)")
    demo.add_argument("--quiet", action="store_true")
    demo.set_defaults(run=_cmd_demo)
    return parser


def expected_failure_message(error: BaseException) -> str | None:
    """The one-line message of an expected failure, or None for a bug.

    Expected: a `UserInputError` (bad input, a missing GPU, a setting a library refused) and an
    OSError about a user's path (missing, not permitted, not a folder, a folder, disk full...),
    shown as "PATH: reason". Any other OSError (a bad file descriptor, say) is a bug.
    """
    if isinstance(error, UserInputError):
        return str(error)
    if isinstance(error, OSError) and error.errno in USER_PATH_ERRNOS:
        paths = [str(path) for path in (error.filename, error.filename2) if path is not None]
        reason = error.strerror or os.strerror(error.errno)
        return f"{' -> '.join(paths)}: {reason}" if paths else reason
    return None


def _output_folder_lock(args: argparse.Namespace, argv: Sequence[str]) -> contextlib.AbstractContextManager:
    """The lock of the folder a command writes (`lmkcomp.outdir`): the argument its parser names
    in ``output_folder``; nothing for a command without one, or for a torchrun rank other than 0
    (rank 0 holds the run folder's lock for all of them)."""
    name = getattr(args, "output_folder", None)
    folder = getattr(args, name) if name else None
    if folder is None or os.environ.get("RANK", "0") != "0":
        return contextlib.nullcontext()
    from lmkcomp.outdir import output_folder

    return output_folder(folder, shlex.join(["lmkcomp", *argv]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        with _output_folder_lock(args, sys.argv[1:] if argv is None else argv):
            return args.run(args)
    except (UserInputError, OSError) as error:
        message = expected_failure_message(error)
        if message is None:  # a genuine bug: its traceback is the report
            raise
        if args.debug:
            traceback.print_exc()
        print(f"lmkcomp: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("lmkcomp: interrupted", file=sys.stderr)
        return 130
