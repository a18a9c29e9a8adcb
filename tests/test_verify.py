"""Geometric verification: the seeded affine RANSAC, every verifier, presets and verify_pair."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from lmkcomp.data import scenes
from lmkcomp.errors import UserInputError
from lmkcomp.local import ransac, verify
from lmkcomp.local.record import LocalFeatures
from lmkcomp.local.sift import SiftExtractor
from lmkcomp.local.verify import (
    VERIFIERS,
    VERIFY_PRESETS,
    VerifyConfig,
    convex_hull_area,
    create_verifier,
    verify_config,
    verify_pair,
)

# Every verifier; poselib's only where the optional package is installed.
ALL_VERIFIERS = ["homography", "fundamental", "affine", "delf-affine", "magsac",
                 pytest.param("poselib", marks=pytest.mark.skipif(verify.poselib is None, reason="poselib not installed"))]

# A hand-chosen homography: mild rotation, shear, scale, shift and perspective.
TRUE_H = np.array([[0.92, 0.06, 14.0], [-0.04, 0.97, 10.0], [1.5e-4, -1.0e-4, 1.0]])


def apply(model: np.ndarray, points: np.ndarray) -> np.ndarray:
    projected = np.column_stack([points, np.ones(len(points))]) @ model.T
    return projected[:, :2] / projected[:, 2:]


def model_config(name: str, **overrides) -> VerifyConfig:
    """The fast matcher with verifier `name` (DELF's residual and confidence for delf-affine)."""
    if name == "delf-affine":
        overrides = {"residual": 20.0, "iterations": 1000, "confidence": 1.0, **overrides}
    return verify_config("fast", model=name, **overrides)


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    photo = scenes.render_photo(scenes.make_landmark(np.random.default_rng(11)), np.random.default_rng(12), 320)
    other = scenes.render_photo(scenes.make_landmark(np.random.default_rng(21)), np.random.default_rng(22), 320)
    height, width = photo.shape[:2]
    warped = cv2.warpPerspective(photo, TRUE_H, (width, height), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REFLECT)
    return {"photo": photo, "warped": warped, "other": other}


@pytest.fixture(scope="module")
def features(images) -> dict[str, LocalFeatures]:
    extractor = SiftExtractor(max_features=1000)
    return {name: extractor.extract(image) for name, image in images.items()}


def assert_same_result(first, second):
    assert (first.n_putative, first.inliers, first.hull_area) == (second.n_putative, second.inliers, second.hull_area)
    np.testing.assert_array_equal(first.inlier_pairs, second.inlier_pairs)
    np.testing.assert_array_equal(first.model, second.model)


# --------------------------------------------------------------------------------------------
# The seeded affine RANSAC


def test_sample_triples_are_distinct_and_uniform():
    rng = np.random.default_rng(0)
    triples = ransac.sample_triples(rng, 5, 30_000)
    assert triples.min() == 0 and triples.max() == 4
    assert np.all(np.sort(triples, axis=1)[:, 1:] != np.sort(triples, axis=1)[:, :-1])
    # Every index is in a sample with probability 3/5, and every unordered triple is equally likely.
    np.testing.assert_allclose(np.bincount(triples.ravel(), minlength=5) / 30_000, 0.6, atol=0.02)
    codes = np.sort(triples, axis=1) @ [25, 5, 1]
    counts = np.unique(codes, return_counts=True)[1]
    assert len(counts) == 10 and counts.min() > 0.085 * 30_000 and counts.max() < 0.115 * 30_000


def affine_data(seed=0, n=120, inlier_share=0.4, noise=0.5):
    rng = np.random.default_rng(seed)
    model = np.array([[1.1, 0.2, 30.0], [-0.15, 0.9, -12.0], [0.0, 0.0, 1.0]])
    src = rng.uniform(0, 400, (n, 2))
    dst = apply(model, src) + rng.normal(0, noise, (n, 2))
    inliers = rng.random(n) < inlier_share
    dst[~inliers] = rng.uniform(0, 400, ((~inliers).sum(), 2))
    return model, src, dst, inliers


def test_ransac_affine_recovers_a_known_affine_map():
    model, src, dst, inliers = affine_data()
    estimate, mask = ransac.ransac_affine(src, dst, residual=4.0, trials=300, seed=1)
    # Outliers are uniform over the image, so a few may land within 4 px by chance.
    assert np.all(mask[inliers]) and (mask & ~inliers).sum() <= 2
    probe = np.array([[0.0, 0.0], [400.0, 0.0], [0.0, 400.0], [200.0, 300.0]])
    assert np.abs(apply(estimate, probe) - apply(model, probe)).max() < 1.0
    again = ransac.ransac_affine(src, dst, residual=4.0, trials=300, seed=1)
    np.testing.assert_array_equal(again[0], estimate)
    np.testing.assert_array_equal(again[1], mask)


def test_ransac_affine_without_a_model():
    src = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])  # collinear: no affine fit
    estimate, mask = ransac.ransac_affine(src, src, residual=1.0, trials=50)
    assert estimate is None and not mask.any()
    estimate, mask = ransac.ransac_affine(src[:2], src[:2], residual=1.0, trials=50)
    assert estimate is None and mask.shape == (2,)


