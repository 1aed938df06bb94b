"""The saliency panel: one browser module that draws a model's maps from float32 arrays sent
once, for both front ends, the dashboard's Explore view and the notebook widget
(`saliency.widget`). Numpy only: no UI library is imported here.

The browser does `saliency.display`'s arithmetic operation for operation, so its pixels equal
`display.render`'s. What needs no new gradients (another target class, colour map, alpha,
clip, colour scale, or the sign of a vanilla gradient) it draws at once, from what it holds.

The payload is `PanelData` (typed, versioned: `VERSION`, which the JavaScript checks too) and
the arrays, packed by `pack_arrays` into one binary message (`pack`). Arrays travel by
content: each is named by a hash, and a host may leave out the bytes of those the browser
already holds.

The JavaScript is one source in four files, joined by `source(host)` into one ES module:
`arith.js` and `panel.js` are the environment-neutral core (they read no host's DOM), then one
entry point: `streamlit.js` (Streamlit components v2 calls the default export with a component
object) or `widget.js` (anywidget calls it with nothing and gets `{ render }`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from saliency import display

VERSION = 2  # arith.js's PAYLOAD_VERSION: change both with the fields (PAYLOAD_FIELDS)
MAGIC = b"SAL1"
HOSTS = ("streamlit", "widget")
_HERE = Path(__file__).parent


@dataclass(frozen=True)
class PanelData:
    """What the panel reads besides the arrays (JSON). Both hosts build it: the dashboard in
    `dashboard.views.explore.panel_content`, the widget in `saliency.notebook`.

    Classes are ints; `labels` maps str(class) to its name. `classes` are the rows of the
    array "maps" (N, H, W); `grid` and `bars` are the every-class grid's classes and the
    chart's [class, probability] rows. `signed`/`absolute_of_signed`: how the maps are shown
    when the sign is not the panel's to switch (`sign_local`). `controls`: the switches'
    labels, and their options (`signs`, `scales`, `cmaps`, `cmaps_signed`). arith.js names
    every field in `PAYLOAD_FIELDS` and refuses a payload without one of them.
    """

    classes: list[int]
    target: int
    pred: int
    true: int | None
    runner_up: int
    grid: list[int]
    bars: list[list[float]]
    labels: dict[str, str]
    absolute_of_signed: bool
    signed: bool
    alpha: float
    clip: float
    shared: bool
    cmap: str
    cmap_signed: str
    sign: str
    scale_view: str
    controls: dict[str, Any]
    sign_local: bool
    scale_local: bool
    symbol: str
    map_of: str
    scale: int
    grid_px: int
    image_caption: str
    grid_title: str
    grid_note: str
    bars_note: str
    contrast_from_maps: bool
    contrast_target: int
    contrast_versus: int
    export: dict[str, Any]
    seq: int = 0
    route: dict[str, Any] | None = None  # the dashboard's explore route (streamlit.js)
    fallback: bool = False  # the dashboard draws its own pictures in this run
    alive: bool = True  # the dashboard has heard that the panel drew
    own_controls: bool = False  # the panel draws its own colour, alpha, clip, scale, sign
    # The target box among those switches (the dashboard's): its [value, text] choices
    # ("predicted", "true", then each class number) and the one the view holds.
    target_choices: list[list[str]] | None = None
    target_choice: str = "predicted"
    version: int = field(default=VERSION, init=False)

    def to_json(self) -> dict[str, Any]:
        """The fields as a dict for `json.dumps` (shallow: `dataclasses.asdict`'s deep copy
        took a fifth of a small model's method switch in the notebook widget)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


FIELDS = tuple(f.name for f in dataclasses.fields(PanelData))


@cache
def source(host: str) -> str:
    """The panel's ES module for `host` ("streamlit" or "widget"): the core and its entry."""
    if host not in HOSTS:
        raise ValueError(f"host must be one of {HOSTS}, got {host!r}")
    parts = ("arith.js", "panel.js", f"{host}.js")
    return "\n".join((_HERE / p).read_text(encoding="utf-8") for p in parts)


@cache
def css() -> str:
    return (_HERE / "panel.css").read_text(encoding="utf-8")


@cache
def lut(cmap: str) -> np.ndarray:
    """The colour map's 256 × 3 uint8 table, as `display.colorize` indexes it."""
    table = display.colorize(np.arange(256) / 255, cmap).astype(np.uint8)
    table.setflags(write=False)
    return table


def luts() -> dict[str, np.ndarray]:
    """Every colour table, as the panel's arrays name them (a few hundred bytes each)."""
    return {f"lut:{n}": lut(n) for n in display.SEQUENTIAL_CMAPS + display.DIVERGING_CMAPS}


def exact(array: np.ndarray) -> np.ndarray:
    """Little-endian, and float32 or float64 as it was (uint8 stays): no value changes."""
    array = np.asarray(array)
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    return np.ascontiguousarray(array, dtype="<f4" if array.dtype == np.float32 else "<f8")


def array_id(array: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=12)
    h.update(repr((array.dtype.str, array.shape)).encode())
    h.update(array.data)
    return h.hexdigest()


def pack(data: dict[str, Any], blobs: list[np.ndarray]) -> bytes:
    """`MAGIC`, the JSON's length (uint32 LE), the JSON, zeros to a multiple of 8 bytes, then
    each blob's bytes, each padded to 8 bytes (its place is in the JSON): one bytes payload,
    which Streamlit and ipywidgets send as it is (arrays in JSON would need base64)."""
    head = json.dumps(data, separators=(",", ":")).encode()
    parts = [MAGIC, len(head).to_bytes(4, "little"), head, b"\0" * (-len(head) % 8)]
    for blob in blobs:
        parts += [blob.data, b"\0" * (-blob.nbytes % 8)]
    return b"".join(parts)


def unpack(payload: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """`pack`'s inverse, as arith.js reads it: the data, and the arrays it carried."""
    if payload[:4] != MAGIC:
        raise ValueError("not a saliency panel payload")
    n = int.from_bytes(payload[4:8], "little")
    data = json.loads(payload[8 : 8 + n])
    base = 8 + n + (-n % 8)
    arrays = {}
    for name, ref in data["arrays"].items():
        if "at" in ref:
            start = base + ref["at"]
            raw = payload[start : start + ref["nbytes"]]
            arrays[name] = np.frombuffer(raw, dtype=ref["dtype"]).reshape(ref["shape"])
    return data, arrays


def pack_arrays(
    data: PanelData, arrays: dict[str, np.ndarray], carry: Callable[[str], bool]
) -> bytes:
    """`pack` of `data` with its "arrays" describing each of `arrays` (`id`, `dtype`, `shape`),
    and carrying the bytes of those whose id `carry` says (`at`, `nbytes`)."""
    if not isinstance(data, PanelData):
        raise TypeError(f"the panel's data is a PanelData, not {type(data).__name__}")
    refs, blobs, at = {}, [], 0
    for name, array in arrays.items():
        array = exact(array)
        ident = array_id(array)
        refs[name] = {"id": ident, "dtype": array.dtype.str, "shape": list(array.shape)}
        if carry(ident):
            refs[name].update(at=at, nbytes=array.nbytes)
            blobs.append(array)
            at += array.nbytes + (-array.nbytes % 8)
    return pack({**data.to_json(), "arrays": refs}, blobs)


def pack_all(arrays: dict[str, np.ndarray], data: PanelData) -> bytes:
    """`data` and every one of `arrays` in one payload (for a browser that may hold none)."""
    whole = dataclasses.replace(data, fallback=False, alive=True)
    return pack_arrays(whole, arrays, lambda ident: True)
