"""`lmkcomp bench executors`: `extract-local` (SIFT) and `verify` (`fast`) under each executor,
with their artifacts checked byte for byte against one local process.

Variants, in table order (`VARIANTS`):

- `local 1 process`, `local 2 processes` (`LocalExecutor`);
- `ray 1 node x 1 CPU`, `ray 1 node x 2 CPUs`, `ray 2 nodes x 1 CPU`: Ray clusters the bench
  starts on this machine for the variant (`lmkcomp.bench.raycluster`, each node its own
  `ray start` processes) and stops by process id after it.

Each variant runs in a fresh process (`run_variant`), which connects to its cluster (untimed:
a command connects once), then times `extract_local_split` over the first `images` train images
(shards of `shard_size`, one task each) and `verify_pairs` over the same pair list (chunks of
`chunk_size`, one task each). Every variant verifies the features the first variant extracted,
so its pair table must equal the first's; its own feature store must too. Every process that
computes has one BLAS / OpenCV thread (the driver of `local 1 process` included). Timings
include what a user waits for: a local pool's processes, spawned anew for each stage, and Ray's
workers, started by the first stage and kept for the second, with its scheduling; not the
cluster's own start (a cluster is up before a command runs).

Pairs: `pairs_per_query` seeded random candidates (other images of the set) for each image in
turn, until `pairs` pairs, in query order as `lmkcomp verify` expects from a kNN list.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pandas as pd

from lmkcomp.bench.common import report, run_variant
from lmkcomp.checks import positive_int
from lmkcomp.data.layout import LandmarkData
from lmkcomp.errors import UserInputError

#: name -> (executor, local workers, CPUs of each Ray node); the first is the reference
VARIANTS: dict[str, tuple[str, int, tuple[int, ...]]] = {
    "local 1 process": ("local", 1, ()),
    "local 2 processes": ("local", 2, ()),
    "ray 1 node x 1 CPU": ("ray", 1, (1,)),
    "ray 1 node x 2 CPUs": ("ray", 2, (2,)),
    "ray 2 nodes x 1 CPU": ("ray", 2, (1, 1)),
}
REFERENCE = "local 1 process"
#: (numerator, denominator, what the ratio measures) printed under the table
COMPARISONS = (
    ("ray 1 node x 1 CPU", "local 1 process", "Ray's overhead on one core"),
    ("ray 1 node x 2 CPUs", "local 2 processes", "Ray's overhead on two cores"),
    ("ray 2 nodes x 1 CPU", "ray 1 node x 1 CPU", "two Ray nodes over one (<= 2x: two cores)"),
)
STAGES = (("extract_images_per_s", "extract-local"), ("verify_pairs_per_s", "verify"))
#: the local-feature extractor and verification preset measured
EXTRACTOR = ("sift", {"max_features": 1000})
VERIFY_PRESET = "fast"


def bench_pairs(ids: list[str], pairs: int, pairs_per_query: int, seed: int) -> pd.DataFrame:
    """`query_id, candidate_id`: each image of `ids` in turn with `pairs_per_query` distinct others
    drawn with `seed`, cut at `pairs` rows (the images are cycled when there are more pairs)."""
    if len(ids) <= pairs_per_query:
        raise UserInputError(f"{len(ids)} images: need more than {pairs_per_query} (pairs per query) to pair them")
    rng = np.random.default_rng(seed)
    rows = []
    for turn in range(-(-pairs // pairs_per_query)):
        query = turn % len(ids)
        others = rng.choice(len(ids) - 1, size=pairs_per_query, replace=False)
        rows += [(ids[query], ids[other + (other >= query)]) for other in others]
    return pd.DataFrame(rows[:pairs], columns=["query_id", "candidate_id"])


def artifact_digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file of an output folder but its lock files (names starting with a dot)."""
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.iterdir()) if path.is_file() and not path.name.startswith(".")}


