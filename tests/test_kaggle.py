"""`lmkcomp kaggle`: the offline wheels bundle, the run-time estimate, the staged competition folders."""

from __future__ import annotations

import hashlib
import json
import subprocess
import zipfile
from pathlib import Path

import pytest

from lmkcomp import __version__
from lmkcomp.cli import main
from lmkcomp.data import gldv2, synthetic
from lmkcomp.data.layout import LandmarkData
from lmkcomp.errors import UserInputError
from lmkcomp.kaggle import package
from lmkcomp.kaggle.estimate import (
    Rates,
    SearchRate,
    Workload,
    estimate_kernel,
    extract_rate_from_bench,
    format_estimate,
    search_rate_from_bench,
    verify_rate_from_bench,
)
from lmkcomp.kaggle.package import (
    BundledDependency,
    build_bundle,
    download_wheels,
    manylinux_platforms,
    wheel_requirement,
)
from lmkcomp.kaggle.paths import stage_competition

SOURCE = Path(__file__).resolve().parents[1]
ABC_SHA256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # sha256(b"abc"), FIPS 180-2


# -------------------------------------------------------------------------------- package


def test_wheel_requirement_and_platform_tags():
    assert wheel_requirement("faiss_cpu-1.15.1-cp310-abi3-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl") == \
        "faiss-cpu==1.15.1"
    assert wheel_requirement("lmkcomp-0.1.0-py3-none-any.whl") == "lmkcomp==0.1.0"
    assert manylinux_platforms(19) == ("manylinux_2_19_x86_64", "manylinux_2_18_x86_64", "manylinux_2_17_x86_64",
                                       "manylinux2014_x86_64")


def test_bundle_of_the_kit_alone(tmp_path):
    out = tmp_path / "wheels"
    manifest = build_bundle(out, dependencies=(), source=SOURCE)
    (wheel,) = out.glob("*.whl")
    assert wheel.name == f"lmkcomp-{__version__}-py3-none-any.whl"
    data = wheel.read_bytes()
    assert manifest["files"] == [{"name": wheel.name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}]
    assert manifest["requirements"] == [f"lmkcomp=={__version__}"]
    assert manifest["install"] == ("pip install --no-index --no-deps --find-links /kaggle/input/lmkcomp-wheels "
                                   f"--target /tmp/lmkcomp-packages lmkcomp=={__version__}")
    assert json.loads((out / "manifest.json").read_text()) == manifest
    names = zipfile.ZipFile(wheel).namelist()
    # package data (built-in configs) and this very module travel in the wheel; tests do not
    assert "lmkcomp/configs/gpu-gldv2.yaml" in names and "lmkcomp/kaggle/package.py" in names
    assert not any(name.startswith("tests/") or "__pycache__" in name for name in names)


@pytest.fixture
def fake_kit_wheel(monkeypatch):
    """The kit's wheel as 3 bytes: its real build is tested once, above."""

    def build(source, out):
        out.mkdir(parents=True, exist_ok=True)
        wheel = out / f"lmkcomp-{__version__}-py3-none-any.whl"
        wheel.write_bytes(b"abc")
        return wheel

    monkeypatch.setattr(package, "build_kit_wheel", build)


