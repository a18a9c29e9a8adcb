"""`lmkcomp bench executors`: its pairs, its byte-identity check and ratios, and one whole run."""

from __future__ import annotations

import json

import pytest

from lmkcomp.bench.executors import VARIANTS, _fastest_rounds, bench_pairs, comparison_lines, run_executors_benchmark
from lmkcomp.data.layout import LandmarkData
from lmkcomp.errors import UserInputError


def test_pairs_run_query_by_query_and_never_pair_an_image_with_itself():
    ids = [f"{i:016x}" for i in range(30)]
    pairs = bench_pairs(ids, 95, 10, seed=3)
    assert len(pairs) == 95
    assert (pairs["query_id"] != pairs["candidate_id"]).all()
    # ten distinct candidates for each of the first nine images in turn, then five for the tenth
    assert pairs["query_id"].tolist() == [ids[q] for q in range(10) for _ in range(10)][:95]
    assert pairs.groupby("query_id")["candidate_id"].nunique().tolist() == [10] * 9 + [5]
    assert pairs.equals(bench_pairs(ids, 95, 10, seed=3))
    with pytest.raises(UserInputError, match="need more than 10"):
        bench_pairs(ids[:10], 20, 10, seed=0)


def _run(variant: str, extract: float, verify: float, table_digest: str = "t") -> dict:
    return {"variant": variant, "cpus": "1", "extract_images_per_s": extract, "verify_pairs_per_s": verify,
            "digests": {"features": {"manifest.json": "m", "ids.txt": "i"}, "table": {"chunk-000000.parquet": table_digest}}}


def test_rounds_are_compared_byte_for_byte_and_the_fastest_is_kept():
    runs = [_run("local 1 process", 40.0, 1000.0), _run("local 2 processes", 70.0, 1900.0),
            _run("ray 1 node x 1 CPU", 32.0, 800.0), _run("ray 2 nodes x 1 CPU", 48.0, 1400.0),
            # a second round: slower here, faster there, and one table that differs
            _run("local 1 process", 30.0, 1000.0), _run("local 2 processes", 60.0, 2000.0),
            _run("ray 1 node x 1 CPU", 30.0, 700.0, table_digest="other"), _run("ray 2 nodes x 1 CPU", 40.0, 1000.0)]
    rows = _fastest_rounds(runs)
    assert [row["variant"] for row in rows] == [run["variant"] for run in runs[:4]]
    assert [row["identical"] for row in rows] == ["yes", "yes", "NO: table/chunk-000000.parquet", "yes"]
    assert [(row["extract_images_per_s"], row["verify_pairs_per_s"]) for row in rows] == [
        (40.0, 1000.0), (70.0, 2000.0), (32.0, 800.0), (48.0, 1400.0)]
    assert [len(row["runs"]) for row in rows] == [2] * 4
    assert rows[1]["extract_ratio"] == "1.75x"
    lines = comparison_lines(rows)
    # ray 1 node x 2 CPUs did not run: its comparison is left out
    assert lines == [
        "Ray's overhead on one core: ray 1 node x 1 CPU / local 1 process: extract-local 0.80x, verify 0.80x",
        "two Ray nodes over one (<= 2x: two cores): ray 2 nodes x 1 CPU / ray 1 node x 1 CPU: extract-local "
        "1.50x, verify 1.75x",
    ]


@pytest.mark.slow
@pytest.mark.cluster
def test_every_variant_runs_and_gives_identical_artifacts(tiny_root, tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "executors.json"
    table = run_executors_benchmark(LandmarkData(tiny_root), tmp_path / "work", out, images=40, pairs=120,
                                    shard_size=10, chunk_size=30, repeats=1, progress=False)
    rows = json.loads(out.read_text())["rows"]
    assert [row["variant"] for row in rows] == list(VARIANTS)
    assert all("error" not in row and row["identical"] == "yes" for row in rows), rows
    # every variant wrote a pair table of 4 chunks and its manifest
    assert all(len(row["runs"][0]["digests"]["table"]) == 1 + 4 for row in rows)
    assert "two Ray nodes over one" in table and table.count(" yes ") == len(VARIANTS)
