"""Training global descriptors: configs, augmentations, samplers, the trainer, validation."""