def test_bundle_with_downloaded_dependencies(tmp_path, fake_kit_wheel):
    calls = []

    def fake_download(requirements, dest, python_version, platforms):
        calls.append((list(requirements), python_version, list(platforms)))
        tag = python_version.replace(".", "")
        (dest / f"pydegensac-0.3.0-cp{tag}-cp{tag}-manylinux2014_x86_64.whl").write_bytes(b"abc")

    dependency = BundledDependency("pydegensac>=0.3.0", "RANSAC")
    out = tmp_path / "wheels"
    manifest = build_bundle(out, [dependency], python_versions=("3.10", "3.11"), platforms=("manylinux2014_x86_64",),
                            source=SOURCE, download=fake_download)
    assert calls == [(["pydegensac>=0.3.0"], "3.10", ["manylinux2014_x86_64"]),
                     (["pydegensac>=0.3.0"], "3.11", ["manylinux2014_x86_64"])]
    downloaded = [entry for entry in manifest["files"] if entry["name"].startswith("pydegensac")]
    assert downloaded == [
        {"name": "pydegensac-0.3.0-cp310-cp310-manylinux2014_x86_64.whl", "size": 3, "sha256": ABC_SHA256},
        {"name": "pydegensac-0.3.0-cp311-cp311-manylinux2014_x86_64.whl", "size": 3, "sha256": ABC_SHA256},
    ]
    # the kit first, then each bundled distribution once, pinned to the version in the folder
    assert manifest["requirements"] == [f"lmkcomp=={__version__}", "pydegensac==0.3.0"]
    assert manifest["dependencies"] == [{"requirement": "pydegensac>=0.3.0", "why": "RANSAC"}]
    assert manifest["python_versions"] == ["3.10", "3.11"]

    # building again into the bundle replaces it: the 3.10 wheel of the first bundle is gone
    manifest = build_bundle(out, [dependency], python_versions=("3.11",), platforms=("manylinux2014_x86_64",),
                            source=SOURCE, download=fake_download)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["manifest.json", f"lmkcomp-{__version__}-py3-none-any.whl",
         "pydegensac-0.3.0-cp311-cp311-manylinux2014_x86_64.whl"])

    # a failed download leaves the earlier bundle as it was, and no half-built folder
    def offline(requirements, dest, python_version, platforms):
        raise UserInputError("pip download pydegensac>=0.3.0 failed: no network")

    with pytest.raises(UserInputError, match="no network"):
        build_bundle(out, [dependency], source=SOURCE, download=offline)
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wheels"]


def test_bundle_refuses_a_folder_of_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserInputError, match="notes.txt, which no bundle made"):
        build_bundle(tmp_path, dependencies=(), source=SOURCE)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    with pytest.raises(UserInputError, match="no pyproject.toml"):
        build_bundle(tmp_path / "new", dependencies=(), source=tmp_path)


def test_download_asks_pip_for_binary_wheels_of_the_target(tmp_path, monkeypatch):
    seen = []

    def fake_run(args, **kwargs):
        seen.append(args)
        return subprocess.CompletedProcess(args, 1 if "bad" in args else 0, "", "ERROR: No matching distribution for bad")

    monkeypatch.setattr(package.subprocess, "run", fake_run)
    download_wheels(["faiss-cpu>=1.9"], tmp_path, "3.10", ["manylinux_2_28_x86_64", "manylinux2014_x86_64"])
    assert seen[0][1:] == ["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.10",
                           "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux2014_x86_64",
                           "--dest", str(tmp_path), "faiss-cpu>=1.9"]
    with pytest.raises(UserInputError, match="pip download bad for Python 3.11 failed: ERROR: No matching"):
        download_wheels(["bad"], tmp_path, "3.11", ["manylinux2014_x86_64"])


def test_package_command(tmp_path, capsys, fake_kit_wheel):
    assert main(["kaggle", "package", str(tmp_path / "b"), "--no-dependencies", "--source", str(SOURCE)]) == 0
    out = capsys.readouterr().out
    assert "1 wheel file(s)" in out and f"lmkcomp=={__version__}" in out and "pip install --no-index" in out


# -------------------------------------------------------------------------------- estimate

# 100 K test images, a 1 M-image train set, 100 images/s, 50 queries/s measured on 500 K rows,
# 2 pairs verified per query at 10 pairs/s/core on 2 cores, local features at 200 images/s:
#   extract test    100,000 / 100                       =  1,000 s
#   extract train 1,000,000 / 100                       = 10,000 s
#   kNN             100,000 / (50 * 500,000 / 1,000,000) =  4,000 s
#   local test      100,000 / 200                       =    500 s
#   local train     min(1,000,000, 200,000) / 200       =  1,000 s
#   verify          200,000 / (10 * 2)                  = 10,000 s
#   total                                               = 26,500 s = 7.361 h
RATES = Rates(100.0, SearchRate(50.0, 500_000), verify_pairs_per_s=10.0, local_images_per_s=200.0, cores=2)
WORKLOAD = Workload("recognition", test_images=100_000, database_images=1_000_000, verify_per_query=2)