def test_ransac_affine_stops_early_only_below_full_confidence(monkeypatch):
    drawn = []
    original = ransac.sample_triples

    def counting(rng, n, count):
        drawn.append(count)
        return original(rng, n, count)

    monkeypatch.setattr(ransac, "sample_triples", counting)
    _, src, dst, _ = affine_data(inlier_share=1.0, n=2000)
    ransac.ransac_affine(src, dst, residual=4.0, trials=1000, confidence=1.0)
    assert sum(drawn) == 1000
    drawn.clear()
    ransac.ransac_affine(src, dst, residual=4.0, trials=1000, confidence=0.99)
    assert sum(drawn) < 1000


# --------------------------------------------------------------------------------------------
# Verifiers on a pair related by a known homography


def test_fast_preset_recovers_the_known_homography(features):
    result = verify_pair(features["photo"], features["warped"])
    assert result.inliers >= 50 and result.inliers >= 0.7 * result.n_putative
    probe = np.array([[40.0, 40.0], [280.0, 50.0], [60.0, 200.0], [250.0, 210.0], [160.0, 120.0]])
    assert np.abs(apply(result.model, probe) - apply(TRUE_H, probe)).max() < 2.0
    # Every inlier pair is consistent with the true homography.
    a = features["photo"].locations[result.inlier_pairs[:, 0]]
    b = features["warped"].locations[result.inlier_pairs[:, 1]]
    assert np.median(np.linalg.norm(apply(TRUE_H, a) - b, axis=1)) < 1.5
    assert result.hull_area > 0.3 * 320 * 240


@pytest.mark.parametrize("name", ALL_VERIFIERS)
def test_every_verifier_separates_related_from_unrelated_pairs(features, name):
    related = verify_pair(features["photo"], features["warped"], model_config(name))
    unrelated = verify_pair(features["photo"], features["other"], model_config(name))
    assert related.inliers >= 50
    assert unrelated.inliers <= 12 and unrelated.inliers < related.inliers / 4


@pytest.mark.parametrize("name", ALL_VERIFIERS)
def test_seeded_verifiers_are_reproducible(features, name):
    # The unrelated pair: with few, mostly wrong matches the sampling decides the outcome.
    for pair in (("photo", "warped"), ("photo", "other")):
        a, b = features[pair[0]], features[pair[1]]
        config = model_config(name, matcher="kdtree", max_distance=0.8, ratio=None)
        first = verify_pair(a, b, config)
        cv2.setRNGSeed(12345)  # the process-global OpenCV generator must not matter
        np.random.seed(99)  # nor numpy's legacy global one
        assert_same_result(first, verify_pair(a, b, config))
        assert_same_result(first, verify_pair(a, b, config, create_verifier(config)))


def test_fast_is_pydegensac_and_fast_magsac_differs_only_in_its_verifier():
    # `fast` stays on pydegensac (the SIFT thresholds and demo figures were measured with it);
    # MAGSAC, faster but with other inlier counts, is its own preset.
    fast, magsac = VERIFY_PRESETS["fast"], VERIFY_PRESETS["fast-magsac"]
    assert (fast.model, fast.confidence) == ("homography", 0.999)
    assert isinstance(create_verifier(fast), verify.HomographyVerifier)
    assert (magsac.model, magsac.confidence) == ("magsac", 0.9999)
    assert magsac == dataclasses.replace(fast, model="magsac", confidence=0.9999)
    assert verify_config("fast-magsac", seed=4) == dataclasses.replace(magsac, seed=4)


