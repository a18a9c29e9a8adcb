"""Shared benchmark plumbing: run each variant in a fresh process (so peak memory is its own and
torch.compile caches do not leak between variants), then print a table with ratios against the
first variant and write JSON."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

from threadpoolctl import threadpool_limits

from lmkcomp.fileio import atomic_write

if TYPE_CHECKING:  # torch loads only where a benchmark needs it (the search bench does not)
    import torch


def run_variant(module: str, spec: dict, timeout: float = 1800) -> dict:
    """Run `python -m module JSON` and parse the JSON line it prints last."""
    completed = subprocess.run([sys.executable, "-m", module, json.dumps(spec)], capture_output=True, text=True,
                               timeout=timeout, check=False)
    if completed.returncode != 0:
        return {**spec, "error": completed.stderr.strip().splitlines()[-1] if completed.stderr.strip() else "failed"}
    return {**spec, **json.loads(completed.stdout.strip().splitlines()[-1])}


def peak_resident_mb() -> float:
    """Peak resident set of this process so far, in MiB.

    Linux's VmHWM belongs to this program's memory map; `ru_maxrss` would also count the parent's
    resident set at the fork that started a variant's process (it survives the exec), so it is
    only the fallback where /proc is missing.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def resident_anonymous_mb() -> float:
    """Anonymous resident memory of this process now (RssAnon), in MiB; 0 where /proc is missing.

    Unlike the resident set it leaves out file pages: a memory-mapped store read block by block
    is page cache the kernel can drop, not memory the process holds."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


class AnonymousPeak:
    """Peak of `resident_anonymous_mb` while the `with` block runs, sampled every `interval` s
    by a thread (Linux keeps no high-water mark of anonymous memory); `.mb` after the block."""

    def __init__(self, interval: float = 0.01):
        self.interval = interval
        self.mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            self.mb = max(self.mb, resident_anonymous_mb())
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> "AnonymousPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.mb = max(self.mb, resident_anonymous_mb())


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process: CUDA allocator peak on GPU, peak resident set on CPU."""
    if device.type == "cuda":
        import torch

        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_resident_mb()


def machine() -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def report(title: str, rows: Sequence[dict], columns: Sequence[tuple[str, str]], out: str | Path, ratio_of: str) -> str:
    """Table text (with `ratio_of` relative to the first row) and the JSON file at `out`."""
    base = rows[0].get(ratio_of) if rows else None
    table = [[label for _, label in columns] + ["ratio"]]
    for row in rows:
        cells = []
        for key, _ in columns:
            value = row.get(key, "")
            value = "-" if value is None else value  # undefined, e.g. an AUC without both classes
            # scores in [0, 1] need 4 decimals; throughputs, seconds and megabytes need 1
            cells.append((f"{value:.4f}" if abs(value) <= 1 else f"{value:.1f}") if isinstance(value, float) else str(value))
        value = row.get(ratio_of)
        cells.append(f"{value / base:.2f}x" if isinstance(value, float) and base else row.get("error", "-"))
        table.append(cells)
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    lines = [title] + ["  ".join(cell.rjust(width) for cell, width in zip(line, widths)) for line in table]
    with atomic_write(out, "w", encoding="utf-8") as handle:
        json.dump({"benchmark": title, "machine": machine(), "rows": list(rows)}, handle, indent=2)
        handle.write("\n")
    return "\n".join(lines)


@contextmanager
def one_core() -> Iterator[None]:
    """OpenCV, every BLAS / OpenMP pool (faiss's too) and torch limited to one thread, then
    restored: per-core rates and per-query latencies that threads contending on a shared
    machine cannot distort."""
    import cv2
    import torch

    previous_cv2, previous_torch = cv2.getNumThreads(), torch.get_num_threads()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        cv2.setNumThreads(previous_cv2)
        torch.set_num_threads(previous_torch)
