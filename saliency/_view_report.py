"""The notebook widget's "Download report": the view the panel shows, as `saliency.report`'s
one self-contained HTML file.

The panel draws in the browser from the float32 maps the kernel sent; it tells the kernel only
the settings it shows (the JSON export's: colour maps, alpha, clip, sign, scale) and the class
chosen. The pictures here are `saliency.display`'s from the same maps and settings, which are
the panel's pixels (tests/library/test_notebook_browser.py checks both against display). Numpy, PIL
and the library only.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from saliency import display
from saliency.panel import PanelData
from saliency.report import Section

VIEW_KEYS = ("cmap", "cmap_signed", "alpha", "clip", "sign", "scale")  # panel.js's s.view
GRID_PX = 140  # a grid cell's side, as the panel's grid_px (each pixel a block of this / side)
BAR_PX = 280  # the colour bar's least length, as panel.js's drawBar


def png(rgb: np.ndarray) -> bytes:
    """uint8 (H, W, 3) as PNG bytes (level 1, as the dashboard's pictures)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(
        buf, format="PNG", compress_level=1
    )
    return buf.getvalue()


def state_sha256(model: nn.Module) -> str:
    """SHA-256 of the model's state dict: each entry's name, dtype, shape and bytes, in order
    (the weights as the kernel holds them; a registry file's own sha256 may be passed instead)."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return h.hexdigest()


def settings_of(data: PanelData, given: Mapping[str, Any]) -> dict[str, Any]:
    """The view's settings (`VIEW_KEYS`): the payload's defaults, then `given` (None keeps a
    default). Raises TypeError for an unknown key, ValueError for a value the panel can't show."""
    unknown = sorted(set(given) - set(VIEW_KEYS))
    if unknown:
        raise TypeError(f"unknown settings {unknown}; known: {', '.join(VIEW_KEYS)}")
    s = {
        "cmap": data.cmap,
        "cmap_signed": data.cmap_signed,
        "alpha": data.alpha,
        "clip": data.clip,
        "sign": data.sign,
        "scale": data.scale_view,
    }
    s.update({k: v for k, v in given.items() if v is not None})
    s["alpha"], s["clip"] = float(s["alpha"]), float(s["clip"])
    if s["cmap"] not in display.SEQUENTIAL_CMAPS:
        raise ValueError(f"cmap must be one of {display.SEQUENTIAL_CMAPS}, got {s['cmap']!r}")
    if s["cmap_signed"] not in display.DIVERGING_CMAPS:
        raise ValueError(
            f"cmap_signed must be one of {display.DIVERGING_CMAPS}, got {s['cmap_signed']!r}"
        )
    if not 0 <= s["alpha"] <= 1 or not 0 < s["clip"] <= 100:
        raise ValueError(f"alpha must be in [0, 1] and clip in (0, 100], got {s}")
    signs = ("absolute", "signed") if data.sign_local else (data.sign,)
    if s["sign"] not in signs:
        raise ValueError(f"sign must be one of {signs} for this view, got {s['sign']!r}")
    if s["scale"] not in ("map", "shared"):
        raise ValueError(f"scale must be 'map' or 'shared', got {s['scale']!r}")
    return s


class Drawn:
    """What the panel draws for `target` under settings `s`, as saliency.display draws it."""

    def __init__(self, maps: np.ndarray, data: PanelData, s: Mapping[str, Any], target: int):
        self.index = {k: i for i, k in enumerate(data.classes)}
        if target not in self.index:
            raise ValueError(f"class {target} is not in this view (it has {data.classes})")
        self.signed = s["sign"] == "signed" if data.sign_local else data.signed
        self.absolute = data.sign_local and not self.signed
        self.maps = np.abs(maps) if self.absolute else maps
        self.cmap = s["cmap_signed"] if self.signed else s["cmap"]
        self.clip, self.alpha, self.shared = s["clip"], s["alpha"], s["scale"] == "shared"
        self.main = self.maps[self.index[target]]
        grid = [self.maps[self.index[k]] for k in data.grid if k in self.index]
        parts = [self.main, *grid] if self.shared else [self.main]
        self.lo, self.hi = display.display_range(parts, signed=self.signed, percentile=self.clip)

    def of(self, k: int) -> np.ndarray:
        return self.maps[self.index[k]]

    def range_of(self, k: int) -> tuple[float, float]:
        if self.shared:
            return self.lo, self.hi
        return display.display_range(self.of(k), signed=self.signed, percentile=self.clip)


