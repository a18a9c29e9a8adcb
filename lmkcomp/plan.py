"""`lmkcomp plan`: the wall time of the heavy full-GLDv2 stages on a cluster, projected from
measured per-unit rates.

Stages (`plan_stages`), each `work / (rate per unit x units per node x nodes)`:

- embeddings: the global descriptors of train + index + test (5,012,248 images), on the
  GPUs (images/s per GPU), or on the cores when there is no GPU rate or no GPU;
- kNN train vs train (k 100): 4,132,914 queries against 4,132,914 rows, exact streamed search
  on the cores. A rate measured against ``D_bench`` rows becomes ``rate * D_bench / D`` (a
  scan of every row per query), as `lmkcomp kaggle estimate` scales it;
- local features of the train images (SIFT, on the cores), which verification reads;
- cleaning verification: `verify_pairs` pairs (400 M by default, the issue's figure: about
  100 same-label neighbours per train image), on the cores.

Assumptions, printed with the table: every stage is cut into many independent shards, so its
rate grows linearly with nodes and with a node's cores (the executors bench measures how far
two nodes are from 2x here); a per-core rate was measured with one thread per process, each
core running its own process. Not modelled: the shared filesystem's read bandwidth (extraction
reads every JPEG once; every kNN node reads the whole train store and must hold it in its page
cache), image decoding keeping a GPU fed, Ray's scheduling and start-up (seconds per stage),
and stragglers in the last wave of shards.

Default rates are this kit's README measurements on a 2-core machine (`DEFAULT_RATES`); each can
be replaced by a benchmark's JSON output.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from lmkcomp.errors import UserInputError
from lmkcomp.fileio import atomic_write
from lmkcomp.kaggle.estimate import GLDV2_IMAGES, bench_rows, pick_row, verify_rate_from_bench

#: the issue's estimate of the pairs GLDv2 cleaning verifies (~100 same-label neighbours each)
DEFAULT_VERIFY_PAIRS = 400_000_000


@dataclass(frozen=True)
class Cluster:
    """`nodes` machines of `cores` CPU cores and `gpus` GPUs each."""

    nodes: int
    cores: int
    gpus: int = 0


@dataclass(frozen=True)
class Rate:
    """`per_unit` items per second on one unit (``core`` or ``gpu``), and where it comes from.
    `database_size`: for search, the rows it was measured against (None: not a search rate)."""

    per_unit: float
    unit: str
    source: str
    database_size: int | None = None


@dataclass(frozen=True)
class Rates:
    """The measured rates a plan needs. `extract_gpu` is None when no GPU was measured."""

    extract_core: Rate
    extract_gpu: Rate | None
    search: Rate
    local_features: Rate
    verify: Rate
    #: two Ray nodes over one, measured by `lmkcomp bench executors` (None: not given)
    two_node_speedup: dict[str, float] = field(default_factory=dict)


#: README figures (this 2-core machine): `bench extract` bf16 + channels_last, ResNet-18 at 224 px,
#: 3 scales + flip, 24.8 images/s on 2 threads; `bench scale` flat train-vs-train, 30.4 queries/s
#: on 2 threads against 4,132,914 rows; `bench verify` fast, 1,793 pairs/s on one thread;
#: `bench executors` SIFT (1,000 features) on the small preset's 256 px images, two pool processes
#: of one thread each, 140.4 images/s
DEFAULT_RATES = Rates(
    extract_core=Rate(24.8 / 2, "core", "README: bench extract, bf16 + channels_last, ResNet-18 224 px, 3 scales + "
                      "flip, 24.8 images/s on 2 cores"),
    extract_gpu=None,
    search=Rate(30.4 / 2, "core", "README: bench scale, flat train-vs-train, 30.4 queries/s on 2 cores",
                GLDV2_IMAGES["train"]),
    local_features=Rate(140.4 / 2, "core", "README: bench executors, SIFT (1,000 features) at the synthetic data's "
                        "256 px, local 2 processes of one thread, 140.4 images/s (GLDv2's photos are larger: "
                        "SIFT's time grows with their pixels)"),
    verify=Rate(1793.0, "core", "README: bench verify, fast, 1,793 pairs/s on one core"),
)


@dataclass(frozen=True)
class Workload:
    """The full GLDv2 sizes and the cleaning pairs."""

    train: int = GLDV2_IMAGES["train"]
    index: int = GLDV2_IMAGES["index"]
    test: int = GLDV2_IMAGES["test"]
    knn: int = 100
    verify_pairs: int = DEFAULT_VERIFY_PAIRS

    @classmethod
    def from_options(cls, verify_pairs: int | None = None, knn: int = 100,
                     max_neighbours: int | None = None) -> "Workload":
        """`verify_pairs` when given, else train x min(`knn`, `max_neighbours`) when
        `max_neighbours` is given (every train image with that many same-label neighbours: an
        upper bound), else `DEFAULT_VERIFY_PAIRS`."""
        if verify_pairs is None:
            verify_pairs = cls.train * min(knn, max_neighbours) if max_neighbours else DEFAULT_VERIFY_PAIRS
        return cls(knn=knn, verify_pairs=verify_pairs)


@dataclass(frozen=True)
class PlannedStage:
    """One stage: `items` of `what` at `rate`, and its hours on each cluster (in order)."""

    name: str
    items: int
    what: str
    rate: Rate
    #: rate per unit actually used (search: scaled to the database searched)
    per_unit: float
    hours: list[float]


def _units(cluster: Cluster, unit: str) -> int:
    return cluster.nodes * (cluster.gpus if unit == "gpu" else cluster.cores)


def plan_stages(workload: Workload, rates: Rates, clusters: Sequence[Cluster]) -> list[PlannedStage]:
    """The stages of the module docstring, timed on each of `clusters`. Embeddings run on the
    GPUs when every cluster has one and a GPU rate is known, else on the cores."""
    if not clusters:
        raise UserInputError("--nodes: give one node count at least")
    on_gpu = rates.extract_gpu is not None and all(cluster.gpus > 0 for cluster in clusters)
    extract = rates.extract_gpu if on_gpu else rates.extract_core
    search_per_core = rates.search.per_unit * (rates.search.database_size or workload.train) / workload.train
    planned = [
        ("embeddings train + index + test", workload.train + workload.index + workload.test, "images", extract,
         extract.per_unit),
        (f"kNN train vs train (k {workload.knn})", workload.train, "queries", rates.search, search_per_core),
        ("local features train", workload.train, "images", rates.local_features, rates.local_features.per_unit),
        ("verify cleaning pairs", workload.verify_pairs, "pairs", rates.verify, rates.verify.per_unit),
    ]
    return [PlannedStage(name, items, what, rate, per_unit,
                         [items / (per_unit * _units(cluster, rate.unit)) / 3600 for cluster in clusters])
            for name, items, what, rate, per_unit in planned]


def _hours(hours: float) -> str:
    return f"{hours * 60:.1f} min" if hours < 1 else f"{hours:.1f} h"


def format_plan(stages: Sequence[PlannedStage], clusters: Sequence[Cluster], rates: Rates,
                workload: Workload) -> str:
    """The table (one column of wall time per cluster, a total row), each rate's source, and the
    assumptions."""
    header = ["stage", "work", "rate per unit"] + [
        f"{c.nodes} node{'s' if c.nodes > 1 else ''} x {c.cores} cores" + (f" / {c.gpus} GPU" if c.gpus else "")
        for c in clusters]
    rows = [header]
    for stage in stages:
        rows.append([stage.name, f"{stage.items:,} {stage.what}", f"{stage.per_unit:,.1f}/s per {stage.rate.unit}",
                     *map(_hours, stage.hours)])
    rows.append(["total (one after another)", "", "", *(_hours(sum(s.hours[i] for s in stages))
                                                      for i in range(len(clusters)))])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.append("rates:")
    lines += [f"  {stage.name}: {stage.rate.source}" for stage in stages]
    if stages[0].rate.unit == "core" and any(c.gpus for c in clusters):
        lines.append("  (no GPU rate given: embeddings projected on the cores; pass --extract-bench from a GPU "
                     "machine or --extract-images-per-gpu)")
    lines.append("assumptions: linear in nodes and in each node's cores (independent shards, one process per "
                 "core); not modelled: shared-filesystem bandwidth, image decoding feeding the GPU, each kNN node "
                 "holding the train store in its page cache, Ray start-up and the last wave's stragglers")
    for stage, speedup in rates.two_node_speedup.items():
        lines.append(f"  measured here: two Ray nodes over one, {stage}: {speedup:.2f}x (linear would be 2x)")
    return "\n".join(lines)


def write_plan(out: str | Path, stages: Sequence[PlannedStage], clusters: Sequence[Cluster], rates: Rates,
               workload: Workload) -> None:
    """The plan as JSON: the workload, the clusters, and each stage's rate and hours per cluster."""
    with atomic_write(out, "w", encoding="utf-8") as handle:
        json.dump({"workload": asdict(workload), "clusters": [asdict(c) for c in clusters],
                   "two_node_speedup": rates.two_node_speedup,
                   "stages": [{"name": s.name, "items": s.items, "unit": s.what, "rate_per_unit": s.per_unit,
                               "rate_unit": s.rate.unit, "rate_source": s.rate.source,
                               "hours": s.hours} for s in stages],
                   "total_hours": [sum(s.hours[i] for s in stages) for i in range(len(clusters))]},
                  handle, indent=2)
        handle.write("\n")


