"""DELF baseline for landmark recognition and retrieval.

- `savedmodel`: local features from the official DELF / DELG TensorFlow SavedModels into the
  kit's local-feature store (`python -m delf_baseline.savedmodel`, run in its own process:
  TensorFlow must never share one with torchvision); `pca`: the official descriptor PCA read
  from its released files.
- `model` and `train`: a trainable PyTorch DELF (`lmkcomp delf train`, `lmkcomp delf pca`).
- `index` and `recognition`: the DELF recognition pipeline the centroid paper compares
  against (local-feature index, nearest-neighbour votes, RANSAC verification of the top
  candidates; `lmkcomp delf recognize`).
"""
