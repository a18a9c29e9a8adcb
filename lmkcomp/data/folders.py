"""Import a user's own photos into the GLDv2 layout, keeping the split they come with.

Three ways in, one import (`import_photos`):

- ``SRC/<landmark name>/<photo>`` (`scan_folders`): one folder per landmark; every photo is
  split with the seed.
- ``SRC/<split>/<landmark name>/<photo>`` (also `scan_folders`), with split folders named
  ``train``, ``index`` and ``test`` (any subset, any letter case): chosen automatically when
  SRC's top-level folders, the non-landmark folder aside, are all split names. Photos keep the
  split of their folder.
- a CSV listing (`read_listing`) with columns ``path, landmark`` and optionally ``split``
  (empty = split with the seed); relative paths are relative to the CSV's folder.

Photos of the non-landmark folder (``_non_landmark``, or that landmark name in a listing)
become distractors in the test and index splits: at ``SRC/_non_landmark/`` they are split
50/50 with the seed, under ``SRC/test/_non_landmark/`` or ``SRC/index/_non_landmark/`` they keep
their split. Landmarks are numbered in sorted name order, or by the name itself when every
name is an integer.

Splits (`assign_splits`): a photo with a given split keeps it. A landmark with at least three
photos that lacks test or index photos gets them carved out of its photos without a split, then
out of its train photos, in seeded random order (``round(fraction x photos)``, at least one, a
fraction of 0 carves none), always keeping one train photo. So a plain folder per landmark is
split as before, and a source with only ``train/`` and ``test/`` folders gets its index carved
out of train unless ``index_fraction`` is 0.

Each photo is stored once (`store_photo`), under an id derived from its bytes (`image_id`), so
one photo copied into two folders cannot sit in train and in test under two ids: the first
copy is kept (landmark photos before distractors, then train, index, test, unsplit, then
listing order) and the others are listed in ``skipped.csv``. The output folder is replaced
as a whole (`replace_output`): a second import never leaves the first one's images behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

import numpy as np
from PIL import ExifTags, Image
from tqdm import tqdm

from lmkcomp.csvfile import read_table, shown
from lmkcomp.data import gldv2
from lmkcomp.data.images import encode_jpeg, load_image_rgb
from lmkcomp.errors import ImageLoadError, UserInputError
from lmkcomp.fileio import atomic_write, atomic_write_bytes
from lmkcomp.outdir import LOCK_NAME

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
NON_LANDMARK = "_non_landmark"
#: Default cap on the stored long side. The largest size any extractor of the kit reads is
#: 1024 px (DELF / DELG), so 2048 keeps twice that for any later extraction setting, while a
#: 4000 x 3000 camera photo shrinks to a quarter of its pixels (decoding time and disk).
DEFAULT_MAX_SIDE = 2048
#: JPEG quality of re-encoded photos. The GLDv2 layout stores every image as `{id}.jpg`, so
#: a PNG cannot stay PNG; 95 is visually lossless, 100 the closest to lossless JPEG gets.
DEFAULT_JPEG_QUALITY = 95
#: The import's record in the output folder: what was imported, and the proof that the folder
#: holds an import, which `replace_output` needs before it deletes anything.
MARKER = "import.json"
SKIPPED = "skipped.csv"
#: Everything an import writes into the output folder (and all that --force may replace).
IMPORT_ENTRIES = frozenset({MARKER, SKIPPED, *gldv2.SPLITS, *(
    "train.csv", "train_clean.csv", "train_label_to_category.csv", "index_image_to_landmark.csv",
    "recognition_solution_v2.1.csv", "retrieval_solution_v2.1.csv", "sample_submission.csv")})
_STAGING_PREFIX = ".import-new-"
_TRASH_PREFIX = ".import-old-"
_SPLIT_RANK = {"train": 0, "index": 1, "test": 2, None: 3}
_READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class SourcePhoto:
    """One photo to import: its file, its landmark name (`NON_LANDMARK` for a distractor) and
    the split it comes with (None: split with the seed)."""

    path: Path
    landmark: str
    split: str | None = None


class DatasetImage(NamedTuple):
    """One stored image: its id, split and landmark id (-1 for a distractor)."""

    image_id: str
    split: str
    landmark_id: int


@dataclass
class ImportReport:
    landmarks: int = 0
    images: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    #: images of each split taken out of the given train photos with the seed
    carved: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    skipped: list[tuple[str, str]] = field(default_factory=list)
    duplicates: int = 0


# --------------------------------------------------------------------------------------------
# Finding the photos


def list_photos(folder: Path) -> list[Path]:
    """Image files (by suffix, any letter case) anywhere under `folder`, sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _subfolders(folder: Path) -> list[Path]:
    """Visible subfolders, sorted (hidden ones such as `.ipynb_checkpoints` are no landmarks)."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def has_split_folders(src: str | Path, non_landmark_folder: str = NON_LANDMARK) -> bool:
    """True when SRC's top-level folders, the non-landmark folder aside, are all split names
    (train / index / test, any letter case): the ``SRC/<split>/<landmark>/`` layout."""
    names = [p.name.lower() for p in _subfolders(Path(src)) if p.name != non_landmark_folder]
    return bool(names) and all(name in gldv2.SPLITS for name in names)


def scan_folders(src: str | Path, non_landmark_folder: str = NON_LANDMARK) -> list[SourcePhoto]:
    """The photos of SRC in either folder layout (module docstring), in a fixed order."""
    src = Path(src)
    if not src.is_dir():
        raise UserInputError(f"{src}: folder not found")
    photos: list[SourcePhoto] = []
    if has_split_folders(src, non_landmark_folder):
        for split_folder in _subfolders(src):
            if split_folder.name != non_landmark_folder:
                photos.extend(_landmark_photos(split_folder, non_landmark_folder, split_folder.name.lower()))
    else:
        photos.extend(_landmark_photos(src, non_landmark_folder, None))
    if not any(photo.landmark != non_landmark_folder for photo in photos):
        raise UserInputError(f"{src}: no landmark folders found (expected SRC/<landmark>/<photos> "
                             "or SRC/<train|index|test>/<landmark>/<photos>)")
    distractors = src / non_landmark_folder
    if distractors.is_dir():
        photos.extend(SourcePhoto(path, NON_LANDMARK) for path in list_photos(distractors))
    return photos


def _landmark_photos(folder: Path, non_landmark_folder: str, split: str | None) -> list[SourcePhoto]:
    """The photos of `folder/<landmark>/`; the non-landmark folder only inside a split folder
    (at the top it is read by `scan_folders`)."""
    if split is not None:
        loose = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        if loose:
            raise UserInputError(f"{loose[0]}: a photo in a split folder belongs in a landmark folder "
                                 f"({folder}/<landmark>/) or in {folder}/{non_landmark_folder}/")
    photos = []
    for landmark_folder in _subfolders(folder):
        is_distractor = landmark_folder.name == non_landmark_folder
        if is_distractor and split is None:
            continue
        if is_distractor and split == "train":
            raise UserInputError(f"{landmark_folder}: non-landmark photos cannot be train images "
                                 "(train.csv has no non-landmark label); put them under test/ or index/")
        found = list_photos(landmark_folder)
        if not found and not is_distractor:
            raise UserInputError(f"{landmark_folder}: landmark folder holds no photos")
        landmark = NON_LANDMARK if is_distractor else landmark_folder.name
        photos.extend(SourcePhoto(path, landmark, split) for path in found)
    return photos


def read_listing(path: str | Path, non_landmark: str = NON_LANDMARK) -> list[SourcePhoto]:
    """The photos of a CSV listing: columns ``path, landmark`` and optionally ``split``
    (train / index / test, any letter case, or empty for "split with the seed"). Relative
    paths are relative to the CSV's folder; the landmark `non_landmark` marks a distractor.
    Errors name the CSV's line."""
    path = Path(path)
    table = read_table(path, ["path", "landmark"])
    frame = table.frame
    splits = frame["split"] if "split" in frame.columns else [""] * len(frame)
    photos = []
    for position, (photo, landmark, split) in enumerate(zip(frame["path"], frame["landmark"], splits)):
        photo, landmark, split = photo.strip(), landmark.strip(), split.strip().lower()
        if not photo:
            raise table.error(position, "empty path")
        if not landmark:
            raise table.error(position, f"empty landmark (a non-landmark photo is listed as {non_landmark})")
        if split and split not in gldv2.SPLITS:
            raise table.error(position, f"split {shown(split)} is not one of {', '.join(gldv2.SPLITS)} or empty")
        is_distractor = landmark == non_landmark
        if is_distractor and split == "train":
            raise table.error(position, "a non-landmark photo cannot be a train image; use test, index or empty")
        file = path.parent / photo
        if not file.is_file():
            raise table.error(position, f"{file}: photo not found")
        photos.append(SourcePhoto(file, NON_LANDMARK if is_distractor else landmark, split or None))
    if not any(photo.landmark != NON_LANDMARK for photo in photos):
        raise UserInputError(f"{path}: lists no landmark photos")
    return photos


