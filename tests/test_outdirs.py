"""Safe output folders: one job per folder (a lock naming its holder, stale locks taken over),
leftover temporary files removed, pool workers that die with their parent, files created with
the user's umask."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from lmkcomp.cli import main
from lmkcomp.fileio import is_atomic_temp
from lmkcomp.outdir import LOCK_NAME, FolderInUseError, output_folder

HOLDER = """
import sys
from lmkcomp.outdir import output_folder

with output_folder(sys.argv[1], "lmkcomp verify --out " + sys.argv[1]):
    print("ready", flush=True)
    sys.stdin.read()
"""

# Starts a pool of two workers that each report their pid and block, then kills itself with
# SIGKILL: nothing of the pool's own shutdown runs.
POOL_PARENT = """
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path


def report_and_block(folder):
    Path(folder, str(os.getpid())).touch()
    time.sleep(120)


if __name__ == "__main__":
    folder, kind = sys.argv[1], sys.argv[2]
    if kind == "extract-local":
        from lmkcomp.local.extract import _worker_pool
        from lmkcomp.local.extractors import create_local_extractor

        pool = _worker_pool(2, create_local_extractor("sift"))
    else:
        from lmkcomp.workers import process_pool

        pool = process_pool(2, mp_context=multiprocessing.get_context(kind))
    for _ in range(2):
        pool.submit(report_and_block, folder)
    deadline = time.monotonic() + 60
    while len(os.listdir(folder)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.fixture
def held_folder(tmp_path):
    """A folder locked by another live process: (folder, that process's pid)."""
    folder = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        yield folder, holder.pid
    finally:
        holder.communicate("", timeout=30)
    assert holder.returncode == 0 and not (folder / LOCK_NAME).exists()


@pytest.mark.parametrize("command", [
    ["verify", "--pairs", "pairs.csv", "--queries-local", "features", "--out", "{out}"],
    ["train", "cpu-tiny", "--data", "nowhere", "--out", "{out}"],
    ["extract-local", "--method", "sift", "--data", "nowhere", "--split", "test", "--out", "{out}"],
    ["make-dataset", "{out}", "--preset", "tiny", "--quiet"],
], ids=lambda command: command[0])
def test_a_second_job_on_a_busy_folder_stops_naming_the_first(held_folder, command, capsys):
    folder, pid = held_folder
    code = main([part.format(out=folder) for part in command])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == (f"lmkcomp: error: {folder} is in use by pid {pid} on host {socket.gethostname()} "
                           f"(started {json.loads((folder / LOCK_NAME).read_text())['started']}: lmkcomp verify "
                           f"--out {folder}); wait for it to finish or choose another output folder")
    assert sorted(p.name for p in folder.iterdir()) == [LOCK_NAME]  # nothing written


def test_one_process_cannot_hold_a_folder_twice(tmp_path):
    with output_folder(tmp_path / "out", "first"):
        with pytest.raises(FolderInUseError, match=f"in use by pid {os.getpid()} .*: first\\)"):
            with output_folder(tmp_path / "out", "second"):
                pass
    assert not (tmp_path / "out" / LOCK_NAME).exists()


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.parametrize("pid", [dead_pid, os.getpid], ids=["dead pid", "live pid, no OS lock"])
def test_a_stale_lock_is_reported_and_taken_over(tmp_path, pid, caplog, capsys):
    folder = tmp_path / "out"
    folder.mkdir()
    stale = {"pid": pid(), "host": socket.gethostname(), "started": "2026-01-01T00:00:00+00:00",
             "command": "lmkcomp verify"}
    (folder / LOCK_NAME).write_text(json.dumps(stale))
    with caplog.at_level(logging.WARNING, logger="lmkcomp.outdir"):
        code = main(["verify", "--pairs", str(tmp_path / "pairs.csv"), "--queries-local", "f", "--out", str(folder)])
    # the command itself ran (and stopped at its missing pair list)
    assert code == 2 and "pairs.csv" in capsys.readouterr().err
    assert f"taking over the stale lock of pid {stale['pid']} on host" in caplog.text
    assert not (folder / LOCK_NAME).exists()


def test_without_os_locks_the_pid_decides(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr("lmkcomp.outdir.fcntl", None)  # as on Windows, or a file system without flock
    folder = tmp_path / "out"
    with output_folder(folder, "first"):
        with pytest.raises(FolderInUseError, match=f"in use by pid {os.getpid()} "):
            with output_folder(folder, "second"):
                pass
    gone = {"pid": dead_pid(), "host": socket.gethostname(), "started": "2026-01-01T00:00:00+00:00", "command": "x"}
    folder.mkdir()
    (folder / LOCK_NAME).write_text(json.dumps(gone))
    with caplog.at_level(logging.WARNING, logger="lmkcomp.outdir"), output_folder(folder, "third"):
        assert json.loads((folder / LOCK_NAME).read_text())["command"] == "third"
    assert f"stale lock of pid {gone['pid']}" in caplog.text
    # a job of another host cannot be checked from here: it is taken to be running
    (folder / LOCK_NAME).write_text(json.dumps({**gone, "host": "elsewhere"}))
    with pytest.raises(FolderInUseError, match=f"pid {gone['pid']} on host elsewhere"):
        with output_folder(folder, "fourth"):
            pass


def test_leftover_temporary_files_are_removed_when_a_job_takes_the_folder(tmp_path):
    folder = tmp_path / "run"
    (folder / "tensorboard").mkdir(parents=True)
    (folder / "other-job").mkdir()
    (folder / "other-job" / LOCK_NAME).write_text("{}")
    _, made_by_mkstemp = tempfile.mkstemp(dir=folder, prefix=".checkpoint-last.pt.", suffix=".tmp")
    leftovers = [Path(made_by_mkstemp), folder / ".metrics.csv.k3x_9q0a.tmp",
                 folder / "tensorboard" / ".events.abcdefgh.tmp"]
    kept = [folder / "notes.tmp", folder / ".notes.tmp", folder / ".a.b.short.tmp", folder / "checkpoint-last.pt",
            folder / "other-job" / ".chunk-0.parquet.abcd1234.tmp"]
    for path in leftovers + kept:
        path.write_bytes(b"x")
    assert all(is_atomic_temp(path.name) for path in leftovers)
    # the command fails on its missing pair list, after taking the folder
    assert main(["verify", "--pairs", str(tmp_path / "pairs.csv"), "--queries-local", "f", "--out", str(folder)]) == 2
    assert [path for path in leftovers if path.exists()] == []
    assert [path for path in kept if not path.exists()] == []


def test_a_folder_made_for_a_job_that_wrote_nothing_is_removed(tmp_path):
    assert main(["verify", "--pairs", str(tmp_path / "pairs.csv"), "--queries-local", "f",
                 "--out", str(tmp_path / "new" / "run")]) == 2
    assert not (tmp_path / "new" / "run").exists()


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_atomic_writes_get_the_users_umask(tmp_path, umask):
    script = ("import os, sys\n"
              f"os.umask({umask})\n"
              "from lmkcomp.fileio import atomic_write_bytes\n"
              "atomic_write_bytes(sys.argv[1], b'x')\n"
              "open(sys.argv[2], 'wb').close()\n")
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "atomic"), str(tmp_path / "plain")], check=True)
    mode = (tmp_path / "atomic").stat().st_mode & 0o777
    assert mode == 0o666 & ~umask == (tmp_path / "plain").stat().st_mode & 0o777


def is_running(pid: int) -> bool:
    """True for a live process (a zombie, dead but not yet reaped, is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("kind", ["extract-local", "fork"])
def test_pool_workers_exit_when_their_parent_is_killed(tmp_path, kind):
    script = tmp_path / "pool_parent.py"
    script.write_text(POOL_PARENT)
    folder = tmp_path / "pids"
    folder.mkdir()
    # no captured output: the orphaned workers would hold the pipes open
    parent = subprocess.run([sys.executable, str(script), str(folder), kind], timeout=120)
    assert parent.returncode == -signal.SIGKILL
    workers = [int(path.name) for path in folder.iterdir()]
    assert len(workers) == 2
    try:
        deadline = time.monotonic() + 5
        while any(map(is_running, workers)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [pid for pid in workers if is_running(pid)] == []
    finally:
        for pid in workers:  # on failure, end the workers this test started
            if is_running(pid):
                os.kill(pid, signal.SIGKILL)
