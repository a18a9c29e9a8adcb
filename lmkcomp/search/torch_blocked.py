"""Exact top-k search by inner product with torch, on a GPU or the CPU, one block at a time.

The database is kept on the device in blocks of `database_block` rows; each search multiplies
a block of `query_block` queries by one database block, keeps that block's top k and merges it
into the running top k. Results equal `lmkcomp.search.exact.exact_search` (up to float rounding
of the scores): best first, ties broken by the lower database index.
"""

from __future__ import annotations

import numpy as np
import torch

from lmkcomp.errors import UserInputError
from lmkcomp.features.store import positive_int
from lmkcomp.search.base import check_vectors
from lmkcomp.search.exact import DEFAULT_DATABASE_BLOCK, DEFAULT_QUERY_BLOCK


def resolve_device(name: str) -> torch.device:
    """"auto" (a GPU when torch sees one, else the CPU), "cpu", "cuda" or "cuda:N"."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserInputError(f"unknown device {name!r}; expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError(f"device {name!r} requested but torch sees no CUDA GPU")
    if device.type not in ("cpu", "cuda"):
        raise UserInputError(f"device {name!r} not supported; expected auto, cpu, cuda or cuda:N")
    return device


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


class TorchSearcher:
    """Exact blocked search with torch matrix products on `device` ("auto": the GPU if any)."""

    needs_training = False

    def __init__(self, dim: int, device: str = "auto", query_block: int = DEFAULT_QUERY_BLOCK,
                 database_block: int = DEFAULT_DATABASE_BLOCK):
        self.dim = positive_int("dim", dim)
        self.device = resolve_device(device)
        self.query_block = positive_int("query_block", query_block)
        self.database_block = positive_int("database_block", database_block)
        self.count = 0
        self._chunks: list[torch.Tensor] = []

    def settings(self) -> dict:
        # the device changes only float rounding, so a search may resume on another device
        return {"backend": "torch"}

    def add(self, vectors: np.ndarray) -> None:
        """Append `vectors` (n, dim) as database rows `count, count + 1, ...`, copied to the device."""
        vectors = check_vectors(vectors, self.dim)
        for start in range(0, len(vectors), self.database_block):
            block = np.ascontiguousarray(vectors[start:start + self.database_block], dtype=np.float32)
            self._chunks.append(torch.from_numpy(block).to(self.device, copy=True))
        self.count += len(vectors)

    @torch.no_grad()
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, indices) of the top `min(k, count)` rows per query, best first, ties by lower index."""
        queries = check_vectors(queries, self.dim)
        k = min(positive_int("k", k), self.count)
        scores = np.empty((len(queries), k), dtype=np.float32)
        indices = np.empty((len(queries), k), dtype=np.int64)
        for q_start in range(0, len(queries), self.query_block):
            block = torch.from_numpy(np.ascontiguousarray(queries[q_start:q_start + self.query_block],
                                                          dtype=np.float32)).to(self.device)
            best_scores = torch.empty((len(block), 0), device=self.device)
            best_indices = torch.empty((len(block), 0), dtype=torch.int64, device=self.device)
            offset = 0
            for chunk in self._chunks:
                chunk_scores, columns = block_top_k(torch.mm(block, chunk.T), k)
                # every index so far is below `offset`, and each list is ordered: a stable sort
                # of the concatenation keeps ties in index order
                merged_scores = torch.cat([best_scores, chunk_scores], dim=1)
                merged_indices = torch.cat([best_indices, columns + offset], dim=1)
                best_scores, order = merged_scores.sort(dim=1, descending=True, stable=True)
                best_scores, best_indices = best_scores[:, :k], merged_indices.gather(1, order[:, :k])
                offset += len(chunk)
            scores[q_start:q_start + len(block)] = best_scores.cpu().numpy()
            indices[q_start:q_start + len(block)] = best_indices.cpu().numpy()
        return scores, indices
