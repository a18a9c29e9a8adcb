"""Tests for lmkcomp.data.images. Every fixture image is generated here with Pillow."""

from __future__ import annotations

import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageFile, JpegImagePlugin

from lmkcomp.data.images import encode_jpeg, fit_within, load_image_rgb, read_image_size
from lmkcomp.errors import ImageLoadError

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)

# The upright picture every orientation fixture must load as: 4 wide, 2 tall, red in the
# top-left corner, blue elsewhere.
UPRIGHT = np.array([[RED, BLUE, BLUE, BLUE], [BLUE, BLUE, BLUE, BLUE]], dtype=np.uint8)

# For each EXIF orientation, worked out by hand from the tag's definition (which stored
# row and column become the visual top and left): the stored (height, width) and the
# stored (row, column) of the red pixel such that displaying it gives UPRIGHT.
STORED_LAYOUT = {
    1: ((2, 4), (0, 0)),  # row 0 is the top, column 0 the left
    2: ((2, 4), (0, 3)),  # column 0 is the right: mirrored
    3: ((2, 4), (1, 3)),  # row 0 is the bottom, column 0 the right: rotated 180
    4: ((2, 4), (1, 0)),  # row 0 is the bottom: flipped vertically
    5: ((4, 2), (0, 0)),  # row 0 is the left, column 0 the top: transposed
    6: ((4, 2), (3, 0)),  # row 0 is the right, column 0 the top: shown rotated 90 CW
    7: ((4, 2), (3, 1)),  # row 0 is the right, column 0 the bottom: transversed
    8: ((4, 2), (0, 1)),  # row 0 is the left, column 0 the bottom: shown rotated 90 CCW
}


def stored_pixels(orientation: int) -> np.ndarray:
    """The stored pixels that display as UPRIGHT under `orientation`."""
    (height, width), (row, col) = STORED_LAYOUT[orientation]
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    pixels[:] = BLUE
    pixels[row, col] = RED
    return pixels


