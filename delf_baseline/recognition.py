"""DELF landmark recognition, the baseline of Boiarov & Tyantov 2019: local-feature votes, then RANSAC.

For a query image with local features q_1..q_n (`DelfRecognizer.recognize`):

1. kNN and voting: each q_i takes its `neighbours` (60) nearest database features in the
   `DatabaseIndex` (optionally only those at distance < `max_distance`). Feature q_i gives
   one vote to every database image that owns at least one of its neighbours, so
   votes(image) = |{i : some neighbour of q_i belongs to image}|: a query feature counts once
   per image, however many of that image's features it lands on.
2. Shortlist: images ranked by votes (more first; ties to the earlier image of the index's
   `ids`); the first `candidates` (C = 5 or 20) with at least one vote are the candidates.
3. Verification: each candidate is verified against the query with
   `lmkcomp.local.verify.verify_pair(query, candidate, config)` (seeded; preset
   `official-delf` by default); its score is its inlier count.
4. Decision: the best candidate has the most inliers (ties to the one with more votes). If
   its inliers reach `inlier_threshold`, the query is predicted as the best candidate's
   landmark with confidence = that inlier count; otherwise it is a non-landmark (no
   prediction). `DelfPrediction.score` is the best inlier count either way (0 without
   candidates), so other thresholds can be applied afterwards without rerunning.

Timings (`time.perf_counter`): `knn_seconds` covers the index search, the votes and the
shortlist; `ransac_seconds` covers reading the candidates' features from the database store
and verifying them.

`run_recognition` recognises a whole query store into a resumable folder of parquet chunks
(`OUT/manifest.json` describing the run, `OUT/chunk-00000.parquet`, ...; columns in
`STORED_COLUMNS`), which `submission_predictions` turns into a Kaggle submission. The chunks
hold each query's best candidate and inliers, not the decision, so the folder does not depend
on `inlier_threshold`: a rerun with another threshold reads them and applies it
(`apply_inlier_threshold`) without any kNN or RANSAC. `calibrate_inlier_threshold` picks the
threshold from such a frame of a labelled split (`lmkcomp.calibration`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from delf_baseline.index import DatabaseIndex, load_database_index, read_index_request
from lmkcomp.calibration import Calibration, calibrate_recognition_threshold, recognition_scores
from lmkcomp.checks import positive_int
from lmkcomp.errors import UserInputError
from lmkcomp.executors import Executor, LocalExecutor, runs_in_process
from lmkcomp.fileio import atomic_write
from lmkcomp.local.record import LocalFeatures
from lmkcomp.local.store import LocalFeatureStore
from lmkcomp.local.verify import VerifyConfig, create_verifier, verify_config, verify_pair
from lmkcomp.manifest import MANIFEST_NAME, check_ids, ids_sha256, read_manifest, write_manifest

FORMAT = "lmkcomp-delf-recognition"
FORMAT_VERSION = 2
#: `landmark_id` of a query predicted as non-landmark in a predictions frame
NO_LANDMARK = -1
#: columns of a predictions frame, in order (see `predictions_frame`)
PREDICTION_COLUMNS = ("id", "landmark_id", "score", "best_landmark", "best_image", "candidates", "knn_seconds",
                      "ransac_seconds")
#: columns of a run's chunk files: all but the thresholded `landmark_id`
STORED_COLUMNS = tuple(column for column in PREDICTION_COLUMNS if column != "landmark_id")

#: Verification preset by local-feature method, `official-delf` for any other. On SIFT (256 px
#: synthetic images) the official preset's 20 px affine residual lets chance matches through:
#: on 60 test queries of the small preset (pca10-kdtree, C = 20) the best candidate of a
#: non-landmark query had a median of 26 inliers with it and 5 with `fast` (tuned for SIFT),
#: for medians of 87 and 48 on correctly recognised landmark queries.
DEFAULT_VERIFY_PRESETS: dict[str, str] = {"sift": "fast", "rootsift": "fast"}
#: Inlier threshold by (local-feature method, preset), where measured; `lmkcomp delf recognize`
#: falls back on it only when the data has no labelled index split to calibrate one on
#: (`calibrate_inlier_threshold`): it was measured on 256 px renders, not on photos. SIFT with
#: `fast`: on the small synthetic preset, index-split queries (571 landmark, 190 distractor
#: images) against the train split (pca10-kdtree, C = 20) reached 99% specificity from 19
#: inliers on (99.5%, with 68% sensitivity); 15 gave 96% specificity, 10 gave 88%.
DEFAULT_INLIER_THRESHOLDS: dict[tuple[str, str], int] = {("sift", "fast"): 20}


def default_verify_preset(method: str) -> str:
    """The verification preset for local features of `method` (`DEFAULT_VERIFY_PRESETS`)."""
    return DEFAULT_VERIFY_PRESETS.get(method, "official-delf")


@dataclass(frozen=True)
class Candidate:
    """A shortlisted database image: its id and landmark, its votes and its verified inliers."""

    image_id: str
    landmark_id: int
    votes: int
    inliers: int


@dataclass(frozen=True)
class StageTimings:
    """Seconds spent on one query, by stage (see the module docstring)."""

    knn_seconds: float
    ransac_seconds: float

    @property
    def total_seconds(self) -> float:
        return self.knn_seconds + self.ransac_seconds


@dataclass(frozen=True)
class DelfPrediction:
    """The recognition of one query.

    `landmark_id`: the predicted landmark, None for a non-landmark; `score`: the best
    candidate's inlier count (also when below the threshold; 0 without candidates), the
    prediction's confidence; `candidates`: the shortlist in vote order, each verified.
    """

    landmark_id: int | None
    score: float
    candidates: tuple[Candidate, ...]
    timings: StageTimings

    @property
    def best(self) -> Candidate | None:
        """The candidate with the most inliers (the earliest of equals), None without candidates."""
        if not self.candidates:
            return None
        return max(self.candidates, key=lambda candidate: candidate.inliers)


def vote(neighbour_images: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`(images, votes)`: database images ranked by votes, and their votes.

    `neighbour_images` is Q x k: row i holds the images owning query feature i's neighbours
    (-1 for none); `valid` (Q x k bool, optional) drops the neighbours marked False. Each
    query feature votes once for each distinct image among its neighbours. Images are
    ranked by votes, more first, ties to the lower image number; images without a vote are
    not returned.
    """
    neighbour_images = np.asarray(neighbour_images, dtype=np.int64)
    keep = neighbour_images >= 0
    if valid is not None:
        keep &= valid
    features = np.broadcast_to(np.arange(len(neighbour_images))[:, None], neighbour_images.shape)[keep]
    images = neighbour_images[keep]
    # One (feature, image) pair per distinct image of a feature's neighbours, each pair coded
    # as one integer so that a 1-d unique finds them.
    width = int(images.max()) + 1 if len(images) else 1
    pairs = np.unique(features * width + images)
    ranked_images, votes = np.unique(pairs % width, return_counts=True)
    order = np.lexsort((ranked_images, -votes))
    return ranked_images[order], votes[order]


