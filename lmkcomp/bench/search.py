"""`lmkcomp bench search`: queries/s, build time, peak memory and recall@k of the search backends
at several database sizes, on random L2-normalised vectors in a float16 embedding store.

Data: each block of 65536 database rows and the queries are drawn from generators seeded by
(seed, 0, block) and (seed, 1), standard normal then L2-normalised; the database is written once
per size as a float16 embedding store (what `lmkcomp extract` writes), which every variant (each
in a fresh process, see `lmkcomp.bench.common.run_variant`) reads as `lmkcomp search` does:
the exact streaming searchers block by block at each search, the faiss indexes by filling
themselves block by block. Uniform random directions have no cluster structure: the hardest
case for an IVF index, whose recall on real, clustered embeddings is much higher at the same
nprobe.

Per variant: `build_s` (train + add; nothing for a streaming searcher, whose reading is part of
its search), `queries_per_s` (the fastest of `repeats` search calls for all queries, k
neighbours each: other jobs on a shared machine slow single calls),
`peak_memory_mb` (the process's peak resident set, which counts the store's memory-mapped pages
it touched, or the CUDA allocator peak of the torch searcher on a GPU), `anonymous_mb` (the
peak anonymous resident memory while building and searching: what the process holds, page cache
left out) and `index_memory_mb` (the resident peak minus the peak before the index was built).
`recall` is |top-k found ∩ exact top-k| / k averaged over the queries, against the first exact
variant at the same size.

On a machine shared with other jobs, run with OMP_WAIT_POLICY=PASSIVE: faiss's (and torch's)
OpenMP threads otherwise busy-wait at every barrier, and k-means becomes 10 times slower or more.

`project_to`: rows for the exact variants at a larger size, extrapolated from the largest
measured size, with build time, search time and index memory linear in the database size
(exact search compares every database vector); marked `projected` in the table and the JSON.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from lmkcomp.bench.common import peak_resident_mb
from lmkcomp.checks import positive_int
from lmkcomp.errors import UserInputError

GENERATION_BLOCK = 65536
#: variant name -> spec, exact ones first: the first exact variant run is the recall reference
VARIANTS = {
    "flat": "flat",
    "faiss-flat": "Flat",
    "numpy": "numpy",
    "torch": "torch",
    "ivf-flat": "IVF{nlist},Flat",
    "ivf-pq": "IVF{nlist},PQ32",
}
EXACT_VARIANTS = ("flat", "faiss-flat", "numpy", "torch")
#: the variants that read the store at each search instead of holding the database
STREAMING_VARIANTS = ("flat", "numpy", "torch")


def ivf_lists(size: int) -> int:
    """Inverted lists for a database of `size`: the power of two nearest sqrt(size) (1 M -> 1024),
    the low end of the usual 1-16 x sqrt(N), so that k-means stays minutes on a few cores."""
    return 2 ** round(math.log2(math.sqrt(size)))


def random_unit_vectors(count: int, dim: int, seed: Sequence[int]) -> np.ndarray:
    """`count` standard normal `dim`-vectors from a generator seeded by `seed`, L2-normalised."""
    vectors = np.random.default_rng(list(seed)).standard_normal((count, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def write_database(directory: Path, size: int, dim: int, seed: int) -> None:
    """The benchmark database of `size` rows as a float16 embedding store in `directory`: each
    generation block drawn whole (seeded by (seed, 0, block)) and written as one shard."""
    from lmkcomp.features.store import EmbeddingWriter

    writer = EmbeddingWriter(directory, [f"{row:016x}" for row in range(size)], dim, dtype="float16",
                             shard_size=GENERATION_BLOCK)
    for block, rows in writer.pending_shards():
        writer.write_shard(block, random_unit_vectors(rows.stop - rows.start, dim, (seed, 0, block)))
    writer.finish()


def _cuda_peak_mb(device) -> float:
    """Peak CUDA memory allocated by torch on `device` so far, in MiB, once the GPU is idle."""
    import torch

    from lmkcomp.bench.common import peak_memory_mb

    torch.cuda.synchronize(device)
    return peak_memory_mb(device)


def _measure(spec: dict) -> dict:
    """One variant at one size, in this process; writes its indices to `spec["indices_file"]`."""
    from lmkcomp.bench.common import AnonymousPeak
    from lmkcomp.features.store import EmbeddingStore, read_positions
    from lmkcomp.search.searchers import create_searcher, index_database

    database = EmbeddingStore(spec["store"])
    queries = random_unit_vectors(spec["queries"], spec["dim"], (spec["seed"], 1))
    searcher = create_searcher(spec["spec"], spec["dim"], **spec["options"])
    # Only the torch searcher's GPU memory is measured on the GPU (faiss GPU memory is not
    # torch's, so faiss reports host memory); torch is imported only by the variants that use it.
    gpu = getattr(searcher, "device", None)
    if gpu is not None and gpu.type != "cuda":
        gpu = None
    before = peak_resident_mb() if gpu is None else _cuda_peak_mb(gpu)
    with AnonymousPeak() as anonymous:
        started = time.perf_counter()
        index_database(searcher, lambda rows: read_positions(database, rows), len(database),
                       block_rows=GENERATION_BLOCK, seed=spec["seed"], progress=False)
        if gpu is not None:
            _cuda_peak_mb(gpu)  # waits for the GPU, so build time is not counted as search time
        built = time.perf_counter()
        elapsed = math.inf
        for _ in range(spec["repeats"]):
            searched = time.perf_counter()
            _, indices = searcher.search(queries, spec["k"])
            elapsed = min(elapsed, time.perf_counter() - searched)
    np.save(spec["indices_file"], indices)
    peak = peak_resident_mb() if gpu is None else _cuda_peak_mb(gpu)
    return {"build_s": built - started, "search_s": elapsed, "queries_per_s": spec["queries"] / elapsed,
            "peak_memory_mb": peak, "anonymous_mb": anonymous.mb, "index_memory_mb": peak - before}


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean over queries of |found row ∩ exact row| / k (a -1 in `found` matches nothing)."""
    k = exact.shape[1]
    hits = sum(len(np.intersect1d(row, truth)) for row, truth in zip(found, exact))
    return hits / (k * len(exact))


