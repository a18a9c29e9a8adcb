"""Aspect-ratio buckets, class balance, rank sharding and resumable batch order."""

from __future__ import annotations

import numpy as np
import pytest

from lmkcomp.train.samplers import BucketBatchSampler, assign_buckets, bucket_shape, ordered_batches


def test_bucket_assignment_and_shapes():
    sizes = [(400, 300), (300, 400), (256, 256), (1920, 1080), (100, 180), (1000, 990)]
    assert assign_buckets(sizes).tolist() == [3, 1, 2, 4, 0, 2]
    height, width = bucket_shape(16 / 9, 128)
    assert (height, width) == (96, 160)  # 128^2 = 16384 pixels ~ 96 x 160 = 15360, multiples of 32
    assert bucket_shape(1.0, 128) == (128, 128)


def make_sampler(**kwargs) -> BucketBatchSampler:
    rng = np.random.default_rng(0)
    buckets = rng.integers(0, 3, size=120)
    labels = np.concatenate([np.zeros(100, int), np.arange(1, 21)])  # one big class, 20 singletons
    return BucketBatchSampler(buckets, labels, batch_size=4, image_size=64, **kwargs)


def test_every_batch_is_one_bucket_and_epochs_differ_but_repeat():
    sampler = make_sampler()
    batches = sampler.global_batches(0)
    # every batch is full; only the remainders of the buckets, pooled, can mix buckets
    assert all(len(batch) == 4 for batch in batches)
    mixed = [batch for batch in batches if len(set(sampler.buckets[batch])) > 1]
    assert len(mixed) <= 3 - 1
    assert [b.tolist() for b in sampler.global_batches(0)] == [b.tolist() for b in batches]
    assert [b.tolist() for b in sampler.global_batches(1)] != [b.tolist() for b in batches]
    items = next(iter(sampler))
    assert {(i.height, i.width) for i in items} == {sampler.shapes[int(sampler.buckets[items[0].index])]}


def test_bucket_remainders_are_pooled_not_dropped():
    # 5 buckets of 11-12 images each, batch size 16: no bucket fills one batch, and dropping the
    # incomplete batch of each bucket used to leave an epoch with no batch at all
    buckets = np.arange(59) % 5
    sampler = BucketBatchSampler(buckets, np.arange(59) % 7, batch_size=16, image_size=64)
    batches = sampler.global_batches(0)
    assert len(batches) == 3  # 59 // 16: only the last 11 samples are left out
    seen = np.concatenate(batches)
    assert len(set(seen.tolist())) == 48
    # a pooled batch takes the shape of its median bucket
    items = next(iter(sampler))
    median = int(np.sort(buckets[[i.index for i in items]])[8])
    assert {(i.height, i.width) for i in items} == {sampler.shapes[median]}


def test_class_balance_favours_rare_classes():
    plain = np.concatenate(make_sampler().global_batches(0))
    balanced = np.concatenate(make_sampler(balance="class").global_batches(0))
    labels = make_sampler().labels
    # without balance the big class is ~100/120 of the draws; balanced, each of 21 classes ~1/21
    assert np.mean(labels[plain] == 0) > 0.75
    assert np.mean(labels[balanced] == 0) < 0.2


def test_ranks_partition_each_global_batch_and_resume_skips_batches():
    one = make_sampler()
    ranks = [make_sampler(rank=r, world_size=2) for r in range(2)]
    for sampler in (one, *ranks):
        sampler.set_epoch(3)
    for full, part0, part1 in zip(iter(one), iter(ranks[0]), iter(ranks[1])):
        assert [i.index for i in full] == [i.index for i in part0] + [i.index for i in part1]
    resumed = make_sampler()
    resumed.set_epoch(3, start_batch=5)
    assert [[i.index for i in b] for b in resumed] == [[i.index for i in b] for b in list(iter(one))[5:]]
    with pytest.raises(ValueError, match="not divisible"):
        make_sampler(world_size=3)


def test_ordered_batches_cover_every_index_once():
    buckets = np.array([2, 0, 2, 1, 0, 2, 2])
    batches = ordered_batches(buckets, batch_size=2, image_size=64)
    indices = [item.index for batch in batches for item in batch]
    assert sorted(indices) == list(range(7))
    assert all(len({buckets[i.index] for i in batch}) == 1 for batch in batches)
