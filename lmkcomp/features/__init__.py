"""Global descriptors on disk and their post-processing: the id-aligned, sharded embedding
store written by extraction (`store`), PCA-whitening learned on train descriptors
(`whitening`) and the weighted concatenation of several models' stores (`ensemble`)."""
