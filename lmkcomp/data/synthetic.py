"""The synthetic mini-GLDv2: a procedurally generated dataset in the exact GLDv2 layout.

What makes it a fair stand-in for GLDv2 (see `lmkcomp.data.scenes` for the pictures):

- long-tailed train classes (most landmarks have 2-5 images, a few have very many);
- label noise: a fraction of train images shows another landmark or no landmark at all, and
  `noise_truth.csv` records which (ground truth for judging cleaning, never read by methods);
- look-alike landmarks (families sharing one architectural style);
- a test split that is mostly non-landmark distractors, an index split with distractors, and
  recognition / retrieval solutions with Public / Private / Ignored rows;
- a `train_clean.csv` that, like GLDv2-clean, is an imperfect cleaned subset (it misses some good
  images and keeps a little noise), so it is a baseline for cleaning, not an oracle;
- regions, cities and coordinates per landmark (`landmark_metadata.csv`) and per image
  (`image_metadata.csv`) for the centroid method's curriculum and geo checks;
- optionally (``train_distractor_ratio > 0``), non-landmark train images for the centroid
  method's non-landmark class: ``round(ratio * landmark train images)`` distractors rendered
  into the ``train/`` folder and listed (column ``id``) in ``train_nonlandmark.csv``, never
  in ``train.csv``, ``train_clean.csv`` or ``noise_truth.csv``. Their ids and pixels come from
  a random stream of their own, so every other file is the same as without them. With the
  default ratio 0 nothing of this exists and a dataset is byte-identical to one made before
  the option.

Every image is rendered from its own seed (derived from the dataset seed and the image's
position in the plan), so the same seed gives byte-identical files whatever the number of
worker processes or the executor (`lmkcomp.executors`: a local pool or a Ray cluster) that
renders them, and an interrupted generation resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from lmkcomp.config import preset_with_overrides
from lmkcomp.data import gldv2, scenes
from lmkcomp.data.images import encode_jpeg
from lmkcomp.data.layout import DATASET_MANIFEST
from lmkcomp.errors import UserInputError
from lmkcomp.executors import Executor, LocalExecutor
from lmkcomp.fileio import atomic_write, atomic_write_bytes
from lmkcomp.outdir import LOCK_NAME

GENERATOR_VERSION = 1
MANIFEST = DATASET_MANIFEST

NOISE_NONE = "none"
NOISE_OTHER_LANDMARK = "other_landmark"
NOISE_NON_LANDMARK = "non_landmark"


@dataclass(frozen=True)
class SyntheticConfig:
    """Every knob of the generator. The presets below fill it; any field can be overridden."""

    num_landmarks: int = 200
    #: train images per landmark follow a Pareto law min_train * U^(-1/tail_exponent), capped.
    min_train_per_landmark: int = 2
    max_train_per_landmark: int = 150
    tail_exponent: float = 1.1
    #: fraction of train images whose label is wrong (half another landmark, half no landmark)
    noise_fraction: float = 0.2
    #: fraction of landmarks that share their architectural style with 1-2 others
    lookalike_fraction: float = 0.3
    #: fraction of landmarks with images in the index split, and of those with test queries
    index_landmark_fraction: float = 0.6
    test_landmark_fraction: float = 0.5
    mean_index_per_landmark: float = 4.0
    mean_test_per_landmark: float = 1.6
    #: share of non-landmark images among test images, and among index images
    test_distractor_fraction: float = 0.7
    index_distractor_fraction: float = 0.25
    #: non-landmark train images (`train_nonlandmark.csv`) per landmark train image
    train_distractor_ratio: float = 0.0
    #: test rows: share Ignored, then the rest is split Public / Private like GLDv2 v2.1
    ignored_fraction: float = 0.05
    public_fraction: float = 0.33
    #: how GLDv2-clean-like `train_clean.csv` is: keep-probability of good and of noisy images
    clean_keep_good: float = 0.85
    clean_keep_noisy: float = 0.05
    num_regions: int = 4
    cities_per_region: int = 3
    long_side: int = 256
    jpeg_quality_range: tuple[int, int] = (75, 95)
    #: random stream of the landmarks (their plan, scenes and styles): 0 is the stream of the
    #: tiny / small / medium presets; another number gives landmarks none of them has, whatever
    #: the seed (the `v1` pretraining corpus uses 1)
    stream: int = 0


PRESETS: dict[str, SyntheticConfig] = {
    "tiny": SyntheticConfig(num_landmarks=16, max_train_per_landmark=14, num_regions=2, cities_per_region=2,
                            train_distractor_ratio=0.1),
    "small": SyntheticConfig(num_landmarks=240, max_train_per_landmark=120, train_distractor_ratio=0.1),
    "medium": SyntheticConfig(num_landmarks=2400, max_train_per_landmark=400, num_regions=6, cities_per_region=4,
                              train_distractor_ratio=0.1),
    # The GLDv1 stand-in for pretraining (Ozaki & Yokoo 2019 learned their cleaning descriptor on GLDv1; the
    # later winners fine-tuned pretrained backbones): a train-only corpus of landmarks that no
    # other preset has (its own stream), more images per landmark and less noise than `small`,
    # sized for about an hour of `lmkcomp train cpu-v1` on 2 CPU cores.
    "v1": SyntheticConfig(num_landmarks=1000, min_train_per_landmark=6, max_train_per_landmark=30,
                          noise_fraction=0.05, index_landmark_fraction=0.0, num_regions=6, cities_per_region=4,
                          stream=1),
}


def preset_config(preset: str, **overrides) -> SyntheticConfig:
    """The named preset's config with `overrides` applied (unknown fields are errors)."""
    return preset_with_overrides(PRESETS, preset, "dataset", **overrides)