# --------------------------------------------------------------------------------------------
# Ids, duplicates, landmarks and splits


def image_id(path: str | Path) -> str:
    """The photo's GLDv2 id: the first 16 hex digits of the SHA-1 of its bytes, so one photo
    gets one id wherever it lies and whatever the seed."""
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        while chunk := handle.read(_READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def drop_duplicates(
    photos: Sequence[SourcePhoto],
) -> tuple[list[tuple[SourcePhoto, str]], list[tuple[SourcePhoto, SourcePhoto]]]:
    """Keep one copy of each photo (same bytes): landmark photos before distractors, then
    train, index, test and unsplit ones, then the given order.

    Returns the kept photos with their ids, in that order, and (dropped, kept) pairs.
    """
    ranked = sorted(photos, key=lambda photo: (photo.landmark == NON_LANDMARK, _SPLIT_RANK[photo.split]))
    kept: dict[str, SourcePhoto] = {}
    dropped = []
    for photo in ranked:
        key = image_id(photo.path)
        if key in kept:
            dropped.append((photo, kept[key]))
        else:
            kept[key] = photo
    return [(photo, key) for key, photo in kept.items()], dropped


def landmark_ids(names: Iterable[str]) -> dict[str, int]:
    """Landmark name -> id: the name itself when every name is an integer, else the position
    in sorted order."""
    ordered = sorted(set(names))
    if all(name.isdigit() for name in ordered):
        return {name: int(name) for name in ordered}
    return {name: position for position, name in enumerate(ordered)}


def assign_splits(rng: np.random.Generator, given: Sequence[str | None], test_fraction: float,
                  index_fraction: float) -> list[str]:
    """Splits of one landmark's photos, from the splits they come with (None: none given).

    Given splits are kept. When the landmark has at least three photos, a split it lacks (test,
    then index) is carved out of its photos without a split, then out of its train photos, in
    seeded random order: ``round(fraction x photos)``, at least one (none for a fraction of 0),
    always leaving one train photo and one for the next split to carve. The rest is train.
    """
    count = len(given)
    unsplit = [i for i, split in enumerate(given) if split is None]
    train = [i for i, split in enumerate(given) if split == "train"]
    candidates = [unsplit[i] for i in rng.permutation(len(unsplit))] + [train[i] for i in rng.permutation(len(train))]
    splits = [split or "train" for split in given]
    missing = [(split, fraction) for split, fraction in (("test", test_fraction), ("index", index_fraction))
               if fraction > 0 and split not in given]
    if count < 3:
        return splits
    for position, (split, fraction) in enumerate(missing):
        reserved = len(missing) - position  # one train photo, one for each split still to carve
        take = max(0, min(max(1, round(fraction * count)), len(candidates) - reserved))
        for i in candidates[:take]:
            splits[i] = split
        candidates = candidates[take:]
    return splits


def plan_splits(photos: Sequence[tuple[SourcePhoto, str]], ids: dict[str, int], seed: int, test_fraction: float,
                index_fraction: float, report: ImportReport) -> list[tuple[SourcePhoto, DatasetImage]]:
    """Each (photo, image id) with its stored image (id, split, landmark id from `ids`), split by
    `assign_splits` landmark by landmark, distractors without a split 50/50 into test and index.
    Counts in `report` the photos taken from given train photos."""
    by_landmark: dict[str, list[int]] = defaultdict(list)
    for position, (photo, _) in enumerate(photos):
        by_landmark[photo.landmark].append(position)
    splits: list[str | None] = [photo.split for photo, _ in photos]
    rng = np.random.default_rng([seed, 0xF01D])
    for name in ids:
        members = by_landmark[name]
        assigned = assign_splits(rng, [splits[i] for i in members], test_fraction, index_fraction)
        for i, split in zip(members, assigned):
            if splits[i] == "train" and split != "train":
                report.carved[split] += 1
            splits[i] = split
    for i in by_landmark.get(NON_LANDMARK, []):
        if splits[i] is None:
            splits[i] = "test" if rng.random() < 0.5 else "index"
    report.landmarks = len(ids)
    return [(photo, DatasetImage(key, split, ids.get(photo.landmark, -1)))
            for (photo, key), split in zip(photos, splits)]


# --------------------------------------------------------------------------------------------
# Writing


def store_photo(source: Path, target: Path, max_side: int | None = DEFAULT_MAX_SIDE,
                jpeg_quality: int = DEFAULT_JPEG_QUALITY) -> None:
    """Write the photo `source` as the layout's JPEG `target`.

    Every photo is decoded first (a broken one raises ImageLoadError). An upright RGB or
    grayscale JPEG whose long side is within `max_side` is copied byte for byte (no second
    lossy generation); any other photo is stored decoded: EXIF orientation applied, RGB,
    downscaled to `max_side`, encoded at `jpeg_quality` without EXIF, so that no reader
    rotates it a second time.
    """
    pixels = load_image_rgb(source, max_side=max_side)
    if _is_storable_as_is(source, max_side):
        atomic_write_bytes(target, source.read_bytes())
    else:
        atomic_write_bytes(target, encode_jpeg(pixels, quality=jpeg_quality))


def _is_storable_as_is(source: Path, max_side: int | None) -> bool:
    with Image.open(source) as image:
        return (image.format == "JPEG" and image.mode in ("RGB", "L")
                and image.getexif().get(ExifTags.Base.Orientation, 1) == 1
                and (max_side is None or max(image.size) <= max_side))


def write_dataset_csvs(out: str | Path, images: Sequence[DatasetImage], names: dict[int, str]) -> None:
    """Write the GLDv2 CSVs of `images` into `out`: train.csv (and train_clean.csv, the same
    images: a user's folders are its labels), the categories `names`, the index, both solutions
    (everything Private; retrieval queries with nothing to find Ignored) and the sample
    submission. Distractors (landmark id -1) appear only as test queries without an answer."""
    out = Path(out)
    train = [image for image in images if image.split == "train"]
    index = [image for image in images if image.split == "index" and image.landmark_id >= 0]
    test = [image for image in images if image.split == "test"]
    gldv2.write_train_csv(out / "train.csv", [i.image_id for i in train], [i.landmark_id for i in train],
                          [""] * len(train))
    gldv2.write_train_clean_csv(out / "train_clean.csv", _ids_by_landmark(train))
    gldv2.write_category_csv(out / "train_label_to_category.csv", names)
    gldv2.write_index_csv(out / "index_image_to_landmark.csv", [i.image_id for i in index],
                          [i.landmark_id for i in index])
    index_by_landmark = _ids_by_landmark(index)
    recognition = {i.image_id: ([i.landmark_id] if i.landmark_id >= 0 else []) for i in test}
    retrieval = {i.image_id: index_by_landmark.get(i.landmark_id, []) for i in test}
    gldv2.write_solution_csv(out / "recognition_solution_v2.1.csv",
                             gldv2.Solution("recognition", recognition, {i: "Private" for i in recognition}))
    gldv2.write_solution_csv(out / "retrieval_solution_v2.1.csv",
                             gldv2.Solution("retrieval", retrieval,
                                            {i: ("Private" if retrieval[i] else "Ignored") for i in retrieval}))
    gldv2.write_sample_submission(out / "sample_submission.csv", [i.image_id for i in test])


def _ids_by_landmark(images: Iterable[DatasetImage]) -> dict[int, list[str]]:
    grouped: dict[int, list[str]] = defaultdict(list)
    for image in images:
        grouped[image.landmark_id].append(image.image_id)
    return grouped


# --------------------------------------------------------------------------------------------
# The output folder


def check_output(out: str | Path, force: bool) -> None:
    """Refuse an output folder that holds anything but an earlier import (its `MARKER` and
    `IMPORT_ENTRIES`), and an earlier import without `force`: nothing the kit did not write
    is ever deleted."""
    out = Path(out)
    if not out.is_dir():
        return
    entries = sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME and not p.name.startswith(
        (_STAGING_PREFIX, _TRASH_PREFIX)))
    if not entries:
        return
    if MARKER not in entries:
        raise UserInputError(f"{out}: the output folder is not empty and holds no earlier import ({MARKER}); "
                             "choose an empty or new folder")
    foreign = [name for name in entries if name not in IMPORT_ENTRIES]
    if foreign:
        raise UserInputError(f"{out / foreign[0]}: not written by an import; move it away or choose another "
                             "output folder (an import replaces the whole folder)")
    if not force:
        raise UserInputError(f"{out}: holds an earlier import; pass --force to replace it (its images and CSVs "
                             "are deleted), or choose another output folder")


