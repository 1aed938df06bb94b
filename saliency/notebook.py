"""The Explore panel in a notebook: `widget(model, images)` is an anywidget (JupyterLab,
Notebook 7, VS Code, Colab, marimo) that draws the same panel as the dashboard's Explore view,
from the same JavaScript (`saliency.panel`), with no server.

    >>> import saliency
    >>> w = saliency.widget(model, x[:8], labels=y[:8], class_names=names)
    >>> w                                   # the last line of a cell shows it

The browser draws everything that needs no new gradients: a class clicked or hovered over in
the grid or the chart, the colour maps, alpha, clip, colour scale and (a vanilla gradient of a
one-channel image) the sign, with the panel's own switches: none of them sends the kernel a
message. Another image or method is computed here, in the kernel, on the model's device, and
sent once as float32 maps. anywidget is optional: `pip install 'saliency-dashboard[notebook]'`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from saliency import display
from saliency import panel as core
from saliency._methods import class_maps, contrast
from saliency.names import METHOD_INFO, method_info

INSTALL = (
    "saliency.widget needs anywidget, which is not installed: "
    "pip install 'saliency-dashboard[notebook]' (or: pip install anywidget)"
)
DEFAULT_METHODS = ("gradient", "input_x_gradient", "smoothgrad", "integrated_gradients",
                   "grad_cam")  # fmt: skip
ALL_CLASSES_UP_TO = 20  # more classes: the grid and the chart show the top ones, as Explore
TOP_CLASSES = 10
SIGNS, SCALES = ("absolute", "signed"), ("map", "shared")
CONTROLS = {
    "sign": "Values",
    "signs": list(SIGNS),
    "scale": "Colour scale",
    "scales": list(SCALES),
    "clip": "Clip at percentile",
    "alpha": "Overlay alpha",
    "cmap": "Colour map",
    "cmaps": list(display.SEQUENTIAL_CMAPS),
    "cmap_signed": "Signed colour map",
    "cmaps_signed": list(display.DIVERGING_CMAPS),
}


@dataclasses.dataclass(frozen=True)
class View:
    """One image under one method, as computed in the kernel: what the panel is sent."""

    probs: np.ndarray  # (K,) float64
    classes: list[int]  # the rows of `maps`
    maps: np.ndarray  # (len(classes), H, W) float32: signed when `sign_local`
    rgb: np.ndarray  # (H, W, 3) uint8
    contrast: np.ndarray | None  # (H, W), None when the panel subtracts two rows of `maps`
    sign_local: bool
    signed: bool


def device_of(model: nn.Module) -> torch.device:
    """Where the model's parameters are (CPU for a model without any): inputs follow it."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _reduce(maps: torch.Tensor, signed: bool) -> np.ndarray:
    """(C, channels, H, W) -> (C, H, W) float32: one channel as it is, three by max |m|
    (Simonyan's choice) or, signed, their sum (display.reduce_channels)."""
    m = maps.detach().float().cpu().numpy()
    if m.shape[1] == 1:
        return np.ascontiguousarray(m[:, 0])
    return np.ascontiguousarray(
        display.reduce_channels(m, "sum" if signed else "max", channel_axis=1)
    )


def shown_classes(probs: np.ndarray, true: int | None) -> list[int]:
    """Every class up to ALL_CLASSES_UP_TO, else the TOP_CLASSES most probable and the true."""
    k = len(probs)
    shown = (
        list(range(k))
        if k <= ALL_CLASSES_UP_TO
        else [int(c) for c in np.argsort(-probs)[:TOP_CLASSES]]
    )
    if true is not None and true not in shown:
        shown.append(true)
    return shown


