"""`lmkcomp bench scale`: a GLDv2-size rehearsal of the kNN searches on one machine.

It writes float16 embedding stores of GLDv2's sizes (by default 4,132,914 train and 761,757
index images, 512-d) with cluster structure, then runs, each in a fresh process, the two
searches that dominate a GLDv2 pipeline on seeded query samples against the full databases:

- `train-vs-train`: the kNN of train images among all train images (k = 100), the first step of
  Ozaki & Yokoo's cleaning;
- `test-vs-index`: the kNN of test queries among the index images (k = 100), retrieval's search.

Data: `clusters` landmark centres (unit vectors seeded by (seed, 2)); each database row is its
centre plus Gaussian noise of per-dimension deviation `noise`, L2-normalised, its centre drawn
uniformly, block by block from generators seeded by (seed, store, block). With the default
noise 0.05 (a noise vector of norm about 0.05 x sqrt(512) = 1.13) a row's cosine is about 0.66
to its own centre, 0.44 to another row of its cluster and about 0 across clusters: real
embeddings' structure (near neighbours of the same landmark), not uniform noise.

Per search: seconds, queries/s, the projected time of the full search (every train image, or
GLDv2's 117,577 test images) at that rate, the peak resident set (which counts the store's
memory-mapped pages the process touched, reclaimable page cache) and the peak anonymous
memory (what the process itself holds). Exact search time is linear in the number of queries,
so the projection is the sample's rate times the full count.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from lmkcomp.bench.common import peak_resident_mb, report, run_variant
from lmkcomp.checks import positive_int
from lmkcomp.errors import UserInputError
from lmkcomp.manifest import MANIFEST_NAME

GLDV2_TRAIN = 4_132_914
GLDV2_INDEX = 761_757
GLDV2_TEST = 117_577
GENERATION_BLOCK = 65536
#: store names and their seed stream
STORES = {"train": 0, "index": 1, "test": 3}


def cluster_centres(clusters: int, dim: int, seed: int) -> np.ndarray:
    """`clusters` random unit vectors (float32) seeded by (seed, 2)."""
    centres = np.random.default_rng([seed, 2]).standard_normal((clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    return centres


def clustered_rows(centres: np.ndarray, count: int, noise: float, seed: tuple[int, ...]) -> np.ndarray:
    """`count` rows: a uniformly drawn centre plus N(0, noise^2) per dimension, L2-normalised."""
    rng = np.random.default_rng(list(seed))
    rows = centres[rng.integers(0, len(centres), count)]
    rows += noise * rng.standard_normal(rows.shape, dtype=np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows


def write_clustered_store(directory: Path, name: str, count: int, centres: np.ndarray, noise: float, seed: int,
                          progress: bool = True) -> None:
    """The store `name` of `count` clustered rows in `directory` (resumed if a run was killed;
    kept as it is when complete)."""
    from tqdm import tqdm

    from lmkcomp.features.store import EmbeddingWriter

    meta = {"bench": "scale", "store": name, "seed": seed, "noise": noise, "clusters": len(centres)}
    writer = EmbeddingWriter(directory, [f"{row:016x}" for row in range(count)], centres.shape[1], dtype="float16",
                             shard_size=GENERATION_BLOCK, meta=meta)
    pending = writer.pending_shards()
    for block, rows in tqdm(pending, desc=f"write {name}", unit="shard", disable=not progress or not pending):
        writer.write_shard(block, clustered_rows(centres, rows.stop - rows.start, noise, (seed, STORES[name], block)))
    writer.finish()


def _measure(spec: dict) -> dict:
    """One search in this process: a seeded sample of the query store against the database store."""
    from lmkcomp.bench.common import AnonymousPeak
    from lmkcomp.features.store import EmbeddingStore
    from lmkcomp.search import search_stores

    queries, database = EmbeddingStore(spec["queries"]), EmbeddingStore(spec["database"])
    chosen = np.sort(np.random.default_rng([spec["seed"], 4]).choice(len(queries), spec["sample"], replace=False))
    with AnonymousPeak() as anonymous:
        started = time.perf_counter()
        search_stores(queries, database, spec["out"], k=spec["k"], spec=spec["spec"],
                      query_ids=[queries.ids[row] for row in chosen], progress=False, **spec["options"])
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "queries_per_s": spec["sample"] / seconds,
            "projected_hours": spec["full_queries"] / (spec["sample"] / seconds) / 3600,
            "peak_memory_mb": peak_resident_mb(), "anonymous_mb": anonymous.mb}


def run_scale_benchmark(workdir: str | Path = "runs/bench-scale", train: int = GLDV2_TRAIN, index: int = GLDV2_INDEX,
                        test: int = GLDV2_TEST, dim: int = 512, sample: int = 20_000, k: int = 100, spec: str = "flat",
                        memory_mb: float | None = None, clusters: int = 65_536, noise: float = 0.05, seed: int = 0,
                        out: str | Path = "bench/scale.json", progress: bool = True) -> str:
    """Write the stores in `workdir` (reused), run both searches, return the printed table."""
    for name, value in (("train", train), ("index", index), ("test", test), ("dim", dim), ("sample", sample),
                        ("k", k), ("clusters", clusters)):
        positive_int(name, value)
    if not noise > 0:
        raise UserInputError(f"noise must be positive, got {noise!r}")
    if sample > min(train, test):
        raise UserInputError(f"sample {sample} exceeds the {min(train, test)} rows of the query stores")
    if k > min(train, index):
        raise UserInputError(f"k {k} exceeds the {min(train, index)} rows of the databases")
    workdir = Path(workdir)
    centres = cluster_centres(clusters, dim, seed)
    for name, count in (("train", train), ("index", index), ("test", test)):
        write_clustered_store(workdir / name, name, count, centres, noise, seed, progress)
    del centres
    options = {} if memory_mb is None else {"memory_mb": memory_mb}
    rows = []
    for search, queries, database, full in (("train-vs-train", "train", "train", train),
                                            ("test-vs-index", "test", "index", test)):
        knn = workdir / f"knn-{search}-{sample}-k{k}-{spec.replace(',', '_')}"
        if (knn / MANIFEST_NAME).exists():
            shutil.rmtree(knn)  # a timed rerun starts from nothing
        row = run_variant("lmkcomp.bench.scale", {
            "search": search, "queries": str(workdir / queries), "database": str(workdir / database),
            "database_rows": train if database == "train" else index, "sample": sample, "full_queries": full, "k": k, "spec": spec, "options": options, "seed": seed, "out": str(knn)},
            timeout=24 * 3600)
        rows.append(row)
    title = (f"bench scale: {dim}-d float16 stores ({train:,} train, {index:,} index, {test:,} test; {clusters:,} clusters), "
             f"k {k}, spec {spec}; projected: the full query set at the sample's rate")
    columns = [("search", "search"), ("database_rows", "database"), ("sample", "queries"), ("seconds", "seconds"),
               ("queries_per_s", "queries/s"), ("full_queries", "full queries"), ("projected_hours", "projected h"),
               ("peak_memory_mb", "peak RSS MB"), ("anonymous_mb", "anonymous MB")]
    return report(title, rows, columns, out, ratio_of="queries_per_s")


if __name__ == "__main__":
    print(json.dumps(_measure(json.loads(sys.argv[1]))))
