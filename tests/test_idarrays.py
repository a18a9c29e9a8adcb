"""`id_arrays`: ids as compact fixed-width arrays that give the ids back; `IdIndex`: a store's id
list memory-mapped, with each id's row found by binary search."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from lmkcomp import idarrays
from lmkcomp.idarrays import IdIndex, id_arrays


def test_ascii_ids_take_one_byte_a_character_and_come_back_as_str():
    ids = ["0123456789abcdef", "fedcba9876543210"]
    (array,) = id_arrays(ids)
    assert array.dtype == np.dtype("S16") and array.nbytes == 2 * 16  # numpy's <U16 takes 64 bytes an id
    assert array.astype(str).tolist() == ids
    # each list has its own width; elements of different widths still compare
    short, long = id_arrays(["ab"], ["abc", "ab"])
    assert (short.dtype, long.dtype) == (np.dtype("S2"), np.dtype("S3"))
    assert (long == short[0]).tolist() == [False, True]


def test_a_non_ascii_id_turns_every_list_to_unicode_so_they_still_compare():
    ascii_ids, mixed = id_arrays(["ab", "cd"], ["cd", "é€"])
    assert ascii_ids.dtype.kind == mixed.dtype.kind == "U"
    assert mixed.astype(str).tolist() == ["cd", "é€"]
    assert (mixed == ascii_ids[1]).tolist() == [True, False]


# --------------------------------------------------------------------------------------------
# IdIndex

def write_id_lines(path, ids):
    path.write_bytes("".join(f"{i}\n" for i in ids).encode("ascii"))
    return path


#: distinct ids in no sorted order, as a store of train.csv's images holds them
IDS = [f"{(i * 7919) % 1000:016x}" for i in range(1000)]


@pytest.mark.parametrize("block", [7, idarrays._BLOCK_LINES])
def test_id_index_is_the_id_list_and_finds_each_id_s_row(tmp_path, monkeypatch, block):
    monkeypatch.setattr(idarrays, "_BLOCK_LINES", block)  # 7: every check and lookup over many blocks
    index = IdIndex.open(write_id_lines(tmp_path / "ids.txt", IDS))
    assert len(index) == 1000 and index[0] == IDS[0] and index[-1] == IDS[-1] and index[10:13] == IDS[10:13]
    assert list(index) == IDS and index == IDS and IDS == index and index != IDS[:-1] and index != IDS[::-1]
    not_held = ["ffffffffffffffff", "00000000000003e8", "0123", IDS[0].upper().replace("0", "A"), IDS[0] + "\n",
                f"{IDS[1]}\n{IDS[2]}", "é" * 16, ""]
    probe = IDS[::-1] + not_held
    expected = list(range(999, -1, -1)) + [-1] * len(not_held)
    assert index.rows(probe).dtype == np.int64 and index.rows(probe).tolist() == expected
    assert [index.row(image_id) for image_id in probe] == expected
    assert index.rows(np.array(IDS[5:8], dtype=object)).tolist() == [5, 6, 7]
    assert IDS[5] in index and "ffffffffffffffff" not in index and 5 not in index


@pytest.mark.parametrize("content", [b"0123456789abcdef", b"0123456789ABCDEF\n", b"0123456789abcdef\r\n",
                                     b"0123456789abcdef\n\n", b"0123456789abcde\n", b"0123456789abcdef0\n"])
def test_id_index_opens_only_lines_of_ids(tmp_path, content):
    path = tmp_path / "ids.txt"
    path.write_bytes(content)
    assert IdIndex.open(path) is None
    path.write_bytes(b"")
    assert len(IdIndex.open(path)) == 0 and IdIndex.open(path).rows(["0123456789abcdef"]).tolist() == [-1]


def test_id_index_keeps_8_bytes_an_id_of_its_own(tmp_path):
    """The id lines stay the file's memory mapping (page cache, shared by every process that maps
    it); what the process allocates, at its first lookup, is the int64 order: 8 bytes an id."""
    path = write_id_lines(tmp_path / "ids.txt", [f"{i:016x}" for i in range(20_000)])
    tracemalloc.start()
    index = IdIndex.open(path)
    opened = tracemalloc.get_traced_memory()[0]
    found = index.row("0000000000004e1f")
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert opened < 20_000  # nothing sorted until something is looked up (a writer never does)
    assert 8 * 20_000 <= held < 9 * 20_000
    assert found == 19_999
