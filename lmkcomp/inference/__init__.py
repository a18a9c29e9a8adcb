"""Recognition and retrieval inference over embedding stores, ending in Kaggle submissions.

- `recognize`: a landmark per test image (soft voting, nearest neighbour, the classifier
  head or verified inlier voting; inliers, non-landmark bank and distractor demotion as options) ->
  `submissions/recognition_<name>.csv` (`lmkcomp.inference.recognition`).
- `retrieve`: 100 index images per test image (DBA, αQE, spatial and discriminative
  re-ranking as options) -> `submissions/retrieval_<name>.csv` (`lmkcomp.inference.retrieval`).
- `write_recognition_pairs` / `write_retrieval_pairs`: the pair lists whose inliers those
  stages read, for `lmkcomp verify`.

The array-level definitions live in `lmkcomp.voting` and `lmkcomp.reranking`.
"""

from lmkcomp.inference.recognition import (
    RECOGNITION_METHODS,
    LandmarkPredictions,
    RecognitionConfig,
    predict_landmarks,
    recognize,
    write_recognition_pairs,
)
from lmkcomp.inference import verified  # noqa: F401  (registers the verified-voting method)
from lmkcomp.inference.retrieval import RetrievalConfig, ranking_table, retrieve, write_retrieval_pairs

__all__ = ["RECOGNITION_METHODS", "LandmarkPredictions", "RecognitionConfig", "RetrievalConfig", "predict_landmarks",
           "ranking_table", "recognize", "retrieve", "write_recognition_pairs", "write_retrieval_pairs"]
