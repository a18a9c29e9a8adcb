"""Procedural landmarks and photographs of them, for the synthetic mini-GLDv2 dataset.

A landmark (`LandmarkScene`) is a small 3-D scene of textured planes: a main facade, a side
wing at an angle, and optionally a tower, a pitched roof and a free-standing monument or sign
in front. Every texture is painted once per landmark, so all photographs of one landmark show
the same surfaces: local features (SIFT, DELF) match across them and survive RANSAC.

Landmarks made from one `SceneStyle` (a "family") share palette, material, window design,
roof and overall shape, so a global descriptor can confuse them; they differ in their
distinctive details: ornaments and where they sit, sign texts, door, statue, weathering,
number of bays and storeys.

`render_photo` takes one photograph: a pinhole camera at a random viewpoint (yaw around the
building, height, distance, focal length, roll, off-centre aim) sees every plane through the
homography it induces, over a sky and a ground; then lighting, occluding foreground objects,
blur, sensor noise and tone changes. `render_distractor` makes non-landmark images of several
kinds, including one-off buildings that are no landmark.

All randomness comes from the numpy Generator passed in: equal generator states give
byte-identical images. JPEG compression is the caller's job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import cv2
import numpy as np

Colour = tuple[float, float, float]

_TEXTURE_CAP = 512  # long side (px) of a landmark's largest texture
_DISTRACTOR_TEXTURE_CAP = 256  # one-off buildings are seen once: cheaper textures suffice
_MAX_PX_PER_M = 40.0
_NEAR_M = 1.0  # planes closer to the camera than this are not drawn
_MAX_OCCLUDED = 0.3  # foreground objects may hide at most this share of the landmark

_SHAPES = ("hall", "church", "tower", "palace", "gate")
_SHAPE_P = (0.28, 0.2, 0.17, 0.2, 0.15)
# storeys above the ground floor (low, high) and window columns (low, high) per shape
_SHAPE_SIZES = {"hall": (1, 3, 5, 8), "church": (1, 2, 3, 5), "tower": (5, 9, 2, 3),
                "palace": (2, 3, 6, 9), "gate": (1, 1, 3, 3)}
_SHAPE_ROOFS = {"hall": ("flat", "parapet", "pitched"), "church": ("pitched",),
                "tower": ("crenel", "flat", "pitched"), "palace": ("parapet", "pitched"),
                "gate": ("flat", "parapet", "crenel")}
_MATERIALS = ("brick", "stone", "plaster", "concrete")
_WALL_COLOURS: dict[str, tuple[Colour, ...]] = {
    "brick": ((150, 72, 52), (168, 96, 64), (122, 62, 48), (186, 132, 88), (138, 104, 84)),
    "stone": ((204, 194, 172), (172, 168, 160), (194, 164, 124), (146, 140, 134), (214, 206, 190)),
    "plaster": ((232, 216, 182), (222, 182, 138), (234, 198, 188), (198, 214, 208), (240, 236, 226),
                (226, 196, 122), (190, 200, 222)),
    "concrete": ((162, 162, 156), (186, 180, 170), (132, 132, 138), (150, 145, 128)),
}
_TRIM_LIGHT: tuple[Colour, ...] = ((238, 232, 216), (222, 214, 196), (250, 248, 240))
_TRIM_DARK: tuple[Colour, ...] = ((150, 140, 124), (110, 100, 92), (96, 90, 86))
_GLASS: tuple[Colour, ...] = ((38, 52, 68), (52, 70, 66), (30, 30, 36), (96, 112, 134), (70, 80, 95))
_ROOF: tuple[Colour, ...] = ((72, 76, 88), (158, 82, 54), (88, 146, 128), (60, 60, 62), (120, 70, 60))
_ACCENT: tuple[Colour, ...] = ((42, 70, 52), (112, 32, 32), (32, 42, 82), (186, 148, 62), (28, 28, 28),
                               (120, 88, 60))
_BRONZE: tuple[Colour, ...] = ((72, 104, 90), (96, 74, 52), (210, 206, 196), (60, 58, 56), (176, 140, 70))
_HAIR: tuple[Colour, ...] = ((24, 20, 18), (70, 46, 30), (120, 84, 50), (200, 170, 110), (150, 150, 150))
_SKIN: tuple[Colour, ...] = ((236, 200, 170), (210, 160, 120), (160, 110, 80), (110, 74, 52), (244, 214, 190))
_CURTAINS: tuple[Colour, ...] = ((232, 224, 204), (246, 246, 242), (170, 60, 54), (70, 110, 80), (200, 180, 120),
                                 (110, 120, 160))
_WINDOW_KINDS = ("rect", "arched", "twin", "tall", "pointed")
_HOODS = ("none", "cornice", "pediment", "keystone")
_FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
          cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_PLAIN)
_GLYPHS = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))

# standard normal quantiles of the 256 byte values, for fast Gaussian noise
_NORMAL_QUANTILES = np.array([NormalDist().inv_cdf((i + 0.5) / 256) for i in range(256)])
_ASPECTS = ((4, 3), (3, 4), (16, 9), (1, 1), (3, 2), (2, 3), (9, 16))
_ASPECT_P = (0.3, 0.2, 0.14, 0.1, 0.1, 0.1, 0.06)


# ============================================================================================
# Styles


@dataclass(frozen=True)
class SceneStyle:
    """What the look-alike landmarks of one family share."""

    shape: str  # overall shape class: hall, church, tower, palace or gate
    material: str  # wall material: brick, stone, plaster or concrete
    wall: Colour  # RGB, 0-255
    trim: Colour  # cornices, window frames, most ornaments
    glass: Colour
    roof: Colour
    accent: Colour  # doors, shutters, sign boards
    window_kind: str  # rect, arched, twin, tall or pointed
    window_hood: str  # what crowns a window: none, cornice, pediment or keystone
    window_width: float  # as a fraction of the bay width
    window_height: float  # as a fraction of the storey height
    shutters: bool
    pilasters: bool
    string_courses: bool  # a cornice line between consecutive storeys
    roof_kind: str  # flat, parapet, pitched or crenel
    floors: int  # storeys above the ground floor; each landmark varies it by one
    bays: int  # window columns; each landmark varies it by one
    storey_m: float
    bay_m: float
    wing_turn_deg: float  # how far a wing turns away from the facade's line (90: a right-angled corner)


def make_style(rng: np.random.Generator) -> SceneStyle:
    """A random architectural style: the shared look of a family of landmarks."""
    shape = _SHAPES[int(rng.choice(len(_SHAPES), p=_SHAPE_P))]
    material = _MATERIALS[int(rng.integers(len(_MATERIALS)))]
    wall = _jitter(rng, _pick(rng, _WALL_COLOURS[material]), 12)
    light_trim = _luminance(wall) < 175 or rng.random() < 0.3
    trim = _jitter(rng, _pick(rng, _TRIM_LIGHT if light_trim else _TRIM_DARK), 8)
    if shape == "church":
        window_kind = ("pointed", "twin", "arched")[int(rng.integers(3))]
    else:
        window_kind = _WINDOW_KINDS[int(rng.choice(5, p=(0.34, 0.24, 0.1, 0.2, 0.12)))]
    floors_low, floors_high, bays_low, bays_high = _SHAPE_SIZES[shape]
    roofs = _SHAPE_ROOFS[shape]
    return SceneStyle(
        shape=shape,
        material=material,
        wall=wall,
        trim=trim,
        glass=_jitter(rng, _pick(rng, _GLASS), 10),
        roof=_jitter(rng, _pick(rng, _ROOF), 12),
        accent=_jitter(rng, _pick(rng, _ACCENT), 12),
        window_kind=window_kind,
        window_hood=_HOODS[int(rng.integers(len(_HOODS)))],
        window_width=float(rng.uniform(0.36, 0.56)),
        window_height=float(rng.uniform(0.48, 0.66)),
        shutters=shape in ("hall", "palace") and rng.random() < 0.3,
        pilasters=rng.random() < 0.4,
        string_courses=rng.random() < 0.5,
        roof_kind=roofs[int(rng.integers(len(roofs)))],
        floors=int(rng.integers(floors_low, floors_high + 1)),
        bays=int(rng.integers(bays_low, bays_high + 1)),
        storey_m=float(rng.uniform(3.3, 4.4)),
        bay_m=float(rng.uniform(2.8, 3.8)),
        wing_turn_deg=float(rng.uniform(60.0, 110.0)),
    )


def _pick(rng: np.random.Generator, options: tuple[Colour, ...]) -> Colour:
    return options[int(rng.integers(len(options)))]


def _jitter(rng: np.random.Generator, colour: Colour, amount: float) -> Colour:
    shifted = np.clip(np.asarray(colour, np.float64) + rng.uniform(-amount, amount, 3), 0, 255)
    return (float(shifted[0]), float(shifted[1]), float(shifted[2]))


def _luminance(colour: Colour) -> float:
    return 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]


def _scaled(colour: Colour, factor: float) -> Colour:
    return (min(255.0, colour[0] * factor), min(255.0, colour[1] * factor), min(255.0, colour[2] * factor))


def _mix(a: Colour, b: Colour, t: float) -> Colour:
    return (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t)


def _random_colour(rng: np.random.Generator, low: int = 20, high: int = 235) -> Colour:
    values = rng.uniform(low, high, 3)
    return (float(values[0]), float(values[1]), float(values[2]))


# ============================================================================================
# Noise and drawing primitives shared by textures, photos and distractors


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float, aspect: float = 1.0) -> np.ndarray:
    """Value noise in [-1, 1] with features about `cell` px wide (`cell * aspect` px tall)."""
    cell_w, cell_h = max(cell, 1.0), max(cell * aspect, 1.0)
    gh, gw = int(h / cell_h) + 3, int(w / cell_w) + 3
    small = rng.random((gh, gw), dtype=np.float32) * 2.0 - 1.0
    big = cv2.resize(small, (int(gw * cell_w), int(gh * cell_h)), interpolation=cv2.INTER_CUBIC)
    return big[:h, :w]


def _fractal_noise(rng: np.random.Generator, h: int, w: int, cell: float, octaves: int = 3) -> np.ndarray:
    """Octaves of value noise, each half the size and weight of the previous: natural-looking mottling."""
    total = np.zeros((h, w), np.float32)
    amplitude = 1.0
    for _ in range(octaves):
        total += amplitude * _smooth_noise(rng, h, w, cell)
        cell, amplitude = cell / 2.0, amplitude / 2.0
    return total / (2.0 - 2.0 * amplitude)  # divided by the sum of the weights


def _block_pattern(rng: np.random.Generator, h: int, w: int, block_w: float, block_h: float,
                   mortar_px: float, irregular: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel shade in [-1, 1] of courses of blocks (stone, brick, tiles) and a mortar mask."""
    ys = np.arange(h, dtype=np.float32)
    row_of_y = (ys / block_h).astype(np.int32)
    rows = int(row_of_y[-1]) + 1
    # irregular: every course starts anywhere (ashlar); regular: half-block bond
    offsets = rng.random(rows, dtype=np.float32) * block_w if irregular else (np.arange(rows) % 2) * (block_w / 2)
    xs = np.arange(w, dtype=np.float32)[None, :] + offsets[row_of_y][:, None].astype(np.float32)
    col = (xs / block_w).astype(np.int32)
    table = rng.random((rows, int(col.max()) + 1), dtype=np.float32) * 2.0 - 1.0
    shade = table[row_of_y[:, None], col]
    mortar = ((ys % block_h) < mortar_px)[:, None] | ((xs % block_w) < mortar_px)
    return shade, mortar


def _ellipse_points(cx: float, cy: float, rx: float, ry: float, n: int = 20, angle: float = 0.0) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    c, s = math.cos(angle), math.sin(angle)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def _limb(x0: float, y0: float, x1: float, y1: float, width: float) -> np.ndarray:
    """A quad of `width` from (x0, y0) to (x1, y1)."""
    dx, dy = x1 - x0, y1 - y0
    n = math.hypot(dx, dy) or 1.0
    ox, oy = -dy / n * width / 2, dx / n * width / 2
    return np.array([[x0 + ox, y0 + oy], [x1 + ox, y1 + oy], [x1 - ox, y1 - oy], [x0 - ox, y0 - oy]])


def _fill(img: np.ndarray, points: np.ndarray | list[np.ndarray], colour: Colour | float) -> None:
    """Anti-aliased filled polygon(s) at sub-pixel precision."""
    polys = points if isinstance(points, list) else [points]
    cv2.fillPoly(img, [np.round(np.asarray(p) * 16).astype(np.int32) for p in polys], colour, cv2.LINE_AA, 4)


def _rect(img: np.ndarray, x0: float, y0: float, x1: float, y1: float, colour: Colour | float) -> None:
    _fill(img, np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64), colour)


def _random_text(rng: np.random.Generator, min_len: int = 3, max_len: int = 10) -> str:
    alphabet = 26 if rng.random() < 0.8 else len(_GLYPHS)  # mostly letters, sometimes with digits
    text = "".join(_GLYPHS[rng.integers(0, alphabet, size=int(rng.integers(min_len, max_len + 1)))])
    if len(text) > 5 and rng.random() < 0.5:
        cut = int(rng.integers(2, len(text) - 2))
        text = text[:cut] + " " + text[cut:]
    return text


def _text_in_box(img: np.ndarray, rng: np.random.Generator, text: str, x0: float, y0: float, x1: float,
                 y1: float, colour: Colour) -> None:
    """Random-font `text`, as large as fits in the box, centred."""
    font = _FONTS[int(rng.integers(len(_FONTS)))]
    (tw, th), base = cv2.getTextSize(text, font, 1.0, 1)
    scale = 0.92 * min((x1 - x0) / max(tw, 1), (y1 - y0) / max(th + base, 1))
    if scale * th < 3:
        return
    thickness = max(1, int(round(scale * 1.3)))
    (tw, th), base = cv2.getTextSize(text, font, scale, thickness)
    origin = (int((x0 + x1 - tw) / 2), int((y0 + y1 + th - base) / 2))
    cv2.putText(img, text, origin, font, scale, colour, thickness, cv2.LINE_AA)


