"""`lmkcomp centroids build|recognize` (the centroid method of Boiarov & Tyantov 2019) and
`lmkcomp bench centroid-vs-delf`."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from lmkcomp.commands.args import (
    data_options,
    fraction,
    positive_int,
    positive_ints,
    quiet_options,
    scales,
    specificity,
    verify_preset_options,
    workers_options,
)

log = logging.getLogger(__name__)


def _cmd_build(args: argparse.Namespace) -> int:
    import numpy as np

    from lmkcomp.centroid.build import ClusteringConfig, build_centroids
    from lmkcomp.data import gldv2
    from lmkcomp.data.layout import LandmarkData
    from lmkcomp.errors import UserInputError
    from lmkcomp.features.store import EmbeddingStore
    from lmkcomp.train.data import read_labels

    config = ClusteringConfig(linkage=args.linkage, metric=args.metric, distance_threshold=args.threshold,
                              min_cluster_size=args.min_cluster_size, one_per_class=args.one_per_class,
                              max_images=args.max_images, seed=args.seed)
    labels = read_labels(LandmarkData(args.data, args.layout), args.labels)
    store = EmbeddingStore(args.train)
    # float16 halves the memory of the gathered rows (GLDv2-clean: 1.6 M x 512 x 2 bytes)
    embeddings = store.array(np.float16)[store.position(labels["id"].tolist())]
    references = None
    if args.references:
        row_of = {image_id: row for row, image_id in enumerate(labels["id"])}
        frame = gldv2.read_train_clean_csv(args.references)
        unknown = sorted(set(frame["id"]) - set(row_of))
        if unknown:
            raise UserInputError(f"{args.references}: reference {unknown[0]} is not among the {args.labels} images")
        references = {int(landmark): [row_of[i] for i in ids]
                      for landmark, ids in frame.groupby("landmark_id")["id"]}
    source = {"embeddings": str(Path(args.train).resolve()), "labels": args.labels,
              "references": args.references, "store_meta": store.meta}
    index = build_centroids(labels["landmark_id"].to_numpy(), embeddings, config, args.out, references=references,
                            reference_k=args.references_k, index_spec=args.index_spec, source=source,
                            progress=not args.quiet)
    multi = int((np.bincount(np.unique(index.landmark_ids, return_inverse=True)[1]) > 1).sum())
    print(f"{args.out}: {len(index)} centroids of {len(index.landmarks)} landmarks ({multi} with several), "
          f"{index.memory_bytes} bytes ({args.index_spec})")
    return 0


def _eta(args: argparse.Namespace, data, index) -> float:
    """--eta; else, with --calibration-embeddings, eta calibrated on the labelled index split
    for --target-specificity (printed with what it achieves there); else 0.5."""
    from lmkcomp.centroid.inference import calibrate_eta
    from lmkcomp.errors import UserInputError
    from lmkcomp.features.store import EmbeddingStore

    if args.calibration_embeddings is None:
        return 0.5 if args.eta is None else args.eta
    if args.eta is not None:
        raise UserInputError("--eta and --calibration-embeddings: give a threshold or calibrate one, not both")
    if data is None or not data.has("index"):
        raise UserInputError("--calibration-embeddings needs --data with index labels (index_image_to_landmark.csv)")
    store = EmbeddingStore(args.calibration_embeddings)
    labels = dict(zip(data.index_labels["id"].tolist(), data.index_labels["landmark_id"].tolist()))
    calibration = calibrate_eta(index, store.array(), store.ids, labels, args.target_specificity)
    print(json.dumps({"eta_calibrated_on": args.calibration_embeddings, **calibration.as_dict()}))
    if calibration.caveat():
        log.warning("eta: %s", calibration.caveat())
    return calibration.threshold


def _cmd_recognize(args: argparse.Namespace) -> int:
    from lmkcomp.centroid.index import load_centroids
    from lmkcomp.centroid.inference import InferenceConfig, write_recognition
    from lmkcomp.centroid.metadata import read_image_coordinates, read_landmark_metadata
    from lmkcomp.data.layout import LandmarkData
    from lmkcomp.errors import UserInputError
    from lmkcomp.features.store import EmbeddingStore
    from lmkcomp.inference.common import test_ids as submission_test_ids
    from lmkcomp.submission import read_submission, score_submission

    data = LandmarkData(args.data, args.layout) if args.data else None
    landmark_csv = args.landmark_metadata or (data.root / "landmark_metadata.csv" if data else None)
    image_csv = args.image_metadata or (data.root / "image_metadata.csv" if data else None)
    metadata = read_landmark_metadata(landmark_csv) if landmark_csv and Path(landmark_csv).is_file() else None
    if args.landmark_metadata and metadata is None:
        raise UserInputError(f"{args.landmark_metadata}: file not found")
    store = EmbeddingStore(args.queries)
    coordinates = None
    if args.geo_km is not None:
        if metadata is None or not (image_csv and Path(image_csv).is_file()):
            raise UserInputError("--geo-km needs landmark_metadata.csv and image_metadata.csv "
                                 "(--landmark-metadata, --image-metadata, or in --data)")
        coordinates = read_image_coordinates(image_csv, store.ids)
    centroids = load_centroids(args.centroids)
    eta = _eta(args, data, centroids)
    config = InferenceConfig(eta=eta, k=args.k, omega=args.omega, geo_km=args.geo_km, eta_geo=args.eta_geo,
                             same_city=not args.no_city_rule)
    # the ids Kaggle checks (sample_submission.csv when the data has one)
    test_ids = submission_test_ids(data) if data else None
    recognitions, out = write_recognition(centroids, store.array(), store.ids, args.out, config, test_ids, metadata,
                                          coordinates)
    found = int(recognitions.found.any(axis=1).sum())
    print(f"{out}: {found} of {len(store)} queries show a landmark (eta {eta!r}, k {args.k})")
    if data is not None and data.has("recognition_solution"):
        print(json.dumps(score_submission(read_submission(out, "recognition"), data.recognition_solution, args.split)))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from lmkcomp.bench.centroid_vs_delf import BenchSettings, run_centroid_vs_delf
    from lmkcomp.centroid.build import ClusteringConfig

    clustering = ClusteringConfig(linkage=args.linkage, metric=args.metric, distance_threshold=args.threshold,
                                  min_cluster_size=args.min_cluster_size)
    settings = BenchSettings(
        data=args.data, preset=args.preset, seed=args.seed, workdir=args.workdir, layout=args.layout,
        labels=args.labels, checkpoint=args.checkpoint, descriptor_config=args.descriptor_config,
        train_embeddings=args.train_embeddings, index_embeddings=args.index_embeddings,
        test_embeddings=args.test_embeddings, train_local=args.train_local, index_local=args.index_local,
        test_local=args.test_local, local_method=args.local_method, max_features=args.max_features,
        delf_checkpoint=args.delf_checkpoint, delf_index=args.index_spec, delf_candidates=args.delf_candidates,
        verify=args.verify_preset, landmark_share=args.landmark_share, specificity=args.specificity, eta=args.eta,
        min_inliers=args.min_inliers, clustering=clustering, ablation_thresholds=args.ablation_thresholds,
        ablation_min_sizes=args.ablation_min_sizes, ablation_k=args.ablation_k, sweep_sizes=args.sweep_sizes,
        sweep_features=args.sweep_features, sweep_queries=args.sweep_queries, timing_images=args.timing_images,
        timing_queries=args.timing_queries, workers=args.workers,
    )
    print(run_centroid_vs_delf(settings, args.out, args.plot, progress=not args.quiet))
    print(f"wrote {args.out} and {args.plot}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    centroids = commands.add_parser("centroids",
                                    help="the centroid method (Boiarov & Tyantov 2019): build centroids, recognize")
    actions = centroids.add_subparsers(dest="action", required=True, metavar="ACTION")

    build = actions.add_parser("build", parents=[
        data_options("dataset root (for the labels)"),
        quiet_options()], help="per-landmark centroids by agglomerative clustering, in a faiss index "
                               "(resumable)")
    build.add_argument("--labels", default="train", help="train, train_clean, or a train_clean-format CSV")
    build.add_argument("--train", required=True, metavar="STORE", help="embedding store of the train split (lmkcomp extract)")
    build.add_argument("--out", required=True, help="centroid folder")
    build.add_argument("--linkage", choices=("complete", "single", "average"), default="complete")
    build.add_argument("--metric", choices=("euclidean", "cosine"), default="euclidean",
                       help="distance between L2-normalised embeddings (cosine: 1 - cos)")
    build.add_argument("--threshold", type=float, default=1.2, help="agglomerative distance_threshold")
    build.add_argument("--min-cluster-size", type=positive_int, default=50,
                       help="images that make a cluster valid (else: one centroid from the largest cluster)")
    build.add_argument("--one-per-class", action="store_true", help="one centroid of all a landmark's images")
    build.add_argument("--max-images", type=positive_int, default=2000,
                       help="cluster a random subsample of this many images of a larger landmark, "
                            "assign the rest to the nearest cluster")
    build.add_argument("--seed", type=int, default=0, help="subsampling seed")
    build.add_argument("--references-k", type=int, default=5,
                       help="most central images used as references of a landmark without given ones (0: none)")
    build.add_argument("--references", metavar="CSV", help="given references (landmark_id,images) per landmark")
    build.add_argument("--index-spec", default="Flat", help="faiss index_factory spec (inner product)")
    build.set_defaults(run=_cmd_build)

    recognize = actions.add_parser(
        "recognize", help="Algorithm 2 on query embeddings; writes a recognition submission",
        parents=[data_options("dataset root: test ids, metadata, and scoring when it has a solution", required=False)])
    recognize.add_argument("--centroids", required=True, help="centroid folder (centroids build)")
    recognize.add_argument("--queries", required=True, metavar="STORE", help="embedding store of the queries (test split)")
    recognize.add_argument("--out", required=True, help="submission CSV")
    recognize.add_argument("--eta", type=float, help="cosine below which an image is a non-landmark (default 0.5, "
                           "or calibrated with --calibration-embeddings)")
    recognize.add_argument("--calibration-embeddings", metavar="STORE",
                           help="embedding store of the labelled index split: calibrate eta on it for "
                                "--target-specificity (needs --data)")
    recognize.add_argument("--target-specificity", type=specificity, default=0.99,
                           help="calibration: share of the index split's non-landmark images left without a landmark")
    recognize.add_argument("--k", type=positive_int, default=1, help="most landmarks found per image")
    recognize.add_argument("--omega", type=float, help="references check: mean cosine to the references above this")
    recognize.add_argument("--geo-km", type=float, help="geo scope: side of the square around the query, in km")
    recognize.add_argument("--eta-geo", type=float, help="eta for geo-scoped queries (default: --eta)")
    recognize.add_argument("--no-city-rule", action="store_true", help="keep found landmarks of other cities")
    recognize.add_argument("--landmark-metadata", help="landmark_metadata.csv (default: in --data)")
    recognize.add_argument("--image-metadata", help="image_metadata.csv with query coordinates (default: in --data)")
    recognize.add_argument("--split", choices=("public", "private", "all"), default="all", help="rows scored")
    recognize.set_defaults(run=_cmd_recognize)


def register_benches(benches: argparse._SubParsersAction) -> None:
    bench = benches.add_parser("centroid-vs-delf", parents=[
        data_options("dataset root (default: generate --preset in --workdir)", required=False),
        workers_options("dataset and local-feature processes"),
        verify_preset_options(default=None, when="DELF: "),
        quiet_options()], help="centroids vs DELF on the same database and queries: "
                               "sensitivity, specificity, GAP, latency by stage, memory, database-size sweep")
    bench.add_argument("--preset", choices=("tiny", "small", "medium"), default="tiny")
    bench.add_argument("--seed", type=int, default=0, help="dataset, query subsample and sweep seed")
    bench.add_argument("--workdir", default="runs/bench-centroid-vs-delf", help="what the bench makes (reused)")
    bench.add_argument("--labels", default="train", help="database labels: train, train_clean or a CSV")
    bench.add_argument("--checkpoint", help="trained descriptor (default: train --descriptor-config in --workdir)")
    bench.add_argument("--descriptor-config", default="cpu-small", help="config trained when no checkpoint is given")
    for split in ("train", "index", "test"):
        bench.add_argument(f"--{split}-embeddings", metavar="STORE", help=f"embedding store of the {split} split")
        bench.add_argument(f"--{split}-local", metavar="STORE", help=f"local-feature store of the {split} split")
    bench.add_argument("--local-method", default="sift", help="local features extracted when no store is given")
    bench.add_argument("--max-features", type=positive_int, default=1000)
    bench.add_argument("--delf-checkpoint", help="delf-torch checkpoint: extract DELF features with it when no local "
                       "stores are given; its 7-scale extraction is timed either way")
    bench.add_argument("--index-spec", default="pq",
                       help="DELF feature index, as lmkcomp delf recognize --index-spec")
    bench.add_argument("--delf-candidates", type=positive_ints, default=(5, 20), help="DELF settings: candidates verified")
    bench.add_argument("--landmark-share", type=fraction, default=0.02, help="landmark share of the offline set")
    bench.add_argument("--specificity", type=float, default=0.99, help="validation specificity thresholds aim at")
    bench.add_argument("--eta", type=float, help="fixed centroid threshold (default: calibrated)")
    bench.add_argument("--min-inliers", type=positive_int, help="fixed DELF inlier threshold (default: calibrated)")
    bench.add_argument("--linkage", choices=("complete", "single", "average"), default="complete")
    bench.add_argument("--metric", choices=("euclidean", "cosine"), default="euclidean")
    bench.add_argument("--threshold", type=float, default=1.2, help="clustering distance threshold")
    bench.add_argument("--min-cluster-size", type=positive_int, default=10)
    bench.add_argument("--ablation-thresholds", type=scales, default=(0.8, 1.0, 1.4))
    bench.add_argument("--ablation-min-sizes", type=positive_ints, default=(5, 25, 50))
    bench.add_argument("--ablation-k", type=positive_ints, default=(3, 5), help="kNN votes over centroids")
    bench.add_argument("--sweep-sizes", type=positive_ints, default=(1_000, 3_000, 10_000, 30_000, 100_000),
                       help="database images of the random-data sweep")
    bench.add_argument("--sweep-features", type=positive_int, default=100, help="DELF features per sweep image")
    bench.add_argument("--sweep-queries", type=positive_int, default=20)
    bench.add_argument("--timing-images", type=positive_int, default=8, help="images timed in the features stage")
    bench.add_argument("--timing-queries", type=positive_int, default=50, help="queries timed per method, one core")
    bench.add_argument("--out", default="bench/centroid-vs-delf.json")
    bench.add_argument("--plot", default="bench/centroid-vs-delf.png")
    bench.set_defaults(run=_cmd_bench, output_folder="workdir")
