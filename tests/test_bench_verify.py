"""`lmkcomp bench verify`: the official-style reference on hand-made pairs, and the whole bench on
the tiny preset, with and without the optional packages."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmkcomp.bench import delf_reference, verify as bench_verify
from lmkcomp.cli import main
from lmkcomp.data import synthetic
from lmkcomp.errors import UserInputError
from lmkcomp.kaggle.estimate import verify_rate_from_bench
from lmkcomp.local import verify
from lmkcomp.local.record import LocalFeatures
from lmkcomp.local.verify import VERIFY_PRESETS, verify_pair

needs_skimage = pytest.mark.skipif(delf_reference.ransac is None, reason="scikit-image not installed")


def features(locations, descriptors) -> LocalFeatures:
    return LocalFeatures(locations, descriptors, np.ones(len(locations)), np.ones(len(locations)))


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def affine_pair(seed: int = 0) -> tuple[LocalFeatures, LocalFeatures]:
    """b shows 60 of a's 100 features moved by an affine map (descriptors slightly noisy), plus 40
    unrelated features."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(0, 500, (100, 2))
    descriptors = unit(rng.normal(size=(100, 40)))
    moved = points[:60] @ np.array([[0.9, 0.1], [-0.05, 1.1]]).T + [30.0, -20.0]
    b_locations = np.concatenate([moved, rng.uniform(0, 500, (40, 2))])
    b_descriptors = np.concatenate([unit(descriptors[:60] + rng.normal(0, 0.03, (60, 40))),
                                    unit(rng.normal(size=(40, 40)))])
    return features(points, descriptors), features(b_locations, b_descriptors)


@needs_skimage
def test_reference_scores_a_related_pair_and_is_reproducible():
    a, b = affine_pair()
    reference = delf_reference.OfficialDelfReference(seed=0)
    assert reference.inliers(a, b) == 60 == reference.inliers(a, b)
    # The kit's official-delf preset agrees on this clear-cut pair.
    assert verify_pair(a, b, VERIFY_PRESETS["official-delf"]).inliers == 60
    unrelated = features(np.random.default_rng(1).uniform(0, 500, (50, 2)), unit(np.random.default_rng(2).normal(size=(50, 40))))
    assert reference.inliers(a, unrelated) == 0  # no descriptor within 0.8: no putative match
    assert reference.inliers(a, features(np.zeros((0, 2)), np.zeros((0, 40)))) == 0


def test_missing_scikit_image_is_a_user_error_and_the_bench_skips_the_reference(monkeypatch):
    monkeypatch.setattr(delf_reference, "ransac", None)
    with pytest.raises(UserInputError, match=r"scikit-image: pip install 'lmkcomp\[bench\]'"):
        delf_reference.OfficialDelfReference()
    rows, skipped = bench_verify.scorers("sift")
    assert "official-delf reference" not in rows and list(rows)[:2] == ["official-delf", "fast"]
    assert skipped == ["official-delf reference skipped: the official-style reference needs scikit-image: "
                       "pip install 'lmkcomp[bench]'"]


def test_bench_rows_compare_fast_with_every_other_homography_verifier(monkeypatch):
    monkeypatch.setattr(verify, "poselib", None)
    rows, skipped = bench_verify.scorers("sift")
    # fast (pydegensac) and fast-magsac side by side; poselib stands in for fast's verifier
    # (skipped here: not installed); no row repeats a preset's verifier.
    assert list(rows)[-2:] == ["fast", "fast-magsac"]
    assert not any(name.startswith("fast model=") for name in rows)
    assert any(line.startswith("fast model=poselib skipped: ") and "pip install poselib" in line for line in skipped)
    monkeypatch.setattr(verify, "poselib", object())
    assert [name for name in bench_verify.scorers("sift")[0] if name.startswith("fast")] == [
        "fast", "fast-magsac", "fast model=poselib"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-bench-verify")
    synthetic.generate(root, synthetic.preset_config("tiny", long_side=128), seed=2, progress=False)
    return root


@needs_skimage
def test_bench_verify_end_to_end(tiny, tmp_path, capsys):
    out = tmp_path / "verify.json"
    assert main(["bench", "verify", "--data", str(tiny), "--num-pairs", "4", "--max-features", "300", "--out", str(out),
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    names = [row["preset"] for row in rows]
    assert names[:3] == ["official-delf reference", "official-delf", "fast"]
    assert "ratio: pairs/s over official-delf reference" in printed
    assert all(0 <= row["roc_auc"] <= 1 and row["pairs_per_s"] > 0 for row in rows)
    # The Kaggle estimate reads the fast row of this JSON.
    assert verify_rate_from_bench(out)[0] == rows[2]["pairs_per_s"]
