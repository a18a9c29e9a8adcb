"""A Kaggle kernel's projected run time on the full GLDv2 sizes, from measured rates.

The kernel's stages run one after the other; each takes (work) / (rate):

- extraction: images / images per second (as `lmkcomp bench extract` measures it, with the
  scales and flips it was run with);
- kNN search of every test image: queries / queries per second at that database size. Exact
  search scans every database row, so a rate measured on ``D_bench`` rows becomes
  ``rate * D_bench / D`` on ``D`` rows (for an approximate index this is an upper bound);
- spatial verification of `verify_per_query` pairs per test image: local features of the test
  images and of the candidates (at most ``min(D, test * k)`` database images), then
  ``test * k`` pairs at (pairs per second per core) x cores.

The recognition database is the train set (GLDv2-clean, which the 2020/2021 recognition
competitions ship, unless told otherwise), the retrieval database the index set. Training and
image decoding of a real kernel are not included: the estimate is a floor to compare with the
limit, not a promise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lmkcomp.checks import positive_number
from lmkcomp.errors import UserInputError

#: GLDv2 split sizes, as published with the dataset (Weyand et al., CVPR 2020; GLDv2-clean: its repository)
GLDV2_IMAGES = {"train": 4_132_914, "train_clean": 1_580_470, "index": 761_757, "test": 117_577}
#: run-time limit of the 2020/2021 GLDv2 code competitions' kernels
KAGGLE_LIMIT_HOURS = 9.0
#: the database each task searches, and its default size
DATABASES = {"recognition": ("train", GLDV2_IMAGES["train_clean"]), "retrieval": ("index", GLDV2_IMAGES["index"])}


@dataclass(frozen=True)
class SearchRate:
    """Queries per second, measured against `database_size` rows (None: at the database searched)."""

    queries_per_s: float
    database_size: int | None = None

    def at(self, database_size: int) -> float:
        """Queries per second against `database_size` rows (exact search: linear in the rows)."""
        if self.database_size is None:
            return self.queries_per_s
        return self.queries_per_s * self.database_size / database_size


@dataclass(frozen=True)
class Rates:
    """Measured throughputs. Verification rates are needed only when pairs are verified."""

    extract_images_per_s: float
    search: SearchRate
    #: spatial verification pairs per second on one core
    verify_pairs_per_s: float | None = None
    #: local feature extraction images per second
    local_images_per_s: float | None = None
    #: verification processes (a Kaggle GPU kernel of the 2021 competitions had 2 CPU cores)
    cores: int = 2


@dataclass(frozen=True)
class Workload:
    """What a kernel does: a task on `test_images` queries against `database_images`."""

    task: str
    test_images: int = GLDV2_IMAGES["test"]
    #: train (recognition) or index (retrieval) images; None: the task's GLDv2 default
    database_images: int | None = None
    #: False when the database embeddings arrive precomputed in an attached dataset
    extract_database: bool = True
    #: pairs spatially verified per test image (recognition: top-k train neighbours;
    #: retrieval: re-ranking the top-k index images); 0 for none
    verify_per_query: int = 0


@dataclass(frozen=True)
class Stage:
    """One step of the kernel: `items` of `unit` at `rate` per second."""

    name: str
    items: int
    unit: str
    #: items per second
    rate: float

    @property
    def seconds(self) -> float:
        return self.items / self.rate


@dataclass(frozen=True)
class Estimate:
    """The stages of a workload, in order, and the kernel's limit."""

    workload: Workload
    stages: list[Stage]
    limit_seconds: float

    @property
    def total_seconds(self) -> float:
        return sum(stage.seconds for stage in self.stages)

    @property
    def over_limit(self) -> bool:
        return self.total_seconds > self.limit_seconds


def estimate_kernel(workload: Workload, rates: Rates, limit_hours: float = KAGGLE_LIMIT_HOURS) -> Estimate:
    """The stages of `workload` timed at `rates` (see the module docstring for each formula)."""
    if workload.task not in DATABASES:
        raise UserInputError(f"unknown task {workload.task!r}; expected one of {', '.join(DATABASES)}")
    database, default_size = DATABASES[workload.task]
    size = workload.database_images or default_size
    queries = workload.test_images
    extract = positive_number("extract images/s", rates.extract_images_per_s)
    stages = [Stage("extract test", queries, "images", extract)]
    if workload.extract_database:
        stages.append(Stage(f"extract {database}", size, "images", extract))
    positive_number("search queries/s", rates.search.queries_per_s)
    if rates.search.database_size is not None:
        positive_number("search database size", rates.search.database_size)
    stages.append(Stage(f"kNN test vs {database}", queries, "queries", rates.search.at(size)))
    k = workload.verify_per_query
    if k < 0:
        raise UserInputError(f"pairs verified per query must be >= 0, got {k}")
    if k:
        local = positive_number("local feature images/s (needed to verify pairs)", rates.local_images_per_s)
        pairs = positive_number("verification pairs/s (needed to verify pairs)", rates.verify_pairs_per_s)
        stages += [
            Stage("local features test", queries, "images", local),
            Stage(f"local features {database} candidates", min(size, queries * k), "images", local),
            Stage(f"verify {k} pairs per query", queries * k, "pairs", pairs * positive_number("cores", rates.cores)),
        ]
    return Estimate(workload, stages, positive_number("limit hours", limit_hours) * 3600.0)