# --------------------------------------------------------------------------------------------
# Rates from the benchmarks' JSON files


def _threads(path: str | Path) -> int:
    """The threads a benchmark ran with (its `machine.threads`; 1 when not recorded)."""
    threads = json.loads(Path(path).read_text()).get("machine", {}).get("threads", 1)
    return threads if isinstance(threads, int) and threads > 0 else 1


def extract_rate(path: str | Path) -> tuple[Rate, bool]:
    """The fastest row of `lmkcomp bench extract`'s JSON: per GPU when it ran on one (the JSON's
    machine names a GPU and the row's device is cuda), else per core (its rate / threads)."""
    row = pick_row(path, bench_rows(path, "images_per_s"), "images_per_s", "name", None)
    machine = json.loads(Path(path).read_text()).get("machine", {})
    on_gpu = "gpu" in machine and str(row.get("device", "cuda")).startswith("cuda")
    rate = row["images_per_s"] if on_gpu else row["images_per_s"] / _threads(path)
    source = f"{path}: {row.get('name')}, {row['images_per_s']:,.1f} images/s" + (
        f" on {machine['gpu']}" if on_gpu else f" on {_threads(path)} threads")
    return Rate(rate, "gpu" if on_gpu else "core", source), on_gpu


def search_rate(path: str | Path) -> Rate:
    """Queries/s per core of the largest measured database in `lmkcomp bench scale`'s JSON
    (`database_rows`) or `lmkcomp bench search`'s (`size`; rows it projected are skipped)."""
    rows = [row for row in bench_rows(path, "queries_per_s") if not row.get("projected")]
    sized = [(row.get("database_rows") or row.get("size"), row) for row in rows]
    sized = [(size, row) for size, row in sized if isinstance(size, int) and size > 0]
    if not sized:
        raise UserInputError(f"{path}: no measured search row with a database size")
    size, row = max(sized, key=lambda item: item[0])
    threads = _threads(path)
    return Rate(row["queries_per_s"] / threads, "core",
                f"{path}: {row.get('spec') or row.get('variant')}, {row['queries_per_s']:,.1f} queries/s on "
                f"{threads} threads against {size:,} rows", size)