def exif_with_orientation(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    return exif


def save(image: Image.Image, path: Path, **params) -> Path:
    image.save(path, **params)
    return path


def gray_row(mode: str, values: list) -> Image.Image:
    """A one-row image of `mode` holding `values`."""
    image = Image.new(mode, (len(values), 1))
    image.putdata(values)
    return image


def as_rgb_row(values: list[int]) -> np.ndarray:
    """The 1 x N x 3 RGB array of a gray row with these values."""
    return np.repeat(np.array(values, dtype=np.uint8)[None, :, None], 3, axis=2)


def noise_image(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """Incompressible content, so most of an encoded file is pixel data."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


# --- EXIF orientation -----------------------------------------------------------------


@pytest.mark.parametrize("orientation", sorted(STORED_LAYOUT))
def test_png_orientation_is_applied_exactly(tmp_path, orientation):
    path = save(
        Image.fromarray(stored_pixels(orientation)),
        tmp_path / f"o{orientation}.png",
        exif=exif_with_orientation(orientation),
    )
    np.testing.assert_array_equal(load_image_rgb(path), UPRIGHT)
    assert read_image_size(path) == (4, 2)


@pytest.mark.parametrize("orientation", sorted(STORED_LAYOUT))
def test_jpeg_orientation_is_applied(tmp_path, orientation):
    # Each pixel becomes a 16x16 block, so JPEG's lossy blocks leave block centres intact.
    block = 16
    stored = np.kron(stored_pixels(orientation), np.ones((block, block, 1), dtype=np.uint8))
    path = save(
        Image.fromarray(stored),
        tmp_path / f"o{orientation}.jpg",
        exif=exif_with_orientation(orientation),
        quality=95,
        subsampling=0,
    )
    loaded = load_image_rgb(path)
    assert loaded.shape == (2 * block, 4 * block, 3)
    centres = loaded[block // 2 :: block, block // 2 :: block].astype(int)
    np.testing.assert_allclose(centres, UPRIGHT, atol=30)
    assert read_image_size(path) == (4 * block, 2 * block)


def test_orientation_is_applied_before_downscaling(tmp_path):
    # Stored 200 wide x 400 tall, displayed rotated 90 CW: upright it is 400 x 200.
    stored = np.kron(stored_pixels(6), np.ones((100, 100, 1), dtype=np.uint8))
    exif = exif_with_orientation(6)
    path = save(Image.fromarray(stored), tmp_path / "rotated.jpg", exif=exif, quality=95)
    assert read_image_size(path) == (400, 200)
    loaded = load_image_rgb(path, max_side=100)
    assert loaded.shape == (50, 100, 3)
    np.testing.assert_allclose(loaded[12, 12], RED, atol=30)
    np.testing.assert_allclose(loaded[37, 87], BLUE, atol=30)


@pytest.mark.parametrize(("orientation", "expected"), [(None, (64, 32)), (6, (32, 64))])
def test_read_image_size_does_not_decode_pixels(tmp_path, orientation, expected):
    # Cutting the file inside the pixel data leaves the header, EXIF included, readable:
    # a size read that decoded pixels would fail here. Without EXIF, Pillow's PNG
    # getexif() would decode the pixels looking for EXIF stored after them.
    params = {} if orientation is None else {"exif": exif_with_orientation(orientation)}
    data = io.BytesIO()
    noise_image((64, 32)).save(data, format="PNG", **params)
    path = tmp_path / "cut.png"
    path.write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    assert read_image_size(path) == expected


# --- modes ----------------------------------------------------------------------------


def test_rgb_result_is_writable_c_contiguous_uint8(tmp_path):
    pixels = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    path = save(Image.fromarray(pixels), tmp_path / "rgb.png")
    loaded = load_image_rgb(path)
    np.testing.assert_array_equal(loaded, pixels)
    assert loaded.dtype == np.uint8
    assert loaded.flags.c_contiguous and loaded.flags.writeable


def test_grayscale(tmp_path):
    path = save(gray_row("L", [0, 77, 255]), tmp_path / "l.png")
    np.testing.assert_array_equal(load_image_rgb(path), as_rgb_row([0, 77, 255]))


def test_bilevel(tmp_path):
    path = save(gray_row("1", [0, 1, 0]), tmp_path / "bilevel.png")
    with Image.open(path) as image:
        assert image.mode == "1"
    np.testing.assert_array_equal(load_image_rgb(path), as_rgb_row([0, 255, 0]))


def palette_image() -> Image.Image:
    """Three pixels using palette entries 0 (red), 1 (green), 2 (blue)."""
    image = gray_row("P", [0, 1, 2])
    image.putpalette([*RED, *GREEN, *BLUE])
    return image


def test_palette_without_transparency(tmp_path):
    path = save(palette_image(), tmp_path / "p.png")
    np.testing.assert_array_equal(load_image_rgb(path), [[RED, GREEN, BLUE]])


def test_palette_transparent_index_becomes_white(tmp_path):
    path = save(palette_image(), tmp_path / "p.png", transparency=0)
    np.testing.assert_array_equal(load_image_rgb(path), [[WHITE, GREEN, BLUE]])


def test_palette_with_partial_alpha_is_blended_over_white(tmp_path):
    # Per-entry alpha: red at alpha 128, green opaque, blue fully transparent.
    path = save(palette_image(), tmp_path / "p.png", transparency=bytes([128, 255, 0]))
    loaded = load_image_rgb(path).astype(int)
    np.testing.assert_allclose(loaded[0, 0], (255, 127, 127), atol=1)
    np.testing.assert_array_equal(loaded[0, 1:], [GREEN, WHITE])


def test_rgba_transparency_is_composited_over_white(tmp_path):
    # A fully transparent pixel whose stored colour is red, a half-transparent black one
    # and an opaque green one.
    image = Image.new("RGBA", (3, 1))
    image.putdata([(255, 0, 0, 0), (0, 0, 0, 128), (0, 255, 0, 255)])
    path = save(image, tmp_path / "rgba.png")
    loaded = load_image_rgb(path).astype(int)
    assert tuple(loaded[0, 0]) == WHITE
    np.testing.assert_allclose(loaded[0, 1], (127, 127, 127), atol=1)
    assert tuple(loaded[0, 2]) == GREEN


def test_gray_alpha_is_composited_over_white(tmp_path):
    path = save(gray_row("LA", [(0, 0), (100, 255), (0, 128)]), tmp_path / "la.png")
    loaded = load_image_rgb(path).astype(int)
    assert tuple(loaded[0, 0]) == WHITE
    assert tuple(loaded[0, 1]) == (100, 100, 100)
    np.testing.assert_allclose(loaded[0, 2], (127, 127, 127), atol=1)


def test_grayscale_transparent_value_becomes_white(tmp_path):
    path = save(gray_row("L", [0, 77]), tmp_path / "l_trns.png", transparency=0)
    np.testing.assert_array_equal(load_image_rgb(path), [[WHITE, (77, 77, 77)]])


def cmyk_swatches() -> Image.Image:
    """16x16 blocks of pure red, white and black in CMYK."""
    image = Image.new("CMYK", (48, 16))
    for index, ink in enumerate([(0, 255, 255, 0), (0, 0, 0, 0), (0, 0, 0, 255)]):
        image.paste(ink, (16 * index, 0, 16 * index + 16, 16))
    return image


def test_cmyk_jpeg(tmp_path):
    # Pillow writes CMYK JPEGs Adobe-style, with inverted ink values; reading them back
    # without undoing the inversion would turn red into cyan.
    path = save(cmyk_swatches(), tmp_path / "cmyk.jpg", quality=95)
    with Image.open(path) as image:
        assert image.mode == "CMYK" and "adobe" in image.info
    loaded = load_image_rgb(path).astype(int)
    np.testing.assert_allclose(loaded[8, 8::16], [RED, WHITE, (0, 0, 0)], atol=8)


def test_cmyk_tiff(tmp_path):
    path = save(cmyk_swatches(), tmp_path / "cmyk.tif")
    np.testing.assert_array_equal(load_image_rgb(path)[8, 8::16], [RED, WHITE, (0, 0, 0)])


# 0, 100 and 255 are exact multiples of 257; 257 * 100 + 128 and + 129 sit either side of
# the rounding midpoint, where keeping the high byte or dividing without rounding fail.
SIXTEEN_BIT_VALUES = [0, 257 * 100, 65535, 257 * 100 + 128, 257 * 100 + 129]
SIXTEEN_BIT_EXPECTED = [0, 100, 255, 100, 101]


def test_16_bit_png_is_rescaled_with_rounding(tmp_path):
    samples = np.array([SIXTEEN_BIT_VALUES], dtype=np.uint16)
    path = save(Image.fromarray(samples), tmp_path / "g16.png")
    with Image.open(path) as image:
        assert image.mode.startswith("I")
    np.testing.assert_array_equal(load_image_rgb(path), as_rgb_row(SIXTEEN_BIT_EXPECTED))


def test_16_bit_big_endian_tiff_is_rescaled_with_rounding(tmp_path):
    path = save(gray_row("I;16B", SIXTEEN_BIT_VALUES), tmp_path / "g16b.tif")
    with Image.open(path) as image:
        assert image.mode == "I;16B"
    np.testing.assert_array_equal(load_image_rgb(path), as_rgb_row(SIXTEEN_BIT_EXPECTED))


def test_32_bit_integer_tiff_is_read_as_16_bit_and_clipped(tmp_path):
    path = save(gray_row("I", [-3, 257 * 100, 70000]), tmp_path / "i32.tif")
    np.testing.assert_array_equal(load_image_rgb(path), as_rgb_row([0, 100, 255]))


def test_float_tiff_is_clipped_and_rounded(tmp_path):
    values = [-5.0, 100.4, 100.6, 300.0, float("nan")]
    path = save(Image.fromarray(np.array([values], dtype=np.float32)), tmp_path / "f.tif")
    with Image.open(path) as image:
        assert image.mode == "F"
    np.testing.assert_array_equal(load_image_rgb(path), as_rgb_row([0, 100, 101, 255, 0]))


def test_ycbcr_tiff(tmp_path):
    path = save(Image.new("RGB", (4, 4), RED).convert("YCbCr"), tmp_path / "ycc.tif")
    with Image.open(path) as image:
        assert image.mode == "YCbCr"
    np.testing.assert_allclose(load_image_rgb(path)[0, 0].astype(int), RED, atol=3)


def test_lab_tiff_is_converted_not_reinterpreted(tmp_path):
    # L* = 50 with no chroma is a neutral grey of sRGB value 119; copying the LAB bytes
    # as RGB would give 128.
    path = save(Image.new("LAB", (2, 2), (128, 128, 128)), tmp_path / "lab.tif")
    loaded = load_image_rgb(path).astype(int)
    np.testing.assert_allclose(loaded[0, 0], (119, 119, 119), atol=2)


# --- downscaling ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "max_side", "expected"),
    [
        ((400, 300), 100, (100, 75)),
        ((300, 400), 100, (75, 100)),
        ((100, 50), 100, (100, 50)),
        ((50, 30), 100, (50, 30)),
        ((1000, 3), 100, (100, 1)),
    ],
)
def test_fit_within(size, max_side, expected):
    assert fit_within(size, max_side) == expected


def halves_image(size: tuple[int, int]) -> Image.Image:
    """Left half red, right half blue."""
    image = Image.new("RGB", size, RED)
    image.paste(BLUE, (size[0] // 2, 0, size[0], size[1]))
    return image


def test_jpeg_downscale_uses_draft_and_keeps_aspect(tmp_path, monkeypatch):
    drafted_sizes = []
    draft = JpegImagePlugin.JpegImageFile.draft

    def recording_draft(self, mode, size):
        result = draft(self, mode, size)
        drafted_sizes.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", recording_draft)
    path = save(halves_image((1600, 1200)), tmp_path / "big.jpg", quality=95)
    loaded = load_image_rgb(path, max_side=100)
    assert loaded.shape == (75, 100, 3)
    # The decoder itself shrank the image, but not below the requested size.
    assert len(drafted_sizes) == 1
    assert 100 <= drafted_sizes[0][0] < 1600
    np.testing.assert_allclose(loaded[37, 10].astype(int), RED, atol=20)
    np.testing.assert_allclose(loaded[37, 90].astype(int), BLUE, atol=20)


# 800 x 121 drafts to 200 x 31 (heights round up), which alone would fit to 100 x 16
# rather than the 100 x 15 of the full-size image.
@pytest.mark.parametrize(
    ("size", "name"),
    [((800, 121), "odd.jpg"), ((2001, 1001), "big.jpg"), ((1000, 10), "strip.png")],
)
def test_downscaled_shape_matches_read_image_size(tmp_path, size, name):
    path = save(halves_image(size), tmp_path / name)
    width, height = fit_within(read_image_size(path), 100)
    assert load_image_rgb(path, max_side=100).shape == (height, width, 3)


@pytest.mark.parametrize("max_side", [50, 100])
def test_never_upscales(tmp_path, max_side):
    pixels = np.asarray(noise_image((50, 30)))
    path = save(Image.fromarray(pixels), tmp_path / "small.png")
    np.testing.assert_array_equal(load_image_rgb(path, max_side=max_side), pixels)


def test_max_side_below_one_is_rejected(tmp_path):
    path = save(halves_image((8, 8)), tmp_path / "x.png")
    with pytest.raises(ValueError, match="max_side"):
        load_image_rgb(path, max_side=0)


# --- errors ---------------------------------------------------------------------------


def jpeg_bytes() -> bytes:
    data = io.BytesIO()
    noise_image((64, 64)).save(data, format="JPEG", quality=90)
    return data.getvalue()


def png_bytes() -> bytes:
    data = io.BytesIO()
    noise_image((64, 64)).save(data, format="PNG")
    return data.getvalue()


def assert_load_error(excinfo: pytest.ExceptionInfo, path: Path, reason: str) -> None:
    assert isinstance(excinfo.value, ImageLoadError)
    assert str(path) in str(excinfo.value)
    assert reason in excinfo.value.reason


@pytest.mark.parametrize("reader", [load_image_rgb, read_image_size])
def test_missing_file(tmp_path, reader):
    path = tmp_path / "absent.jpg"
    with pytest.raises(ImageLoadError) as excinfo:
        reader(path)
    assert_load_error(excinfo, path, "file not found")


@pytest.mark.parametrize("reader", [load_image_rgb, read_image_size])
def test_zero_byte_file(tmp_path, reader):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageLoadError) as excinfo:
        reader(path)
    assert_load_error(excinfo, path, "empty file")


@pytest.mark.parametrize("reader", [load_image_rgb, read_image_size])
def test_text_file(tmp_path, reader):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n")
    with pytest.raises(ImageLoadError) as excinfo:
        reader(str(path))
    assert_load_error(excinfo, path, "not an image file")


@pytest.mark.parametrize("reader", [load_image_rgb, read_image_size])
def test_directory(tmp_path, reader):
    with pytest.raises(ImageLoadError) as excinfo:
        reader(tmp_path)
    assert_load_error(excinfo, tmp_path, "directory")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
@pytest.mark.parametrize("reader", [load_image_rgb, read_image_size])
def test_fifo_is_refused_without_blocking(tmp_path, reader):
    path = tmp_path / "pipe.jpg"
    os.mkfifo(path)
    # Opening a FIFO with no writer blocks forever; a thread keeps a regression from freezing
    # the suite, and the opened write end (were the reader to open it) would unblock it.
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(reader, path)
        try:
            error = future.exception(timeout=10)
        finally:
            if not future.done():
                with open(path, "wb"):
                    pass
    assert isinstance(error, ImageLoadError)
    assert str(path) in str(error) and "not a regular file (a FIFO)" in error.reason


@pytest.mark.skipif(not Path("/dev/null").exists(), reason="no /dev/null")
@pytest.mark.parametrize("reader", [load_image_rgb, read_image_size])
def test_device_is_refused(reader):
    with pytest.raises(ImageLoadError) as excinfo:
        reader("/dev/null")
    assert_load_error(excinfo, Path("/dev/null"), "not a regular file (a character device)")


@pytest.mark.parametrize("reader", [load_image_rgb, read_image_size])
def test_decompression_bomb(tmp_path, reader, monkeypatch):
    path = save(halves_image((20, 20)), tmp_path / "bomb.png")
    # Pillow refuses images over twice this many pixels.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageLoadError) as excinfo:
        reader(path)
    assert_load_error(excinfo, path, "decompression bomb")


@pytest.mark.parametrize(("name", "encode"), [("cut.jpg", jpeg_bytes), ("cut.png", png_bytes)])
@pytest.mark.parametrize("max_side", [None, 16])
def test_truncated_image(tmp_path, name, encode, max_side):
    data = encode()
    path = tmp_path / name
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError) as excinfo:
        load_image_rgb(path, max_side=max_side)
    assert_load_error(excinfo, path, "truncated or corrupt image data")
    # Detection must not have come from flipping Pillow's process-wide switch.
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


# --- encoding -------------------------------------------------------------------------


def test_encode_jpeg_round_trip_is_deterministic_and_has_no_exif():
    pixels = np.asarray(halves_image((64, 32)))
    encoded = encode_jpeg(pixels, quality=95)
    assert encoded == encode_jpeg(pixels.copy(), quality=95)
    with Image.open(io.BytesIO(encoded)) as image:
        assert image.format == "JPEG"
        assert "exif" not in image.info and not image.getexif()
        decoded = np.asarray(image.convert("RGB")).astype(int)
    assert decoded.shape == (32, 64, 3)
    np.testing.assert_allclose(decoded[16, 8], RED, atol=20)
    np.testing.assert_allclose(decoded[16, 56], BLUE, atol=20)


def test_encode_jpeg_quality_changes_the_encoding():
    pixels = np.asarray(noise_image((64, 64)))
    assert len(encode_jpeg(pixels, quality=30)) < len(encode_jpeg(pixels, quality=95))


def test_encode_jpeg_accepts_non_contiguous_input():
    pixels = np.asarray(halves_image((64, 32)))
    flipped = pixels[:, ::-1]
    assert encode_jpeg(flipped) == encode_jpeg(np.ascontiguousarray(flipped))


@pytest.mark.parametrize(
    "pixels",
    [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 3), np.float32)],
)
def test_encode_jpeg_rejects_non_rgb_uint8(pixels):
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        encode_jpeg(pixels)


@pytest.mark.parametrize("quality", [0, 101])
def test_encode_jpeg_rejects_bad_quality(quality):
    with pytest.raises(ValueError, match="quality"):
        encode_jpeg(np.zeros((4, 4, 3), np.uint8), quality=quality)
