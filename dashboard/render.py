"""Small render helpers: maps to crisp pictures with a labelled colour bar, and PNG bytes."""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import streamlit as st
from PIL import Image, ImageDraw, ImageFont

from dashboard import lru
from dashboard.lru import BytesLRU, memo
from saliency import display
from sandbox.text import clean
from sandbox.worker import ModelFailure
from workspace import WorkspaceError

SCALE = 10  # 28 x 28 -> 280 x 280, nearest neighbour: every pixel stays a crisp square
_MARKUP = set("\\`*[]<>~$")  # code, emphasis, links and images, HTML, strikethrough, LaTeX


def counted(done: int, total: int, start: float, unit: str = "images") -> str:
    """A progress bar's words for countable work begun at `time.perf_counter()` `start`:
    "3,000 / 10,000 images · 1,250 images/s · about 6 s left"."""
    rate = done / max(time.perf_counter() - start, 1e-9)
    left = (total - done) / max(rate, 1e-9)
    return f"{done:,} / {total:,} {unit} · {rate:,.0f} {unit}/s · about {left:,.0f} s left"


def bar_calls(bar, waiting: str) -> tuple[float, Callable[[int, int], None], Callable[[], None]]:
    """A shared computation's callbacks for its progress `bar`, from now: `(start, progress,
    wait)`. `progress(done, total)` counts the work (`counted`); `wait()` says `waiting` while
    another visitor computes the same result, which this page then reads."""
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        bar.progress(done / total, text=counted(done, total, start))

    def wait() -> None:
        bar.progress(0.0, text=waiting)

    return start, progress, wait


def accuracy(value: float | None, word: str = " accuracy", digits: int = 2) -> str:
    """A model's test accuracy as its views say it ("98.91% accuracy"), or "random weights"
    for a model that has none (an ImageNet classifier without its weights)."""
    return "random weights" if value is None else f"{value:.{digits}%}{word}"


EXPLORE_PAGE = "page_files/explore.py"


def no_images(src, what: str) -> bool:
    """True, having said so, when data set `src` has no images of its own (the ImageNet
    workspace: Explore explains a photo of the user's there) and `what` needs them."""
    if src.has_images:
        return False
    st.info(
        f"**{plain(src.title)}** has no images of its own, and {what} needs a data set's "
        "images: pick MNIST digits, Fashion-MNIST or a workspace in the sidebar. Explore "
        "explains a photo of yours with its models."
    )
    st.page_link(EXPLORE_PAGE, label="Explore a photo of yours", icon="🔍")
    return True


def plain(text: object) -> str:
    """Text that may hold a user's or a model's own words, escaped so Markdown shows it as it
    is (no links, no images, no emphasis, no HTML), without bidirectional controls
    (`sandbox.text.clean`). An underscore inside a word (state_dict) stays: it can't start
    emphasis."""
    t = clean(text)
    out = []
    for i, c in enumerate(t):
        inside = 0 < i < len(t) - 1 and t[i - 1].isalnum() and t[i + 1].isalnum()
        out.append("\\" + c if c in _MARKUP or (c == "_" and not inside) else c)
    return "".join(out)


def bullets(items: Iterable[str]) -> str:
    """A Markdown list, one item per line of `items` (escape a user's words with `plain`)."""
    return "\n".join(f"- {item}" for item in items)


@contextmanager
def failures_said() -> Iterator[None]:
    """An uploaded model that failed in its worker, or a workspace whose files changed since it
    was indexed, said on the page rather than raised: the rest of the dashboard is unaffected.
    The router (app.py) does this around each page; a fragment needs its own, since what raises
    inside one is shown there as a traceback and never reaches the router."""
    try:
        yield
    except ModelFailure as err:
        st.error(
            f"{plain(err)} The rest of the dashboard is unaffected: the bundled models and "
            "your other choices are still here."
        )
    except WorkspaceError as err:
        st.error(
            f"This workspace can't be shown: {plain(err)}. Pick another data set in the "
            "sidebar; everything else you chose is kept."
        )


def class_label(k: int, names: tuple[str, ...]) -> str:
    """The label of class k: its number alone (MNIST's "7"), or "3 · Dress": plain text, for
    a widget's options, a chart or a picture (`class_md` for Markdown)."""
    return str(k) if names[k] == str(k) else f"{k} · {clean(names[k])}"


def class_md(k: int, names: tuple[str, ...]) -> str:
    """`class_label` escaped for Markdown (captions, messages, headings)."""
    return plain(class_label(k, names))


@dataclass(frozen=True)
class Style:
    """The rendering choices in force, so every picture and caption says the same thing."""

    signed: bool
    cmap: str
    alpha: float
    clip: float
    shared: bool

    def range(self, maps: list[np.ndarray]) -> tuple[float, float]:
        return display.display_range(maps, signed=self.signed, percentile=self.clip)

    def describe(self, lo: float, hi: float) -> str:
        kind = "signed (diverging colours, 0 = white)" if self.signed else "absolute"
        scale = "shared by every map on screen" if self.shared else "per map"
        return (
            f"{kind} · colour scale {scale}, clipped at the {self.clip:g}th percentile "
            f"({lo:.3g} … {hi:.3g}) · colour map {self.cmap} · overlay alpha {self.alpha:g}"
        )


