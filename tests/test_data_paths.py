"""Files named by config keys relative to the data root stay inside it, and a file the user
points a key at is never echoed back in an error message."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lmkcomp.cli import main
from lmkcomp.commands.search import read_id_list
from lmkcomp.errors import UserInputError
from lmkcomp.train.data import data_file

SECRET = "API_TOKEN=sk-live-51f0c0ffee"


@pytest.fixture()
def layout(tmp_path) -> Path:
    """`tmp_path/root` with a train.csv of 12 labelled images (no image files: the key is
    checked before any image is read), `tmp_path/secret.txt` beside it, and
    `root/link.csv` -> the secret."""
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    rows = "".join(f"{n:016x},{n % 3}\n" for n in range(1, 13))
    (root / "train.csv").write_text("id,landmark_id\n" + rows)
    (tmp_path / "secret.txt").write_text(f"{SECRET}\nsecond line\n")
    os.symlink(tmp_path / "secret.txt", root / "link.csv")
    return root


def train(capsys, root: Path, *settings: str) -> tuple[int, str]:
    """`lmkcomp train cpu-tiny --data root --set ...`: (exit code, stderr)."""
    argv = ["train", "cpu-tiny", "--data", str(root), "--out", str(root.parent / "run"), "--quiet"]
    for setting in settings:
        argv += ["--set", setting]
    code = main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("key", ["data.non_landmarks", "curriculum.regions_csv"])
@pytest.mark.parametrize("value", ["../secret.txt", "sub/../../secret.txt", "../../../../../../etc/passwd", "link.csv"])
def test_a_relative_path_that_leaves_the_data_root_is_refused_naming_the_key(layout, capsys, key, value):
    code, err = train(capsys, layout, f"{key}={value}")
    assert code == 2
    assert err == (f"lmkcomp: error: {key}: {value} leads outside the data root {layout.resolve()}; a relative path "
                   "must stay inside it (give an absolute path for a file elsewhere)\n")


def test_an_absolute_path_is_read_but_never_echoed(layout, capsys):
    secret = layout.parent / "secret.txt"
    code, err = train(capsys, layout, f"data.non_landmarks={secret}")
    assert code == 2
    assert err == (f"lmkcomp: error: {secret}:1: missing column(s) id; expected columns id "
                   "(the first line is not a header of column names)\n")


def test_data_file_keeps_paths_inside_the_root_and_absolute_paths(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    assert data_file(root, "sub/../regions.csv", "curriculum.regions_csv") == root / "sub/../regions.csv"
    assert data_file(root, "train_nonlandmark.csv", "data.non_landmarks") == root / "train_nonlandmark.csv"
    assert data_file(root, "/elsewhere/regions.csv", "curriculum.regions_csv") == Path("/elsewhere/regions.csv")
    # a link inside the root to a file inside it is fine
    (root / "real.csv").write_text("id\n")
    os.symlink(root / "real.csv", root / "sub" / "alias.csv")
    assert data_file(root, "sub/alias.csv", "data.non_landmarks") == root / "sub" / "alias.csv"
    with pytest.raises(UserInputError, match=r"^data\.non_landmarks: \.\. leads outside"):
        data_file(root, "..", "data.non_landmarks")


def test_an_id_list_names_the_line_of_a_bad_id_without_showing_it(tmp_path):
    path = tmp_path / "ids.txt"
    path.write_text(f"0123456789abcdef\n\n{SECRET}\n")
    with pytest.raises(UserInputError) as excinfo:
        read_id_list(str(path))
    assert str(excinfo.value) == (f"{path}:3: not an image id (an id list holds one id of 16 hexadecimal "
                                  "characters per line)")
    path.write_text("\ufeff0123456789abcdef\n\nfedcba9876543210\n")
    assert read_id_list(str(path)) == ["0123456789abcdef", "fedcba9876543210"]
