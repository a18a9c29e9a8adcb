"""`lmkcomp recognize` and `lmkcomp retrieve`: Kaggle submissions from embedding stores
(`lmkcomp.inference`), validated and, when the dataset has a solution, scored; `lmkcomp evaluate`:
a checkpoint scored on the test split end to end (extraction, kNN retrieval, soft voting)."""

from __future__ import annotations

import argparse
import json

from lmkcomp.commands.args import (
    checkpoint_data,
    create_executor_from,
    data_options,
    device_options,
    executor_options,
    int_at_least,
    positive_int,
    quiet_options,
    scales,
    verify_preset_options,
    workers_options,
)


def _recognition_config(args: argparse.Namespace, **fields):
    """The voting options shared by both commands, plus `fields` (those only `recognize` has)."""
    from lmkcomp.inference import RecognitionConfig

    return RecognitionConfig(method=args.method, k=args.k, labels=args.labels, index=args.index_spec,
                             neighbours=args.neighbours, nonlandmark_bank=args.nonlandmark_bank,
                             checkpoint=args.checkpoint, **fields)


def _print_result(result: dict, extra: str) -> None:
    """The submission, what else was written, then the scores' JSON, last (what scripts read)."""
    print(f"{result['csv']}: valid submission{extra}")
    for what, path in result.get("files", {}).items():
        print(f"{what}: {path}")
    if result["scores"] is not None:
        print(json.dumps(result["scores"]))


def _cmd_recognize(args: argparse.Namespace) -> int:
    from lmkcomp.data.layout import LandmarkData
    from lmkcomp.features.store import EmbeddingStore
    from lmkcomp.inference import recognize, write_recognition_pairs

    executor = create_executor_from(args)
    data = LandmarkData(args.data, args.layout)
    config = _recognition_config(args, inliers=args.inliers, inlier_cap=args.inlier_cap,
                                 demote_over=args.demote_over, demote_factor=args.demote_factor,
                                 test_local=args.queries_local, train_local=args.train_local,
                                 candidates=args.candidates, verify_preset=args.verify_preset, workers=args.workers,
                                 min_score=args.min_score)
    test = EmbeddingStore(args.queries)
    train = EmbeddingStore(args.train) if args.train else None
    if args.pairs_out:
        count = write_recognition_pairs(test, train, data, args.pairs_out, config, args.workdir, not args.quiet,
                                        executor)
        print(f"{args.pairs_out}: {count} (test, train) pairs to verify")
        return 0
    result = recognize(data, test, train, args.name, config, args.workdir, args.submissions, args.split,
                       progress=not args.quiet, executor=executor)
    _print_result(result, f", {result['predicted']} predictions, {result['demoted']} demoted as distractors")
    return 0


def _cmd_retrieve(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from lmkcomp.data.layout import LandmarkData
    from lmkcomp.features.store import EmbeddingStore
    from lmkcomp.inference import RetrievalConfig, retrieve, write_retrieval_pairs

    executor = create_executor_from(args)
    data = LandmarkData(args.data, args.layout)
    recognition = _recognition_config(args)
    config = RetrievalConfig(
        index=args.index_spec, dba_n=args.dba_n, dba_alpha=args.dba_alpha, qe_n=args.qe_n, qe_alpha=args.qe_alpha,
        inliers=args.inliers, verify_top=args.verify_top, rerank=args.rerank,
        insert_threshold=None if args.no_insert else args.insert_threshold,
        recognition=replace(recognition, inliers=args.label_inliers), index_inliers=args.index_label_inliers,
    )
    test, index = EmbeddingStore(args.queries), EmbeddingStore(args.index)
    if args.pairs_out:
        count = write_retrieval_pairs(test, index, args.pairs_out, config, args.workdir, not args.quiet, executor)
        print(f"{args.pairs_out}: {count} (test, index) pairs to verify")
        return 0
    train = EmbeddingStore(args.train) if args.train else None
    result = retrieve(data, test, index, args.name, config, train, args.workdir, args.submissions, args.split,
                      progress=not args.quiet, executor=executor)
    _print_result(result, "")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from lmkcomp.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, checkpoint_data(args), args.workdir, args.name,
                                 submissions=args.submissions, scales=args.scales, flip=args.flip,
                                 device=args.device, workers=args.workers, progress=not args.quiet)
    print(json.dumps(result))
    return 0