@pytest.mark.parametrize("preset", ["fast", "fast-magsac"])
def test_fast_presets_are_reproducible_for_a_fixed_seed(features, preset):
    config = VERIFY_PRESETS[preset]
    for other in ("warped", "other"):
        first = verify_pair(features["photo"], features[other], config)
        cv2.setRNGSeed(12345)  # the process-global OpenCV generator must not matter
        np.random.seed(99)  # nor numpy's legacy global one
        assert_same_result(first, verify_pair(features["photo"], features[other], config))
        assert_same_result(first, verify_pair(features["photo"], features[other], config, create_verifier(config)))
    related = verify_pair(features["photo"], features["warped"], config)
    probe = np.array([[40.0, 40.0], [280.0, 50.0], [60.0, 200.0], [250.0, 210.0], [160.0, 120.0]])
    assert related.inliers >= 50 and np.abs(apply(related.model, probe) - apply(TRUE_H, probe)).max() < 2.0


def test_official_delf_preset_is_reproducible(features):
    config = VERIFY_PRESETS["official-delf"]
    assert (config.matcher, config.max_distance, config.residual, config.iterations) == ("kdtree", 0.8, 20.0, 1000)
    for other in ("warped", "other"):
        first = verify_pair(features["photo"], features[other], config)
        assert_same_result(first, verify_pair(features["photo"], features[other], config))
    related = verify_pair(features["photo"], features["warped"], config)
    assert related.inliers > 100 and np.abs(related.model[2] - [0, 0, 1]).max() == 0


def one_to_many_pair(repeated_side: str, seed: int = 5) -> tuple[LocalFeatures, LocalFeatures]:
    """An unrelated pair (a, b) where 20 features of one image, on a horizontal line 50 px
    apart (more than twice DELF's 20 px residual), all match one feature of the other (a
    repeated pattern, e.g. a row of windows), plus 6 chance matches at random places.
    `repeated_side` is the image with the line."""
    rng = np.random.default_rng(seed)
    dim = 40

    def unit(x):
        return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)

    pattern = unit(rng.normal(size=dim))
    chance = unit(rng.normal(size=(6, dim)))
    line = np.column_stack([np.arange(20) * 50.0 + 20.0, np.full(20, 100.0)])
    lined = (line, unit(pattern + rng.normal(0, 0.05, (20, dim))))
    single = (np.array([[500.0, 300.0]]), pattern[None])
    images = []
    for side in ("a", "b"):
        own = lined if side == repeated_side else single
        locations = np.concatenate([own[0], rng.uniform(0, 1000, (6, 2))])
        descriptors = np.concatenate([own[1], chance])
        images.append(LocalFeatures(locations, descriptors, np.ones(len(locations)), np.ones(len(locations))))
    return images[0], images[1]


@pytest.mark.parametrize("repeated_side", ["a", "b"])
def test_official_delf_resists_one_to_many_matches(repeated_side):
    """The official example matches each feature of image 2 (b) to its nearest in image 1 (a)
    and fits a -> b. Built the other way (each a_i to its nearest b_j, fitted a -> b), the 20
    line features of a all land on one point of b, and the degenerate affine map that squashes
    the line onto it takes them all as inliers: 21 inliers for an unrelated pair."""
    a, b = one_to_many_pair(repeated_side)
    result = verify_pair(a, b, VERIFY_PRESETS["official-delf"])
    assert result.n_putative >= 7 and result.inliers <= 4
    # Every feature of b is matched once at most.
    matched_b = result.inlier_pairs[:, 1]
    assert len(np.unique(matched_b)) == len(matched_b)


@pytest.mark.parametrize("name", ALL_VERIFIERS)
def test_the_seed_selects_the_sampling(features, name):
    """The seed reaches every RANSAC (for OpenCV, which ignores cv2.setRNGSeed, through the
    order of the correspondences): with a small budget on a hard pair, seeds disagree."""
    results = {verify_pair(features["photo"], features["other"],
                           model_config(name, matcher="kdtree", max_distance=0.8, ratio=None, iterations=20,
                                        seed=seed)).inliers
               for seed in range(8)}
    assert len(results) > 1


# --------------------------------------------------------------------------------------------
# verify_pair details, presets and configs