# --------------------------------------------------------------------------------------------
# The plan: every image, its split, its label and what it really shows, decided up front.


@dataclass(frozen=True)
class LandmarkInfo:
    landmark_id: int
    name: str
    region: str
    city: str
    latitude: float
    longitude: float
    family: int


@dataclass(frozen=True)
class PlannedImage:
    image_id: str
    split: str
    #: label written to the CSVs (-1: none, i.e. a distractor)
    label: int
    #: position in `Plan.landmarks` of the landmark the picture really shows; -1: non-landmark
    source: int
    noise: str
    seed: int
    latitude: float
    longitude: float


@dataclass(frozen=True)
class Plan:
    config: SyntheticConfig
    seed: int
    landmarks: list[LandmarkInfo]
    images: list[PlannedImage]


_REGION_NAMES = ("Northmark", "Sunreach", "Eastvale", "Westmoor", "Highland", "Coastland", "Lakeshire", "Dunemar")
_SYLLABLES = ("ar", "bel", "cor", "dan", "el", "fen", "gra", "hal", "is", "jor", "ka", "lun", "mer", "nor",
              "os", "pra", "quin", "ros", "sal", "tor", "ul", "ven", "wyn", "zer")
_KINDS = ("Cathedral", "Town Hall", "Palace", "Museum", "Library", "Tower", "Abbey", "Opera House",
          "Station", "Chapel", "Castle", "Theatre", "Market Hall", "University", "Bridge Gate")


def _place_name(rng: np.random.Generator) -> str:
    parts = rng.choice(_SYLLABLES, size=int(rng.integers(2, 4)))
    return "".join(parts).capitalize()


def _unique_hex_ids(rng: np.random.Generator, count: int, taken: frozenset[str] = frozenset()) -> list[str]:
    """`count` distinct 16-hex-digit ids, none of them in `taken`."""
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < count:
        candidate = rng.bytes(8).hex()
        if candidate not in seen and candidate not in taken:
            seen.add(candidate)
            ids.append(candidate)
    return ids


def _long_tail_counts(rng: np.random.Generator, config: SyntheticConfig) -> np.ndarray:
    uniform = rng.random(config.num_landmarks)
    counts = np.floor(config.min_train_per_landmark * uniform ** (-1.0 / config.tail_exponent))
    return np.clip(counts, config.min_train_per_landmark, config.max_train_per_landmark).astype(int)


