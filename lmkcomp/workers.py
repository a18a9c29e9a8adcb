"""Process pools whose workers end with the process that started them.

A pool worker waits on its task queue for as long as the queue exists, and a killed parent
(kill -9, the OOM killer) never tells it to stop: its workers would keep running, holding
memory and cores, with nobody to send their results to. Every worker of `process_pool` arms
the end of its life on its parent's: on Linux the kernel sends it SIGTERM when the parent dies
(``prctl(PR_SET_PDEATHSIG)``); elsewhere a daemon thread notices that its parent has changed
(the orphan was adopted by another process) and sends itself SIGTERM.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.context import BaseContext
from typing import Any, Callable

# from <linux/prctl.h>
_PR_SET_PDEATHSIG = 1
#: how often the fallback watcher looks at its parent, in seconds
_WATCH_INTERVAL = 0.5


def process_pool(workers: int, initializer: Callable[..., Any] | None = None, initargs: tuple = (),
                 mp_context: BaseContext | None = None) -> ProcessPoolExecutor:
    """A ProcessPoolExecutor whose workers exit when this process dies, and then run
    `initializer(*initargs)` as a ProcessPoolExecutor initializer would."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=mp_context, initializer=_start_worker,
                               initargs=(os.getpid(), initializer, initargs))


def _start_worker(parent_pid: int, initializer: Callable[..., Any] | None, initargs: tuple) -> None:
    exit_with_parent(parent_pid)
    if initializer is not None:
        initializer(*initargs)


def one_thread_each() -> None:
    """In a pool worker: one thread for OpenCV, BLAS / OpenMP and torch (when loaded), since the
    processes are the parallelism and their thread pools would oversubscribe the cores."""
    import cv2
    from threadpoolctl import threadpool_limits

    cv2.setNumThreads(1)
    threadpool_limits(1)
    if "torch" in sys.modules:  # never imported for this: a SIFT worker does not need torch
        sys.modules["torch"].set_num_threads(1)


def exit_with_parent(parent_pid: int) -> None:
    """Make this process receive SIGTERM when its parent `parent_pid` dies (at once if it
    already has)."""
    if not _arm_parent_death_signal(signal.SIGTERM):
        threading.Thread(target=_watch_parent, args=(parent_pid,), name="exit-with-parent", daemon=True).start()
    # the parent may have died before the signal was armed: then nothing would ever send it
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGTERM)


def _arm_parent_death_signal(signum: int) -> bool:
    """Ask Linux to send `signum` to this process when its parent dies; False where it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0
    except (OSError, AttributeError):  # no C library to load, or one without prctl
        return False


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(_WATCH_INTERVAL)
    os.kill(os.getpid(), signal.SIGTERM)