def _projected(row: dict, size: int) -> dict:
    """`row` extrapolated linearly in the database size to `size` (exact variants only)."""
    factor = size / row["size"]
    measured = {key: value for key, value in row.items() if key != "recall"}
    return {**measured, "variant": f"{row['variant']} (projected)", "size": size, "projected": True,
            "build_s": row["build_s"] * factor, "search_s": row["search_s"] * factor,
            "queries_per_s": row["queries_per_s"] / factor,
            "peak_memory_mb": row["peak_memory_mb"] + row["index_memory_mb"] * (factor - 1),
            # a streaming searcher's working memory is set by its budget, not the database size
            "anonymous_mb": row["anonymous_mb"] if row["variant"] in STREAMING_VARIANTS else
            row["anonymous_mb"] * factor,
            "index_memory_mb": row["index_memory_mb"] * factor}


def run_search_benchmark(sizes: Sequence[int] = (10_000, 100_000, 1_000_000), queries: int = 1000, k: int = 100,
                         dim: int = 512, variants: Sequence[str] = tuple(VARIANTS), nprobe: int = 16,
                         device: str | None = None, seed: int = 0, project_to: int | None = None,
                         out: str | Path = "bench/search.json", repeats: int = 3) -> str:
    """Measure every variant at every size (smallest first) and return the printed table."""
    from lmkcomp.bench.common import report, run_variant

    unknown = [name for name in variants if name not in VARIANTS]
    if unknown or not variants:
        raise UserInputError(f"unknown search variant(s) {', '.join(unknown) or '(none)'}; known: {', '.join(VARIANTS)}")
    for name, value in (("queries", queries), ("k", k), ("dim", dim), ("nprobe", nprobe), ("repeats", repeats)):
        positive_int(name, value)
    sizes = sorted(positive_int("size", size) for size in sizes)
    if k > sizes[0]:
        raise UserInputError(f"k {k} exceeds the smallest database size {sizes[0]}")
    if project_to is not None and project_to <= sizes[-1]:
        raise UserInputError(f"project_to {project_to} must exceed the largest measured size {sizes[-1]}")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for size in sizes:
            store = Path(scratch) / f"database-{size}"
            write_database(store, size, dim, seed)
            reference = None
            for name in variants:
                options = {"device": device} if device is not None and name != "numpy" else {}
                if name.startswith("ivf"):
                    options["nprobe"] = nprobe
                indices_file = Path(scratch) / f"{name}-{size}.npy"
                spec = {"variant": name, "size": size, "spec": VARIANTS[name].format(nlist=ivf_lists(size)),
                        "store": str(store), "options": options, "queries": queries, "k": k, "dim": dim, "seed": seed,
                        "repeats": repeats,
                        "indices_file": str(indices_file)}
                row = {**run_variant("lmkcomp.bench.search", spec), "projected": False}
                del row["indices_file"], row["store"]
                if "error" not in row:
                    found = np.load(indices_file)
                    if reference is None and name in EXACT_VARIANTS:
                        reference = found
                    if reference is not None:
                        row["recall"] = recall_at_k(found, reference)
                rows.append(row)
    if project_to is not None:
        rows += [_projected(row, project_to) for row in rows
                 if row["size"] == sizes[-1] and row["variant"] in EXACT_VARIANTS and "error" not in row]
    title = (f"bench search: {queries} queries, k {k}, {dim}-d random unit vectors in a float16 store, "
             f"recall@{k} against exact; ratio: queries/s over the first row's")
    columns = [("size", "database"), ("variant", "variant"), ("spec", "spec"), ("build_s", "build s"),
               ("queries_per_s", "queries/s"), ("peak_memory_mb", "peak RSS MB"), ("anonymous_mb", "anonymous MB"),
               ("recall", f"recall@{k}")]
    return report(title, rows, columns, out, ratio_of="queries_per_s")


if __name__ == "__main__":
    print(json.dumps(_measure(json.loads(sys.argv[1]))))