def test_estimate_stages_by_hand():
    estimate = estimate_kernel(WORKLOAD, RATES)
    assert [(s.name, s.items, round(s.seconds, 6)) for s in estimate.stages] == [
        ("extract test", 100_000, 1000.0), ("extract train", 1_000_000, 10000.0),
        ("kNN test vs train", 100_000, 4000.0), ("local features test", 100_000, 500.0),
        ("local features train candidates", 200_000, 1000.0), ("verify 2 pairs per query", 200_000, 10000.0),
    ]
    assert estimate.total_seconds == pytest.approx(26_500.0)
    assert not estimate.over_limit
    text = format_estimate(estimate)
    assert "7.36" in text.splitlines()[-2] and "82% of the 9 h limit" in text and "WARNING" not in text

    over = estimate_kernel(WORKLOAD, RATES, limit_hours=7.0)
    assert over.over_limit
    assert format_estimate(over).splitlines()[-1] == "WARNING: the projected 7.36 h exceed the 7 h limit by 0.36 h"


def test_estimate_retrieval_defaults_and_precomputed_index():
    # GLDv2 sizes: 117,577 test queries against the 761,757-image index; no index extraction
    rates = Rates(117_577 / 3600, SearchRate(10.0))
    estimate = estimate_kernel(Workload("retrieval", extract_database=False), rates)
    assert [(s.name, s.items) for s in estimate.stages] == [("extract test", 117_577), ("kNN test vs index", 117_577)]
    assert estimate.stages[0].seconds == pytest.approx(3600.0)
    assert estimate.stages[1].seconds == pytest.approx(11_757.7)
    # recognition's default database is GLDv2-clean: 1,580,470 train images
    recognition = estimate_kernel(Workload("recognition"), rates)
    assert recognition.stages[1].items == 1_580_470


def test_estimate_errors():
    with pytest.raises(UserInputError, match="local feature images/s"):
        estimate_kernel(WORKLOAD, Rates(100.0, SearchRate(50.0)))
    with pytest.raises(UserInputError, match="extract images/s must be a positive number"):
        estimate_kernel(WORKLOAD, Rates(0.0, SearchRate(50.0)))
    with pytest.raises(UserInputError, match="pairs verified per query must be >= 0"):
        estimate_kernel(Workload("retrieval", verify_per_query=-1), RATES)
    with pytest.raises(UserInputError, match="unknown task"):
        estimate_kernel(Workload("segmentation"), RATES)


def bench_file(path: Path, rows: list[dict]) -> Path:
    path.write_text(json.dumps({"benchmark": "test", "machine": {}, "rows": rows}))
    return path


