"""`lmkcomp clean`: the train labels cleaned by DBSCAN, by similarity to references, or by
spatially verified neighbours; writes train_clean.csv, removed.csv and report.json."""

from __future__ import annotations

import argparse
from pathlib import Path

from lmkcomp.commands.args import (
    create_executor_from,
    data_options,
    executor_options,
    positive_int,
    quiet_options,
    refuse_executor_options,
    verify_preset_options,
    workers_options,
)
from lmkcomp.errors import UserInputError


def _cmd_clean(args: argparse.Namespace) -> int:
    from lmkcomp.clean.embedding_methods import clean_dbscan, clean_references
    from lmkcomp.clean.result import write_result
    from lmkcomp.data import gldv2
    from lmkcomp.data.layout import LandmarkData
    from lmkcomp.features.store import EmbeddingStore, StoreRows
    from lmkcomp.train.data import read_labels

    if args.method != "verify":
        refuse_executor_options(args, f"--method {args.method} runs in this process (only verify runs on an executor)")
    data = LandmarkData(args.data, args.layout)
    labels = read_labels(data, args.labels)
    store = EmbeddingStore(args.train)
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

    if not args.train_local:
        raise UserInputError("--method verify needs --train-local (lmkcomp extract-local of the train split)")
    executor = create_executor_from(args)
    store = LocalFeatureStore(args.train_local)
    config = verify_config(args.verify_preset, store.method)
    table = neighbour_pair_table(ids, landmarks, embeddings, store, args.pair_table or Path(args.out) / "pairs", config,
                                 k=args.knn, max_neighbours=args.max_neighbours, progress=not args.quiet,
                                 knn_out=Path(args.out) / "knn-pairs", executor=executor,
                                 knn_shard_rows=args.knn_shard_rows)
    threshold = default_inlier_threshold(store.method) if args.inlier_threshold is None else args.inlier_threshold
    result = clean_verify(ids, landmarks, table, threshold, args.min_verified, args.min_images)
    result.settings.update(knn=args.knn, max_neighbours=args.max_neighbours, preset=args.verify_preset,
                           local_features=store.method)
    return result


def register(commands: argparse._SubParsersAction) -> None:
    clean = commands.add_parser("clean", parents=[
        executor_options(),
        data_options(),
        workers_options("verify: kNN and verification processes"),
        verify_preset_options(when="verify: "),
        quiet_options()], help="clean the train labels; writes train_clean.csv, removed.csv, report.json")
    clean.add_argument("--method", choices=("dbscan", "references", "verify"), required=True)
    clean.add_argument("--labels", default="train", help="train, train_clean, or a train_clean-format CSV")
    clean.add_argument("--train", required=True, metavar="STORE", help="embedding store of the train split (lmkcomp extract)")
    clean.add_argument("--out", required=True)
    clean.add_argument("--eps", type=float, default=0.33, help="dbscan: cosine distance radius")
    clean.add_argument("--min-samples", type=positive_int, default=2, help="dbscan: core point neighbours")
    clean.add_argument("--gamma", type=float, default=0.5, help="references: cosine threshold to the centroid")
    clean.add_argument("--k", type=positive_int, default=5, help="references: most central images used when none are given")
    clean.add_argument("--references", help="references: CSV (landmark_id,images) of reference images per landmark")
    clean.add_argument("--train-local", metavar="STORE", help="verify: local features of the train split (lmkcomp extract-local)")
    clean.add_argument("--knn", type=positive_int, default=1000, help="verify: nearest train images searched per image")
    clean.add_argument("--knn-shard-rows", type=positive_int, default=8192, metavar="N",
                       help="verify: images per kNN task, searched at once (OUT/knn-pairs: one file each)")
    clean.add_argument("--max-neighbours", type=positive_int, default=100, help="verify: same-label neighbours verified per image")
    clean.add_argument("--inlier-threshold", type=positive_int,
                       help="verify: inliers that make a neighbour verified (default by feature: delf-tf 30, sift 8; "
                            "calibrate one with lmkcomp calibrate --scores PAIRS --labels CSV on a verified pair "
                            "table of labelled images); a rerun with another value reuses the pair table")
    clean.add_argument("--min-verified", type=int, default=2, help="verify: keep images with more verified neighbours than this")
    clean.add_argument("--pair-table", metavar="DIR", help="verify: resumable pair table folder (default OUT/pairs)")
    clean.add_argument("--min-images", type=positive_int, default=2, help="drop landmarks left with fewer images")
    clean.set_defaults(run=_cmd_clean, output_folder="out")
