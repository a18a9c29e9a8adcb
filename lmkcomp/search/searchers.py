"""The nearest-neighbour backends by name, the `create_searcher` factory, and `index_database`,
which trains a searcher (when its index learns from the data) and fills it block by block.

A spec string picks the method, in the kit's one index-spec vocabulary (`lmkcomp.index_spec`):

- "flat" (the default of `search_stores`): exact streaming search (`lmkcomp.search.exact`), with
  faiss's brute-force kernel for large query blocks where faiss is installed, else numpy's.
- "numpy": exact streaming blocked search in numpy (`lmkcomp.search.exact`).
- "torch", "torch:cpu", "torch:cuda": exact blocked search with torch (`lmkcomp.search.torch_blocked`);
  plain "torch" uses the GPU when torch sees one.
- "faiss:FACTORY" or just "FACTORY", a faiss index-factory string (`lmkcomp.search.faiss_backend`):
  "Flat" (exact), "IVF1024,Flat", "IVF1024,PQ32" (approximate; option `nprobe`).

Anything else (e.g. the typo "nunpy") is a user error that lists these forms.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from lmkcomp.checks import positive_int
from lmkcomp.errors import UserInputError
from lmkcomp.index_spec import IndexSpec, parse_index_spec
from lmkcomp.registry import Registry
from lmkcomp.search.base import Searcher

SEARCHERS: Registry[Searcher] = Registry("searcher")
#: the backends that take an argument after "backend:" in a spec, and the option it fills
SPEC_ARGUMENTS = {"torch": "device", "faiss": "factory"}


def _build(searcher_class: type, backend: str, dim: int, options: dict[str, Any]) -> Searcher:
    """`searcher_class(dim, **options)`, with an unknown option reported as a user error."""
    accepted = [name for name in inspect.signature(searcher_class).parameters if name != "dim"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise UserInputError(f"the {backend} searcher has no option {', '.join(unknown)}; "
                             f"its options: {', '.join(accepted)}")
    return searcher_class(dim, **options)


# Backends are imported on use: torch and faiss are heavy, and faiss is optional.
@SEARCHERS.register("numpy")
def _numpy(dim: int, **options: Any) -> Searcher:
    from lmkcomp.search.exact import ExactSearcher

    return _build(ExactSearcher, "numpy", dim, options)


@SEARCHERS.register("torch")
def _torch(dim: int, **options: Any) -> Searcher:
    from lmkcomp.search.torch_blocked import TorchSearcher

    return _build(TorchSearcher, "torch", dim, options)


def _faiss_searcher_class() -> type | None:
    """`FaissSearcher`, or None where faiss is not installed."""
    try:
        from lmkcomp.search.faiss_backend import FaissSearcher
    except ImportError:
        return None
    return FaissSearcher


@SEARCHERS.register("faiss")
def _faiss(dim: int, **options: Any) -> Searcher:
    searcher_class = _faiss_searcher_class()
    if searcher_class is None:
        raise UserInputError("faiss searchers need faiss (pip install faiss-cpu, or faiss-gpu on a GPU machine); "
                             "the numpy and torch searchers do not")
    return _build(searcher_class, "faiss", dim, options)


@SEARCHERS.register("flat")
def _flat(dim: int, **options: Any) -> Searcher:
    """Exact streaming search by the fastest kernel at hand: faiss's for large query blocks, numpy's otherwise."""
    try:
        from lmkcomp.search.faiss_backend import FlatSearcher
    except ImportError:
        from lmkcomp.search.exact import ExactSearcher as FlatSearcher
    return _build(FlatSearcher, "flat", dim, options)


def parse_spec(spec: str) -> IndexSpec:
    """The backend and argument of a searcher spec (`lmkcomp.index_spec`): "torch:cuda" ->
    ("torch", "cuda"), "numpy" -> ("numpy", ""), "IVF1024,PQ32" -> ("faiss", "IVF1024,PQ32");
    an unknown spec is a user error listing the known forms."""
    backends = {name: SPEC_ARGUMENTS[name].upper() if name in SPEC_ARGUMENTS else None for name in SEARCHERS.names()}
    return parse_index_spec(spec, backends, "searcher spec")


def create_searcher(spec: str, dim: int, **options: Any) -> Searcher:
    """The searcher that `spec` names (see the module docstring), for `dim`-dimensional vectors.

    `options` go to the backend, e.g. `nprobe=16` (faiss IVF), `device="cuda"` (torch, faiss),
    `memory_mb=512` or `database_block=16384` (flat, numpy, torch); an option the backend does
    not take is an error.
    """
    parsed = parse_spec(spec)
    if parsed.argument:
        key = SPEC_ARGUMENTS[parsed.backend]
        if options.get(key, parsed.argument) != parsed.argument:
            raise UserInputError(f"searcher spec {spec!r} sets {key} {parsed.argument!r} "
                                 f"but the options say {options[key]!r}")
        options = {**options, key: parsed.argument}
    return SEARCHERS.create(parsed.backend, dim=dim, **options)


def index_database(searcher: Searcher, read_rows: Callable[[np.ndarray], np.ndarray], count: int,
                   block_rows: int = 65536, seed: int = 0, progress: bool = True) -> Searcher:
    """Train `searcher` if it needs to, then add database rows `0 .. count - 1` in blocks.

    `read_rows(rows)` returns the vectors of the database rows `rows` (sorted int64). A streaming
    searcher (`streams`, the exact ones) is handed `read_rows` itself and reads the rows block by
    block at each search, so the database is never held in memory. A trainable
    index learns from `min(count, searcher.train_size)` rows drawn without replacement by a
    generator seeded with `seed`, so the same database and seed give the same index.
    """
    count = positive_int("database rows", count)
    block_rows = positive_int("block_rows", block_rows)
    if getattr(searcher, "streams", False):
        searcher.attach(read_rows, count)
        return searcher
    if searcher.needs_training:
        size = min(count, searcher.train_size)
        sample = np.sort(np.random.default_rng(seed).choice(count, size=size, replace=False))
        searcher.train(read_rows(sample))
    with tqdm(total=count, desc="index database", unit="vec", disable=not progress) as bar:
        for start in range(0, count, block_rows):
            stop = min(start + block_rows, count)
            searcher.add(read_rows(np.arange(start, stop)))
            bar.update(stop - start)
    return searcher
