"""Fuzzing the upload path: 600+ odd and malformed files through `decode_image` + `mnist_style`.

Every file is generated here, seeded (no files on disk): truncated files, wrong extensions,
headers that lie about the size, zero-size, tiny, palette, 16-bit, TIFF, CMYK, animated,
EXIF-rotated, transparent, blank, noisy, bit-flipped and random files. Each one must give either
a (28, 28) float32 image in [0, 1] or an `ImageError` with a short, plain message; any other
exception is a failure. A subset (every category) then goes through the real page with AppTest.

Run: `.venv/bin/python -m pytest tests/sandbox/test_upload_fuzz.py -q -s` (`-s` prints the counts).
"""

from __future__ import annotations

import collections
import io
import random
import re
import struct
import time
import traceback
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from sandbox.images import MAX_PIXELS, ImageError, decode_image, encode_image, mnist_style

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")
SEED = 20261122
MIME = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "gif": "image/gif",
    "bmp": "image/bmp",
    "webp": "image/webp",
    "tif": "image/tiff",
    "txt": "text/plain",
    "bin": "application/octet-stream",
}
SAVE_FORMAT = {"png": "PNG", "jpg": "JPEG", "gif": "GIF", "bmp": "BMP", "webp": "WEBP"}


@dataclass
class Case:
    category: str
    label: str  # what the generator made, for failure messages
    name: str  # file name as uploaded (its extension may lie)
    data: bytes
    expect: str = "any"  # "any", "accept", "refuse", "blank" (refused: "No digit found")
    says: str = ""  # a phrase the refusal must contain

    @property
    def mime(self) -> str:
        return MIME.get(self.name.rsplit(".", 1)[-1], "application/octet-stream")


# --- building files -------------------------------------------------------------------------


def digit_image(w: int = 64, h: int = 80) -> Image.Image:
    """An asymmetric dark "7" with a foot on white (so rotations and flips are visible)."""
    img = Image.new("L", (w, h), 255)
    draw = ImageDraw.Draw(img)
    draw.line([(w * 0.2, h * 0.15), (w * 0.8, h * 0.15), (w * 0.4, h * 0.85)], fill=0, width=6)
    draw.line([(w * 0.25, h * 0.85), (w * 0.55, h * 0.85)], fill=0, width=5)
    return img.filter(ImageFilter.GaussianBlur(1))


def encode(img: Image.Image, fmt: str, **save) -> bytes:
    buf = io.BytesIO()
    img.save(buf, SAVE_FORMAT.get(fmt, fmt), **save)
    return buf.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def raw_png(
    width: int,
    height: int,
    depth: int,
    colour: int,
    rows: bytes,
    *,
    extra: bytes = b"",
    level: int = 6,
    ihdr_size: tuple[int, int] | None = None,
) -> bytes:
    """A PNG written by hand: `rows` are the filtered scanlines (filter byte included)."""
    w, h = ihdr_size or (width, height)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + extra
        + png_chunk(b"IDAT", zlib.compress(rows, level))
        + png_chunk(b"IEND", b"")
    )


def rows_of(a: np.ndarray) -> bytes:
    """(H, row_bytes) uint8 -> scanlines with filter type 0."""
    a = np.ascontiguousarray(a, dtype=np.uint8)
    return np.concatenate([np.zeros((a.shape[0], 1), np.uint8), a], axis=1).tobytes()