def test_rates_from_bench_files(tmp_path):
    extract = bench_file(tmp_path / "extract.json", [
        {"name": "fp32", "backbone": "resnet18", "image_size": 224, "images_per_s": 7.5},
        {"name": "bf16", "backbone": "resnet18", "image_size": 224, "images_per_s": 12.0},
        {"name": "compile", "error": "failed"},
    ])
    assert extract_rate_from_bench(extract)[0] == 12.0
    assert extract_rate_from_bench(extract, "fp32")[0] == 7.5
    with pytest.raises(UserInputError, match="no measured name 'compile'; measured: fp32, bf16"):
        extract_rate_from_bench(extract, "compile")
    verify = bench_file(tmp_path / "verify.json", [{"preset": "fast", "pairs_per_s": 400.0},
                                                   {"preset": "official-delf", "pairs_per_s": 20.0}])
    assert verify_rate_from_bench(verify)[0] == 400.0
    search = bench_file(tmp_path / "search.json", [
        {"variant": "torch", "size": 10_000, "spec": "torch", "queries_per_s": 5000.0, "projected": False},
        {"variant": "torch", "size": 100_000, "spec": "torch", "queries_per_s": 500.0, "projected": False},
        {"variant": "ivf-pq", "size": 100_000, "spec": "IVF256,PQ32", "queries_per_s": 9000.0, "projected": False},
        {"variant": "torch (projected)", "size": 1_000_000, "spec": "torch", "queries_per_s": 50.0, "projected": True},
    ])
    rate, _ = search_rate_from_bench(search)
    assert rate == SearchRate(500.0, 100_000)
    # measured at 100,000 rows, scaled to the 761,757-image index: 500 * 100,000 / 761,757 queries/s
    assert rate.at(761_757) == pytest.approx(65.6377296)
    assert search_rate_from_bench(search, "ivf-pq")[0] == SearchRate(9000.0, 100_000)
    with pytest.raises(UserInputError, match="no measured variant 'flat'.*measured: ivf-pq, torch"):
        search_rate_from_bench(search, "flat")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(UserInputError, match="bad.json: not a benchmark JSON file"):
        extract_rate_from_bench(tmp_path / "bad.json")


def test_estimate_command_exit_status(tmp_path, capsys):
    extract = bench_file(tmp_path / "extract.json", [{"name": "fp32", "images_per_s": 100.0}])
    args = ["kaggle", "estimate", "--task", "recognition", "--extract-bench", str(extract),
            "--search-queries-per-s", "50", "--search-database-size", "500000", "--test-images", "100000",
            "--database-images", "1000000", "--verify-per-query", "2", "--verify-pairs-per-s", "10",
            "--local-images-per-s", "200"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "extract rate: " + str(extract) in out and "82% of the 9 h limit" in out
    assert main(args + ["--limit-hours", "7"]) == 1
    assert "WARNING: the projected 7.36 h exceed the 7 h limit" in capsys.readouterr().out
    assert main(["kaggle", "estimate", "--task", "retrieval", "--extract-images-per-s", "10"]) == 2
    assert "give --search-bench" in capsys.readouterr().err


# -------------------------------------------------------------------------------- stage


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> LandmarkData:
    root = tmp_path_factory.mktemp("tiny")
    synthetic.generate(root, synthetic.preset_config("tiny", long_side=64), seed=3, workers=1, progress=False)
    return LandmarkData(root)


def test_stage_competitions(tiny, tmp_path):
    assert main(["kaggle", "stage", str(tiny.root), str(tmp_path)]) == 0
    recognition = LandmarkData(tmp_path / "landmark-recognition-2021", "kaggle")
    assert (tmp_path / "landmark-recognition-2021" / "train.csv").read_text().splitlines()[0] == "id,landmark_id"
    assert recognition.train_labels().equals(tiny.train_labels())
    assert recognition.split_ids("test") == tiny.split_ids("test")
    assert gldv2.read_sample_submission(recognition.file("sample_submission")) == tiny.split_ids("test")
    retrieval = tmp_path / "landmark-retrieval-2021"
    assert sorted(p.name for p in retrieval.iterdir()) == ["index", "sample_submission.csv", "test"]
    assert (retrieval / "sample_submission.csv").read_text().splitlines()[:2] == ["id,images", f"{tiny.split_ids('test')[0]},"]
    assert LandmarkData(retrieval, "kaggle").split_ids("index") == tiny.split_ids("index")
    # staging again refreshes; a real folder in a link's place is refused
    stage_competition(tiny, tmp_path, "retrieval")
    (retrieval / "index").unlink()
    (retrieval / "index").mkdir()
    with pytest.raises(UserInputError, match="is not a link"):
        stage_competition(tiny, tmp_path, "retrieval")