def executors_rates(path: str | Path) -> tuple[Rate, dict[str, float]]:
    """From `lmkcomp bench executors`' JSON: SIFT images/s per core, and the two-node speed-up of
    each stage (`ray 2 nodes x 1 CPU` over `ray 1 node x 1 CPU`) when both ran.

    The per-core rate is half that of `local 2 processes` when it ran, since each pool process is
    held to one thread, else that of `local 1 process` (which may use a second core through
    OpenCV's own threads, so it overstates a core)."""
    rows = {row.get("variant"): row for row in bench_rows(path, "extract_images_per_s")}
    if "local 2 processes" in rows:
        rate = rows["local 2 processes"]["extract_images_per_s"]
        local = Rate(rate / 2, "core", f"{path}: SIFT, local 2 processes of one thread, {rate:,.1f} images/s")
    elif "local 1 process" in rows:
        local = Rate(rows["local 1 process"]["extract_images_per_s"], "core", f"{path}: SIFT, local 1 process")
    else:
        raise UserInputError(f"{path}: no measured 'local 1 process' or 'local 2 processes' row")
    speedup = {}
    two, one = rows.get("ray 2 nodes x 1 CPU"), rows.get("ray 1 node x 1 CPU")
    if two and one:
        speedup = {stage: two[key] / one[key] for key, stage in
                   (("extract_images_per_s", "extract-local"), ("verify_pairs_per_s", "verify"))}
    return local, speedup


def rates_from(extract_bench: str | None = None, extract_images_per_gpu: float | None = None,
               search_bench: str | None = None, verify_bench: str | None = None,
               executors_bench: str | None = None, defaults: Rates = DEFAULT_RATES) -> Rates:
    """`defaults`, with each rate a given benchmark file (or figure) measured replacing its own."""
    extract_core, extract_gpu = defaults.extract_core, defaults.extract_gpu
    if extract_bench:
        rate, on_gpu = extract_rate(extract_bench)
        extract_gpu, extract_core = (rate, extract_core) if on_gpu else (extract_gpu, rate)
    if extract_images_per_gpu:
        extract_gpu = Rate(extract_images_per_gpu, "gpu", "--extract-images-per-gpu")
    search = search_rate(search_bench) if search_bench else defaults.search
    verify = defaults.verify
    if verify_bench:
        pairs_per_s, source = verify_rate_from_bench(verify_bench, "fast")
        verify = Rate(pairs_per_s, "core", source)
    local, speedup = (defaults.local_features, defaults.two_node_speedup)
    if executors_bench:
        local, speedup = executors_rates(executors_bench)
    return Rates(extract_core, extract_gpu, search, local, verify, speedup)
