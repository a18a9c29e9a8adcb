"""DELF baseline for landmark recognition and retrieval.

Will hold the official DELF / DELG TensorFlow SavedModel extraction (run in its own process,
never beside torchvision), a trainable PyTorch DELF, and the DELF recognition pipeline
(local-feature index, nearest-neighbour votes, RANSAC verification). Nothing is implemented
here yet: those parts belong to the local-features and centroid-benchmark issues.
"""
