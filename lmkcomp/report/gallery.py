"""Gallery images of the report: a query with its top results, and a verified pair with its
inlier matches drawn. Both are single JPEG files, so the report stays a handful of small files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from lmkcomp.data.images import load_image_rgb
from lmkcomp.fileio import atomic_write_bytes

CORRECT = (40, 170, 60)
WRONG = (210, 40, 40)
UNKNOWN = (150, 150, 150)


@dataclass(frozen=True)
class Result:
    """One retrieved image: its file, whether it is right (None: the ground truth has no say,
    e.g. a non-landmark query), and a caption (e.g. the score)."""

    path: Path
    correct: bool | None
    caption: str


def _thumbnail(path: Path, size: int) -> np.ndarray:
    """`path` scaled to fit a size x size square, centred on a white canvas (RGB uint8)."""
    image = load_image_rgb(path, max_side=size)
    canvas = np.full((size, size, 3), 255, np.uint8)
    h, w = image.shape[:2]
    top, left = (size - h) // 2, (size - w) // 2
    canvas[top:top + h, left:left + w] = image
    return canvas


def _framed(tile: np.ndarray, colour: tuple[int, int, int], width: int = 5) -> np.ndarray:
    return cv2.copyMakeBorder(tile, width, width, width, width, cv2.BORDER_CONSTANT, value=colour)


def _captioned(tile: np.ndarray, caption: str) -> np.ndarray:
    band = np.full((18, tile.shape[1], 3), 255, np.uint8)
    cv2.putText(band, caption[:22], (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([tile, band])


def _write_jpeg(image_rgb: np.ndarray, path: Path) -> Path:
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise RuntimeError(f"could not encode {path}")
    atomic_write_bytes(path, encoded.tobytes())
    return path


def query_strip(query: Path, query_caption: str, results: Sequence[Result], path: str | Path, size: int = 128) -> Path:
    """One row: the query (blue frame), a gap, then its results framed green (correct), red
    (wrong) or grey (not judged), each captioned."""
    tiles = [_captioned(_framed(_thumbnail(query, size), (60, 90, 220)), query_caption),
             np.full((size + 10 + 18, 12, 3), 255, np.uint8)]
    for result in results:
        colour = UNKNOWN if result.correct is None else CORRECT if result.correct else WRONG
        tiles.append(_captioned(_framed(_thumbnail(result.path, size), colour), result.caption))
    return _write_jpeg(np.hstack(tiles), Path(path))


def match_image(image_a: Path, image_b: Path, points_a: np.ndarray, points_b: np.ndarray, path: str | Path,
                height: int = 240) -> Path:
    """Images a and b side by side at `height` px, with a line between each pair of matched
    points (N x 2 arrays of (x, y) in each image's original pixels)."""
    panels, scales = [], []
    for image_path in (image_a, image_b):
        image = load_image_rgb(image_path)
        scale = height / image.shape[0]
        panels.append(cv2.resize(image, (max(1, round(image.shape[1] * scale)), height), interpolation=cv2.INTER_AREA))
        scales.append(scale)
    canvas = np.ascontiguousarray(np.hstack(panels))
    offset = panels[0].shape[1]
    colours = cv2.applyColorMap(np.linspace(0, 255, max(len(points_a), 1)).astype(np.uint8), cv2.COLORMAP_HSV).reshape(-1, 3)
    for (xa, ya), (xb, yb), colour in zip(points_a, points_b, colours):
        start = (int(round(xa * scales[0])), int(round(ya * scales[0])))
        end = (int(round(xb * scales[1])) + offset, int(round(yb * scales[1])))
        colour = tuple(int(c) for c in colour[::-1])
        cv2.line(canvas, start, end, colour, 1, cv2.LINE_AA)
        cv2.circle(canvas, start, 3, colour, 1, cv2.LINE_AA)
        cv2.circle(canvas, end, 3, colour, 1, cv2.LINE_AA)
    return _write_jpeg(canvas, Path(path))