@contextlib.contextmanager
def staging_folder(out: Path):
    """A fresh hidden folder inside `out` to build the new import in; removed on failure.
    Leftovers of interrupted imports are removed first."""
    out.mkdir(parents=True, exist_ok=True)
    for leftover in out.iterdir():
        if leftover.is_dir() and leftover.name.startswith((_STAGING_PREFIX, _TRASH_PREFIX)):
            shutil.rmtree(leftover)
    staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=out))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def replace_output(staging: Path, out: Path) -> None:
    """Move the finished import in `staging` into `out`, replacing an earlier import.

    The marker is replaced first, so an interruption leaves a folder that `check_output`
    still accepts with --force; the earlier entries are moved aside, then deleted.
    """
    trash = Path(tempfile.mkdtemp(prefix=_TRASH_PREFIX, dir=out))
    os.replace(staging / MARKER, out / MARKER)
    for name in sorted(IMPORT_ENTRIES - {MARKER}):
        if (out / name).exists():
            os.rename(out / name, trash / name)
        if (staging / name).exists():
            os.rename(staging / name, out / name)
    shutil.rmtree(trash)


# --------------------------------------------------------------------------------------------
# The import


def import_photos(
    photos: Sequence[SourcePhoto],
    out: str | Path,
    seed: int = 0,
    test_fraction: float = 0.1,
    index_fraction: float = 0.2,
    max_side: int | None = DEFAULT_MAX_SIDE,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    skip_bad: bool = False,
    force: bool = False,
    source: str = "",
    progress: bool = True,
) -> ImportReport:
    """Write `photos` into `out` in the GLDv2 layout with all of its CSVs (module docstring).

    `out` must be empty, new, or (with `force`) an earlier import, which is replaced whole;
    nothing is changed in `out` until every photo is stored. `skip_bad` lists unreadable
    photos in skipped.csv instead of failing; duplicates are always listed there.
    """
    out = Path(out)
    if not 1 <= jpeg_quality <= 100:
        raise UserInputError(f"JPEG quality must be in 1..100, got {jpeg_quality}")
    check_output(out, force)
    report = ImportReport()
    kept, dropped = drop_duplicates(photos)
    report.duplicates = len(dropped)
    report.skipped.extend((str(photo.path), f"same photo as {other.path}") for photo, other in dropped)
    ids = landmark_ids(photo.landmark for photo, _ in kept if photo.landmark != NON_LANDMARK)
    planned = plan_splits(kept, ids, seed, test_fraction, index_fraction, report)
    names = {landmark_id: name for name, landmark_id in ids.items()}
    with staging_folder(out) as staging:
        for split in gldv2.SPLITS:  # an empty split is an empty folder, as the layout's readers expect
            (staging / split).mkdir()
        stored: list[DatasetImage] = []
        for photo, image in tqdm(planned, desc="import photos", unit="img", disable=not progress):
            try:
                store_photo(photo.path, staging / gldv2.image_relpath(image.split, image.image_id),
                            max_side, jpeg_quality)
            except ImageLoadError as error:
                if not skip_bad:
                    raise
                report.skipped.append((str(photo.path), error.reason))
                continue
            stored.append(image)
            report.images[image.split] += 1
        write_dataset_csvs(staging, stored, names)
        if report.skipped:
            gldv2.write_csv_rows(staging / SKIPPED, ["path", "reason"], report.skipped)
        _write_marker(staging, source, seed, test_fraction, index_fraction, max_side, jpeg_quality, report)
        replace_output(staging, out)
    return report


