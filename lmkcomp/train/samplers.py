"""Batch samplers that keep aspect ratios, balance classes on request, shard across ranks and
resume in the middle of an epoch.

An epoch's batches are a pure function of (seed, epoch): a run resumed at batch b of epoch e
replays the same order from b, and each of R ranks takes a contiguous slice of every global
batch, so R processes see together exactly the batches one process would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

#: width / height of the buckets; an image goes to the nearest one in log space
DEFAULT_ASPECTS = (9 / 16, 3 / 4, 1.0, 4 / 3, 16 / 9)


def bucket_shape(aspect: float, image_size: int, multiple: int = 32) -> tuple[int, int]:
    """(height, width) of a bucket: area about image_size^2, sides multiples of `multiple`."""
    height = image_size / np.sqrt(aspect)
    width = image_size * np.sqrt(aspect)
    return max(multiple, int(round(height / multiple)) * multiple), max(multiple, int(round(width / multiple)) * multiple)


def assign_buckets(sizes: Sequence[tuple[int, int]], aspects: Sequence[float] = DEFAULT_ASPECTS) -> np.ndarray:
    """Bucket number of each (width, height), by nearest log aspect ratio."""
    ratios = np.log(np.array([w / h for w, h in sizes], dtype=np.float64))
    centres = np.log(np.asarray(aspects, dtype=np.float64))
    return np.abs(ratios[:, None] - centres[None, :]).argmin(axis=1)


@dataclass(frozen=True)
class BatchItem:
    """What the dataset receives for one sample: which image and the size to produce."""

    index: int
    height: int
    width: int
    epoch: int


class BucketBatchSampler:
    """Yields lists of `BatchItem`, every batch from one aspect bucket but the few pooled from
    the buckets' remainders (see :meth:`batch_shape`); with ``drop_last`` at most
    ``batch_size - 1`` samples of an epoch are left out.

    ``balance="class"`` draws each epoch's samples with probability proportional to
    1/n_class (as many draws as images), so rare landmarks are seen as often as common ones.

    Items marked in `non_landmark` are not visited once per epoch like the others: each epoch
    takes ``round(non_landmark_ratio * L)`` of them, ``L`` being the epoch's landmark samples,
    without replacement (cycling through fresh permutations of the pool when it is smaller),
    and shuffles them in. So an epoch holds non-landmark and landmark samples in the
    proportion `non_landmark_ratio` (the centroid method's 0.4), up to the incomplete
    batches dropped per bucket. Class balance applies to the landmark samples only.
    """

    def __init__(
        self,
        buckets: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        image_size: int,
        aspects: Sequence[float] = DEFAULT_ASPECTS,
        balance: str = "none",
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
        non_landmark: np.ndarray | None = None,
        non_landmark_ratio: float = 0.0,
    ):
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} is not divisible by {world_size} processes")
        if balance not in ("none", "class"):
            raise ValueError(f"balance must be 'none' or 'class', not {balance!r}")
        self.buckets = np.asarray(buckets)
        self.labels = np.asarray(labels)
        self.batch_size = batch_size
        self.shapes = [bucket_shape(aspect, image_size) for aspect in aspects]
        self.balance = balance
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.non_landmark = np.zeros(len(self.labels), dtype=bool) if non_landmark is None else np.asarray(non_landmark, dtype=bool)
        if self.non_landmark.shape != self.labels.shape:
            raise ValueError(f"non_landmark mask of shape {self.non_landmark.shape} for {len(self.labels)} items")
        if non_landmark_ratio < 0:
            raise ValueError(f"non_landmark_ratio must be >= 0, not {non_landmark_ratio}")
        self.non_landmark_ratio = non_landmark_ratio
        self.epoch = 0
        self.start_batch = 0
        # the last epoch's batches: `len()` and iteration both need them, and drawing them walks
        # every item, so an epoch draws them once (they depend only on the epoch and the settings)
        self._drawn: tuple[int, list[np.ndarray]] | None = None

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch to iterate, and the global batch to start from (for resuming)."""
        self.epoch = epoch
        self.start_batch = start_batch

    def global_batches(self, epoch: int) -> list[np.ndarray]:
        """Every batch of `epoch` (all ranks together), in order."""
        if self._drawn is None or self._drawn[0] != epoch:
            self._drawn = (epoch, self._draw_batches(epoch))
        return self._drawn[1]

    def _draw_batches(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch, 0xBA7C])
        landmarks = np.flatnonzero(~self.non_landmark)
        n = len(landmarks)
        if self.balance == "class":
            _, inverse, counts = np.unique(self.labels[landmarks], return_inverse=True, return_counts=True)
            weights = 1.0 / counts[inverse]
            order = landmarks[rng.choice(n, size=n, replace=True, p=weights / weights.sum())]
        else:
            order = landmarks[rng.permutation(n)]
        pool = np.flatnonzero(self.non_landmark)
        wanted = round(self.non_landmark_ratio * n) if len(pool) else 0
        if wanted:
            cycles = np.concatenate([rng.permutation(pool) for _ in range(math.ceil(wanted / len(pool)))])
            order = rng.permutation(np.concatenate([order, cycles[:wanted]]))
        batches, leftovers = [], []
        for bucket in np.unique(self.buckets):
            members = order[self.buckets[order] == bucket]
            full = len(members) - len(members) % self.batch_size
            batches += [members[start:start + self.batch_size] for start in range(0, full, self.batch_size)]
            leftovers.append(members[full:])
        # The incomplete batches of the buckets are pooled (neighbouring aspects side by side) and
        # batched together at a shared shape, rather than dropped bucket by bucket: dropping them
        # threw away up to batch_size - 1 images per bucket and epoch, and on a small dataset
        # (e.g. 59 images over 5 buckets at batch size 32) every image, so nothing trained at all.
        pooled = np.concatenate(leftovers)
        for start in range(0, len(pooled), self.batch_size):
            batch = pooled[start:start + self.batch_size]
            if len(batch) == self.batch_size or (not self.drop_last and len(batch) >= self.world_size):
                batches.append(batch)
        # interleave buckets: shuffle the batch order itself
        return [batches[i] for i in rng.permutation(len(batches))]

    def batch_shape(self, batch: np.ndarray) -> tuple[int, int]:
        """(height, width) of `batch`: its bucket's shape, or for a batch pooled from several
        buckets the shape of their median bucket (the buckets are ordered by aspect)."""
        buckets = np.sort(self.buckets[batch])
        return self.shapes[int(buckets[len(buckets) // 2])]

    def __len__(self) -> int:
        return len(self.global_batches(self.epoch)) - self.start_batch

    def __iter__(self) -> Iterator[list[BatchItem]]:
        for batch in self.global_batches(self.epoch)[self.start_batch:]:
            height, width = self.batch_shape(batch)
            share = np.array_split(batch, self.world_size)[self.rank]
            yield [BatchItem(int(i), height, width, self.epoch) for i in share]


def ordered_batches(buckets: np.ndarray, batch_size: int, image_size: int,
                    aspects: Sequence[float] = DEFAULT_ASPECTS) -> list[list[BatchItem]]:
    """Every index once, grouped by bucket, in index order within a bucket (for evaluation)."""
    shapes = [bucket_shape(aspect, image_size) for aspect in aspects]
    batches = []
    for bucket in np.unique(buckets):
        members = np.flatnonzero(buckets == bucket)
        height, width = shapes[int(bucket)]
        for start in range(0, len(members), batch_size):
            batches.append([BatchItem(int(i), height, width, 0) for i in members[start:start + batch_size]])
    return batches
