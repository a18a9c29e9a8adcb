"""The torch Dataset over a split: transforms, labels, and bad images raised or counted."""

from __future__ import annotations

import albumentations as A
import pytest
import torch
from torch.utils.data import DataLoader

from lmkcomp.data import synthetic
from lmkcomp.data.dataset import LandmarkImageDataset, SkippedImage, collate_skipping
from lmkcomp.data.layout import LandmarkData
from lmkcomp.errors import ImageLoadError


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> LandmarkData:
    root = tmp_path_factory.mktemp("tiny")
    synthetic.generate(root, synthetic.preset_config("tiny", long_side=96), seed=5, progress=False)
    return LandmarkData(root, "gldv2")


def test_samples_with_albumentations(data):
    train = data.train_labels()
    transform = A.Compose([A.Resize(64, 48), A.HorizontalFlip(p=1.0)])
    dataset = LandmarkImageDataset(data, "train", train["id"], train["landmark_id"], transform=transform)
    sample = dataset[3]
    assert sample["image"].shape == (3, 64, 48) and sample["image"].dtype == torch.float32
    assert 0.0 <= float(sample["image"].min()) and float(sample["image"].max()) <= 1.0
    assert sample["label"] == int(train["landmark_id"].iloc[3]) and sample["id"] == train["id"].iloc[3]
    batch = next(iter(DataLoader(dataset, batch_size=4, collate_fn=collate_skipping)))
    assert batch["image"].shape == (4, 3, 64, 48) and batch["skipped"] == []


def test_bad_image_raises_or_is_counted(data, tmp_path):
    ids = data.split_ids("test")[:4]
    broken = data.image_path("test", ids[1])
    original = broken.read_bytes()
    try:
        broken.write_bytes(original[: len(original) // 3])  # truncated JPEG
        strict = LandmarkImageDataset(data, "test", ids, transform=A.Resize(32, 32))
        with pytest.raises(ImageLoadError, match=ids[1]):
            strict[1]
        lenient = LandmarkImageDataset(data, "test", ids, transform=A.Resize(32, 32), on_error="skip")
        assert isinstance(lenient[1], SkippedImage)
        batch = collate_skipping([lenient[i] for i in range(4)])
        assert batch["image"].shape[0] == 3
        assert [s.image_id for s in batch["skipped"]] == [ids[1]]
        assert batch["label"].tolist() == [-1, -1, -1]
    finally:
        broken.write_bytes(original)
