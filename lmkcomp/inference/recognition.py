"""Recognition over embedding stores: a landmark and a confidence for every query image, and
the Kaggle recognition submission of the test split.

Methods (`RECOGNITION_METHODS`, chosen by `RecognitionConfig.method`):

- `soft-voting`: the query's `k` nearest labelled train images vote
  (`lmkcomp.voting.soft_voting`), optionally with the inlier term of a pair table and the
  non-landmark bank penalty (A - B - C, `lmkcomp.voting.nonlandmark_penalized_scores`);
- `nearest`: the same with k = 1, i.e. the label and similarity of the nearest train image;
- `classifier`: the trained head's argmax (`lmkcomp.voting.classifier_predictions`);
- `verified-voting`: spatial verification of each test image against its nearest train
  images (or all of them), then inlier voting (`lmkcomp.inference.verified`).

Then, optionally, distractor demotion over the whole test set
(`lmkcomp.voting.demote_frequent_labels`). kNN tables are cached in the work folder, so
rerunning with other voting options costs no search.

When the dataset has a recognition solution, `recognize` writes every scored test image's
prediction as labelled scores, `WORKDIR/recognition/<name>/calibration-scores.csv`
(`write_calibration_scores`), for `lmkcomp calibrate --scores`: verified voting's `min_score`
is calibrated on its `score` column, and the demote-over count on its `landmark_predictions`
(`--demote-over`), each for a target specificity, then re-applied without recomputing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lmkcomp.calibration import recognition_scores
from lmkcomp.data.layout import LandmarkData
from lmkcomp.errors import UserInputError
from lmkcomp.executors import Executor
from lmkcomp.features.store import EmbeddingStore
from lmkcomp.fileio import atomic_write
from lmkcomp.inference.common import (
    BLOCK_ROWS,
    cached_search,
    check_and_score,
    inlier_counts,
    inlier_lookup,
    neighbour_ids,
    padded_database_ids,
    test_ids,
    write_pair_list,
)
from lmkcomp.voting import (
    classifier_predictions,
    demote_frequent_labels,
    mean_top_similarity,
    nonlandmark_penalized_scores,
    prediction_counts,
    soft_voting,
)
from lmkcomp.registry import Registry
from lmkcomp.search.knn_table import KnnTable
from lmkcomp.search.run import DEFAULT_SPEC
from lmkcomp.submission import write_recognition_submission


@dataclass
class RecognitionConfig:
    """How `recognize` predicts. Every optional stage is off when its field is None.

    `labels`: train labels, "train", "train_clean" or a train_clean-format CSV. `index`: the
    search spec (`lmkcomp.search.create_searcher`: "Flat", "numpy", "IVF1024,PQ32"...). `neighbours`:
    train neighbours searched and cached per query (at least `k`; a larger table serves later
    runs with a larger k). `inliers`: pair table folder of (query, train neighbour) pairs.
    `demote_over`: demote landmarks predicted for more test images than this (a count that grows
    with the test set: one calibrated on V labelled images by `calibrate_demote_over` of
    `lmkcomp.calibration` holds for about V test images); `demote_factor`: multiply their
    confidences instead of pushing them below the others. `nonlandmark_bank`: an
    embedding store of non-landmark pictures; B and C are the mean top-`bank_train_top` and
    top-`bank_query_top` similarities to it. `checkpoint`: the model whose head `classifier` uses.

    `verified-voting` (`lmkcomp.inference.verified`): `test_local` / `train_local` are local
    feature stores; `candidates` train images per test image are verified (the nearest by
    embedding; 0: every labelled train image) with the `verify_preset` in `workers` processes;
    `k` is then the number of a landmark's best verified train images whose inliers add up, and
    a test image whose best landmark scores below `min_score` gets no prediction.
    """

    method: str = "soft-voting"
    k: int = 3
    labels: str = "train"
    index: str = DEFAULT_SPEC
    neighbours: int = 10
    inliers: str | None = None
    inlier_cap: float = 70.0
    demote_over: int | None = None
    demote_factor: float | None = None
    nonlandmark_bank: str | None = None
    bank_train_top: int = 5
    bank_query_top: int = 10
    checkpoint: str | None = None
    test_local: str | None = None
    train_local: str | None = None
    candidates: int = 100
    verify_preset: str = "fast"
    workers: int = 1
    min_score: float | None = None


@dataclass(frozen=True)
class LandmarkPredictions:
    """One predicted landmark and confidence per query row; `valid` is False for a row with no
    prediction (an approximate index found no neighbour for it). `before_min_score`: `valid`
    before `RecognitionConfig.min_score` dropped the rows scoring below it (verified voting),
    None where no such threshold applied. `files`: what the method wrote for the user to read,
    by description (path)."""

    ids: list[str]
    labels: np.ndarray
    confidences: np.ndarray
    valid: np.ndarray
    files: dict[str, str] = field(default_factory=dict)
    before_min_score: np.ndarray | None = None


#: name -> fn(queries, train, data, config, workdir, progress) -> LandmarkPredictions
RECOGNITION_METHODS: Registry[LandmarkPredictions] = Registry("recognition method")


# --------------------------------------------------------------------------------------------
# kNN methods


def read_train_labels(data: LandmarkData, source: str) -> pd.DataFrame:
    """`id, landmark_id` of the labelled train images (see `RecognitionConfig.labels`)."""
    from lmkcomp.train.data import read_labels

    return read_labels(data, source)


def voting_table(queries: EmbeddingStore, train: EmbeddingStore | None, labelled_ids: list[str],
                 config: RecognitionConfig, workdir: str | Path, progress: bool = True,
                 executor: Executor | None = None) -> KnnTable:
    """The cached kNN table of `queries` against the labelled train images that voting reads
    (searched by `executor`, default in this process)."""
    if train is None:
        raise UserInputError(f"recognition method {config.method!r} needs a train embedding store")
    table = cached_search(queries, train, workdir, max(config.k, config.neighbours), config.index,
                          database_ids=labelled_ids, progress=progress, executor=executor)
    if table.query_ids != queries.ids:
        raise UserInputError(f"{table.directory}: its query rows are not those of {queries.directory}")
    return table


def _bank_terms(queries: EmbeddingStore, train: EmbeddingStore, table: KnnTable, config: RecognitionConfig,
                workdir: str | Path, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """(B for each database position of `table`, C for each query row)."""
    bank = EmbeddingStore(config.nonlandmark_bank)
    query_bank = cached_search(queries, bank, workdir, config.bank_query_top, config.index, progress=progress)
    # only the labelled train images (the voting table's database) can be neighbours
    train_bank = cached_search(train, bank, workdir, config.bank_train_top, config.index,
                               query_ids=table.database_ids, progress=progress)
    # both tables list their query rows in store order, as the voting table lists its database
    if train_bank.query_ids != table.database_ids:
        raise UserInputError(f"{train_bank.directory}: its query rows are not the database of {table.directory}")
    # a bank smaller than the top n (e.g. a handful of pictures) is averaged whole
    return (mean_top_similarity(train_bank.scores(), min(config.bank_train_top, len(bank))),
            mean_top_similarity(query_bank.scores(), min(config.bank_query_top, len(bank))))


def _vote(queries: EmbeddingStore, train: EmbeddingStore, data: LandmarkData, config: RecognitionConfig,
          workdir: str | Path, progress: bool, k: int, executor: Executor | None) -> LandmarkPredictions:
    labels = read_train_labels(data, config.labels).set_index("id")["landmark_id"]
    table = voting_table(queries, train, labels.index.tolist(), config, workdir, progress, executor)
    database_labels = labels.loc[table.database_ids].to_numpy(np.int64)
    lookup = inlier_lookup(config.inliers) if config.inliers else None
    database_ids = padded_database_ids(table) if lookup is not None else None
    bank = _bank_terms(queries, train, table, config, workdir, progress) if config.nonlandmark_bank else None
    n = len(table)
    predicted, confidence = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.float64)
    valid = np.zeros(n, dtype=bool)
    for start, scores, indices in table.iter_blocks(BLOCK_ROWS):
        rows = slice(start, start + len(indices))
        scores, indices = scores[:, :k].astype(np.float64), indices[:, :k]
        missing = indices < 0
        safe = np.where(missing, 0, indices)
        if bank is not None:
            scores = nonlandmark_penalized_scores(scores, bank[0][safe], bank[1][rows])
        inliers = None
        if lookup is not None:
            inliers = inlier_counts(lookup, table.query_ids[rows], neighbour_ids(database_ids, indices))
        # A missing neighbour votes nothing: weight 0 for the best neighbour's label.
        neighbour_labels = np.where(missing, database_labels[safe[:, :1]], database_labels[safe])
        scores[missing] = 0.0
        predicted[rows], confidence[rows] = soft_voting(scores, neighbour_labels, k=k, inliers=inliers,
                                                        inlier_cap=config.inlier_cap)
        valid[rows] = ~missing[:, 0]
    return LandmarkPredictions(list(queries.ids), predicted, confidence, valid)


@RECOGNITION_METHODS.register("soft-voting")
def predict_by_soft_voting(queries, train, data, config, workdir, progress, executor=None) -> LandmarkPredictions:
    """Soft voting of the `config.k` nearest train images (with inliers / bank when configured)."""
    return _vote(queries, train, data, config, workdir, progress, config.k, executor)


@RECOGNITION_METHODS.register("nearest")
def predict_by_nearest(queries, train, data, config, workdir, progress, executor=None) -> LandmarkPredictions:
    """Label and similarity of the nearest train image: soft voting with k = 1."""
    return _vote(queries, train, data, config, workdir, progress, 1, executor)


# --------------------------------------------------------------------------------------------
# Classifier head


@dataclass(frozen=True)
class HeadWeights:
    """A trained head as arrays: `weight` (classes x subcenters rows, dim), `bias` (softmax
    only), whether its scores are cosines, and the landmark id of each class index; a head
    trained with non-landmark images has one class more, the non-landmark class, last."""

    weight: np.ndarray
    bias: np.ndarray | None
    cosine: bool
    subcenters: int
    landmark_ids: np.ndarray


def load_head_weights(checkpoint: str | Path) -> HeadWeights:
    """The classifier head of a training checkpoint, with its class index -> landmark id map."""
    from lmkcomp.models.heads import SoftmaxHead
    from lmkcomp.train.checkpoint import load_trained_model

    model, _, landmark_ids = load_trained_model(checkpoint)
    head = model.head
    ids = np.asarray(landmark_ids, dtype=np.int64)
    if isinstance(head, SoftmaxHead):
        return HeadWeights(head.fc.weight.detach().numpy(), head.fc.bias.detach().numpy(), False, 1, ids)
    return HeadWeights(head.weight.detach().numpy(), None, True, head.subcenters, ids)


@RECOGNITION_METHODS.register("classifier")
def predict_by_classifier(queries, train, data, config, workdir, progress, executor=None) -> LandmarkPredictions:
    """Argmax of the checkpoint's head over the stored embeddings (cosine for margin heads).

    An image whose argmax is the non-landmark class gets no prediction (an empty row). A
    softmax head scores the stored embeddings, which are L2-normalised: its logits are those of
    training divided by the embedding norm (plus the bias), so its argmax can differ slightly."""
    if config.checkpoint is None:
        raise UserInputError("the classifier method needs a checkpoint (--checkpoint)")
    if config.inliers or config.nonlandmark_bank:
        raise UserInputError("the classifier method takes no inliers and no non-landmark bank: they weigh neighbours")
    head = load_head_weights(config.checkpoint)
    if head.weight.shape[1] != queries.dim:
        raise UserInputError(f"{config.checkpoint}: head of dim {head.weight.shape[1]}, but {queries.directory} "
                             f"holds {queries.dim}-d embeddings (an ensemble or a whitened store?)")
    classes, confidences = [], []
    for _, block in queries.iter_blocks(BLOCK_ROWS):
        c, conf = classifier_predictions(block, head.weight, head.bias, head.cosine, head.subcenters)
        classes.append(c)
        confidences.append(conf)
    classes = np.concatenate(classes) if classes else np.zeros(0, dtype=np.int64)
    confidence = np.concatenate(confidences) if confidences else np.zeros(0)
    landmark = classes < len(head.landmark_ids)
    labels = np.where(landmark, head.landmark_ids[np.where(landmark, classes, 0)], -1)
    return LandmarkPredictions(list(queries.ids), labels, confidence, landmark)


# --------------------------------------------------------------------------------------------
# Public API


def predict_landmarks(queries: EmbeddingStore, train: EmbeddingStore | None, data: LandmarkData,
                      config: RecognitionConfig, workdir: str | Path, progress: bool = True,
                      executor: Executor | None = None) -> LandmarkPredictions:
    """A landmark and a confidence for every row of `queries` by `config.method` (no demotion);
    the method's kNN search or verification runs on `executor` (default: this machine, as
    `config.workers` says)."""
    if config.k < 1 or config.neighbours < 1:
        raise UserInputError(f"k and neighbours must be >= 1, got {config.k} and {config.neighbours}")
    method: Callable[..., LandmarkPredictions] = RECOGNITION_METHODS.get(config.method)
    return method(queries, train, data, config, workdir, progress, executor)


def write_recognition_pairs(test: EmbeddingStore, train: EmbeddingStore, data: LandmarkData, out: str | Path,
                            config: RecognitionConfig, workdir: str | Path, progress: bool = True,
                            executor: Executor | None = None) -> int:
    """Write the (test image, train neighbour) pairs whose inliers soft voting reads, i.e. each
    test image's `config.k` nearest labelled train images, as a pair list CSV for
    `lmkcomp verify`; returns the number of pairs. `executor` runs the kNN search's shards."""
    labelled = read_train_labels(data, config.labels)["id"].tolist()
    table = voting_table(test, train, labelled, config, workdir, progress, executor)
    return write_pair_list(table, out, config.k if config.method != "nearest" else 1)


