"""`make-dataset --from-folders`: a user's photo folders become a GLDv2-layout dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lmkcomp.cli import main
from lmkcomp.data import folders, gldv2
from lmkcomp.data.layout import LandmarkData
from lmkcomp.errors import ImageLoadError


def make_photos(src: Path, counts: dict[str, int], seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for folder, count in counts.items():
        (src / folder).mkdir(parents=True)
        for n in range(count):
            pixels = rng.integers(0, 255, size=(40, 60, 3), dtype=np.uint8)
            # a mix of formats and modes, as real photo folders have
            if n % 3 == 0:
                Image.fromarray(pixels).save(src / folder / f"p{n}.jpg")
            elif n % 3 == 1:
                Image.fromarray(pixels).convert("RGBA").save(src / folder / f"p{n}.png")
            else:
                Image.fromarray(pixels[..., 0]).save(src / folder / f"p{n}.PNG")


def test_import_layout_and_splits(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    make_photos(src, {"big_ben": 10, "eiffel": 5, "tiny_chapel": 2, "_non_landmark": 6})
    report = folders.import_folders(src, out, seed=1, max_side=32, progress=False)
    assert report.landmarks == 3 and sum(report.images.values()) == 23
    data = LandmarkData(out, "gldv2")
    train = data.train_labels()
    # the 2-photo landmark stays entirely in train; the others get test and index photos
    categories = gldv2.read_category_csv(out / "train_label_to_category.csv")
    names = dict(zip(categories["landmark_id"], categories["category"]))
    chapel = [k for k, v in names.items() if v == "tiny_chapel"][0]
    assert (train["landmark_id"] == chapel).sum() == 2
    assert set(data.index_labels["landmark_id"]) == {k for k, v in names.items() if v != "tiny_chapel"}
    test_ids = data.split_ids("test")
    assert sorted(data.recognition_solution.answers) == test_ids
    assert any(not answers for answers in data.recognition_solution.answers.values())  # distractors
    image = Image.open(data.image_path("train", train["id"].iloc[0]))
    assert image.format == "JPEG" and max(image.size) == 32 and image.mode == "RGB"
    again = tmp_path / "again"
    folders.import_folders(src, again, seed=1, max_side=32, progress=False)
    assert (again / "train.csv").read_bytes() == (out / "train.csv").read_bytes()


def test_corrupt_photo_fails_or_is_listed(tmp_path, capsys):
    src = tmp_path / "src"
    make_photos(src, {"a": 3, "b": 3})
    (src / "a" / "broken.jpg").write_bytes(b"not really a jpeg")
    with pytest.raises(ImageLoadError, match="broken.jpg"):
        folders.import_folders(src, tmp_path / "out1", progress=False)
    assert main(["make-dataset", str(tmp_path / "out2"), "--from-folders", str(src), "--quiet"]) == 2
    assert "broken.jpg" in capsys.readouterr().err
    assert main(["make-dataset", str(tmp_path / "out3"), "--from-folders", str(src), "--skip-bad", "--quiet"]) == 0
    skipped = (tmp_path / "out3" / "skipped.csv").read_text()
    assert "broken.jpg" in skipped
    assert "1 unreadable photos skipped" in capsys.readouterr().out


def test_empty_source_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    assert main(["make-dataset", str(tmp_path / "out"), "--from-folders", str(tmp_path / "src")]) == 2
    assert "no landmark folders found" in capsys.readouterr().err
