"""`lmkcomp search` (the kNN table of one embedding store against another) and
`lmkcomp bench search` (queries/s, memory and recall of the search backends)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lmkcomp.commands.args import (
    create_executor_from,
    device_options,
    executor_options,
    positive_float,
    positive_int,
    positive_ints,
    quiet_options,
    shard_options,
    workers_options,
)
from lmkcomp.errors import UserInputError


def read_id_list(path: str) -> list[str]:
    """Image ids from `path`: the `id` column of a CSV (e.g. train.csv), else one id per line
    (blank lines skipped). A line that is no image id is an error naming its line, without
    showing it (the file may be anything)."""
    from lmkcomp.data.gldv2 import is_valid_id, read_id_column

    if path.endswith(".csv"):
        return read_id_column(path)
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"{path}: unreadable id list: {exc}") from None
    ids = []
    for number, line in enumerate(lines, start=1):
        image_id = line.strip()
        if not image_id:
            continue
        if not is_valid_id(image_id):
            raise UserInputError(f"{path}:{number}: not an image id (an id list holds one id of 16 hexadecimal "
                                 "characters per line)")
        ids.append(image_id)
    return ids


def _explicit(device: str) -> str | None:
    """`--device`, or None for auto: the searchers' own default, which is auto, and which the exact
    numpy / flat searchers (that take no device) and a spec naming one (torch:cuda) accept."""
    return None if device == "auto" else device


def _cmd_search(args: argparse.Namespace) -> int:
    from lmkcomp.features.store import EmbeddingStore
    from lmkcomp.search import search_stores

    executor = create_executor_from(args)
    options = {key: value for key, value in (("nprobe", args.nprobe), ("device", _explicit(args.device)),
                                             ("memory_mb", args.memory_mb)) if value is not None}
    table = search_stores(
        EmbeddingStore(args.queries), EmbeddingStore(args.database), args.out, k=args.k, spec=args.index_spec,
        progress=not args.quiet, query_ids=read_id_list(args.query_ids) if args.query_ids else None,
        database_ids=read_id_list(args.database_ids) if args.database_ids else None,
        shard_size=args.shard_size, seed=args.seed, executor=executor, **options,
    )
    print(f"{args.out}: {len(table)} queries x {table.k} neighbours among {len(table.database_ids)} "
          f"database images ({args.index_spec})")
    return 0


def _cmd_bench_search(args: argparse.Namespace) -> int:
    from lmkcomp.bench.search import VARIANTS, run_search_benchmark

    print(run_search_benchmark(args.sizes, args.num_queries, args.k, args.dim, args.variants or tuple(VARIANTS),
                               args.nprobe, _explicit(args.device), args.seed, args.project_to, args.out, args.repeats))
    print(f"wrote {args.out}")
    return 0


def _cmd_bench_scale(args: argparse.Namespace) -> int:
    from lmkcomp.bench.scale import run_scale_benchmark

    print(run_scale_benchmark(args.workdir, args.num_train, args.num_index, args.num_test, args.dim, args.sample, args.k, args.index_spec,
                              args.memory_mb, args.clusters, args.noise, args.seed, args.out, progress=not args.quiet))
    print(f"wrote {args.out}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    search = commands.add_parser("search", parents=[
        executor_options(),
        device_options("torch / faiss searchers"),
        workers_options("search processes, each streaming the "
            "database (exact searchers; a trained index is searched in this process)"),
        shard_options(10_000, "queries per table shard (one task "
            "each)"),
        quiet_options()], help="k nearest database images of every query image (embedding stores) "
                                 "into a resumable kNN table")
    search.add_argument("--queries", required=True, help="embedding store of the query images")
    search.add_argument("--database", required=True, help="embedding store of the database images")
    search.add_argument("--out", required=True, help="kNN table folder (resumable)")
    search.add_argument("--k", type=positive_int, default=100, help="neighbours per query")
    search.add_argument("--index-spec", default="flat", help="searcher spec: flat (exact, streaming the database from its "
                        "store; faiss's kernel for large query blocks), numpy, torch, torch:cuda, or a faiss "
                        "index-factory string held in memory: Flat, IVF1024,Flat, IVF1024,PQ32")
    search.add_argument("--memory-mb", type=positive_float, metavar="MB",
                        help="exact searchers (flat, numpy, torch): memory in MiB; a database that fits half of it "
                        "is kept, a larger one streamed in blocks sized by the other half (default: 512)")
    search.add_argument("--nprobe", type=positive_int, help="IVF indexes: inverted lists scanned per query")
    search.add_argument("--query-ids", metavar="FILE", help="search only these query images (one id per line, "
                        "or a CSV with an id column)")
    search.add_argument("--database-ids", metavar="FILE", help="search among these database images only (one id "
                        "per line, or a CSV with an id column such as train.csv)")
    search.add_argument("--seed", type=int, default=0, help="training sample of IVF / PQ indexes")
    search.set_defaults(run=_cmd_search, output_folder="out")


def register_benches(benches: argparse._SubParsersAction) -> None:
    bench = benches.add_parser("search", parents=[device_options("torch / faiss variants")],
                               help="queries/s, peak memory and recall of exact and approximate search "
                               "on random unit vectors")
    bench.add_argument("--sizes", type=positive_ints, default=[10_000, 100_000, 1_000_000], help="database sizes")
    bench.add_argument("--num-queries", type=positive_int, default=1000, help="query vectors searched")
    bench.add_argument("--k", type=positive_int, default=100)
    bench.add_argument("--dim", type=positive_int, default=512)
    bench.add_argument("--variants", type=lambda text: text.split(","), default=None,
                       help="comma-separated subset of flat,faiss-flat,numpy,torch,ivf-flat,ivf-pq (default all)")
    bench.add_argument("--nprobe", type=positive_int, default=16, help="IVF variants")
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--project-to", type=positive_int, metavar="SIZE",
                       help="add exact-search rows extrapolated linearly to this database size, marked projected")
    bench.add_argument("--repeats", type=positive_int, default=3, help="search calls per variant; the fastest counts")
    bench.add_argument("--out", default="bench/search.json", help="JSON output")
    bench.set_defaults(run=_cmd_bench_search)

    from lmkcomp.bench.scale import GLDV2_INDEX, GLDV2_TEST, GLDV2_TRAIN

    scale = benches.add_parser("scale", parents=[quiet_options()], help="GLDv2-size rehearsal: writes clustered float16 stores of GLDv2's sizes, "
                               "then times train-vs-train and test-vs-index kNN on query samples and projects the "
                               "full searches")
    scale.add_argument("--workdir", default="runs/bench-scale", help="where the stores are written (reused)")
    scale.add_argument("--num-train", type=positive_int, default=GLDV2_TRAIN, help="train store rows")
    scale.add_argument("--num-index", type=positive_int, default=GLDV2_INDEX, help="index store rows")
    scale.add_argument("--num-test", type=positive_int, default=GLDV2_TEST, help="test store rows")
    scale.add_argument("--dim", type=positive_int, default=512)
    scale.add_argument("--sample", type=positive_int, default=20_000, help="queries searched per search (seeded)")
    scale.add_argument("--k", type=positive_int, default=100)
    scale.add_argument("--index-spec", default="flat", help="searcher spec, as lmkcomp search --index-spec")
    scale.add_argument("--memory-mb", type=positive_float, help="exact searchers' memory budget (default: theirs)")
    scale.add_argument("--clusters", type=positive_int, default=65_536, help="landmark centres of the data")
    scale.add_argument("--noise", type=positive_float, default=0.05, help="per-dimension deviation around a centre")
    scale.add_argument("--seed", type=int, default=0)
    scale.add_argument("--out", default="bench/scale.json", help="JSON output")
    scale.set_defaults(run=_cmd_bench_scale, output_folder="workdir")