def _make_landmarks(rng: np.random.Generator, config: SyntheticConfig) -> list[LandmarkInfo]:
    regions = []
    for r in range(config.num_regions):
        center = (rng.uniform(-50, 60), rng.uniform(-170, 170))
        cities = [(_place_name(rng), center[0] + rng.uniform(-4, 4), center[1] + rng.uniform(-6, 6))
                  for _ in range(config.cities_per_region)]
        regions.append((_REGION_NAMES[r % len(_REGION_NAMES)] + ("" if r < len(_REGION_NAMES) else str(r)), cities))
    # GLDv2 landmark ids are sparse integers up to ~203K: never assume they are 0..n-1.
    landmark_ids = np.sort(rng.choice(203_094, size=config.num_landmarks, replace=False))
    families = _assign_families(rng, config)
    landmarks = []
    for position, landmark_id in enumerate(landmark_ids):
        region, cities = regions[int(rng.integers(len(regions)))]
        city, lat, lon = cities[int(rng.integers(len(cities)))]
        name = f"{_KINDS[int(rng.integers(len(_KINDS)))]} of {city}"
        landmarks.append(LandmarkInfo(
            landmark_id=int(landmark_id), name=name, region=region, city=city,
            # within ~3 km of the city centre
            latitude=round(lat + rng.uniform(-0.03, 0.03), 6), longitude=round(lon + rng.uniform(-0.03, 0.03), 6),
            family=int(families[position]),
        ))
    return landmarks


def _assign_families(rng: np.random.Generator, config: SyntheticConfig) -> np.ndarray:
    """Family number per landmark: look-alikes share one (groups of 2-3), others are alone."""
    n = config.num_landmarks
    order = rng.permutation(n)
    families = np.empty(n, dtype=int)
    in_groups = int(round(config.lookalike_fraction * n))
    family, position = 0, 0
    while position < in_groups:
        size = min(int(rng.integers(2, 4)), n - position)
        families[order[position:position + size]] = family
        family += 1
        position += size
    for landmark in order[position:]:
        families[landmark] = family
        family += 1
    return families


def _usage(rng: np.random.Generator, config: SyntheticConfig) -> str:
    u = rng.random()
    if u < config.ignored_fraction:
        return "Ignored"
    return "Public" if rng.random() < config.public_fraction else "Private"


def stream_key(config: SyntheticConfig, seed: int, salt: int, *parts: int) -> list[int]:
    """Seed of one of the dataset's random streams: ``[seed, salt, *parts]``, plus
    ``config.stream`` when it is not 0 (so stream 0 keeps the keys datasets were made with)."""
    return [seed, salt, *parts, *([config.stream] if config.stream else [])]


def scene_key(config: SyntheticConfig, seed: int, source: int) -> list[int]:
    """Seed of the scene of landmark `source` (its position in the plan): the landmark itself."""
    return stream_key(config, seed, 0x5CE7E, source)


def style_key(config: SyntheticConfig, seed: int, family: int) -> list[int]:
    """Seed of the style that the look-alike landmarks of `family` share."""
    return stream_key(config, seed, 0xFA417, family)


def make_plan(config: SyntheticConfig, seed: int) -> Plan:
    """Decide every image of the dataset (ids, splits, labels, noise) from `seed`."""
    rng = np.random.default_rng(stream_key(config, seed, 0x1A9D))
    landmarks = _make_landmarks(rng, config)
    n = len(landmarks)
    train_counts = _long_tail_counts(rng, config)
    has_index = rng.random(n) < config.index_landmark_fraction
    has_test = has_index & (rng.random(n) < config.test_landmark_fraction)
    index_counts = np.where(has_index, 1 + rng.poisson(config.mean_index_per_landmark - 1, n), 0)
    test_counts = np.where(has_test, 1 + rng.poisson(config.mean_test_per_landmark - 1, n), 0)

    rows: list[tuple[str, int, int, str]] = []  # split, label, source, noise
    for position in range(n):
        label = landmarks[position].landmark_id
        for _ in range(train_counts[position]):
            if rng.random() < config.noise_fraction:
                if rng.random() < 0.5 and n > 1:
                    other = int(rng.integers(n - 1))
                    rows.append(("train", label, other + (other >= position), NOISE_OTHER_LANDMARK))
                else:
                    rows.append(("train", label, -1, NOISE_NON_LANDMARK))
            else:
                rows.append(("train", label, position, NOISE_NONE))
        rows.extend(("index", label, position, NOISE_NONE) for _ in range(index_counts[position]))
        rows.extend(("test", label, position, NOISE_NONE) for _ in range(test_counts[position]))
    rows.extend(_distractor_rows("index", int(index_counts.sum()), config.index_distractor_fraction))
    rows.extend(_distractor_rows("test", int(test_counts.sum()), config.test_distractor_fraction))

    ids = _unique_hex_ids(rng, len(rows))
    seeds = rng.integers(0, 2**63 - 1, size=len(rows))
    images = []
    for (split, label, source, noise), image_id, image_seed in zip(rows, ids, seeds):
        if source >= 0:
            lat = landmarks[source].latitude + rng.uniform(-0.002, 0.002)
            lon = landmarks[source].longitude + rng.uniform(-0.002, 0.002)
        else:
            lat, lon = rng.uniform(-50, 60), rng.uniform(-170, 170)
        images.append(PlannedImage(image_id, split, label, source, noise, int(image_seed), round(lat, 6), round(lon, 6)))
    if config.train_distractor_ratio < 0:
        raise UserInputError(f"train_distractor_ratio must be >= 0, got {config.train_distractor_ratio}")
    count = round(config.train_distractor_ratio * int(train_counts.sum()))
    images.extend(_train_distractors(np.random.default_rng(stream_key(config, seed, 0x7D15)), count, frozenset(ids)))
    return Plan(config, seed, landmarks, images)


