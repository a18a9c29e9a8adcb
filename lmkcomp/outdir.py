"""One job at a time per output folder, and the cleaning of what killed jobs left there.

A job that writes a folder (a training run, a feature store, a pair table, a dataset) holds
``FOLDER/.lock`` while it runs: the file is created exclusively and held with an OS lock
(``fcntl.flock``), and names the job (pid, host, start time, command). A second job on the
same folder stops at once with a `FolderInUseError` naming the first. The OS releases the
lock of a process that dies however it dies (kill -9 included), so a lock file whose OS lock
is free was left by a dead job: it is reported as stale and taken over. Where the OS offers no
lock (no ``fcntl``, or a file system that refuses it), a lock file is stale when the pid it
names no longer runs on this host.

Holding the lock proves that no other writer is alive, so a job that takes it removes the
temporary files of interrupted atomic writes (`lmkcomp.fileio.is_atomic_temp`) in the folder.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from lmkcomp.errors import UserInputError
from lmkcomp.fileio import is_atomic_temp

try:
    import fcntl
except ImportError:  # not on Windows: the pid check alone decides
    fcntl = None

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"

# what a file system without OS locks answers to flock
_NO_OS_LOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS)


@dataclass(frozen=True)
class LockHolder:
    """The job named in a lock file."""

    pid: int
    host: str
    started: str
    command: str

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host} (started {self.started}: {self.command})"

    def may_be_running(self) -> bool:
        """False only when this holder is known to be gone: its host is this one and its pid
        runs no process. (Windows is never asked: os.kill there ends the process.)"""
        if self.host != socket.gethostname() or os.name == "nt":
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # alive, another user's
            return True
        return True


class FolderInUseError(UserInputError):
    """The output folder is locked by a job that is still running."""

    def __init__(self, folder: Path, holder: LockHolder | None):
        who = holder.describe() if holder is not None else "another job"
        super().__init__(f"{folder} is in use by {who}; wait for it to finish or choose another output folder")


@contextlib.contextmanager
def output_folder(folder: str | Path, command: str) -> Iterator[Path]:
    """Hold the lock of `folder` (created if missing) for the block, named after `command`.

    Raises FolderInUseError when a live job holds it. On entry, removes the temporary files of
    interrupted atomic writes in `folder` and its subfolders (except those locked on their own).
    On exit, removes the lock file, and `folder` itself if it was created here and stayed empty.
    """
    folder = Path(folder)
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserInputError(f"{folder}: cannot create the output folder ({error.strerror})") from None
    if not folder.is_dir():
        raise UserInputError(f"{folder}: not a folder")
    try:
        fd = _acquire(folder / LOCK_NAME, command)
    except PermissionError as error:
        raise UserInputError(f"{folder}: cannot write its lock file ({error.strerror})") from None
    try:
        remove_temp_files(folder)
        yield folder
    finally:
        _release(folder / LOCK_NAME, fd)
        if created:
            with contextlib.suppress(OSError):  # not empty: the job wrote something
                folder.rmdir()


def remove_temp_files(folder: Path) -> list[Path]:
    """Delete the leftover temporary files of atomic writes under `folder`; return them.

    Subfolders with a lock file of their own belong to their own jobs and are left alone.
    """
    removed = []
    for parent, subfolders, files in os.walk(folder):
        subfolders[:] = [name for name in subfolders if not (Path(parent, name) / LOCK_NAME).exists()]
        for name in files:
            if is_atomic_temp(name):
                path = Path(parent, name)
                with contextlib.suppress(FileNotFoundError):
                    size = path.stat().st_size
                    path.unlink()
                    removed.append(path)
                    log.warning("%s: removed the temporary file of an interrupted write (%.1f MB)",
                                path, size / 1e6)
    return removed


def _acquire(path: Path, command: str) -> int:
    """Open, lock and fill in the lock file `path`; return its descriptor."""
    while True:
        created = True
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            created = False
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:  # released between the two opens: try again
                continue
        locked = _os_lock(fd)
        if locked is False or (locked is None and not created and _live_holder(fd)):
            holder = _read_holder(fd)
            os.close(fd)
            raise FolderInUseError(path.parent, holder)
        if not _still_at(path, fd):  # its holder released and removed it after we opened it
            os.close(fd)
            continue
        if not created:
            holder = _read_holder(fd)
            log.warning("%s: taking over the stale lock of %s, which is no longer running", path.parent,
                        holder.describe() if holder is not None else "a job that recorded nothing")
        _write_holder(fd, command)
        return fd


def _release(path: Path, fd: int) -> None:
    # removed while still locked, so that a newcomer never locks a file about to disappear
    # unnoticed (`_acquire` checks that the file it locked is still the one at `path`)
    with contextlib.suppress(FileNotFoundError):
        if _still_at(path, fd):
            path.unlink()
    os.close(fd)


def _os_lock(fd: int) -> bool | None:
    """Try to lock `fd` exclusively: True locked, False held by another process, None when the
    OS or file system has no such lock."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as error:
        if error.errno in _NO_OS_LOCK:
            return None
        raise
    return True


def _still_at(path: Path, fd: int) -> bool:
    try:
        on_disk = path.stat()
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (opened.st_dev, opened.st_ino)


def _live_holder(fd: int) -> bool:
    """Without OS locks: may the job the lock file names still be running? One that recorded
    nothing counts as running (nothing here can tell)."""
    holder = _read_holder(fd)
    return holder is None or holder.may_be_running()


def _read_holder(fd: int) -> LockHolder | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        record = json.loads(os.read(fd, 65536).decode("utf-8"))
        return LockHolder(int(record["pid"]), str(record["host"]), str(record["started"]), str(record["command"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_holder(fd: int, command: str) -> None:
    record = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": command}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(record) + "\n").encode("utf-8"))
