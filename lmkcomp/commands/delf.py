"""`lmkcomp delf train|pca|recognize`: the trainable PyTorch DELF of `delf_baseline` (train it, fit
its descriptor PCA) and DELF recognition.

Its local features are extracted with `lmkcomp extract-local --method delf-torch
--set checkpoint=RUN/delf.pt --set pca=PCA.npz` between `pca` and `recognize`.

`recognize`: DELF recognition (local-feature votes + RANSAC) of a dataset's test split against a
labelled database, written as a validated, scored Kaggle submission. The inlier threshold, in
order: `--inlier-threshold`; else calibrated for `--target-specificity` on the labelled index
split (`delf_baseline.recognition.calibrate_inlier_threshold`; its local features given by
`--calibration-local` or extracted with the database's extractor); else the measured default
of the feature method and preset; else 1 (every query with a verified inlier predicted, ranked
by inliers), each fallback with a warning saying why. Every run folder holds per-query best candidates and inliers,
not decisions, so a rerun with another threshold or target recomputes nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from lmkcomp.commands.args import (
    create_executor_from,
    data_options,
    device_options,
    executor_options,
    fraction,
    json_safe,
    overrides,
    positive_int,
    quiet_options,
    scales,
    set_options,
    specificity,
    verify_preset_options,
    workers_options,
)
from lmkcomp.errors import UserInputError

log = logging.getLogger(__name__)


def _database_labels(data, source: str):
    """`id, landmark_id` of the database: train, train_clean, index, or a CSV with those columns."""
    from lmkcomp.data import gldv2

    if source in ("train", "train_clean"):
        return data.train_labels(clean=source == "train_clean")
    if source == "index":
        return data.index_labels
    return gldv2.read_train_csv(source)


def _calibration_store(args: argparse.Namespace, data, database, work: Path):
    """Local features of the labelled index split: `--calibration-local`, else extracted
    into WORKDIR/NAME/calibration-features with the database's extractor; None when the data
    has no labelled index split, or when the index split is the database itself."""
    from lmkcomp.local.extract import extract_local_split, store_extractor
    from lmkcomp.local.store import LocalFeatureStore

    if args.calibration_local:
        if not data.has("index"):
            raise UserInputError(f"--calibration-local: {data.root} has no index labels "
                                 f"({data.file('index').name}) to calibrate on")
        store = LocalFeatureStore(args.calibration_local)
        if store.meta.get("split", "index") != "index":  # its non-landmarks are read from the index labels
            raise UserInputError(f"--calibration-local {store.directory}: features of the {store.meta['split']} "
                                 "split; calibration needs the index split's")
        return store
    if args.labels == "index" or not data.has("index") or not (data.root / "index").is_dir():
        return None
    if not data.split_ids("index"):
        return None
    return extract_local_split(data, "index", work / "calibration-features", store_extractor(database),
                               progress=not args.quiet)


def _inlier_threshold(args: argparse.Namespace, data, database, preset: str, recognizer_at, work: Path,
                      recognition_options: dict):
    """`(threshold, how, calibration)` by the rule of the module docstring; `recognizer_at(t)`
    makes the recognizer with threshold t; `recognition_options` go to `run_recognition`
    (executor, index folder). The calibration queries' scores go to
    WORKDIR/NAME/calibration-scores.csv (for `lmkcomp calibrate`)."""
    from delf_baseline.recognition import (
        DEFAULT_INLIER_THRESHOLDS,
        calibrate_inlier_threshold,
        calibration_scores,
        run_recognition,
    )
    from lmkcomp.fileio import atomic_write

    if args.inlier_threshold is not None:
        return args.inlier_threshold, "given", None
    store = _calibration_store(args, data, database, work)
    if store is None:
        reason = (f"no labelled index split apart from the database (index/ images and "
                  f"{data.file('index').name} in {data.root}) to calibrate it on")
    else:
        labels = dict(zip(data.index_labels["id"].tolist(), data.index_labels["landmark_id"].tolist()))
        frame = run_recognition(recognizer_at(1), store, work / "calibration", progress=not args.quiet,
                                **recognition_options)
        with atomic_write(work / "calibration-scores.csv", "w", encoding="utf-8", newline="") as handle:
            calibration_scores(frame, labels).to_csv(handle, index=False)
        try:
            calibration = calibrate_inlier_threshold(frame, labels, args.target_specificity)
        except UserInputError as error:
            reason = f"cannot calibrate it on the {len(frame)} index images of {store.directory} ({error})"
        else:
            if calibration.caveat():
                log.warning("inlier threshold: %s", calibration.caveat())
            return calibration.threshold, "calibrated on the index split", calibration.as_dict()
    measured = DEFAULT_INLIER_THRESHOLDS.get((database.method, preset))
    if measured is not None:
        log.warning("inlier threshold: %s; taking %d, measured for %s features and %s on the synthetic renders "
                    "(give --inlier-threshold N to choose)", reason, measured, database.method, preset)
        return measured, "measured default", None
    # GAP ranks predictions by confidence and needs no threshold: without data to set one, every
    # query with a verified inlier keeps its best landmark, and only specificity pays
    log.warning("inlier threshold: %s, and none measured for %s features and %s: every query with a verified "
                "inlier gets its best landmark, ranked by inliers (threshold 1); give --inlier-threshold N, or "
                "non-landmark index images to calibrate on", reason, database.method, preset)
    return 1, "none to calibrate on", None


def _cmd_recognize(args: argparse.Namespace) -> int:
    from delf_baseline.index import disk_bytes, open_database_index
    from delf_baseline.recognition import (
        DelfRecognizer,
        default_verify_preset,
        latency_summary,
        run_recognition,
        submission_predictions,
    )
    import numpy as np

    from lmkcomp.data.layout import LandmarkData
    from lmkcomp.inference.common import test_ids as submission_test_ids
    from lmkcomp.local.store import LocalFeatureStore
    from lmkcomp.local.verify import verify_config
    from lmkcomp.metrics import sensitivity_specificity
    from lmkcomp.submission import score_submission, validate_submission, write_recognition_submission

    executor = create_executor_from(args)
    data = LandmarkData(args.data, args.layout)
    database = LocalFeatureStore(args.database_local)
    queries = LocalFeatureStore(args.queries_local)
    frame = _database_labels(data, args.labels)
    labels = dict(zip(frame["id"].tolist(), frame["landmark_id"].tolist()))
    labelled = list(labels)
    rows = database.rows(labelled)
    absent = [image_id for image_id, row in zip(labelled, rows.tolist()) if row < 0]
    if absent:
        raise UserInputError(f"{args.database_local}: {len(absent)} labelled database image(s) of --labels "
                             f"{args.labels} have no local features, first: {absent[0]}")
    # Store order, so that indexing reads the store's shards in sequence.
    database_ids = [labelled[i] for i in np.argsort(rows, kind="stable").tolist()]
    work = Path(args.workdir) / args.name
    index_dir = Path(args.index_dir) if args.index_dir else work / f"index-{args.index_spec}"
    preset = args.verify_preset or default_verify_preset(database.method)
    # before the index is built, so that a bad setting fails at once; --set seed wins over --seed
    config = verify_config(preset, database.method, **{"seed": args.seed, **overrides(args.set)})
    index = open_database_index(index_dir, database, args.index_spec, database_ids, seed=args.seed,
                                train_size=args.train_size, progress=not args.quiet, **overrides(args.index_option))

    def recognizer_at(threshold: int) -> DelfRecognizer:
        return DelfRecognizer(index, labels, database, inlier_threshold=threshold, candidates=args.candidates,
                              neighbours=args.neighbours, max_distance=args.max_distance, verify=config)

    # workers elsewhere load the index from its folder
    recognition_options = {"executor": executor, "index_dir": index_dir}
    threshold, how, calibration = _inlier_threshold(args, data, database, preset, recognizer_at, work,
                                                    recognition_options)
    recognizer = recognizer_at(threshold)
    test_ids = submission_test_ids(data)  # sample_submission.csv when the data has one, as Kaggle checks
    predictions = run_recognition(recognizer, queries, work / "predictions", test_ids, chunk_size=args.chunk_size,
                                  progress=not args.quiet, **recognition_options)
    submission_csv = Path(args.submissions) / f"recognition_{args.name}.csv"
    found = submission_predictions(predictions)
    write_recognition_submission(submission_csv, test_ids, found)
    submission = validate_submission(submission_csv, "recognition", test_ids)
    result = {"submission": str(submission_csv), "index": args.index_spec, "preset": preset, "inlier_threshold": threshold,
              "threshold_from": how, **({"calibration": calibration} if calibration else {}),
              "candidates": args.candidates, "predicted": len(found), **latency_summary(predictions),
              "index_memory_bytes": index.memory_bytes(), "index_disk_bytes": disk_bytes(index_dir)}
    if data.has("recognition_solution"):
        solution = data.recognition_solution
        scores = score_submission(submission, solution)
        rates = sensitivity_specificity(found, solution.scored("all"), threshold)
        result.update(gap=scores["gap"], top1_accuracy=scores["top1_accuracy"], sensitivity=rates.sensitivity,
                      specificity=rates.specificity)
    print(json.dumps(json_safe(result), allow_nan=False))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from delf_baseline.train import CHECKPOINT_NAME, DelfTrainConfig, DelfTrainer

    config = DelfTrainConfig(
        data=args.data, layout=args.layout, labels=args.labels, val_fraction=args.val_fraction,
        backbone=args.backbone, weights=args.weights, epochs=args.epochs,
        image_size=args.image_size, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs, amp=args.amp, seed=args.seed, checkpoint_every_steps=args.checkpoint_every,
        device=args.device, workers=args.workers,
    )
    # loading --weights logs what loaded and what did not (lmkcomp.models.weights)
    trainer = DelfTrainer(config, args.out, resume=args.resume, progress=not args.quiet)
    last = trainer.fit()[-1]
    print(f"{trainer.out / CHECKPOINT_NAME}: epoch {last['epoch']} train loss {last['train_loss']:.4f} "
          f"val loss {last['val_loss']:.4f} val accuracy {last['val_accuracy']:.4f}")
    return 0


def _cmd_pca(args: argparse.Namespace) -> int:
    from delf_baseline.train import fit_delf_pca
    from lmkcomp.data.layout import LandmarkData

    data = LandmarkData(args.data, args.layout)
    pca = fit_delf_pca(args.checkpoint, data, args.out, dim=args.dim, images=args.images, seed=args.seed,
                       scales=args.scales, max_features=args.max_features, device=args.device,
                       progress=not args.quiet)
    images = min(args.images, len(data.split_ids("train")))
    print(f"{args.out}: PCA {pca.input_dim} -> {pca.dim} of the descriptors of {images} train images")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    delf = commands.add_parser("delf", help="the PyTorch DELF (Noh et al. 2017): train it, fit its descriptor PCA, "
                               "recognize with local-feature votes and RANSAC")
    actions = delf.add_subparsers(dest="action", required=True, metavar="ACTION")
    # light modules only: torch and timm load when a command runs
    from delf_baseline.savedmodel import OFFICIAL_SCALES

    train = actions.add_parser("train", parents=[
        data_options(),
        device_options(),
        workers_options("data-loading processes"),
        quiet_options()], help="train a PyTorch DELF (attention-pooled classifier; resumable)")
    train.add_argument("--out", required=True, help="run folder: delf.pt (checkpoint) and metrics.csv")
    train.add_argument("--labels", default="train_clean", help="train, train_clean, or a CSV in train_clean format")
    train.add_argument("--val-fraction", type=fraction, default=0.1,
                       help="share of the images of landmarks with >= 3 images held out for validation")
    train.add_argument("--backbone", default="resnet50", help="a timm ResNet, cut after its stride-16 stage")
    train.add_argument("--weights", help="local backbone weights (e.g. ImageNet resnet50), or an lmkcomp train checkpoint whose backbone is taken; random when absent")
    train.add_argument("--epochs", type=positive_int, default=10)
    train.add_argument("--image-size", type=positive_int, default=320, help="side of the square training crops")
    train.add_argument("--batch-size", type=positive_int, default=32)
    train.add_argument("--lr", type=float, default=1e-3, help="AdamW peak learning rate (cosine after warm-up)")
    train.add_argument("--weight-decay", type=float, default=1e-4)
    train.add_argument("--warmup-epochs", type=float, default=0.5)
    train.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--checkpoint-every", type=int, default=0, metavar="STEPS",
                       help="also checkpoint every STEPS optimizer steps (0: after each epoch only)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    train.set_defaults(run=_cmd_train, output_folder="out")

    pca = actions.add_parser("pca", parents=[
        data_options(),
        device_options(),
        quiet_options()], help="fit the descriptor PCA of a trained PyTorch DELF on train images")
    pca.add_argument("--checkpoint", required=True, help="delf.pt written by delf train")
    pca.add_argument("--out", required=True, help="PCA file (.npz) for extract-local --set pca=...")
    pca.add_argument("--dim", type=positive_int, default=40, help="output dimension (official DELF: 40)")
    pca.add_argument("--images", type=positive_int, default=1000, help="train images sampled for the fit")
    pca.add_argument("--seed", type=int, default=0, help="seed of the image sample")
    pca.add_argument("--scales", type=scales, default=OFFICIAL_SCALES, help="pyramid scales, as at extraction")
    pca.add_argument("--max-features", type=positive_int, default=1000, help="features per image, as at extraction")
    pca.set_defaults(run=_cmd_pca)

    recognize = actions.add_parser(
        "recognize", parents=[
            executor_options(),
            data_options("dataset root (labels, test ids, solution when present)"),
            set_options("override a verification preset field, e.g. residual=4"),
            workers_options("recognition processes, each loading the index"),
            verify_preset_options(default=None),
            quiet_options()], help="DELF recognition of the test split: each local feature's nearest database features "
                               "vote for their images, the top candidates are verified with RANSAC")
    recognize.add_argument("--database-local", required=True, metavar="STORE",
                           help="local feature store of the database images (lmkcomp extract-local)")
    recognize.add_argument("--labels", default="train", help="database labels: train, train_clean, index, or a CSV "
                                                          "with columns id,landmark_id (only labelled images are indexed)")
    recognize.add_argument("--queries-local", required=True, metavar="STORE", help="local feature store of the test split")
    recognize.add_argument("--index-spec", default="pq", help="feature index: flat, pq, pca10-kdtree, or a faiss "
                           "factory string (L2), bare or as faiss:FACTORY, e.g. IVF1024,PQ32 or HNSW32")
    recognize.add_argument("--index-option", action="append", default=[], metavar="KEY=VALUE",
                           help="a feature index option, e.g. nprobe=32 or nlist=4096 (pq), leafsize=32 "
                           "(pca10-kdtree), nprobe=32 (a faiss IVF factory)")
    recognize.add_argument("--index-dir", help="where the index is saved / reused (default WORKDIR/NAME/index-INDEX_SPEC)")
    recognize.add_argument("--train-size", type=positive_int, default=100_000,
                           help="descriptors sampled to train the index (PQ codebooks, PCA)")
    recognize.add_argument("--candidates", type=positive_int, default=20, help="top images by votes verified with RANSAC")
    recognize.add_argument("--neighbours", type=positive_int, default=60, help="nearest database features per query feature")
    recognize.add_argument("--max-distance", type=float, help="ignore neighbours at this distance or more (index space)")
    recognize.add_argument("--inlier-threshold", type=positive_int,
                           help="inliers the best candidate needs for a prediction (default: calibrated on the "
                             "labelled index split for --target-specificity; without one, the measured default "
                             "by feature and preset: sift with fast 20)")
    recognize.add_argument("--target-specificity", type=specificity, default=0.99,
                           help="calibration: share of the index split's non-landmark images left without a "
                             "prediction")
    recognize.add_argument("--calibration-local", metavar="STORE",
                           help="local features of the index split to calibrate on (default: extracted into "
                             "WORKDIR/NAME/calibration-features with the database's extractor)")
    recognize.add_argument("--seed", type=int, default=0, help="seed of the index training sample and of RANSAC")
    recognize.add_argument("--name", required=True, help="submission name: SUBMISSIONS/recognition_<NAME>.csv")
    recognize.add_argument("--workdir", default="runs/delf-recognition", help="index and resumable predictions go in WORKDIR/NAME")
    recognize.add_argument("--submissions", default="submissions")
    recognize.add_argument("--chunk-size", type=positive_int, default=256, help="queries per resumable chunk (one task "
                        "each)")
    recognize.set_defaults(run=_cmd_recognize)
