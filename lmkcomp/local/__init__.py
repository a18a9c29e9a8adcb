"""Local features and geometric verification: the per-image record of keypoints and
descriptors (`record`), their sharded on-disk store (`store`), extractors and their registry
(`extractors`, `sift`), split-wide extraction (`extract`), putative matching (`match`) and
RANSAC verification of image pairs (`verify`)."""
