"""Atomic file writes: a reader never sees a half-written artifact, and a killed job leaves
either the old file or the new one behind, never a truncated one.

A killed write does leave its temporary file, ``.NAME.XXXXXXXX.tmp`` beside ``NAME``;
`is_atomic_temp` recognises those names so that a job holding the folder's lock
(`lmkcomp.outdir`) can remove them.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import tempfile
from pathlib import Path
from typing import IO, Iterator

#: a write that fails for want of room: disk full, quota, file size limit
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})

#: ``.NAME.`` + mkstemp's eight random characters + ``.tmp``: only this writer's temporary files
_ATOMIC_TEMP = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


def is_atomic_temp(name: str) -> bool:
    """True for a file name that `atomic_write` gives its temporary files."""
    return _ATOMIC_TEMP.fullmatch(name) is not None


@functools.cache
def process_umask() -> int:
    """The process's umask, read once.

    Linux reports it in /proc/self/status; elsewhere it can only be read by setting it, which
    briefly changes it for any thread creating a file at that moment, so it is read once, not
    per write.
    """
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", **open_kwargs) -> Iterator[IO]:
    """Open a temporary file beside `path`; on success rename it over `path`.

    The rename is atomic on POSIX file systems because source and target share a folder.
    On an exception the temporary file is removed and `path` is left untouched. The file gets
    the permissions of any file the user creates (``0o666`` less the umask), not mkstemp's
    owner-only ``0o600``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o666 & ~process_umask())
        os.replace(tmp_name, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        if isinstance(error, OSError) and error.errno in _WRITE_ERRNOS and error.filename is None:
            error.filename = str(path)  # a failed write names the file it was writing, not a temporary fd
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_write(path, "wb") as handle:
        handle.write(data)