def _common_parents() -> list[argparse.ArgumentParser]:
    """The shared options of `recognize` and `retrieve`."""
    return [executor_options(), data_options("dataset root: test ids, train labels, solutions"),
            workers_options("processes of the kNN searches (one kNN-table shard each) and of verified voting's "
                            "verification"), quiet_options()]


def _common(parser: argparse.ArgumentParser, task: str) -> None:
    from lmkcomp.search.run import DEFAULT_SPEC

    parser.add_argument("--queries", required=True, metavar="STORE", help="embedding store of the query images (the test split)")
    parser.add_argument("--name", required=True, help=f"submission name: SUBMISSIONS/{task}_<name>.csv")
    parser.add_argument("--submissions", default="submissions")
    parser.add_argument("--workdir", default="runs/inference", help="kNN tables and expanded stores (reused on reruns)")
    parser.add_argument("--index-spec", default=DEFAULT_SPEC, help="search spec: Flat, numpy, torch, IVF1024,PQ32, ...")
    parser.add_argument("--split", choices=("all", "public", "private"), default="all", help="solution rows scored")
    parser.add_argument("--pairs-out", metavar="CSV", help="only write the pairs whose inliers this command reads "
                        "(a pair list for lmkcomp verify --pairs) and stop")


def _voting(parser: argparse.ArgumentParser, methods: tuple[str, ...] = ("soft-voting", "nearest", "classifier")) -> None:
    """Options of the landmark predictions: recognize's output, retrieve's re-ranking input."""
    parser.add_argument("--train", metavar="STORE", help="embedding store of the train split")
    parser.add_argument("--labels", default="train", help="train labels: train, train_clean, or a train_clean-format CSV")
    parser.add_argument("--method", choices=methods, default="soft-voting")
    parser.add_argument("--k", type=positive_int, default=3, help="soft voting: train neighbours that vote; verified "
                        "voting: a landmark's best verified train images whose inliers add up")
    parser.add_argument("--neighbours", type=positive_int, default=10,
                        help="train neighbours searched and cached per image (>= k)")
    parser.add_argument("--checkpoint", help="classifier: the trained model whose head predicts")
    parser.add_argument("--nonlandmark-bank", metavar="STORE",
                        help="embedding store of non-landmark pictures: neighbour weight A - B - C")