def write_calibration_scores(data: LandmarkData, predictions: LandmarkPredictions, path: str | Path) -> None:
    """The predictions of the scored test images (`recognition_solution.scored("all")`, in the
    order of `predictions.ids`) as a labelled scores CSV for `lmkcomp calibrate --scores`:

    - `id`, `best_landmark`: the image and the landmark it is predicted as;
    - `confidence`: its confidence before any demotion and before `min_score`, -inf for a row
      without a prediction (`valid`, or `before_min_score` where a `min_score` applied);
    - `landmark`: 1 for a landmark image, 0 for a non-landmark image;
    - `score`: `confidence`, -inf where a landmark image's best landmark is wrong
      (`lmkcomp.calibration.recognition_scores`): what a confidence threshold is calibrated on;
    - `landmark_predictions`: `lmkcomp.voting.prediction_counts` over every row of
      `predictions` with a valid prediction (after `min_score`), the count that demotion
      compares with `demote_over` (0: no prediction); `calibrate --demote-over` reads it.
    """
    answers = data.recognition_solution.scored("all")
    rows = np.array([row for row, image_id in enumerate(predictions.ids) if image_id in answers], dtype=np.int64)
    ids = [predictions.ids[row] for row in rows]
    truth = {image_id: answers[image_id][0] for image_id in ids if answers[image_id]}
    predicted = predictions.valid if predictions.before_min_score is None else predictions.before_min_score
    confidence = np.where(predicted[rows], predictions.confidences[rows], -np.inf)
    is_landmark, scores = recognition_scores(ids, predictions.labels[rows], confidence, truth)
    frame = pd.DataFrame({"id": ids, "best_landmark": predictions.labels[rows], "confidence": confidence,
                          "landmark": is_landmark.astype(np.int64), "score": scores,
                          "landmark_predictions": prediction_counts(predictions.labels, predictions.valid)[rows]})
    with atomic_write(path, "w", encoding="utf-8", newline="") as handle:
        frame.to_csv(handle, index=False)


