"""Putative matching: mutual nearest neighbours with distance / ratio tests, and the DELF k-d tree."""

from __future__ import annotations

import numpy as np
import pytest

from lmkcomp.local.match import as_float32, kdtree_matches, mutual_nearest_neighbours


def unit(degrees) -> np.ndarray:
    radians = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)


def chord(degrees: float) -> float:
    """Euclidean distance of two unit vectors `degrees` apart."""
    return 2 * np.sin(np.deg2rad(degrees) / 2)


# Image a: 0, 90, 180, 45 and 12 degrees; image b: 5, 85, 50 and 260 degrees.
# a0-b0 (5 deg), a1-b1 (5), a2-b3 (80) and a3-b2 (5) are mutual; a4's nearest is b0 (7 deg),
# but b0's nearest is a0, so a4 has no mutual match.
# Second neighbours: a0 -> b2 (50 deg), a1 -> b2 (40), a2 -> b1 (95), a3 -> b0 / b1 (40).
A = unit([0, 90, 180, 45, 12])
B = unit([5, 85, 50, 260])


def pairs(matches) -> list[tuple[int, int]]:
    idx_a, idx_b = matches
    assert idx_a.dtype == np.int64 and idx_b.dtype == np.int64
    return list(zip(idx_a.tolist(), idx_b.tolist()))


def test_mutual_nearest_neighbours_on_hand_made_descriptors():
    assert pairs(mutual_nearest_neighbours(A, B)) == [(0, 0), (1, 1), (2, 3), (3, 2)]
    # Swapping the images swaps the pairs.
    assert sorted((a, b) for b, a in pairs(mutual_nearest_neighbours(B, A))) == [(0, 0), (1, 1), (2, 3), (3, 2)]


def test_distance_threshold_drops_far_pairs():
    # a2-b3 are 80 degrees apart: chord 1.29.
    assert pairs(mutual_nearest_neighbours(A, B, max_distance=0.5)) == [(0, 0), (1, 1), (3, 2)]
    assert pairs(mutual_nearest_neighbours(A, B, max_distance=chord(80) + 1e-3)) == [(0, 0), (1, 1), (2, 3), (3, 2)]
    assert pairs(mutual_nearest_neighbours(A, B, max_distance=0.01)) == []


def test_ratio_test_uses_the_second_nearest_neighbour():
    # a2: nearest b3 at 80 degrees, second b1 at 95: ratio chord(80) / chord(95) = 0.87.
    ratio = chord(80) / chord(95)
    assert pairs(mutual_nearest_neighbours(A, B, ratio=ratio + 0.01)) == [(0, 0), (1, 1), (2, 3), (3, 2)]
    assert pairs(mutual_nearest_neighbours(A, B, ratio=ratio - 0.01)) == [(0, 0), (1, 1), (3, 2)]
    # a1: nearest b1 (5 deg), second b2 (40 deg): ratio 0.128; a3 the same; a0: 5 vs 50 deg, 0.103.
    assert pairs(mutual_nearest_neighbours(A, B, ratio=0.12)) == [(0, 0)]
    # Both filters together keep what passes both.
    assert pairs(mutual_nearest_neighbours(A, B, max_distance=0.5, ratio=0.9)) == [(0, 0), (1, 1), (3, 2)]


def brute_force_mutual(a, b, max_distance=None, ratio=None):
    distances = np.linalg.norm(a[:, None, :].astype(np.float64) - b[None, :, :], axis=2)
    result = []
    for i in range(len(a)):
        j = int(np.argmin(distances[i]))
        if int(np.argmin(distances[:, j])) != i:
            continue
        if max_distance is not None and not distances[i, j] < max_distance:
            continue
        if ratio is not None and not distances[i, j] < ratio * np.sort(distances[i])[1]:
            continue
        result.append((i, j))
    return result


