"""Score a trained descriptor on a dataset's test split, for both tasks (model comparison on
datasets that fit in memory, such as the synthetic presets; the search layer handles GLDv2 scale).

Retrieval: the 100 nearest index images of each test image. Recognition: soft voting over the
3 nearest train images (similarity only). Both are written as Kaggle submissions and scored
with the official metrics, so model comparisons use exactly the leaderboard's numbers. The
descriptor's health (`lmkcomp.features.health`) comes with them: the ROC AUC of same- vs
different-landmark (test image, index image) pairs and the mean-vector norm of the index.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from lmkcomp.data.labels import split_labels
from lmkcomp.data.layout import LandmarkData
from lmkcomp.features.extract import extract_split
from lmkcomp.features.health import embedding_health
from lmkcomp.voting import soft_voting
from lmkcomp.search import exact_search
from lmkcomp.submission import (
    read_submission,
    score_submission,
    write_recognition_submission,
    write_retrieval_submission,
)


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: LandmarkData,
    workdir: str | Path,
    name: str,
    submissions: str | Path = "submissions",
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    labels: str = "train",
    device: str = "auto",
    workers: int = 2,
    progress: bool = True,
) -> dict:
    """Extract the three splits into `workdir`, write `<task>_<name>.csv` submissions, score them."""
    workdir, submissions = Path(workdir), Path(submissions)
    stores = {
        split: extract_split(checkpoint, data, split, workdir / split, scales=scales, flip=flip, dtype="float32",
                             device=device, workers=workers, progress=progress)
        for split in ("train", "index", "test")
    }
    test = stores["test"].array()
    test_ids = stores["test"].ids

    index, index_ids = stores["index"].array(), stores["index"].ids
    _, nearest = exact_search(test, index, k=100)
    retrieval_csv = submissions / f"retrieval_{name}.csv"
    write_retrieval_submission(retrieval_csv, test_ids, {q: [index_ids[j] for j in row] for q, row in zip(test_ids, nearest)})

    train_labels = data.train_labels(clean=labels == "train_clean").set_index("id")["landmark_id"]
    train_store = stores["train"]
    positions = train_store.position(train_labels.index.tolist())
    scores, neighbours = exact_search(test, train_store.array()[positions], k=3)
    predicted, confidence = soft_voting(scores, train_labels.to_numpy()[neighbours], k=3)
    recognition_csv = submissions / f"recognition_{name}.csv"
    write_recognition_submission(
        recognition_csv, test_ids, {q: (int(l), float(c)) for q, l, c in zip(test_ids, predicted, confidence)}
    )

    recognition = score_submission(read_submission(recognition_csv, "recognition"), data.recognition_solution)
    retrieval = score_submission(read_submission(retrieval_csv, "retrieval"), data.retrieval_solution)
    health = embedding_health(test, split_labels(data, "test", test_ids), index, split_labels(data, "index", index_ids))
    return {"gap": recognition["gap"], "top1_accuracy": recognition["top1_accuracy"], "map@100": retrieval["map@100"],
            "auc": health.auc, "mean_norm": health.database_mean_norm,
            "recognition_csv": str(recognition_csv), "retrieval_csv": str(retrieval_csv)}
