"""Exact top-k search by inner product with torch, on a GPU or the CPU, one block at a time.

`TorchSearcher` is an `ExactSearcher` whose kernel runs on the device: each search multiplies a
block of `query_block` queries by one database block there, keeps that block's top k and merges
it into the running top k. Results equal `lmkcomp.search.exact.exact_search` (up to float rounding
of the scores): best first, ties broken by the lower database index.
"""

from __future__ import annotations

import numpy as np
import torch

from lmkcomp.devices import resolve_device
from lmkcomp.search.exact import DEFAULT_MEMORY_MB, DEFAULT_QUERY_BLOCK, ExactSearcher


def block_top_k(similarity: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The `min(k, columns)` best columns of each row, best first, ties by lower column.

    `torch.topk` finds the k-th best score t of each row but orders ties arbitrarily; only rows
    with more than k entries >= t (a tie across the cut) need a full stable sort.
    """
    k = min(k, similarity.shape[1])
    scores, columns = torch.topk(similarity, k, dim=1)
    crowded = ((similarity >= scores[:, -1:]).sum(dim=1) > k).nonzero().squeeze(1)
    if crowded.numel():
        sorted_scores, sorted_columns = torch.sort(similarity[crowded], dim=1, descending=True, stable=True)
        scores[crowded], columns[crowded] = sorted_scores[:, :k], sorted_columns[:, :k]
    # columns ascending, then a stable sort by descending score: ties ordered by column
    columns, order = columns.sort(dim=1)
    scores, order = scores.gather(1, order).sort(dim=1, descending=True, stable=True)
    return scores, columns.gather(1, order)


class TorchSearcher(ExactSearcher):
    """Exact blocked search with torch matrix products on `device` ("auto": the GPU if any).

    Arrays added, and databases that fit the budget, are kept on the device; a larger attached
    reader's blocks are copied there one at a time at each search (`ExactSearcher`), so a GPU
    holds one database block, not the database.
    """

    def __init__(self, dim: int, device: str = "auto", query_block: int = DEFAULT_QUERY_BLOCK,
                 database_block: int | None = None, memory_mb: float = DEFAULT_MEMORY_MB):
        self.device = resolve_device(device)
        super().__init__(dim, query_block, database_block, memory_mb)

    def settings(self) -> dict:
        # the device changes only float rounding, so a search may resume on another device
        return {"backend": "torch"}

    def _prepare(self, block: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(block)).to(self.device)

    @torch.no_grad()
    def top_k(self, queries: np.ndarray, block: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, columns = block_top_k(torch.mm(torch.from_numpy(queries).to(self.device), block.T), k)
        return scores.cpu().numpy(), columns.cpu().numpy()
