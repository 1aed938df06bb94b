"""A drawing canvas's PNG, as a browser sends it: checked from its header and chunks before
Pillow decodes it (`sandbox.images` re-exports `decode_canvas_png`, `png_header` and
`MAX_CANVAS_PIXELS`).

    >>> rgba = decode_canvas_png(data_url, width=280, height=280)  # (280, 280, 4) uint8

Raises `ImageError`, whose message is meant for the person who drew.
"""

from __future__ import annotations

import base64
import binascii
import io
import struct
import warnings
import zlib

import numpy as np
from PIL import Image

from .image_errors import _DECODE_ERRORS, ImageError

__all__ = ["MAX_CANVAS_PIXELS", "decode_canvas_png", "png_header"]

# A canvas is drawn at the size the page asked for (Chromium sends 280 x 280 for a 280 x 280
# canvas at device pixel ratios 1, 2 and 3): anything else is refused, and nothing above this
# is ever decoded, whatever size is asked for.
MAX_CANVAS_PIXELS = 4_000_000  # 16 MB as RGBA

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_DATA_URL_PREFIX = "data:image/png;base64,"
# Bit depths allowed for each PNG colour type (the PNG specification's table).
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
# What a browser's canvas export holds (Chromium: IHDR, IDAT, IEND) and the small uncompressed
# ancillary chunks another browser might add. Compressed text (zTXt, iTXt) and animation
# (acTL, fdAT) chunks are not: each is more to inflate, and a canvas never makes them.
_CANVAS_CHUNKS = frozenset(
    b"IHDR PLTE IDAT IEND tRNS sRGB gAMA cHRM pHYs iCCP sBIT bKGD tEXt tIME".split()
)


def _canvas_png_bytes(width: int, height: int) -> int:
    """The most bytes a browser's PNG of a width x height canvas takes: its 8-bit RGBA rows as
    they are (noise does not compress), 1 % for deflate, and 64 KB for the chunks around."""
    raw = height * (1 + 4 * width)
    return raw + raw // 100 + 65_536


def png_header(data: bytes) -> tuple[int, int, int, int]:
    """(width, height, bit depth, colour type) from a PNG's first 33 bytes (signature and IHDR),
    checked against the PNG specification. Raises ImageError."""
    if data[:8] != _PNG_SIGNATURE:
        raise ImageError("The drawing sent by your browser is not a PNG image.")
    if len(data) < 33 or data[8:16] != b"\x00\x00\x00\rIHDR":
        raise ImageError("The drawing sent by your browser has a broken PNG header.")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(
        ">IIBBBBB", data[16:29]
    )
    (crc,) = struct.unpack(">I", data[29:33])
    if (
        crc != zlib.crc32(data[12:29])
        or depth not in _PNG_DEPTHS.get(colour, ())
        or (compression, filtering) != (0, 0)
        or interlace not in (0, 1)
    ):
        raise ImageError("The drawing sent by your browser has a broken PNG header.")
    return width, height, depth, colour


def decode_canvas_png(data_url: str, *, width: int, height: int) -> np.ndarray:
    """A canvas's PNG data URL, as a browser sent it -> its pixels `(height, width, 4)` uint8.

    The browser decides what it sends, so nothing is decoded before it is known to be a
    width x height drawing: the data URL's length is checked first (at most what such a PNG can
    take, `_canvas_png_bytes`), then the size the PNG's IHDR declares, read from its first 33
    bytes, must be exactly width x height (and at most MAX_CANVAS_PIXELS), then every chunk must
    be one a canvas export holds. Only then is the PNG decoded, by Pillow, at that size.

    Raises ImageError, with a message for the person who drew, for anything else.
    """
    if width * height > MAX_CANVAS_PIXELS or min(width, height) < 1:
        raise ValueError(f"a {width} x {height} canvas is not allowed here")
    if not isinstance(data_url, str) or not data_url.startswith(_DATA_URL_PREFIX):
        raise ImageError("The drawing sent by your browser is not a PNG image.")
    most = 4 * -(-_canvas_png_bytes(width, height) // 3)  # as base64
    encoded = len(data_url) - len(_DATA_URL_PREFIX)
    if encoded > most:
        raise ImageError(
            f"The drawing sent by your browser is {encoded / 1000:,.0f} kB, more than a "
            f"{width} × {height} canvas can make (at most {most / 1000:,.0f} kB): it was "
            "refused before it was decoded. Please draw again."
        )
    body = data_url[len(_DATA_URL_PREFIX) :]
    try:
        head = base64.b64decode(body[:44], validate=True)  # 33 bytes: signature and IHDR
    except (binascii.Error, ValueError) as e:
        raise ImageError("The drawing sent by your browser is not valid base64.") from e
    w, h, _, _ = png_header(head)
    if (w, h) != (width, height):
        raise ImageError(
            f"The drawing sent by your browser says it is {w:,} × {h:,} pixels, but the canvas "
            f"is {width} × {height}: it was refused before it was decoded. Please draw again."
        )
    try:
        data = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ImageError("The drawing sent by your browser is not valid base64.") from e
    _check_canvas_chunks(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=["PNG"])
            size = img.size  # Pillow's reading of the same IHDR
            if size == (width, height):
                img.load()
                rgba = np.asarray(img.convert("RGBA"))  # (H, W, 4) uint8
        except (*_DECODE_ERRORS, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageError(
                "The drawing sent by your browser is corrupt and could not be decoded."
            ) from e
    if size != (width, height):
        raise ImageError("The drawing sent by your browser has a broken PNG header.")
    return rgba


def _check_canvas_chunks(data: bytes) -> None:
    """Walk the PNG's chunks by their lengths (nothing inflated): each must be one a canvas
    export holds, IHDR first and IEND last."""
    at, first, last = 8, None, None
    while at < len(data):
        if at + 12 > len(data):
            raise ImageError("The drawing sent by your browser is a truncated PNG.")
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind = data[at + 4 : at + 8]
        if kind not in _CANVAS_CHUNKS:
            raise ImageError(
                f"The drawing sent by your browser holds a PNG chunk ({kind.decode('latin-1')!r})"
                " that a drawing canvas never makes: it was refused before it was decoded."
            )
        first = first or kind
        last = kind
        at += 12 + length
    if first != b"IHDR" or last != b"IEND" or at != len(data):
        raise ImageError("The drawing sent by your browser is a truncated PNG.")
