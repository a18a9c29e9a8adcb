"""Import a user's own photos, one folder per landmark, into the GLDv2 layout.

``SRC/<landmark name>/<photo>`` becomes a landmark (numbered in sorted folder order, or by the
folder name itself when every folder name is an integer); photos in ``SRC/<non-landmark
folder>/`` become distractors in the test and index splits. Each landmark's photos are split
into train / index / test with a seed: a landmark needs one train photo, and gets index and test
photos only when it has at least three (so that queries have something to find). Photos are
decoded (EXIF orientation honoured, any colour mode), optionally downscaled, and re-encoded as
JPEG under 16-hex ids derived from the seed and the photo's relative path.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lmkcomp.data import gldv2
from lmkcomp.data.images import encode_jpeg, load_image_rgb
from lmkcomp.errors import ImageLoadError, UserInputError
from lmkcomp.fileio import atomic_write_bytes

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}


@dataclass
class ImportReport:
    landmarks: int = 0
    images: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _photos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _image_id(seed: int, relative: Path) -> str:
    return hashlib.sha1(f"{seed}:{relative.as_posix()}".encode()).hexdigest()[:16]


def _split_landmark(rng: np.random.Generator, count: int, test_fraction: float, index_fraction: float) -> list[str]:
    """Split names for `count` photos of one landmark, in a seeded random order."""
    splits = ["train"] * count
    if count >= 3:
        # at least one of each, and always at least one train photo
        n_test = min(max(1, round(test_fraction * count)), count - 2)
        n_index = min(max(1, round(index_fraction * count)), count - 1 - n_test)
        splits = ["test"] * n_test + ["index"] * n_index + ["train"] * (count - n_test - n_index)
    order = rng.permutation(count)
    return [splits[i] for i in order]


def import_folders(
    src: str | Path,
    out: str | Path,
    seed: int = 0,
    test_fraction: float = 0.1,
    index_fraction: float = 0.2,
    non_landmark_folder: str = "_non_landmark",
    max_side: int | None = None,
    skip_bad: bool = False,
    progress: bool = True,
) -> ImportReport:
    """Write `src`'s photos into `out` in the GLDv2 layout with all of its CSVs."""
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise UserInputError(f"{src}: folder not found")
    landmark_folders = sorted(p for p in src.iterdir() if p.is_dir() and p.name != non_landmark_folder)
    if not landmark_folders:
        raise UserInputError(f"{src}: no landmark folders found (expected SRC/<landmark>/<photos>)")
    names = [p.name for p in landmark_folders]
    numeric = all(name.isdigit() for name in names)
    landmark_ids = [int(name) if numeric else position for position, name in enumerate(names)]

    rng = np.random.default_rng([seed, 0xF01D])
    plan: list[tuple[Path, str, int]] = []  # photo, split, landmark id (-1: distractor)
    for folder, landmark_id in zip(landmark_folders, landmark_ids):
        photos = _photos(folder)
        if not photos:
            raise UserInputError(f"{folder}: landmark folder holds no photos")
        plan.extend((photo, split, landmark_id) for photo, split in
                    zip(photos, _split_landmark(rng, len(photos), test_fraction, index_fraction)))
    distractor_folder = src / non_landmark_folder
    if distractor_folder.is_dir():
        for photo in _photos(distractor_folder):
            plan.append((photo, "test" if rng.random() < 0.5 else "index", -1))

    report = ImportReport(landmarks=len(landmark_folders))
    written: list[tuple[str, str, int]] = []
    for photo, split, landmark_id in tqdm(plan, desc="import photos", unit="img", disable=not progress):
        image_id = _image_id(seed, photo.relative_to(src))
        target = out / gldv2.image_relpath(split, image_id)
        if not target.exists():
            try:
                pixels = load_image_rgb(photo, max_side=max_side)
            except ImageLoadError as error:
                if not skip_bad:
                    raise
                report.skipped.append((str(photo), error.reason))
                continue
            atomic_write_bytes(target, encode_jpeg(pixels, quality=95))
        written.append((image_id, split, landmark_id))
        report.images[split] += 1
    _write_csvs(out, written, dict(zip(landmark_ids, names)))
    if report.skipped:
        gldv2.write_csv_rows(out / "skipped.csv", ["path", "reason"], report.skipped)
    return report


def _write_csvs(out: Path, written: list[tuple[str, str, int]], names: dict[int, str]) -> None:
    train = [(i, lm) for i, split, lm in written if split == "train"]
    index = [(i, lm) for i, split, lm in written if split == "index" and lm >= 0]
    test = [(i, lm) for i, split, lm in written if split == "test"]
    gldv2.write_train_csv(out / "train.csv", [i for i, _ in train], [lm for _, lm in train], [""] * len(train))
    by_landmark: dict[int, list[str]] = defaultdict(list)
    for image_id, landmark_id in train:
        by_landmark[landmark_id].append(image_id)
    # The user's folders are the labels: no cleaning has happened, so the clean list is train.
    gldv2.write_train_clean_csv(out / "train_clean.csv", by_landmark)
    gldv2.write_category_csv(out / "train_label_to_category.csv", names)
    gldv2.write_index_csv(out / "index_image_to_landmark.csv", [i for i, _ in index], [lm for _, lm in index])
    index_by_landmark: dict[int, list[str]] = defaultdict(list)
    for image_id, landmark_id in index:
        index_by_landmark[landmark_id].append(image_id)
    recognition = {i: ([lm] if lm >= 0 else []) for i, lm in test}
    retrieval = {i: index_by_landmark.get(lm, []) for i, lm in test}
    # Own photos have no public/private leaderboard: everything is Private, queries with
    # nothing to retrieve are Ignored for retrieval.
    gldv2.write_solution_csv(out / "recognition_solution_v2.1.csv",
                             gldv2.Solution("recognition", recognition, {i: "Private" for i in recognition}))
    gldv2.write_solution_csv(out / "retrieval_solution_v2.1.csv",
                             gldv2.Solution("retrieval", retrieval,
                                            {i: ("Private" if retrieval[i] else "Ignored") for i in retrieval}))
    gldv2.write_sample_submission(out / "sample_submission.csv", [i for i, _ in test])


def describe(report: ImportReport) -> str:
    """One line: landmarks, images per split, skipped photos."""
    splits = ", ".join(f"{split} {report.images.get(split, 0)} images" for split in gldv2.SPLITS)
    skipped = f", {len(report.skipped)} unreadable photos skipped (see skipped.csv)" if report.skipped else ""
    return f"{report.landmarks} landmarks, {splits}{skipped}"