class DelfRecognizer:
    """DELF recognition against one database (see the module docstring for the exact rules).

    - `index`: the database's local-feature index; `store`: the database's local features
      (the same images, read for verification); `labels`: landmark id of every indexed image,
      by id, or as an array in `index.ids` order (what a worker is sent: at GLDv2 train's
      4.1 M images a dict by id would cost it some 300 MB more).
    - `candidates` (C), `neighbours` (k), `inlier_threshold`, `max_distance` (None: no limit):
      as in the module docstring.
    - `verify`: a `VerifyConfig`, or the name of a preset of `lmkcomp.local.verify`.
    Raises UserInputError when the store lacks an indexed image, an indexed image has no
    label, or the store's features are not the index's.
    """

    def __init__(self, index: DatabaseIndex, labels: Mapping[str, int] | np.ndarray, store: LocalFeatureStore, *,
                 inlier_threshold: int, candidates: int = 20, neighbours: int = 60,
                 max_distance: float | None = None, verify: VerifyConfig | str = "official-delf"):
        self.index = index
        self.store = store
        self.candidates = positive_int("candidates", candidates)
        self.neighbours = positive_int("neighbours", neighbours)
        self.inlier_threshold = positive_int("inlier_threshold", inlier_threshold)
        if max_distance is not None and not max_distance > 0:
            raise UserInputError(f"max_distance must be positive, got {max_distance!r}")
        self.max_distance = max_distance
        self.verify_config = verify_config(verify, store.method) if isinstance(verify, str) else verify
        self._verifier = create_verifier(self.verify_config)
        if store.dim != index.dim:
            raise UserInputError(f"{store.directory}: {store.dim}-d features, but the index holds {index.dim}-d ones")
        missing = np.flatnonzero(store.rows(index.ids) < 0)  # at once: a worker checks every indexed image
        if missing.size:
            raise UserInputError(f"{store.directory}: indexed image {index.ids[missing[0]]} is not in the database store")
        if isinstance(labels, np.ndarray):
            if labels.shape != (len(index.ids),):
                raise ValueError(f"labels of shape {labels.shape} for {len(index.ids)} indexed images")
        else:
            unlabelled = next((image_id for image_id in index.ids if image_id not in labels), None)
            if unlabelled is not None:
                raise UserInputError(f"indexed image {unlabelled} has no landmark label")
            labels = np.array([labels[image_id] for image_id in index.ids])
        self._labels = labels.astype(np.int64)

    def worker_setup(self, index_dir: str | Path) -> RecognizerSetup:
        """What a worker (another process or node) needs to build this recognizer again, with
        the index saved in `index_dir`; a UserInputError unless that index was built as this one."""
        found = read_index_request(index_dir)
        if found != self.index.request:
            raise UserInputError(f"{index_dir}: holds another DELF index than the recognizer's")
        return RecognizerSetup(str(Path(index_dir).resolve()), str(self.store.directory.resolve()), self._labels,
                               self.inlier_threshold, self.candidates, self.neighbours, self.max_distance,
                               self.verify_config)

    def settings(self) -> dict[str, Any]:
        """Everything that decides each query's candidates and inliers (JSON): the index's
        request, the labels' SHA-256, C, k, max_distance and the verification config; not the
        inlier threshold, which only decides what is done with them."""
        return {"index": self.index.request, "labels_sha256": hashlib.sha256(self._labels.tobytes()).hexdigest(),
                "candidates": self.candidates, "neighbours": self.neighbours, "max_distance": self.max_distance,
                "verify": dataclasses.asdict(self.verify_config)}

    def shortlist(self, query: LocalFeatures) -> tuple[np.ndarray, np.ndarray]:
        """`(images, votes)` of the first `candidates` images by votes (positions in `index.ids`)."""
        if len(query) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        distances, positions = self.index.features.search(query.descriptors, self.neighbours)
        neighbour_images = np.where(positions >= 0, self.index.image_rows[np.maximum(positions, 0)], -1)
        valid = None if self.max_distance is None else distances < self.max_distance
        images, votes = vote(neighbour_images, valid)
        return images[:self.candidates], votes[:self.candidates]

    def recognize(self, query: LocalFeatures) -> DelfPrediction:
        """Recognise one query from its local features."""
        if query.dim != self.index.dim:
            raise ValueError(f"query has {query.dim}-d descriptors, the index {self.index.dim}-d")
        start = time.perf_counter()
        images, votes = self.shortlist(query)
        shortlisted = time.perf_counter()
        candidates = []
        for image, image_votes in zip(images.tolist(), votes.tolist()):
            image_id = self.index.ids[image]
            result = verify_pair(query, self.store.get(image_id), self.verify_config, self._verifier)
            candidates.append(Candidate(image_id, int(self._labels[image]), int(image_votes), result.inliers))
        verified = time.perf_counter()
        timings = StageTimings(shortlisted - start, verified - shortlisted)
        prediction = DelfPrediction(None, 0.0, tuple(candidates), timings)
        best = prediction.best
        if best is None:
            return prediction
        landmark = best.landmark_id if best.inliers >= self.inlier_threshold else None
        return dataclasses.replace(prediction, landmark_id=landmark, score=float(best.inliers))