def patch_png_size(data: bytes, width: int, height: int) -> bytes:
    ihdr = b"IHDR" + struct.pack(">II", width, height) + data[24:29]
    return data[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + data[33:]


def patch_gif_size(data: bytes, width: int, height: int) -> bytes:
    """Both the logical screen and the first image descriptor."""
    out = bytearray(data)
    out[6:10] = struct.pack("<HH", width, height)
    at = out.find(b"\x2c", 13)
    if at > 0:
        out[at + 5 : at + 9] = struct.pack("<HH", width, height)
    return bytes(out)


def patch_bmp_size(data: bytes, width: int, height: int) -> bytes:
    return data[:18] + struct.pack("<ii", width, height) + data[26:]


def patch_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    at = data.find(b"\xff\xc0")
    if at < 0:
        at = data.find(b"\xff\xc2")
    return data[: at + 5] + struct.pack(">HH", height, width) + data[at + 9 :]


def patch_webp_size(data: bytes, width: int, height: int) -> bytes:
    """Lossless (VP8L, 14-bit sizes) or extended (VP8X, 24-bit canvas) header."""
    out = bytearray(data)
    if out[12:16] == b"VP8L":
        bits = (width - 1) & 0x3FFF | ((height - 1) & 0x3FFF) << 14
        old = struct.unpack("<I", out[21:25])[0]
        out[21:25] = struct.pack("<I", (old & ~0xFFFFFFF) | bits)
    elif out[12:16] == b"VP8X":
        out[24:30] = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    elif out[12:16] == b"VP8 ":
        out[26:30] = struct.pack("<HH", width & 0x3FFF, height & 0x3FFF)
    return bytes(out)


def exif_bytes(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


# --- the generators, one per category --------------------------------------------------------


def gen_truncated(rng: random.Random) -> list[Case]:
    base = digit_image()
    files = {
        "png": encode(base, "png"),
        "jpg": encode(base.convert("RGB"), "jpg", quality=90),
        "jpg-progressive": encode(base, "JPEG", progressive=True),
        "gif": encode(base.convert("P"), "gif"),
        "bmp": encode(base, "bmp"),
        "webp": encode(base.convert("RGB"), "webp", quality=80),
        "webp-lossless": encode(base, "WEBP", lossless=True),
    }
    cases = []
    for kind, data in files.items():
        cuts = {1, 2, 4, 8, 12, 16, 20, 24, 30, 33, 40, 64, len(data) - 1, len(data) - 2}
        cuts |= {rng.randrange(1, len(data)) for _ in range(8)}
        ext = kind.split("-")[0]
        for cut in sorted(c for c in cuts if 0 < c < len(data)):
            cases.append(
                Case("truncated", f"{kind} cut at {cut}/{len(data)}", f"t.{ext}", data[:cut])
            )
    return cases


def gen_wrong_extension(rng: random.Random) -> list[Case]:
    base = digit_image()
    png, jpg = encode(base, "png"), encode(base, "jpg")
    gif, webp = encode(base.convert("P"), "gif"), encode(base, "webp")
    text = b"Hello! This is a text file, not a picture.\n" * 3
    return [
        Case("wrong-ext", "PNG named .jpg", "photo.jpg", png, "accept"),
        Case("wrong-ext", "JPEG named .png", "scan.png", jpg, "accept"),
        Case("wrong-ext", "GIF named .bmp", "x.bmp", gif, "accept"),
        Case("wrong-ext", "WebP named .gif", "x.gif", webp, "accept"),
        Case("wrong-ext", "PNG with no extension", "digit", png, "accept"),
        Case("wrong-ext", "text named .png", "notes.png", text, "refuse", "text file"),
        Case("wrong-ext", "empty text named .jpg", "e.jpg", b"\n", "refuse", "text file"),
        Case("wrong-ext", "CSV named .png", "d.png", b"a,b\n1,2\n", "refuse", "text file"),
        Case(
            "wrong-ext", "PDF named .png", "d.png", b"%PDF-1.7\n%\xe2\xe3\n1 0 obj", "refuse", "PDF"
        ),
        Case("wrong-ext", "ZIP named .jpg", "d.jpg", b"PK\x03\x04" + bytes(40), "refuse", "ZIP"),
        Case(
            "wrong-ext",
            "SVG named .png",
            "d.png",
            b'<svg xmlns="x"><path d="M0 0"/></svg>',
            "refuse",
            "SVG",
        ),
        Case(
            "wrong-ext",
            "HEIC named .jpg",
            "d.jpg",
            bytes(4) + b"ftypheic" + bytes(40),
            "refuse",
            "HEIC",
        ),
        Case(
            "wrong-ext",
            "ICO named .png",
            "d.png",
            encode(base.resize((32, 32)), "ICO"),
            "refuse",
            "PNG, JPEG",
        ),
        Case(
            "wrong-ext", "UTF-16 text named .png", "u.png", "héllo wörld".encode("utf-16"), "refuse"
        ),
        Case("wrong-ext", "HTML named .webp", "p.webp", b"<!doctype html><html></html>", "refuse"),
    ]


def gen_huge(rng: random.Random) -> list[Case]:
    small = digit_image(16, 20)
    png, gif = encode(small, "png"), encode(small.convert("P"), "gif")
    bmp, jpg = encode(small, "bmp"), encode(small, "jpg")
    webp_ll = encode(small, "WEBP", lossless=True)
    webp_x = encode(small.convert("RGBA"), "WEBP", lossless=True, exif=exif_bytes(1))
    webp_lossy = encode(small.convert("RGB"), "WEBP", quality=80)
    side = int(MAX_PIXELS**0.5)
    cases = []
    over = [
        (100_000, 100_000),
        (65_535, 65_535),
        (MAX_PIXELS + 1, 1),
        (1, MAX_PIXELS + 1),
        (8_000, 5_001),
        (side + 1, side + 1),
        (2**31 - 1, 2**31 - 1),
        (20_000, 9_000),
    ]
    under = [(MAX_PIXELS, 1), (MAX_PIXELS - 1, 1), (8_000, 5_000), (6_000, 6_000)]
    for w, h in over:
        cases.append(
            Case("huge", f"PNG IHDR {w}x{h}", "h.png", patch_png_size(png, w, h), "refuse", "too")
        )
    for w, h in under:  # the header passes; the pixel data is missing
        cases.append(
            Case(
                "huge",
                f"PNG IHDR {w}x{h} (data for 16x20)",
                "h.png",
                patch_png_size(png, w, h),
                "refuse",
            )
        )
    for w, h in [(65_535, 65_535), (65_535, 611), (8_000, 5_001), (65_535, 610), (8_000, 5_000)]:
        big = w * h > MAX_PIXELS
        cases.append(
            Case(
                "huge",
                f"GIF {w}x{h}",
                "h.gif",
                patch_gif_size(gif, w, h),
                "refuse" if big else "any",
                "too" if big else "",
            )
        )
    for w, h in [
        (100_000, 100_000),
        (MAX_PIXELS + 1, 1),
        (8_000, -5_001),
        (8_000, 5_000),
        (-64, 64),
        (2**31 - 1, 2),
        (8, -(2**31)),
    ]:
        big = abs(w) * abs(h) > MAX_PIXELS
        cases.append(
            Case(
                "huge",
                f"BMP {w}x{h}",
                "h.bmp",
                patch_bmp_size(bmp, w, h),
                "refuse",
                "too" if big and w > 0 else "",
            )
        )
    for w, h in [(65_535, 65_535), (8_000, 5_001), (8_000, 5_000), (6_000, 6_000)]:
        big = w * h > MAX_PIXELS
        cases.append(
            Case(
                "huge",
                f"JPEG SOF {w}x{h}",
                "h.jpg",
                patch_jpeg_size(jpg, w, h),
                "refuse" if big else "any",
                "too" if big else "",
            )
        )
    for w, h in [(16_384, 16_384), (8_000, 5_001), (8_000, 5_000), (16_384, 2_442)]:
        big = w * h > MAX_PIXELS
        cases.append(
            Case(
                "huge",
                f"WebP VP8L {w}x{h}",
                "h.webp",
                patch_webp_size(webp_ll, w, h),
                "refuse" if big else "any",
            )
        )
    for w, h in [(2**24, 2**24), (100_000, 100_000), (8_000, 5_001), (8_000, 5_000)]:
        cases.append(
            Case(
                "huge",
                f"WebP VP8X canvas {w}x{h}",
                "h.webp",
                patch_webp_size(webp_x, w, h),
                "refuse",
            )
        )
    for w, h in [(16_383, 16_383), (8_000, 5_001)]:
        cases.append(
            Case("huge", f"WebP VP8 {w}x{h}", "h.webp", patch_webp_size(webp_lossy, w, h), "refuse")
        )
    # Real files at the limit: MAX_PIXELS passes (a dot of ink), MAX_PIXELS + 1 does not.
    field = np.zeros((5_000, 8_000), np.uint8)
    field[2_000:3_000, 3_000:3_200] = 255
    cases.append(
        Case(
            "huge",
            "real 8000x5000 PNG (= MAX_PIXELS)",
            "max.png",
            raw_png(8_000, 5_000, 8, 0, rows_of(field), level=1),
            "accept",
        )
    )
    row = np.zeros((1, MAX_PIXELS + 1), np.uint8)
    cases.append(
        Case(
            "huge",
            "real (MAX_PIXELS + 1)x1 PNG",
            "over.png",
            raw_png(MAX_PIXELS + 1, 1, 8, 0, rows_of(row), level=1),
            "refuse",
            "too",
        )
    )
    row = np.zeros((1, MAX_PIXELS - 1), np.uint8)
    row[0, 1000:5000] = 255  # a line: refused or not, never a crash
    cases.append(
        Case(
            "huge",
            "real (MAX_PIXELS - 1)x1 PNG",
            "under.png",
            raw_png(MAX_PIXELS - 1, 1, 8, 0, rows_of(row), level=1),
        )
    )
    return cases


def gen_zero_size(rng: random.Random) -> list[Case]:
    small = digit_image(16, 20)
    png, gif, bmp = encode(small, "png"), encode(small.convert("P"), "gif"), encode(small, "bmp")
    jpg, webp = encode(small, "jpg"), encode(small, "WEBP", lossless=True)
    cases = [Case("zero-size", "0-byte file", "empty.png", b"", "refuse", "empty")]
    for w, h in [(0, 0), (0, 20), (16, 0)]:
        cases += [
            Case("zero-size", f"PNG {w}x{h}", "z.png", patch_png_size(png, w, h), "refuse"),
            Case("zero-size", f"GIF {w}x{h}", "z.gif", patch_gif_size(gif, w, h), "refuse"),
            Case("zero-size", f"BMP {w}x{h}", "z.bmp", patch_bmp_size(bmp, w, h), "refuse"),
            Case("zero-size", f"JPEG {w}x{h}", "z.jpg", patch_jpeg_size(jpg, w, h), "refuse"),
        ]
    cases.append(
        Case("zero-size", "PNG with no IDAT", "z.png", png[:33] + png_chunk(b"IEND", b""), "refuse")
    )
    cases.append(Case("zero-size", "WebP header only", "z.webp", webp[:20], "refuse"))
    cases.append(Case("zero-size", "single NUL byte", "z.png", b"\x00", "refuse"))
    return cases


def gen_tiny(rng: random.Random) -> list[Case]:
    cases = []
    for fmt in ("png", "jpg", "gif", "bmp", "webp"):
        for value in (0, 255, 128):
            img = Image.new("L", (1, 1), value)
            cases.append(
                Case("tiny", f"1x1 {fmt} value {value}", f"one.{fmt}", encode(img, fmt), "blank")
            )
        two = Image.fromarray(np.array([[0, 255], [255, 255]], np.uint8))
        cases.append(Case("tiny", f"2x2 {fmt} one dark pixel", f"two.{fmt}", encode(two, fmt)))
        cases.append(
            Case(
                "tiny",
                f"1x2 {fmt}",
                f"t.{fmt}",
                encode(Image.fromarray(np.array([[0], [255]], np.uint8)), fmt),
            )
        )
        cases.append(
            Case(
                "tiny",
                f"3x1 RGB {fmt}",
                f"t.{fmt}",
                encode(
                    Image.fromarray(
                        np.array([[[255, 0, 0], [0, 0, 0], [255, 255, 255]]], np.uint8)
                    ),
                    fmt,
                ),
            )
        )
    cases.append(
        Case("tiny", "1x1 1-bit PNG", "b.png", encode(Image.new("1", (1, 1), 1), "png"), "blank")
    )
    cases.append(
        Case(
            "tiny",
            "1x1000 line PNG",
            "line.png",
            encode(Image.fromarray(np.tile(np.uint8([[0], [255]]), (500, 1))), "png"),
        )
    )
    return cases


def gen_palette(rng: random.Random) -> list[Case]:
    base = digit_image()
    rgb = Image.merge("RGB", (base, base.point(lambda v: 255 - v // 2), base))
    cases = []
    for colours in (2, 16, 256):
        p = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=colours)
        for fmt in ("png", "gif", "bmp"):
            cases.append(
                Case("palette", f"P {colours} colours {fmt}", f"p.{fmt}", encode(p, fmt), "accept")
            )
        dark = int(np.asarray(p).flat[0])
        for fmt in ("png", "gif"):
            cases.append(
                Case(
                    "palette",
                    f"P {colours} colours {fmt} transparency={dark}",
                    f"pt.{fmt}",
                    encode(p, fmt, transparency=dark),
                )
            )
    # A tRNS table giving every palette entry its own alpha (PNG only).
    p = base.convert("P")
    alphas = bytes(rng.randrange(256) for _ in range(256))
    cases.append(
        Case(
            "palette", "P PNG with 256-entry tRNS", "pa.png", encode(p, "png", transparency=alphas)
        )
    )
    # Fully transparent palette image: nothing to see.
    cases.append(
        Case(
            "palette",
            "P PNG, every entry transparent",
            "pz.png",
            encode(p, "png", transparency=bytes(256)),
            "blank",
        )
    )
    # Hand-written PNGs: palette bit depths 1, 2, 4, with a palette shorter than the indices.
    for depth in (1, 2, 4, 8):
        n = 1 << depth
        idx = np.zeros((20, 16), np.uint8)
        idx[4:16, 6:10] = n - 1
        packed = np.packbits(
            np.unpackbits(idx[..., None], axis=2)[..., 8 - depth :].reshape(20, -1), axis=1
        )
        plte = bytes(v for k in range(n) for v in (k * 255 // max(n - 1, 1),) * 3)
        cases.append(
            Case(
                "palette",
                f"PNG palette depth {depth}",
                "pd.png",
                raw_png(16, 20, depth, 3, rows_of(packed), extra=png_chunk(b"PLTE", plte)),
                "accept",
            )
        )
        cases.append(
            Case(
                "palette",
                f"PNG palette depth {depth}, 1-entry PLTE",
                "ps.png",
                raw_png(
                    16, 20, depth, 3, rows_of(packed), extra=png_chunk(b"PLTE", b"\xff\xff\xff")
                ),
            )
        )
    cases.append(
        Case(
            "palette",
            "PNG palette without PLTE",
            "np.png",
            raw_png(4, 4, 8, 3, rows_of(np.zeros((4, 4), np.uint8))),
        )
    )
    return cases


def gen_deep(rng: random.Random) -> list[Case]:
    """16-bit greyscale (I;16), 16-bit RGB/RGBA/LA by hand, and 1/2/4-bit greyscale PNGs."""
    base = np.asarray(digit_image(), np.float64) / 255.0  # (80, 64), 1 = paper
    cases = []
    for lo, hi in [(0, 65535), (0, 255), (1000, 1200), (60000, 65535), (0, 1)]:
        a = np.rint(lo + base * (hi - lo)).astype(np.uint16)
        img = Image.fromarray(a)
        cases.append(
            Case(
                "16-bit",
                f"I;16 PNG {lo}..{hi}",
                "d16.png",
                encode(img, "png"),
                "accept" if hi - lo > 255 else "any",
            )
        )
        be = a.astype(">u2").view(np.uint8).reshape(a.shape[0], -1)
        cases.append(
            Case(
                "16-bit",
                f"hand 16-bit grey PNG {lo}..{hi}",
                "g16.png",
                raw_png(64, 80, 16, 0, rows_of(be)),
            )
        )
    a16 = np.rint(base * 65535).astype(">u2")
    rgb16 = np.stack([a16, a16, a16], -1).view(np.uint8).reshape(80, -1)
    cases.append(
        Case(
            "16-bit",
            "hand 48-bit RGB PNG",
            "rgb48.png",
            raw_png(64, 80, 16, 2, rows_of(rgb16)),
            "accept",
        )
    )
    alpha = np.full_like(a16, 40000)
    rgba16 = np.stack([a16, a16, a16, alpha], -1).view(np.uint8).reshape(80, -1)
    cases.append(
        Case(
            "16-bit", "hand 64-bit RGBA PNG", "rgba64.png", raw_png(64, 80, 16, 6, rows_of(rgba16))
        )
    )
    la16 = np.stack([a16, (65535 - a16)], -1).view(np.uint8).reshape(80, -1)
    cases.append(
        Case("16-bit", "hand 32-bit LA PNG", "la32.png", raw_png(64, 80, 16, 4, rows_of(la16)))
    )
    trns = png_chunk(b"tRNS", struct.pack(">H", 65535))
    cases.append(
        Case(
            "16-bit",
            "hand 16-bit grey PNG with tRNS",
            "g16t.png",
            raw_png(64, 80, 16, 0, rows_of(a16.view(np.uint8).reshape(80, -1)), extra=trns),
        )
    )
    for depth in (1, 2, 4):
        levels = np.rint((1 - base) * ((1 << depth) - 1)).astype(np.uint8)
        packed = np.packbits(
            np.unpackbits(levels[..., None], axis=2)[..., 8 - depth :].reshape(80, -1), axis=1
        )
        cases.append(
            Case(
                "16-bit",
                f"hand {depth}-bit grey PNG",
                f"g{depth}.png",
                raw_png(64, 80, depth, 0, rows_of(packed)),
                "accept",
            )
        )
    # Bad bit-depth/colour-type combinations in IHDR.
    for depth, colour in [(16, 3), (3, 0), (8, 1), (8, 5), (32, 0), (0, 0), (8, 7)]:
        cases.append(
            Case(
                "16-bit",
                f"PNG IHDR depth {depth} colour type {colour}",
                "bad.png",
                raw_png(4, 4, depth, colour, bytes(4 * 9)),
                "refuse",
            )
        )
    return cases


def gen_tiff(rng: random.Random) -> list[Case]:
    base = np.asarray(digit_image(), np.float32) / 255.0
    cases = []
    images = {
        "I": Image.fromarray((base * 65535).astype(np.int32), "I"),
        "F": Image.fromarray(base, "F"),
        "I;16": Image.fromarray((base * 65535).astype(np.uint16)),
        "L": Image.fromarray((base * 255).astype(np.uint8), "L"),
        "RGB": Image.fromarray((base * 255).astype(np.uint8), "L").convert("RGB"),
        "CMYK": Image.fromarray((base * 255).astype(np.uint8), "L").convert("CMYK"),
    }
    for mode, img in images.items():
        for compression in (None, "tiff_deflate"):
            data = encode(img, "TIFF", compression=compression)
            for name in ("x.tif", "x.png"):
                cases.append(
                    Case(
                        "tiff",
                        f"TIFF {mode} {compression} as {name}",
                        name,
                        data,
                        "refuse",
                        "PNG, JPEG",
                    )
                )
    return cases


def gen_cmyk(rng: random.Random) -> list[Case]:
    base = digit_image()
    cmyk = base.convert("CMYK")
    cases = []
    for quality in (30, 75, 95):
        data = encode(cmyk, "JPEG", quality=quality)
        cases.append(Case("cmyk", f"CMYK JPEG q{quality}", "c.jpg", data, "accept"))
        cases.append(
            Case(
                "cmyk",
                f"CMYK JPEG q{quality} cut in half",
                "c.jpg",
                data[: len(data) // 2],
                "refuse",
            )
        )
    # Only the K channel carries the digit; C/M/Y noise.
    k = 255 - np.asarray(base)
    noise = np.random.default_rng(rng.randrange(2**32)).integers(0, 30, (80, 64, 3), np.uint8)
    arr = np.concatenate([noise, k[..., None]], axis=-1)
    cases.append(
        Case(
            "cmyk",
            "CMYK JPEG, ink in K",
            "k.jpg",
            encode(Image.fromarray(arr, "CMYK"), "JPEG"),
            "accept",
        )
    )
    cases.append(
        Case(
            "cmyk",
            "YCbCr-mode JPEG",
            "y.jpg",
            encode(base.convert("RGB").convert("YCbCr"), "JPEG"),
            "accept",
        )
    )
    cases.append(
        Case(
            "cmyk",
            "grey JPEG subsampling 4:2:0",
            "g.jpg",
            encode(base.convert("RGB"), "JPEG", subsampling=2),
            "accept",
        )
    )
    return cases


def gen_animated(rng: random.Random) -> list[Case]:
    cases = []
    for n in (1, 2, 3, 10, 50):
        frames = []
        for i in range(n):
            img = Image.new("L", (40, 48), 255)
            ImageDraw.Draw(img).rectangle([5 + i % 20, 8, 12 + i % 20, 40], fill=0)
            frames.append(img)
        first_blank = n > 1 and n % 2 == 0
        if first_blank:
            frames[0] = Image.new("L", (40, 48), 255)  # a blank first frame: refused as blank
        gif = encode(
            frames[0].convert("P"),
            "gif",
            save_all=True,
            append_images=[f.convert("P") for f in frames[1:]],
            duration=50,
            loop=0,
        )
        cases.append(
            Case(
                "animated",
                f"GIF {n} frames{' (first blank)' * first_blank}",
                "a.gif",
                gif,
                "blank" if first_blank else "accept",
            )
        )
        webp = encode(
            frames[0].convert("RGB"),
            "WEBP",
            save_all=True,
            append_images=[f.convert("RGB") for f in frames[1:]],
            duration=50,
            lossless=n % 2 == 1,
        )
        cases.append(
            Case(
                "animated",
                f"WebP {n} frames{' (first blank)' * first_blank}",
                "a.webp",
                webp,
                "blank" if first_blank else "accept",
            )
        )
        rgba = [f.convert("RGBA") for f in frames]
        for f in rgba:
            f.putalpha(f.getchannel("R").point(lambda v: 255 - v))
        webp_a = encode(rgba[0], "WEBP", save_all=True, append_images=rgba[1:], duration=40)
        cases.append(
            Case(
                "animated",
                f"RGBA WebP {n} frames",
                "aa.webp",
                webp_a,
                "blank" if first_blank else "accept",
            )
        )
        if n > 2:
            cases.append(
                Case(
                    "animated",
                    f"GIF {n} frames truncated after frame 1",
                    "a.gif",
                    gif[: len(gif) * 2 // 3],
                )
            )
            cases.append(
                Case("animated", f"WebP {n} frames truncated", "a.webp", webp[: len(webp) * 2 // 3])
            )
    return cases


INVERSE = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def gen_exif(rng: random.Random) -> list[Case]:
    upright = digit_image(64, 96)
    cases = []
    for o, inverse in INVERSE.items():
        stored = upright if inverse is None else upright.transpose(inverse)
        for fmt in ("jpg", "png", "webp"):
            data = encode(stored, fmt, exif=exif_bytes(o))
            cases.append(Case("exif", f"{fmt} orientation {o}", f"o{o}.{fmt}", data, "accept"))
    for bad in (0, 9, 255, 65535):
        cases.append(
            Case(
                "exif",
                f"JPEG orientation {bad}",
                "ob.jpg",
                encode(upright, "jpg", exif=exif_bytes(bad)),
                "accept",
            )
        )
    for junk in (
        b"Exif\x00\x00garbage",
        b"Exif\x00\x00II*\x00\xff\xff\xff\xff",
        b"\x00" * 20,
        exif_bytes(6)[:14],
        b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff",
    ):
        cases.append(
            Case(
                "exif",
                f"JPEG broken EXIF {junk[:12]!r}",
                "oj.jpg",
                encode(upright, "jpg", exif=junk),
                "accept",
            )
        )
    return cases


def gen_alpha(rng: random.Random) -> list[Case]:
    base = np.asarray(digit_image(), np.uint8)  # 255 paper, 0 ink
    ink = 255 - base
    h, w = base.shape
    np_rng = np.random.default_rng(rng.randrange(2**32))
    layers = {
        "opaque": np.full_like(base, 255),
        "transparent": np.zeros_like(base),
        "ink-only": ink,
        "half": np.full_like(base, 128),
        "one-visible-pixel": np.pad(np.full((1, 1), 255, np.uint8), ((40, h - 41), (30, w - 31))),
        "random": np_rng.integers(0, 256, base.shape, np.uint8),
        "gradient": np.tile(np.linspace(0, 255, w).astype(np.uint8), (h, 1)),
    }
    cases = []
    for name, alpha in layers.items():
        blank = name == "transparent"
        for colour, rgb in (("black", 0), ("white", 255), ("digit", None), ("red", (255, 0, 0))):
            if rgb is None:
                pix = np.stack([base] * 3, -1)
            else:
                pix = np.broadcast_to(np.uint8(rgb), (h, w, 3)).copy()
            rgba = np.concatenate([pix, alpha[..., None]], -1)
            img = Image.fromarray(rgba, "RGBA")
            for fmt in ("png", "webp") if colour in ("black", "digit") else ("png",):
                cases.append(
                    Case(
                        "alpha",
                        f"RGBA {fmt} {colour} alpha={name}",
                        f"a.{fmt}",
                        encode(img, fmt, **({"lossless": True} if fmt == "webp" else {})),
                        "blank" if blank else "any",
                    )
                )
        la = Image.fromarray(np.stack([base, alpha], -1), "LA")
        cases.append(
            Case(
                "alpha",
                f"LA png digit alpha={name}",
                "la.png",
                encode(la, "png"),
                "blank" if blank else "any",
            )
        )
        la_white = Image.fromarray(np.stack([np.full_like(base, 255), alpha], -1), "LA")
        cases.append(
            Case(
                "alpha",
                f"LA png white alpha={name}",
                "law.png",
                encode(la_white, "png"),
                "blank" if blank or name in ("opaque", "half") else "any",
            )
        )
    # The usual drawing: one colour, shape only in alpha -> accepted.
    for rgb in ((0, 0, 0), (255, 255, 255), (0, 0, 255)):
        pix = np.broadcast_to(np.uint8(rgb), (h, w, 3))
        img = Image.fromarray(np.concatenate([pix, ink[..., None]], -1), "RGBA")
        cases.append(
            Case("alpha", f"drawing {rgb} in alpha", "draw.png", encode(img, "png"), "accept")
        )
    # RGB / L PNG with a transparent colour (tRNS).
    cases.append(
        Case(
            "alpha",
            "L PNG transparency=255",
            "lt.png",
            encode(Image.fromarray(base), "png", transparency=255),
            "accept",
        )
    )
    cases.append(
        Case(
            "alpha",
            "RGB PNG transparency=white",
            "rt.png",
            encode(Image.fromarray(base).convert("RGB"), "png", transparency=(255, 255, 255)),
            "accept",
        )
    )
    cases.append(
        Case(
            "alpha",
            "RGBa-premultiplied-like WebP lossy",
            "lossy.webp",
            encode(
                Image.fromarray(
                    np.concatenate([np.stack([base] * 3, -1), ink[..., None]], -1), "RGBA"
                ),
                "webp",
                quality=50,
            ),
        )
    )
    return cases


def gen_blank(rng: random.Random) -> list[Case]:
    cases = []
    for value in (0, 255, 128, 7, 250):
        for mode in ("L", "RGB"):
            img = Image.new(mode, (50, 60), value if mode == "L" else (value,) * 3)
            for fmt in ("png", "jpg", "gif", "bmp", "webp"):
                cases.append(
                    Case(
                        "blank",
                        f"{mode} {fmt} uniform {value}",
                        f"b.{fmt}",
                        encode(img, fmt),
                        "blank",
                        "No digit found",
                    )
                )
    # Almost uniform: a 3-level step is below the 8/255 threshold.
    a = np.full((60, 50), 100, np.uint8)
    a[20:40, 20:30] = 103
    cases.append(
        Case(
            "blank",
            "L png 3-level bump",
            "n.png",
            encode(Image.fromarray(a), "png"),
            "blank",
            "No digit found",
        )
    )
    cases.append(
        Case(
            "blank",
            "RGB png uniform red",
            "r.png",
            encode(Image.new("RGB", (30, 30), (255, 0, 0)), "png"),
            "blank",
        )
    )
    cases.append(
        Case(
            "blank",
            "1-bit PNG all set",
            "1.png",
            encode(Image.new("1", (30, 30), 1), "png"),
            "blank",
        )
    )
    return cases


def gen_noise(rng: random.Random) -> list[Case]:
    np_rng = np.random.default_rng(rng.randrange(2**32))
    cases = []
    for i in range(16):
        h, w = int(np_rng.integers(3, 200)), int(np_rng.integers(3, 200))
        channels = (1, 3, 4)[i % 3]
        a = np_rng.integers(0, 256, (h, w, channels), np.uint8)
        img = Image.fromarray(a[..., 0] if channels == 1 else a, ("L", "RGB", "RGBA")[i % 3])
        fmt = ("png", "jpg", "gif", "bmp", "webp")[i % 5]
        if fmt in ("jpg", "bmp") and img.mode == "RGBA":
            img = img.convert("RGB")
        cases.append(Case("noise", f"{img.mode} {fmt} {w}x{h} noise", f"n.{fmt}", encode(img, fmt)))
    sparse = np.zeros((100, 100), np.uint8)
    sparse.flat[np_rng.integers(0, 10_000, 5)] = 255
    cases.append(
        Case(
            "noise",
            "five random white pixels",
            "s.png",
            encode(Image.fromarray(sparse), "png"),
            "accept",
        )
    )
    return cases


def gen_bitflip(rng: random.Random) -> list[Case]:
    base = digit_image(48, 60)
    files = {
        "png": encode(base, "png"),
        "jpg": encode(base.convert("RGB"), "jpg"),
        "gif": encode(base.convert("P"), "gif"),
        "bmp": encode(base, "bmp"),
        "webp": encode(base.convert("RGB"), "webp"),
        "webp-ll": encode(base.convert("RGBA"), "WEBP", lossless=True),
        "agif": encode(
            base.convert("P"),
            "gif",
            save_all=True,
            append_images=[base.rotate(30).convert("P")] * 3,
        ),
        "exif-jpg": encode(base, "jpg", exif=exif_bytes(6)),
    }
    cases = []
    for kind, data in files.items():
        ext = kind.split("-")[-1] if "-" in kind else kind.lstrip("a")
        for i in range(25):
            out = bytearray(data)
            n = rng.choice((1, 1, 2, 4, 16))
            head = i % 3 == 0  # a third of them in the first 64 bytes (headers)
            for _ in range(n):
                at = rng.randrange(min(64, len(out)) if head else len(out))
                if rng.random() < 0.5:
                    out[at] ^= 1 << rng.randrange(8)
                else:
                    out[at] = rng.randrange(256)
            cases.append(
                Case(
                    "bitflip",
                    f"{kind} #{i}: {n} bytes changed{' in header' * head}",
                    f"f.{ext}",
                    bytes(out),
                )
            )
    return cases


def gen_random(rng: random.Random) -> list[Case]:
    cases = []
    magics = [
        b"",
        b"\x89PNG\r\n\x1a\n",
        b"\xff\xd8\xff",
        b"GIF89a",
        b"GIF87a",
        b"BM",
        b"RIFF\x00\x00\x00\x00WEBP",
        b"RIFF\xff\xff\xff\x7fWEBPVP8X",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR",
        b"II*\x00",
        b"\xff\xd8\xff\xc0",
    ]
    for i in range(44):
        magic = magics[i % len(magics)]
        size = rng.choice((1, 3, 17, 100, 1000, 5000))
        data = magic + bytes(rng.randrange(256) for _ in range(size))
        cases.append(
            Case("random", f"random {size} bytes after {magic[:10]!r}", "r.png", data, "refuse")
        )
    cases.append(Case("random", "64 KB of zeros", "z.png", bytes(65536), "refuse"))
    cases.append(Case("random", "64 KB of 0xff", "f.jpg", b"\xff" * 65536, "refuse"))
    return cases


GENERATORS = [
    gen_truncated,
    gen_wrong_extension,
    gen_huge,
    gen_zero_size,
    gen_tiny,
    gen_palette,
    gen_deep,
    gen_tiff,
    gen_cmyk,
    gen_animated,
    gen_exif,
    gen_alpha,
    gen_blank,
    gen_noise,
    gen_bitflip,
    gen_random,
]


def all_cases() -> list[Case]:
    rng = random.Random(SEED)
    return [case for gen in GENERATORS for case in gen(rng)]


# --- checking ---------------------------------------------------------------------------------

_UNREADABLE = re.compile(
    r"Traceback|File \"|<PIL\.|<class |object at 0x|\b(OSError|SyntaxError|ValueError|EOFError|"
    r"IndexError|TypeError|KeyError|struct\.error|MemoryError|DecompressionBomb\w*)\b"
)


def message_problem(msg: str) -> str | None:
    if not msg.strip():
        return "empty message"
    if len(msg) >= 300:
        return f"message too long ({len(msg)} characters)"
    if _UNREADABLE.search(msg):
        return "message shows internals"
    if not msg[0].isupper():
        return "message does not start with a capital letter"
    return None


@dataclass
class Outcome:
    case: Case
    accepted: bool
    message: str  # the ImageError's message, or the note, or the failure
    image: np.ndarray | None
    seconds: float
    failure: str | None = None


def run_case(case: Case) -> Outcome:
    start = time.perf_counter()
    try:
        picture = decode_image(case.data)
        if picture.mode not in ("L", "RGB"):
            raise AssertionError(f"decode_image returned mode {picture.mode}")
        if set(picture.info) - {"saliency_note"}:
            raise AssertionError(f"decode_image left info keys {sorted(picture.info)}")
        x = mnist_style(picture)
    except ImageError as err:
        msg = str(err)
        problem = message_problem(msg)
        outcome = Outcome(case, False, msg, None, time.perf_counter() - start)
        if problem:
            outcome.failure = f"{problem}: {msg!r}"
        elif case.expect == "accept":
            outcome.failure = f"expected acceptance, refused: {msg!r}"
        elif case.expect == "blank" and not msg.startswith("No digit found"):
            outcome.failure = f"expected 'No digit found', got {msg!r}"
        elif case.says and case.says not in msg:
            outcome.failure = f"expected the message to say {case.says!r}: {msg!r}"
        return outcome
    except Exception as err:  # noqa: BLE001 - any other exception type is the bug being hunted
        tb = "".join(traceback.format_exception(err)[-4:])
        return Outcome(
            case, False, "", None, time.perf_counter() - start, f"{type(err).__name__}: {err}\n{tb}"
        )
    outcome = Outcome(
        case, True, picture.info.get("saliency_note", ""), x, time.perf_counter() - start
    )
    if not (isinstance(x, np.ndarray) and x.shape == (28, 28) and x.dtype == np.float32):
        outcome.failure = f"bad result {type(x).__name__} {getattr(x, 'shape', '')}"
    elif not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        outcome.failure = f"values outside [0, 1] or not finite: {x.min()}..{x.max()}"
    elif case.expect in ("refuse", "blank"):
        outcome.failure = f"expected a refusal ({case.expect}), but it was accepted"
    return outcome


@pytest.fixture(scope="module")
def outcomes() -> list[Outcome]:
    return [run_case(case) for case in all_cases()]


def test_at_least_500_files_in_every_category():
    cases = all_cases()
    counts = collections.Counter(c.category for c in cases)
    assert len(cases) >= 500, counts
    assert len(counts) == len(GENERATORS)
    # Deterministic: the same seed gives the same bytes.
    assert [c.data for c in all_cases()] == [c.data for c in cases]


def test_every_file_is_decoded_or_refused_with_a_plain_message(outcomes):
    table = collections.defaultdict(lambda: [0, 0])
    for o in outcomes:
        table[o.case.category][0 if o.accepted else 1] += 1
    print(f"\n{'category':<12} {'files':>5} {'accepted':>9} {'refused':>8}")
    for category, (acc, ref) in table.items():
        print(f"{category:<12} {acc + ref:>5} {acc:>9} {ref:>8}")
    total_acc = sum(v[0] for v in table.values())
    print(f"{'total':<12} {len(outcomes):>5} {total_acc:>9} {len(outcomes) - total_acc:>8}")
    slow = sorted(outcomes, key=lambda o: -o.seconds)[:3]
    print("slowest:", ", ".join(f"{o.case.label} {o.seconds:.2f} s" for o in slow))
    failures = [o for o in outcomes if o.failure]
    report = "\n".join(f"[{o.case.category}] {o.case.label}: {o.failure}" for o in failures[:8])
    assert not failures, f"{len(failures)} of {len(outcomes)} files failed; first ones:\n{report}"


def test_exif_orientations_all_come_out_upright(outcomes):
    by_label = {o.case.label: o for o in outcomes if o.case.category == "exif"}
    for fmt in ("jpg", "png", "webp"):
        reference = by_label[f"{fmt} orientation 1"].image
        for o in range(2, 9):
            x = by_label[f"{fmt} orientation {o}"].image
            r = float(np.corrcoef(reference.ravel(), x.ravel())[0, 1])
            assert r > 0.9, (fmt, o, r)


def test_refusals_name_the_problem(outcomes):
    """Each refused file's message names its kind of problem, not just "could not be decoded"."""
    for o in outcomes:
        if o.accepted or o.failure:
            continue
        if o.case.category == "tiff":
            assert "TIFF" in o.message, o.message
        if o.case.category == "zero-size" and o.case.label.startswith(("PNG 0", "GIF 0", "BMP 0")):
            assert "empty" in o.message or "corrupt" in o.message, o.message


@pytest.mark.parametrize(
    ("mode", "extreme"),
    [("I", 2**31 - 1), ("I", -(2**31))]
    + [("F", v) for v in (float("inf"), float("nan"), -1e30, 3e38)],
)
def test_32_bit_images_with_extreme_values(mode, extreme):
    """Pillow can't write mode I/F as PNG (and TIFF is refused), so `mnist_style` gets them as
    PIL images directly: extreme values give a valid image or "No digit found", never NaN."""
    a = (np.asarray(digit_image(), np.float64) / 255.0 * 1000).astype(
        np.int32 if mode == "I" else np.float32
    )
    a[0, 0] = extreme
    try:
        x = mnist_style(Image.fromarray(a, mode))
    except ImageError as err:
        assert message_problem(str(err)) is None
    else:
        assert x.shape == (28, 28) and x.dtype == np.float32 and np.isfinite(x).all()
        assert 0 <= x.min() and x.max() <= 1


# --- the real page, through AppTest ----------------------------------------------------------


def subset(outcomes: list[Outcome], per_category: int = 3) -> list[Outcome]:
    """A few files of every category, refused and accepted, distinct contents, small ones."""
    rng = random.Random(SEED + 1)
    picked, seen = [], set()
    by_category = collections.defaultdict(list)
    for o in outcomes:
        if len(o.case.data) < 2_000_000 and o.case.data not in seen:
            seen.add(o.case.data)
            by_category[o.case.category].append(o)
    for items in by_category.values():
        refused = [o for o in items if not o.accepted]
        accepted = [o for o in items if o.accepted]
        chosen = rng.sample(refused, min(len(refused), 2)) + rng.sample(
            accepted, min(len(accepted), 1)
        )
        chosen += rng.sample(
            [o for o in items if o not in chosen],
            max(0, min(per_category - len(chosen), len(items) - len(chosen))),
        )
        picked += chosen
    rng.shuffle(picked)
    return picked


def test_upload_subset_through_the_page(outcomes):
    from streamlit.testing.v1 import AppTest

    picked = subset(outcomes)
    assert len(picked) >= 40 and {o.case.category for o in picked} == {
        o.case.category for o in outcomes
    }
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["source"] = "upload"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    first = next(o for o in outcomes if o.case.label == "PNG named .jpg")
    at.file_uploader(key="upload_file").set_value(("first.png", first.case.data, "image/png")).run()
    assert not at.exception and not at.error
    shared = at.query_params["image"]
    assert shared == encode_image(first.image)
    problems = []
    for o in picked:
        c = o.case
        at.file_uploader(key="upload_file").set_value((c.name, c.data, c.mime)).run()
        where = f"[{c.category}] {c.label} ({c.name}, {c.mime})"
        if at.exception:
            problems.append(f"{where}: exception {[e.value for e in at.exception]}")
            continue
        errors = [e.value for e in at.error]
        if o.accepted:
            if errors:
                problems.append(f"{where}: accepted by decode_image but the page says {errors}")
            elif at.query_params.get("image") != encode_image(o.image):
                problems.append(f"{where}: the page shows another image than mnist_style gives")
            shared = at.query_params.get("image")
        else:
            if not errors or c.name not in errors[0] or o.message not in errors[0]:
                problems.append(f"{where}: expected an error naming the file, got {errors}")
            elif "The image shown below is the one you had before" not in errors[0]:
                problems.append(f"{where}: the error does not say the old image stays: {errors}")
            if at.query_params.get("image") != shared:
                problems.append(f"{where}: the previously accepted image changed")
    n_acc = sum(o.accepted for o in picked)
    print(
        f"\nAppTest: {len(picked)} uploads ({n_acc} accepted, {len(picked) - n_acc} refused), "
        f"{len({o.case.category for o in picked})} categories, {len(problems)} problems"
    )
    assert not problems, "\n".join(problems[:8])