def _train_distractors(rng: np.random.Generator, count: int, taken: frozenset[str]) -> list[PlannedImage]:
    """`count` non-landmark train images, drawn from their own stream `rng` (ids not in `taken`)."""
    ids = _unique_hex_ids(rng, count, taken)
    seeds = rng.integers(0, 2**63 - 1, size=count)
    return [PlannedImage(image_id, "train", -1, -1, NOISE_NONE, int(image_seed),
                         round(rng.uniform(-50, 60), 6), round(rng.uniform(-170, 170), 6))
            for image_id, image_seed in zip(ids, seeds)]


def _distractor_rows(split: str, landmark_images: int, fraction: float) -> list[tuple[str, int, int, str]]:
    count = int(round(landmark_images * fraction / (1.0 - fraction))) if fraction < 1 else landmark_images
    return [(split, -1, -1, NOISE_NONE)] * count


# --------------------------------------------------------------------------------------------
# Rendering


@dataclass(frozen=True)
class RenderTask:
    """Everything one worker needs to render the images of one landmark (or a chunk of
    distractors): small to send to a process or a Ray node, unlike the whole plan."""

    #: the dataset folder, absolute (a Ray worker runs in another directory)
    root: Path
    seed: int
    config: SyntheticConfig
    #: position of the landmark in the plan; -1 for distractors
    source: int
    #: look-alike family whose shared style the landmark uses; -1 when its style is its own
    shared_family: int
    images: list[PlannedImage]


def _build_scene(task: RenderTask) -> scenes.LandmarkScene:
    style = None
    if task.shared_family >= 0:
        style = scenes.make_style(np.random.default_rng(style_key(task.config, task.seed, task.shared_family)))
    return scenes.make_landmark(np.random.default_rng(scene_key(task.config, task.seed, task.source)), style)


def _render_image(scene: scenes.LandmarkScene | None, image: PlannedImage, config: SyntheticConfig) -> bytes:
    rng = np.random.default_rng(image.seed)
    if scene is None:
        pixels = scenes.render_distractor(rng, config.long_side)
    else:
        pixels = scenes.render_photo(scene, rng, config.long_side)
    low, high = config.jpeg_quality_range
    return encode_jpeg(pixels, quality=int(rng.integers(low, high + 1)))


def _no_context() -> None:
    """A render worker's context: none, since each task carries all it needs."""
    return None


def _render_task(context: None, task: RenderTask) -> int:
    """Render every image of the task that is not on disk yet, each written atomically; return
    the task's image count (those already on disk included)."""
    todo = [image for image in task.images if not (task.root / gldv2.image_relpath(image.split, image.image_id)).exists()]
    if todo:
        scene = _build_scene(task) if task.source >= 0 else None
        for image in todo:
            path = task.root / gldv2.image_relpath(image.split, image.image_id)
            atomic_write_bytes(path, _render_image(scene, image, task.config))
    return len(task.images)


def _tasks(plan: Plan, root: Path, distractor_chunk: int = 64) -> Iterator[RenderTask]:
    by_source: dict[int, list[PlannedImage]] = defaultdict(list)
    for image in plan.images:
        by_source[image.source].append(image)
    family_sizes = Counter(landmark.family for landmark in plan.landmarks)
    for source in sorted(s for s in by_source if s >= 0):
        family = plan.landmarks[source].family
        shared = family if family_sizes[family] > 1 else -1
        yield RenderTask(root, plan.seed, plan.config, source, shared, by_source[source])
    distractors = by_source.get(-1, [])
    for start in range(0, len(distractors), distractor_chunk):
        yield RenderTask(root, plan.seed, plan.config, -1, -1, distractors[start:start + distractor_chunk])