@dataclass(frozen=True)
class RecognizerSetup:
    """A `DelfRecognizer` as folders and settings (picklable): calling it loads the index from
    `index_dir`, opens the database store in `store_dir` and labels the index's images with
    `labels` (in index order)."""

    index_dir: str
    store_dir: str
    labels: np.ndarray
    inlier_threshold: int
    candidates: int
    neighbours: int
    max_distance: float | None
    verify: VerifyConfig

    def __call__(self) -> DelfRecognizer:
        index = load_database_index(self.index_dir)
        return DelfRecognizer(index, self.labels, LocalFeatureStore(self.store_dir),
                              inlier_threshold=self.inlier_threshold, candidates=self.candidates,
                              neighbours=self.neighbours, max_distance=self.max_distance, verify=self.verify)


@dataclass(frozen=True)
class _RecognitionChunk:
    """Queries `ids` of one chunk of a run and the file (absolute) their stored rows go to."""

    path: str
    ids: list[str]


@dataclass
class _RecognitionContext:
    """A worker's recognizer and query store."""

    recognizer: DelfRecognizer
    queries: LocalFeatureStore


def _open_recognition_context(recognizer: RecognizerSetup, query_dir: str) -> _RecognitionContext:
    return _RecognitionContext(recognizer(), LocalFeatureStore(query_dir))


