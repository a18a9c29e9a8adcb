"""The report's pieces: the precision-recall curve behind GAP, the HTML page, plots, galleries."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lmkcomp import metrics
from lmkcomp.report import gallery, html, plots


def test_precision_recall_curve_matches_gap_by_hand():
    predictions = {"a": (1, 0.9), "b": (2, 0.8), "c": (3, 0.7), "e": (5, 0.7)}
    # b is a non-landmark image (always wrong); d has no prediction; e ties c and sorts after it
    solution = {"a": [1], "b": [], "c": [3], "d": [4], "e": [6]}
    precision, recall = metrics.recognition_precision_recall(predictions, solution)
    np.testing.assert_allclose(precision, [1.0, 0.5, 2 / 3, 0.5])
    np.testing.assert_allclose(recall, [0.25, 0.25, 0.5, 0.5])
    gap = metrics.global_average_precision(predictions, solution)
    assert gap == pytest.approx((1.0 + 2 / 3) / 4)
    rises = np.diff(np.concatenate([[0.0], recall])) > 0
    assert precision[rises].sum() / 4 == pytest.approx(gap)


def test_precision_recall_curve_is_empty_without_landmarks():
    precision, recall = metrics.recognition_precision_recall({"a": (1, 0.5)}, {"a": []})
    assert precision.size == 0 and recall.size == 0


def test_page_has_escaped_table_and_figures(tmp_path):
    section = html.Section("Ablation", ["<b>plain</b> text"], ("stage", "GAP"), [("kNN <k=3>", 0.12345)],
                           [html.Figure("bars.png", "per-stage scores")])
    page = html.write_page(tmp_path / "report", "Demo", [section], footer="made by a test").read_text()
    assert "<td>kNN &lt;k=3&gt;</td><td>0.1235</td>" in page
    assert "&lt;b&gt;plain&lt;/b&gt; text" in page
    assert '<img src="bars.png" alt="per-stage scores">' in page
    assert "http" not in page  # nothing fetched from the network


def test_plots_write_png_files(tmp_path):
    bars = plots.stage_bars(["kNN", "re-rank"], [0.1, 0.2], [0.3, 0.4], tmp_path / "bars.png")
    curve = plots.precision_recall({"kNN": (np.array([1.0, 0.5]), np.array([0.5, 0.5]), 0.25)}, tmp_path / "pr.png")
    for path in (bars, curve):
        image = cv2.imread(str(path))
        assert image is not None and image.shape[0] > 100 and image.shape[1] > 100
        assert image.std() > 10  # something is drawn


def _solid_image(path, colour, size=(60, 40)):
    image = np.zeros((size[1], size[0], 3), np.uint8)
    image[:] = colour
    cv2.imwrite(str(path), image[:, :, ::-1])
    return path


def test_query_strip_frames_results_by_correctness(tmp_path):
    query = _solid_image(tmp_path / "q.png", (255, 255, 0))
    hit = _solid_image(tmp_path / "hit.png", (0, 0, 255))
    results = [gallery.Result(hit, True, "0.91"), gallery.Result(hit, False, "0.80"), gallery.Result(hit, None, "0.7")]
    out = gallery.query_strip(query, "query", results, tmp_path / "strip.jpg", size=64)
    strip = cv2.imread(str(out))[:, :, ::-1].astype(int)
    tile = 64 + 10
    assert strip.shape == (tile + 18, tile * 4 + 12, 3)
    frame_x = [tile + 12 + i * tile + 2 for i in range(3)]  # inside each result's left border
    for x, colour in zip(frame_x, (gallery.CORRECT, gallery.WRONG, gallery.UNKNOWN)):
        assert np.abs(strip[tile // 2, x] - colour).max() < 40


def test_match_image_draws_lines_between_points(tmp_path):
    a = _solid_image(tmp_path / "a.png", (0, 0, 0), size=(100, 50))
    b = _solid_image(tmp_path / "b.png", (0, 0, 0), size=(200, 100))
    out = gallery.match_image(a, b, np.array([[10.0, 25.0], [10.0, 5.0], [10.0, 45.0]]),
                              np.array([[20.0, 50.0], [20.0, 10.0], [20.0, 90.0]]), tmp_path / "m.jpg", height=100)
    canvas = cv2.imread(str(out))
    assert canvas.shape[:2] == (100, 200 + 200)  # a scaled x2, b x1
    # each match is a horizontal line from (20, y) to (220, y) across the join of the panels
    for y in (50, 10, 90):
        assert canvas[y - 2:y + 3, 195:205].max() > 100
    assert canvas[25:35, 300:320].max() < 40  # between the lines stays black
