"""The CLI's error boundary: each bad input below gets one line naming the file or setting and
exit code 2 (it was a traceback before); `--debug` shows the traceback; a genuine bug keeps it."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest
import torch
from test_search import one_faiss_thread  # noqa: F401  (autouse: faiss k-means on one thread)

from lmkcomp.commands import demo as demo_commands
from lmkcomp.cli import EXIT_USER_ERROR, main
from lmkcomp.features.store import EmbeddingWriter

ID = "0123456789abcdef"


def one_error_line(capsys) -> str:
    """The single stderr line of a user error, without its prefix."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("lmkcomp: error: ")
    return lines[0].removeprefix("lmkcomp: error: ")


def no_gpu(monkeypatch) -> None:
    """Make torch see no GPU, whatever machine runs the test."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


# --------------------------------------------------------------------------------------------
# Typed settings: --set is checked against the verifier's and extractor's declared fields. The
# settings are checked before any file is read, so the paths need not exist.


@pytest.mark.parametrize(("setting", "expected"), [
    ("ratio=abc", "verification option ratio: expected float, got 'abc'"),
    ("residual=abc", "verification option residual: expected float, got 'abc'"),
    ("residual=nan", "verification option residual: expected float, got 'nan'"),  # YAML's NaN is .nan
    ("residual=.nan", "residual must be a positive, finite number of pixels, got nan"),
    ("residual=.inf", "residual must be a positive, finite number of pixels, got inf"),
    ("iterations=2.5", "verification option iterations: expected int, got 2.5"),
    ("max_distance=.inf", "max_distance must be positive and finite, got inf"),
    ("bogus=1", "unknown verification option 'bogus'; valid options: confidence, iterations, matcher, "
                "max_distance, min_putative, model, ratio, reference_side, residual, seed"),
])
def test_verify_settings_are_typed_and_ranged(tmp_path, capsys, setting, expected):
    code = main(["verify", "--pairs", str(tmp_path / "pairs.csv"), "--queries-local", str(tmp_path / "features"),
                 "--out", str(tmp_path / "table"), "--set", setting, "--quiet"])
    assert code == EXIT_USER_ERROR
    assert one_error_line(capsys) == expected


@pytest.mark.parametrize(("setting", "expected"), [
    ("contrast_threshold=abc", "sift option contrast_threshold: expected float, got 'abc'"),
    ("contrast_threshold=.inf", "contrast_threshold must be positive and finite, got inf"),
    ("max_features=abc", "sift option max_features: expected int, got 'abc'"),
    ("bogus=1", "unknown sift option 'bogus'; valid options: contrast_threshold, max_features, max_side"),
    ("root=true", "unknown sift option 'root'; valid options: contrast_threshold, max_features, max_side"),
])
def test_extract_local_settings_are_typed_and_ranged(tmp_path, capsys, setting, expected):
    code = main(["extract-local", "--method", "sift", "--data", str(tmp_path), "--split", "test",
                 "--out", str(tmp_path / "store"), "--set", setting, "--quiet"])
    assert code == EXIT_USER_ERROR
    assert one_error_line(capsys) == expected


@pytest.mark.slow  # imports timm and the DELF model (about 7 s on 2 shared cores)
def test_extract_local_delf_torch_settings(tmp_path, capsys, monkeypatch):
    base = ["extract-local", "--method", "delf-torch", "--data", str(tmp_path), "--split", "test",
            "--out", str(tmp_path / "store"), "--set", f"checkpoint={tmp_path / 'delf.pt'}", "--quiet"]
    assert main([*base, "--set", "scales=abc"]) == EXIT_USER_ERROR
    assert one_error_line(capsys) == "delf-torch option scales: expected a list, got 'abc'"
    no_gpu(monkeypatch)
    assert main([*base, "--set", "device=cuda"]) == EXIT_USER_ERROR
    assert one_error_line(capsys) == "device 'cuda': torch sees no CUDA GPU on this machine; use cpu or auto"


# --------------------------------------------------------------------------------------------
# CSVs


def test_header_only_train_csv(tmp_path, capsys):
    (tmp_path / "train.csv").write_text("id,url,landmark_id\n")
    assert main(["baseline", str(tmp_path), "--out", str(tmp_path / "submissions"), "--quiet"]) == EXIT_USER_ERROR
    assert one_error_line(capsys) == (f"{tmp_path / 'train.csv'}: no images: the file holds only its header; the "
                                      "train split needs at least one labelled image")


def test_landmark_id_beyond_int64(tmp_path, capsys):
    from lmkcomp.data.gldv2 import read_train_csv

    path = tmp_path / "train.csv"
    path.write_text(f"id,landmark_id\n{ID},00000009223372036854775807\n")  # the limit, with leading zeros
    assert read_train_csv(path)["landmark_id"].tolist() == [2**63 - 1]
    big = "99999999999999999999999"
    path.write_text(f"id,url,landmark_id\n{ID},http://x,{big}\n")
    assert main(["baseline", str(tmp_path), "--out", str(tmp_path / "submissions"), "--quiet"]) == EXIT_USER_ERROR
    assert one_error_line(capsys) == (f"{path}:2: landmark_id {big!r} is too large "
                                      "(at most 9223372036854775807, the int64 limit)")


# --------------------------------------------------------------------------------------------
# faiss


@pytest.fixture
def small_stores(tmp_path):
    """300 database and 20 query vectors (64-d) as embedding stores."""
    rng = np.random.default_rng(0)
    paths = {}
    for name, count, offset in (("database", 300, 0), ("queries", 20, 10**6)):
        ids = [f"{i + offset:016x}" for i in range(count)]
        writer = EmbeddingWriter(tmp_path / name, ids, 64, dtype="float32")
        for k, rows in writer.pending_shards():
            writer.write_shard(k, rng.standard_normal((count, 64)).astype(np.float32)[rows])
        writer.finish()
        paths[name] = str(tmp_path / name)
    return paths


@pytest.mark.parametrize(("spec", "expected"), [
    ("IVF1024,PQ32", "faiss index 'IVF1024,PQ32': IVF1024 needs at least 1024 training vectors (one per inverted "
                     "list), got 300; lower the number in IVF1024, or search exactly (--index-spec flat)"),
    ("IVF16,PQ8x10", "faiss index 'IVF16,PQ8x10': PQ8x10 needs at least 1024 training vectors (one per centroid of "
                     "its 10-bit sub-quantizers), got 300; lower the number in PQ8x10, or search exactly "
                     "(--index-spec flat)"),
    ("PCA128,IVF16,Flat", "faiss index 'PCA128,IVF16,Flat' cannot be trained on 300 vectors: PCA matrix cannot "
                          "output 128 dimensions from 64"),
])
def test_search_index_too_large_for_the_database(small_stores, tmp_path, capsys, spec, expected):
    code = main(["search", "--queries", small_stores["queries"], "--database", small_stores["database"],
                 "--out", str(tmp_path / "knn"), "--index-spec", spec, "--quiet"])
    assert code == EXIT_USER_ERROR
    assert one_error_line(capsys) == expected


# --------------------------------------------------------------------------------------------
# Devices


def test_extract_on_a_missing_gpu(tmp_path, capsys, monkeypatch):
    no_gpu(monkeypatch)
    code = main(["extract", "--checkpoint", str(tmp_path / "model.pt"), "--data", str(tmp_path), "--split", "test",
                 "--out", str(tmp_path / "store"), "--device", "cuda"])
    assert code == EXIT_USER_ERROR
    assert one_error_line(capsys) == "--device 'cuda': torch sees no CUDA GPU on this machine; use cpu or auto"


@pytest.mark.parametrize(("name", "expected"), [
    ("cuda:1", "device 'cuda:1': torch sees no CUDA GPU on this machine; use cpu or auto"),
    ("gpu", "device 'gpu': unknown device; expected auto, cpu, cuda or cuda:N"),
    ("meta", "device 'meta': not supported; expected auto, cpu, cuda or cuda:N"),
])
def test_device_settings_are_checked(monkeypatch, name, expected):
    from lmkcomp.devices import resolve_device
    from lmkcomp.errors import UserInputError

    no_gpu(monkeypatch)
    with pytest.raises(UserInputError) as error:
        resolve_device(name)
    assert str(error.value) == expected
    assert resolve_device("auto") == torch.device("cpu")


# --------------------------------------------------------------------------------------------
# OS errors on user paths


def test_output_below_a_file(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    code = main(["make-dataset", str(tmp_path / "afile" / "sub"), "--preset", "tiny", "--quiet"])
    assert code == EXIT_USER_ERROR
    assert one_error_line(capsys) == f"{tmp_path / 'afile' / 'sub'}: cannot create the output folder (Not a directory)"


@pytest.mark.parametrize(("error", "expected"), [
    (PermissionError(errno.EACCES, "Permission denied", "/data/train.csv"), "/data/train.csv: Permission denied"),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "/data/out"), "/data/out: Is a directory"),
    (OSError(errno.EXDEV, "Invalid cross-device link", "/a", "/b"), None),
    (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
])
def test_os_errors_on_user_paths_are_one_line(monkeypatch, capsys, error, expected):
    def failing(_args):
        raise error

    monkeypatch.setattr(demo_commands, "_cmd_baseline", failing)
    if expected is None:  # not a user's path: a bug, traceback kept
        with pytest.raises(OSError):
            main(["baseline", "anywhere"])
        return
    assert main(["baseline", "anywhere"]) == EXIT_USER_ERROR
    assert one_error_line(capsys) == expected


def test_disk_full_names_the_file_being_written(tmp_path, monkeypatch):
    from lmkcomp import fileio
    from lmkcomp.cli import expected_failure_message

    def full(_fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fileio.os, "fsync", full)
    with pytest.raises(OSError) as error:
        fileio.atomic_write_bytes(tmp_path / "out.bin", b"data")
    assert expected_failure_message(error.value) == f"{tmp_path / 'out.bin'}: No space left on device"
    assert os.listdir(tmp_path) == []  # the temporary file is gone


# --------------------------------------------------------------------------------------------
# Checkpoints


class _Payload:
    """A pickled object that would write `marker` if unpickling ran it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_checkpoint_with_pickled_objects_is_refused_in_one_line(tmp_path, capsys):
    marker, checkpoint = tmp_path / "marker.txt", tmp_path / "evil.pt"
    torch.save({"format_version": 1, "model": _Payload(marker)}, checkpoint)
    code = main(["extract", "--checkpoint", str(checkpoint), "--split", "test", "--out", str(tmp_path / "store")])
    assert code == EXIT_USER_ERROR
    assert one_error_line(capsys) == (f"{checkpoint}: checkpoint holds pickled objects that are not plain tensors; "
                                      "refused for safety (only weights-only files are loaded)")
    assert not marker.exists()