def recognize(
    data: LandmarkData,
    test: EmbeddingStore,
    train: EmbeddingStore | None,
    name: str,
    config: RecognitionConfig | None = None,
    workdir: str | Path = "runs/inference",
    submissions: str | Path = "submissions",
    split: str = "all",
    progress: bool = True,
    executor: Executor | None = None,
) -> dict:
    """Predict the test split, write `submissions/recognition_<name>.csv`, validate it and score
    it on `split` when the dataset has a recognition solution, and then also write its labelled
    scores, `workdir/recognition/<name>/calibration-scores.csv` (`write_calibration_scores`,
    on every scored row whatever `split`). `executor` runs the method's kNN search or
    verification shards (default: this machine).

    Returns `csv` (the path), `predicted` (rows with a prediction), `demoted` (rows demoted as
    distractors), `scores` (`lmkcomp.submission.score_recognition`'s dict, or None) and `files`
    (what the method wrote besides, `LandmarkPredictions.files`, and "calibration scores").
    """
    config = config or RecognitionConfig()
    predictions = predict_landmarks(test, train, data, config, workdir, progress, executor)
    confidences = predictions.confidences.copy()
    demoted = 0
    if config.demote_over is not None:
        valid = predictions.valid
        confidences[valid], mask = demote_frequent_labels(predictions.labels[valid], confidences[valid],
                                                          config.demote_over, config.demote_factor)
        demoted = int(mask.sum())
    path = Path(submissions) / f"recognition_{name}.csv"
    ids = test_ids(data)
    rows = zip(predictions.ids, predictions.labels.tolist(), confidences.tolist(), predictions.valid.tolist())
    write_recognition_submission(path, ids, {i: (label, c) for i, label, c, ok in rows if ok})
    scores = check_and_score(data, path, "recognition", ids, split)
    files = dict(predictions.files)
    if data.has("recognition_solution"):
        files["calibration scores"] = str(Path(workdir) / "recognition" / name / "calibration-scores.csv")
        write_calibration_scores(data, predictions, files["calibration scores"])
    return {"csv": str(path), "predicted": int(predictions.valid.sum()), "demoted": demoted, "scores": scores,
            "files": files}