# --------------------------------------------------------------------------------------------
# Writing the dataset


def _manifest(plan: Plan, complete: bool) -> dict:
    config = dataclasses.asdict(plan.config)
    for option in ("train_distractor_ratio", "stream"):
        if not config[option]:
            # datasets made before the option existed have no such key: keep them resumable and identical
            del config[option]
    return {
        "generator": "lmkcomp.synthetic",
        "generator_version": GENERATOR_VERSION,
        "seed": plan.seed,
        # through JSON so that it compares equal to a manifest read back from disk (tuples -> lists)
        "config": json.loads(json.dumps(config)),
        "complete": complete,
        "counts": _counts(plan),
    }


def _counts(plan: Plan) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for image in plan.images:
        counts[f"{image.split}_images"] += 1
        if image.label < 0:
            counts[f"{image.split}_distractors"] += 1
        if image.noise != NOISE_NONE:
            counts["train_noisy"] += 1
    counts["landmarks"] = len(plan.landmarks)
    return dict(sorted(counts.items()))


def _check_resumable(out: Path, manifest: dict) -> None:
    existing = out / MANIFEST
    if not existing.is_file():
        # the lock file of the job writing the dataset (`lmkcomp.outdir`) is not content
        if out.exists() and any(entry.name != LOCK_NAME for entry in out.iterdir()):
            raise UserInputError(f"{out}: folder is not empty and holds no {MANIFEST}; choose an empty folder")
        return
    try:
        previous = json.loads(existing.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserInputError(f"{existing}: unreadable manifest ({exc}); remove the folder to regenerate") from None
    keys = ("generator_version", "seed", "config")
    if any(previous.get(key) != manifest[key] for key in keys):
        raise UserInputError(
            f"{out} holds a dataset made with other settings (seed {previous.get('seed')}); "
            "use another folder or delete it to regenerate"
        )


def generate(out: str | Path, config: SyntheticConfig, seed: int = 0, workers: int = 1, progress: bool = True,
             executor: Executor | None = None) -> dict:
    """Write the synthetic dataset into `out` (GLDv2 layout); return its manifest.

    The images are rendered by `executor` (default: `LocalExecutor(workers)`, `workers`
    processes here), one task per landmark or chunk of distractors; the plan, CSVs and
    manifest are written here. The files are the same whatever the executor.

    Resumable: rerunning with the same config and seed renders only the images that are
    missing. Images and CSVs are written atomically; the manifest says `complete` at the end.
    """
    out = Path(out)
    plan = make_plan(config, seed)
    manifest = _manifest(plan, complete=False)
    _check_resumable(out, manifest)
    if (out / MANIFEST).is_file() and json.loads((out / MANIFEST).read_text()).get("complete"):
        return json.loads((out / MANIFEST).read_text())
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / MANIFEST, manifest)

    tasks = list(_tasks(plan, out.resolve()))
    executor = executor or LocalExecutor(workers)
    executor.run(_no_context, _render_task, tasks, sizes=[len(task.images) for task in tasks],
                 desc="render images", unit="img", progress=progress)

    write_csvs(out, plan)
    manifest = _manifest(plan, complete=True)
    _write_json(out / MANIFEST, manifest)
    return manifest