def _recognize_chunk(context: _RecognitionContext, chunk: _RecognitionChunk) -> int:
    """Recognise the chunk's queries and write its file atomically; returns its queries."""
    predictions = {image_id: context.recognizer.recognize(context.queries.get(image_id)) for image_id in chunk.ids}
    with atomic_write(chunk.path, "wb") as handle:
        predictions_frame(predictions)[list(STORED_COLUMNS)].to_parquet(handle, index=False)
    return len(chunk.ids)


def _query_ids(queries: LocalFeatureStore, recognizer: DelfRecognizer, ids: Sequence[str] | None) -> list[str]:
    if queries.method != recognizer.store.method or queries.dim != recognizer.store.dim:
        raise UserInputError(f"{queries.directory}: {queries.method} {queries.dim}-d query features, but the "
                             f"database has {recognizer.store.method} {recognizer.store.dim}-d ones")
    ids = list(queries.ids if ids is None else ids)
    check_ids(ids)
    missing = np.flatnonzero(queries.rows(ids) < 0)
    if missing.size:
        raise UserInputError(f"{queries.directory}: query image {ids[missing[0]]} is not in the query store")
    return ids


def recognize_store(recognizer: DelfRecognizer, queries: LocalFeatureStore, ids: Sequence[str] | None = None,
                    progress: bool = True) -> dict[str, DelfPrediction]:
    """`recognizer.recognize` on the queries `ids` (default: all of `queries`), in order, in memory."""
    ids = _query_ids(queries, recognizer, ids)
    return {image_id: recognizer.recognize(queries.get(image_id))
            for image_id in tqdm(ids, desc="DELF recognition", unit="query", disable=not progress)}


