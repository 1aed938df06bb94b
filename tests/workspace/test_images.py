"""Tests for `sandbox.images`: decoding user files, MNIST-style preprocessing, URL codes.

Every file is generated here with PIL (or patched by hand, for broken headers); the only file
read from disk is the bundled MNIST test set, read directly (not through `pretrained.data`).
"""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFile, ImageFilter

from sandbox import images
from sandbox.images import (
    MAX_PIXELS,
    MAX_UPLOAD_BYTES,
    ImageError,
    canvas_to_mnist,
    decode_image,
    decode_image28,
    encode_image,
    mnist_style,
)

MNIST_TEST = Path(__file__).resolve().parents[2] / "pretrained/data/mnist/t10k-images-idx3-ubyte.gz"


@pytest.fixture(scope="module")
def mnist_digits() -> np.ndarray:
    """The first 5 MNIST test digits, (5, 28, 28) uint8, read from the idx file by hand."""
    with gzip.open(MNIST_TEST, "rb") as f:
        header = f.read(16)
        magic, n, rows, cols = struct.unpack(">IIII", header)
        assert (magic, rows, cols) == (2051, 28, 28)
        return np.frombuffer(f.read(5 * 784), dtype=np.uint8).reshape(5, 28, 28)


def png_bytes(img: Image.Image, **save) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **save)
    return buf.getvalue()


def encoded(img: Image.Image, fmt: str, **save) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


def patch_png_size(data: bytes, width: int, height: int) -> bytes:
    """Rewrite a PNG's IHDR width/height (and its CRC): a header that lies about the size."""
    assert data[12:16] == b"IHDR"
    ihdr = b"IHDR" + struct.pack(">II", width, height) + data[24:29]
    return data[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + data[33:]


def black_on_white(digit28: np.ndarray, factor: int = 10) -> Image.Image:
    """An MNIST digit as a user would photograph it: enlarged, dark ink on white paper."""
    big = np.kron(digit28, np.ones((factor, factor), dtype=np.uint8))
    return Image.fromarray(255 - big, "L")


def centre_of_mass(a: np.ndarray) -> tuple[float, float]:
    yy, xx = np.mgrid[0 : a.shape[0], 0 : a.shape[1]]
    return float((a * yy).sum() / a.sum()), float((a * xx).sum() / a.sum())


def bbox_longest_side(a: np.ndarray) -> int:
    rows, cols = np.flatnonzero(a.any(axis=1)), np.flatnonzero(a.any(axis=0))
    return int(max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1)


def assert_mnist_shaped(x: np.ndarray) -> None:
    assert x.shape == (28, 28) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() == pytest.approx(1.0)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def sample_digit() -> Image.Image:
    """A dark, antialiased "7" with a foot on white, 120x160."""
    img = Image.new("L", (120, 160), 255)
    draw = ImageDraw.Draw(img)
    draw.line([(20, 25), (100, 25), (45, 140)], fill=0, width=12)
    draw.line([(30, 140), (70, 140)], fill=0, width=10)
    return img.filter(ImageFilter.GaussianBlur(2))  # soft edges: the grey levels matter too


# --------------------------------------------------------------------------------------------
# mnist_style on real MNIST digits


def test_mnist_digit_round_trip(mnist_digits):
    for digit in mnist_digits:
        x = mnist_style(decode_image(png_bytes(black_on_white(digit))))
        assert_mnist_shaped(x)
        assert pearson(x, digit) > 0.9
        cy, cx = centre_of_mass(x)
        assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1
        assert 19 <= bbox_longest_side(x > 0) <= 21


def test_mnist_style_accepts_arrays_in_either_polarity(mnist_digits):
    digit = mnist_digits[0]
    from_array = mnist_style(digit)  # already white on black, uint8
    from_floats = mnist_style(1.0 - digit / 255.0)  # black on white, float in [0, 1]
    assert pearson(from_array, digit) > 0.9
    np.testing.assert_allclose(from_array, from_floats, atol=1e-5)


def test_mnist_style_keeps_aspect_ratio_and_centres_off_centre_ink():
    a = np.zeros((100, 300), dtype=np.uint8)
    a[5:45, 200:210] = 255  # a tall thin bar in the top-right corner: 40 x 10
    x = mnist_style(a)
    rows, cols = np.flatnonzero((x > 0).any(axis=1)), np.flatnonzero((x > 0).any(axis=0))
    assert rows[-1] - rows[0] + 1 == 20 and cols[-1] - cols[0] + 1 == 5
    cy, cx = centre_of_mass(x)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5


def test_mnist_style_large_photo_like_small(mnist_digits):
    small = mnist_style(black_on_white(mnist_digits[1], factor=10))  # 280 px
    large = mnist_style(black_on_white(mnist_digits[1], factor=100))  # 2800 px: reduced first
    assert pearson(small, large) > 0.98


@pytest.mark.parametrize("value", [0, 128, 255])
def test_mnist_style_blank_image(value):
    with pytest.raises(ImageError, match="No digit found: the image is blank"):
        mnist_style(Image.new("L", (50, 40), value))


# --------------------------------------------------------------------------------------------
# decode_image: bad inputs


def test_empty_file():
    with pytest.raises(ImageError, match=r"empty \(0 bytes\)"):
        decode_image(b"")


def test_file_over_byte_limit():
    with pytest.raises(ImageError, match=r"too large: 20\.0 MB; the limit is 20\.0 MB"):
        decode_image(b"\x89PNG" + bytes(MAX_UPLOAD_BYTES))
    with pytest.raises(ImageError, match=r"the limit is 0\.0 MB"):
        decode_image(png_bytes(sample_digit()), max_bytes=100)


@pytest.mark.parametrize(
    "data, kind",
    [
        (b"Just some notes, not a picture.\n" * 10, "text file"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n", "PDF"),
        (bytes(range(256)) * 4, None),
    ],
)
def test_not_an_image(data, kind):
    with pytest.raises(ImageError, match="not a PNG, JPEG, GIF, BMP or WebP image") as e:
        decode_image(data)
    if kind:
        assert kind in str(e.value)


def test_unsupported_format_is_refused_by_name():
    tiff = encoded(sample_digit(), "TIFF")  # Pillow could read it, but uploads are limited
    with pytest.raises(ImageError, match="not a PNG, JPEG, GIF, BMP or WebP.*TIFF"):
        decode_image(tiff)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "WEBP"])