def _write_json(path: Path, payload: dict) -> None:
    with atomic_write(path, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
        handle.write("\n")


def write_csvs(out: Path, plan: Plan) -> None:
    """Every CSV of the GLDv2 layout plus the kit's ground-truth and metadata files (and
    `train_nonlandmark.csv` when the plan has non-landmark train images)."""
    config = plan.config
    rng = np.random.default_rng(stream_key(config, plan.seed, 0xC5F))
    by_split: dict[str, list[PlannedImage]] = defaultdict(list)
    for image in plan.images:
        by_split[image.split].append(image)
    index, test = by_split["index"], by_split["test"]
    train = [image for image in by_split["train"] if image.label >= 0]
    train_nonlandmark = [image for image in by_split["train"] if image.label < 0]

    gldv2.write_train_csv(
        out / "train.csv", [i.image_id for i in train], [i.label for i in train],
        [f"https://synthetic.lmkcomp.invalid/{i.image_id}.jpg" for i in train],
    )
    clean: dict[int, list[str]] = defaultdict(list)
    for image in train:
        keep = config.clean_keep_good if image.noise == NOISE_NONE else config.clean_keep_noisy
        if rng.random() < keep:
            clean[image.label].append(image.image_id)
    # GLDv2-clean has no landmark with a single image either.
    gldv2.write_train_clean_csv(out / "train_clean.csv", {lm: ids for lm, ids in clean.items() if len(ids) >= 2})
    gldv2.write_category_csv(
        out / "train_label_to_category.csv",
        {lm.landmark_id: f"synthetic:Category:{lm.name.replace(' ', '_')}" for lm in plan.landmarks},
    )
    landmark_index = [i for i in index if i.label >= 0]
    gldv2.write_index_csv(out / "index_image_to_landmark.csv", [i.image_id for i in landmark_index], [i.label for i in landmark_index])

    index_by_landmark: dict[int, list[str]] = defaultdict(list)
    for image in landmark_index:
        index_by_landmark[image.label].append(image.image_id)
    recognition_answers: dict[str, list] = {}
    retrieval_answers: dict[str, list] = {}
    recognition_usage: dict[str, str] = {}
    retrieval_usage: dict[str, str] = {}
    for image in test:
        usage = _usage(rng, config)
        recognition_answers[image.image_id] = [image.label] if image.label >= 0 else []
        recognition_usage[image.image_id] = usage
        relevant = index_by_landmark.get(image.label, []) if image.label >= 0 else []
        retrieval_answers[image.image_id] = relevant
        retrieval_usage[image.image_id] = usage if relevant else "Ignored"
    gldv2.write_solution_csv(out / "recognition_solution_v2.1.csv",
                             gldv2.Solution("recognition", recognition_answers, recognition_usage))
    gldv2.write_solution_csv(out / "retrieval_solution_v2.1.csv",
                             gldv2.Solution("retrieval", retrieval_answers, retrieval_usage))
    gldv2.write_sample_submission(out / "sample_submission.csv", [i.image_id for i in test])

    if train_nonlandmark:
        gldv2.write_csv_rows(out / "train_nonlandmark.csv", ["id"], ((i.image_id,) for i in train_nonlandmark))
    _write_noise_truth(out / "noise_truth.csv", plan, train)
    _write_landmark_metadata(out / "landmark_metadata.csv", plan.landmarks)
    _write_image_metadata(out / "image_metadata.csv", plan.images)


def _write_noise_truth(path: Path, plan: Plan, train: list[PlannedImage]) -> None:
    rows = []
    for image in train:
        true = "" if image.source < 0 else plan.landmarks[image.source].landmark_id
        rows.append((image.image_id, image.label, true, image.noise))
    gldv2.write_csv_rows(path, ["id", "landmark_id", "true_landmark_id", "noise"], rows)


def _write_landmark_metadata(path: Path, landmarks: list[LandmarkInfo]) -> None:
    rows = [(lm.landmark_id, lm.name, lm.region, lm.city, lm.latitude, lm.longitude, lm.family) for lm in landmarks]
    gldv2.write_csv_rows(path, ["landmark_id", "name", "region", "city", "latitude", "longitude", "family"], rows)


def _write_image_metadata(path: Path, images: list[PlannedImage]) -> None:
    rows = [(i.image_id, i.split, i.latitude, i.longitude) for i in images]
    gldv2.write_csv_rows(path, ["id", "split", "latitude", "longitude"], rows)


def describe(manifest: dict) -> str:
    """A one-paragraph human summary of a generated dataset."""
    counts = manifest["counts"]
    parts = [f"{counts.get('landmarks', 0)} landmarks"]
    for split in ("train", "index", "test"):
        parts.append(f"{split} {counts.get(f'{split}_images', 0)} images")
    noisy = counts.get("train_noisy", 0)
    train = max(counts.get("train_images", 0) - counts.get("train_distractors", 0), 1)
    parts.append(f"{noisy} noisy train labels ({100.0 * noisy / train:.1f} %)")
    parts.append(f"test distractors {counts.get('test_distractors', 0)}")
    if counts.get("train_distractors"):
        parts.append(f"non-landmark train images {counts['train_distractors']}")
    return ", ".join(parts)

