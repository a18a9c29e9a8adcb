"""`id_arrays`: ids as compact fixed-width arrays that give the ids back."""

from __future__ import annotations

import numpy as np

from lmkcomp.idarrays import id_arrays


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