def test_truncated_image(fmt):
    data = encoded(sample_digit().convert("RGB"), fmt)
    with pytest.raises(ImageError, match="corrupt or truncated"):
        decode_image(data[: len(data) // 2])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_corrupt_png_data_and_header():
    data = bytearray(png_bytes(sample_digit()))
    idat = data.index(b"IDAT")
    data[idat + 20 : idat + 60] = bytes(40)  # compressed pixels overwritten (CRC now wrong)
    with pytest.raises(ImageError, match="PNG file is corrupt or truncated"):
        decode_image(bytes(data))
    bad_header = bytearray(png_bytes(sample_digit()))
    bad_header[16:20] = b"\xff\xff\xff\xff"  # width changed without fixing the CRC
    with pytest.raises(ImageError, match="starts like a PNG image but its header is corrupt"):
        decode_image(bytes(bad_header))


def test_decompression_bomb_refused_from_header():
    # 20000 x 20000 claimed by a ~100-byte file: refused before any pixel is decoded (Pillow
    # itself refuses it on open, before reporting the size; the message still names it).
    bomb = patch_png_size(png_bytes(Image.new("L", (8, 8))), 20000, 20000)
    assert len(bomb) < 200
    with pytest.raises(ImageError) as e:
        decode_image(bomb)
    message = str(e.value)
    assert "20000 × 20000" in message and f"the limit is {MAX_PIXELS:,} pixels" in message


def test_image_over_pixel_limit_but_under_pillow_limit():
    # 8000 x 6000 = 48 MP: above our 40 MP, below Pillow's own warning (89 MP).
    data = patch_png_size(png_bytes(Image.new("L", (8, 8))), 8000, 6000)
    with pytest.raises(ImageError, match=r"8000 × 6000 = 48,000,000 pixels; the limit is 40,000"):
        decode_image(data)
    with pytest.raises(ImageError, match=r"120 × 160 .* the limit is 1,000 pixels"):
        decode_image(png_bytes(sample_digit()), max_pixels=1000)


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "BMP"])
def test_zero_size_image(fmt):
    data = bytearray(encoded(Image.new("L", (8, 8)), fmt))
    if fmt == "PNG":
        data = bytearray(patch_png_size(bytes(data), 0, 8))
    elif fmt == "GIF":
        data[6:10] = bytes(4)  # logical screen width, height (alone, Pillow uses the frame's)
        start = data.index(b"\x2c")  # first image descriptor: left, top, width, height
        data[start + 5 : start + 9] = bytes(4)
    else:
        data[18:22] = bytes(4)  # width
    with pytest.raises(ImageError, match=f"The {fmt} image is empty: its header says 0 × "):
        decode_image(bytes(data))


# --------------------------------------------------------------------------------------------
# decode_image: conversions


def reference() -> np.ndarray:
    return mnist_style(sample_digit())


def test_plain_png_is_loaded_greyscale_without_note():
    img = decode_image(png_bytes(sample_digit()))
    assert img.mode == "L" and img.size == (120, 160) and "saliency_note" not in img.info
    assert np.asarray(img)[0, 0] == 255  # loaded: the pixels are readable with the file gone