def _run_one(spec: dict) -> dict:
    """One variant, in this (fresh) process: the timings of both stages, as `_variant_row` reads them."""
    from lmkcomp.executors import connect_ray, create_executor
    from lmkcomp.local.extract import extract_local_split
    from lmkcomp.local.extractors import create_local_extractor
    from lmkcomp.local.pairs import verify_pairs
    from lmkcomp.local.store import LocalFeatureStore
    from lmkcomp.local.verify import VERIFY_PRESETS
    from lmkcomp.workers import one_thread_each

    # One thread, as in every pool or Ray worker: `local 1 process` computes in this process, and
    # BLAS's default two threads here ran verification 6x slower on this shared machine.
    one_thread_each()
    executor = create_executor(spec["executor"], spec["workers"], spec.get("address"))
    result = {"connect_s": 0.0}
    if spec["executor"] == "ray":
        started = time.perf_counter()
        connect_ray(spec["address"])
        result["connect_s"] = time.perf_counter() - started
    ids = Path(spec["ids"]).read_text().split()
    name, options = EXTRACTOR
    started = time.perf_counter()
    extract_local_split(LandmarkData(spec["data"], spec["layout"]), "train", spec["features"],
                        create_local_extractor(name, **options), ids=ids, shard_size=spec["shard_size"],
                        progress=False, executor=executor)
    result["extract_s"] = time.perf_counter() - started
    store = LocalFeatureStore(spec["verify_features"])
    started = time.perf_counter()
    verify_pairs(spec["pairs"], store, store, spec["table"], VERIFY_PRESETS[VERIFY_PRESET],
                 chunk_size=spec["chunk_size"], progress=False, executor=executor)
    result["verify_s"] = time.perf_counter() - started
    return result


def _variant_row(name: str, spec: dict, images: int, pairs: int) -> dict:
    executor, workers, nodes = VARIANTS[name]
    if executor == "ray":
        from lmkcomp.bench.raycluster import running_cluster

        cluster_context = running_cluster(nodes)
    else:
        cluster_context = nullcontext()
    with cluster_context as cluster:
        spec = {**spec, "executor": executor, "workers": workers, "address": cluster.address if cluster else None}
        row = run_variant(__name__, spec, timeout=3600)
    row = {key: value for key, value in row.items() if key not in ("ids", "data", "layout", "pairs", "verify_features")}
    row["variant"] = name
    row["cpus"] = " + ".join(map(str, nodes)) if nodes else str(workers)
    if "error" not in row:
        row["extract_images_per_s"] = images / row["extract_s"]
        row["verify_pairs_per_s"] = pairs / row["verify_s"]
    return row


