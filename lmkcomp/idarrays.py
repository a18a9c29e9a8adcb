"""Image ids as compact numpy arrays, for the workers that hold a whole split's ids.

A kNN worker that writes its pairs by id holds every query and database id (GLDv2 train:
4,132,914 ids). As numpy's unicode arrays (`<U16`: four bytes a character) those take 64 bytes an
id, as a list of str about 73; as ASCII bytes (`S16`) they take 16. `id_arrays` makes the bytes
arrays, and the arrays' `.astype(str)` gives the ids back as str where they are written out.

A worker that looks images up by id in a store (verification, DELF recognition) needs each id's
row too: `IdIndex` finds it by binary search in the store's memory-mapped id list, instead of a
dict from id to row that would cost each worker another 100 bytes an id.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Iterator, Sequence, overload

import numpy as np

from lmkcomp.data.gldv2 import is_valid_id


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


#: bytes of one line of an id list such as a store's `ids.txt`: a GLDv2 id and a newline
ID_LINE_BYTES = 17
#: the bytes a GLDv2 id is made of (`lmkcomp.data.gldv2.ID_PATTERN`: lower-case hexadecimal)
_ID_BYTE = np.zeros(256, dtype=bool)
_ID_BYTE[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = True
#: lines checked or ids looked up at a time: bounds the temporary arrays (a few MB a block)
_BLOCK_LINES = 1 << 18


def _are_id_lines(data: np.ndarray) -> bool:
    """Whether the bytes `data` (uint8) are whole lines of one GLDv2 id each: `17 k` bytes whose
    every 17th is a newline and all others lower-case hexadecimal digits."""
    if data.size % ID_LINE_BYTES:
        return False
    for start in range(0, data.size, _BLOCK_LINES * ID_LINE_BYTES):
        block = data[start:start + _BLOCK_LINES * ID_LINE_BYTES].reshape(-1, ID_LINE_BYTES)
        if not (block[:, -1] == ord("\n")).all() or not _ID_BYTE[block[:, :-1]].all():
            return False
    return True


def _id_lines(ids: Sequence[str]) -> np.ndarray:
    """`ids` as `S17` lines (each id and a newline), b"" for one that is not a GLDv2 id (so that
    it equals no line of an id list)."""
    try:
        data = np.frombuffer(("\n".join(ids) + "\n").encode("ascii"), dtype=np.uint8)
        if _are_id_lines(data):  # the common case: every id valid, checked as one block of bytes
            return data.view(f"S{ID_LINE_BYTES}")
    except (UnicodeEncodeError, TypeError):  # a non-ASCII id, or one that is not a str
        pass
    return np.array([f"{i}\n" if isinstance(i, str) and is_valid_id(i) else "" for i in ids],
                    dtype=f"S{ID_LINE_BYTES}")


class IdIndex(Sequence[str]):
    """A list of distinct GLDv2 ids in row order, read-only, held as the lines of its `ids.txt`
    (memory-mapped, so the page cache holds them once for every process that opens the file)
    and, from the first lookup, the order that sorts them (int64, 8 bytes an id), in which an
    id's row is found by binary search (an id listed twice, which no writer writes, is found at
    its first row).

    GLDv2 train's 4.1 M ids cost a process 33 MB that way; as a list of str and a dict from id
    to row they cost about 590 MB, in every worker that opens the store. Items are str, slices
    lists of str, and an IdIndex equals any sequence of the same ids in the same order.
    """

    def __init__(self, lines: np.ndarray):
        """`lines`: an `S17` array of id lines (each a GLDv2 id and a newline), already checked."""
        self._lines = lines

    @cached_property
    def _order(self) -> np.ndarray:
        """The row order that sorts the lines, made at the first lookup (a writer never looks
        up, so it never sorts). int64 because numpy's searchsorted copies a `sorter` of any
        other type, on every call."""
        return np.argsort(self._lines, kind="stable")

    @classmethod
    def open(cls, path: str | Path) -> "IdIndex | None":
        """The ids of the file `path`, memory-mapped; None unless the file is lines of one GLDv2
        id each, every line ending in a newline. OSError when the file cannot be read."""
        if Path(path).stat().st_size == 0:
            data = np.zeros(0, dtype=np.uint8)  # mmap refuses an empty file
        else:
            # a plain ndarray over the mapping: a memmap's indexing costs microseconds in Python
            data = np.memmap(path, dtype=np.uint8, mode="r").view(np.ndarray)
        if not _are_id_lines(data):
            return None
        return cls(data.view(f"S{ID_LINE_BYTES}"))

    def __len__(self) -> int:
        return len(self._lines)

    @overload
    def __getitem__(self, row: int) -> str: ...

    @overload
    def __getitem__(self, rows: slice) -> list[str]: ...

    def __getitem__(self, row: int | slice) -> str | list[str]:
        if isinstance(row, slice):
            return self._lines[row].tobytes().decode("ascii").splitlines()
        return self._lines[row].decode("ascii")[:-1]

    def __iter__(self) -> Iterator[str]:
        for start in range(0, len(self), _BLOCK_LINES):
            yield from self[start:start + _BLOCK_LINES]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, IdIndex):
            return bool(np.array_equal(self._lines, other._lines))
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to lists, which are unhashable

    def __contains__(self, image_id: object) -> bool:
        return isinstance(image_id, str) and self.row(image_id) >= 0

    def row(self, image_id: str) -> int:
        """The row of `image_id`, -1 when the list does not hold it."""
        if not isinstance(image_id, str) or not is_valid_id(image_id):
            return -1
        return int(self._find(np.array([f"{image_id}\n"], dtype=self._lines.dtype))[0])

    def rows(self, ids: Sequence[str]) -> np.ndarray:
        """The row of each of `ids` (int64), -1 for an id the list does not hold. Looked up block
        by block, each block's ids in sorted order, so that the binary searches of consecutive
        ids walk the same few pages of the list."""
        out = np.empty(len(ids), dtype=np.int64)
        for start in range(0, len(ids), _BLOCK_LINES):
            keys = _id_lines(ids[start:start + _BLOCK_LINES])
            by_key = np.argsort(keys)
            out[start + by_key] = self._find(keys[by_key])
        return out

    def _find(self, keys: np.ndarray) -> np.ndarray:
        """The row of each of the id lines `keys` (int64), -1 for a line not in the list."""
        if not len(self):
            return np.full(len(keys), -1, dtype=np.int64)
        # "clip": a key after the last line is compared with the last line, and differs from it
        rows = self._order.take(np.searchsorted(self._lines, keys, sorter=self._order), mode="clip")
        return np.where(self._lines.take(rows) == keys, rows, -1)