def test_16_bit_png_matches_8_bit():
    eight = np.asarray(sample_digit(), dtype=np.uint16)
    sixteen = Image.fromarray(eight * 257)  # 0..65535: clipping at 255 would make it all white
    data = png_bytes(sixteen)
    img = decode_image(data)
    assert Image.open(io.BytesIO(data)).mode.startswith("I") and img.mode == "L"
    np.testing.assert_array_equal(np.asarray(img), np.asarray(sample_digit()))
    np.testing.assert_allclose(mnist_style(img), reference(), atol=1e-6)


def test_cmyk_jpeg():
    data = encoded(sample_digit().convert("CMYK"), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    img = decode_image(data)
    assert img.mode == "RGB"
    assert pearson(mnist_style(img), reference()) > 0.99


def test_rgba_transparent_background_dark_strokes():
    # Opaque black strokes on a transparent background whose hidden colour is also black:
    # dropping alpha would give an all-black, blank image.
    mask = 255 - np.asarray(sample_digit())
    rgba = np.zeros((160, 120, 4), dtype=np.uint8)
    rgba[..., 3] = mask
    img = decode_image(png_bytes(Image.fromarray(rgba, "RGBA")))
    assert img.mode == "L" and "alpha channel" in img.info["saliency_note"]
    np.testing.assert_array_equal(np.asarray(img), np.asarray(sample_digit()))  # dark on white
    np.testing.assert_allclose(mnist_style(img), reference(), atol=1e-6)


def test_rgba_multicoloured_content_composited_onto_white():
    rgba = np.zeros((160, 120, 4), dtype=np.uint8)
    rgba[..., 3] = 255 - np.asarray(sample_digit())
    rgba[:80, :, :3] = (0, 0, 120)  # dark blue top half, black bottom half
    rgba[40:60, 40:60, :3] = 255  # hidden (transparent) white: must not show
    img = decode_image(png_bytes(Image.fromarray(rgba, "RGBA")))
    assert "white background" in img.info["saliency_note"]
    assert np.asarray(img)[50, 50].tolist() == [255, 255, 255]
    assert pearson(mnist_style(img), reference()) > 0.99


def test_la_light_strokes_on_transparent():
    alpha = Image.fromarray(255 - np.asarray(sample_digit()), "L")
    la = Image.merge("LA", [Image.new("L", (120, 160), 230), alpha])
    img = decode_image(png_bytes(la))
    assert np.asarray(img)[0, 0] == 0  # light ink stays light: transparent -> black background
    np.testing.assert_allclose(mnist_style(img), reference(), atol=1e-6)


def test_animated_gif_uses_first_frame_and_says_so():
    first = sample_digit()
    others = [Image.new("L", first.size, 255), Image.new("L", first.size, 0)]
    data = encoded(first, "GIF", save_all=True, append_images=others, duration=100, loop=0)
    img = decode_image(data)
    assert img.info["saliency_note"] == "animated image: using the first of 3 frames"
    np.testing.assert_allclose(mnist_style(img), reference(), atol=1e-6)


def test_animated_webp_uses_first_frame():
    first = sample_digit().convert("RGB")
    data = encoded(first, "WEBP", save_all=True, append_images=[Image.new("RGB", first.size)])
    img = decode_image(data)
    assert "first of 2 frames" in img.info["saliency_note"]
    assert pearson(mnist_style(img), reference()) > 0.99


@pytest.mark.parametrize("transparency", [None, 0])
def test_palette_png(transparency):
    pal = sample_digit().convert("RGB").quantize(colors=4)
    extra = {} if transparency is None else {"transparency": int(np.asarray(pal)[0, 0])}
    img = decode_image(png_bytes(pal, **extra))
    assert img.mode in ("L", "RGB") and "transparency" not in img.info
    assert pearson(mnist_style(img), reference()) > 0.99


def test_one_bit_and_float_images():
    one_bit = sample_digit().convert("1")
    img = decode_image(png_bytes(one_bit))
    assert img.mode == "L"
    np.testing.assert_array_equal(np.asarray(img), np.asarray(one_bit.convert("L")))
    as_float = Image.fromarray(np.asarray(sample_digit(), dtype=np.float32) / 255.0, "F")
    np.testing.assert_allclose(mnist_style(as_float), reference(), atol=1e-6)


def test_exif_orientation_6_is_applied():
    # Stored landscape 160x120 with the ink in the top-left corner; orientation 6 means "rotate
    # 90 degrees clockwise to display", so it shows as 120x160 with the ink in the top-right.
    stored = Image.new("L", (160, 120), 255)
    ImageDraw.Draw(stored).rectangle([10, 10, 50, 40], fill=0)
    exif = Image.Exif()
    exif[0x0112] = 6
    img = decode_image(encoded(stored, "JPEG", exif=exif.tobytes(), quality=95))
    assert img.size == (120, 160)
    a = np.asarray(img) < 128
    assert a[:60, 60:].sum() > 0.9 * a.sum()  # top right holds the ink
    assert a[:, :60].sum() == 0


# --------------------------------------------------------------------------------------------
# canvas_to_mnist


def stroke_canvas(background_alpha: int) -> np.ndarray:
    canvas = np.zeros((280, 280, 4), dtype=np.uint8)
    canvas[..., 3] = background_alpha
    if background_alpha == 0:
        canvas[..., :3] = 255  # hidden white: only alpha tells the stroke apart
    canvas[40:240, 130:150] = 255  # a thick white vertical stroke
    return canvas


@pytest.mark.parametrize("background_alpha", [0, 255])
def test_canvas_vertical_stroke(background_alpha):
    x = canvas_to_mnist(stroke_canvas(background_alpha))
    assert_mnist_shaped(x)
    cy, cx = centre_of_mass(x)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5
    rows, cols = np.flatnonzero((x > 0.5).any(axis=1)), np.flatnonzero((x > 0.5).any(axis=0))
    assert rows[-1] - rows[0] + 1 == 20 and cols[-1] - cols[0] + 1 == 2


def test_canvas_coloured_stroke_as_float():
    canvas = np.zeros((280, 280, 4), dtype=np.float32)
    canvas[40:240, 130:150] = (0.0, 0.0, 1.0, 1.0)  # blue on transparent, floats in [0, 1]
    np.testing.assert_allclose(canvas_to_mnist(canvas), canvas_to_mnist(stroke_canvas(0)))


@pytest.mark.parametrize(
    "canvas",
    [
        np.zeros((280, 280, 4), dtype=np.uint8),  # nothing at all
        np.concatenate([np.full((280, 280, 3), 255), np.zeros((280, 280, 1))], axis=-1),
        stroke_canvas(255)[..., :4] * np.uint8([0, 0, 0, 1]),  # opaque black, no strokes
    ],
    ids=["zeros", "transparent-white", "opaque-black"],
)
def test_empty_canvas(canvas):
    with pytest.raises(ImageError, match=r"^The canvas is empty: draw a digit first\.$"):
        canvas_to_mnist(canvas)


# --------------------------------------------------------------------------------------------
# URL codes


def test_encode_decode_round_trip_exact():
    q = np.random.default_rng(0).integers(0, 256, size=(28, 28), dtype=np.uint8)
    x = q.astype(np.float32) / 255
    code = encode_image(x)
    assert len(code) == 1046 and code == encode_image(q)
    assert set(code) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    back = decode_image28(code)
    assert back.dtype == np.float32 and back.shape == (28, 28)
    np.testing.assert_array_equal(back, x)


def test_decode_garbage_codes():
    good = encode_image(np.zeros((28, 28), dtype=np.uint8))
    with pytest.raises(ImageError, match="has 3 characters, expected 1046"):
        decode_image28("abc")
    with pytest.raises(ImageError, match="has 1045 characters"):
        decode_image28(good[:-1])
    with pytest.raises(ImageError, match="characters other than letters, digits"):
        decode_image28("!" + good[1:])
    with pytest.raises(ImageError, match="corrupt"):
        decode_image28(good[:-1] + "B")  # decodes, but no image encodes to it


def test_large_transparent_image_is_reduced_before_float_work():
    # A valid, very compressible 24 MP RGBA PNG with one transparent pixel: flattening its alpha
    # at full size would take gigabytes of float copies.
    rgba = np.zeros((4000, 6000, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[1500:2500, 2800:3200, :3] = 255  # a white bar on black
    rgba[0, 0, 3] = 0
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG", compress_level=1)
    img = decode_image(buf.getvalue())
    assert img.mode in ("L", "RGB")
    assert img.width * img.height <= images.WORKING_PIXELS
    assert img.size == (2000, 1334)  # reduced by 3
    assert "reduced from 6000 × 4000 to 2000 × 1334" in img.info[images.NOTE_KEY]
    digit = mnist_style(img)
    assert digit.shape == (28, 28) and digit.max() == pytest.approx(1.0)


def test_large_palette_image_is_expanded_then_reduced():
    p = Image.new("P", (3000, 2000), 0)
    p.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    p.paste(1, (1400, 500, 1600, 1500))
    buf = io.BytesIO()
    p.save(buf, format="PNG", transparency=0)
    img = decode_image(buf.getvalue())
    assert img.width * img.height <= images.WORKING_PIXELS
    assert mnist_style(img).max() == pytest.approx(1.0)


def test_running_out_of_memory_is_a_clear_message(monkeypatch):
    def boom(img):
        raise MemoryError

    monkeypatch.setattr(images, "_to_l_or_rgb", boom)
    with pytest.raises(ImageError, match=r"too large to process here; please shrink it first"):
        decode_image(png_bytes(Image.new("L", (8, 8))))