def compute(
    model: nn.Module,
    image: torch.Tensor,
    method: str,
    *,
    true: int | None = None,
    score: str = "logit",
    layer=None,
    same_image: View | None = None,
) -> View:
    """The panel's arrays for one `image` (C, H, W) in [0, 1] under `method`, on the model's
    device. A vanilla gradient of a one-channel image is sent signed, once: its absolute map is
    |signed map|, so the panel's sign switch needs no new gradients. `same_image`: a view of
    this same image (another method's), whose probabilities and pixels are taken as they are:
    a method switch costs the kernel the maps alone, not another forward pass."""
    info = method_info(method)
    x = image.detach().to(device_of(model), torch.float32)[None]  # (1, C, H, W)
    if same_image is None:
        with torch.no_grad():
            probs = torch.softmax(model(x).double(), dim=1)[0].cpu().numpy()
    else:
        probs = same_image.probs
    classes = shown_classes(probs, true)
    options = {"layer": layer} if info.layer and layer is not None else {}
    sign_local = method == "gradient" and x.shape[1] == 1
    signed = sign_local or info.signed
    raw = class_maps(
        model,
        x,
        classes,
        method=method,
        absolute=False if sign_local else None,
        score=score,
        **options,
    )
    maps = _reduce(raw[0], signed)  # (len(classes), H, W)
    pred = int(probs.argmax())
    versus = int(np.argsort(-probs)[1]) if len(probs) > 1 else pred
    diff = None
    if not sign_local:
        c = contrast(model, x, pred, versus, method=method, score=score, **options)
        diff = _reduce(c, True)[0]
    rgb = display.to_rgb(image.detach().cpu().numpy()) if same_image is None else same_image.rgb
    return View(probs, classes, maps, rgb, diff, sign_local, signed)


