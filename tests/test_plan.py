"""`lmkcomp plan`: stage times projected onto clusters, against hand-computed figures."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lmkcomp.errors import UserInputError
from lmkcomp.plan import DEFAULT_RATES, Cluster, Rate, Rates, Workload, plan_stages, rates_from

RATES = Rates(
    extract_core=Rate(12.0, "core", "test"),
    extract_gpu=Rate(100.0, "gpu", "test"),
    search=Rate(10.0, "core", "test", database_size=360_000),  # 5 per core at 720,000 rows
    local_features=Rate(50.0, "core", "test"),
    verify=Rate(1000.0, "core", "test"),
)
WORKLOAD = Workload(train=720_000, index=360_000, test=360_000, knn=100, verify_pairs=36_000_000)


def _hours(stages) -> dict[str, list[float]]:
    return {stage.name.split()[0]: stage.hours for stage in stages}


def test_stage_hours_on_one_and_eight_nodes():
    hours = _hours(plan_stages(WORKLOAD, RATES, [Cluster(1, 16, 1), Cluster(8, 16, 1)]))
    # 1,440,000 images / 100 per GPU = 14,400 s = 4 h; 8 GPUs: 0.5 h
    assert hours["embeddings"] == pytest.approx([4.0, 0.5])
    # 720,000 queries / (5 per core x 16) = 9,000 s = 2.5 h (the rate halves at twice the rows)
    assert hours["kNN"] == pytest.approx([2.5, 2.5 / 8])
    # 720,000 / (50 x 16) = 900 s
    assert hours["local"] == pytest.approx([0.25, 0.25 / 8])
    # 36 M / (1,000 x 16) = 2,250 s
    assert hours["verify"] == pytest.approx([0.625, 0.625 / 8])


def test_embeddings_fall_back_to_the_cores_without_a_gpu():
    hours = _hours(plan_stages(WORKLOAD, RATES, [Cluster(2, 16, 0)]))
    # 1,440,000 / (12 x 16 x 2) = 3,750 s
    assert hours["embeddings"] == pytest.approx([3750 / 3600])
    no_gpu_rate = Rates(RATES.extract_core, None, RATES.search, RATES.local_features, RATES.verify)
    assert _hours(plan_stages(WORKLOAD, no_gpu_rate, [Cluster(1, 16, 4)]))["embeddings"] == \
        pytest.approx([1_440_000 / (12 * 16) / 3600])


def test_cleaning_pairs_from_the_options():
    assert Workload.from_options().verify_pairs == 400_000_000
    assert Workload.from_options(max_neighbours=50).verify_pairs == 4_132_914 * 50
    assert Workload.from_options(knn=20, max_neighbours=50).verify_pairs == 4_132_914 * 20
    assert Workload.from_options(verify_pairs=1234, max_neighbours=50).verify_pairs == 1234


def _bench(path, rows, threads=2, **machine):
    path.write_text(json.dumps({"benchmark": "t", "machine": {"threads": threads, **machine}, "rows": rows}))
    return str(path)


def test_rates_from_benchmark_files(tmp_path):
    extract = _bench(tmp_path / "extract.json", [{"name": "fp32", "images_per_s": 10.0},
                                                 {"name": "bf16", "images_per_s": 30.0}])
    scale = _bench(tmp_path / "scale.json", [{"spec": "flat", "database_rows": 1000, "queries_per_s": 40.0},
                                             {"spec": "flat", "database_rows": 4000, "queries_per_s": 8.0}])
    executors = _bench(tmp_path / "executors.json", [
        {"variant": "local 1 process", "extract_images_per_s": 60.0, "verify_pairs_per_s": 900.0},
        {"variant": "ray 1 node x 1 CPU", "extract_images_per_s": 50.0, "verify_pairs_per_s": 800.0},
        {"variant": "ray 2 nodes x 1 CPU", "extract_images_per_s": 90.0, "verify_pairs_per_s": 1200.0}])
    rates = rates_from(extract_bench=extract, search_bench=scale, executors_bench=executors)
    assert rates.extract_core.per_unit == 15.0 and rates.extract_gpu is None  # fastest row / 2 threads
    assert (rates.search.per_unit, rates.search.database_size) == (4.0, 4000)  # largest database, / 2 threads
    assert rates.local_features.per_unit == 60.0
    # two one-thread pool processes, when measured, give the rate of a core: half theirs
    executors_with_pool = _bench(tmp_path / "executors2.json", [
        {"variant": "local 1 process", "extract_images_per_s": 60.0, "verify_pairs_per_s": 900.0},
        {"variant": "local 2 processes", "extract_images_per_s": 100.0, "verify_pairs_per_s": 1700.0}])
    assert rates_from(executors_bench=executors_with_pool).local_features.per_unit == 50.0
    assert rates.two_node_speedup == pytest.approx({"extract-local": 1.8, "verify": 1.5})
    assert rates.verify == DEFAULT_RATES.verify
    on_gpu = _bench(tmp_path / "gpu.json", [{"name": "bf16", "images_per_s": 700.0, "device": "cuda"}],
                    threads=16, gpu="H100")
    assert rates_from(extract_bench=on_gpu).extract_gpu.per_unit == 700.0


def test_a_benchmark_file_without_the_rate_is_one_line(tmp_path):
    wrong = _bench(tmp_path / "verify.json", [{"preset": "fast", "pairs_per_s": 1500.0}])
    with pytest.raises(UserInputError, match="no row with a positive queries_per_s"):
        rates_from(search_bench=wrong)


def test_plan_command_prints_the_table_and_writes_json(tmp_path):
    out = tmp_path / "plan.json"
    result = subprocess.run([sys.executable, "-m", "lmkcomp", "plan", "--nodes", "1,8,32", "--cores", "16", "--gpus",
                             "1", "--extract-images-per-gpu", "500", "--out", str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "32 nodes x 16 cores / 1 GPU" in result.stdout and "assumptions:" in result.stdout
    plan = json.loads(out.read_text())
    stages = {stage["name"].split()[0]: stage["hours"] for stage in plan["stages"]}
    images = 4_132_914 + 761_757 + 117_577
    assert stages["embeddings"] == pytest.approx([images / 500 / n / 3600 for n in (1, 8, 32)])
    # the README's 1,793 pairs/s per core, 16 cores a node
    assert stages["verify"] == pytest.approx([400_000_000 / (1793 * 16 * n) / 3600 for n in (1, 8, 32)])
    assert plan["total_hours"][0] == pytest.approx(sum(hours[0] for hours in stages.values()))
