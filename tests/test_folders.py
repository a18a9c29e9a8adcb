"""`make-dataset --from-folders`: a user's photo folders become a GLDv2-layout dataset."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image

from lmkcomp.cli import main
from lmkcomp.data import folders, gldv2
from lmkcomp.data.images import load_image_rgb
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


# --------------------------------------------------------------------------------------------
# given splits, listings, re-imports, photo storage, duplicates


def write_photo(path: Path, seed: int, size: tuple[int, int] = (60, 40), **save_options) -> Path:
    """A random-noise photo (width x height) saved at `path` in the format its suffix names."""
    pixels = np.random.default_rng(seed).integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **save_options)
    return path


def stored(out: Path) -> dict[str, tuple[str, int]]:
    """image id -> (split, landmark id) of an imported dataset, read from its CSVs; distractors -1."""
    data = LandmarkData(out, "gldv2")
    placed = {i: ("train", lm) for i, lm in zip(data.train_labels()["id"], data.train_labels()["landmark_id"])}
    placed.update({i: ("index", lm) for i, lm in zip(data.index_labels["id"], data.index_labels["landmark_id"])})
    answers = data.recognition_solution.answers
    placed.update({i: ("test", landmarks[0] if landmarks else -1) for i, landmarks in answers.items()})
    return placed


def landmark_names(out: Path) -> dict[int, str]:
    categories = gldv2.read_category_csv(out / "train_label_to_category.csv")
    return dict(zip(categories["landmark_id"], categories["category"]))


def image_files(out: Path, split: str) -> list[Path]:
    return sorted((out / split).rglob("*.jpg"))


def make_split_source(src: Path) -> dict[Path, tuple[str, str]]:
    """SRC/Train|test|index/<landmark>/: louvre and pantheon come with test photos (louvre with
    index photos too), colosseum only with train photos. Returns photo -> (split, landmark)."""
    given = {"Train/louvre": 5, "test/louvre": 2, "index/louvre": 1, "Train/pantheon": 4, "test/pantheon": 1,
             "Train/colosseum": 8, "test/_non_landmark": 2}
    photos = {}
    for seed, (folder, count) in enumerate(given.items()):
        split, landmark = folder.split("/")
        for n in range(count):
            photos[write_photo(src / folder / f"{n}.png", seed * 100 + n)] = (split.lower(), landmark)
    return photos


def test_split_folders_keep_their_split(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    photos = make_split_source(src)
    assert folders.has_split_folders(src)
    assert main(["make-dataset", str(out), "--from-folders", str(src), "--seed", "3", "--quiet"]) == 0
    names = landmark_names(out)
    assert sorted(names.values()) == ["colosseum", "louvre", "pantheon"]  # split folders are no landmarks
    placed = stored(out)
    assert len(placed) == len(photos)
    for path, (split, landmark) in photos.items():
        got_split, got_landmark = placed[folders.image_id(path)]
        assert names.get(got_landmark, "_non_landmark") == landmark
        if landmark != "colosseum" and not (landmark == "pantheon" and split == "train"):
            assert got_split == split, path  # given test / index photos, and louvre's train, stay
    # pantheon lacks index photos: one is taken from its train photos; colosseum gets both
    pantheon = sorted(split for split, landmark in placed.values() if names.get(landmark) == "pantheon")
    assert pantheon == ["index", "test", "train", "train", "train"]
    assert len(image_files(out, "test")) == len(gldv2.read_sample_submission(out / "sample_submission.csv")) == 6


def test_split_missing_for_some_landmarks_is_filled_with_the_seed(tmp_path):
    src = tmp_path / "src"
    make_split_source(src)
    report = folders.import_folders(src, tmp_path / "a", seed=5, progress=False)
    folders.import_folders(src, tmp_path / "b", seed=5, progress=False)
    folders.import_folders(src, tmp_path / "c", seed=6, progress=False)
    placed = stored(tmp_path / "a")
    colosseum = [k for k, v in landmark_names(tmp_path / "a").items() if v == "colosseum"][0]
    splits = sorted(split for split, lm in placed.values() if lm == colosseum)
    assert splits == ["index", "index", "test"] + ["train"] * 5  # round(0.1 * 8) -> 1, round(0.2 * 8) -> 2
    assert report.carved == {"test": 1, "index": 3}  # colosseum's test and index, pantheon's index
    assert "index 4 images (3 taken from train with the seed)" in folders.describe(report)
    assert placed == stored(tmp_path / "b")  # the same seed, the same split
    assert (tmp_path / "a" / "train.csv").read_bytes() == (tmp_path / "b" / "train.csv").read_bytes()
    assert placed != stored(tmp_path / "c")  # another seed draws other photos (the given ones stay)
    # a fraction of 0 takes nothing from a given train split
    folders.import_folders(src, tmp_path / "d", seed=5, index_fraction=0.0, progress=False)
    assert len(image_files(tmp_path / "d", "index")) == 1  # louvre's given one
    assert sum(split == "train" for split, _ in stored(tmp_path / "d").values()) == 5 + 4 + 7


def test_csv_listing_keeps_given_splits(tmp_path, capsys):
    photos = tmp_path / "photos"
    rows = ["path,landmark,split"]
    for n in range(4):
        write_photo(photos / f"a{n}.jpg", n)
        rows.append(f"photos/a{n}.jpg,arc,{'test' if n == 0 else 'train'}")
    for n in range(3):
        write_photo(photos / f"b{n}.png", 10 + n)
        rows.append(f"photos/b{n}.png,bridge,")  # no split given: split with the seed
    write_photo(photos / "street.jpg", 20)
    rows.append("photos/street.jpg,_non_landmark,Index")
    listing = tmp_path / "list.csv"
    listing.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    assert main(["make-dataset", str(out), "--from-csv", str(listing), "--index-fraction", "0", "--quiet"]) == 0
    placed = stored(out)
    names = landmark_names(out)
    assert placed[folders.image_id(photos / "a0.jpg")] == ("test", [k for k, v in names.items() if v == "arc"][0])
    assert {placed[folders.image_id(photos / f"a{n}.jpg")][0] for n in (1, 2, 3)} == {"train"}
    bridge = sorted(placed[folders.image_id(photos / f"b{n}.png")][0] for n in range(3))
    assert bridge == ["test", "train", "train"]
    assert [p.stem for p in image_files(out, "index")] == [folders.image_id(photos / "street.jpg")]
    # a bad split names the CSV's line
    listing.write_text("path,landmark,split\nphotos/a0.jpg,arc,train\nphotos/a1.jpg,arc,validation\n")
    assert main(["make-dataset", str(tmp_path / "out2"), "--from-csv", str(listing), "--quiet"]) == 2
    assert "list.csv:3: split 'validation'" in capsys.readouterr().err


def test_reimport_replaces_the_earlier_import(tmp_path, capsys):
    src, out = tmp_path / "src", tmp_path / "out"
    make_photos(src, {"a": 7, "b": 7, "c": 7})
    assert main(["make-dataset", str(out), "--from-folders", str(src), "--seed", "0", "--quiet"]) == 0
    first_test = gldv2.read_sample_submission(out / "sample_submission.csv")
    assert main(["make-dataset", str(out), "--from-folders", str(src), "--seed", "1", "--quiet"]) == 2
    assert "pass --force" in capsys.readouterr().err
    assert main(["make-dataset", str(out), "--from-folders", str(src), "--seed", "1", "--force", "--quiet"]) == 0
    test_ids = gldv2.read_sample_submission(out / "sample_submission.csv")
    assert test_ids != first_test
    assert sorted(p.stem for p in image_files(out, "test")) == sorted(test_ids)
    for split in gldv2.SPLITS:
        assert len(image_files(out, split)) == sum(s == split for s, _ in stored(out).values())
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging or lock left
    # a submission for the earlier test split no longer validates
    submission = tmp_path / "old.csv"
    submission.write_text("id,landmarks\n" + "".join(f"{i},0 1.0\n" for i in first_test))
    assert main(["validate", "--task", "recognition", "--data", str(out), "--submission", str(submission)]) == 2
    # --force never deletes what an import did not write
    (out / "notes.txt").write_text("mine")
    assert main(["make-dataset", str(out), "--from-folders", str(src), "--force", "--quiet"]) == 2
    assert "notes.txt: not written by an import" in capsys.readouterr().err
    other = tmp_path / "other"
    (other / "train").mkdir(parents=True)
    assert main(["make-dataset", str(other), "--from-folders", str(src), "--force", "--quiet"]) == 2
    assert "holds no earlier import" in capsys.readouterr().err and (other / "train").is_dir()


def test_failed_import_leaves_the_earlier_one_whole(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    make_photos(src, {"a": 4, "b": 4})
    folders.import_folders(src, out, progress=False)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    (src / "b" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ImageLoadError):
        folders.import_folders(src, out, seed=2, force=True, progress=False)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_photos_are_copied_or_reencoded_once(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    upright = write_photo(src / "a" / "upright.jpg", 1, quality=80)
    png = write_photo(src / "a" / "lossless.png", 2)
    wide = write_photo(src / "a" / "wide.png", 3, size=(2100, 20))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # stored 60 x 40, shown rotated: 40 x 60
    rotated = write_photo(src / "a" / "rotated.jpg", 4, exif=exif.tobytes())
    folders.import_folders(src, out, index_fraction=0.0, test_fraction=0.0, jpeg_quality=100, progress=False)
    data = LandmarkData(out, "gldv2")

    def path(photo: Path) -> Path:
        return data.image_path("train", folders.image_id(photo))

    # an upright JPEG within the long side is kept byte for byte: no second lossy generation
    assert path(upright).read_bytes() == upright.read_bytes()
    # a PNG becomes the layout's JPEG at the chosen quality (100: every quantiser step 1)
    with Image.open(path(png)) as image:
        assert image.format == "JPEG" and all(max(table) == 1 for table in image.quantization.values())
    # the default cap of 2048 px
    assert max(Image.open(path(wide)).size) == folders.DEFAULT_MAX_SIDE
    # EXIF orientation applied once: stored upright, without the tag, so no reader turns it again
    with Image.open(path(rotated)) as image:
        assert image.size == (40, 60) and image.getexif().get(ExifTags.Base.Orientation, 1) == 1
    upright_pixels = load_image_rgb(rotated).astype(float)
    stored_pixels = load_image_rgb(path(rotated)).astype(float)
    assert np.abs(stored_pixels - upright_pixels).mean() < np.abs(stored_pixels - upright_pixels[::-1, ::-1]).mean() / 4


def test_duplicate_photo_is_stored_once(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    photo = write_photo(src / "test" / "tower" / "copy.jpg", 1)
    (src / "train" / "tower").mkdir(parents=True)
    shutil.copy(photo, src / "train" / "tower" / "original.jpg")
    for n in range(3):
        write_photo(src / "train" / "tower" / f"{n}.jpg", 10 + n)
    write_photo(src / "test" / "tower" / "other.jpg", 20)
    report = folders.import_folders(src, out, index_fraction=0.0, progress=False)
    placed = stored(out)
    assert len(placed) == 5 and placed[folders.image_id(photo)][0] == "train"  # the train copy wins
    assert report.duplicates == 1 and "1 duplicate photos stored once" in folders.describe(report)
    skipped = (out / "skipped.csv").read_text()
    assert "copy.jpg" in skipped and "same photo as" in skipped and "original.jpg" in skipped


REALDEV = Path(__file__).resolve().parents[2] / "shared" / "realdev"


@pytest.mark.skipif(not REALDEV.is_dir(), reason=f"{REALDEV} (real development photos) is not here")
def test_import_real_photos(tmp_path):
    listing = tmp_path / "list.csv"
    rows = ["path,landmark,split"]
    for landmark in sorted(p for p in REALDEV.iterdir() if p.is_dir()):
        for n, photo in enumerate(folders.list_photos(landmark)):
            rows.append(f"{photo},{landmark.name},{'test' if n == 0 else ''}")
    listing.write_text("\n".join(rows) + "\n")
    report = folders.import_listing(listing, tmp_path / "out", progress=False)
    placed = stored(tmp_path / "out")
    assert report.landmarks == 5 and len(placed) == len(rows) - 1 == 23
    assert sum(split == "test" for split, _ in placed.values()) == 5
    for row in rows[1:]:
        photo = Path(row.split(",")[0])
        assert load_image_rgb(LandmarkData(tmp_path / "out").image_path(placed[folders.image_id(photo)][0],
                                                                        folders.image_id(photo))).shape[2] == 3