def run_executors_benchmark(data: LandmarkData, workdir: str | Path, out: str | Path = "bench/executors.json",
                            images: int = 1000, pairs: int = 20000, pairs_per_query: int = 10, shard_size: int = 50,
                            chunk_size: int = 500, repeats: int = 2, seed: int = 0, progress: bool = True) -> str:
    """Time both stages under every variant of `VARIANTS`, `repeats` rounds of all variants in
    turn, on the first `images` train images of `data` and `pairs` pairs among them
    (`bench_pairs`); outputs go under `workdir` (replaced). A variant's rate of each stage is its
    fastest round (other jobs on a shared machine only ever slow a round down); its artifacts
    must be identical to the first round of the first variant in every round.
    Writes JSON to `out` (one row per variant: rates, ratios, `identical`, and every round's
    seconds under `runs`); returns the printed table and the comparisons under it."""
    import shutil

    images, pairs = positive_int("images", images), positive_int("pairs", pairs)
    repeats = positive_int("repeats", repeats)
    ids = data.split_ids("train")[:images]
    if len(ids) < images:
        raise UserInputError(f"{data.root}: {len(ids)} train images, fewer than --images {images}")
    workdir = Path(workdir).resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    (workdir / "ids.txt").write_text("\n".join(ids) + "\n")
    bench_pairs(ids, pairs, pairs_per_query, seed).to_csv(workdir / "pairs.csv", index=False)
    load_at_start = os.getloadavg()[0]
    base = {"ids": str(workdir / "ids.txt"), "data": str(data.root.resolve()), "layout": data.layout.name,
            "pairs": str(workdir / "pairs.csv"), "shard_size": shard_size, "chunk_size": chunk_size,
            "verify_features": str(workdir / "0-0" / "features")}
    runs = []
    for turn in range(repeats):
        for number, name in enumerate(VARIANTS):
            folder = workdir / f"{turn}-{number}"
            spec = {**base, "features": str(folder / "features"), "table": str(folder / "table")}
            if progress:
                print(f"round {turn + 1}/{repeats}: {name} ...", file=sys.stderr, flush=True)
            run = _variant_row(name, spec, len(ids), pairs)
            if "error" not in run:
                run["digests"] = {stage: artifact_digests(folder / stage) for stage in ("features", "table")}
            runs.append(run)
    rows = _fastest_rounds(runs)
    title = (f"bench executors: {len(ids)} train images of {data.root} (SIFT, shards of {shard_size}), {pairs} "
             f"{VERIFY_PRESET} pairs (chunks of {chunk_size}), fastest of {repeats} rounds; load average "
             f"{load_at_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end "
             f"(ratio: verify pairs/s over {REFERENCE})")
    columns = [("variant", "variant"), ("cpus", "CPUs"), ("extract_images_per_s", "extract img/s"),
               ("extract_ratio", "extract ratio"), ("verify_pairs_per_s", "verify pairs/s"),
               ("identical", "byte-identical")]
    table = report(title, rows, columns, out, ratio_of="verify_pairs_per_s")
    return "\n".join([table, *comparison_lines(rows)])


def _identical(run: dict, reference: dict) -> str:
    """"yes" when `run`'s artifacts have `reference`'s digests, else "NO: " and the first files that differ."""
    differing = [f"{stage}/{name}" for stage, files in reference["digests"].items()
                 for name in sorted(set(files) | set(run["digests"][stage]))
                 if files.get(name) != run["digests"][stage].get(name)]
    return "yes" if not differing else "NO: " + ", ".join(differing[:3])


def _fastest_rounds(runs: list[dict]) -> list[dict]:
    """One row per variant, in order: each stage's fastest round, `identical` ("yes" when every
    round matched the first run's artifacts, else the first difference; "-" when a round
    failed), `extract_ratio` against the first variant, and every round under `runs`."""
    reference = runs[0]
    rows: dict[str, dict] = {}
    for run in runs:
        row = rows.setdefault(run["variant"], {"variant": run["variant"], "cpus": run["cpus"], "identical": "yes",
                                               "runs": []})
        row["runs"].append(run)
        if "error" in run or "error" in reference:
            row["identical"] = "-"
            row.setdefault("error", run.get("error") or reference.get("error"))
            continue
        if row["identical"] == "yes":
            row["identical"] = _identical(run, reference)
        for key, _ in STAGES:
            row[key] = max(row.get(key, 0.0), run[key])
    first = next(iter(rows.values()))
    for row in rows.values():
        if "error" not in row and "error" not in first:
            row["extract_ratio"] = f"{row['extract_images_per_s'] / first['extract_images_per_s']:.2f}x"
    return list(rows.values())


def comparison_lines(rows: list[dict]) -> list[str]:
    """One line per entry of `COMPARISONS` whose two variants both ran: each stage's rate ratio."""
    by_name = {row["variant"]: row for row in rows if "error" not in row}
    lines = []
    for numerator, denominator, meaning in COMPARISONS:
        if numerator in by_name and denominator in by_name:
            ratios = ", ".join(f"{stage} {by_name[numerator][key] / by_name[denominator][key]:.2f}x"
                               for key, stage in STAGES)
            lines.append(f"{meaning}: {numerator} / {denominator}: {ratios}")
    return lines


if __name__ == "__main__":
    print(json.dumps(_run_one(json.loads(sys.argv[1]))))
