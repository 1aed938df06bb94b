"""Turning maps into pictures: numpy in, numpy out, no UI imports.

The choices that change what a viewer sees are explicit arguments here, so a UI can name them:
how colour channels are reduced, whether the map is signed, the percentile at which the scale is
clipped, and whether several maps share one scale.

    >>> m = reduce_channels(s[0].numpy())                       # (1, 28, 28) -> (28, 28)
    >>> lo, hi = display_range([m], percentile=99)              # absolute map: lo is 0
    >>> rgb = overlay(image, normalise(m, lo, hi), alpha=0.6)   # (28, 28, 3) uint8
    >>> big = upscale(rgb, 10)                                  # crisp 280 x 280
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np

REDUCTIONS = ("max", "sum", "mean", "l2")
SEQUENTIAL_CMAPS = ("inferno", "magma", "viridis", "hot", "gray", "turbo")
DIVERGING_CMAPS = ("RdBu_r", "coolwarm", "seismic", "PiYG")
_TABLES = Path(__file__).with_name("colormaps.npz")


@cache
def _lut(name: str) -> np.ndarray:
    with np.load(_TABLES) as tables:
        if name not in tables:
            known = ", ".join(SEQUENTIAL_CMAPS + DIVERGING_CMAPS)
            raise ValueError(f"unknown colour map {name!r}; known: {known}")
        table = tables[name]
    table.setflags(write=False)
    return table  # (256, 3) uint8


def reduce_channels(m: np.ndarray, how: str = "max", *, channel_axis: int = 0) -> np.ndarray:
    """Collapse the colour-channel axis of a map.

    "max": max |m| over channels (Simonyan et al. 2013; always non-negative); "sum" and "mean"
    keep the sign; "l2": Euclidean norm over channels.
    """
    m = np.asarray(m)
    if how not in REDUCTIONS:
        raise ValueError(f"how must be one of {REDUCTIONS}, got {how!r}")
    if m.ndim < 2:
        raise ValueError(f"expected a map with a channel axis, got shape {m.shape}")
    if how == "max":
        return np.abs(m).max(axis=channel_axis)
    if how == "sum":
        return m.sum(axis=channel_axis)
    if how == "mean":
        return m.mean(axis=channel_axis)
    return np.sqrt((m.astype(np.float64) ** 2).sum(axis=channel_axis)).astype(m.dtype)


def display_range(
    maps: np.ndarray | Sequence[np.ndarray], *, signed: bool = False, percentile: float = 99.0
) -> tuple[float, float]:
    """The (lo, hi) values mapped to the ends of the colour scale.

    Pass one map for a per-map scale, or several to put them on one shared scale. Absolute
    maps run from 0 to the `percentile`-th percentile of their values (so a few extreme pixels
    do not wash the rest out); signed maps are symmetric around 0 at that percentile of |m|.
    `percentile=100` keeps the full range.
    """
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    parts = [maps] if isinstance(maps, np.ndarray) else list(maps)
    if not parts:
        raise ValueError("no maps given")
    values = np.concatenate([np.asarray(p, dtype=np.float64).ravel() for p in parts])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (-1.0, 1.0) if signed else (0.0, 1.0)
    # An all-zero map gets the range (0, 1) or (-1, 1): it shows as the scale's zero colour.
    if signed:
        hi = float(np.percentile(np.abs(values), percentile)) or 1.0
        return -hi, hi
    lo = min(0.0, float(values.min()))
    hi = float(np.percentile(values, percentile))
    return lo, (hi if hi > lo else lo + 1.0)


def normalise(m: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map values to [0, 1] (clipped) with lo -> 0 and hi -> 1."""
    m = np.asarray(m, dtype=np.float64)
    if not hi > lo:
        raise ValueError(f"the display range must have hi > lo, got ({lo}, {hi})")
    return np.clip((m - lo) / (hi - lo), 0.0, 1.0)


def colorize(m01: np.ndarray, cmap: str = "inferno") -> np.ndarray:
    """Values in [0, 1], shape (H, W) -> uint8 RGB (H, W, 3) through a colour map."""
    m01 = np.asarray(m01, dtype=np.float64)
    index = np.clip(np.round(np.nan_to_num(m01) * 255), 0, 255).astype(np.intp)
    return _lut(cmap)[index]


def to_rgb(image: np.ndarray) -> np.ndarray:
    """A greyscale or colour image as uint8 (H, W, 3).

    Accepts (H, W), (H, W, 1|3), (1|3, H, W), floats in [0, 1] or uint8.
    """
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"expected a greyscale or RGB image, got shape {np.asarray(image).shape}")
    if img.dtype != np.uint8:
        img = np.clip(np.round(np.asarray(img, dtype=np.float64) * 255), 0, 255).astype(np.uint8)
    return img


def overlay(
    image: np.ndarray, m01: np.ndarray, *, cmap: str = "inferno", alpha: float = 0.5
) -> np.ndarray:
    """Blend a colour-mapped map over an image: (1 - alpha) * image + alpha * colours, uint8."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    base = to_rgb(image).astype(np.float64)
    heat = colorize(m01, cmap).astype(np.float64)
    if base.shape != heat.shape:
        raise ValueError(f"image {base.shape[:2]} and map {heat.shape[:2]} differ in size")
    return np.round((1 - alpha) * base + alpha * heat).astype(np.uint8)


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling (each pixel becomes a factor x factor block): crisp pixels."""
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    img = np.asarray(image)
    return img.repeat(factor, axis=0).repeat(factor, axis=1)


def colorbar(
    lo: float, hi: float, cmap: str = "inferno", *, length: int = 256, thickness: int = 14
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """A horizontal colour bar (thickness, length, 3) uint8 and its ticks.

    Ticks are (position in [0, 1], value) pairs at the ends and in between (5 in all).
    """
    strip = colorize(np.linspace(0, 1, length)[None, :].repeat(thickness, 0), cmap)
    ticks = [(p, lo + p * (hi - lo)) for p in np.linspace(0, 1, 5)]
    return strip, ticks


def render(
    m: np.ndarray,
    *,
    lo: float,
    hi: float,
    cmap: str = "inferno",
    image: np.ndarray | None = None,
    alpha: float = 0.5,
    scale: int = 1,
) -> np.ndarray:
    """One (H, W) map as an upscaled uint8 RGB picture, over `image` when one is given."""
    m01 = normalise(m, lo, hi)
    rgb = colorize(m01, cmap) if image is None else overlay(image, m01, cmap=cmap, alpha=alpha)
    return upscale(rgb, scale)
