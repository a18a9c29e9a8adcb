"""`lmkcomp bench submission`: wall time and peak memory of `lmkcomp validate` and `lmkcomp score`
on a large synthetic retrieval submission.

Data (seeded, written once under a work folder): an index of 761,757 random ids (the GLDv2 index
size); `size_mb` MB of retrieval rows, each a random test id and 100 index ids drawn uniformly
from the index (1,717 bytes a row: 200 MB, 2e8 bytes, is 116,482 rows, about GLDv2's 117,577
test images); `sample_submission.csv` listing the test ids; `retrieval_solution_v2.1.csv` where
every test id is a scored query (a third Public, the rest Private) whose 5 relevant index ids
are its own predictions at ranks r, r + 20, ..., r + 80 (r uniform in 0..19), so the scores are
not 0. Every query scored is the worst case for the scorer, which keeps the predictions of scored
queries only (most GLDv2 test images are distractors, Ignored by its retrieval solution);
`score --split public` keeps a third.

Each command runs `repeats` times, each in a fresh process (`python -m lmkcomp.bench.submission
ARGV_JSON`, which calls `lmkcomp.cli.main`): `wall_s` is the fastest run's wall time as the parent
sees it (interpreter start included; every run's is in `wall_s_runs`), `peak_rss_mb` the largest
peak resident set (VmHWM, `common.peak_resident_mb`, in MiB), and `rss_per_file` that peak divided
by the submission's size (both in bytes). `file_mb` is in 1e6 bytes.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

from lmkcomp.bench.common import peak_resident_mb, report, run_variant

INDEX_SIZE = 761_757
RETRIEVED = 100
RELEVANT = 5
ID_CHARS = 16
#: a row: id, comma, 100 ids each followed by a space or (the last) the line end
ROW_BYTES = ID_CHARS + 1 + RETRIEVED * (ID_CHARS + 1)
ROWS_PER_BLOCK = 8192


def random_ids(rng, count: int):
    """`count` random 16-hex-character ids as a (count, 16) uint8 array of ASCII codes."""
    import numpy as np

    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    return digits[rng.integers(0, 16, size=(count, ID_CHARS))]


def write_synthetic_submission(folder: Path, size_mb: float, seed: int) -> dict[str, Path]:
    """Write the benchmark's submission, sample submission and solution under `folder` (see the
    module docstring); return their paths by name (`submission`, `test_ids`, `solution`)."""
    import numpy as np

    from lmkcomp.data import gldv2

    rng = np.random.default_rng(seed)
    rows = max(1, int(size_mb * 1e6) // ROW_BYTES)
    index = random_ids(rng, INDEX_SIZE)
    test = random_ids(rng, rows)
    spacing = RETRIEVED // RELEVANT
    relevant = []  # per block: (count, RELEVANT) positions in the index
    paths = {"submission": folder / "submission.csv", "test_ids": folder / "sample_submission.csv",
             "solution": folder / "retrieval_solution_v2.1.csv"}
    with paths["submission"].open("wb") as handle:
        handle.write(b"id,images\n")
        for start in range(0, rows, ROWS_PER_BLOCK):
            count = min(ROWS_PER_BLOCK, rows - start)
            block = np.empty((count, ROW_BYTES), dtype=np.uint8)
            block[:, :ID_CHARS] = test[start:start + count]
            block[:, ID_CHARS] = ord(",")
            retrieved = block[:, ID_CHARS + 1:].reshape(count, RETRIEVED, ID_CHARS + 1)
            drawn = rng.integers(0, INDEX_SIZE, size=(count, RETRIEVED))
            retrieved[:, :, :ID_CHARS] = index[drawn]
            ranks = rng.integers(0, spacing, size=(count, 1)) + spacing * np.arange(RELEVANT)
            relevant.append(np.take_along_axis(drawn, ranks, axis=1))
            retrieved[:, :, ID_CHARS] = ord(" ")
            retrieved[:, -1, ID_CHARS] = ord("\n")
            handle.write(block.tobytes())
    test_ids = [row.tobytes().decode("ascii") for row in test]
    gldv2.write_sample_submission(paths["test_ids"], test_ids)
    answers = {image_id: [index[one].tobytes().decode("ascii") for one in positions]
               for image_id, positions in zip(test_ids, np.concatenate(relevant))}
    usage = dict(zip(test_ids, np.where(rng.random(rows) < 1 / 3, "Public", "Private").tolist()))
    gldv2.write_solution_csv(paths["solution"], gldv2.Solution("retrieval", answers, usage))
    return paths


def _measure(name: str, argv: list[str], file_bytes: int, repeats: int) -> dict:
    """One command, `repeats` times, each in a fresh process: the fastest wall time (the least
    disturbed by other jobs on the machine), every wall time, the largest peak resident set and
    the last run's output line."""
    walls, peaks = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        row = run_variant(__name__, {"command": name, "argv": argv}, timeout=3600)
        walls.append(time.perf_counter() - start)
        if "error" in row:
            return row
        peaks.append(row["peak_rss_mb"])
    return {**row, "wall_s": min(walls), "wall_s_runs": walls, "peak_rss_mb": max(peaks),
            "rss_per_file": max(peaks) * 2**20 / file_bytes}


def run_submission_benchmark(size_mb: float, seed: int, out: str | Path, workdir: str | Path | None = None,
                             repeats: int = 3) -> str:
    """Write the synthetic files (in `workdir`, else a temporary folder removed afterwards),
    measure `validate` and `score` (all rows, then the Public ones) on them, `repeats` runs each,
    write JSON to `out`; return the table."""
    with contextlib.ExitStack() as stack:
        folder = Path(workdir) if workdir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        folder.mkdir(parents=True, exist_ok=True)
        paths = write_synthetic_submission(folder, size_mb, seed)
        file_bytes = paths["submission"].stat().st_size
        rows = [
            _measure("validate", ["validate", "--task", "retrieval", "--submission", str(paths["submission"]),
                                  "--test-ids", str(paths["test_ids"])], file_bytes, repeats),
            *(_measure(f"score --split {split}", ["score", "--task", "retrieval", "--solution",
                                                  str(paths["solution"]), "--submission", str(paths["submission"]),
                                                  "--split", split], file_bytes, repeats)
              for split in ("all", "public")),
        ]
    for row in rows:
        row.update(file_mb=file_bytes / 1e6, seed=seed)
        del row["argv"]  # temporary paths
    title = f"submission: lmkcomp validate / score of a {file_bytes / 1e6:.0f} MB retrieval submission (seed {seed})"
    columns = [("command", "command"), ("wall_s", "wall s"), ("peak_rss_mb", "peak RSS MiB"),
               ("rss_per_file", "RSS / file"), ("exit_code", "exit")]
    return report(title, rows, columns, out, ratio_of="wall_s")


def _run_command(spec: dict) -> dict:
    """Run `lmkcomp <argv>` in this process; its exit code, peak resident set and last output line
    (the result, or the error message)."""
    from lmkcomp.cli import main

    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        code = main(spec["argv"])
    lines = output.getvalue().strip().splitlines()
    return {"exit_code": code, "peak_rss_mb": peak_resident_mb(), "output": lines[-1] if lines else ""}


if __name__ == "__main__":
    print(json.dumps(_run_command(json.loads(sys.argv[1]))))