def picture(
    m: np.ndarray,
    lo: float,
    hi: float,
    style: Style,
    *,
    image: np.ndarray | None = None,
    scale: int = SCALE,
) -> np.ndarray:
    """(H, W) map -> upscaled uint8 RGB, over `image` when given."""
    return display.render(
        m, lo=lo, hi=hi, cmap=style.cmap, image=image, alpha=style.alpha, scale=scale
    )


@memo("pngs")
def colorbar(lo: float, hi: float, cmap: str, width: int = 280) -> np.ndarray:
    """A colour bar `width` pixels wide in all (as wide as the map above it, so the browser
    never shrinks it: pictures are drawn with crisp pixels, which would garble its numbers),
    with its numeric range written under it, as uint8 RGB."""
    length = width - 40
    strip, ticks = display.colorbar(lo, hi, cmap, length=length, thickness=14)
    canvas = Image.new("RGB", (width, 34), "white")
    canvas.paste(Image.fromarray(strip), (20, 0))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=11)
    for pos, value in ticks:
        x = 20 + round(pos * (length - 1))
        draw.line([(x, 14), (x, 17)], fill="black")
        text = f"{value:.2g}"
        w = draw.textlength(text, font=font)
        draw.text((min(max(x - w / 2, 0), width - w), 19), text, fill="black", font=font)
    return np.asarray(canvas)


def grey(image: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """An image (grey `(H, W)` or `(C, H, W)`, grey or RGB) as upscaled uint8 RGB."""
    return display.upscale(display.to_rgb(image), scale)


def scale_for(shape: tuple[int, ...], px: int = 280) -> int:
    """The whole-number upscale that brings an image's longer side nearest to `px` (1 for
    images already that big): 28 × 28 -> 10, 64 × 64 -> 4, 224 × 224 -> 1."""
    return max(1, round(px / max(shape[-2:])))


def thumbnail(rgb: np.ndarray, px: int) -> np.ndarray:
    """A picture whose longer side is at most `px`: shrunk smoothly (a big photo), or kept."""
    h, w = rgb.shape[:2]
    if max(h, w) <= px:
        return rgb
    f = px / max(h, w)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))


def png_bytes(rgb: np.ndarray) -> bytes:
    # Level 1: these pictures are big flat blocks, so it compresses almost as well as the
    # default level 6 in a third of the time, and every rerun encodes a dozen of them.
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def png(rgb: np.ndarray) -> bytes:
    """`png_bytes`, from the server's cache of pictures already encoded (by content, over
    every session): a rerun redraws the same pictures (a class switch changes two of
    fifteen), and hashing one (BLAKE2, ~0.1 ms) is far cheaper than encoding it again."""
    rgb = np.ascontiguousarray(rgb)
    key = hashlib.blake2b(rgb.data, digest_size=16)
    key.update(repr(rgb.shape).encode())
    k = key.digest()
    store = _png_cache()
    data = store.get(k)
    if data is None:
        data = png_bytes(rgb)
        store.put(k, data, len(data))
    return data


def _png_cache() -> BytesLRU:
    return lru.store("pngs")


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array, dtype=np.float32))
    return buf.getvalue()


def upscale(rgb: np.ndarray, scale: int) -> np.ndarray:
    return display.upscale(rgb, scale) if scale > 1 else rgb


# Crisp pictures; no Streamlit "install skills for AI coding agents" toast, which Streamlit
# shows on a non-headless server when it detects an agent's tools on the machine (on a class's
# projector it covers the page and offers to install files); loading placeholders that don't
# shimmer: on a slow device's one core, repainting the ~30 of a first page cost it about 1.1 s
# (a first load with Chromium pinned to one core, 4 loads each way, twice).
PIXELATED_CSS = (
    "<style>[data-testid='stImage'] img {image-rendering: pixelated;}"
    " [data-testid='stSkillsNudge'] {display: none;}"
    " [data-testid='stSkeleton'] {animation: none !important;}</style>"
)


def show(
    rgb: np.ndarray, caption: str | None = None, width: int | None = None, *, scale: int = 1
) -> None:
    """A picture sent at its own pixel size as PNG (never lossy JPEG: without `output_format`,
    Streamlit re-encodes a PNG without alpha as JPEG), shown `scale` times as large with crisp
    pixels (the app's PIXELATED_CSS): a 28 × 28 map is sent as 28 × 28, not 280 × 280."""
    st.image(png(rgb), caption=caption, width=width or rgb.shape[1] * scale, output_format="PNG")


def show_row(pictures: list[np.ndarray], captions: list[str], *, scale: int = 1) -> None:
    """Several pictures side by side (wrapping), as ONE element: each rerun sends one message
    instead of one per picture. Each `scale` times its own pixel size, as PNG."""
    st.image(
        [png(rgb) for rgb in pictures],
        caption=captions,
        width=max(rgb.shape[1] for rgb in pictures) * scale,
        output_format="PNG",
    )