def predictions_frame(predictions: Mapping[str, DelfPrediction]) -> pd.DataFrame:
    """One row per query, columns `PREDICTION_COLUMNS`: `landmark_id` (NO_LANDMARK for a
    non-landmark), `score`, `best_landmark` and `best_image` (the best candidate's landmark and
    id, NO_LANDMARK and "" without candidates), `candidates` (how many were verified) and the
    two stage timings."""
    rows = []
    for image_id, prediction in predictions.items():
        best = prediction.best
        rows.append((image_id, NO_LANDMARK if prediction.landmark_id is None else prediction.landmark_id,
                     prediction.score, NO_LANDMARK if best is None else best.landmark_id,
                     "" if best is None else best.image_id, len(prediction.candidates),
                     prediction.timings.knn_seconds, prediction.timings.ransac_seconds))
    frame = pd.DataFrame(rows, columns=list(PREDICTION_COLUMNS))
    return frame.astype({"id": str, "landmark_id": np.int64, "score": np.float64, "best_landmark": np.int64,
                         "best_image": str, "candidates": np.int32, "knn_seconds": np.float64,
                         "ransac_seconds": np.float64})


def apply_inlier_threshold(stored: pd.DataFrame, inlier_threshold: int) -> pd.DataFrame:
    """A predictions frame (`PREDICTION_COLUMNS`) from stored rows (`STORED_COLUMNS`): the
    best candidate's landmark where its inliers reach `inlier_threshold`, else NO_LANDMARK;
    the rule of `DelfRecognizer.recognize`, applied without recomputing anything."""
    inlier_threshold = positive_int("inlier_threshold", inlier_threshold)
    claimed = (stored["score"].to_numpy() >= inlier_threshold) & (stored["best_landmark"].to_numpy() != NO_LANDMARK)
    frame = stored.assign(landmark_id=np.where(claimed, stored["best_landmark"].to_numpy(), NO_LANDMARK))
    return frame[list(PREDICTION_COLUMNS)].astype({"landmark_id": np.int64})


def calibration_scores(frame: pd.DataFrame, labels: Mapping[str, int]) -> pd.DataFrame:
    """The queries of a predictions (or stored) frame of a labelled split as labelled scores
    (`lmkcomp.calibration.recognition_scores`): columns `id`, `landmark_id` (`labels`' landmark,
    NO_LANDMARK for a non-landmark image), `best_landmark`, `inliers` (the best candidate's, 0
    without candidates), `landmark` (1 for a landmark image, else 0) and `score`: the inliers,
    or -inf for a landmark image whose best candidate shows another landmark."""
    ids = frame["id"].tolist()
    is_landmark, scores = recognition_scores(ids, frame["best_landmark"], frame["score"], labels)
    return pd.DataFrame({"id": ids, "landmark_id": [labels.get(image_id, NO_LANDMARK) for image_id in ids],
                         "best_landmark": frame["best_landmark"].to_numpy(), "inliers": frame["score"].to_numpy(),
                         "landmark": is_landmark.astype(np.int64), "score": scores})


def calibrate_inlier_threshold(frame: pd.DataFrame, labels: Mapping[str, int],
                               target_specificity: float) -> Calibration:
    """The lowest inlier threshold (>= 1) at which at most 1 - `target_specificity` of a
    labelled split's non-landmark images get a prediction
    (`lmkcomp.calibration.calibrate_recognition_threshold` on `frame`, predictions or stored
    rows of the split; `labels`: id -> landmark of its landmark images)."""
    return calibrate_recognition_threshold(frame["id"].tolist(), frame["best_landmark"], frame["score"], labels,
                                           target_specificity, integer=True, minimum=1)


def submission_predictions(frame: pd.DataFrame) -> dict[str, tuple[int, float]]:
    """`id -> (landmark_id, score)` for the rows of a predictions frame that predict a landmark."""
    found = frame[frame["landmark_id"] != NO_LANDMARK]
    return {image_id: (int(landmark), float(score))
            for image_id, landmark, score in zip(found["id"], found["landmark_id"], found["score"])}


def latency_summary(frame: pd.DataFrame) -> dict[str, int | float]:
    """The number of queries and the mean seconds per query of the kNN/voting stage, the
    RANSAC stage and both."""
    knn, ransac = frame["knn_seconds"], frame["ransac_seconds"]
    return {"queries": len(frame), "mean_knn_seconds": float(knn.mean()),
            "mean_ransac_seconds": float(ransac.mean()), "mean_total_seconds": float((knn + ransac).mean())}