def random_unit(rng, count, dim=16):
    x = rng.normal(size=(count, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("max_distance, ratio", [(None, None), (0.9, None), (None, 0.85), (1.0, 0.9)])
def test_mutual_nearest_neighbours_agrees_with_brute_force(max_distance, ratio):
    rng = np.random.default_rng(3)
    b = random_unit(rng, 150)
    # Half of a are noisy copies of b's rows (true matches), half unrelated.
    a = np.concatenate([b[rng.permutation(150)[:60]] + rng.normal(0, 0.15, (60, 16)), random_unit(rng, 60)])
    a = (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)
    expected = brute_force_mutual(a, b, max_distance, ratio)
    assert 20 < len(expected)
    assert pairs(mutual_nearest_neighbours(a, b, max_distance, ratio)) == expected
    # float16 descriptors, as the store returns them, give the same pairs here.
    assert pairs(mutual_nearest_neighbours(a.astype(np.float16), b.astype(np.float16), max_distance, ratio)) == expected


def test_kdtree_matches_agrees_with_brute_force():
    rng = np.random.default_rng(4)
    a = random_unit(rng, 200, dim=40)
    b = np.concatenate([a[:80] + rng.normal(0, 0.1, (80, 40)), random_unit(rng, 80, dim=40)])
    b = (b / np.linalg.norm(b, axis=1, keepdims=True)).astype(np.float32)
    distances = np.linalg.norm(b[:, None, :].astype(np.float64) - a[None, :, :], axis=2)
    for threshold in (0.5, 0.8, 1.2):
        # The official example's direction: each feature of b (image 2) to its nearest in a.
        nearest = distances.argmin(axis=1)
        keep = distances[np.arange(len(b)), nearest] < threshold
        idx_a, idx_b = kdtree_matches(a, b, threshold)
        np.testing.assert_array_equal(idx_b, np.flatnonzero(keep))
        np.testing.assert_array_equal(idx_a, nearest[keep])
    assert 50 < len(kdtree_matches(a, b, 0.8)[0]) < 160


def test_kdtree_matches_are_not_mutual():
    # Both b0 and b4 are within 0.8 of a0: the DELF example keeps both, repeating a0.
    assert pairs(kdtree_matches(B, A, 0.8))[:1] == [(0, 0)]
    assert (0, 4) in pairs(kdtree_matches(B, A, 0.8))
    # The other way round a4 has no match: b0 is matched once, to its nearest, a0.
    assert pairs(kdtree_matches(A, B, 0.8)) == [(0, 0), (1, 1), (3, 2)]
    assert pairs(kdtree_matches(B, A, 0.05)) == []


def test_empty_and_mismatched_inputs():
    empty = np.zeros((0, 2), np.float32)
    for match in (mutual_nearest_neighbours, kdtree_matches):
        assert pairs(match(empty, B)) == [] and pairs(match(A, empty)) == []
        with pytest.raises(ValueError, match="N x D and M x D"):
            match(A, np.ones((3, 5), np.float32))
    # A single descriptor in b has no second neighbour: the ratio test passes.
    assert pairs(mutual_nearest_neighbours(A, B[:1], ratio=0.5)) == [(0, 0)]


def test_as_float32_converts_float16_exactly():
    rng = np.random.default_rng(5)
    edge = [0.0, -0.0, 6e-8, -6e-8, 6.1e-5, 1.0, -1.0, 65504.0, -65504.0]  # zeros, subnormals, extremes
    half = np.concatenate([edge, rng.normal(0, 0.1, 5000)]).astype(np.float16).reshape(-1, 1)
    half = np.tile(half, (1, 3))
    converted = as_float32(half)
    assert converted.dtype == np.float32 and converted.shape == half.shape
    np.testing.assert_array_equal(converted, half.astype(np.float32))
    assert np.array_equal(np.signbit(converted), np.signbit(half))
    # float32 stays as it is, without a copy; empty and 1-D inputs work too.
    single = half.astype(np.float32)
    assert as_float32(single) is single
    assert as_float32(np.zeros((0, 128), np.float16)).shape == (0, 128)
    np.testing.assert_array_equal(as_float32(half[:, 0]), half[:, 0].astype(np.float32))
