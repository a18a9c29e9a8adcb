"""DELF baseline for landmark recognition and retrieval.

Implemented: `savedmodel`, local features from the official DELF / DELG TensorFlow
SavedModels into the kit's local-feature store (`python -m delf_baseline.savedmodel`, run in
its own process: TensorFlow must never share one with torchvision), and `pca`, the official
DELF descriptor PCA read from its released files.

Still to come (the local-features and centroid-benchmark issues): a trainable PyTorch DELF
and the DELF recognition pipeline (local-feature index, nearest-neighbour votes, RANSAC
verification).
"""