def test_too_few_putative_matches_score_zero(features):
    config = verify_config("fast", min_putative=10_000)
    result = verify_pair(features["photo"], features["warped"], config)
    assert result.n_putative > 50 and result.inliers == 0 and result.hull_area == 0.0
    assert result.model is None and result.inlier_pairs.shape == (0, 2)
    # The model's own minimum applies too: 8 correspondences for a fundamental matrix.
    a = features["photo"].select(np.arange(6))
    result = verify_pair(a, a, verify_config("fast", model="fundamental", min_putative=0))
    assert result.n_putative == 6 and result.inliers == 0


def test_verify_pair_rejects_different_descriptor_dimensions(features):
    with pytest.raises(ValueError, match="128 vs 40"):
        verify_pair(features["photo"], LocalFeatures.empty(40))


def test_convex_hull_area():
    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10], [5, 5], [2, 8]], np.float32)
    assert convex_hull_area(square) == pytest.approx(100.0)
    assert convex_hull_area(square[:2]) == 0.0


def test_official_delf_distance_follows_the_descriptor():
    """DELF's 0.8 stays for DELF (and any method without its own setting); SIFT-family
    descriptors get 0.4; an explicit override still wins."""
    assert verify_config("official-delf").max_distance == 0.8
    assert verify_config("official-delf", "delf").max_distance == 0.8
    assert verify_config("official-delf", "sift").max_distance == 0.4
    assert verify_config("official-delf", "rootsift").max_distance == 0.4
    assert verify_config("official-delf", "rootsift", max_distance=0.6).max_distance == 0.6
    assert verify_config("fast", "sift") == VERIFY_PRESETS["fast"]


def test_presets_and_config_validation():
    assert VERIFY_PRESETS["fast"] == VerifyConfig()
    assert verify_config("official-delf", seed=3).seed == 3
    assert set(VERIFIERS.names()) == {"homography", "fundamental", "affine", "delf-affine", "magsac", "poselib"}
    with pytest.raises(UserInputError, match="unknown verification preset"):
        verify_config("slow")
    with pytest.raises(UserInputError, match="unknown verification option"):
        verify_config("fast", residuals=3)
    with pytest.raises(UserInputError, match="unknown verifier 'similarity'"):
        VerifyConfig(model="similarity")
    with pytest.raises(UserInputError, match="kdtree matcher needs a max_distance"):
        VerifyConfig(matcher="kdtree", ratio=0.9, max_distance=0.8)
    with pytest.raises(UserInputError, match="seed"):
        VerifyConfig(seed=2**31)
    with pytest.raises(UserInputError, match="confidence"):
        VerifyConfig(confidence=0.0)
    with pytest.raises(UserInputError, match="confidence below 1"):
        create_verifier(VerifyConfig(model="affine", confidence=1.0))


def test_a_missing_optional_verifier_package_is_a_user_error(monkeypatch):
    monkeypatch.setattr(verify, "poselib", None)
    with pytest.raises(UserInputError, match="pip install poselib"):
        verify_config("fast", model="poselib")


@pytest.mark.parametrize("name", ["homography", "magsac",
                                  pytest.param("poselib", marks=pytest.mark.skipif(verify.poselib is None,
                                                                                   reason="poselib not installed"))])
def test_homography_verifiers_map_a_to_b(features, name):
    result = verify_pair(features["photo"], features["warped"], model_config(name))
    probe = np.array([[40.0, 40.0], [280.0, 50.0], [60.0, 200.0], [250.0, 210.0], [160.0, 120.0]])
    assert np.abs(apply(result.model, probe) - apply(TRUE_H, probe)).max() < 2.0


# --------------------------------------------------------------------------------------------
# RANSAC budgets: stop on confidence, within a high cap


