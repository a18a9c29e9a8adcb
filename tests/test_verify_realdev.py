"""Verification on real photographs: the shared `realdev` folder (23 photos of 5 landmarks).

The folder is for development only and not part of the kit: without it these tests skip.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from lmkcomp.data.images import load_image_rgb
from lmkcomp.local.sift import SiftExtractor
from lmkcomp.local.verify import VERIFY_PRESETS, verify_config, verify_pair

REALDEV = Path(__file__).resolve().parents[1].parent / "shared" / "realdev"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not REALDEV.is_dir(), reason=f"no real photos: {REALDEV} is absent (development data)"),
]


@pytest.fixture(scope="module")
def photos():
    """(landmark, SIFT features with the default settings) of every realdev photo."""
    extractor = SiftExtractor()
    return [(path.parent.name, extractor.extract(load_image_rgb(path))) for path in sorted(REALDEV.glob("*/*.jpg"))]


def inlier_counts(photos, preset: str, pairs) -> np.ndarray:
    return np.array([verify_pair(photos[a][1], photos[b][1], VERIFY_PRESETS[preset]).inliers for a, b in pairs])


def test_fast_separates_same_from_different_landmarks(photos):
    pairs = list(combinations(range(len(photos)), 2))
    same = np.array([photos[a][0] == photos[b][0] for a, b in pairs])
    inliers = inlier_counts(photos, "fast", pairs)
    # Measured: AUC 0.90-0.92, 27 vs 5.4 mean inliers (0.90 and 22 vs 5 before issue 16).
    assert roc_auc_score(same, inliers) > 0.88
    assert inliers[same].mean() > 4 * inliers[~same].mean()


def test_official_delf_admits_few_chance_inliers_between_landmarks(photos):
    """Its 20 px were 2 % of these ~1000 px photos: 21 chance inliers per different-landmark
    pair; taken at a 2048 px long side, 11."""
    pairs = [(a, b) for a, b in combinations(range(len(photos)), 2) if photos[a][0] != photos[b][0]]
    assert inlier_counts(photos, "official-delf", pairs[::2]).mean() < 15


def test_official_delf_on_sift_ranks_pairs_no_worse_than_fast(photos):
    """The issue's target on the photos at hand: with its SIFT distance (0.4, tuned on the
    renders, not here) `official-delf` ranks same- above different-landmark pairs at least as
    well as `fast`. Measured: AUC 0.93 against 0.90; with DELF's 0.8, 0.84."""
    pairs = list(combinations(range(len(photos)), 2))
    same = np.array([photos[a][0] == photos[b][0] for a, b in pairs])
    config = verify_config("official-delf", "sift")
    official = np.array([verify_pair(photos[a][1], photos[b][1], config).inliers for a, b in pairs])
    assert roc_auc_score(same, official) >= roc_auc_score(same, inlier_counts(photos, "fast", pairs))
