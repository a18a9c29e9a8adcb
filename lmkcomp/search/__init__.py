"""Nearest-neighbour search over L2-normalised embeddings (inner product = cosine similarity).

- `exact_search`: exact blocked top-k of two arrays in numpy (`lmkcomp.search.exact`).
- `create_searcher(spec, dim, **options)`: a backend by name: "numpy", "torch[:DEVICE]", or a
  faiss index-factory string such as "Flat" or "IVF1024,PQ32" (`lmkcomp.search.searchers`).
- `search_stores`: the kNN table of one embedding store against another, resumable
  (`lmkcomp.search.run`), written as a `KnnTable` (`lmkcomp.search.knn_table`).
"""

from lmkcomp.search.exact import exact_search
from lmkcomp.search.knn_table import KnnTable, KnnTableWriter, write_knn_table
from lmkcomp.search.run import search_stores
from lmkcomp.search.searchers import SEARCHERS, create_searcher, index_database

__all__ = ["SEARCHERS", "KnnTable", "KnnTableWriter", "create_searcher", "exact_search", "index_database",
           "search_stores", "write_knn_table"]