def test_every_torch_load_goes_through_the_one_loader():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    callers = [path.relative_to(root).as_posix() for package in ("lmkcomp", "delf_baseline")
               for path in sorted((root / package).rglob("*.py")) if "torch.load(" in path.read_text()]
    assert callers == ["lmkcomp/torch_files.py"]


# --------------------------------------------------------------------------------------------
# --debug, and bugs


def test_debug_shows_the_traceback_of_a_user_error(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    code = main(["--debug", "make-dataset", str(tmp_path / "afile" / "sub"), "--preset", "tiny", "--quiet"])
    assert code == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and "UserInputError" in err
    assert err.strip().splitlines()[-1] == (f"lmkcomp: error: {tmp_path / 'afile' / 'sub'}: "
                                            "cannot create the output folder (Not a directory)")


def test_debug_is_in_the_help(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--debug" in capsys.readouterr().out


@pytest.mark.parametrize("bug", [ZeroDivisionError("division by zero"), OSError(errno.EBADF, "Bad file descriptor")])
def test_a_genuine_bug_keeps_its_traceback(monkeypatch, bug):
    def broken(_args):
        raise bug

    monkeypatch.setattr(demo_commands, "_cmd_baseline", broken)
    with pytest.raises(type(bug)):
        main(["baseline", "anywhere"])