def _write_marker(folder: Path, source: str, seed: int, test_fraction: float, index_fraction: float,
                  max_side: int | None, jpeg_quality: int, report: ImportReport) -> None:
    record = {"format": "lmkcomp-photo-import", "version": 1, "source": source, "seed": seed,
              "test_fraction": test_fraction, "index_fraction": index_fraction, "max_side": max_side,
              "jpeg_quality": jpeg_quality, "landmarks": report.landmarks,
              "images": {split: report.images.get(split, 0) for split in gldv2.SPLITS},
              "taken_from_train": dict(report.carved), "duplicates": report.duplicates,
              "unreadable": len(report.skipped) - report.duplicates}
    with atomic_write(folder / MARKER, "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=1)


def _check_not_inside(out: Path, src: Path) -> None:
    out_resolved, src_resolved = out.resolve(), src.resolve()
    if out_resolved == src_resolved or src_resolved in out_resolved.parents:
        raise UserInputError(f"{out}: the output folder lies inside the source folder {src}, whose photos "
                             "it would then include; choose an output folder elsewhere")


def import_folders(src: str | Path, out: str | Path, non_landmark_folder: str = NON_LANDMARK,
                   **options) -> ImportReport:
    """Import ``SRC/<landmark>/`` or ``SRC/<split>/<landmark>/`` (`scan_folders`) into `out`;
    `options` are those of `import_photos`."""
    src, out = Path(src), Path(out)
    if src.is_dir():
        _check_not_inside(out, src)
    return import_photos(scan_folders(src, non_landmark_folder), out, source=str(src), **options)


def import_listing(listing: str | Path, out: str | Path, non_landmark: str = NON_LANDMARK,
                   **options) -> ImportReport:
    """Import the photos of a CSV listing (`read_listing`) into `out`; `options` are those of
    `import_photos`."""
    return import_photos(read_listing(listing, non_landmark), out, source=str(listing), **options)


def describe(report: ImportReport) -> str:
    """One line: landmarks, images per split (and how many were carved with the seed),
    duplicates and unreadable photos skipped."""
    parts = []
    for split in gldv2.SPLITS:
        carved = report.carved.get(split, 0)
        parts.append(f"{split} {report.images.get(split, 0)} images" + (f" ({carved} taken from train with the seed)"
                                                                        if carved else ""))
    unreadable = len(report.skipped) - report.duplicates
    notes = ""
    if report.duplicates:
        notes += f", {report.duplicates} duplicate photos stored once"
    if unreadable:
        notes += f", {unreadable} unreadable photos skipped"
    if report.duplicates or unreadable:
        notes += f" (see {SKIPPED})"
    return f"{report.landmarks} landmarks, {', '.join(parts)}{notes}"
