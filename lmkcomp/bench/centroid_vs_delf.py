"""`lmkcomp bench centroid-vs-delf`: the centroid method (Boiarov & Tyantov 2019) against DELF recognition on
the same database and the same queries, as the paper's section 6 compares them.

Database: the train split (labels `train`, `train_clean` or a CSV): centroids from its
embeddings, DELF's local-feature index (`delf_baseline.index`) from its local features.
DELF verifies with the `official-delf` preset on DELF features and `fast` on others (SIFT),
unless `verify` names one.

Queries: the scored (non-Ignored) rows of the test split, in two sets:

- `test`: all of them, GLDv2's own mix of landmark and non-landmark images;
- `offline`: every non-landmark query plus a seeded subsample of the landmark queries, so that
  landmark images are `landmark_share` (2 %) of the set, the paper's offline test (1-3 % of a
  user's photos show a landmark; 290 of 11,290 there). Sensitivity and specificity do not
  depend on the mix in expectation (each is measured on one kind of image); GAP does.

Thresholds: each method and setting gets the lowest threshold (eta, a cosine, for centroids;
the best candidate's inlier count for DELF) at which at most 1 - `specificity` (1 %) of the
validation non-landmark images are claimed as landmarks. Validation images are the index
split's distractors, which no query set contains: the paper compares the methods at 99 %
specificity with eta "picked up on validation data". `eta` / `min_inliers` fix them instead.

Metrics per query set: sensitivity and specificity at the threshold
(`lmkcomp.metrics.sensitivity_specificity`), GAP of the predictions kept by the threshold, and
Top-1: the share of landmark queries whose top candidate, before any threshold, is right.

Latency per query in milliseconds, by stage, on one core (one thread for BLAS, OpenMP, faiss,
OpenCV and torch, so that threads contending on a shared machine do not distort it), each the
median over the queries or images timed (a query descheduled for a time slice does not
dominate a median):

- `features_ms`: image to features, on `timing_images` test images after one warm-up image
  (decoding not timed): the descriptor CNN at 1 scale (centroids); for DELF, the extractor that
  wrote the database's local features, rebuilt from its store's settings (delf-torch: its
  7-scale pyramid; SIFT is no CNN). `passes` counts the CNN passes per image; the JSON's
  `features_ms` adds the descriptor CNN run at DELF's 7 scales (and a delf-torch checkpoint's
  own 7-scale extraction when one is given).
- `knn_ms`: centroids: Algorithm 2 on one query (faiss search of the centroids and the rules);
  DELF: the local-feature kNN, votes and shortlist (`DelfRecognizer.recognize`'s timings); both
  on the same `timing_queries` test queries, one at a time.
- `ransac_ms`: DELF's verification of its candidates; 0 for centroids.
- `total_ms` = knn + ransac: the paper's "inference without the CNN pass" (0.05 s vs 0.748 s).
- `end_to_end_ms` = features + total: what a query costs from its decoded image to its answer
  (one descriptor pass for centroids; DELF's extractor, or SIFT, plus its search). The paper's
  15x compares search without the CNN; end to end the shared CNN pass narrows the ratio, and the
  summary gives both.

Memory: each index's `memory_bytes` (the centroid index; DELF's feature index + image map).

Database-size sweep: random data, since only sizes matter for time and memory. Centroids:
`images / images_per_centroid` random unit vectors (the ratio measured on the real build),
Algorithm 2 timed per query. DELF: `sweep_features` random unit 40-d descriptors (DELF's PCA
size) per image in the same kind of feature index, the kNN + votes + shortlist
(`DelfRecognizer.shortlist`) timed per query of as many random features; RANSAC does not depend
on the database size, so the sweep adds the real run's RANSAC time for the largest C.
Growth: the log-log slope of a least-squares fit of latency (and memory) against images over
the larger half of the sizes (fixed per-query costs dominate the smallest), and the fits' ratio
at the paper's 2 M images against its 15x time and 133x memory.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from lmkcomp.bench.common import one_core, report
from lmkcomp.calibration import calibrate_threshold as calibrate
from lmkcomp.centroid.build import ClusteringConfig, build_centroids
from lmkcomp.centroid.index import CentroidIndex
from lmkcomp.centroid.inference import InferenceConfig, knn_vote, recognize
from lmkcomp.data.layout import LandmarkData
from lmkcomp.errors import UserInputError
from lmkcomp.features.store import EmbeddingStore, l2_normalize
from lmkcomp.fileio import atomic_write
from lmkcomp.local.extract import store_extractor
from lmkcomp.manifest import fingerprint
from lmkcomp.metrics import global_average_precision, sensitivity_specificity, top1_accuracy

#: the paper's figures (Boiarov & Tyantov 2019, section 6.2): 2 M database images, 15,250 centroids
PAPER_DATABASE_IMAGES = 2_000_000
PAPER_CENTROID_MS = 50.0
PAPER_DELF_MS = 748.0
PAPER_TIME_RATIO = 15.0
PAPER_MEMORY_RATIO = 133.0
#: DELF's descriptor size after PCA, used by the sweep's random local features
SWEEP_DESCRIPTOR_DIM = 40

Raw = dict[str, tuple[int, float]]


@dataclass(frozen=True)
class BenchSettings:
    """Inputs and knobs of the benchmark (module docstring). Paths left None are made in
    `workdir`: the dataset from `preset`, the descriptor by training `descriptor_config`,
    embeddings with the descriptor, local features with `local_method`."""

    data: str | None = None
    preset: str = "tiny"
    seed: int = 0
    workdir: str = "runs/bench-centroid-vs-delf"
    layout: str = "gldv2"
    labels: str = "train"
    checkpoint: str | None = None
    descriptor_config: str = "cpu-small"
    train_embeddings: str | None = None
    index_embeddings: str | None = None
    test_embeddings: str | None = None
    train_local: str | None = None
    index_local: str | None = None
    test_local: str | None = None
    local_method: str = "sift"
    max_features: int = 1000
    delf_checkpoint: str | None = None
    delf_index: str = "pq"
    delf_candidates: tuple[int, ...] = (5, 20)
    verify: str | None = None
    landmark_share: float = 0.02
    specificity: float = 0.99
    eta: float | None = None
    min_inliers: int | None = None
    clustering: ClusteringConfig = field(default_factory=lambda: ClusteringConfig(min_cluster_size=10))
    ablation_thresholds: tuple[float, ...] = (0.8, 1.0, 1.4)
    ablation_min_sizes: tuple[int, ...] = (5, 25, 50)
    ablation_k: tuple[int, ...] = (3, 5)
    sweep_sizes: tuple[int, ...] = (1_000, 3_000, 10_000, 30_000, 100_000)
    sweep_features: int = 100
    sweep_queries: int = 20
    timing_images: int = 8
    timing_queries: int = 50
    workers: int = 1

    def __post_init__(self) -> None:
        if not 0 < self.landmark_share < 1:
            raise UserInputError(f"landmark_share must be in (0, 1), got {self.landmark_share!r}")
        if not 0 < self.specificity <= 1:
            raise UserInputError(f"specificity must be in (0, 1], got {self.specificity!r}")
        if sorted(set(self.delf_candidates)) != list(self.delf_candidates) or min(self.delf_candidates) < 1:
            raise UserInputError(f"delf_candidates must be increasing positive integers, got {self.delf_candidates!r}")
        if any(size < 2 for size in self.sweep_sizes):
            raise UserInputError(f"sweep sizes must be at least 2 images, got {self.sweep_sizes!r}")
        from delf_baseline.index import feature_index_class

        feature_index_class(self.delf_index)  # an unknown DELF index spec is refused before any work


# ---------------------------------------------------------------------------------------------
# Inputs


def _dataset(settings: BenchSettings, workdir: Path, progress: bool) -> LandmarkData:
    if settings.data is not None:
        return LandmarkData(settings.data, settings.layout)
    from lmkcomp.data import synthetic

    root = workdir / f"data-{settings.preset}-seed{settings.seed}"
    synthetic.generate(root, synthetic.preset_config(settings.preset), settings.seed, workers=settings.workers,
                       progress=progress)
    return LandmarkData(root, "gldv2")


def _descriptor_checkpoint(settings: BenchSettings, data: LandmarkData, workdir: Path, progress: bool) -> Path:
    """The given checkpoint, else `descriptor_config` trained on `data` in `workdir` (reused)."""
    if settings.checkpoint is not None:
        return Path(settings.checkpoint)
    from lmkcomp.config import load_config
    from lmkcomp.train.config import TrainConfig, resolve_config_path
    from lmkcomp.train.trainer import CHECKPOINT, Trainer, run_is_finished

    config = load_config(resolve_config_path(settings.descriptor_config), TrainConfig,
                         {"data.root": str(data.root), "data.layout": data.layout.name, "data.labels": settings.labels})
    run = workdir / f"train-{settings.descriptor_config}"
    if not run_is_finished(run, config):
        Trainer(config, run, resume=(run / CHECKPOINT).is_file(), progress=progress).fit()
    return run / CHECKPOINT


def _embedding_stores(settings: BenchSettings, data: LandmarkData, checkpoint: Callable[[], Path], workdir: Path,
                      progress: bool) -> dict[str, EmbeddingStore]:
    """Train, index and test embeddings: given, or extracted at 1 scale without flip (the
    method's single CNN pass) with the descriptor."""
    from lmkcomp.features.extract import extract_split

    given = {"train": settings.train_embeddings, "index": settings.index_embeddings, "test": settings.test_embeddings}
    stores = {}
    for split, path in given.items():
        if path is None:
            path = workdir / f"embeddings-{fingerprint(str(checkpoint().resolve()), 8)}" / split
            extract_split(checkpoint(), data, split, path, scales=(1.0,), flip=False, dtype="float32",
                          workers=0, progress=progress)
        stores[split] = EmbeddingStore(path)
    return stores


def _local_extractor(settings: BenchSettings):
    from lmkcomp.local.extractors import create_local_extractor

    if settings.delf_checkpoint is not None:
        return create_local_extractor("delf-torch", checkpoint=settings.delf_checkpoint,
                                      max_features=settings.max_features)
    return create_local_extractor(settings.local_method, max_features=settings.max_features)


def _local_stores(settings: BenchSettings, data: LandmarkData, ids: dict[str, list[str]], workdir: Path,
                  progress: bool) -> dict:
    """Local features of the database (train), validation (index) and test images: given, or
    extracted for `ids[split]` only, the queries with the database's own extractor."""
    from lmkcomp.local.extract import extract_local_split
    from lmkcomp.local.store import LocalFeatureStore

    given = {"train": settings.train_local, "index": settings.index_local, "test": settings.test_local}
    stores = {}
    for split, path in given.items():  # train first: the queries need its extractor
        if path is None:
            extractor = _local_extractor(settings) if split == "train" else store_extractor(stores["train"])
            path = workdir / f"local-{extractor.method}-{fingerprint(extractor.settings(), 8)}" / split
            stores[split] = extract_local_split(data, split, path, extractor, ids=ids[split], workers=settings.workers,
                                                progress=progress)
        else:
            stores[split] = LocalFeatureStore(path)
        missing = next((i for i in ids[split] if i not in stores[split]), None)
        if missing is not None:
            raise UserInputError(f"{stores[split].directory}: {split} image {missing} has no local features")
    return stores


def query_sets(solution: dict[str, list], landmark_share: float, seed: int) -> dict[str, list[str]]:
    """`test`: every scored query; `offline`: every non-landmark query and a seeded subsample
    of round(share / (1 - share) x non-landmarks) landmark queries (at least 1), sorted."""
    landmark = sorted(i for i, answers in solution.items() if answers)
    non_landmark = sorted(i for i, answers in solution.items() if not answers)
    wanted = max(1, round(landmark_share / (1 - landmark_share) * len(non_landmark)))
    rng = np.random.default_rng([seed, 0x0FF1])
    chosen = rng.choice(len(landmark), size=min(wanted, len(landmark)), replace=False) if landmark else []
    return {"test": sorted(solution), "offline": sorted(non_landmark + [landmark[i] for i in chosen])}


def validation_ids(data: LandmarkData) -> list[str]:
    """The index split's images that show no landmark: the non-landmark validation set."""
    if not (data.root / "index").is_dir() or not data.has("index"):
        raise UserInputError(f"{data.root}: no index split with labels to calibrate thresholds on; "
                             "give --eta and --min-inliers")
    labelled = set(data.index_labels["id"])
    ids = [i for i in data.split_ids("index") if i not in labelled]
    if not ids:
        raise UserInputError(f"{data.root}: the index split has no non-landmark image; give --eta and --min-inliers")
    return ids


# ---------------------------------------------------------------------------------------------
# Thresholds and metrics


def calibrate_threshold(non_landmark_scores: Sequence[float], specificity: float, integer: bool = False) -> float:
    """The lowest threshold t such that at most floor((1 - specificity) n) of the n scores are
    >= t (images without a candidate score -inf), by `lmkcomp.calibration.calibrate_threshold`
    on negatives alone: inlier counts get an integer t of at least 1, cosines a t of at least -1."""
    return float(calibrate(np.zeros(0), non_landmark_scores, specificity, integer=integer,
                           minimum=1 if integer else -1.0).threshold)


def set_metrics(raw: Raw, solution: dict[str, list], threshold: float) -> dict:
    """Sensitivity, specificity, GAP and Top-1 of raw top candidates on the queries of `solution`."""
    kept = {i: p for i, p in raw.items() if i in solution and p[1] >= threshold}
    rates = sensitivity_specificity(raw, solution, threshold)
    return {"sensitivity": rates.sensitivity, "specificity": rates.specificity,
            "gap": global_average_precision(kept, solution), "top1": top1_accuracy(raw, solution),
            "landmark_queries": rates.num_landmark_images, "non_landmark_queries": rates.num_non_landmark_images}


def _threshold(raw_validation: Raw, ids: Sequence[str], specificity: float, fixed: float | None,
               integer: bool) -> float:
    if fixed is not None:
        return float(fixed)
    return calibrate_threshold([raw_validation[i][1] if i in raw_validation else -np.inf for i in ids],
                               specificity, integer)


# ---------------------------------------------------------------------------------------------
# Centroids


@dataclass(frozen=True)
class CentroidVariant:
    """One centroid row: its name, how centroids are built, and the kNN vote size (1: the
    top landmark of Algorithm 2)."""

    name: str
    clustering: ClusteringConfig
    neighbours: int = 1


def centroid_variants(settings: BenchSettings) -> list[CentroidVariant]:
    """Several vs one centroid per class, then Boiarov & Tyantov's ablations as extra rows."""
    base = settings.clustering
    variants = [CentroidVariant("several per class", base),
                CentroidVariant("1 per class", replace(base, one_per_class=True))]
    variants += [CentroidVariant(f"clustering threshold {t:g}", replace(base, distance_threshold=t))
                 for t in settings.ablation_thresholds]
    variants += [CentroidVariant(f"min cluster size {m}", replace(base, min_cluster_size=m))
                 for m in settings.ablation_min_sizes]
    variants += [CentroidVariant(f"kNN vote k={k}", base, neighbours=k) for k in settings.ablation_k]
    return variants


def _centroid_raw(index: CentroidIndex, store: EmbeddingStore, ids: Sequence[str], neighbours: int) -> Raw:
    queries = store.array()[store.position(list(ids))]
    if neighbours == 1:
        result = recognize(index, queries, InferenceConfig(eta=-np.inf, k=1, same_city=False))
        return result.best_candidates(list(ids))
    landmarks, similarities = knn_vote(index, queries, neighbours)
    return {i: (int(lm), float(s)) for i, lm, s in zip(ids, landmarks, similarities) if lm >= 0}


def per_query_ms(run: Callable[[Sequence], object], queries: Sequence) -> float:
    """Median milliseconds of `run` on one query (a block of 1) at a time on one core
    (`one_core`), after one warm-up.

    The median, not the mean: on a shared machine a query that loses its core for a time slice
    would otherwise dominate.
    """
    with one_core():
        run(queries[:1])
        times = []
        for row in range(len(queries)):
            started = time.perf_counter()
            run(queries[row:row + 1])
            times.append(time.perf_counter() - started)
    return 1000 * float(np.median(times))


def _centroid_inference(index: CentroidIndex, threshold: float, neighbours: int) -> Callable[[np.ndarray], object]:
    """What a deployed centroid recogniser runs per query: Algorithm 2 (or the kNN vote)."""
    if neighbours == 1:
        config = InferenceConfig(eta=threshold, k=1, same_city=False)
        return lambda queries: recognize(index, queries, config)
    return lambda queries: knn_vote(index, queries, neighbours)


def _centroid_rows(settings: BenchSettings, stores: dict[str, EmbeddingStore], labels, sets: dict[str, list[str]],
                   solution: dict[str, list], validation: list[str], timed: list[str],
                   progress: bool) -> tuple[list[dict], CentroidIndex]:
    database = stores["train"].array(np.float16)[stores["train"].position(labels["id"].tolist())]
    landmark_ids = labels["landmark_id"].to_numpy()
    timed_queries = stores["test"].array()[stores["test"].position(timed)]
    rows, built, base = [], {}, None
    for variant in centroid_variants(settings):
        key = json.dumps(asdict(variant.clustering), sort_keys=True)
        if key not in built:
            built[key] = build_centroids(landmark_ids, database, variant.clustering, progress=False)
        index = built[key]
        base = base or index
        threshold = _threshold(_centroid_raw(index, stores["index"], validation, variant.neighbours), validation,
                               settings.specificity, settings.eta, integer=False)
        raw = _centroid_raw(index, stores["test"], sets["test"], variant.neighbours)
        latency = per_query_ms(_centroid_inference(index, threshold, variant.neighbours), timed_queries)
        for name, ids in sets.items():
            rows.append({"set": name, "method": "centroids", "setting": variant.name, "threshold": threshold,
                         **set_metrics(raw, {i: solution[i] for i in ids}, threshold),
                         "knn_ms": latency, "ransac_ms": 0.0, "total_ms": latency,
                         "memory_bytes": index.memory_bytes, "centroids": len(index)})
        if progress:
            print(f"centroids {variant.name}: {len(index)} centroids, threshold {threshold:.4f}")
    return rows, base


# ---------------------------------------------------------------------------------------------
# DELF


def _delf_raw(frame, labels: dict[str, int]) -> Raw:
    """id -> (landmark of the best candidate, its inliers) for queries with a candidate."""
    found = frame[frame["best_image"] != ""]
    return {i: (labels[best], float(score)) for i, best, score in zip(found["id"], found["best_image"], found["score"])}


def verify_preset(settings: BenchSettings, database_local) -> str:
    """The verification preset: the one asked for, else `official-delf` for DELF features and
    `fast` for any other (with SIFT, official DELF's loose matching, descriptor distance < 0.8
    and a 20 px affine residual, gives non-landmark queries hundreds of chance inliers)."""
    if settings.verify is not None:
        return settings.verify
    return "official-delf" if database_local.method.startswith("delf") else "fast"


def delf_latency_ms(recognizer, queries: Sequence) -> tuple[float, float]:
    """Median `(knn_ms, ransac_ms)` of `recognizer.recognize` on one core over `queries`
    (LocalFeatures, in memory), after one warm-up."""
    with one_core():
        recognizer.recognize(queries[0])
        timings = [recognizer.recognize(query).timings for query in queries]
    return (1000 * float(np.median([t.knn_seconds for t in timings])),
            1000 * float(np.median([t.ransac_seconds for t in timings])))


def _delf_rows(settings: BenchSettings, local: dict, labels, sets: dict[str, list[str]], solution: dict[str, list],
               validation: list[str], timed: list[str], workdir: Path, progress: bool) -> tuple[list[dict], dict]:
    from delf_baseline.index import open_database_index
    from delf_baseline.recognition import DelfRecognizer, run_recognition

    database_ids = labels["id"].tolist()
    label_of = dict(zip(database_ids, labels["landmark_id"].astype(int)))
    # one folder per database (features, images, labels) and index kind, so reruns reuse it
    key = fingerprint([local["train"].meta, database_ids, label_of], 8)
    folder = workdir / "delf" / f"{settings.delf_index}-{key}"
    index = open_database_index(folder / "index", local["train"], settings.delf_index, ids=database_ids,
                                seed=settings.seed, progress=progress)
    verify = verify_preset(settings, local["train"])
    timed_queries = [local["test"].get(i).in_memory() for i in timed]
    rows, ransac_ms = [], {}
    for candidates in settings.delf_candidates:
        # threshold 1: every query keeps its best candidate and inliers; the bench thresholds them
        recognizer = DelfRecognizer(index, label_of, local["train"], inlier_threshold=1, candidates=candidates,
                                    verify=verify)
        run = folder / f"{verify}-C{candidates}"
        validation_frame = run_recognition(recognizer, local["index"], run / "validation", validation,
                                           progress=progress)
        threshold = _threshold(_delf_raw(validation_frame, label_of), validation, settings.specificity,
                               settings.min_inliers, integer=True)
        raw = _delf_raw(run_recognition(recognizer, local["test"], run / "test", sets["test"], progress=progress),
                        label_of)
        knn, ransac = delf_latency_ms(recognizer, timed_queries)
        ransac_ms[candidates] = ransac
        for name, ids in sets.items():
            rows.append({"set": name, "method": "DELF", "setting": f"{candidates} candidates", "threshold": threshold,
                         **set_metrics(raw, {i: solution[i] for i in ids}, threshold),
                         "knn_ms": knn, "ransac_ms": ransac, "total_ms": knn + ransac, "verify": verify,
                         "memory_bytes": index.memory_bytes(), "database_features": len(index.image_rows)})
    return rows, ransac_ms


# ---------------------------------------------------------------------------------------------
# Features stage


def descriptor_ms(checkpoint: Path, data: LandmarkData, ids: Sequence[str], scales: Sequence[float]) -> float:
    """Median milliseconds of the descriptor's forward passes at `scales` for one test image
    (batch 1, the evaluation preprocessing), after one warm-up image."""
    import torch
    from torch.utils.data import DataLoader

    from lmkcomp.data.dataset import collate_skipping
    from lmkcomp.features.extract import embed_tensor
    from lmkcomp.train.checkpoint import load_trained_model
    from lmkcomp.train.data import BucketedImageDataset, image_sizes
    from lmkcomp.train.samplers import assign_buckets, ordered_batches

    model, config, _ = load_trained_model(checkpoint)
    image_size = config.finetune_image_size if config.finetune_epochs else config.image_size
    ids = list(ids)
    dataset = BucketedImageDataset(data, "test", ids, augment="none", max_side=config.data.max_side)
    batches = ordered_batches(assign_buckets(image_sizes(data, "test", ids, progress=False)), 1, image_size)
    images = [batch["image"] for batch in DataLoader(dataset, batch_sampler=batches, collate_fn=collate_skipping)]
    with torch.inference_mode():
        return per_query_ms(lambda batch: embed_tensor(model, batch[0], scales), images)


def local_extractor_ms(extractor, data: LandmarkData, ids: Sequence[str]) -> float:
    """Median milliseconds of `extractor.extract` on one decoded test image, after one warm-up."""
    from lmkcomp.data.images import load_image_rgb

    images = [load_image_rgb(data.image_path("test", i)) for i in ids]
    return per_query_ms(lambda batch: extractor.extract(batch[0]), images)


# ---------------------------------------------------------------------------------------------
# Database-size sweep


def _random_unit(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    return l2_normalize(rng.standard_normal((rows, dim), dtype=np.float32)).astype(np.float32)


def sweep_centroids(sizes: Sequence[int], images_per_centroid: float, dim: int, queries: int, seed: int) -> list[dict]:
    """Per database size: centroids (random unit vectors), their index memory and the median
    Algorithm 2 latency of one query."""
    rng = np.random.default_rng([seed, 0xC3])
    probes = _random_unit(rng, queries, dim)
    rows = []
    for size in sizes:
        count = max(1, round(size / images_per_centroid))
        index = CentroidIndex(_random_unit(rng, count, dim), np.arange(count))
        latency = per_query_ms(_centroid_inference(index, 0.0, 1), probes)
        rows.append({"images": size, "centroids": count, "latency_ms": latency, "memory_bytes": index.memory_bytes})
    return rows


def _empty_store(directory: Path, ids: list[str], dim: int):
    """A local-feature store holding `ids` with no features: what `DelfRecognizer` needs to
    exist for indexed images it never verifies."""
    from lmkcomp.local.record import LocalFeatures
    from lmkcomp.local.store import LocalFeatureStore, LocalFeatureWriter

    writer = LocalFeatureWriter(directory, ids, dim, "random", shard_size=len(ids))
    writer.write_shard(0, [LocalFeatures.empty(dim)] * len(ids))
    writer.finish()
    return LocalFeatureStore(directory)


def sweep_delf(sizes: Sequence[int], features: int, kind: str, candidates: int, queries: int, seed: int,
               progress: bool) -> list[dict]:
    """Per database size: a `kind` feature index of `features` random 40-d unit descriptors per
    image, its memory, and the median kNN + votes + shortlist time of one query of `features`
    random descriptors."""
    from delf_baseline.index import ADD_BLOCK, DatabaseIndex, build_feature_index
    from delf_baseline.recognition import DelfRecognizer
    from lmkcomp.local.record import LocalFeatures

    rng = np.random.default_rng([seed, 0xDE1F])
    dim = SWEEP_DESCRIPTOR_DIM
    probes = [LocalFeatures(np.zeros((features, 2), np.float32), _random_unit(rng, features, dim),
                            np.ones(features, np.float32), np.ones(features, np.float32)) for _ in range(queries)]
    rows = []
    for size in sizes:
        total = size * features
        sample = _random_unit(rng, min(total, 100_000), dim)
        blocks = (_random_unit(rng, min(ADD_BLOCK, total - start), dim) for start in range(0, total, ADD_BLOCK))
        feature_index = build_feature_index(kind, dim, sample, blocks, total, seed=seed)
        ids = [f"{i:016x}" for i in range(size)]
        index = DatabaseIndex(feature_index, np.repeat(np.arange(size, dtype=np.int32), features), ids)
        with tempfile.TemporaryDirectory(prefix="bench-sweep-") as scratch:
            recognizer = DelfRecognizer(index, {i: n for n, i in enumerate(ids)}, _empty_store(Path(scratch), ids, dim),
                                        inlier_threshold=1, candidates=candidates)
            latency = per_query_ms(lambda block, recognizer=recognizer: recognizer.shortlist(block[0]), probes)
        rows.append({"images": size, "features": total, "knn_ms": latency, "memory_bytes": index.memory_bytes()})
        if progress:
            print(f"sweep DELF {size} images: kNN {latency:.1f} ms, {index.memory_bytes()} bytes")
    return rows


def loglog_fit(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """`(slope, intercept)` of the least-squares line through (log10 x, log10 y)."""
    slope, intercept = np.polyfit(np.log10(np.asarray(x, float)), np.log10(np.asarray(y, float)), 1)
    return float(slope), float(intercept)


def _at(fit: tuple[float, float], x: float) -> float:
    return float(10 ** (fit[1] + fit[0] * math.log10(x)))


def growth(centroid_sweep: list[dict], delf_sweep: list[dict], ransac_ms: float) -> dict:
    """Log-log slopes fitted on the larger half of the sizes (all of them when there are two),
    and the ratios (DELF over centroids) at the largest size and, by the fits, at the paper's
    2 M images, next to the paper's 15x and 133x."""
    images = [row["images"] for row in centroid_sweep]
    centroid_ms = [row["latency_ms"] for row in centroid_sweep]
    delf_ms = [row["knn_ms"] + ransac_ms for row in delf_sweep]
    # fixed per-query costs dominate the small sizes: fit the larger half, where growth shows
    upper = slice(len(images) // 2 if len(images) > 2 else 0, None)

    def fit(values: Sequence[float]) -> tuple[float, float]:
        return loglog_fit(images[upper], list(values)[upper])

    fits = {"centroid_latency": fit(centroid_ms), "delf_latency": fit(delf_ms),
            "delf_knn_latency": fit(row["knn_ms"] for row in delf_sweep),
            "centroid_memory": fit(row["memory_bytes"] for row in centroid_sweep),
            "delf_memory": fit(row["memory_bytes"] for row in delf_sweep)}
    return {
        "slopes": {name: fit[0] for name, fit in fits.items()},
        "ransac_ms_added": ransac_ms,
        "largest": {"images": images[-1], "time_ratio": delf_ms[-1] / centroid_ms[-1],
                    "memory_ratio": delf_sweep[-1]["memory_bytes"] / centroid_sweep[-1]["memory_bytes"]},
        "extrapolated_to_paper": {
            "images": PAPER_DATABASE_IMAGES,
            "centroid_ms": _at(fits["centroid_latency"], PAPER_DATABASE_IMAGES),
            "delf_ms": _at(fits["delf_latency"], PAPER_DATABASE_IMAGES),
            "time_ratio": _at(fits["delf_latency"], PAPER_DATABASE_IMAGES) / _at(fits["centroid_latency"],
                                                                               PAPER_DATABASE_IMAGES),
            "memory_ratio": _at(fits["delf_memory"], PAPER_DATABASE_IMAGES) / _at(fits["centroid_memory"],
                                                                                PAPER_DATABASE_IMAGES)},
        "paper": {"time_ratio": PAPER_TIME_RATIO, "memory_ratio": PAPER_MEMORY_RATIO,
                  "centroid_ms": PAPER_CENTROID_MS, "delf_ms": PAPER_DELF_MS},
        "fits": {name: {"slope": fit[0], "intercept": fit[1]} for name, fit in fits.items()},
        "fitted_images": images[upper],
    }


# ---------------------------------------------------------------------------------------------
# Plot


def _short_name(row: dict) -> str:
    if row["method"] == "DELF":
        return f"DELF\nC = {row['setting'].split()[0]}"
    return "centroids\n" + {"several per class": "several", "1 per class": "1 per class"}[row["setting"]]


def plot(path: Path, result: dict) -> None:
    """Three panels from the bench's JSON `result`: latency and memory against database size
    (log-log, measured points, fits and the paper's figures) and this dataset's latency by
    stage, with the descriptor CNN at DELF's 7 scales (and delf-torch when timed) for reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary, features_ms = result["growth"], result["features_ms"]
    centroid_sweep, delf_sweep = result["sweep"]["centroids"], result["sweep"]["delf"]
    fits = summary["fits"]
    images = np.array([row["images"] for row in centroid_sweep], float)
    line = np.geomspace(min(summary["fitted_images"]), PAPER_DATABASE_IMAGES, 50)
    figure, (latency, memory, stages) = plt.subplots(1, 3, figsize=(17, 6.2))

    def fitted(axis, name, color, label):
        fit = fits[name]
        axis.plot(line, 10 ** (fit["intercept"] + fit["slope"] * np.log10(line)), "--", color=color, alpha=0.6,
                  label=f"{label} fit, slope {fit['slope']:.2f}")

    ransac = summary["ransac_ms_added"]
    latency.plot(images, [r["latency_ms"] for r in centroid_sweep], "o-", color="C0", label="centroids (Algorithm 2)")
    latency.plot(images, [r["knn_ms"] for r in delf_sweep], "s-", color="C1", label="DELF kNN + votes")
    latency.plot(images, [r["knn_ms"] + ransac for r in delf_sweep], "^-", color="C3",
                 label=f"DELF kNN + RANSAC ({ransac:.0f} ms, measured)")
    fitted(latency, "centroid_latency", "C0", "centroids")
    fitted(latency, "delf_latency", "C3", "DELF")
    latency.plot([PAPER_DATABASE_IMAGES], [PAPER_CENTROID_MS], "*", color="C0", markersize=14, label="paper: centroids")
    latency.plot([PAPER_DATABASE_IMAGES], [PAPER_DELF_MS], "*", color="C3", markersize=14, label="paper: DELF")
    latency.set(xscale="log", yscale="log", xlabel="database images", ylabel="latency per query, one core (ms)",
                title="Inference latency (no CNN) vs database size")

    memory.plot(images, [r["memory_bytes"] for r in centroid_sweep], "o-", color="C0", label="centroid index")
    memory.plot(images, [r["memory_bytes"] for r in delf_sweep], "s-", color="C1", label="DELF feature index")
    fitted(memory, "centroid_memory", "C0", "centroids")
    fitted(memory, "delf_memory", "C1", "DELF")
    memory.set(xscale="log", yscale="log", xlabel="database images", ylabel="index memory (bytes)",
               title="Index memory vs database size")

    shown = [r for r in result["rows"] if r["set"] == "test" and (r["method"] == "DELF" or r["setting"] in
                                                                   ("several per class", "1 per class"))]
    references = [(name, key) for name, key in (("descriptor\n7 scales", "descriptor 7 scales"),
                                                ("delf-torch\n7 scales", "delf-torch")) if key in features_ms]
    names = [_short_name(r) for r in shown] + [name for name, _ in references]
    x = np.arange(len(names))
    width = 0.27
    extra = [np.nan] * len(references)
    series = (("features: CNN passes or SIFT (per image)",
               [features_ms[r["method"]] for r in shown] + [features_ms[k] for _, k in references]),
              ("kNN", [r["knn_ms"] for r in shown] + extra),
              ("RANSAC", [r["ransac_ms"] for r in shown] + extra))
    for offset, (label, values) in zip((-width, 0, width), series):
        # a stage a method does not have (centroids: RANSAC) or did not time gets no bar
        stages.bar(x + offset, [v if v is not None and np.isfinite(v) and v > 0 else np.nan for v in values], width,
                   label=label)
    stages.set_xticks(x, names, fontsize=8)
    stages.set(yscale="log", ylabel="ms per query (features: per image), one core",
               title="Latency by stage on this dataset (centroids: no RANSAC)")
    for axis in (latency, memory, stages):
        axis.grid(True, which="major", alpha=0.3)
        axis.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=110)
    plt.close(figure)


# ---------------------------------------------------------------------------------------------
# The benchmark


def _spread(ids: Sequence[str], count: int) -> list[str]:
    """`count` ids spread evenly over `ids` (all when fewer): the queries or images timed."""
    return list(ids[:: max(1, len(ids) // count)][:count])


def features_stage(settings: BenchSettings, data: LandmarkData, descriptor: Path | None, database_local,
                   ids: Sequence[str]) -> dict[str, float]:
    """Milliseconds per image of each feature extractor on the test images `ids` (the first one
    a warm-up): "centroids" (the descriptor at 1 scale, NaN without a descriptor), "DELF" (the
    extractor of the database's local features), "descriptor 7 scales" (the descriptor at
    DELF's pyramid) and, with a delf-torch checkpoint, "delf-torch" (its 7-scale extraction)."""
    from delf_baseline.savedmodel import OFFICIAL_SCALES

    nan = float("nan")
    features = {"centroids": descriptor_ms(descriptor, data, ids, (1.0,)) if descriptor else nan,
                "DELF": local_extractor_ms(store_extractor(database_local), data, ids),
                "descriptor 7 scales": descriptor_ms(descriptor, data, ids, OFFICIAL_SCALES) if descriptor else nan}
    if settings.delf_checkpoint is not None:
        features["delf-torch"] = local_extractor_ms(_local_extractor(settings), data, ids)
    return features


def summary_lines(result: dict) -> list[str]:
    """The text after the table: features stage, this dataset's ratios, the sweep, the fits."""
    features, growth_ = result["features_ms"], result["growth"]
    slopes, largest, extrapolated = growth_["slopes"], growth_["largest"], growth_["extrapolated_to_paper"]
    lines = [
        (f"features stage per image: descriptor 1 scale {features['centroids']:.1f} ms, at DELF's 7 scales "
         f"{features['descriptor 7 scales']:.1f} ms; DELF's database extractor {features['DELF']:.1f} ms"
         + (f"; delf-torch 7 scales {features['delf-torch']:.1f} ms" if "delf-torch" in features else "")),
        (f"this dataset: DELF ({result['this_dataset']['delf_setting']}) / centroids: search time "
         f"{result['this_dataset']['time_ratio']:.1f}x, end to end with features "
         f"{result['this_dataset']['end_to_end_time_ratio']:.1f}x (paper, search only: {PAPER_TIME_RATIO:.0f}x), "
         f"memory {result['this_dataset']['memory_ratio']:.1f}x"),
        "sweep (random data): images, centroid ms, DELF kNN ms, centroid bytes, DELF bytes",
    ]
    lines += [f"  {c['images']:>9}  {c['latency_ms']:8.3f}  {d['knn_ms']:9.2f}  {c['memory_bytes']:>12}  "
              f"{d['memory_bytes']:>12}" for c, d in zip(result["sweep"]["centroids"], result["sweep"]["delf"])]
    lines += [
        (f"log-log slopes over {growth_['fitted_images']} images: centroid latency {slopes['centroid_latency']:.2f}, "
         f"DELF latency {slopes['delf_latency']:.2f} (kNN alone {slopes['delf_knn_latency']:.2f}), centroid memory "
         f"{slopes['centroid_memory']:.2f}, DELF memory {slopes['delf_memory']:.2f}"),
        (f"at {largest['images']} images: time {largest['time_ratio']:.1f}x, memory {largest['memory_ratio']:.1f}x; "
         f"extrapolated to {PAPER_DATABASE_IMAGES:,} images: time {extrapolated['time_ratio']:.1f}x, memory "
         f"{extrapolated['memory_ratio']:.1f}x (paper: {PAPER_TIME_RATIO:.0f}x, {PAPER_MEMORY_RATIO:.0f}x)"),
    ]
    return lines


TABLE_COLUMNS = [("set", "set"), ("method", "method"), ("setting", "setting"), ("threshold", "threshold"),
                 ("sensitivity", "sens"), ("specificity", "spec"), ("gap", "GAP"), ("top1", "top-1"),
                 ("features_ms", "features ms"), ("knn_ms", "kNN ms"), ("ransac_ms", "RANSAC ms"),
                 ("total_ms", "total ms"), ("end_to_end_ms", "end-to-end ms"), ("memory_bytes", "memory B")]


def run_centroid_vs_delf(settings: BenchSettings, out: str | Path = "bench/centroid-vs-delf.json",
                         plot_path: str | Path = "bench/centroid-vs-delf.png", progress: bool = True) -> str:
    """Run the benchmark (module docstring); write the JSON and the plot; return the text."""
    from lmkcomp.train.data import read_labels

    workdir = Path(settings.workdir)
    data = _dataset(settings, workdir, progress)
    labels = read_labels(data, settings.labels)
    solution = data.recognition_solution.scored("all")
    sets = query_sets(solution, settings.landmark_share, settings.seed)
    validation = validation_ids(data)
    checkpoint_cache: dict[str, Path] = {}

    def checkpoint() -> Path:
        if "path" not in checkpoint_cache:
            checkpoint_cache["path"] = _descriptor_checkpoint(settings, data, workdir, progress)
        return checkpoint_cache["path"]

    stores = _embedding_stores(settings, data, checkpoint, workdir, progress)
    local = _local_stores(settings, data, {"train": labels["id"].tolist(), "index": validation, "test": sets["test"]},
                          workdir, progress)
    timed = _spread(sets["test"], settings.timing_queries)
    centroid_rows, base_index = _centroid_rows(settings, stores, labels, sets, solution, validation, timed, progress)
    delf_rows, ransac_ms = _delf_rows(settings, local, labels, sets, solution, validation, timed, workdir, progress)

    # the descriptor is timed when there is one: given, or trained here for the embeddings
    descriptor = settings.checkpoint or checkpoint_cache.get("path")
    features = features_stage(settings, data, None if descriptor is None else Path(descriptor), local["train"],
                              _spread(sets["test"], settings.timing_images + 1))
    # CNN passes per image: the scales of the query embeddings; DELF's pyramid levels (SIFT: none)
    passes = {"centroids": len(stores["test"].meta.get("scales", [1.0])),
              "DELF": len((local["train"].meta.get("settings") or {}).get("scales", []))}
    rows = centroid_rows + delf_rows
    for row in rows:
        row["features_ms"], row["passes"] = features[row["method"]], passes[row["method"]]
        row["end_to_end_ms"] = row["features_ms"] + row["total_ms"]

    largest = max(settings.delf_candidates)
    images_per_centroid = len(labels) / len(base_index)
    centroid_sweep = sweep_centroids(settings.sweep_sizes, images_per_centroid, base_index.dim, settings.sweep_queries,
                                     settings.seed)
    delf_sweep = sweep_delf(settings.sweep_sizes, settings.sweep_features, settings.delf_index, largest,
                            settings.sweep_queries, settings.seed, progress)

    title = (f"bench centroid-vs-delf: {data.root}, database {len(labels)} {settings.labels} images; thresholds at "
             f"{settings.specificity:.0%} validation specificity unless fixed; median latency per query without the "
             "CNN (ratio: total over the first row)")
    ordered = sorted(rows, key=lambda r: (r["set"] != "offline", r["method"] != "centroids"))
    table = report(title, ordered, TABLE_COLUMNS, out, ratio_of="total_ms")
    real = {r["setting"]: r for r in rows if r["set"] == "test"}
    delf_setting, several = f"{largest} candidates", "several per class"
    result = json.loads(Path(out).read_text(encoding="utf-8"))
    result.update({
        "settings": json.loads(json.dumps(asdict(settings), default=str)),
        "queries": {name: len(ids) for name, ids in sets.items()}, "validation_non_landmarks": len(validation),
        "features_ms": features,
        "this_dataset": {"delf_setting": delf_setting,
                         "time_ratio": real[delf_setting]["total_ms"] / real[several]["total_ms"],
                         "end_to_end_time_ratio": real[delf_setting]["end_to_end_ms"] / real[several]["end_to_end_ms"],
                         "memory_ratio": real[delf_setting]["memory_bytes"] / real[several]["memory_bytes"]},
        "sweep": {"images_per_centroid": images_per_centroid, "features_per_image": settings.sweep_features,
                  "centroids": centroid_sweep, "delf": delf_sweep},
        "growth": growth(centroid_sweep, delf_sweep, ransac_ms[largest]),
    })
    with atomic_write(out, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
        handle.write("\n")
    plot(Path(plot_path), result)
    return "\n".join([table, "", *summary_lines(result)])