def panel_content(
    view: View,
    *,
    true: int | None,
    class_names: Sequence[str],
    method: str,
    caption: str,
    score: str = "logit",
) -> tuple[dict[str, np.ndarray], core.PanelData]:
    """The panel's arrays and `PanelData` for `view` (the dashboard's `panel_content` twin)."""
    probs, classes = view.probs, view.classes
    pred = int(probs.argmax())
    runner_up = int(np.argsort(-probs)[1]) if len(probs) > 1 else pred
    h, w = view.maps.shape[1:]
    names = {str(k): str(class_names[k]) if k < len(class_names) else str(k) for k in classes}
    everything = len(classes) == len(probs)
    info = method_info(method)
    symbol = {"logit": "logit", "probability": "p", "log_probability": "log p"}[score]
    arrays = {"maps": view.maps, "rgb": view.rgb, **core.luts()}
    if view.contrast is not None:
        arrays["contrast"] = view.contrast
    big = max(1, 280 // max(h, w))
    data = core.PanelData(
        classes=classes,
        target=pred,
        pred=pred,
        true=true,
        runner_up=runner_up,
        grid=classes,
        bars=[[k, float(probs[k])] for k in classes],
        labels=names,
        absolute_of_signed=False,
        signed=view.signed,
        alpha=0.5,
        clip=99.0,
        shared=False,
        cmap="inferno",
        cmap_signed="RdBu_r",
        sign="signed" if view.sign_local else "absolute",
        scale_view="map",
        controls=CONTROLS,
        sign_local=view.sign_local,
        scale_local=True,
        symbol=symbol,
        map_of="" if method == "gradient" else info.label,
        scale=big,
        grid_px=w * max(1, 140 // max(h, w)) if max(h, w) <= 160 else 160,
        image_caption=caption,
        grid_title="Every class" if everything else f"The top {TOP_CLASSES} classes",
        grid_note=f"{info.label}, one map per class. Orange frame: predicted class; green: true.",
        bars_note=""
        if everything
        else f"The {TOP_CLASSES} most probable of {len(probs):,} classes.",
        contrast_from_maps=view.sign_local,
        contrast_target=pred,
        contrast_versus=runner_up,
        export={
            "before": "map_class",
            "after": f"_{method}",
            "note": "The files are made in the browser from what it shows.",
            "json": {"settings": {"method": method, "score": score}, "target": pred},
        },
        own_controls=True,
    )
    return arrays, data


def _anywidget():
    if importlib.util.find_spec("anywidget") is None:
        raise ModuleNotFoundError(INSTALL, name="anywidget")
    import anywidget

    return anywidget


def widget(
    model: nn.Module,
    images: torch.Tensor | np.ndarray,
    labels: Sequence[int] | torch.Tensor | None = None,
    class_names: Sequence[str] | None = None,
    methods: Sequence[str] = DEFAULT_METHODS,
    *,
    score: str = "logit",
    layer: str | None = None,
    model_name: str | None = None,
    model_card: str | None = None,
    model_sha256: str | None = None,
) -> Any:
    """The Explore panel for `images` (N, C, H, W) in [0, 1], as `model` takes them, with
    image navigation and a method picker (`methods`, names of `saliency.METHOD_INFO`; the first
    is shown first). Maps are computed on the model's device (CUDA when the model is there).
    `labels`: the true classes (or None). Raises ModuleNotFoundError saying what to install
    when anywidget is missing.

    The report (`w.report()`, `w.save_report(path)` and the panel's "Download report") names
    the model `model_name` (else its class), with `model_card` (plain text) and
    `model_sha256` (else the SHA-256 of its state dict, `state_sha256`)."""
    cls = _widget_class()
    about = {"name": model_name, "card": model_card, "sha256": model_sha256}
    return cls(model, images, labels, class_names, methods, score=score, layer=layer, about=about)


_CLASS = None


def _widget_class():
    global _CLASS
    if _CLASS is None:
        _CLASS = _make_class(_anywidget())
    return _CLASS


class _WidgetBody:
    """`SaliencyWidget`'s behaviour (its class, made with anywidget when that is installed,
    adds the synced traits): see `widget`. `index` and `method` are the kernel's state (the
    browser sets them); `kernel_messages` counts the browser's messages, which a class click
    never sends."""

    def __init__(self, model, images, labels, class_names, methods, *, score, layer, about):
        images = torch.as_tensor(images)
        if images.ndim != 4 or images.shape[0] == 0:
            raise ValueError(f"images must be (N, C, H, W) with N >= 1, got {tuple(images.shape)}")
        unknown = [m for m in methods if m not in METHOD_INFO]
        if unknown or not methods:
            raise ValueError(f"unknown methods {unknown}; known: {', '.join(METHOD_INFO)}")
        self.model, self.images, self.score, self.layer = model, images, score, layer
        self.about = about
        self.labels = None if labels is None else [int(v) for v in labels]
        self.class_names = list(class_names or [])
        self.kernel_messages = 0
        self.computed = 0  # views computed (the payload's seq: a view seen again redraws)
        self.view: View | None = None
        self.view_index = -1  # the image `view` shows
        super().__init__(
            methods=[[m, METHOD_INFO[m].label] for m in methods],
            method=methods[0],
            n_images=int(images.shape[0]),
        )
        self.observe(self._recompute, names=["index", "method"])
        self.on_msg(self._on_browser_msg)
        self._recompute()

    def model_name(self) -> str:
        return self.about["name"] or type(self.model).__name__

    def _handle_msg(self, msg):  # every message the browser sends the kernel
        self.kernel_messages += 1
        return super()._handle_msg(msg)

    def _recompute(self, change=None):
        i = min(max(self.index, 0), self.n_images - 1)
        true = None if self.labels is None else self.labels[i]
        method_only = change is not None and change["name"] == "method"
        same = self.view if method_only and self.view_index == i else None
        try:
            view = compute(
                self.model,
                self.images[i],
                self.method,
                true=true,
                score=self.score,
                layer=self.layer,
                same_image=same,
            )
        except (ValueError, TypeError, RuntimeError) as err:
            self.error = f"{METHOD_INFO[self.method].label}: {err}"
            return
        self.view, self.view_index = view, i
        names = self.class_names or [str(k) for k in range(len(view.probs))]
        c, h, w = self.images.shape[1:]
        caption = f"Image {i} ({h} × {w}{', RGB' if c == 3 else ''})"
        arrays, data = panel_content(
            view,
            true=true,
            class_names=names,
            method=self.method,
            caption=caption,
            score=self.score,
        )
        self.computed += 1
        self.arrays, self.data = arrays, dataclasses.replace(data, seq=self.computed)
        self.error = ""
        self._payload = core.pack_all(arrays, self.data)

    def report(self, target: int | None = None, **settings: Any) -> str:
        """The view as one self-contained HTML file (`saliency.report`): the image, the
        map of `target` (default: the predicted class), its overlay and colour bar, the
        probabilities, the contrast and every class's map, drawn with `settings` (the
        panel's: cmap, cmap_signed, alpha, clip, sign, scale; the defaults otherwise),
        every setting, the model's name, card and sha256, and the library versions."""
        return view_report(self, target, settings)

    def save_report(self, path, target: int | None = None, **settings: Any) -> Path:
        """`report(...)` written to `path` (UTF-8); returns the path."""
        path = Path(path)
        path.write_text(self.report(target, **settings), encoding="utf-8")
        return path

    def _on_browser_msg(self, _widget, content, _buffers) -> None:
        """The panel's "Download report": it sends the class and settings it shows, and
        gets the HTML back as one buffer (or the reason it can't)."""
        if not isinstance(content, dict) or content.get("kind") != "report":
            return
        try:
            given = content.get("settings") or {}
            target = int(content["target"])
            html = self.report(target, **{k: given.get(k) for k in report_keys()})
        except (KeyError, TypeError, ValueError) as err:
            self.send({"kind": "report", "error": str(err)})
            return
        self.send({"kind": "report", "name": report_name(self, target)}, [html.encode()])


def _make_class(anywidget):
    import traitlets

    class SaliencyWidget(_WidgetBody, anywidget.AnyWidget):
        """See `widget`. `index` and `method` are the kernel's state (the browser sets them);
        `kernel_messages` counts the browser's messages, which a class click never sends."""

        _esm = core.source("widget")
        _css = core.css()
        _payload = traitlets.Bytes(b"").tag(sync=True)
        index = traitlets.Int(0).tag(sync=True)
        method = traitlets.Unicode("").tag(sync=True)
        methods = traitlets.List([]).tag(sync=True)  # [[name, label], ...]
        n_images = traitlets.Int(0).tag(sync=True)
        error = traitlets.Unicode("").tag(sync=True)

    SaliencyWidget.__qualname__ = "SaliencyWidget"  # its repr: saliency.notebook.SaliencyWidget
    return SaliencyWidget


def report_keys() -> tuple[str, ...]:
    from saliency._view_report import VIEW_KEYS

    return VIEW_KEYS


def report_name(w, target: int) -> str:
    stem = "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in w.model_name())[:80]
    return f"report_{stem}_image{w.index}_class{target}_{w.method}.html"


def view_report(w, target: int | None, settings: dict[str, Any]) -> str:
    """`SaliencyWidget.report`: the view the widget holds (`w.view`, `w.data`)."""
    from saliency import _view_report as vr
    from saliency.report import report_html

    if w.view is None:
        raise ValueError("nothing to report: the first view failed")
    data, view = w.data, w.view
    target = data.pred if target is None else int(target)
    s = vr.settings_of(data, settings)
    i = min(max(w.index, 0), w.n_images - 1)
    label = data.labels.get(str(data.pred), str(data.pred))
    heading = f"Image {i}: {w.model_name()} says {label} ({view.probs[data.pred]:.1%})"
    parts, drawn = vr.sections(view.maps, view.rgb, view.contrast, data, s, target, heading)
    recorded = {
        "settings": {"method": w.method, "score": w.score, "layer": w.layer, **s},
        "target": target,
        "display_range": [drawn.lo, drawn.hi],
        "image": i,
        "true": data.true,
        "probabilities": [[int(k), float(p)] for k, p in data.bars],
        "device": str(device_of(w.model)),
    }
    if w.about["sha256"] is None:
        w.about["sha256"] = vr.state_sha256(w.model)
    return report_html(
        parts,
        title=f"{w.model_name()}: {METHOD_INFO[w.method].label} of image {i}",
        settings=recorded,
        model_name=w.model_name(),
        model_card=w.about["card"] or model_card(w),
        model_sha256=w.about["sha256"],
    )


def model_card(w) -> str:
    """What the kernel knows of a model with no card: its class, size, device and classes."""
    n = sum(p.numel() for p in w.model.parameters())
    k = len(w.view.probs)
    names = w.class_names[:20]
    shown = ", ".join(str(c)[:60] for c in names) + (", …" if k > len(names) else "")
    return (
        f"{type(w.model).__module__}.{type(w.model).__qualname__}: {n:,} parameters on "
        f"{device_of(w.model)}; {k:,} classes" + (f" ({shown})" if names else "")
    )