def _premultiplied(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """RGBA with colour premultiplied by alpha, so warping blends edges without dark fringes."""
    a = alpha.astype(np.float32)[..., None] * (1.0 / 255.0)
    return np.dstack([(rgb.astype(np.float32) * a + 0.5).astype(np.uint8), alpha])


def _mip_chain(rgba: np.ndarray) -> tuple[np.ndarray, ...]:
    """Pre-filtered halvings: a photo samples the level whose texels match its pixels, so distant
    planes do not alias."""
    levels = [rgba]
    while min(levels[-1].shape[:2]) >= 16 and len(levels) < 6:
        levels.append(cv2.pyrDown(levels[-1]))
    return tuple(levels)


# ============================================================================================
# Ornaments: the distinctive details that tell look-alike landmarks apart


def _draw_rosette(img: np.ndarray, rng: np.random.Generator, cx: float, cy: float, r: float, fg: Colour,
                  bg: Colour) -> None:
    petals = int(rng.integers(5, 13))
    phase = rng.uniform(0, math.pi)
    _fill(img, _ellipse_points(cx, cy, r, r, 28), bg)
    for k in range(petals):
        angle = phase + 2 * math.pi * k / petals
        px, py = cx + 0.52 * r * math.cos(angle), cy + 0.52 * r * math.sin(angle)
        _fill(img, _ellipse_points(px, py, 0.42 * r, 0.15 * r + 0.6, 12, angle), fg)
    _fill(img, _ellipse_points(cx, cy, 0.22 * r + 0.6, 0.22 * r + 0.6, 12), _scaled(bg, 0.6))


def _draw_star(img: np.ndarray, rng: np.random.Generator, cx: float, cy: float, r: float, colour: Colour) -> None:
    points = int(rng.integers(4, 9))
    inner = rng.uniform(0.35, 0.55)
    t = np.arange(2 * points) * math.pi / points + rng.uniform(0, math.pi)
    radius = np.where(np.arange(2 * points) % 2 == 0, r, r * inner)
    _fill(img, np.stack([cx + radius * np.cos(t), cy + radius * np.sin(t)], axis=1), colour)


def _draw_emblem(img: np.ndarray, rng: np.random.Generator, cx: float, cy: float, r: float, style: SceneStyle) -> None:
    """A coat of arms: a shield split in two random tinctures with a charge on top."""
    shield = np.array([[-0.8, -1.0], [0.8, -1.0], [0.8, 0.1], [0.0, 1.0], [-0.8, 0.1]]) * r + (cx, cy)
    first, second = _random_colour(rng), _random_colour(rng)
    _fill(img, shield + 0.12 * r * np.sign(shield - (cx, cy)), style.trim)  # the rim
    _fill(img, shield, first)
    if rng.random() < 0.5:
        _fill(img, np.array([[cx, cy - r], [cx + 0.8 * r, cy - r], [cx + 0.8 * r, cy + 0.1 * r], [cx, cy + r]]), second)
    else:
        _fill(img, np.array([[cx - 0.8 * r, cy - 0.1 * r], [cx + 0.8 * r, cy - 0.1 * r], [cx + 0.8 * r, cy + 0.1 * r],
                             [cx, cy + r], [cx - 0.8 * r, cy + 0.1 * r]]), second)
    _draw_star(img, rng, cx + rng.uniform(-0.2, 0.2) * r, cy - 0.3 * r, 0.35 * r, _random_colour(rng))


def _draw_clock(img: np.ndarray, rng: np.random.Generator, cx: float, cy: float, r: float, style: SceneStyle) -> None:
    _fill(img, _ellipse_points(cx, cy, r * 1.12, r * 1.12, 32), style.accent)
    _fill(img, _ellipse_points(cx, cy, r, r, 32), (236, 230, 212))
    dark = (30, 30, 30)
    for k in range(12):
        a = k * math.pi / 6
        inner = (int(cx + 0.78 * r * math.cos(a)), int(cy + 0.78 * r * math.sin(a)))
        outer = (int(cx + 0.95 * r * math.cos(a)), int(cy + 0.95 * r * math.sin(a)))
        cv2.line(img, inner, outer, dark, max(1, int(r / 14)), cv2.LINE_AA)
    for length, width in ((0.5, 0.09), (0.82, 0.05)):  # hour and minute hand, at a landmark-fixed time
        a = rng.uniform(0, 2 * math.pi)
        cv2.line(img, (int(cx), int(cy)), (int(cx + length * r * math.cos(a)), int(cy + length * r * math.sin(a))),
                 dark, max(1, int(width * r)), cv2.LINE_AA)


def _draw_medallion(img: np.ndarray, rng: np.random.Generator, cx: float, cy: float, r: float, style: SceneStyle) -> None:
    """A round relief: an irregular raised blob (a head in profile, say) in a framed disc."""
    _fill(img, _ellipse_points(cx, cy, r, r * rng.uniform(0.8, 1.2), 28), style.trim)
    _fill(img, _ellipse_points(cx, cy, 0.8 * r, 0.8 * r, 24), _scaled(style.trim, 0.72))
    blob = _ellipse_points(cx + rng.uniform(-0.2, 0.2) * r, cy, 0.45 * r, 0.6 * r, 10)
    blob += rng.uniform(-0.18, 0.18, blob.shape) * r
    _fill(img, blob, _scaled(style.trim, 1.15))


def _draw_plaque(img: np.ndarray, rng: np.random.Generator, x0: float, y0: float, x1: float, y1: float,
                 board: Colour, ink: Colour, lines: int = 1) -> None:
    """A framed board with random glyph text: the most distinctive detail a facade can carry."""
    border = max(1.0, 0.06 * (y1 - y0))
    _rect(img, x0 - border, y0 - border, x1 + border, y1 + border, ink)
    _rect(img, x0, y0, x1, y1, board)
    step = (y1 - y0) / lines
    for k in range(lines):
        text = _random_text(rng, 3, 9 if k == 0 else 14)
        _text_in_box(img, rng, text, x0 + border, y0 + k * step + border * 0.5, x1 - border,
                     y0 + (k + 1) * step - border * 0.5, ink)


def _draw_relief(img: np.ndarray, rng: np.random.Generator, x0: float, y0: float, x1: float, y1: float,
                 base: Colour) -> None:
    """A sculpted panel: a recessed field with random raised curves."""
    _rect(img, x0, y0, x1, y1, _scaled(base, 0.7))
    _rect(img, x0 + 1, y0 + 1, x1 - 1, y1 - 1, _scaled(base, 0.9))
    for _ in range(int(rng.integers(3, 7))):
        points = np.stack([rng.uniform(x0, x1, 4), rng.uniform(y0, y1, 4)], axis=1)
        thickness = max(1, int(rng.uniform(0.05, 0.14) * (y1 - y0)))
        cv2.polylines(img, [points.astype(np.int32)], False, _scaled(base, rng.uniform(1.05, 1.25)), thickness, cv2.LINE_AA)


def _draw_poster(img: np.ndarray, rng: np.random.Generator, x0: float, y0: float, x1: float, y1: float) -> None:
    _rect(img, x0, y0, x1, y1, _random_colour(rng, 120, 250))
    for _ in range(int(rng.integers(2, 5))):
        a, b = sorted(rng.uniform(x0, x1, 2))
        c, d = sorted(rng.uniform(y0, y1, 2))
        _rect(img, a, c, b, d, _random_colour(rng))
    _text_in_box(img, rng, _random_text(rng, 3, 7), x0, y0, x1, y0 + 0.3 * (y1 - y0), _random_colour(rng, 0, 90))


def _draw_graffiti(img: np.ndarray, rng: np.random.Generator, x0: float, y0: float, x1: float, y1: float) -> None:
    colour = _random_colour(rng)
    for _ in range(int(rng.integers(2, 5))):
        steps = int(rng.integers(4, 9))
        points = np.stack([np.linspace(x0, x1, steps), rng.uniform(y0, y1, steps)], axis=1)
        cv2.polylines(img, [points.astype(np.int32)], False, colour, max(1, int(0.08 * (y1 - y0))), cv2.LINE_AA)


def _draw_figure(img: np.ndarray, alpha: np.ndarray | None, rng: np.random.Generator, cx: float, base_y: float,
                 height: float, colour: Colour) -> None:
    """A standing statue in a random pose; every body part gets its own shade, like modelled bronze."""
    h = height
    parts: list[np.ndarray] = []
    stance = rng.uniform(0.04, 0.1) * h
    for side in (-1, 1):
        leg_angle = side * rng.uniform(0, 0.2)
        parts.append(_ellipse_points(cx + side * stance, base_y - 0.24 * h, 0.06 * h, 0.25 * h, 14, leg_angle))
    parts.append(_ellipse_points(cx, base_y - 0.6 * h, 0.14 * h, 0.21 * h, 18))
    if rng.random() < 0.5:  # robe or cloak
        hem_right, hem_left = rng.uniform(0.15, 0.25, 2) * h
        parts.append(np.array([[cx - 0.1 * h, base_y - 0.7 * h], [cx + 0.1 * h, base_y - 0.7 * h],
                               [cx + hem_right, base_y - 0.05 * h], [cx - hem_left, base_y - 0.05 * h]]))
    for side in (-1, 1):
        angle = side * rng.uniform(0.1, 2.6)  # from hanging down to raised
        length = 0.3 * h
        sx, sy = cx + side * 0.12 * h, base_y - 0.76 * h
        ex, ey = sx + math.sin(angle) * length * 0.5, sy + math.cos(angle) * length * 0.5
        parts.append(_ellipse_points(ex, ey, 0.045 * h, length * 0.5, 12, -angle))
        if rng.random() < 0.3:  # a staff, sword or torch
            tx, ty = sx + math.sin(angle) * length, sy + math.cos(angle) * length
            parts.append(_limb(tx, ty, tx, ty - 0.35 * h, 0.04 * h))
    parts.append(_ellipse_points(cx + rng.uniform(-0.02, 0.02) * h, base_y - 0.92 * h, 0.065 * h, 0.08 * h, 14))
    for part in parts:
        _fill(img, part, _scaled(colour, rng.uniform(0.7, 1.25)))
        if alpha is not None:
            _fill(alpha, part, 255)


def _draw_ornament(img: np.ndarray, rng: np.random.Generator, style: SceneStyle, cx: float, cy: float, r: float) -> None:
    kind = int(rng.choice(6, p=(0.22, 0.16, 0.2, 0.18, 0.16, 0.08)))
    if kind == 0:
        _draw_rosette(img, rng, cx, cy, r, style.trim, _scaled(style.trim, rng.uniform(0.45, 0.75)))
    elif kind == 1:
        _draw_star(img, rng, cx, cy, r, _mix(style.trim, _random_colour(rng), 0.4))
    elif kind == 2:
        _draw_emblem(img, rng, cx, cy, r, style)
    elif kind == 3:
        _draw_medallion(img, rng, cx, cy, r, style)
    elif kind == 4:
        _draw_plaque(img, rng, cx - 1.3 * r, cy - 0.6 * r, cx + 1.3 * r, cy + 0.6 * r,
                     _mix(style.trim, (255, 255, 255), 0.3), _scaled(style.accent, 0.5), lines=int(rng.integers(1, 3)))
    else:
        _draw_clock(img, rng, cx, cy, r, style)


# ============================================================================================
# Surfaces: wall materials, windows, doors


def _paint_material(rng: np.random.Generator, material: str, wall: Colour, h: int, w: int, ppm: float) -> np.ndarray:
    """A wall surface (uint8 RGB): courses of blocks, weathering and grain, plus landmark-specific scars."""
    base = np.asarray(wall, np.float32)
    tone = 1.0 + 0.08 * _fractal_noise(rng, h, w, 3.0 * ppm) + 0.035 * (rng.random((h, w), dtype=np.float32) * 2 - 1)
    mortar = None
    if material == "brick":
        shade, mortar = _block_pattern(rng, h, w, 0.5 * ppm, 0.17 * ppm, max(0.7, 0.035 * ppm), irregular=False)
        tone += 0.12 * shade
        mortar_colour, mortar_mix = np.array((196, 188, 172), np.float32), 0.45
    elif material == "stone":
        shade, mortar = _block_pattern(rng, h, w, rng.uniform(0.7, 1.2) * ppm, rng.uniform(0.35, 0.55) * ppm,
                                       max(0.7, 0.03 * ppm), irregular=True)
        tone += 0.11 * shade
        mortar_colour, mortar_mix = base * 0.75, 0.7
    elif material == "concrete":
        shade, mortar = _block_pattern(rng, h, w, 2.4 * ppm, 1.2 * ppm, max(0.7, 0.03 * ppm), irregular=False)
        tone += 0.08 * shade
        mortar_colour, mortar_mix = base * 0.7, 0.8
    else:  # plaster: smooth, its character comes from stains and patches
        tone += 0.05 * _smooth_noise(rng, h, w, 0.8 * ppm)
    img = base * tone[..., None]
    if mortar is not None:
        img[mortar] = img[mortar] * (1 - mortar_mix) + mortar_colour * mortar_mix
    img = np.clip(img, 0, 255).astype(np.uint8)
    if material == "plaster":
        for _ in range(int(rng.integers(2, 7))):  # fallen plaster showing the brick underneath
            cx, cy, r = rng.uniform(0, w), rng.uniform(0.2 * h, h), rng.uniform(0.3, 0.9) * ppm
            blob = _ellipse_points(cx, cy, r * rng.uniform(0.8, 2.0), r, 12, rng.uniform(0, math.pi))
            blob += rng.uniform(-0.3, 0.3, blob.shape) * r
            _fill(img, blob, _jitter(rng, (150, 86, 64), 15))
    return img


def _window_openings(kind: str, x0: float, y0: float, x1: float, y1: float) -> tuple[list[np.ndarray], float]:
    """Polygons of a window's glazing and the y where its rectangular part starts."""
    w = x1 - x0
    if kind == "arched":
        t = np.linspace(math.pi, 2 * math.pi, 13)
        r = w / 2
        arc = np.stack([x0 + r + r * np.cos(t), y0 + r + r * np.sin(t)], axis=1)
        return [np.vstack([arc, [[x1, y1], [x0, y1]]])], y0 + r
    if kind == "pointed":
        pts = [[x0, y1], [x0, y0 + 0.55 * w], [x0 + 0.12 * w, y0 + 0.25 * w], [x0 + 0.5 * w, y0],
               [x1 - 0.12 * w, y0 + 0.25 * w], [x1, y0 + 0.55 * w], [x1, y1]]
        return [np.array(pts, np.float64)], y0 + 0.55 * w
    if kind == "twin":
        lights = []
        for a, b in ((x0, x0 + 0.44 * w), (x1 - 0.44 * w, x1)):
            sub, top = _window_openings("arched", a, y0 + 0.25 * w, b, y1)
            lights += sub
        lights.append(_ellipse_points((x0 + x1) / 2, y0 + 0.12 * w, 0.12 * w, 0.12 * w, 12))
        return lights, top
    return [np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)], y0


