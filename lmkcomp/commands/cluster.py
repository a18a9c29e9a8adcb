"""`lmkcomp bench executors` (the executors measured against each other) and `lmkcomp plan`
(the full-GLDv2 stages projected onto a cluster from measured rates)."""

from __future__ import annotations

import argparse

from lmkcomp.commands.args import (
    data_options,
    positive_float,
    positive_int,
    positive_ints,
    quiet_options,
    shard_options,
)


def _cmd_bench_executors(args: argparse.Namespace) -> int:
    from lmkcomp.bench.executors import run_executors_benchmark
    from lmkcomp.data.layout import LandmarkData

    print(run_executors_benchmark(LandmarkData(args.data, args.layout), args.workdir, args.out, images=args.images,
                                  pairs=args.num_pairs, shard_size=args.shard_size, chunk_size=args.chunk_size,
                                  repeats=args.repeats, seed=args.seed, progress=not args.quiet))
    print(f"wrote {args.out}")
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from lmkcomp.plan import Cluster, Workload, format_plan, plan_stages, rates_from, write_plan

    rates = rates_from(extract_bench=args.extract_bench, extract_images_per_gpu=args.extract_images_per_gpu,
                       search_bench=args.search_bench, verify_bench=args.verify_bench,
                       executors_bench=args.executors_bench)
    workload = Workload.from_options(verify_pairs=args.verify_pairs, knn=args.knn, max_neighbours=args.max_neighbours)
    clusters = [Cluster(nodes, args.cores, args.gpus) for nodes in args.nodes]
    stages = plan_stages(workload, rates, clusters)
    print(format_plan(stages, clusters, rates, workload))
    write_plan(args.out, stages, clusters, rates, workload)
    print(f"wrote {args.out}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    plan = commands.add_parser("plan", help="project the wall time of full-GLDv2 extraction, train-vs-train kNN "
                               "and cleaning verification on N nodes of C cores / G GPUs, from measured rates")
    plan.add_argument("--nodes", type=positive_ints, default=(1, 8, 32), help="node counts, e.g. 1,8,32")
    plan.add_argument("--cores", type=positive_int, default=16, help="CPU cores per node")
    plan.add_argument("--gpus", type=int, default=1, choices=range(0, 65), metavar="G",
                      help="GPUs per node (0: embeddings extracted on the cores)")
    plan.add_argument("--extract-bench", metavar="JSON", help="lmkcomp bench extract output (its fastest row; per GPU "
                      "when it ran on one, else per core)")
    plan.add_argument("--extract-images-per-gpu", type=positive_float,
                      help="embedding extraction images/s on one GPU (instead of --extract-bench)")
    plan.add_argument("--search-bench", metavar="JSON", help="lmkcomp bench scale or bench search output")
    plan.add_argument("--verify-bench", metavar="JSON", help="lmkcomp bench verify output (preset fast)")
    plan.add_argument("--executors-bench", metavar="JSON", help="lmkcomp bench executors output (SIFT images/s "
                      "of one process, and the measured two-node speed-up)")
    plan.add_argument("--verify-pairs", type=positive_int, help="cleaning pairs to verify (default 400 M, or train "
                      "images x --max-neighbours)")
    plan.add_argument("--knn", type=positive_int, default=100, help="neighbours searched per train image")
    plan.add_argument("--max-neighbours", type=positive_int,
                      help="same-label neighbours verified per train image (pairs: train x min(K, this))")
    plan.add_argument("--out", default="bench/plan.json", help="JSON output")
    plan.set_defaults(run=_cmd_plan)


def register_benches(benches: argparse._SubParsersAction) -> None:
    bench = benches.add_parser("executors", parents=[
        data_options("dataset root (its first --images train images are used)"),
        shard_options(50, "images per extraction task"),
        quiet_options()], help="extract-local and verify under local processes and Ray clusters "
                               "of one and two nodes started here; rates, ratios, byte-identical artifacts")
    bench.add_argument("--images", type=positive_int, default=1000, help="train images to extract SIFT features of")
    bench.add_argument("--num-pairs", type=positive_int, default=20000, help="pairs among them to verify (fast preset)")
    bench.add_argument("--chunk-size", type=positive_int, default=500, help="pairs per verification task")
    bench.add_argument("--repeats", type=positive_int, default=2,
                       help="rounds of every variant in turn; each stage's fastest round is reported")
    bench.add_argument("--seed", type=int, default=0, help="pair sampling seed")
    bench.add_argument("--workdir", default="runs/bench-executors", help="outputs of every variant (replaced)")
    bench.add_argument("--out", default="bench/executors.json", help="JSON output")
    bench.set_defaults(run=_cmd_bench_executors)
