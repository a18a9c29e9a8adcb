"""The `verified-voting` recognition method: verify each test image against train images,
then let the verified inliers vote (`lmkcomp.voting.inlier_voting`).

This is the weight-free reference of real-photo recognition (RootSIFT, every test photo
verified against every train photo, top-3 inlier voting) as a method of `recognize`:

1. Pairs. With `RecognitionConfig.candidates` N > 0, each test image is paired with its N
   nearest labelled train images by the embedding stores (a thumbnail store will do): the
   GLDv2 mode, 118 K x 100 = 12 M pairs. With N = 0, with every labelled train image: the
   small-data mode (a few hundred photos); at GLDv2 scale (118 K x 4.1 M) it is impossible.
2. Verification. Test images are taken a block at a time (whole images, about
   `PAIRS_PER_BLOCK` pairs); each block's pairs are verified with the `verify_preset` on the
   local feature stores `test_local` / `train_local` (`lmkcomp extract-local`) into its own
   pair table, `WORKDIR/verified-voting/<run>/block-00000`, ... (`lmkcomp.local.pairs`):
   resumable, and a rerun with another `k` or `min_score` verifies nothing again. Memory
   holds one block's pairs, never test x train.
3. Voting. Each landmark scores the sum of the excess inliers of its `k` best verified train
   images, i.e. of their inliers beyond the model's minimal sample (`excess_inliers`: 4 for
   `fast`'s homography, which any pair with 4 putative matches reaches); the best landmark
   is predicted with that sum as confidence (a test image without a single excess inlier
   takes its first candidate's landmark with 0). With `min_score`, a test
   image whose best landmark scores less gets no prediction (a non-landmark).

When the dataset has a recognition solution, `recognize`'s `calibration-scores.csv`
(`lmkcomp.inference.recognition.write_calibration_scores`) lists every test image's best
landmark and votes before `min_score` (`LandmarkPredictions.before_min_score`; `score`: the
votes, -inf where the best landmark is wrong), so `min_score` can be calibrated for a target
specificity on a labelled split's non-landmark images and re-applied without verifying again.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from lmkcomp.data.layout import LandmarkData
from lmkcomp.errors import UserInputError
from lmkcomp.executors import Executor, LocalExecutor
from lmkcomp.features.store import EmbeddingStore
from lmkcomp.inference.common import cached_search, neighbour_ids, padded_database_ids
from lmkcomp.inference.recognition import (
    RECOGNITION_METHODS,
    LandmarkPredictions,
    RecognitionConfig,
    read_train_labels,
)
from lmkcomp.manifest import fingerprint, ids_sha256
from lmkcomp.voting import excess_inliers, inlier_voting

#: pairs verified and voted on per block of test images (whole images: a block holds at least one)
PAIRS_PER_BLOCK = 100_000
#: pairs per chunk file of a block's pair table: small enough to spread a few hundred pairs
#: over the worker processes, and fixed, so that a rerun with other workers resumes
CHUNK_PAIRS = 250


def _pair_blocks(queries: EmbeddingStore, train: EmbeddingStore | None, labelled: list[str],
                 config: RecognitionConfig, workdir: str | Path, progress: bool,
                 executor: Executor | None) -> Iterator[pd.DataFrame]:
    """The pair lists (`query_id, candidate_id`, by test image in store order, then by
    candidate rank) of consecutive blocks of whole test images."""
    query_ids = np.asarray(queries.ids, dtype=object)
    if config.candidates == 0:
        per_block = max(1, PAIRS_PER_BLOCK // max(1, len(labelled)))
        candidates = np.asarray(labelled, dtype=object)
        for start in range(0, len(query_ids), per_block):
            block = query_ids[start:start + per_block]
            yield pd.DataFrame({"query_id": np.repeat(block, len(candidates)),
                                "candidate_id": np.tile(candidates, len(block))})
        return
    table = cached_search(queries, train, workdir, config.candidates, config.index, database_ids=labelled,
                          progress=progress, executor=executor)
    database_ids = padded_database_ids(table)
    table_query_ids = np.asarray(table.query_ids, dtype=object)  # once, not per block
    for start, _, indices in table.iter_blocks(max(1, PAIRS_PER_BLOCK // config.candidates)):
        found = neighbour_ids(database_ids, indices)
        rows, columns = np.nonzero(found != "")
        yield pd.DataFrame({"query_id": table_query_ids[start + rows], "candidate_id": found[rows, columns]})


def _run_folder(queries: EmbeddingStore, train: EmbeddingStore | None, labelled: list[str],
                config: RecognitionConfig, verify: dict, workdir: str | Path) -> Path:
    """`WORKDIR/verified-voting/<fingerprint of what decides the pairs and their inliers>`."""
    by_embedding = None
    if config.candidates:
        by_embedding = {"test": str(queries.directory.resolve()), "train": str(Path(train.directory).resolve()),
                        "index": config.index}
    name = fingerprint({"queries": ids_sha256(queries.ids), "labelled": ids_sha256(labelled),
                        "candidates": config.candidates, "embeddings": by_embedding,
                        "test_local": str(Path(config.test_local).resolve()),
                        "train_local": str(Path(config.train_local).resolve()), "verify": verify})
    return Path(workdir) / "verified-voting" / name


@RECOGNITION_METHODS.register("verified-voting")
def predict_by_verified_voting(queries: EmbeddingStore, train: EmbeddingStore | None, data: LandmarkData,
                               config: RecognitionConfig, workdir: str | Path, progress: bool,
                               executor: Executor | None = None) -> LandmarkPredictions:
    """Verify, then vote by inliers (module docstring)."""
    from lmkcomp.local.pairs import read_pair_table, verify_pairs
    from lmkcomp.local.store import LocalFeatureStore
    from lmkcomp.local.verify import create_verifier, verify_config

    if not config.test_local or not config.train_local:
        raise UserInputError("verified voting needs the local features of the test and train images "
                             "(--queries-local, --train-local: lmkcomp extract-local)")
    if config.inliers or config.nonlandmark_bank:
        raise UserInputError("verified voting takes no --inliers and no non-landmark bank: it verifies its own "
                             "pairs, and --min-score decides what is a landmark")
    if config.candidates < 0:
        raise UserInputError(f"candidates must be >= 0 (0: every train image), got {config.candidates}")
    if config.candidates and train is None:
        raise UserInputError("verified voting of the nearest --candidates needs a train embedding store (--train), "
                             "e.g. lmkcomp extract --descriptor thumbnail; --candidates 0 verifies every train image")
    labels = read_train_labels(data, config.labels).set_index("id")["landmark_id"]
    labelled = labels.index.tolist()
    test_local, train_local = LocalFeatureStore(config.test_local), LocalFeatureStore(config.train_local)
    verify = verify_config(config.verify_preset, test_local.method)
    run = _run_folder(queries, train, labelled, config, dataclasses.asdict(verify), workdir)
    sample_size = create_verifier(verify).sample_size
    executor = executor or LocalExecutor(config.workers)
    n = len(queries)
    predicted, confidence = np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.float64)
    valid = np.zeros(n, dtype=bool)
    for number, pairs in enumerate(_pair_blocks(queries, train, labelled, config, workdir, progress, executor)):
        table = read_pair_table(verify_pairs(pairs, test_local, train_local, run / f"block-{number:05d}", verify,
                                             chunk_size=CHUNK_PAIRS, progress=progress, executor=executor))
        block_ids = pd.unique(table["query_id"])
        rows = pd.Index(block_ids).get_indexer(table["query_id"])
        candidate_labels = labels.reindex(table["candidate_id"]).to_numpy(np.int64)
        positions = queries.position(block_ids)
        predicted[positions], confidence[positions], valid[positions] = inlier_voting(
            rows, candidate_labels, excess_inliers(table["inliers"].to_numpy(), sample_size), len(block_ids),
            config.k)
    voted = LandmarkPredictions(list(queries.ids), predicted, confidence, valid, {"pair tables": str(run)})
    if config.min_score is None:
        return voted
    return dataclasses.replace(voted, valid=valid & (confidence >= config.min_score), before_min_score=valid)
