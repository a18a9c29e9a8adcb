"""Image ids as compact numpy arrays, for the workers that hold a whole split's ids.

A kNN worker that writes its pairs by id holds every query and database id (GLDv2 train:
4,132,914 ids). As numpy's unicode arrays (`<U16`: four bytes a character) those take 64 bytes an
id, as a list of str about 73; as ASCII bytes (`S16`) they take 16. `id_arrays` makes the bytes
arrays, and the arrays' `.astype(str)` gives the ids back as str where they are written out.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def id_arrays(*id_lists: Sequence[str]) -> tuple[np.ndarray, ...]:
    """Each of `id_lists` as a fixed-width numpy array, all of one kind so that their elements
    compare with each other (a bytes element never equals a str one): ASCII bytes (`S<width>`,
    one byte a character, `width` the longest id of that list) when every id of every list is
    ASCII, else unicode (`U<width>`, four bytes a character). Either way, an element's
    `.astype(str)` (or `str(array.astype(str)[i])`) is the id, unless the id ends in NUL
    characters, which numpy's fixed-width arrays of both kinds drop."""
    try:
        return tuple(np.array(ids, dtype=np.bytes_) for ids in id_lists)
    except UnicodeEncodeError:  # a non-ASCII id: numpy encodes str to bytes as ASCII
        return tuple(np.array(ids, dtype=np.str_) for ids in id_lists)
