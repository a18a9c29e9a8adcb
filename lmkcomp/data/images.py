"""Image decoding for the landmark datasets: any file Pillow reads becomes upright 8-bit RGB.

The Google Landmarks v2 images come from many cameras and tools, so the loader has to cope
with EXIF-rotated photos, palette and transparent PNGs, CMYK JPEGs and 16-bit or float
scans, and has to report broken files as a user error that names the file.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import struct
import zlib
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from lmkcomp.errors import ImageLoadError

# EXIF orientations 5-8 store the picture transposed or rotated by 90 degrees, so the
# upright image has width and height swapped relative to the stored pixels.
_AXIS_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})

# Modes holding 16-bit samples. Pillow opens 16-bit grayscale PNGs and TIFFs in one of
# these, and older Pillow releases (and 32-bit TIFFs) in "I", which is treated as 16-bit.
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})

# JPEG draft decoding shrinks by 1/2, 1/4 or 1/8 inside the DCT, which is fast but a coarse
# filter. Drafting to at least twice the target size and letting Lanczos do the last step
# keeps the result close to a full-resolution resize (the same margin Pillow's thumbnail()
# uses by default).
_DRAFT_MARGIN = 2

# Errors Pillow's decoders raise on damaged data once a file has been identified.
_CORRUPT_DATA_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error)


def load_image_rgb(path: str | Path, max_side: int | None = None) -> np.ndarray:
    """Decode an image file into an upright H x W x 3 uint8 RGB array (C-contiguous).

    The EXIF Orientation tag is applied, every Pillow mode is mapped to RGB (transparency is
    composited over white, 16-bit samples are rescaled rather than truncated), and with
    `max_side` the image is downscaled, never upscaled, so that its long side is at most
    `max_side`. The output size is then exactly `fit_within(read_image_size(path), max_side)`.

    Raises ImageLoadError for a missing, empty, truncated, corrupt or non-image file, for a
    path that is not a regular file (a directory, FIFO, socket or device: never read, so a
    FIFO cannot block) and for an image too large to decode safely; ValueError for a
    `max_side` below 1.
    """
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be at least 1, got {max_side}")
    path = Path(path)
    image, upright_size = _decode_upright(path, max_side)
    rgb = _to_rgb(image, path)
    if max_side is not None:
        # The target comes from the full-resolution size, not from the drafted one, so the
        # output size does not depend on how far the JPEG decoder happened to shrink.
        target = fit_within(upright_size, max_side)
        if rgb.size != target:
            rgb = rgb.resize(target, Image.Resampling.LANCZOS)
    # np.array copies out of Pillow's buffer, giving a writable, C-contiguous array.
    return np.array(rgb, dtype=np.uint8)


def read_image_size(path: str | Path) -> tuple[int, int]:
    """Return the upright (width, height) of an image file, reading only its header.

    Orientations 5-8 swap width and height. No pixels are decoded, so truncated pixel data
    goes unnoticed here and is reported by `load_image_rgb`. For PNGs only EXIF stored
    before the pixel data is seen, which is where writers put it.

    Raises ImageLoadError for a missing, empty or non-image file, a path that is not a
    regular file, or a decompression bomb.
    """
    path = Path(path)
    with _image_errors(path), _open_regular_file(path) as handle, Image.open(handle) as image:
        width, height = image.size
        # When no EXIF precedes a PNG's pixel data, PngImageFile.getexif() decodes the whole
        # image to look for EXIF after it; the base implementation reads only what parsing
        # the header already found.
        orientation = Image.Image.getexif(image).get(ExifTags.Base.Orientation, 1)
    if orientation in _AXIS_SWAPPING_ORIENTATIONS:
        return height, width
    return width, height


def fit_within(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """Scale (width, height) so the long side is at most `max_side`, keeping the aspect.

    Sizes that already fit are returned unchanged (no upscaling); no side drops below 1.
    """
    width, height = size
    long_side = max(width, height)
    if long_side <= max_side:
        return width, height
    scale = max_side / long_side
    return max(1, round(width * scale)), max(1, round(height * scale))


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """Encode an H x W x 3 uint8 RGB array as baseline JPEG bytes, without EXIF.

    The same input and quality always give the same bytes. Raises ValueError for an array
    of another shape or dtype, or a quality outside 1..100.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"expected an H x W x 3 uint8 RGB array, got shape {image.shape} dtype {image.dtype}"
        )
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _decode_upright(path: Path, max_side: int | None) -> tuple[Image.Image, tuple[int, int]]:
    """Fully decode `path` and apply its EXIF orientation.

    Returns the upright image, detached from the file, and the upright full-resolution
    (width, height), which differs from the image's own size when JPEG draft mode shrank it.
    """
    with _image_errors(path), _open_regular_file(path) as handle, Image.open(handle) as image:
        width, height = image.size
        if max_side is not None:
            # A no-op for formats other than JPEG; must happen before load().
            image.draft(None, fit_within((width, height), max_side * _DRAFT_MARGIN))
        # Decode every pixel now, inside the error translation: Pillow decodes lazily, and
        # truncated data only raises once the decoder runs out of bytes.
        image.load()
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
        # Not in place: the returned image is a new in-memory one that stays valid after
        # the file is closed.
        upright = ImageOps.exif_transpose(image)
    if orientation in _AXIS_SWAPPING_ORIENTATIONS:
        return upright, (height, width)
    return upright, (width, height)