def format_estimate(estimate: Estimate) -> str:
    """A table of the stages (work, rate, hours), the total against the limit, and a WARNING
    line when the total exceeds it."""
    rows = [("stage", "work", "rate /s", "hours")]
    for stage in estimate.stages:
        rows.append((stage.name, f"{stage.items:,} {stage.unit}", f"{stage.rate:,.1f}", f"{stage.seconds / 3600:.2f}"))
    total, limit = estimate.total_seconds / 3600, estimate.limit_seconds / 3600
    rows.append(("total", "", "", f"{total:.2f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.append(f"{total / limit:.0%} of the {limit:g} h limit")
    if estimate.over_limit:
        lines.append(f"WARNING: the projected {total:.2f} h exceed the {limit:g} h limit by {total - limit:.2f} h")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Rates from the benchmarks' JSON files (lmkcomp.bench.common.report writes {"rows": [...]})


def bench_rows(path: str | Path, rate_key: str) -> list[dict]:
    """The rows of a bench JSON (`lmkcomp bench ...`) that carry `rate_key`; a missing or
    malformed file, or one without such rows, is a user error naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: benchmark file not found")
    try:
        rows = json.loads(path.read_text())["rows"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UserInputError(f"{path}: not a benchmark JSON file ({exc})") from None
    measured = [row for row in rows
                if isinstance(row, dict) and isinstance(row.get(rate_key), (int, float)) and row[rate_key] > 0]
    if not measured:
        raise UserInputError(f"{path}: no row with a positive {rate_key}")
    return measured


def pick_row(path: str | Path, rows: list[dict], rate_key: str, key: str, value: str | None) -> dict:
    """The row whose `key` is `value`, or the one with the highest rate when `value` is None."""
    if value is None:
        return max(rows, key=lambda row: row[rate_key])
    for row in rows:
        if row.get(key) == value:
            return row
    known = ", ".join(str(row.get(key)) for row in rows)
    raise UserInputError(f"{path}: no measured {key} {value!r}; measured: {known}")


def extract_rate_from_bench(path: str | Path, variant: str | None = None) -> tuple[float, str]:
    """Images/s of `variant` (default: the fastest) in `lmkcomp bench extract`'s JSON, and a description."""
    row = pick_row(path, bench_rows(path, "images_per_s"), "images_per_s", "name", variant)
    tta = f"{len(row.get('scales', [1.0]))} scale(s)" + (" + flip" if row.get("flip") else "")
    return row["images_per_s"], f"{path}: {row['name']}, {row.get('backbone')} at {row.get('image_size')} px, {tta}"


def verify_rate_from_bench(path: str | Path, preset: str = "fast") -> tuple[float, str]:
    """Pairs/s per core of verification `preset` in `lmkcomp bench verify`'s JSON, and a description."""
    row = pick_row(path, bench_rows(path, "pairs_per_s"), "pairs_per_s", "preset", preset)
    return row["pairs_per_s"], f"{path}: preset {preset}"


def search_rate_from_bench(path: str | Path, variant: str = "torch") -> tuple[SearchRate, str]:
    """Queries/s of `variant` in `lmkcomp bench search`'s JSON at its largest measured database
    (rows it projected itself are skipped: `SearchRate.at` scales the measurement), and a description."""
    rows = [row for row in bench_rows(path, "queries_per_s") if not row.get("projected")]
    row = max((row for row in rows if row.get("variant") == variant), key=lambda row: row.get("size", 0), default=None)
    if row is None or not isinstance(row.get("size"), int):
        known = ", ".join(sorted({str(row.get("variant")) for row in rows}))
        raise UserInputError(f"{path}: no measured variant {variant!r} with a database size; measured: {known}")
    rate = SearchRate(row["queries_per_s"], row["size"])
    return rate, f"{path}: {variant} ({row.get('spec')}) at {row['size']:,} rows, scaled linearly"
