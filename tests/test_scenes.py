"""Tests of the procedural landmark renderer behind the synthetic mini-GLDv2."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lmkcomp.data import scenes


def _landmark_photos(seed: int, count: int = 2, long_side: int = 128) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    scene = scenes.make_landmark(rng)
    return [scenes.render_photo(scene, rng, long_side) for _ in range(count)]


# --------------------------------------------------------------------------------------------
# Determinism


def test_same_seed_gives_byte_identical_photos_and_distractors():
    assert all(np.array_equal(a, b) for a, b in zip(_landmark_photos(11), _landmark_photos(11)))
    first = scenes.render_distractor(np.random.default_rng(5), 128)
    second = scenes.render_distractor(np.random.default_rng(5), 128)
    assert np.array_equal(first, second)


def test_same_seed_gives_equal_styles():
    assert scenes.make_style(np.random.default_rng(3)) == scenes.make_style(np.random.default_rng(3))
    assert scenes.make_style(np.random.default_rng(3)) != scenes.make_style(np.random.default_rng(4))


def test_different_seeds_give_different_images():
    a, b = _landmark_photos(11, 1)[0], _landmark_photos(12, 1)[0]
    assert a.shape != b.shape or not np.array_equal(a, b)
    # the same landmark photographed twice: two different photographs
    first, second = _landmark_photos(11, 2)
    assert first.shape != second.shape or not np.array_equal(first, second)
    distractors = [scenes.render_distractor(np.random.default_rng(seed), 96) for seed in (1, 2)]
    assert distractors[0].shape != distractors[1].shape or not np.array_equal(*distractors)


def test_output_ignores_global_random_state():
    """Only the passed Generator may drive the renderer: not numpy's nor OpenCV's global RNG."""
    outputs = []
    for global_seed in (0, 12345):
        np.random.seed(global_seed)
        cv2.setRNGSeed(global_seed)
        rng = np.random.default_rng(8)
        scene = scenes.make_landmark(rng)
        outputs.append((scenes.render_photo(scene, rng, 96), scenes.render_distractor(rng, 96)))
    for first, second in zip(*outputs):
        assert np.array_equal(first, second)


# --------------------------------------------------------------------------------------------
# Shapes


@pytest.mark.parametrize("long_side", [48, 128, 255, 320])
def test_photo_is_rgb_uint8_with_the_requested_long_side(long_side):
    for seed in range(4):
        for image in _landmark_photos(seed, 2, long_side):
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            assert max(image.shape[:2]) == long_side
            assert image.std() > 5  # a picture, not a blank


@pytest.mark.parametrize("long_side", [48, 200])
def test_distractor_is_rgb_uint8_with_the_requested_long_side(long_side):
    for seed in range(12):  # every kind of distractor comes up among these seeds
        image = scenes.render_distractor(np.random.default_rng(seed), long_side)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert max(image.shape[:2]) == long_side
        assert image.std() > 3


def test_aspect_ratios_vary_between_portrait_and_landscape():
    rng = np.random.default_rng(0)
    scene = scenes.make_landmark(rng)
    ratios = {round(w / h, 2) for h, w, _ in (scenes.render_photo(scene, rng, 96).shape for _ in range(40))}
    assert len(ratios) >= 4
    assert min(ratios) < 1 < max(ratios)


# --------------------------------------------------------------------------------------------
# Scenes


def test_landmarks_of_one_style_share_it_but_not_their_textures():
    rng = np.random.default_rng(21)
    style = scenes.make_style(rng)
    first, second = scenes.make_landmark(rng, style), scenes.make_landmark(rng, style)
    assert first.style is style and second.style is style
    assert scenes.make_landmark(rng).style != style
    a, b = first.planes[0].mips[0], second.planes[0].mips[0]
    assert a.shape != b.shape or np.abs(a.astype(int) - b.astype(int)).mean() > 5


def test_main_facade_faces_the_viewpoints_and_wings_share_its_edge():
    scene = scenes.make_landmark(np.random.default_rng(2))
    facade = scene.planes[0]
    np.testing.assert_allclose(facade.normal, [0.0, 0.0, -1.0], atol=1e-9)
    facade_edges = facade.corners[[2, 3], :]  # bottom corners: the ground segment
    wing_feet = np.concatenate([plane.corners[[2, 3]] for plane in scene.planes[1:]])
    shared = [np.min(np.linalg.norm(wing_feet - corner, axis=1)) for corner in facade_edges]
    assert min(shared) < 1e-6


def _small_landmark(rng: np.random.Generator) -> scenes.LandmarkScene:
    """A landmark with small textures: same geometry, quicker to make."""
    return scenes._build_landmark(rng, scenes.make_style(rng), 128)


def test_every_view_shows_the_landmark():
    for seed in range(40):
        rng = np.random.default_rng(seed)
        scene = _small_landmark(rng)
        camera = scenes._sample_camera(scene, rng, 96, 128)
        light = scenes._sample_light(rng)
        canvas, zbuf = np.zeros((96, 128, 3), np.float32), np.zeros((96, 128), np.float32)
        for plane in scene.planes:
            scenes._draw_plane(canvas, zbuf, plane, camera, light)
        assert (zbuf > 0).mean() > 0.03, seed


def test_foreground_objects_hide_at_most_about_30_percent_of_the_landmark():
    worst = 0.0
    for seed in range(60):
        rng = np.random.default_rng(seed)
        scene = _small_landmark(rng)
        camera = scenes._sample_camera(scene, rng, 96, 128)
        light = scenes._sample_light(rng)
        canvas, zbuf = np.zeros((96, 128, 3), np.float32), np.zeros((96, 128), np.float32)
        for plane in scene.planes:
            scenes._draw_plane(canvas, zbuf, plane, camera, light)
        before = np.full((96, 128, 3), 127, np.uint8)
        after = before.copy()
        scenes._draw_occluders(after, zbuf, scene, camera, light, rng)
        landmark = zbuf > 0
        changed = np.any(np.abs(after.astype(int) - before) > 20, axis=2) & landmark
        worst = max(worst, changed.sum() / max(landmark.sum(), 1))
    assert worst <= 0.3 + 0.04  # anti-aliased rims are not counted against the budget
    assert worst > 0.05  # occluders do appear in front of landmarks


# --------------------------------------------------------------------------------------------
# Local features: the point of the dataset


def _sift_inliers(a: tuple, b: tuple) -> int:
    """RANSAC homography inliers among ratio-test (0.8) SIFT matches."""
    (keys_a, desc_a), (keys_b, desc_b) = a, b
    if desc_a is None or desc_b is None or len(keys_a) < 4 or len(keys_b) < 4:
        return 0
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(desc_a, desc_b, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < 0.8 * p[1].distance]
    if len(good) < 4:
        return 0
    src = np.float32([keys_a[m.queryIdx].pt for m in good])
    dst = np.float32([keys_b[m.trainIdx].pt for m in good])
    _, mask = cv2.findHomography(src, dst, cv2.RANSAC, 5.0)
    return 0 if mask is None else int(mask.sum())


def test_sift_ransac_separates_same_landmark_from_look_alikes_and_others():
    rng = np.random.default_rng(0)
    style = scenes.make_style(rng)
    landmarks = [scenes.make_landmark(rng, style), scenes.make_landmark(rng, style),
                 scenes.make_landmark(rng), scenes.make_landmark(rng)]
    sift = cv2.SIFT_create()
    features = [[sift.detectAndCompute(cv2.cvtColor(scenes.render_photo(lm, rng, 256), cv2.COLOR_RGB2GRAY), None)
                 for _ in range(3)] for lm in landmarks]
    same = [_sift_inliers(photos[i], photos[j]) for photos in features for i, j in ((0, 1), (0, 2), (1, 2))]
    look_alike = [_sift_inliers(features[0][i], features[1][i]) for i in range(3)]
    unrelated = ((0, 2), (0, 3), (1, 2), (1, 3), (2, 3))
    others = [_sift_inliers(features[a][i], features[b][i]) for a, b in unrelated for i in (0, 1)]
    different = look_alike + others
    assert np.mean(same) >= 15
    assert np.mean(different) <= 10
    assert np.mean(same) >= 3 * np.mean(different)