def chunk_file(k: int) -> str:
    """File name of chunk `k` of a recognition run: `chunk-00000.parquet` for k = 0."""
    return f"chunk-{k:05d}.parquet"


def run_recognition(recognizer: DelfRecognizer, queries: LocalFeatureStore, out: str | Path,
                    ids: Sequence[str] | None = None, chunk_size: int = 256, progress: bool = True,
                    executor: Executor | None = None, index_dir: str | Path | None = None) -> pd.DataFrame:
    """Recognise the queries `ids` (default: all of `queries`) into the run folder `out`;
    returns the predictions frame of every query, in `ids` order, at the recognizer's
    inlier threshold.

    Chunk `k` holds queries `[k * chunk_size, (k + 1) * chunk_size)` (`STORED_COLUMNS`),
    written atomically once done; a rerun with the same recognizer settings (whatever its
    threshold), queries and chunk size computes only the chunks still missing (their timings
    are those of the run that computed them). A folder describing another run is a
    UserInputError.

    Each chunk is one task of `executor` (default: in this process, with `recognizer` itself);
    an executor that runs tasks elsewhere builds the recognizer in each worker from its index
    saved in `index_dir` (`DelfRecognizer.worker_setup`). The predictions do not depend on the
    executor; only the timings do.
    """
    out = Path(out)
    ids = _query_ids(queries, recognizer, ids)
    chunk_size = positive_int("chunk_size", chunk_size)
    executor = executor or LocalExecutor()
    wanted = {"format": FORMAT, "version": FORMAT_VERSION, "recognizer": recognizer.settings(),
              "queries": {"method": queries.method, "meta": queries.meta,
                          "ids_sha256": ids_sha256(ids)},
              "chunk_size": chunk_size}
    _open_run(out, wanted)
    starts = range(0, len(ids), chunk_size)
    # Absolute paths: a worker elsewhere (a Ray node) does not share this process's directory.
    chunks = [_RecognitionChunk(str(out.resolve() / chunk_file(k)), ids[starts[k]:starts[k] + chunk_size])
              for k in range(len(starts)) if not (out / chunk_file(k)).is_file()]
    if runs_in_process(executor):
        setup = functools.partial(_RecognitionContext, recognizer, queries)
    elif index_dir is None:
        raise UserInputError("DELF recognition on workers needs the index saved in a folder (index_dir)")
    else:
        setup = functools.partial(_open_recognition_context, recognizer.worker_setup(index_dir),
                                  str(queries.directory.resolve()))
    executor.run(setup, _recognize_chunk, chunks, sizes=[len(chunk.ids) for chunk in chunks],
                 desc="DELF recognition", unit="query", progress=progress)
    frames = [pd.read_parquet(out / chunk_file(k)) for k in range(len(starts))]
    stored = pd.concat(frames, ignore_index=True) if frames else predictions_frame({})[list(STORED_COLUMNS)]
    if stored["id"].tolist() != ids:
        raise UserInputError(f"{out}: chunk files do not hold the requested queries in order; delete the folder")
    return apply_inlier_threshold(stored, recognizer.inlier_threshold)


def _open_run(out: Path, wanted: dict) -> None:
    """Create the run's manifest, or check that the one in `out` describes the same run."""
    wanted = json.loads(json.dumps(wanted))
    if (out / MANIFEST_NAME).is_file():
        found = read_manifest(out, MANIFEST_NAME, FORMAT, FORMAT_VERSION, "a DELF recognition run")
        different = next((key for key in wanted if found.get(key) != wanted[key]), None)
        if different is not None:
            raise UserInputError(f"{out}: holds a DELF recognition run with another {different}; "
                                 "choose another folder or delete this one")
        return
    if out.is_dir() and any(out.glob("chunk-*.parquet")):
        raise UserInputError(f"{out}: holds chunk files but no {MANIFEST_NAME}; choose another folder or delete this one")
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(out, wanted)