def _to_rgb(image: Image.Image, path: Path) -> Image.Image:
    """Convert a decoded image of any mode to 8-bit RGB."""
    if image.mode in _SIXTEEN_BIT_MODES:
        # Pillow's own conversion clips 16-bit values to 255, which turns nearly every
        # pixel white; rescale the full 0..65535 range instead, rounding to nearest.
        samples = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
        return Image.fromarray(((samples + 128) // 257).astype(np.uint8)).convert("RGB")
    if image.mode == "F":
        # Float images are taken to be on the 0..255 scale; NaN has no meaning as a
        # brightness and becomes black.
        samples = np.nan_to_num(np.asarray(image), nan=0.0)
        return Image.fromarray(np.rint(np.clip(samples, 0, 255)).astype(np.uint8)).convert("RGB")
    try:
        if image.has_transparency_data:
            # Dropping alpha would expose whatever colour the transparent pixels happen to
            # store (often black); a white background is how such images are displayed.
            background = Image.new("RGBA", image.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
        return image.convert("RGB")
    except ValueError as exc:
        raise ImageLoadError(path, f"unsupported image mode {image.mode!r}") from exc


def _open_regular_file(path: Path) -> BinaryIO:
    """Open `path` for reading, or raise ImageLoadError unless it is a non-empty regular file.

    The open is non-blocking and the type is checked on the open descriptor: opening a FIFO
    for reading would otherwise wait forever for a writer, and checking the path before
    opening it could be fooled by a file replaced in between. (O_NONBLOCK changes nothing
    for reads of a regular file.)
    """
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        status = os.fstat(descriptor)
        if stat.S_ISDIR(status.st_mode):
            raise ImageLoadError(path, "is a directory, not an image file")
        if not stat.S_ISREG(status.st_mode):
            raise ImageLoadError(path, f"not a regular file ({_special_file_kind(status.st_mode)})")
        if status.st_size == 0:
            raise ImageLoadError(path, "empty file (0 bytes)")
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def _special_file_kind(mode: int) -> str:
    """What a file that is neither regular nor a directory is, in words."""
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"))
    return next((name for test, name in kinds if test(mode)), "a special file")


@contextlib.contextmanager
def _image_errors(path: Path) -> Iterator[None]:
    """Turn the ways opening or decoding `path` fails into ImageLoadError."""
    try:
        yield
    except FileNotFoundError as exc:
        raise ImageLoadError(path, "file not found") from exc
    except IsADirectoryError as exc:
        raise ImageLoadError(path, "is a directory, not an image file") from exc
    except PermissionError as exc:
        raise ImageLoadError(path, "permission denied") from exc
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(path, f"too many pixels, possible decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageLoadError(path, "not an image file") from exc
    except _CORRUPT_DATA_ERRORS as exc:
        raise ImageLoadError(path, f"truncated or corrupt image data: {exc}") from exc
