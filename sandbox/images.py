"""User images -> MNIST-style 28x28 digits: safe decoding, MNIST preprocessing, URL sharing.

    >>> img = decode_image(uploaded_bytes)          # PIL "L" or "RGB", fully loaded
    >>> img.info.get("saliency_note")  # e.g. "animated image: using the first of 3 frames"
    >>> x = mnist_style(img)                        # (28, 28) float32 in [0, 1], white ink on black
    >>> x = canvas_to_mnist(canvas_rgba)            # (H, W, 4) drawing -> (28, 28)
    >>> rgba = decode_canvas_png(data_url, width=280, height=280)  # what a browser sent, checked
    >>> decode_image28(encode_image(x))             # 1046 URL-safe characters and back

Every problem a user can cause (wrong file type, corrupt, too big, blank) raises `ImageError`,
whose message is meant to be shown to them as is. Pure functions on PIL and numpy; never
streamlit, and no global Pillow settings are changed (LOAD_TRUNCATED_IMAGES, MAX_IMAGE_PIXELS).
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
import struct
import warnings
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# Re-exported: the canvas's PNG reader and the error are their own modules (issue 31).
from .canvas_png import MAX_CANVAS_PIXELS, decode_canvas_png, png_header
from .image_errors import _DECODE_ERRORS, ImageError

__all__ = [
    "MAX_CANVAS_PIXELS",
    "MAX_PIXELS",
    "MAX_UPLOAD_BYTES",
    "ImageError",
    "canvas_to_mnist",
    "decode_canvas_png",
    "decode_image",
    "decode_image28",
    "encode_image",
    "mnist_style",
    "png_header",
]

MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # same as .streamlit/config.toml server.maxUploadSize = 20 (MB)
MAX_PIXELS = 40_000_000  # width * height, checked from the header before any pixel is decoded

FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
_FORMATS_TEXT = "a PNG, JPEG, GIF, BMP or WebP image"

NOTE_KEY = "saliency_note"  # key in the returned image's .info for things the user should know


# --------------------------------------------------------------------------------------------
# Decoding


def decode_image(
    data: bytes,
    *,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_UPLOAD_BYTES,
    shrink_above: int | None = None,
    shrink_to: int = 1,
    check: Callable[[tuple[int, int]], object] | None = None,
) -> Image.Image:
    """Decode an uploaded file into a fully loaded PIL image in mode "L" or "RGB".

    Accepts PNG, JPEG, GIF, BMP and WebP. The size in pixels is checked from the header before
    any pixel is decoded. Conversions (never errors):

    - animated GIF/WebP: the first frame;
    - EXIF orientation: applied, so the image is upright;
    - 16-bit and 32-bit integer ("I;16", "I") and float ("F") images: scaled to 8 bits over
      their full range (65535 -> 255), not clipped; "1", "P", "CMYK", "YCbCr"...: to "L"/"RGB";
    - transparency (RGBA, LA, PA, P or RGB/L with a transparent colour): see `_flatten_alpha`.
      If the visible pixels are all one colour, the alpha channel *is* the drawing and becomes
      the grey level at full contrast (dark strokes -> dark on white, light strokes -> light
      on black). Otherwise the image is composited onto white if its visible content is dark
      on average, onto black if light, so transparent pixels become background either way.

    What the caller may want to tell the user (animation, transparency) is returned in
    `img.info["saliency_note"]`, a short sentence; the key is absent when there is nothing to
    say. The returned image's `info` holds nothing else.

    Raises ImageError for an empty file, a file over `max_bytes`, a file that is not an image
    of those formats, a corrupt or truncated image, zero width or height, and more than
    `max_pixels` pixels (Pillow's own decompression-bomb limit, ~179 MP, also applies).

    Two hooks for callers that decode many images (a ZIP's): a JPEG of more than `shrink_above`
    pixels is decoded at 1/2, 1/4 or 1/8 of its size in the DCT itself (Pillow's `draft`, a
    fraction of a full decode's work) while its shorter side stays at least `shrink_to`; other
    formats, and smaller JPEGs, are decoded at their size. `check((width, height))` is called
    with the size that will be decoded, after the header is read and before any pixel is: it
    may raise to refuse.
    """
    data = _checked_bytes(data, max_bytes)
    img = _open(data, max_pixels)
    w, h = img.size
    if shrink_above is not None and w * h > shrink_above and img.format == "JPEG":
        factor = min(w, h) / max(shrink_to, 1)  # draft keeps each side >= the size asked for
        if factor >= 2:
            img.draft(img.mode, (math.ceil(w / factor), math.ceil(h / factor)))
    if check is not None:
        check(img.size)
    notes = []
    with warnings.catch_warnings():
        # Locally, so a bomb that slipped past the header check still stops here.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        _load_first_frame(img, max_pixels, notes)
        img = _upright(img)
        try:
            img, shrunk = _working_size(img)
            img, note = _to_l_or_rgb(img)
        except MemoryError as e:
            raise ImageError(
                f"The image ({img.width} × {img.height}) is too large to process here; "
                "please shrink it first."
            ) from e
    if shrunk:
        notes.append(shrunk)
    if note:
        notes.append(note)
    img.info = {NOTE_KEY: "; ".join(notes)} if notes else {}
    return img


def _checked_bytes(data, max_bytes: int) -> bytes:
    """`data` as bytes, refused if it is not bytes, empty or over `max_bytes`."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode_image expects bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) == 0:
        raise ImageError("The file is empty (0 bytes).")
    if len(data) > max_bytes:
        raise ImageError(
            f"The file is too large: {_megabytes(len(data))}; the limit is {_megabytes(max_bytes)}."
        )
    return data


def _load_first_frame(img: ImageFile.ImageFile, max_pixels: int, notes: list[str]) -> None:
    """Decode `img`'s pixels (its first frame, noted in `notes` if it is animated), under the
    caller's DecompressionBombWarning-as-error filter. Raises ImageError."""
    try:
        n_frames = getattr(img, "n_frames", 1)
        if n_frames > 1:
            img.seek(0)
            notes.append(f"animated image: using the first of {n_frames} frames")
        img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise _too_many_pixels(img.size, max_pixels) from e
    except (*_DECODE_ERRORS, MemoryError) as e:
        raise ImageError(
            f"The {img.format or 'image'} file is corrupt or truncated and could not be decoded."
        ) from e


def _open(data: bytes, max_pixels: int) -> ImageFile.ImageFile:
    """Identify the file and read its header; refuse zero-size and too-large images."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=FORMATS)
        except UnidentifiedImageError as e:
            # Pillow also says "cannot identify" when a known format's header is broken.
            claimed = _claimed_format(data)
            if claimed is None:
                raise ImageError(f"This file is not {_FORMATS_TEXT}{_guess_kind(data)}.") from e
            size = _claimed_size(claimed, data)
            if size is not None and 0 in size:
                raise ImageError(
                    f"The {claimed} image is empty: its header says {size[0]} × {size[1]} pixels."
                ) from e
            raise ImageError(
                f"The file starts like a {claimed} image but its header is corrupt or truncated, "
                "so it could not be decoded."
            ) from e
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            # Pillow refused before giving us the size: read it from the header again, for the
            # message only (the plugin constructors parse the header without Pillow's check).
            raise _too_many_pixels(_header_size(data), max_pixels) from e
        except _DECODE_ERRORS as e:
            raise ImageError(
                "The file looks like an image but is corrupt or truncated, so it could not be "
                "decoded."
            ) from e
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageError(f"The image is empty: it is {width} × {height} pixels.")
    if width * height > max_pixels:
        raise _too_many_pixels(img.size, max_pixels)
    return img


_MAGIC = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"BM": "BMP",
}


def _claimed_format(data: bytes) -> str | None:
    """The format the file's first bytes announce, even if its header is then broken."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return next((fmt for magic, fmt in _MAGIC.items() if data.startswith(magic)), None)


def _claimed_size(fmt: str, data: bytes) -> tuple[int, int] | None:
    """(width, height) as written in a PNG, GIF or BMP header (read by hand: Pillow refuses
    zero sizes as unidentifiable), else None."""
    try:
        if fmt == "PNG" and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        if fmt == "GIF":
            return struct.unpack("<HH", data[6:10])
        if fmt == "BMP":
            width, height = struct.unpack("<ii", data[18:26])
            return width, abs(height)  # negative height: rows stored top-down
    except struct.error:
        return None
    return None


def _header_size(data: bytes) -> tuple[int, int] | None:
    for fmt in FORMATS:
        factory, accept = Image.OPEN.get(fmt, (None, None))
        if factory is None or (accept and not accept(data[:16])):
            continue
        try:
            return factory(io.BytesIO(data), "").size
        except Exception:  # only for a nicer message; the file is refused regardless
            return None
    return None


def _too_many_pixels(size: tuple[int, int] | None, max_pixels: int) -> ImageError:
    if size is None:
        return ImageError(
            f"The image has too many pixels: the limit is {max_pixels:,} pixels "
            f"(about {_side(max_pixels)} × {_side(max_pixels)})."
        )
    w, h = size
    return ImageError(
        f"The image is too large: {w} × {h} = {w * h:,} pixels; the limit is {max_pixels:,} "
        f"pixels (about {_side(max_pixels)} × {_side(max_pixels)}). Please shrink it first."
    )


def _side(pixels: int) -> int:
    return int(pixels**0.5)


def _megabytes(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def _guess_kind(data: bytes) -> str:
    """A hint for the error message: what the file seems to be instead."""
    head = data[:16]
    known = {
        b"%PDF": "a PDF document",
        b"PK\x03\x04": "a ZIP archive (or an Office document)",
        b"II*\x00": "a TIFF image",
        b"MM\x00*": "a TIFF image",
        b"\x00\x00\x01\x00": "an icon (ICO) file",
    }
    for magic, kind in known.items():
        if head.startswith(magic):
            return f" (it looks like {kind})"
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"):
        return " (it looks like a HEIC/AVIF photo: export it as JPEG or PNG)"
    if head.lstrip().startswith(b"<svg") or b"<svg" in data[:512]:
        return " (it looks like an SVG drawing)"
    try:
        data[:4096].decode("utf-8")
    except UnicodeDecodeError:
        return ""
    return " (it looks like a text file)"


def _upright(img: Image.Image) -> Image.Image:
    try:
        # In place: otherwise an upright image is copied whole (another 160 MB at 40 MP RGBA).
        ImageOps.exif_transpose(img, in_place=True)
    except (*_DECODE_ERRORS, KeyError):  # broken EXIF is not worth refusing a picture for
        pass
    return img


WORKING_PIXELS = 4_000_000  # larger images are reduced before any per-pixel float work


def _working_size(img: Image.Image) -> tuple[Image.Image, str | None]:
    """Reduce an image above WORKING_PIXELS by an integer factor (box average), keeping its mode
    family, so later float conversions stay small: a 40 MP RGBA photo would otherwise need
    gigabytes of float32 copies. Palette and 1-bit images are expanded to 8 bits first (box
    averaging palette indices would be meaningless)."""
    pixels = img.width * img.height
    if pixels <= WORKING_PIXELS:
        return img, None
    factor = math.ceil(math.sqrt(pixels / WORKING_PIXELS))
    if img.mode in ("P", "PA"):
        img = img.convert("RGBA")
    elif img.mode == "1":
        img = img.convert("L")
    elif img.mode.startswith("I;16"):
        img = img.convert("I")
    w, h = img.size
    small = img.reduce(factor)
    return small, f"large image: reduced from {w} × {h} to {small.width} × {small.height}"


def _to_l_or_rgb(img: Image.Image) -> tuple[Image.Image, str | None]:
    """Any Pillow mode -> ("L" or "RGB" image, note or None)."""
    mode = img.mode
    if mode in ("L", "RGB") and "transparency" not in img.info:
        return img, None
    if mode == "1":
        return img.convert("L"), None
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_to_uint8(np.asarray(img)), mode="L"), None
    if mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in img.info:
        return _flatten_alpha(img)
    if mode == "P":
        return img.convert("RGB"), None
    return img.convert("RGB"), None  # CMYK, YCbCr, LAB, HSV, RGBX


def _to_uint8(a: np.ndarray) -> np.ndarray:
    """Greyscale of any numeric dtype -> uint8, mapping its nominal range onto 0..255.

    uint16 (16-bit PNG, mode "I;16") uses 0..65535. int32 (mode "I", which Pillow uses for some
    16-bit files) uses 0..255 or 0..65535, whichever holds the values, else min..max. Float uses
    0..1 or 0..255, whichever holds the values, else min..max. Scaling (not clipping) keeps
    16-bit images from turning white.
    """
    kind = a.dtype
    a = np.nan_to_num(np.asarray(a, dtype=np.float64), posinf=0.0, neginf=0.0)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if kind == np.uint16:
        scale, offset = 255.0 / 65535.0, 0.0
    elif lo >= 0 and hi <= 1 and np.issubdtype(kind, np.floating):
        scale, offset = 255.0, 0.0
    elif lo >= 0 and hi <= 255:
        scale, offset = 1.0, 0.0
    elif lo >= 0 and hi <= 65535 and np.issubdtype(kind, np.integer):
        scale, offset = 255.0 / 65535.0, 0.0
    else:
        scale, offset = 255.0 / max(hi - lo, 1e-12), lo
    return np.clip(np.rint((a - offset) * scale), 0, 255).astype(np.uint8)


def _flatten_alpha(img: Image.Image) -> tuple[Image.Image, str | None]:
    """Image with transparency -> ("L" or "RGB", note). Transparent pixels become background.

    One-colour drawings (the usual digit drawn on a transparent canvas) carry the shape only in
    alpha, often antialiased, so alpha becomes the grey level at full contrast, keeping the
    strokes' lightness (dark strokes: 255 - alpha, dark on white; light strokes: alpha, light
    on black). Anything else is composited over white if the visible content is dark on average,
    over black if it is light.
    """
    grey_source = img.mode in ("LA", "La") or (
        img.mode in ("L", "I", "I;16") and "transparency" in img.info
    )
    rgba = np.asarray(img.convert("RGBA"), dtype=np.float32)  # (H, W, 4)
    rgb, alpha = rgba[..., :3], rgba[..., 3] / 255.0  # (H, W, 3), (H, W)
    if alpha.min() >= 1.0:  # an alpha channel that is opaque everywhere: nothing to do
        out = Image.fromarray(rgb.astype(np.uint8), "RGB")
        return (out.convert("L") if grey_source else out), None
    visible = alpha > 0
    if not visible.any():
        return Image.new("L", img.size, 0), "the image is fully transparent"
    lum = rgb @ np.float32([0.299, 0.587, 0.114])  # (H, W), ITU-R 601 luma, as Pillow's "L"
    shown = lum[visible]
    mean_lum = float(np.average(shown, weights=alpha[visible]))
    if np.ptp(rgb[visible], axis=0).max() <= 24:  # one colour (allowing JPEG-ish noise)
        grey = alpha * 255.0 if mean_lum >= 128 else 255.0 * (1.0 - alpha)
        out = Image.fromarray(np.rint(grey).astype(np.uint8), "L")
        return out, "transparent image: its alpha channel is used as the drawing"
    background = 255.0 if mean_lum < 128 else 0.0
    flat = rgb * alpha[..., None] + background * (1.0 - alpha[..., None])
    out = Image.fromarray(np.rint(flat).astype(np.uint8), "RGB")
    if grey_source:
        out = out.convert("L")
    colour = "white" if background else "black"
    return out, f"transparent image: transparent pixels shown as {colour} background"


# --------------------------------------------------------------------------------------------
# MNIST preprocessing


def mnist_style(image: Image.Image | np.ndarray, *, ink_threshold: float = 0.2) -> np.ndarray:
    """Turn a picture of one digit into an MNIST-like (28, 28) float32 array in [0, 1].

    Follows how MNIST was made: greyscale; inverted if the background (median of the border
    pixels) is light, so the ink is white on black; the background level subtracted; cropped to
    the ink's bounding box (pixels above `ink_threshold` times the brightest ink); resized
    (antialiased) so the longer side is 20 px, keeping the aspect ratio; placed in a 28x28 field
    so the centre of mass is at pixel (14, 14) (row, column; MNIST's own mean), shifted by whole
    pixels and kept fully inside the field; divided by its maximum, so the ink is near 1.0.

    `image`: a PIL image of any mode, or an array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) of
    uint8 (0..255), another integer type, bool, or float (0..1; 0..255 if its maximum is above
    1). Raises ImageError("No digit found: the image is blank.") when there is no contrast.
    """
    grey = _as_grey(image)  # (H, W) float32 in [0, 1]
    if grey.size == 0:
        raise ImageError("No digit found: the image is blank.")
    if float(grey.max() - grey.min()) < 8 / 255:  # less than JPEG noise: nothing was drawn
        raise ImageError("No digit found: the image is blank.")
    border = np.concatenate([grey[0], grey[-1], grey[1:-1, 0], grey[1:-1, -1]])
    background = float(np.median(border))
    if background > (float(grey.max()) + float(grey.min())) / 2:  # light paper, dark ink
        grey = 1.0 - grey
        background = 1.0 - background
    ink = np.clip(grey - background, 0.0, None)  # MNIST's background is exactly 0
    peak = float(ink.max())
    if peak < 8 / 255:
        raise ImageError("No digit found: the image is blank.")

    rows = np.flatnonzero((ink > ink_threshold * peak).any(axis=1))
    cols = np.flatnonzero((ink > ink_threshold * peak).any(axis=0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]  # (h, w)
    h, w = crop.shape
    scale = 20.0 / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # PIL order: (width, height)
    small = Image.fromarray(crop.astype(np.float32), mode="F")
    # BOX averages when shrinking (no ringing); LANCZOS keeps strokes sharp when enlarging.
    resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.LANCZOS
    digit = np.clip(np.asarray(small.resize(size, resample)), 0.0, None)  # (<=20, <=20)

    out = np.zeros((28, 28), dtype=np.float32)
    total = float(digit.sum())
    if total <= 0:
        raise ImageError("No digit found: the image is blank.")
    dh, dw = digit.shape
    yy, xx = np.mgrid[0:dh, 0:dw]
    cy, cx = float((digit * yy).sum()) / total, float((digit * xx).sum()) / total
    top = min(max(round(14 - cy), 0), 28 - dh)  # clamped: never cut a stroke off to centre it
    left = min(max(round(14 - cx), 0), 28 - dw)
    out[top : top + dh, left : left + dw] = digit
    return np.clip(out / out.max(), 0.0, 1.0).astype(np.float32)


_WORKING_SIDE = 1024  # PIL images larger than this are box-averaged down before mnist_style


def _as_grey(image: Image.Image | np.ndarray) -> np.ndarray:
    """PIL image or array -> (H, W) float32 greyscale in [0, 1]."""
    if isinstance(image, Image.Image):
        img = _to_l_or_rgb(image)[0].convert("L")
        # The result is 20 px across: averaging a 40 MP photo down first keeps float copies small.
        factor = -(-max(img.size) // _WORKING_SIDE)
        if factor > 1:
            img = img.reduce(factor)
        return np.asarray(img, dtype=np.float32) / 255.0
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[-1] in (1, 3, 4):
        a = _scaled01(a)
        if a.shape[-1] == 4:  # transparent pixels are background: same rule as decode_image
            rgba = Image.fromarray(np.rint(a * 255).astype(np.uint8), "RGBA")
            return _as_grey(rgba)
        a = a[..., 0] if a.shape[-1] == 1 else a @ np.float32([0.299, 0.587, 0.114])
        return a.astype(np.float32)
    if a.ndim != 2:
        raise ValueError(f"expected an image shaped (H, W) or (H, W, 1|3|4), got {a.shape}")
    return _scaled01(a)


def _scaled01(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.bool_:
        return a.astype(np.float32)
    if np.issubdtype(a.dtype, np.integer):
        top = 255 if a.dtype == np.uint8 else max(int(a.max(initial=0)), 1)
        return (a.astype(np.float32) / top).clip(0, 1)
    a = np.nan_to_num(a.astype(np.float32))
    if a.size and float(a.max()) > 1.0:
        a = a / 255.0
    return a.clip(0, 1)


def canvas_to_mnist(rgba: np.ndarray) -> np.ndarray:
    """A drawing canvas's pixels (H, W, 4) RGBA -> MNIST-style (28, 28) float32 in [0, 1].

    `rgba`: uint8 (0..255) or float (0..1; 0..255 if its maximum is above 1), as returned by
    streamlit-drawable-canvas. Strokes of any colour on a transparent background (alpha is the
    ink), or on an opaque background of one colour (the brightest channel, so a pure blue
    stroke on black counts as fully drawn; a light background is inverted by `mnist_style`).
    Raises ImageError("The canvas is empty: draw a digit first.") when nothing is drawn.
    """
    a = np.asarray(rgba)
    if a.ndim != 3 or a.shape[-1] != 4:
        raise ValueError(f"expected an RGBA canvas shaped (H, W, 4), got {a.shape}")
    a = _scaled01(a)  # (H, W, 4)
    alpha = a[..., 3]
    if alpha.size == 0 or float(alpha.max()) == 0.0:
        raise ImageError("The canvas is empty: draw a digit first.")
    if float(np.ptp(alpha)) > 8 / 255:  # transparent background: what was drawn is the alpha
        ink = alpha
    else:  # opaque background: compare colours
        ink = a[..., :3].max(axis=-1)
    if float(np.ptp(ink)) < 8 / 255:
        raise ImageError("The canvas is empty: draw a digit first.")
    return mnist_style(ink)


# --------------------------------------------------------------------------------------------
# Sharing in a URL

_CODE_LENGTH = 1046  # 784 bytes in unpadded base64: ceil(784 * 4 / 3)
_CODE_CHARS = re.compile(r"[A-Za-z0-9_-]*")


def encode_image(img28: np.ndarray) -> str:
    """(28, 28) image -> 1046-character URL-safe base64 string (no padding) of its uint8 pixels.

    Floats are taken as 0..1 and rounded to the nearest 1/255; uint8 is used as is.
    """
    a = np.asarray(img28)
    if a.shape != (28, 28):
        raise ValueError(f"expected a (28, 28) image, got {a.shape}")
    if a.dtype != np.uint8:
        a = np.rint(np.clip(np.nan_to_num(a.astype(np.float64)), 0.0, 1.0) * 255).astype(np.uint8)
    return base64.urlsafe_b64encode(a.tobytes()).decode("ascii").rstrip("=")


def decode_image28(s: str) -> np.ndarray:
    """Inverse of `encode_image`: string -> (28, 28) float32 in [0, 1] (multiples of 1/255).

    Raises ImageError if the string is not exactly a code made by `encode_image`.
    """
    if not isinstance(s, str):
        raise ImageError("The shared image link is invalid: the image code is not text.")
    s = s.strip().rstrip("=")
    if len(s) != _CODE_LENGTH:
        raise ImageError(
            f"The shared image link is invalid: the image code has {len(s)} characters, "
            f"expected {_CODE_LENGTH}. Was the link cut short?"
        )
    if not _CODE_CHARS.fullmatch(s):
        raise ImageError(
            "The shared image link is invalid: the image code contains characters other than "
            "letters, digits, '-' and '_'."
        )
    try:
        raw = base64.urlsafe_b64decode(s + "==")
    except (binascii.Error, ValueError) as e:
        raise ImageError("The shared image link is invalid: the image code is corrupt.") from e
    pixels = np.frombuffer(raw, dtype=np.uint8)
    if pixels.size != 784 or encode_image(pixels.reshape(28, 28)) != s:  # canonical codes only
        raise ImageError("The shared image link is invalid: the image code is corrupt.")
    return pixels.reshape(28, 28).astype(np.float32) / np.float32(255)


MAX_ASPECT = 10.0  # longer side / shorter side of a photo; beyond it the photo is refused
MAX_RESIZED_PIXELS = 4_000_000  # the resize before the crop never makes more pixels than this


def resized_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) after resizing the shorter side to `short_side` with the aspect ratio
    kept (torchvision's rule), refusing extreme aspect ratios *before* anything is allocated:
    a 1 x 40,000 strip would otherwise become 256 x 10,240,000 pixels."""
    if width < 1 or height < 1:
        raise ImageError(f"The photo has no pixels ({width} × {height}).")
    aspect = max(width, height) / min(width, height)
    if aspect > MAX_ASPECT:
        raise ImageError(
            f"This photo is {width} × {height} pixels, an aspect ratio of {aspect:,.0f} : 1. "
            f"Photos up to {MAX_ASPECT:g} : 1 are accepted: crop it to the object first."
        )
    if width <= height:
        size = (short_side, int(short_side * height / width))
    else:
        size = (int(short_side * width / height), short_side)
    if size[0] * size[1] > MAX_RESIZED_PIXELS:  # unreachable with the aspect limit; kept as a bound
        raise ImageError(f"Resizing this photo would make {size[0]} × {size[1]} pixels.")
    return size