def _label(data: PanelData, k: int) -> str:
    name = data.labels.get(str(k), str(k))
    return name if name == str(k) else f"{k}: {name}"


def _marks(data: PanelData, k: int) -> str:
    return (" · predicted" if k == data.pred else "") + (" · true" if k == data.true else "")


def _bar(lo: float, hi: float, cmap: str, width: int) -> bytes:
    strip, _ = display.colorbar(lo, hi, cmap, length=max(BAR_PX, width))
    return png(strip)


def _contrast(maps: np.ndarray, contrast: np.ndarray | None, data: PanelData, d: Drawn,
              target: int) -> tuple[np.ndarray, int, int]:  # fmt: skip
    """The contrast map the panel shows with `target` chosen, and its two classes: from two
    rows of the (signed) maps, float32 as panel.js's Math.fround, or the kernel's."""
    if contrast is None:
        versus = data.pred if target != data.pred else data.runner_up
        if versus in d.index:
            return maps[d.index[target]] - maps[d.index[versus]], target, versus
    return contrast, data.contrast_target, data.contrast_versus


def sections(
    maps: np.ndarray,
    rgb: np.ndarray,
    contrast: np.ndarray | None,
    data: PanelData,
    s: Mapping[str, Any],
    target: int,
    heading: str,
) -> tuple[list[Section], Drawn]:
    """The report's sections for the view: image, map, overlay and colour bar with the
    probabilities; the contrast; every class's map. Pictures as the panel draws them."""
    d = Drawn(maps, data, s, target)
    h, w = d.main.shape
    big = data.scale
    what = f"{data.symbol}[{_label(data, target)}]"
    what = f"{data.map_of} of {what}" if data.map_of else f"∂ {what} / ∂x"
    if d.absolute:
        what = f"|{what}|"
    first = Section(
        heading,
        images=[
            (data.image_caption, png(display.upscale(rgb, big))),
            (f"Map: {what}", png(display.render(d.main, lo=d.lo, hi=d.hi, cmap=d.cmap, scale=big))),
            (
                f"Overlay (alpha {d.alpha:g})",
                png(
                    display.render(
                        d.main, lo=d.lo, hi=d.hi, cmap=d.cmap, image=rgb, alpha=d.alpha, scale=big
                    )
                ),  # fmt: skip
            ),
            (f"Colour scale {d.lo:.3g} … {d.hi:.3g}", _bar(d.lo, d.hi, d.cmap, w * big)),
        ],
        probabilities=[(_label(data, int(k)) + _marks(data, int(k)), p) for k, p in data.bars],
        note=data.bars_note,
    )
    diff, t, v = _contrast(maps, contrast, data, d, target)
    c_lo, c_hi = display.display_range(diff, signed=True, percentile=d.clip)
    second = Section(
        f"Why {_label(data, t)} and not {_label(data, v)}?",
        images=[
            (
                f"{data.symbol}[{t}] − {data.symbol}[{v}]",
                png(display.render(diff, lo=c_lo, hi=c_hi, cmap=s["cmap_signed"], scale=big)),
            ),
            (f"Colour scale {c_lo:.3g} … {c_hi:.3g}", _bar(c_lo, c_hi, s["cmap_signed"], w * big)),
        ],
        note=f"Red pixels, when brighter, favour {_label(data, t)}; blue ones favour "
        f"{_label(data, v)}. Signed, on its own symmetric scale.",
    )
    small = max(1, GRID_PX // max(h, w))
    grid = []
    for k in (k for k in data.grid if k in d.index):
        k_lo, k_hi = d.range_of(k)
        rgb_k = display.render(d.of(k), lo=k_lo, hi=k_hi, cmap=d.cmap, image=rgb,
                               alpha=d.alpha, scale=small)  # fmt: skip
        grid.append((_label(data, k) + _marks(data, k), png(rgb_k)))
    note = data.grid_note.replace(" Orange frame: predicted class; green: true.", "")
    return [first, second, Section(data.grid_title, images=grid, note=note)], d
