"""A worker's reopened store writer holds its ids compactly (`lmkcomp.idarrays.IdIndex`)."""

from __future__ import annotations

import tracemalloc

import pytest

from lmkcomp.features.store import EmbeddingWriter
from lmkcomp.local.store import LocalFeatureWriter

COUNT = 20_000
IDS = [f"{(i * 7919) % COUNT:016x}" for i in range(COUNT)]


@pytest.mark.parametrize("begin", [
    lambda folder: EmbeddingWriter(folder, IDS, 4, shard_size=1000),
    lambda folder: LocalFeatureWriter(folder, IDS, 8, "test", shard_size=1000),
], ids=["embeddings", "local features"])
def test_reopening_a_writer_holds_under_10_bytes_an_id(tmp_path, begin):
    """Every worker of a sharded extraction reopens the store's writer: GLDv2 train's 4.1 M ids
    cost each about 300 MB held (700 MB at the peak) when it read them into a list and checked
    them again. Now the list stays memory-mapped and the worker holds the order that sorts it."""
    writer_class = type(begin(tmp_path / "store"))
    tracemalloc.start()
    writer = writer_class.reopen(tmp_path / "store")
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(writer.ids) == COUNT and writer.ids[1] == f"{7919:016x}"
    # The old list held 73 bytes an id and its check peaked at 170. Checking the file's lines
    # takes 17 bytes a line for a moment, but in blocks of 262,144 lines: 8 bytes an id at 4.1 M.
    assert held < 10 * COUNT and peak < 30 * COUNT