def hard_correspondences(seed=1, count=400, inliers=28):
    """`count` correspondences over a 256 px image, the first `inliers` (7 %) under TRUE_H."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(0, 256, (count, 2))
    b = rng.uniform(0, 256, (count, 2))
    b[:inliers] = apply(TRUE_H, a[:inliers]) + rng.normal(0, 0.5, (inliers, 2))
    return a, b, inliers


@pytest.mark.parametrize("preset", ["fast", "fast-magsac"])
def test_fast_presets_give_a_hard_pair_the_iterations_it_needs(preset):
    """7 % inliers: an all-inlier sample of 4 comes once in about 40,000 draws, so the former
    cap of 2,000 iterations missed the model (4 of 28 inliers found, for this seed)."""
    a, b, inliers = hard_correspondences()
    fit = create_verifier(VERIFY_PRESETS[preset]).fit(a, b)
    assert fit.inliers[:inliers].all() and fit.inliers[inliers:].sum() <= 3


def test_useful_iterations_is_ransacs_stopping_rule_for_the_smallest_consensus():
    # One sample in all: drawn at the first try.
    assert verify.useful_iterations(4, 4, 0.999) == 1
    # C(6, 4) = 15 samples: (1 - 1/15)^T <= 0.001 from T = 101 on.
    assert verify.useful_iterations(6, 4, 0.999) == 101
    assert (1 - 1 / 15) ** 101 <= 0.001 < (1 - 1 / 15) ** 100
    assert verify.useful_iterations(400, 4, 0.999) > 50_000
    assert verify.useful_iterations(6, 4, 1.0) == np.inf


def test_a_pair_of_few_matches_does_not_run_the_whole_cap(monkeypatch, features):
    """Different-landmark pairs often have 4 to 10 chance matches and no model: the cap of
    50,000 iterations would cost them about 0.1 s each for nothing."""
    budgets = []
    original = verify.pydegensac.findHomography

    def recording(points_a, points_b, residual, confidence, iterations, **kwargs):
        budgets.append(iterations)
        return original(points_a, points_b, residual, confidence, iterations, **kwargs)

    monkeypatch.setattr(verify.pydegensac, "findHomography", recording)
    create_verifier(VERIFY_PRESETS["fast"]).fit(*hard_correspondences(count=6, inliers=0)[:2])
    verify_pair(features["photo"], features["warped"])
    assert budgets[0] == 101 and budgets[1] == VERIFY_PRESETS["fast"].iterations == 50_000


# --------------------------------------------------------------------------------------------
# Tolerances relative to image size


def upscaled(features: LocalFeatures, factor: int) -> LocalFeatures:
    """The same features on a copy of their image `factor` times larger."""
    width, height = features.image_size
    return LocalFeatures(features.locations * factor, features.descriptors, features.scales * factor,
                         features.scores, (width * factor, height * factor))


@pytest.mark.parametrize("name", ALL_VERIFIERS)
def test_a_4x_upscaled_pair_gives_the_same_inliers(features, name):
    config = model_config(name)
    for other in ("warped", "other"):
        small = verify_pair(features["photo"], features[other], config)
        large = verify_pair(upscaled(features["photo"], 4), upscaled(features[other], 4), config)
        assert (large.n_putative, large.inliers) == (small.n_putative, small.inliers)
        np.testing.assert_array_equal(large.inlier_pairs, small.inlier_pairs)
        assert large.hull_area == pytest.approx(16 * small.hull_area)
    # Models are in original pixels: the 4x copy's is the original's in 4x coordinates.
    small = verify_pair(features["photo"], features["warped"], config)
    large = verify_pair(upscaled(features["photo"], 4), upscaled(features["warped"], 4), config)
    four, quarter = np.diag([4.0, 4.0, 1.0]), np.diag([0.25, 0.25, 1.0])
    epipolar = VERIFIERS.create(name, residual=1.0, iterations=1, confidence=0.5, seed=0).epipolar
    expected = quarter @ small.model @ quarter if epipolar else four @ small.model @ quarter
    np.testing.assert_allclose(large.model / np.linalg.norm(large.model), expected / np.linalg.norm(expected),
                               rtol=1e-6, atol=1e-9)


def test_tolerances_in_pixels_differ_at_4x_and_sizes_unknown_stay_in_pixels(features):
    """Without a reference side the 6 px residual is 1.5 px of the original at 4x: fewer inliers."""
    config = verify_config("fast", reference_side=None)
    small = verify_pair(features["photo"], features["warped"], config)
    large = verify_pair(upscaled(features["photo"], 4), upscaled(features["warped"], 4), config)
    assert large.inliers < small.inliers
    # A record without a size is taken in its own pixels, whatever the reference side.
    sizeless = [dataclasses.replace(features[name], image_size=None) for name in ("photo", "warped")]
    assert verify_pair(*sizeless).inliers == small.inliers


def test_the_residual_is_relative_to_the_long_side(features):
    # The 320 px fixture at reference side 320 is in its own pixels.
    config = verify_config("fast", reference_side=320.0)
    in_pixels = verify_config("fast", reference_side=None)
    pair = (features["photo"], features["warped"])
    assert_same_result(verify_pair(*pair, config), verify_pair(*pair, in_pixels))
    with pytest.raises(UserInputError, match="reference_side"):
        VerifyConfig(reference_side=0.0)