def _draw_window(img: np.ndarray, rng: np.random.Generator, style: SceneStyle, x0: float, y0: float, x1: float,
                 y1: float, ppm: float) -> None:
    """One window with its frame, sill and hood; glass, curtains and reflections vary per window."""
    w, h = x1 - x0, y1 - y0
    frame = max(1, int(round(0.09 * ppm)))
    if style.shutters:
        for a in (x0 - 0.5 * w, x1):
            _rect(img, a, y0, a + 0.5 * w, y1, style.accent)
            for y in np.arange(y0 + 2, y1, max(2.0, 0.12 * ppm)):
                cv2.line(img, (int(a), int(y)), (int(a + 0.5 * w), int(y)), _scaled(style.accent, 0.7), 1)
    openings, rect_top = _window_openings(style.window_kind, x0, y0, x1, y1)
    grown = [p + np.sign(p - p.mean(axis=0)) * 0.12 * ppm for p in openings]
    _fill(img, grown, style.trim)
    lit = rng.random() < 0.06
    glass = _jitter(rng, (222, 190, 110), 20) if lit else _scaled(style.glass, rng.uniform(0.7, 1.45))
    _fill(img, openings, glass)
    if not lit and rng.random() < 0.65:  # the sky reflected in the lower panes, cut at a random height
        _rect(img, x0, rng.uniform(rect_top, y1 - 0.2 * h), x1, y1, _mix(glass, (200, 210, 220), rng.uniform(0.2, 0.45)))
    inside = rng.random()  # what shows behind the glass differs from window to window
    if inside < 0.4:  # curtains, drawn to one or both sides
        curtain = _jitter(rng, _pick(rng, _CURTAINS), 20)
        for side in ((0,), (1,), (0, 1))[int(rng.integers(3))]:
            cw = rng.uniform(0.2, 0.45) * w
            _rect(img, x0 if side == 0 else x1 - cw, rect_top, x0 + cw if side == 0 else x1, y1, curtain)
    elif inside < 0.55:  # a blind pulled part-way down
        blind = _jitter(rng, _pick(rng, _CURTAINS), 20)
        bottom = rng.uniform(rect_top + 0.2 * (y1 - rect_top), y1)
        _rect(img, x0, rect_top, x1, bottom, blind)
        for y in np.arange(rect_top + 2, bottom, max(2.0, 0.1 * ppm)):
            cv2.line(img, (int(x0), int(y)), (int(x1), int(y)), _scaled(blind, 0.8), 1)
    line = _scaled(style.trim, 0.9)
    cv2.line(img, (int((x0 + x1) / 2), int(rect_top)), (int((x0 + x1) / 2), int(y1)), line, max(1, frame // 2))
    if style.window_kind == "tall":
        for f in (0.25, 0.5, 0.75):
            cv2.line(img, (int(x0), int(y0 + f * h)), (int(x1), int(y0 + f * h)), line, max(1, frame // 2))
    else:
        yh = rect_top + 0.3 * (y1 - rect_top)
        cv2.line(img, (int(x0), int(yh)), (int(x1), int(yh)), line, max(1, frame // 2))
    _rect(img, x0 - 0.15 * ppm, y1, x1 + 0.15 * ppm, y1 + 0.16 * ppm, _scaled(style.trim, 1.08))
    if rng.random() < 0.08:  # a flower box
        for _ in range(int(rng.integers(4, 9))):
            _fill(img, _ellipse_points(rng.uniform(x0, x1), y1 - 0.05 * ppm, 0.14 * ppm, 0.12 * ppm, 8), _random_colour(rng))
    _draw_hood(img, style, x0, y0, x1, ppm)


def _draw_hood(img: np.ndarray, style: SceneStyle, x0: float, y0: float, x1: float, ppm: float) -> None:
    top = y0 - 0.16 * ppm
    if style.window_hood == "cornice":
        _rect(img, x0 - 0.2 * ppm, top - 0.2 * ppm, x1 + 0.2 * ppm, top, style.trim)
        _rect(img, x0 - 0.2 * ppm, top, x1 + 0.2 * ppm, top + 0.05 * ppm, _scaled(style.trim, 0.6))
    elif style.window_hood == "pediment":
        _fill(img, np.array([[x0 - 0.2 * ppm, top], [x1 + 0.2 * ppm, top], [(x0 + x1) / 2, top - 0.45 * ppm]]), style.trim)
    elif style.window_hood == "keystone":
        cx = (x0 + x1) / 2
        _fill(img, np.array([[cx - 0.14 * ppm, top - 0.25 * ppm], [cx + 0.14 * ppm, top - 0.25 * ppm],
                             [cx + 0.09 * ppm, top + 0.16 * ppm], [cx - 0.09 * ppm, top + 0.16 * ppm]]), style.trim)


def _draw_door(img: np.ndarray, rng: np.random.Generator, style: SceneStyle, cx: float, bottom: float, width: float,
               height: float, ppm: float, grand: bool) -> None:
    """The entrance: an arched or square door, maybe with a portico or canopy, steps and fanlight."""
    kind = int(rng.choice(3, p=(0.45, 0.3, 0.25) if grand else (0.5, 0.5, 0.0)))
    x0, x1, y0 = cx - width / 2, cx + width / 2, bottom - height
    leaf = _jitter(rng, style.accent if rng.random() < 0.5 else _pick(rng, _ACCENT), 20)
    surround = 0.3 * ppm
    if kind == 2:  # portico: two columns under an entablature and a pediment
        cw = 0.45 * ppm
        for a in (x0 - surround - cw, x1 + surround):
            _rect(img, a, y0 - 0.3 * ppm, a + cw, bottom, _scaled(style.trim, 1.05))
            _rect(img, a - 0.1 * ppm, y0 - 0.45 * ppm, a + cw + 0.1 * ppm, y0 - 0.3 * ppm, _scaled(style.trim, 0.85))
        top, reach = y0 - 0.45 * ppm, width / 2 + surround + cw
        _rect(img, cx - reach - 0.2 * ppm, top - 0.5 * ppm, cx + reach + 0.2 * ppm, top, style.trim)
        pediment = [[cx - reach - 0.3 * ppm, top - 0.5 * ppm], [cx + reach + 0.3 * ppm, top - 0.5 * ppm],
                    [cx, top - 0.5 * ppm - rng.uniform(0.25, 0.4) * width]]
        _fill(img, np.array(pediment), _scaled(style.trim, 0.95))
    openings, rect_top = _window_openings("arched" if kind == 0 else "rect", x0, y0, x1, bottom)
    _fill(img, [p + np.sign(p - p.mean(axis=0)) * surround for p in openings], style.trim)
    _fill(img, openings, _scaled(style.glass, 1.2) if kind == 0 else _scaled(leaf, 0.5))
    leaf_top = rect_top + (0.1 * height if kind == 0 else 0.0)
    if kind == 0:  # fanlight with radial glazing bars
        for a in np.linspace(math.pi, 2 * math.pi, int(rng.integers(4, 9))):
            rim = (int(cx + width / 2 * math.cos(a)), int(rect_top + width / 2 * math.sin(a)))
            cv2.line(img, (int(cx), int(rect_top)), rim, style.trim, max(1, int(0.05 * ppm)), cv2.LINE_AA)
        keystone = [[cx - 0.2 * ppm, y0 - surround], [cx + 0.2 * ppm, y0 - surround],
                    [cx + 0.13 * ppm, y0 + 0.35 * ppm], [cx - 0.13 * ppm, y0 + 0.35 * ppm]]
        _fill(img, np.array(keystone), _scaled(style.trim, 1.1))
    gap = max(1.0, 0.04 * ppm)
    for a, b in ((x0 + gap, cx - gap / 2), (cx + gap / 2, x1 - gap)):  # two leaves with sunk panels
        _rect(img, a, leaf_top, b, bottom, leaf)
        panels = int(rng.integers(2, 4))
        ph = (bottom - leaf_top) / panels
        for k in range(panels):
            inset = 0.18 * (b - a)
            _rect(img, a + inset, leaf_top + (k + 0.12) * ph, b - inset, leaf_top + (k + 0.88) * ph,
                  _scaled(leaf, rng.uniform(0.65, 0.85)))
    if kind == 1 and rng.random() < 0.6:  # a striped canopy
        stripe = _random_colour(rng)
        canopy = np.array([[x0 - surround, y0 - surround], [x1 + surround, y0 - surround],
                           [x1 + surround + 0.3 * ppm, y0 + 0.5 * ppm], [x0 - surround - 0.3 * ppm, y0 + 0.5 * ppm]])
        _fill(img, canopy, stripe)
        back, front = canopy[1] - canopy[0], canopy[2] - canopy[3]
        for k in range(0, 8, 2):
            f0, f1 = k / 8, (k + 1) / 8
            stripe_points = [canopy[0] + f0 * back, canopy[0] + f1 * back, canopy[3] + f1 * front, canopy[3] + f0 * front]
            _fill(img, np.array(stripe_points), (240, 240, 235))
    steps = int(rng.integers(1, 4))
    for k in range(steps):  # the lowest step is the widest
        extra = surround + (steps - k) * 0.25 * ppm
        _rect(img, x0 - extra, bottom - (k + 1) * 0.16 * ppm, x1 + extra, bottom - k * 0.16 * ppm,
              _scaled(style.trim, 0.9 + 0.05 * k))


# ============================================================================================
# Facades


@dataclass(frozen=True)
class _Grid:
    """Where a facade's bays and storeys lie, in texture pixels (storey 0 is the ground floor)."""

    ppm: float
    left: float  # x where the first bay starts
    bay: float
    storey: float
    wall_top: float  # y of the wall's top edge, under any gable or crenels
    attic_bottom: float  # y where the attic band ends and the highest storey starts
    ground_top: float
    bottom: float
    n_bays: int
    n_floors: int

    def bay_centre(self, i: int) -> float:
        return self.left + (i + 0.5) * self.bay

    def storey_span(self, k: int) -> tuple[float, float]:
        if k == 0:
            return self.ground_top, self.bottom
        return self.ground_top - k * self.storey, self.ground_top - (k - 1) * self.storey


def _facade_top(style: SceneStyle, role: str) -> str:
    """How a facade meets the sky; `role` is main, side (a wing or a tower's other face) or annex."""
    main = role == "main"
    if main and style.shape == "church":
        return "gable"
    if main and style.shape == "palace":
        return "pediment"
    if style.shape == "tower" and style.roof_kind == "pitched":
        return "none" if role == "annex" else "spire"  # a tower's two faces make a pyramid roof
    if style.shape == "gate" and main and style.roof_kind == "parapet":
        return "none"  # a balustrade would hide the inscription
    return {"crenel": "crenel", "parapet": "balustrade"}.get(style.roof_kind, "none")


def _paint_facade(rng: np.random.Generator, style: SceneStyle, n_bays: int, n_floors: int, role: str,
                  cap: int) -> tuple[np.ndarray, float, float, float]:
    """A facade texture (premultiplied RGBA), its width and height in metres, and its eaves height.

    `role`: main (the landmark's front, with its entrance), side (a wing) or annex (a low extension).
    """
    main = role == "main"
    gate = style.shape == "gate"
    ground_m = style.storey_m * (1.6 if gate else 1.3)
    attic_m = 2.6 if gate and main else {"parapet": 1.4, "crenel": 1.0, "flat": 1.0, "pitched": 0.7}[style.roof_kind]
    margin_m = style.bay_m * rng.uniform(0.45, 0.8)
    width = n_bays * style.bay_m + 2 * margin_m
    top = _facade_top(style, role)
    top_m = {"gable": 0.36 * width, "pediment": 0.3 * min(3, n_bays) * style.bay_m, "crenel": 1.0,
             "spire": 0.9 * width}.get(top, 0.0)
    height = ground_m + n_floors * style.storey_m + attic_m + top_m
    ppm = min(_MAX_PX_PER_M, cap / max(width, height))
    tw, th = max(8, round(width * ppm)), max(8, round(height * ppm))
    grid = _Grid(ppm, margin_m * ppm, style.bay_m * ppm, style.storey_m * ppm, top_m * ppm, (top_m + attic_m) * ppm,
                 th - ground_m * ppm, float(th), n_bays, n_floors)
    img = _paint_material(rng, style.material, style.wall, th, tw, ppm)
    alpha = np.full((th, tw), 255, np.uint8)
    if style.pilasters:
        _draw_pilasters(img, style, grid)
    _draw_cornices(img, rng, style, grid)
    door_bay = int(rng.integers(n_bays)) if (main or rng.random() < 0.4) and not gate else -1
    arch_bay = n_bays // 2 if gate and main else -1
    drips = _draw_window_grid(img, rng, style, grid, skip=(door_bay, arch_bay))
    if arch_bay >= 0:
        _cut_gate_arch(img, alpha, rng, style, grid, arch_bay)
    elif door_bay >= 0:
        span = grid.bottom - grid.ground_top
        _draw_door(img, rng, style, grid.bay_centre(door_bay), grid.bottom, min(0.72 * grid.bay, 2.8 * ppm),
                   min(0.72 * span, 4.0 * ppm), ppm, grand=main)
    _draw_facade_details(img, rng, style, grid, door_bay, main, attic_free=top != "balustrade")
    _shape_top(img, alpha, rng, style, grid, top)
    return _premultiplied(_weathered(img, rng, ppm, drips), alpha), width, height, height - top_m


def _draw_pilasters(img: np.ndarray, style: SceneStyle, grid: _Grid) -> None:
    half, capital = 0.225 * grid.ppm, 0.325 * grid.ppm
    colour = _mix(style.wall, style.trim, 0.35)
    for i in range(grid.n_bays + 1):
        x = grid.left + i * grid.bay
        _rect(img, x - half, grid.attic_bottom, x + half, grid.ground_top, colour)
        _rect(img, x - capital, grid.attic_bottom, x + capital, grid.attic_bottom + 0.3 * grid.ppm, style.trim)


def _draw_cornices(img: np.ndarray, rng: np.random.Generator, style: SceneStyle, grid: _Grid) -> None:
    """Horizontal mouldings: each a lit band with a shadow line beneath, the main one with dentils."""
    ppm, w = grid.ppm, img.shape[1]
    shadow = _scaled(style.wall, 0.55)
    if style.material in ("stone", "plaster") and rng.random() < 0.5:  # rusticated ground floor
        for y in np.arange(grid.ground_top + 0.45 * ppm, grid.bottom, 0.45 * ppm):
            _rect(img, 0, y, w, y + max(1.0, 0.05 * ppm), shadow)
    bands = [(grid.ground_top, 0.32), (grid.attic_bottom, 0.45), (grid.wall_top, 0.22)]
    if style.string_courses:
        bands += [(grid.storey_span(k)[0], 0.15) for k in range(1, grid.n_floors)]
    for y, thickness in bands:
        _rect(img, 0, y - thickness * ppm, w, y, style.trim)
        _rect(img, 0, y, w, y + max(1.0, 0.07 * ppm), shadow)
    for x in np.arange(0.1 * ppm, w, 0.32 * ppm):  # dentils under the main cornice
        _rect(img, x, grid.attic_bottom, x + 0.14 * ppm, grid.attic_bottom + 0.16 * ppm, _scaled(style.trim, 0.92))


def _draw_window_grid(img: np.ndarray, rng: np.random.Generator, style: SceneStyle, grid: _Grid,
                      skip: tuple[int, int]) -> list[tuple[float, float]]:
    """Every window (or, on gates, niche and relief); returns where rain streaks start."""
    drips = []
    ww = style.window_width * grid.bay
    for k in range(grid.n_floors + 1):
        top, bottom = grid.storey_span(k)
        wh = style.window_height * min(bottom - top, grid.storey * 1.15)
        y0 = top + (bottom - top - wh) * 0.55
        for i in range(grid.n_bays):
            if (k == 0 and i == skip[0]) or (k <= 1 and i == skip[1]):
                continue
            cx = grid.bay_centre(i)
            if style.shape == "gate":
                _draw_gate_bay(img, rng, style, cx - ww / 2, y0, cx + ww / 2, y0 + wh, statue=k == 0)
                continue
            _draw_window(img, rng, style, cx - ww / 2, y0, cx + ww / 2, y0 + wh, grid.ppm)
            if k > 0 and rng.random() < 0.12:
                reach = ww / 2 + 0.3 * grid.ppm
                _draw_balcony(img, rng, style, cx - reach, cx + reach, y0 + wh + 0.1 * grid.ppm, grid.ppm)
            if rng.random() < 0.25:
                drips.append((cx + rng.uniform(-0.5, 0.5) * ww, y0 + wh + 0.16 * grid.ppm))
    return drips


def _draw_balcony(img: np.ndarray, rng: np.random.Generator, style: SceneStyle, x0: float, x1: float, floor: float,
                  ppm: float) -> None:
    """A slab with a railing of crosses, circles or bars."""
    iron = _pick(rng, ((30, 30, 32), (44, 60, 48), (90, 70, 50), (200, 200, 196)))
    top = floor - 1.0 * ppm
    thickness = max(1, int(0.06 * ppm))
    _rect(img, x0, floor, x1, floor + 0.2 * ppm, _scaled(style.trim, 0.95))
    _rect(img, x0, floor + 0.2 * ppm, x1, floor + 0.26 * ppm, _scaled(style.wall, 0.5))
    cv2.line(img, (int(x0), int(top)), (int(x1), int(top)), iron, thickness + 1, cv2.LINE_AA)
    motif = int(rng.integers(3))
    step = rng.uniform(0.35, 0.6) * ppm
    for x in np.arange(x0, x1 - 0.5 * step, step):
        if motif == 0:
            cv2.line(img, (int(x), int(top)), (int(x + step), int(floor)), iron, thickness, cv2.LINE_AA)
            cv2.line(img, (int(x + step), int(top)), (int(x), int(floor)), iron, thickness, cv2.LINE_AA)
        elif motif == 1:
            cv2.circle(img, (int(x + step / 2), int((top + floor) / 2)), int(step / 2), iron, thickness, cv2.LINE_AA)
        else:
            cv2.line(img, (int(x), int(top)), (int(x), int(floor)), iron, thickness + 1, cv2.LINE_AA)


def _draw_wall_lamp(img: np.ndarray, x: float, y: float, ppm: float) -> None:
    cv2.line(img, (int(x), int(y)), (int(x + 0.5 * ppm), int(y)), (30, 30, 30), max(1, int(0.06 * ppm)), cv2.LINE_AA)
    lantern = np.array([[0.3, 0.0], [0.7, 0.0], [0.62, 0.6], [0.38, 0.6]]) * ppm + (x, y)
    _fill(img, lantern, (34, 34, 34))
    _fill(img, lantern + (lantern.mean(axis=0) - lantern) * 0.35, (236, 208, 130))  # its glass


def _draw_flag(img: np.ndarray, rng: np.random.Generator, x: float, y: float, ppm: float, side: int) -> None:
    """A flag on a slanted pole: bold stripes of random colours."""
    tip = (x + side * 1.4 * ppm, y - 1.0 * ppm)
    cv2.line(img, (int(x), int(y)), (int(tip[0]), int(tip[1])), (60, 60, 60), max(1, int(0.06 * ppm)), cv2.LINE_AA)
    fw, fh = 1.1 * ppm, 0.75 * ppm
    stripes = int(rng.integers(2, 4))
    vertical = rng.random() < 0.5
    for k in range(stripes):
        a, b = k / stripes, (k + 1) / stripes
        if vertical:
            _rect(img, tip[0] + side * fw * a, tip[1], tip[0] + side * fw * b, tip[1] + fh, _random_colour(rng))
        else:
            _rect(img, tip[0], tip[1] + fh * a, tip[0] + side * fw, tip[1] + fh * b, _random_colour(rng))


def _draw_gate_bay(img: np.ndarray, rng: np.random.Generator, style: SceneStyle, x0: float, y0: float, x1: float,
                   y1: float, statue: bool) -> None:
    """A triumphal arch has no windows: statues stand in niches, reliefs fill the panels above."""
    if not statue:
        _draw_relief(img, rng, x0, y0, x1, y1, style.trim)
        return
    openings, _ = _window_openings("arched", x0, y0, x1, y1)
    _fill(img, [p + np.sign(p - p.mean(axis=0)) * 2 for p in openings], style.trim)
    _fill(img, openings, _scaled(style.wall, 0.45))
    _draw_figure(img, None, rng, (x0 + x1) / 2, y1, 0.85 * (y1 - y0), _pick(rng, _BRONZE))


def _cut_gate_arch(img: np.ndarray, alpha: np.ndarray, rng: np.random.Generator, style: SceneStyle, grid: _Grid,
                   bay: int) -> None:
    """The passage through a gate: see-through (alpha 0) under a moulded arch with a keystone."""
    cx = grid.bay_centre(bay)
    width = 1.15 * grid.bay
    top = grid.storey_span(1)[0] + 0.25 * grid.storey
    openings, _ = _window_openings("arched", cx - width / 2, top, cx + width / 2, grid.bottom + 1)
    _fill(img, [p + np.sign(p - p.mean(axis=0)) * 0.45 * grid.ppm for p in openings], style.trim)
    _fill(alpha, openings, 0)
    _fill(img, np.array([[cx - 0.35 * grid.ppm, top - 0.6 * grid.ppm], [cx + 0.35 * grid.ppm, top - 0.6 * grid.ppm],
                         [cx + 0.22 * grid.ppm, top + 0.5 * grid.ppm], [cx - 0.22 * grid.ppm, top + 0.5 * grid.ppm]]),
          _scaled(style.trim, 1.1))
    for side in (-1, 1):  # star medallions in the spandrels
        _draw_star(img, rng, cx + side * 0.42 * width, top + 0.12 * width, 0.16 * width, _pick(rng, _BRONZE))


def _draw_facade_details(img: np.ndarray, rng: np.random.Generator, style: SceneStyle, grid: _Grid, door_bay: int,
                         main: bool, attic_free: bool) -> None:
    """Ornaments, signs and posters at random free spots: what makes this landmark itself."""
    ppm = grid.ppm
    attic_h = grid.attic_bottom - grid.wall_top
    if attic_free and style.shape == "gate" and main:  # the inscription across a triumphal arch's attic
        w = img.shape[1]
        _draw_plaque(img, rng, 0.18 * w, grid.wall_top + 0.2 * attic_h, 0.82 * w, grid.attic_bottom - 0.3 * attic_h,
                     _mix(style.trim, (255, 255, 255), 0.2), _scaled(style.accent, 0.45), lines=2)
    elif attic_free and main and rng.random() < 0.5:  # the building's name along the attic
        span = min(grid.n_bays, int(rng.integers(2, 4))) * grid.bay
        x0 = rng.uniform(grid.left, max(grid.left + 1, grid.left + grid.n_bays * grid.bay - span))
        _draw_plaque(img, rng, x0, grid.wall_top + 0.18 * attic_h, x0 + span, grid.attic_bottom - 0.3 * attic_h,
                     _jitter(rng, style.accent, 20), (240, 232, 210))
    elif attic_free:
        for i in range(grid.n_bays):
            if rng.random() < 0.45:
                r = min(0.36 * attic_h, 0.3 * grid.bay)
                _draw_ornament(img, rng, style, grid.bay_centre(i), grid.wall_top + 0.5 * attic_h, r)
    pier = (1.0 - style.window_width) * grid.bay
    for k in range(1, grid.n_floors + 1):
        top, bottom = grid.storey_span(k)
        for i in range(1, grid.n_bays):
            if rng.random() < 0.22:
                r = min(0.3 * pier, 0.22 * grid.storey, 0.7 * ppm)
                _draw_ornament(img, rng, style, grid.left + i * grid.bay, (top + bottom) / 2, r)
        for i in range(grid.n_bays):
            if rng.random() < 0.15:
                half = 0.5 * style.window_width * grid.bay
                below = (1 - style.window_height) * (bottom - top) * 0.45
                _draw_relief(img, rng, grid.bay_centre(i) - half, bottom - 0.85 * below, grid.bay_centre(i) + half,
                             bottom - 0.2 * below, style.wall)
    if door_bay >= 0 and rng.random() < 0.7:  # a sign above the entrance
        cx, y = grid.bay_centre(door_bay), grid.ground_top + 0.2 * ppm
        half = min(0.75 * grid.bay, 2.4 * ppm)
        _draw_plaque(img, rng, cx - half, y + 0.1 * ppm, cx + half, y + 0.75 * ppm, _jitter(rng, _pick(rng, _ACCENT), 20),
                     _pick(rng, ((240, 230, 200), (30, 30, 30), (210, 180, 80))))
    for i in range(grid.n_bays + 1):  # the street level collects posters, plaques and graffiti
        if rng.random() < 0.3:
            x = grid.left + i * grid.bay + rng.uniform(-0.15, 0.15) * grid.bay
            y = grid.ground_top + rng.uniform(0.3, 0.5) * (grid.bottom - grid.ground_top)
            half = min(0.3 * pier, 0.6 * ppm)
            kind = rng.random()
            if kind < 0.3:
                _draw_poster(img, rng, x - half, y, x + half, y + 2.6 * half)
            elif kind < 0.55:
                _draw_plaque(img, rng, x - half, y, x + half, y + 1.2 * half, (214, 200, 160), (40, 36, 30), lines=3)
            elif kind < 0.75:
                _draw_graffiti(img, rng, x - 2 * half, y + half, x + 2 * half, min(grid.bottom - 2, y + 3 * half))
            elif kind < 0.9:
                _draw_wall_lamp(img, x, grid.ground_top + 0.5 * ppm, ppm)
            else:
                _draw_flag(img, rng, x, grid.ground_top - 0.3 * ppm, ppm, 1 if rng.random() < 0.5 else -1)


def _shape_top(img: np.ndarray, alpha: np.ndarray, rng: np.random.Generator, style: SceneStyle, grid: _Grid,
               top: str) -> None:
    """The facade's skyline: a gable, a pediment, crenels or a balustrade (alpha cut-outs)."""
    ppm, w = grid.ppm, img.shape[1]
    edge = max(2, int(0.3 * ppm))
    if top == "spire":
        _draw_spire(img, alpha, style, grid.wall_top, ppm)
        if rng.random() < 0.6:
            _draw_clock(img, rng, w / 2, 0.68 * grid.wall_top, 0.12 * w, style)
    elif top in ("gable", "pediment"):
        half = w / 2 if top == "gable" else min(3, grid.n_bays) * grid.bay / 2 + 0.4 * ppm
        cx, base = w / 2, grid.wall_top
        triangle = np.array([[cx - half, base], [cx, 0.0], [cx + half, base]])
        alpha[: int(base)] = 0
        _fill(alpha, triangle, 255)
        cv2.polylines(img, [triangle.astype(np.int32)], False, style.trim, edge, cv2.LINE_AA)
        r = 0.3 * base
        if top == "gable" and rng.random() < 0.6:  # a rose window
            _draw_rosette(img, rng, cx, 0.62 * base, r, style.trim, _scaled(style.glass, 1.3))
        else:
            _draw_ornament(img, rng, style, cx, 0.62 * base, r)
    elif top == "crenel":
        merlon = rng.uniform(0.7, 1.0) * ppm
        for x in np.arange(merlon, w, 2 * merlon):
            alpha[: int(grid.wall_top), int(x): int(x + merlon)] = 0
    elif top == "balustrade":
        y0, y1 = grid.wall_top + 0.25 * ppm, grid.attic_bottom - 0.35 * ppm
        _rect(img, 0, grid.wall_top, w, grid.attic_bottom, style.trim)
        step, post = 0.34 * ppm, max(1.0, 0.14 * ppm)
        for x in np.arange(0.0, w - step, step):
            _rect(alpha, x + post, y0, x + step, y1, 0)
            _rect(img, x, y0, x + post, y1, _scaled(style.trim, 0.85))
        for i in range(grid.n_bays + 1):  # solid pedestals over the piers, some carrying urns
            x = grid.left + i * grid.bay
            _rect(alpha, x - 0.3 * ppm, y0, x + 0.3 * ppm, y1, 255)
            _rect(img, x - 0.3 * ppm, y0, x + 0.3 * ppm, y1, _scaled(style.trim, 1.05))
            if rng.random() < 0.4:
                _fill(img, _ellipse_points(x, y0 + 0.1 * ppm, 0.25 * ppm, 0.3 * ppm, 12), _scaled(style.trim, 0.8))


def _draw_spire(img: np.ndarray, alpha: np.ndarray, style: SceneStyle, base: float, ppm: float) -> None:
    """A slated triangle over the full width, from y = base up to the top edge (one face of a pyramid roof)."""
    w = img.shape[1]
    triangle = np.array([[0.0, base], [w / 2, 0.0], [float(w), base]])
    alpha[: int(base)] = 0
    _fill(alpha, triangle, 255)
    _fill(img, triangle, style.roof)
    for y in np.arange(0.5 * ppm, base, 0.38 * ppm):  # rows of slates
        cv2.line(img, (0, int(y)), (w, int(y)), _scaled(style.roof, 0.7), 1)


def _weathered(img: np.ndarray, rng: np.random.Generator, ppm: float, drips: list[tuple[float, float]]) -> np.ndarray:
    """Stains, rain streaks under sills and rising damp: irregular, so every landmark weathers differently."""
    h, w = img.shape[:2]
    # water stains and soot have fairly sharp edges: a steep ramp of smooth noise
    dirt = np.clip((_smooth_noise(rng, h, w, 2.5 * ppm) - rng.uniform(0.3, 0.55)) * 5.0, 0.0, 1.0) * rng.uniform(0.06, 0.16)
    streaks = np.zeros((h, w), np.float32)
    for x, y in drips:
        half, length = rng.uniform(0.05, 0.15) * ppm, rng.uniform(1.0, 3.0) * ppm
        cv2.rectangle(streaks, (int(x - half), int(y)), (int(x + half) + 1, int(y + length)), rng.uniform(0.08, 0.22), -1)
    streaks = cv2.GaussianBlur(streaks, (0, 0), sigmaX=0.1 * ppm + 0.5, sigmaY=0.5 * ppm)
    damp_top = h - rng.uniform(0.3, 0.9) * ppm
    damp = np.clip((np.arange(h, dtype=np.float32) - damp_top) / (0.3 * ppm), 0, 1)[:, None] * rng.uniform(0.05, 0.15)
    factor = 1.0 - dirt - streaks - damp
    return np.clip(img * factor[..., None], 0, 255).astype(np.uint8)


# ============================================================================================
# Towers, roofs, monuments, ground


def _paint_tower(rng: np.random.Generator, style: SceneStyle, width_m: float, body_m: float,
                 cap: int) -> tuple[np.ndarray, float]:
    """A bell tower: storeys of narrow windows, a clock, a louvred belfry and a crown; and its height."""
    crown = {"pitched": "spire", "crenel": "crenel"}.get(style.roof_kind, ("spire", "dome")[int(rng.integers(2))])
    crown_m = {"spire": width_m * rng.uniform(1.3, 2.2), "crenel": 1.0, "dome": width_m * 0.6}[crown]
    height = body_m + crown_m
    ppm = min(_MAX_PX_PER_M, cap / height)
    tw, th = max(8, round(width_m * ppm)), max(8, round(height * ppm))
    img = _paint_material(rng, style.material, style.wall, th, tw, ppm)
    alpha = np.full((th, tw), 255, np.uint8)
    body_top = crown_m * ppm
    storey = style.storey_m * ppm
    levels = max(2, int((th - body_top) / storey))
    for k in range(levels):
        top = body_top + k * storey
        _rect(img, 0, top - 0.2 * ppm, tw, top, style.trim)
        if k == 0:  # belfry: tall louvred openings
            pairs = 2 if tw > 5 * ppm else 1
            slot = tw / pairs
            for j in range(pairs):
                x0, x1 = j * slot + 0.25 * slot, (j + 1) * slot - 0.25 * slot
                openings, rect_top = _window_openings("arched", x0, top + 0.12 * storey, x1, top + 0.9 * storey)
                _fill(img, openings, (28, 26, 26))
                for y in np.arange(rect_top, top + 0.9 * storey, 0.22 * ppm):
                    cv2.line(img, (int(x0), int(y)), (int(x1), int(y)), _scaled(style.roof, 0.8), max(1, int(0.06 * ppm)))
        elif k == 1 and rng.random() < 0.75:
            _draw_clock(img, rng, tw / 2, top + storey / 2, min(0.3 * tw, 0.42 * storey), style)
        elif rng.random() < 0.75:
            ww = min(0.3 * tw, 1.2 * ppm)
            _draw_window(img, rng, style, tw / 2 - ww / 2, top + 0.2 * storey, tw / 2 + ww / 2, top + 0.8 * storey, ppm)
        elif rng.random() < 0.5:
            _draw_ornament(img, rng, style, tw / 2, top + storey / 2, min(0.3 * tw, 0.3 * storey))
    if crown == "spire":
        _draw_spire(img, alpha, style, body_top, ppm)
    elif crown == "dome":
        alpha[: int(body_top)] = 0
        dome = _ellipse_points(tw / 2, body_top, 0.48 * tw, body_top * 0.85, 32)
        dome = dome[dome[:, 1] <= body_top]
        _fill(alpha, dome, 255)
        _fill(img, dome, style.roof)
        for x in np.linspace(0.15 * tw, 0.85 * tw, 5):  # ribs
            cv2.line(img, (int(tw / 2), int(0.2 * body_top)), (int(x), int(body_top)), _scaled(style.roof, 1.3), 1,
                     cv2.LINE_AA)
        _rect(alpha, tw / 2 - 0.06 * tw, 0, tw / 2 + 0.06 * tw, body_top, 255)  # lantern finial
        _rect(img, tw / 2 - 0.06 * tw, 0, tw / 2 + 0.06 * tw, 0.2 * body_top, style.trim)
    else:
        merlon = 0.8 * ppm
        for x in np.arange(merlon, tw, 2 * merlon):
            alpha[: int(body_top), int(x): int(x + merlon)] = 0
    return _premultiplied(_weathered(img, rng, ppm, []), alpha), height


def _paint_roof(rng: np.random.Generator, style: SceneStyle, width_m: float, slope_m: float, cap: int) -> np.ndarray:
    """A tiled roof slope with dormers (premultiplied RGBA); hipped roofs are trapezoids."""
    ppm = min(_MAX_PX_PER_M, cap / max(width_m, slope_m))
    tw, th = max(8, round(width_m * ppm)), max(8, round(slope_m * ppm))
    shade, joints = _block_pattern(rng, th, tw, 0.45 * ppm, 0.32 * ppm, max(0.7, 0.05 * ppm), irregular=False)
    tone = 1.0 + 0.12 * shade + 0.08 * _fractal_noise(rng, th, tw, 2.0 * ppm)
    tone[joints] *= 0.62
    img = np.clip(np.asarray(style.roof, np.float32) * tone[..., None], 0, 255).astype(np.uint8)
    alpha = np.full((th, tw), 255, np.uint8)
    hip = slope_m * ppm * rng.uniform(0.6, 1.0) if rng.random() < 0.5 else 0.0
    if hip:
        alpha[:] = 0
        _fill(alpha, np.array([[hip, 0.0], [tw - hip, 0.0], [float(tw), float(th)], [0.0, float(th)]]), 255)
    for _ in range(int(rng.integers(0, 4))):  # dormers
        dw, dh = 1.3 * ppm, 1.5 * ppm
        x = rng.uniform(hip + dw, max(hip + dw + 1, tw - hip - dw))
        y = rng.uniform(0.45, 0.75) * th
        _rect(img, x - dw / 2, y - dh / 2, x + dw / 2, y + dh / 2, style.wall)
        _rect(img, x - 0.3 * dw, y - 0.25 * dh, x + 0.3 * dw, y + 0.4 * dh, style.glass)
        gable = np.array([[x - 0.65 * dw, y - dh / 2], [x + 0.65 * dw, y - dh / 2], [x, y - dh]])
        _fill(img, gable, _scaled(style.roof, 0.85))
    return _premultiplied(_weathered(img, rng, ppm, []), alpha)


def _paint_monument(rng: np.random.Generator, style: SceneStyle, cap: int) -> tuple[np.ndarray, float, float]:
    """A free-standing statue, sign, obelisk or column (premultiplied RGBA) and its size in metres."""
    kind = int(rng.choice(4, p=(0.35, 0.3, 0.15, 0.2)))
    width, height = [(3.2, rng.uniform(5.5, 8.0)), (rng.uniform(3.5, 5.0), rng.uniform(2.6, 3.4)),
                     (rng.uniform(1.8, 2.6), rng.uniform(9.0, 14.0)), (2.6, rng.uniform(10.0, 14.0))][kind]
    ppm = min(_MAX_PX_PER_M * 1.5, cap / 2 / max(width, height))
    tw, th = max(8, round(width * ppm)), max(8, round(height * ppm))
    stone = _jitter(rng, style.trim if rng.random() < 0.6 else _pick(rng, _WALL_COLOURS["stone"]), 10)
    img = _paint_material(rng, "stone", stone, th, tw, ppm)
    alpha = np.zeros((th, tw), np.uint8)
    bronze = _jitter(rng, _pick(rng, _BRONZE), 12)

    def solid(x0: float, y0: float, x1: float, y1: float, colour: Colour | None = None) -> None:
        _rect(alpha, x0, y0, x1, y1, 255)
        if colour is not None:
            _rect(img, x0, y0, x1, y1, colour)

    if kind == 0:  # statue on a pedestal with an inscription
        base = 0.42 * th
        solid(0.12 * tw, th - base, 0.88 * tw, th)
        solid(0.06 * tw, th - base - 0.1 * ppm, 0.94 * tw, th - base + 0.2 * ppm, _scaled(stone, 1.08))
        _draw_plaque(img, rng, 0.22 * tw, th - 0.8 * base, 0.78 * tw, th - 0.45 * base, _scaled(bronze, 1.1),
                     _scaled(bronze, 0.45), lines=2)
        _draw_figure(img, alpha, rng, tw / 2, th - base, 0.95 * (th - base), bronze)
    elif kind == 1:  # a sign on two posts
        board_bottom = th * rng.uniform(0.35, 0.5)
        for x in (0.15 * tw, 0.8 * tw):
            solid(x, th - board_bottom, x + 0.05 * tw, th, (60, 60, 62))
        solid(0, 0, tw, th - board_bottom)
        _draw_plaque(img, rng, 0.03 * tw, 0.04 * th, 0.97 * tw, th - board_bottom - 0.04 * th,
                     _jitter(rng, _pick(rng, _ACCENT), 25), (236, 232, 220), lines=int(rng.integers(2, 4)))
        _draw_emblem(img, rng, 0.12 * tw, 0.28 * (th - board_bottom), 0.08 * tw, style)
    elif kind == 2:  # an obelisk carved with glyphs
        base = 0.12 * th
        solid(0, th - base, tw, th)
        shaft = np.array([[0.18 * tw, th - base], [0.82 * tw, th - base], [0.66 * tw, 0.08 * th], [0.5 * tw, 0.0],
                          [0.34 * tw, 0.08 * th]])
        _fill(alpha, shaft, 255)
        font = _FONTS[int(rng.integers(len(_FONTS)))]
        glyph_h = 0.16 * tw
        for y in np.arange(0.14 * th, th - base - glyph_h, 1.6 * glyph_h):
            letter = str(_GLYPHS[int(rng.integers(len(_GLYPHS)))])
            cv2.putText(img, letter, (int(0.42 * tw), int(y + glyph_h)), font, glyph_h / 22, _scaled(stone, 0.55),
                        max(1, int(glyph_h / 8)), cv2.LINE_AA)
    else:  # a column carrying a statue
        base = 0.14 * th
        solid(0.05 * tw, th - base, 0.95 * tw, th)
        solid(0.3 * tw, 0.2 * th, 0.7 * tw, th - base)
        for x in np.linspace(0.34 * tw, 0.66 * tw, 5):  # fluting
            cv2.line(img, (int(x), int(0.22 * th)), (int(x), int(th - base)), _scaled(stone, 0.75), max(1, int(0.02 * tw)))
        solid(0.2 * tw, 0.18 * th, 0.8 * tw, 0.22 * th, _scaled(stone, 1.1))
        _draw_figure(img, alpha, rng, tw / 2, 0.18 * th, 0.17 * th, bronze)
    return _premultiplied(img, alpha), width, height


def _paint_ground(rng: np.random.Generator, size: int) -> tuple[np.ndarray, float]:
    """The square in front of the landmark (RGBA, tiled by mirroring) and metres per texel."""
    metres_per_texel = 0.06
    ppm = 1.0 / metres_per_texel
    kind = int(rng.choice(4, p=(0.4, 0.25, 0.2, 0.15)))
    if kind == 0:  # stone slabs
        tone_colour = _pick(rng, ((170, 166, 158), (186, 176, 156), (150, 150, 150)))
        shade, joints = _block_pattern(rng, size, size, rng.uniform(0.9, 1.6) * ppm, rng.uniform(0.9, 1.6) * ppm, 1.0, False)
        tone = 1.0 + 0.08 * shade
    elif kind == 1:  # cobbles
        tone_colour = _pick(rng, ((128, 124, 120), (150, 136, 118)))
        shade, joints = _block_pattern(rng, size, size, 0.24 * ppm, 0.2 * ppm, 1.0, True)
        tone = 1.0 + 0.18 * shade
    elif kind == 2:  # asphalt
        tone_colour, joints = (92, 92, 96), None
        tone = 1.0 + 0.06 * _fractal_noise(rng, size, size, 40.0)
    else:  # lawn
        tone_colour, joints = _pick(rng, ((86, 122, 58), (104, 132, 66))), None
        tone = 1.0 + 0.2 * _fractal_noise(rng, size, size, 24.0)
    tone = tone + 0.06 * (rng.random((size, size), dtype=np.float32) * 2 - 1)
    if joints is not None:
        tone[joints] *= 0.7
    rgb = np.clip(np.asarray(_jitter(rng, tone_colour, 10), np.float32) * tone[..., None], 0, 255).astype(np.uint8)
    return np.dstack([rgb, np.full((size, size), 255, np.uint8)]), metres_per_texel


# ============================================================================================
# Scenes
#
# World coordinates in metres, like an OpenCV camera looking at the main facade: x to the
# right, y DOWN (the ground is y = 0, roofs have y < 0), z away from the usual viewpoint.
# The main facade stands in the plane z = 0, centred on x = 0, facing -z.


@dataclass(frozen=True, eq=False)
class _Plane:
    """A textured planar polygon: texel (u, v) of mip level 0 lies at origin + u*u_axis + v*v_axis."""

    origin: np.ndarray
    u_axis: np.ndarray
    v_axis: np.ndarray
    mips: tuple[np.ndarray, ...]  # premultiplied RGBA, halved level by level
    two_sided: bool  # seen from behind, it shows the same picture (the wing's other side)
    corners: np.ndarray  # (4, 3)
    normal: np.ndarray  # unit, out of the textured side


def _make_plane(origin: np.ndarray, u_end: np.ndarray, v_end: np.ndarray, rgba: np.ndarray,
                two_sided: bool = False) -> _Plane:
    """The texture's top row runs from `origin` to `u_end`, its left column from `origin` to `v_end`."""
    th, tw = rgba.shape[:2]
    u_axis, v_axis = (u_end - origin) / tw, (v_end - origin) / th
    corners = np.array([origin, origin + tw * u_axis, origin + tw * u_axis + th * v_axis, origin + th * v_axis])
    normal = np.cross(v_axis, u_axis)
    return _Plane(origin, u_axis, v_axis, _mip_chain(rgba), two_sided, corners, normal / np.linalg.norm(normal))


def _wall(a: np.ndarray, b: np.ndarray, height: float, rgba: np.ndarray, bottom: float = 0.0,
          two_sided: bool = False) -> _Plane:
    """A vertical wall on the ground segment a -> b (left to right as seen from its front)."""
    up = np.array([0.0, bottom - height, 0.0])
    return _make_plane(a + up, b + up, a + np.array([0.0, bottom, 0.0]), rgba, two_sided)


@dataclass(frozen=True, eq=False)
class LandmarkScene:
    """A landmark: textured planes in 3-D (metres), plus the paving they stand on."""

    style: SceneStyle
    planes: tuple[_Plane, ...]
    ground: tuple[np.ndarray, ...]  # mip chain of the paving texture
    ground_metres_per_texel: float
    centre: np.ndarray  # middle of the landmark's bounding box
    size: np.ndarray  # the bounding box's extent along x, y, z


def make_landmark(rng: np.random.Generator, style: SceneStyle | None = None) -> LandmarkScene:
    """A landmark of `style` (a fresh style when None), with details of its own."""
    return _build_landmark(rng, make_style(rng) if style is None else style, _TEXTURE_CAP)


def _build_landmark(rng: np.random.Generator, style: SceneStyle, cap: int) -> LandmarkScene:
    gate = style.shape == "gate"
    n_bays = style.bays if gate else max(2, style.bays + int(rng.integers(-1, 2)))
    n_floors = style.floors if gate else max(1, style.floors + int(rng.integers(-1, 2)))
    facade, width, height, eaves = _paint_facade(rng, style, n_bays, n_floors, "main", cap)
    left, right = np.array([-width / 2, 0.0, 0.0]), np.array([width / 2, 0.0, 0.0])
    planes = [_wall(left, right, height, facade)]
    planes += _wings(rng, style, n_bays, n_floors, left, right, cap)
    if style.shape in ("church", "hall", "palace") and (style.shape == "church" or rng.random() < 0.25):
        planes.append(_tower(rng, style, width, eaves, cap))
    if style.roof_kind == "pitched" and style.shape in ("hall", "palace"):
        planes.append(_roof(rng, style, width, eaves, cap))
    if rng.random() < 0.55:
        planes.append(_monument(rng, style, width, cap))
    ground, metres_per_texel = _paint_ground(rng, 256 if cap >= _TEXTURE_CAP else 128)
    corners = np.concatenate([p.corners for p in planes])
    low, high = corners.min(axis=0), corners.max(axis=0)
    return LandmarkScene(style, tuple(planes), _mip_chain(ground), metres_per_texel, (low + high) / 2, high - low)


def _wings(rng: np.random.Generator, style: SceneStyle, n_bays: int, n_floors: int, left: np.ndarray,
           right: np.ndarray, cap: int) -> list[_Plane]:
    """Side wings sharing an edge with the main facade: receding (a box corner) or coming forward (an L)."""
    side = int(rng.choice((-1, 1)))
    if style.shape == "palace":  # a courtyard between two forward wings
        layout = [(-1, True, n_floors, "side"), (1, True, n_floors, "side")]
    elif style.shape == "tower":  # the tower's side face, and a low annex on the other side
        layout = [(side, False, n_floors, "side"), (-side, True, max(1, n_floors // 3), "annex")]
    else:
        layout = [(side, style.shape == "hall" and rng.random() < 0.4, n_floors, "side")]
    wings = []
    for side, forward, floors, role in layout:
        if style.shape in ("tower", "gate", "church") and not forward:
            turn = 90.0 + rng.uniform(-15, 15)
        else:
            turn = float(np.clip(style.wing_turn_deg + rng.uniform(-12, 12), 45.0, 100.0 if forward else 120.0))
        if style.shape == "gate":
            bays = 1  # the arch's depth
        elif style.shape == "tower" and role == "side":
            bays = n_bays
        else:
            bays = int(rng.integers(2, 5))
        rgba, width, height, _ = _paint_facade(rng, style, bays, floors, role, cap)
        t = math.radians(turn)
        direction = np.array([side * math.cos(t), 0.0, -math.sin(t) if forward else math.sin(t)])
        edge = right if side > 0 else left
        far = edge + width * direction
        a, b = (edge, far) if side > 0 else (far, edge)
        wings.append(_wall(a, b, height, rgba, two_sided=forward))
    return wings


def _tower(rng: np.random.Generator, style: SceneStyle, facade_width: float, eaves: float, cap: int) -> _Plane:
    """A tower rising behind the facade (its foot hidden by it), centred or over one end."""
    width = rng.uniform(4.5, 7.0)
    rgba, height = _paint_tower(rng, style, width, eaves * rng.uniform(0.9, 1.5), cap)
    x = (0.0, -1.0, 1.0)[int(rng.integers(3))] * (facade_width - width) / 2
    z = rng.uniform(1.0, 4.0)
    bottom = -0.4 * eaves
    return _wall(np.array([x - width / 2, 0.0, z]), np.array([x + width / 2, 0.0, z]), height, rgba, bottom=bottom)


def _roof(rng: np.random.Generator, style: SceneStyle, width: float, eaves: float, cap: int) -> _Plane:
    """The front slope of a pitched roof, from the eaves up and back to the ridge."""
    pitch = math.radians(rng.uniform(35, 55))
    run = min(8.0, 0.3 * width)
    rise = run * math.tan(pitch)
    rgba = _paint_roof(rng, style, width, math.hypot(run, rise), cap)
    ridge_left = np.array([-width / 2, -eaves - rise, run])
    return _make_plane(ridge_left, ridge_left + np.array([width, 0.0, 0.0]), np.array([-width / 2, -eaves, 0.0]), rgba)


def _monument(rng: np.random.Generator, style: SceneStyle, facade_width: float, cap: int) -> _Plane:
    """A statue, sign, obelisk or column standing in front of the facade, roughly facing the square."""
    rgba, width, height = _paint_monument(rng, style, cap)
    centre = np.array([rng.uniform(-0.3, 0.3) * facade_width, 0.0, -rng.uniform(4.0, 9.0)])
    yaw = rng.uniform(-0.3, 0.3)
    half = 0.5 * width * np.array([math.cos(yaw), 0.0, math.sin(yaw)])
    return _wall(centre - half, centre + half, height, rgba)


# ============================================================================================
# Photographs


@dataclass(frozen=True)
class _Camera:
    K: np.ndarray  # intrinsics
    R: np.ndarray  # world -> camera rotation (camera: x right, y down, z forward)
    C: np.ndarray  # centre, world
    width: int
    height: int

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        return (points - self.C) @ self.R.T

    def project(self, points: np.ndarray) -> np.ndarray:
        p = self.to_camera(points) @ self.K.T
        return p[:, :2] / p[:, 2:3]


@dataclass(frozen=True)
class _Light:
    sun: np.ndarray  # unit vector towards the sun
    direct: np.ndarray  # RGB gain added on surfaces facing the sun
    ambient: np.ndarray  # RGB gain of every surface
    zenith: np.ndarray  # sky colours
    horizon: np.ndarray
    clouds: float  # cloud cover, 0..1
    visibility: float  # metres: how fast distant things fade into the haze (the horizon colour)


def render_photo(scene: LandmarkScene, rng: np.random.Generator, long_side: int = 256) -> np.ndarray:
    """One photograph of the landmark: HxWx3 uint8 RGB with max(H, W) == long_side."""
    h, w = _sample_frame(rng, long_side)
    return _photograph(scene, rng, h, w)


def _sample_frame(rng: np.random.Generator, long_side: int) -> tuple[int, int]:
    a, b = _ASPECTS[int(rng.choice(len(_ASPECTS), p=_ASPECT_P))]
    short = max(1, int(round(long_side * min(a, b) / max(a, b))))
    return (short, long_side) if a >= b else (long_side, short)


def _photograph(scene: LandmarkScene, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    camera = _sample_camera(scene, rng, h, w)
    light = _sample_light(rng)
    canvas = _background(scene, camera, light, rng)
    zbuf = np.zeros((h, w), np.float32)  # inverse depth; 0 = infinitely far
    for plane in sorted(scene.planes, key=lambda p: -float(np.linalg.norm(p.corners.mean(axis=0) - camera.C))):
        _draw_plane(canvas, zbuf, plane, camera, light)
    _light_falloff(canvas, rng, zbuf > 0)
    img = np.clip(canvas, 0, 255).astype(np.uint8)
    _draw_occluders(img, zbuf, scene, camera, light, rng)
    return _camera_response(img, rng)


def _look_at(eye: np.ndarray, target: np.ndarray, roll: float) -> np.ndarray:
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(np.array([0.0, 1.0, 0.0]), forward)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    c, s = math.cos(roll), math.sin(roll)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.stack([right, down, forward])


def _sample_camera(scene: LandmarkScene, rng: np.random.Generator, h: int, w: int) -> _Camera:
    """A tourist's viewpoint: around the front (yaw), mostly at eye level, at varied zoom and framing."""
    long_side = max(h, w)
    fov = math.radians(rng.uniform(45.0, 78.0))
    focal = long_side / 2 / math.tan(fov / 2)
    cx, cy = w / 2 + rng.normal(0, 0.01 * w), h / 2 + rng.normal(0, 0.01 * h)
    K = np.array([[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]])
    # within +-35 degrees of the front, most often near it (as tourists stand)
    yaw = math.radians(35.0 * (2.0 * rng.beta(2.0, 2.0) - 1.0))
    eye_height = rng.uniform(4.0, 0.6 * float(scene.size[1]) + 4.0) if rng.random() < 0.12 else rng.uniform(1.3, 1.9)
    # the landmark fills this share of the frame along its tighter dimension; > 1 crops it
    apparent = rng.uniform(0.65, 1.25)
    distance = focal / apparent * max(float(scene.size[0]) / w, float(scene.size[1]) / h)
    target = scene.centre + scene.size * np.array([rng.uniform(-0.22, 0.22), rng.uniform(-0.2, 0.2), 0.0])
    # nobody photographs a facade from its foot: step back until the view is tilted by at most ~32 degrees
    distance = max(distance, abs(-target[1] - eye_height) / math.tan(math.radians(32.0)))
    roll = math.radians(rng.uniform(-15, 15) if rng.random() < 0.3 else rng.normal(0, 2.5))
    corners = np.concatenate([p.corners for p in scene.planes])
    for _ in range(8):  # step back until every plane is in front of the camera
        eye = np.array([scene.centre[0] + distance * math.sin(yaw), -eye_height, scene.centre[2] - distance * math.cos(yaw)])
        R = _look_at(eye, target, roll)
        if ((corners - eye) @ R[2]).min() > _NEAR_M:
            break
        distance *= 1.3
    return _Camera(K, R, eye, w, h)


def _sample_light(rng: np.random.Generator) -> _Light:
    weather = int(rng.choice(4, p=(0.45, 0.2, 0.25, 0.1)))  # clear, hazy, overcast, golden hour
    elevation = rng.uniform(0.08, 0.25) if weather == 3 else rng.uniform(0.25, 1.1)
    azimuth = rng.uniform(0, 2 * math.pi)
    sun = np.array([math.cos(elevation) * math.sin(azimuth), -math.sin(elevation), math.cos(elevation) * math.cos(azimuth)])
    zenith, horizon, direct, ambient, clouds, visibility = [
        ((70, 120, 196), (186, 206, 228), (0.55,) * 3, (0.62,) * 3, rng.uniform(0.0, 0.5), rng.uniform(2000, 6000)),
        ((140, 164, 194), (212, 218, 224), (0.3,) * 3, (0.78,) * 3, rng.uniform(0.1, 0.6), rng.uniform(500, 1500)),
        ((166, 170, 178), (206, 208, 212), (0.08,) * 3, (0.95,) * 3, rng.uniform(0.8, 1.0), rng.uniform(800, 3000)),
        ((84, 110, 168), (236, 190, 142), (0.78, 0.58, 0.38), (0.55, 0.52, 0.58), rng.uniform(0.0, 0.4),
         rng.uniform(1500, 4000)),
    ][weather]
    return _Light(sun, np.array(direct, np.float32), np.array(ambient, np.float32),
                  np.array(_jitter(rng, zenith, 12), np.float32), np.array(_jitter(rng, horizon, 10), np.float32),
                  float(clouds), float(visibility))


def _elevation(camera: _Camera, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Sine of the elevation above the horizon of the rays through pixel columns xs and rows ys."""
    K, R = camera.K, camera.R
    qx = ((xs.astype(np.float32) - K[0, 2]) / K[0, 0])[None, :]
    qy = ((ys.astype(np.float32) - K[1, 2]) / K[1, 1])[:, None]
    down = R[0, 1] * qx + R[1, 1] * qy + R[2, 1]  # world y (pointing down) of the ray R^T q
    return (-down / np.sqrt(qx * qx + qy * qy + 1.0)).astype(np.float32)


def _background(scene: LandmarkScene, camera: _Camera, light: _Light, rng: np.random.Generator) -> np.ndarray:
    """The canvas (float32 RGB) behind the landmark: sky with clouds, a far skyline, paving fading into haze."""
    h, w = camera.height, camera.width
    # smooth things (sky gradient, clouds, fog) are computed on a 4x coarser grid and enlarged
    coarse_h, coarse_w = (h + 3) // 4, (w + 3) // 4
    coarse = _elevation(camera, np.arange(coarse_w) * 4 + 1.5, np.arange(coarse_h) * 4 + 1.5)
    sky = light.horizon + np.sqrt(np.clip(coarse, 0.0, 1.0))[..., None] * (light.zenith - light.horizon)
    cover = _smooth_noise(rng, coarse_h, coarse_w, coarse_w / 5, 0.5)
    cover += 0.5 * _smooth_noise(rng, coarse_h, coarse_w, coarse_w / 14, 0.5)
    cloud = np.clip((cover - (1.0 - 2.0 * light.clouds)) * 1.5, 0.0, 1.0) * np.clip(coarse * 8, 0.0, 1.0)
    cloud_colour = light.horizon * 0.6 + 100.0 if light.clouds > 0.75 else np.array([244, 245, 247], np.float32)
    sky += cloud[..., None] * (cloud_colour - sky)
    eye_height = -float(camera.C[1])
    fog = 1.0 - np.exp(-eye_height / np.maximum(-coarse, 1e-4) / 400.0)
    enlarged = cv2.resize(np.dstack([sky, fog]).astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    canvas = np.ascontiguousarray(enlarged[..., :3])
    sin_elev = _elevation(camera, np.arange(w), np.arange(h))  # exact, for a crisp horizon
    below = sin_elev < 0
    if below.any():
        paving = _warp_ground(scene, camera) * (light.ambient + light.direct * max(0.0, -float(light.sun[1])))
        paving += enlarged[..., 3:] * (light.horizon - paving)
        np.copyto(canvas, paving, where=below[..., None])
    _draw_skyline(canvas, camera, light, rng, sin_elev)
    return canvas


def _warp_ground(scene: LandmarkScene, camera: _Camera) -> np.ndarray:
    """The paving (y = 0) as the camera sees it, mirrored beyond its texture, as float32 RGB."""
    g = scene.ground_metres_per_texel
    size = scene.ground[0].shape[0]
    x0, z0 = scene.centre[0] - size * g / 2, scene.centre[2] - size * g / 2
    H = camera.K @ camera.R @ np.array([[g, 0.0, x0 - camera.C[0]], [0.0, 0.0, -camera.C[1]], [0.0, g, z0 - camera.C[2]]])
    distance = float(np.linalg.norm(scene.centre[[0, 2]] - camera.C[[0, 2]]))
    level = int(np.clip(math.floor(math.log2(max(distance / (camera.K[0, 0] * g), 1.0))), 0, len(scene.ground) - 1))
    H = H @ np.diag([2.0 ** level, 2.0 ** level, 1.0])
    warped = cv2.warpPerspective(scene.ground[level], H, (camera.width, camera.height), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REFLECT)
    return warped[..., :3].astype(np.float32)


def _draw_skyline(canvas: np.ndarray, camera: _Camera, light: _Light, rng: np.random.Generator,
                  sin_elev: np.ndarray) -> None:
    """Far trees or roofs: a bumpy band over the horizon, fixed along the azimuth, faded by haze."""
    band = (sin_elev > -0.01) & (sin_elev < 0.06)
    if not band.any():
        return
    K, R = camera.K, camera.R
    ys, xs = np.nonzero(band)
    qx, qy = (xs - K[0, 2]) / K[0, 0], (ys - K[1, 2]) / K[1, 1]
    azimuth = np.arctan2(R[0, 0] * qx + R[1, 0] * qy + R[2, 0], R[0, 2] * qx + R[1, 2] * qy + R[2, 2])
    knots = int(rng.integers(40, 160))
    heights = rng.uniform(0.005, 0.04, knots + 1)
    if rng.random() < 0.5:  # flat-topped roofs rather than round tree tops
        heights = np.repeat(heights[::4], 4)[: knots + 1]
    inside = sin_elev[ys, xs] < np.interp(azimuth, np.linspace(-math.pi, math.pi, knots + 1), heights)
    tone = np.asarray(_jitter(rng, _pick(rng, ((70, 84, 70), (96, 100, 108), (84, 90, 80))), 10), np.float32)
    canvas[ys[inside], xs[inside]] = tone * 0.5 + light.horizon * 0.5


def _draw_plane(canvas: np.ndarray, zbuf: np.ndarray, plane: _Plane, camera: _Camera, light: _Light) -> None:
    """Warp one plane's texture by the homography the camera induces, depth-tested against zbuf."""
    if (camera.to_camera(plane.corners)[:, 2]).min() < _NEAR_M:
        return
    origin, u_axis, normal = plane.origin, plane.u_axis, plane.normal
    tex_h, tex_w = plane.mips[0].shape[:2]
    if float(normal @ (camera.C - plane.corners.mean(axis=0))) <= 0:
        if not plane.two_sided:
            return
        origin, u_axis, normal = origin + tex_w * u_axis, -u_axis, -normal  # the far side, not mirrored
    H = camera.K @ camera.R @ np.column_stack([u_axis, plane.v_axis, origin - camera.C])
    pts = camera.project(plane.corners)
    x0, y0 = max(0, int(math.floor(pts[:, 0].min()))), max(0, int(math.floor(pts[:, 1].min())))
    x1 = min(camera.width, int(math.ceil(pts[:, 0].max())) + 1)
    y1 = min(camera.height, int(math.ceil(pts[:, 1].max())) + 1)
    if x0 >= x1 or y0 >= y1:
        return
    area = 0.5 * abs(float(np.dot(pts[:, 0], np.roll(pts[:, 1], 1)) - np.dot(pts[:, 1], np.roll(pts[:, 0], 1))))
    texels_per_pixel = math.sqrt(tex_w * tex_h / max(area, 1e-6))
    level = int(np.clip(math.floor(math.log2(max(texels_per_pixel, 1.0))), 0, len(plane.mips) - 1))
    shift = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]])
    H = shift @ H @ np.diag([2.0 ** level, 2.0 ** level, 1.0])
    warped = cv2.warpPerspective(plane.mips[level], H, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0))
    # inverse depth of the plane is affine in the pixel's normalised coordinates
    n_cam = camera.R @ normal
    offset = float(n_cam @ (camera.R @ (origin - camera.C)))
    qx = (np.arange(x0, x1, dtype=np.float32) - camera.K[0, 2]) / camera.K[0, 0]
    qy = (np.arange(y0, y1, dtype=np.float32) - camera.K[1, 2]) / camera.K[1, 1]
    inv_depth = (n_cam[0] * qx[None, :] + n_cam[1] * qy[:, None] + n_cam[2]) / offset
    region_z = zbuf[y0:y1, x0:x1]
    in_front = inv_depth > region_z
    alpha = warped[..., 3].astype(np.float32) * (1.0 / 255.0) * in_front
    distance = float(np.linalg.norm(plane.corners.mean(axis=0) - camera.C))
    haze = 1.0 - math.exp(-distance / light.visibility)
    gain = (light.ambient + light.direct * max(0.0, float(normal @ light.sun))) * (1.0 - haze)
    colour = warped[..., :3].astype(np.float32) * gain * in_front[..., None] + alpha[..., None] * (haze * light.horizon)
    region = canvas[y0:y1, x0:x1]
    region *= 1.0 - alpha[..., None]
    region += colour
    np.copyto(region_z, inv_depth, where=in_front & (alpha > 0.5))


def _occluder_parts(kind: int, rng: np.random.Generator) -> list[tuple[np.ndarray, Colour, bool]]:
    """Polygons (metres; x right, y up from the ground), colour, leafy: a person, tree, pole, car or bush."""
    if kind == 0:  # a person
        h = rng.uniform(1.55, 1.9)
        clothes, trousers, skin = _random_colour(rng), _random_colour(rng, 15, 120), _pick(rng, _SKIN)
        stride = rng.uniform(-0.1, 0.1) * h
        parts = [(_limb(side * 0.05 * h, 0.48 * h, side * (0.05 * h + stride), 0.0, 0.085 * h), trousers, False)
                 for side in (-1, 1)]
        torso = np.array([[-0.13, 0.82], [0.13, 0.82], [0.1, 0.46], [-0.1, 0.46]]) * h
        parts.append((torso, clothes, False))
        for side in (-1, 1):
            hand = (side * rng.uniform(0.14, 0.3) * h, rng.uniform(0.42, 0.75) * h)
            parts.append((_limb(side * 0.13 * h, 0.8 * h, hand[0], hand[1], 0.06 * h), clothes, False))
        parts.append((_ellipse_points(0, 0.91 * h, 0.06 * h, 0.075 * h, 14), skin, False))
        parts.append((_ellipse_points(0, 0.94 * h, 0.063 * h, 0.05 * h, 12), _pick(rng, _HAIR), False))
        return parts
    if kind == 1:  # a tree
        trunk_h, radius = rng.uniform(1.8, 3.5), rng.uniform(1.2, 2.8)
        lean = rng.normal(0, 0.2)
        parts = [(_limb(0, 0, lean, trunk_h + radius * 0.5, rng.uniform(0.25, 0.45)), (70, 56, 44), False)]
        green = _pick(rng, ((58, 92, 44), (76, 110, 52), (44, 72, 40), (96, 120, 60)))
        for _ in range(int(rng.integers(5, 11))):
            r = radius * rng.uniform(0.45, 0.8)
            parts.append((_ellipse_points(lean + rng.normal(0, 0.5) * radius, trunk_h + radius + rng.normal(0, 0.4) * radius,
                                          r, r * rng.uniform(0.7, 1.0), 16), _jitter(rng, green, 18), True))
        return parts
    if kind == 2:  # a street lamp or a traffic sign
        if rng.random() < 0.5:
            height = rng.uniform(3.5, 6.0)
            return [(_limb(0, 0, 0, height, 0.14), (48, 50, 52), False),
                    (_ellipse_points(0.2, height, 0.32, 0.14, 12), (58, 60, 62), False)]
        sign = _pick(rng, ((196, 30, 36), (30, 70, 160), (230, 180, 30)))
        return [(_limb(0, 0, 0, 2.6, 0.08), (130, 132, 134), False), (_ellipse_points(0, 2.6, 0.36, 0.36, 20), sign, False),
                (_limb(-0.22, 2.6, 0.22, 2.6, 0.1), (240, 240, 240), False)]
    if kind == 3:  # a car, side on
        body = _random_colour(rng)
        outline = np.array([[-2.1, 0.3], [2.1, 0.3], [2.15, 0.9], [1.3, 1.0], [0.7, 1.45], [-1.0, 1.45], [-1.6, 1.0],
                            [-2.15, 0.9]])
        windows = np.array([[1.1, 1.0], [0.62, 1.36], [-0.92, 1.36], [-1.35, 1.0]])
        parts = [(outline, body, False), (windows, (40, 48, 58), False)]
        for x in (-1.35, 1.35):
            parts.append((_ellipse_points(x, 0.33, 0.33, 0.33, 16), (22, 22, 24), False))
            parts.append((_ellipse_points(x, 0.33, 0.15, 0.15, 10), (150, 150, 154), False))
        if rng.random() < 0.5:
            parts = [(p * (-1, 1), c, leafy) for p, c, leafy in parts]
        return parts
    green = _pick(rng, ((58, 92, 44), (76, 110, 52), (44, 72, 40)))  # a bush or hedge
    clumps = []
    for _ in range(int(rng.integers(3, 7))):
        x, y, rx, ry = rng.uniform(-1.2, 1.2), rng.uniform(0.4, 0.8), rng.uniform(0.5, 0.9), rng.uniform(0.4, 0.7)
        clumps.append((_ellipse_points(x, y, rx, ry, 14), _jitter(rng, green, 15), True))
    return clumps


def _draw_occluders(img: np.ndarray, zbuf: np.ndarray, scene: LandmarkScene, camera: _Camera, light: _Light,
                    rng: np.random.Generator) -> None:
    """People, trees, poles, cars and bushes between the camera and the landmark, hiding at most 30 % of it."""
    count = int(rng.choice(5, p=(0.35, 0.25, 0.2, 0.12, 0.08)))
    forward = camera.R[2] * np.array([1.0, 0.0, 1.0])
    if count == 0 or np.linalg.norm(forward) < 1e-3:
        return
    forward /= np.linalg.norm(forward)
    right, up = np.array([forward[2], 0.0, -forward[0]]), np.array([0.0, -1.0, 0.0])
    foot = camera.C * np.array([1.0, 0.0, 1.0])
    reach = float(np.linalg.norm((scene.centre - camera.C)[[0, 2]]))
    landmark = zbuf > 0
    budget = _MAX_OCCLUDED * float(np.count_nonzero(landmark))
    hidden = np.zeros_like(landmark)
    hidden_count = 0
    gain = light.ambient + 0.5 * light.direct
    spots = [(rng.uniform(0.15, 0.85) * reach, rng.uniform(-0.7, 0.7), int(rng.choice(5, p=(0.32, 0.28, 0.15, 0.15, 0.1))))
             for _ in range(count)]
    for distance, lateral, kind in sorted(spots, reverse=True):  # far ones first
        parts = _occluder_parts(kind, rng)
        base = foot + distance * forward + lateral * distance * right
        depth = float((base - camera.C) @ camera.R[2])
        if depth < _NEAR_M:
            continue
        projected = [camera.project(base + p[:, :1] * right + p[:, 1:] * up) for p, _, _ in parts]
        every = np.concatenate(projected)
        x0, y0 = max(0, int(every[:, 0].min())), max(0, int(every[:, 1].min()))
        x1, y1 = min(camera.width, int(every[:, 0].max()) + 2), min(camera.height, int(every[:, 1].max()) + 2)
        if x0 >= x1 or y0 >= y1:
            continue
        layer = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        leaves = np.zeros_like(mask)
        for points, (_, colour, leafy) in zip(projected, parts):
            local = points - (x0, y0)
            _fill(layer, local, tuple(float(c) for c in np.asarray(colour) * gain))
            _fill(mask, local, 255)
            if leafy:
                _fill(leaves, local, 255)
        in_front = 1.0 / depth > zbuf[y0:y1, x0:x1]
        cover = mask.astype(np.float32) * (1.0 / 255.0) * in_front
        newly = (cover > 0.5) & landmark[y0:y1, x0:x1] & ~hidden[y0:y1, x0:x1]
        if hidden_count + np.count_nonzero(newly) > budget:
            continue
        hidden_count += int(np.count_nonzero(newly))
        hidden[y0:y1, x0:x1] |= newly
        paint = layer.astype(np.float32) * in_front[..., None]  # anti-aliased on black: premultiplied by cover
        if leaves.any():  # foliage: light and dark clumps of leaves
            texture = _smooth_noise(rng, y1 - y0, x1 - x0, 2.5) * (leaves.astype(np.float32) * (0.45 / 255.0))
            paint *= 1.0 + texture[..., None]
        region = img[y0:y1, x0:x1].astype(np.float32) * (1.0 - cover[..., None]) + paint
        img[y0:y1, x0:x1] = np.clip(region, 0, 255).astype(np.uint8)


def _light_falloff(canvas: np.ndarray, rng: np.random.Generator, surfaces: np.ndarray | None) -> None:
    """Sometimes a soft cast shadow across the surfaces (everything when None), sometimes lens vignetting."""
    h, w = canvas.shape[:2]
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    if rng.random() < 0.3:
        angle = rng.uniform(0, 2 * math.pi)
        cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
        across = (xs - cx) * math.cos(angle) + (ys - cy) * math.sin(angle)
        shade = np.clip(0.5 + across / rng.uniform(2.0, 30.0), 0.0, 1.0) * rng.uniform(0.2, 0.45)
        if surfaces is not None:
            shade = shade * surfaces
        canvas *= (1.0 - shade)[..., None]
    if rng.random() < 0.35:
        radius2 = ((xs - w / 2) / (w / 2)) ** 2 + ((ys - h / 2) / (h / 2)) ** 2
        canvas *= (1.0 - rng.uniform(0.1, 0.3) * radius2 / 2)[..., None]


def _camera_response(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sometimes defocus, always sensor noise, then auto-exposure, gain, gamma, contrast and a colour cast."""
    if rng.random() < 0.2:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.2))
    # Gaussian sensor noise (weak: downsized photos average it out), drawn as random bytes through an
    # inverse-CDF table because that is 5x faster than standard_normal
    table = np.clip(np.round(_NORMAL_QUANTILES * rng.uniform(0.5, 3.0)) + 64, 0, 255).astype(np.uint8)
    noise = cv2.LUT(np.frombuffer(rng.bytes(img.size), np.uint8).reshape(img.shape), table)
    img = np.clip(img.astype(np.int16) + noise.astype(np.int16) - 64, 0, 255).astype(np.uint8)
    exposure = (rng.uniform(100, 135) / max(float(img.mean()), 1.0)) ** 0.6 * rng.uniform(0.85, 1.15)
    gamma, contrast = rng.uniform(0.8, 1.25), rng.uniform(0.85, 1.15)
    cast = rng.uniform(0.92, 1.08, 3)
    levels = np.arange(256, dtype=np.float64)[:, None] / 255.0
    curves = np.clip(levels * exposure * cast[None, :], 0.0, 1.0) ** gamma
    curves = 0.5 + (curves - 0.5) * contrast
    lut = np.clip(curves * 255.0 + 0.5, 0, 255).astype(np.uint8).reshape(256, 1, 3)
    return cv2.LUT(img, lut)


# ============================================================================================
# Distractors: images that show no landmark


def render_distractor(rng: np.random.Generator, long_side: int = 256) -> np.ndarray:
    """A non-landmark photograph (HxWx3 uint8 RGB): a one-off building, nature, an interior, a close-up,
    a portrait or a document, through the same camera pipeline as landmark photos."""
    h, w = _sample_frame(rng, long_side)
    kind = int(rng.choice(6, p=(0.3, 0.16, 0.14, 0.12, 0.14, 0.14)))
    if kind == 0:  # the hard case: a building like any landmark, but seen only once
        return _photograph(_build_landmark(rng, make_style(rng), _DISTRACTOR_TEXTURE_CAP), rng, h, w)
    painter = (_paint_nature, _paint_interior, _paint_closeup, _paint_portrait, _paint_document)[kind - 1]
    canvas = painter(rng, h, w).astype(np.float32)
    _light_falloff(canvas, rng, None)
    return _camera_response(np.clip(canvas, 0, 255).astype(np.uint8), rng)


def _vertical_gradient(h: int, w: int, top: Colour, bottom: Colour) -> np.ndarray:
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    column = np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t
    return np.repeat(column, w, axis=1)


def _profile(rng: np.random.Generator, w: int, base: float, amplitude: float, knots: int) -> np.ndarray:
    """A random 1-D skyline (ridge, treeline) of `w` heights, smooth between knots."""
    values = base + amplitude * np.cumsum(rng.normal(0, 1, knots)) / math.sqrt(knots)
    return np.interp(np.arange(w), np.linspace(0, w - 1, knots), values)


def _fill_below(img: np.ndarray, profile: np.ndarray, colour: np.ndarray) -> None:
    rows = np.arange(img.shape[0], dtype=np.float32)[:, None]
    img[rows >= profile[None, :]] = colour


def _sky_canvas(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A sky in random weather, seen level (float32 RGB): a gradient with clouds."""
    light = _sample_light(rng)
    canvas = _vertical_gradient(h, w, tuple(light.zenith), tuple(light.horizon))
    cloud = np.clip((_smooth_noise(rng, h, w, w / 4, 0.5) - (1.0 - 2.0 * light.clouds)) * 1.5, 0.0, 1.0)
    canvas += cloud[..., None] * (np.array([242, 243, 246], np.float32) - canvas)
    return canvas


def _paint_nature(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A meadow, foliage, water or mountains under a sky: filtered noise in natural colours."""
    variant = int(rng.integers(4))
    canvas = _sky_canvas(rng, h, w)
    horizon = rng.uniform(0.3, 0.65) * h
    if variant == 1:  # foliage filling the frame, with sky showing through gaps
        leaves = _fractal_noise(rng, h, w, rng.uniform(6, 20), 4)
        dark = np.array(_jitter(rng, (36, 60, 30), 12), np.float32)
        light_green = np.array(_jitter(rng, (120, 150, 70), 20), np.float32)
        t = np.clip(leaves * 1.4 + 0.5, 0.0, 1.0)[..., None]
        foliage = dark + t * (light_green - dark)
        gaps = (leaves > rng.uniform(0.35, 0.7))[..., None]
        return np.where(gaps, canvas, foliage)
    far = np.array(_jitter(rng, (70, 88, 74), 12), np.float32) * 0.6 + canvas[int(horizon)].mean(axis=0) * 0.4
    if variant == 3:  # mountain ranges, paler with distance
        for layer in range(int(rng.integers(2, 4))):
            height = rng.uniform(0.1, 0.35) * h / (layer + 1)
            ridge = _profile(rng, w, horizon - height, 0.25 * h / (layer + 1), int(rng.integers(5, 20)))
            tone = np.array(_jitter(rng, (90, 100, 110), 20), np.float32) * (0.6 + 0.15 * layer)
            _fill_below(canvas, ridge, np.clip(tone, 0, 255))
    _fill_below(canvas, _profile(rng, w, horizon, 0.03 * h, int(rng.integers(20, 60))), far)
    rows = slice(int(horizon) + 1, h)
    below = h - int(horizon) - 1
    if below <= 0:
        return canvas
    if variant == 2:  # water reflecting the sky, broken by horizontal ripples
        ripples = _smooth_noise(rng, below, w, w / 40, 0.15)
        reflection = canvas[: int(horizon)][::-1][:below] if int(horizon) >= below else np.repeat(canvas[:1], below, axis=0)
        water = reflection * 0.7 + np.array(_jitter(rng, (40, 70, 90), 15), np.float32) * 0.3
        canvas[rows] = water * (1.0 + 0.18 * ripples[..., None])
    else:  # grass, finer towards the horizon
        grass = np.array(_jitter(rng, (90, 130, 60), 20), np.float32)
        blades = _smooth_noise(rng, below, w, 1.5, 3.0) * 0.18 + _fractal_noise(rng, below, w, w / 6, 3) * 0.2
        canvas[rows] = grass * (1.0 + blades[..., None])
    return canvas


def _paint_interior(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A room: painted wall, wooden floor, a window, a picture, furniture and objects on a table."""
    wall_colour = _jitter(rng, _pick(rng, _WALL_COLOURS[_MATERIALS[int(rng.integers(4))]]), 15)
    paint = np.asarray(wall_colour, np.float32) * (1 + 0.05 * _fractal_noise(rng, h, w, w / 4))[..., None]
    img = np.clip(paint, 0, 255).astype(np.uint8)
    floor_y = rng.uniform(0.55, 0.8) * h
    wood = _jitter(rng, (140, 100, 66), 25)
    _rect(img, 0, floor_y, w, h, wood)
    vanish = rng.uniform(0.2, 0.8) * w
    for x in np.linspace(-w, 2 * w, int(rng.integers(10, 24))):  # floorboards converging to a vanishing point
        cv2.line(img, (int(vanish + (x - vanish) * 0.3), int(floor_y)), (int(x), h), _scaled(wood, 0.7), 1, cv2.LINE_AA)
    if rng.random() < 0.5:  # a window with sky and mullions
        x0, y0 = rng.uniform(0.05, 0.6) * w, rng.uniform(0.05, 0.2) * h
        x1, y1 = x0 + rng.uniform(0.2, 0.35) * w, y0 + rng.uniform(0.3, 0.45) * h
        view = _sky_canvas(rng, int(y1) - int(y0), int(x1) - int(x0))
        img[int(y0):int(y1), int(x0):int(x1)] = np.clip(view, 0, 255).astype(np.uint8)
        for line in (((x0 + x1) / 2, y0, (x0 + x1) / 2, y1), (x0, (y0 + y1) / 2, x1, (y0 + y1) / 2)):
            cv2.line(img, (int(line[0]), int(line[1])), (int(line[2]), int(line[3])), (240, 240, 236), 3)
        cv2.rectangle(img, (int(x0), int(y0)), (int(x1), int(y1)), (240, 240, 236), 4)
    if rng.random() < 0.6:  # a framed picture of blobs
        x0, y0 = rng.uniform(0.1, 0.7) * w, rng.uniform(0.08, 0.25) * h
        x1, y1 = x0 + rng.uniform(0.15, 0.3) * w, y0 + rng.uniform(0.15, 0.3) * h
        _rect(img, x0 - 4, y0 - 4, x1 + 4, y1 + 4, _pick(rng, ((40, 30, 20), (190, 150, 60), (20, 20, 20))))
        _rect(img, x0, y0, x1, y1, _random_colour(rng))
        for _ in range(int(rng.integers(3, 8))):
            _fill(img, _ellipse_points(rng.uniform(x0, x1), rng.uniform(y0, y1), rng.uniform(2, 0.3 * (x1 - x0)),
                                       rng.uniform(2, 0.3 * (y1 - y0)), 14), _random_colour(rng))
    if rng.random() < 0.5:  # a bookshelf
        x0, x1 = rng.uniform(0, 0.5) * w, rng.uniform(0.6, 1.0) * w
        for shelf in range(int(rng.integers(2, 4))):
            y = floor_y - shelf * 0.18 * h
            _rect(img, x0, y - 3, x1, y, (90, 64, 40))
            x = x0
            while x < x1 - 4:
                bw = rng.uniform(3, 9)
                _rect(img, x, y - rng.uniform(0.1, 0.16) * h, x + bw, y - 3, _random_colour(rng))
                x += bw + 1
    top = floor_y + rng.uniform(-0.15, 0.05) * h  # a table with objects
    x0, x1 = rng.uniform(0, 0.3) * w, rng.uniform(0.6, 1.0) * w
    table = _jitter(rng, _pick(rng, ((120, 80, 50), (200, 200, 196), (60, 50, 44))), 15)
    _fill(img, np.array([[x0 + 0.05 * w, top], [x1 - 0.05 * w, top], [x1, top + 0.08 * h], [x0, top + 0.08 * h]]), table)
    for x in (x0 + 0.03 * w, x1 - 0.06 * w):
        _rect(img, x, top + 0.08 * h, x + 0.03 * w, min(h, top + 0.3 * h), _scaled(table, 0.7))
    for _ in range(int(rng.integers(2, 7))):
        cx, base = rng.uniform(x0 + 0.08 * w, x1 - 0.08 * w), top + 0.04 * h
        size = rng.uniform(0.03, 0.09) * h
        colour = _random_colour(rng)
        if rng.random() < 0.5:  # a bottle or cup
            _rect(img, cx - size / 2, base - 1.6 * size, cx + size / 2, base, colour)
            _fill(img, _ellipse_points(cx, base - 1.6 * size, size / 2, size / 5, 12), _scaled(colour, 1.2))
        else:  # a plate or fruit
            _fill(img, _ellipse_points(cx, base - size / 2, size, size / 2, 16), colour)
    return img


def _paint_closeup(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A close-up: a wall's masonry (perhaps with a plaque), bark or wood grain, fabric, or a flower."""
    variant = int(rng.integers(4))
    if variant == 0:
        material = _MATERIALS[int(rng.integers(4))]
        ppm = w / rng.uniform(1.5, 5.0)
        img = _paint_material(rng, material, _jitter(rng, _pick(rng, _WALL_COLOURS[material]), 15), h, w, ppm)
        if rng.random() < 0.4:
            x0, y0 = rng.uniform(0.1, 0.5) * w, rng.uniform(0.1, 0.5) * h
            _draw_plaque(img, rng, x0, y0, x0 + 0.4 * w, y0 + 0.2 * h, _random_colour(rng, 150, 250),
                         _random_colour(rng, 0, 80), 2)
        return img
    if variant == 1:  # bark or wood grain: noise stretched along the grain
        grain = _smooth_noise(rng, h, w, rng.uniform(2, 6), rng.uniform(6, 20)) * 0.25
        grain += _fractal_noise(rng, h, w, w / 5, 3) * 0.15
        return np.asarray(_jitter(rng, (120, 88, 60), 25), np.float32) * (1 + grain[..., None])
    if variant == 2:  # woven fabric: two crossing thread directions
        period = rng.uniform(3, 8)
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        weave = np.sin(xs * 2 * math.pi / period) * np.sin(ys * 2 * math.pi / period) * 0.12
        folds = _fractal_noise(rng, h, w, w / 3, 2) * 0.2
        return np.asarray(_random_colour(rng, 40, 220), np.float32) * (1 + weave + folds)[..., None]
    img = cv2.GaussianBlur(np.asarray(_jitter(rng, (70, 110, 50), 25), np.float32)  # a flower on a blurred background
                           * (1 + 0.4 * _fractal_noise(rng, h, w, w / 6, 2))[..., None], (0, 0), 3)
    cx, cy, r = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h, rng.uniform(0.2, 0.4) * min(h, w)
    petal = _random_colour(rng, 120, 255)
    petals = int(rng.integers(5, 14))
    for k in range(petals):
        a = 2 * math.pi * k / petals
        _fill(img, _ellipse_points(cx + 0.5 * r * math.cos(a), cy + 0.5 * r * math.sin(a), 0.5 * r, 0.18 * r, 16, a),
              _scaled(petal, rng.uniform(0.85, 1.1)))
    _fill(img, _ellipse_points(cx, cy, 0.2 * r, 0.2 * r, 16), _random_colour(rng, 120, 255))
    return img


def _paint_portrait(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """One to three people in front of a defocused street or park."""
    if rng.random() < 0.5:  # a street: facades and windows, thrown out of focus
        img = np.zeros((h, w, 3), np.uint8)
        x = 0.0
        while x < w:
            bw = rng.uniform(0.15, 0.5) * w
            colour = _jitter(rng, _pick(rng, _WALL_COLOURS[_MATERIALS[int(rng.integers(4))]]), 15)
            _rect(img, x, 0, x + bw, h, colour)
            for wy in np.arange(rng.uniform(0, 0.1) * h, h, 0.2 * h):
                for wx in np.arange(x + 0.1 * bw, x + bw - 0.1 * bw, 0.3 * bw):
                    _rect(img, wx, wy, wx + 0.15 * bw, wy + 0.1 * h, _scaled(colour, 0.4))
            x += bw
        img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), rng.uniform(3, 8))
    else:
        img = cv2.GaussianBlur(_sky_canvas(rng, h, w) * 0.4 + np.asarray(_jitter(rng, (80, 120, 60), 25), np.float32)
                               * (1 + 0.5 * _fractal_noise(rng, h, w, w / 5, 2))[..., None] * 0.6, (0, 0), 4)
    img = np.clip(img, 0, 255).astype(np.uint8)
    people = int(rng.choice(3, p=(0.7, 0.2, 0.1))) + 1
    for _ in range(people):
        head = rng.uniform(0.08, 0.16) * max(h, w) / (1 + 0.3 * (people - 1))
        cx, cy = rng.uniform(0.25, 0.75) * w, rng.uniform(0.25, 0.5) * h
        clothes, skin = _random_colour(rng), _pick(rng, _SKIN)
        shoulders = cy + 1.9 * head
        _fill(img, np.array([[cx - 2.0 * head, shoulders + 0.5 * head], [cx + 2.0 * head, shoulders + 0.5 * head],
                             [cx + 2.3 * head, h + head], [cx - 2.3 * head, h + head]]), clothes)
        _fill(img, _ellipse_points(cx, shoulders + 0.5 * head, 2.0 * head, 0.8 * head, 24), clothes)
        _fill(img, _ellipse_points(cx, shoulders - 0.2 * head, 0.6 * head, 0.35 * head, 12), _scaled(clothes, 0.8))  # collar
        _rect(img, cx - 0.35 * head, cy + 0.6 * head, cx + 0.35 * head, shoulders - 0.2 * head, _scaled(skin, 0.9))
        _fill(img, _ellipse_points(cx, cy, 0.8 * head, head, 24), skin)
        hair = _jitter(rng, _pick(rng, _HAIR), 12)
        _fill(img, _ellipse_points(cx, cy - 0.55 * head, 0.85 * head, 0.55 * head, 20), hair)
        for side in (-1, 1):
            _fill(img, _ellipse_points(cx + side * 0.32 * head, cy + 0.1 * head, 0.12 * head, 0.07 * head, 10), (30, 26, 24))
        _fill(img, _ellipse_points(cx, cy + 0.5 * head, 0.25 * head, 0.06 * head, 10), _scaled(skin, 0.7))
    return img


def _paint_document(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A page of text, a table or a form, lying at an angle on a desk; or a flat screenshot."""
    page_w = 360
    page_h = int(page_w * rng.uniform(1.2, 1.45))
    page = np.full((page_h, page_w, 3), _jitter(rng, (244, 240, 228), 10), np.uint8)
    ink = _random_colour(rng, 0, 70)
    _text_in_box(page, rng, _random_text(rng, 4, 12), 20, 14, page_w - 20, 50, _random_colour(rng, 0, 160))
    y = 64.0
    if rng.random() < 0.3:  # a logo
        _draw_emblem(page, rng, page_w - 40, 34, 18, make_style(rng))
    while y < page_h - 20:
        if rng.random() < 0.15:  # a table
            rows, cols = int(rng.integers(2, 6)), int(rng.integers(2, 5))
            for r in range(rows + 1):
                cv2.line(page, (20, int(y + r * 16)), (page_w - 20, int(y + r * 16)), ink, 1)
            for c in range(cols + 1):
                x = int(20 + c * (page_w - 40) / cols)
                cv2.line(page, (x, int(y)), (x, int(y + rows * 16)), ink, 1)
            y += rows * 16 + 14
            continue
        x = 20.0
        line_end = page_w - 20 - (rng.uniform(0, 120) if rng.random() < 0.2 else 0)
        while x < line_end:
            word = _random_text(rng, 1, 8).replace(" ", "").lower()
            (tw, _), _ = cv2.getTextSize(word, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
            if x + tw > line_end:
                break
            cv2.putText(page, word, (int(x), int(y)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, ink, 1, cv2.LINE_AA)
            x += tw + 6
        y += rng.uniform(13, 18) * (2 if rng.random() < 0.1 else 1)
    desk = np.asarray(_jitter(rng, _pick(rng, ((120, 88, 60), (60, 60, 64), (200, 196, 188), (40, 50, 70))), 20), np.float32)
    img = desk * (1 + 0.12 * _fractal_noise(rng, h, w, w / 8, 3))[..., None]
    if rng.random() < 0.25:  # a screenshot: the page fills the frame
        return cv2.resize(page, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
    scale = rng.uniform(0.6, 1.1) * min(h, w) / page_w
    angle = rng.uniform(-0.5, 0.5)
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    centre = np.array([rng.uniform(0.35, 0.65) * w, rng.uniform(0.35, 0.65) * h])
    corners = np.array([[0, 0], [page_w, 0], [page_w, page_h], [0, page_h]], np.float32) - (page_w / 2, page_h / 2)
    placed = corners @ np.array([[c, s], [-s, c]]) + centre + rng.uniform(-0.06, 0.06, (4, 2)) * min(h, w)
    H = cv2.getPerspectiveTransform((corners + (page_w / 2, page_h / 2)).astype(np.float32), placed.astype(np.float32))
    warped = cv2.warpPerspective(np.dstack([page, np.full(page.shape[:2], 255, np.uint8)]), H, (w, h), flags=cv2.INTER_AREA)
    alpha = warped[..., 3:].astype(np.float32) / 255.0
    return img * (1 - alpha) + warped[..., :3].astype(np.float32) * alpha