def register(commands: argparse._SubParsersAction) -> None:
    recognize = commands.add_parser(
        "recognize", parents=[*_common_parents(), verify_preset_options(when="verified voting: ")],
        help="recognition submission from embedding stores: soft voting (inliers, non-landmark bank), nearest "
             "neighbour, classifier head, or verified voting")
    _common(recognize, "recognition")
    _voting(recognize, ("soft-voting", "nearest", "classifier", "verified-voting"))
    recognize.add_argument("--inliers", metavar="PAIR_TABLE",
                           help="pair table (lmkcomp verify) of test images and their train neighbours: inlier term")
    recognize.add_argument("--inlier-cap", type=float, default=70.0, help="inlier term min(inliers, cap) / cap")
    recognize.add_argument("--demote-over", type=int, metavar="N",
                           help="demote landmarks predicted for more than N test images (Ozaki & Yokoo 2019: 30); N "
                                "grows with the test set: calibrate it for a target specificity with lmkcomp "
                                "calibrate --demote-over on the WORKDIR/recognition/NAME/calibration-scores.csv of a "
                                "run on labelled data of about the same size")
    recognize.add_argument("--demote-factor", type=float,
                           help="multiply demoted confidences by this instead of ranking them below all others")
    verified = recognize.add_argument_group(
        "verified voting", "--method verified-voting: verify each test image against train images (local features), "
        "then each landmark scores the inliers beyond the model's minimal sample (4 for a homography) of its --k best "
        "verified train images; pair tables go to WORKDIR/"
        "verified-voting/ (resumable; a rerun with another --k or --min-score verifies nothing)")
    verified.add_argument("--queries-local", metavar="STORE", help="local features of the query images (extract-local)")
    verified.add_argument("--train-local", metavar="STORE", help="local features of the train images")
    verified.add_argument("--candidates", type=int_at_least(0), default=100, metavar="N",
                          help="train images verified per test image: the N nearest by --train embeddings (the GLDv2 "
                               "mode: 118 K x 100 pairs); 0: every labelled train image (the small-data mode, test x "
                               "train pairs; impossible at GLDv2 scale)")
    verified.add_argument("--min-score", type=float, metavar="T",
                          help="no prediction (non-landmark) below T summed excess inliers; calibrate T for a target "
                               "specificity with lmkcomp calibrate --scores on the WORKDIR/recognition/NAME/"
                               "calibration-scores.csv it writes when the data has a recognition solution")
    recognize.set_defaults(run=_cmd_recognize)

    retrieve = commands.add_parser("retrieve", parents=_common_parents(), help="retrieval submission from embedding stores, with DBA, "
                                   "alpha-QE, spatial and discriminative re-ranking")
    _common(retrieve, "retrieval")
    retrieve.add_argument("--index", required=True, metavar="STORE", help="embedding store of the index split")
    retrieve.add_argument("--dba-n", type=positive_int, help="database-side augmentation with the top N index neighbours")
    retrieve.add_argument("--dba-alpha", type=float, default=3.0)
    retrieve.add_argument("--qe-n", type=positive_int, help="alpha query expansion with the top N results")
    retrieve.add_argument("--qe-alpha", type=float, default=3.0)
    retrieve.add_argument("--inliers", metavar="PAIR_TABLE",
                          help="pair table (lmkcomp verify) of test and index images: spatial re-ranking")
    retrieve.add_argument("--verify-top", type=positive_int, default=100, help="results re-ordered by inliers")
    retrieve.add_argument("--rerank", action="store_true",
                          help="discriminative re-ranking by the landmarks predicted for test and index images")
    retrieve.add_argument("--insert-threshold", type=float, default=0.6,
                          help="insert unretrieved same-landmark images when the two confidences sum above this")
    retrieve.add_argument("--no-insert", action="store_true", help="re-rank by moving only, never insert")
    retrieve.add_argument("--label-inliers", metavar="PAIRS", help="re-ranking labels: pair table of the test images "
                          "against their voting train neighbours (recognize --pairs-out, then lmkcomp verify)")
    retrieve.add_argument("--index-label-inliers", metavar="PAIRS",
                          help="re-ranking labels: the same for the index images")
    _voting(retrieve)
    retrieve.set_defaults(run=_cmd_retrieve)

    evaluate = commands.add_parser("evaluate", parents=[
        data_options("dataset root (default: the one the model was trained on)", required=False, layout=False),
        device_options(),
        workers_options("image-loading processes"),
        quiet_options()], help="score a checkpoint on the test split (kNN retrieval, soft-voting recognition)")
    evaluate.add_argument("--checkpoint", required=True)
    evaluate.add_argument("--name", required=True, help="submission name: submissions/<task>_<name>.csv")
    evaluate.add_argument("--workdir", default="runs/evaluate", help="where the embeddings go")
    evaluate.add_argument("--submissions", default="submissions")
    evaluate.add_argument("--scales", type=scales, default=(1.0,))
    evaluate.add_argument("--flip", action="store_true")
    evaluate.set_defaults(run=_cmd_evaluate)
