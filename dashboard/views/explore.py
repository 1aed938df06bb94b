"""Explore: one image, one model, every class and method. Why did the model say 9?"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

import saliency
from dashboard import (
    PAGE_DRAWN,
    PAGE_WAITS,
    budget,
    cache,
    lru,
    render,
    reports,
    sources,
    state,
    upload_limits,
)
from dashboard.components import saliency_panel
from dashboard.rate_limits import EXPENSIVE
from dashboard.render import Style, class_label, class_md
from dashboard.sources import Source
from pretrained.images import (
    ImageError,
    canvas_to_mnist,
    decode_image,
    decode_image28,
    encode_image,
    mnist_style,
)
from saliency import display, report
from saliency.display import DIVERGING_CMAPS, SEQUENTIAL_CMAPS
from saliency.metrics import spearman

_PIXEL_LABELS = {
    "gradient": "Vanilla gradient",
    "smoothgrad": "SmoothGrad (mean |g|, 50 noisy copies, σ = 0.15)",
    "smoothgrad_sq": "SmoothGrad² (mean g², 50 copies, σ = 0.15)",
    "vargrad": "VarGrad (variance of g, 50 copies, σ = 0.15)",
    "input_x_gradient": "Gradient × Input",
    "integrated_gradients": "Integrated Gradients (black baseline, 50 steps)",
}
# Every method of the library's registry, grouped by family in the picker: the pixel
# gradients first, then layer maps (CAM), perturbation, relevance and transformer maps.
METHOD_LABELS = {
    name: _PIXEL_LABELS.get(name) or f"{info.label} · {info.family}"
    for family in saliency.FAMILIES
    for name, info in saliency.METHOD_INFO.items()
    if info.family == family
}
UNSIGNED = ("smoothgrad_sq", "vargrad", "grad_cam", "grad_cam_pp", "score_cam", "layer_cam")
LAYER_LABEL = "Layer (layer maps)"
SCORE_SYMBOL = {"logit": "logit", "probability": "p", "log_probability": "log p"}
SAME_MAP_RHO = 0.9
PREDICTED_COLOUR = (255, 140, 0)
TRUE_COLOUR = (40, 170, 60)
ALL_CLASSES_UP_TO = 20  # more classes than this: the grid and the chart show the top ones
TOP_CLASSES = 10
NEXT_LABEL, PREVIOUS_LABEL = "Next ▶", "◀ Previous"  # the panel finds the buttons by these


# --- choosing the image ---------------------------------------------------------------------


def _candidates(view: dict, src: Source) -> np.ndarray:
    """Indices of the images matching the true-class and correct/wrong filters."""
    keep = np.ones(len(src), dtype=bool)
    if view["true_class"] != "any":
        keep &= src.labels == int(view["true_class"])
    if view["correctness"] != "all":
        pred = cache.predictions(view["model"], src.key).predicted
        right = pred == src.labels
        keep &= right if view["correctness"] == "correct" else ~right
    return np.flatnonzero(keep)


def _neighbour(candidates: np.ndarray, i: int, direction: int) -> int | None:
    """The candidate after image `i` (direction 1) or before it (-1), wrapping around."""
    if len(candidates) == 0:
        return None
    if direction > 0:
        after = candidates[candidates > i]
        return int(after[0] if len(after) else candidates[0])
    before = candidates[candidates < i]
    return int(before[-1] if len(before) else candidates[-1])


def _step(candidates: np.ndarray, direction: int) -> None:
    if len(candidates) == 0:
        return
    if direction == 0:
        state.put("index", int(np.random.default_rng().choice(candidates)))
    else:
        state.put("index", _neighbour(candidates, state.get("index"), direction))


def _described(src: Source, index: int) -> str:
    return f"test image #{index}" if src.paths is None else f"#{index} {src.paths[index]}"


def _open_path(src: Source) -> None:
    """The path typed into "Open by path": that image, or a message saying it isn't here."""
    text = st.session_state.get("open_path", "").strip()
    if not text:
        return
    i = src.find(text)
    if i is None:
        st.session_state["open_path_error"] = f"No image {text!r} in this workspace."
        return
    st.session_state["open_path_error"] = None
    state.put("index", i)
    state.put("true_class", "any")
    state.put("correctness", "all")


def _test_image(view: dict, src: Source) -> tuple[np.ndarray | None, int | None, str]:
    names = src.classes
    if view["true_class"] != "any" and int(view["true_class"]) >= len(names):
        state.put("true_class", "any")  # a class number from another data set's link
    if int(state.get("index")) >= len(src):  # a link or another data set's index
        st.info(f"There is no image #{state.get('index')} in {len(src):,} images: #0 is shown.")
        state.put("index", 0)
    c1, c2 = st.columns(2)
    c1.selectbox(
        "True class",
        ("any",) + tuple(str(k) for k in range(len(names))),
        key="true_class",
        format_func=lambda v: "any class" if v == "any" else class_label(int(v), names),
        help="Type to search the class names.",
    )
    c2.radio(
        f"{render.plain(cache.display_name(view['model']))} got it",
        state.CORRECTNESS,
        key="correctness",
        horizontal=True,
        format_func={"all": "either", "correct": "right", "wrong": "wrong"}.get,
    )
    candidates = _candidates(view, src)
    c1, c2, c3, c4 = st.columns([2, 1, 1, 1], vertical_alignment="bottom")
    c1.number_input("Image index", 0, len(src) - 1, step=1, key="index")
    c2.button(PREVIOUS_LABEL, key="previous", on_click=_step, args=(candidates, -1))
    c3.button(NEXT_LABEL, key="next", on_click=_step, args=(candidates, 1))
    c4.button("🎲 Random", key="random", on_click=_step, args=(candidates, 0))
    if src.paths is not None:
        if st.session_state.get("open_path_source") != src.key:  # another data set's path
            st.session_state["open_path_source"] = src.key
            st.session_state.pop("open_path", None)
            st.session_state.pop("open_path_error", None)
        st.text_input(
            "Open by path",
            key="open_path",
            on_change=_open_path,
            args=(src,),
            placeholder=src.paths[0],
            help="The image's path under the data folder, as in predictions.csv.",
        )
        if st.session_state.get("open_path_error"):
            st.error(render.plain(st.session_state["open_path_error"]))
    index = int(st.session_state["index"])
    kind = "test images" if src.paths is None else "images"
    note = f"{len(candidates):,} of {len(src):,} {kind} match the filters."
    if len(candidates) and not np.isin(index, candidates):
        note += f" Image #{index} does not: use Next or Random."
    st.caption(note)
    try:
        image = src.image(index)
    except ImageError as err:
        st.error(
            f"{render.plain(src.name(index))} can't be read now: {render.plain(err)}. Pick "
            "another image; the rest of the workspace is fine."
        )
        return None, None, ""
    return image, int(src.labels[index]), _described(src, index)


def _remember_image(image: np.ndarray) -> None:
    state.put("image", encode_image(image))


def _workspace_upload(src: Source) -> np.ndarray | None:
    """An image of the user's, prepared as the workspace's images are (kept in this session,
    not in the link: a 224 × 224 RGB image is too big for a URL)."""
    kept = st.session_state.setdefault("ws_uploads", {})
    if not cache.uploads_allowed():
        st.info("Uploading images is turned off on this server: pick one from the data set.")
        return None
    file = st.file_uploader(
        "An image (PNG, JPEG, GIF, BMP, WebP; up to 20 MB), prepared like the workspace's: "
        + src.description,
        key="ws_upload_file",
        max_upload_size=upload_limits.IMAGE_MB,
    )
    if too_big := upload_limits.too_big(file, "image", upload_limits.IMAGE_MB):
        st.session_state["ws_upload_error"], file = too_big, None  # never read
    if file is not None:
        digest = hashlib.sha256(file.getvalue()).hexdigest()
        if st.session_state.get("ws_upload_seen") != (src.key, digest):
            st.session_state["ws_upload_seen"] = (src.key, digest)
            st.session_state["ws_upload_error"] = None
            try:
                x = src.prepare(decode_image(file.getvalue()))
                if tuple(x.shape) != src.shape:
                    raise ImageError(
                        f"it becomes {x.shape[1]} × {x.shape[2]}, but the model takes "
                        f"{src.shape[1]} × {src.shape[2]} (this workspace keeps images at their "
                        "own size)"
                    )
            except ImageError as err:
                st.session_state["ws_upload_error"] = f"{file.name}: {err}"
            else:
                kept[src.key] = x
    if st.session_state.get("ws_upload_error"):
        st.error(
            render.plain(st.session_state["ws_upload_error"])
            + " The image shown below is the one you had before."
        )
    return kept.get(src.key)


def _uploaded_image() -> None:
    if not cache.uploads_allowed():
        st.info("Uploading images is turned off on this server: draw one instead.")
        return
    file = st.file_uploader(
        "An image of one digit or garment (PNG, JPEG, GIF, BMP, WebP; up to 20 MB)",
        key="upload_file",
        max_upload_size=upload_limits.IMAGE_MB,
    )
    if too_big := upload_limits.too_big(file, "image", upload_limits.IMAGE_MB):
        st.error(render.plain(too_big))  # never read
        return
    if file is None:
        return
    digest = hashlib.sha256(file.getvalue()).hexdigest()
    if st.session_state.get("upload_seen") != digest:
        st.session_state["upload_seen"] = digest
        st.session_state["upload_error"] = None
        try:
            picture = decode_image(file.getvalue())
            image = mnist_style(picture)
        except ImageError as err:
            st.session_state["upload_error"] = f"{file.name}: {err}"
        else:
            preview = picture.convert("RGB")
            preview.thumbnail((280, 280))  # keep only a small copy per session
            st.session_state["upload_preview"] = np.asarray(preview)
            st.session_state["upload_note"] = picture.info.get("saliency_note")
            _remember_image(image)
    if st.session_state.get("upload_error"):
        st.error(
            render.plain(st.session_state["upload_error"])
            + " The image shown below is the one you had before."
        )
    elif st.session_state.get("upload_note"):
        st.info(st.session_state["upload_note"])
    if st.session_state.get("upload_preview") is not None and state.get("image"):
        c1, c2, _ = st.columns([2, 2, 3])
        with c1:
            render.show(st.session_state["upload_preview"], "Your image, as uploaded")
        with c2:
            seen = decode_image28(state.get("image"))
            render.show(
                render.grey(seen, 5),
                "What the model sees: greyscale, light background inverted, cropped to the ink, "
                "fitted into 20 × 20 and centred by mass in 28 × 28, like MNIST",
            )


def _drawn_image() -> None:
    from dashboard import canvas  # the browser's PNG is checked before it is decoded

    drawing = canvas.draw(
        width=280,
        height=280,
        key="canvas",
        stroke_width=22,
        stroke_color="#FFFFFF",
        background_color="#000000",
        drawing_mode="freedraw",
    )
    st.caption("Draw one digit, large, in the middle. It is converted like MNIST digits were.")
    if drawing.error:
        st.error(render.plain(drawing.error) + " The image you had before is kept.")
        return
    data = drawing.pixels
    if data is None:
        return
    digest = hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()
    if st.session_state.get("canvas_seen") == digest:
        return
    st.session_state["canvas_seen"] = digest
    try:
        _remember_image(canvas_to_mnist(np.asarray(data)))
    except ImageError as err:
        st.info(str(err))


def choose_image(view: dict, src: Source) -> tuple[np.ndarray | None, int | None, str]:
    """The image to explain `(C, H, W)`, its true class if known, and a short description."""
    bundled = src.paths is None
    if not bundled and view["source"] == "draw":  # drawing makes 28 x 28 digits only
        state.put("source", "test")
    st.radio(
        "Image",
        state.SOURCES if bundled else state.SOURCES[:2],
        key="source",
        horizontal=True,
        format_func={"test": "Test set" if bundled else "Data set", "upload": "Upload",
                     "draw": "Draw"}.get,
    )  # fmt: skip
    if view["source"] == "test":
        return _test_image(view, src)
    if not bundled:
        image = _workspace_upload(src)
        if image is None:
            st.info("No image yet: upload one above.")
            return None, None, ""
        return image, None, "your upload"
    if view["source"] == "upload":
        _uploaded_image()
    else:
        _drawn_image()
    if not state.get("image"):
        st.info("No image yet: upload one or draw a digit above.")
        return None, None, ""
    try:
        image = decode_image28(state.get("image"))
    except ImageError as err:  # a hand-edited link
        st.error(f"The image in the link is damaged: {err}")
        return None, None, ""
    return image[None], None, "your drawing" if view["source"] == "draw" else "your upload"


# --- sections -------------------------------------------------------------------------------


def _prediction_table(probs: np.ndarray, names: tuple[str, ...], pred: int, true: int | None):
    """The class probabilities as a Markdown table: the fallback's (the panel draws them as bars
    to hover over and click). Not a chart: drawing one costs a fresh browser over a second, and
    the fallback shows while the panel loads."""
    rows = ["| class | probability |", "| :-- | --: |"]
    for k in _bar_classes(probs, true):
        marks = (" · predicted" if k == pred else "") + (" · true" if k == true else "")
        label = render.plain(class_label(k, names)).replace("|", "\\|")
        rows.append(f"| {label}{marks} | {probs[k]:.4f} |")
    st.markdown("\n".join(rows))


def _framed(rgb: np.ndarray, colour: tuple[int, int, int] | None, width: int = 4) -> np.ndarray:
    """A picture inside a coloured frame (white when `colour` is None)."""
    h, w = rgb.shape[:2]
    out = np.empty((h + 2 * width, w + 2 * width, 3), dtype=np.uint8)
    out[:] = colour or (255, 255, 255)
    out[width:-width, width:-width] = rgb
    return out


MAIN_FRAGMENT = "explore_main"  # st.fragment key of `explanation`
TARGET_LABELS = {"predicted": "the predicted class", "true": "the true class"}
# The map controls' labels (and option orders), by which the panel also finds them in the page.
CONTROLS = {
    "method": "Method",
    "score": "Class score",
    "target": "Target class",
    **TARGET_LABELS,
    "sign": "Values",
    "signs": state.SIGNS,
    "scale": "Colour scale",
    "scales": state.SCALES,
    "clip": "Clip at percentile",
    "alpha": "Overlay alpha",
    "cmap": "Colour map",
    "cmap_signed": "Signed colour map",
}


def _rerun_explanation() -> None:
    """A map control changed: rerun the explanation fragment only, not the whole page."""
    st.rerun(MAIN_FRAGMENT)


def sidebar_controls() -> DeltaGenerator:
    """The map's controls, drawn by the full run; a change reruns only the explanation fragment
    (`st.rerun(key)` from the callback: the sidebar's widgets are not drawn again, about a third
    of a rerun's cost). Returns the place of the "Target class" box, which that fragment draws:
    a class clicked in the panel must show there in the same rerun.

    AppTest keeps only what a run drew: after one of these controls changes, its element tree
    holds the fragment's elements until the next `run()` (tests/test_dashboard.py)."""
    rerun = _rerun_explanation
    with st.sidebar:
        st.markdown("### Map")
        slot = st.container()
        st.selectbox(
            CONTROLS["method"], saliency_methods(), key="method", format_func=METHOD_LABELS.get,
            on_change=rerun,
        )  # fmt: skip
        st.radio(
            CONTROLS["score"],
            state.SCORES,
            key="score",
            horizontal=True,
            format_func={
                "logit": "logit",
                "probability": "probability",
                "log_probability": "log p",
            }.get,
            on_change=rerun,
        )
        st.radio(CONTROLS["sign"], state.SIGNS, key="sign", horizontal=True, on_change=rerun)
        st.markdown("### Colours")
        st.radio(
            CONTROLS["scale"],
            state.SCALES,
            key="scale",
            horizontal=True,
            format_func={"map": "per map", "shared": "shared"}.get,
            on_change=rerun,
        )
        st.slider(CONTROLS["clip"], 50.0, 100.0, step=0.5, key="clip", on_change=rerun)
        st.slider(CONTROLS["alpha"], 0.0, 1.0, step=0.05, key="alpha", on_change=rerun)
        c1, c2 = st.columns(2)
        c1.selectbox(CONTROLS["cmap"], SEQUENTIAL_CMAPS, key="cmap", on_change=rerun)
        c2.selectbox(CONTROLS["cmap_signed"], DIVERGING_CMAPS, key="cmap_signed", on_change=rerun)
    return slot


def _target_control(names: tuple[str, ...]) -> None:
    if state.get("target") not in state.TARGETS and int(state.get("target")) >= len(names):
        state.put("target", "predicted")  # a class number this model doesn't have
    st.selectbox(
        CONTROLS["target"],
        state.TARGETS + tuple(str(k) for k in range(len(names))),
        key="target",
        help="Type to search the class names, or click a class's map in the panel.",
        format_func=lambda t: TARGET_LABELS.get(t) or class_label(int(t), names),
    )  # drawn by the explanation fragment: a change reruns that alone


def saliency_methods() -> tuple[str, ...]:
    return tuple(METHOD_LABELS)


def _maps_shown(probs: np.ndarray, target: int, versus: int, true: int | None):
    """The classes whose maps are computed: all K up to ALL_CLASSES_UP_TO, else the
    TOP_CLASSES most probable and the target, the contrast's other class and the true class
    (never the K-class Jacobian of a 1000-class model)."""
    k = len(probs)
    if k <= ALL_CLASSES_UP_TO:
        return None, list(range(k))
    top = [int(c) for c in np.argsort(-probs)[:TOP_CLASSES]]
    extra = [c for c in (target, versus, true) if c is not None and c not in top]
    chosen = top + list(dict.fromkeys(extra))
    return tuple(sorted(chosen)), chosen


PANEL_KEY = "explore_panel"


def render_view() -> None:
    view = state.current()
    for problem in st.session_state.get("url_problems", []):
        st.warning(f"Link: {problem}")
    src = sources.source(view["dataset"])
    target_slot = sidebar_controls()
    st.title("Explore")
    for note in src.notes:
        st.caption(note)
    with st.container(border=True):
        image, true, described = choose_image(view, src)
    if image is not None:  # what the model says: the same whatever the map
        info = cache.model_info(view["model"])
        probs = cache.probabilities(view["model"], image)
        pred = int(probs.argmax())
        names = info.class_names
        verdict = "" if true is None else "✓ right" if true == pred else "✗ wrong"
        st.subheader(
            f"{render.plain(cache.display_name(view['model']))} says "
            f"**{class_md(pred, names)}** ({probs[pred]:.1%})"
            + (f" · true class {class_md(true, names)} {verdict}" if true is not None else "")
        )
    others = [m for m in state.models(view["dataset"]) if m != view["model"]]
    explanation(image, true, described, target_slot, others, src)


# The view's keys that change in the explanation fragment (it copies them into the view).
FRAGMENT_KEYS = ("target", "layer", "method", "score", "sign", "scale", "clip", "alpha", "cmap",
                 "cmap_signed", "compare")  # fmt: skip


@st.fragment(key=MAIN_FRAGMENT)
def explanation(
    image: np.ndarray | None,
    true: int | None,
    described: str,
    target_slot: DeltaGenerator,
    others: list[str],
    src: Source,
) -> None:
    """Everything below the prediction, as one fragment: a new target, method or colour reruns
    this alone, not the router, the sidebar and the image chooser. The panel shows what needs
    no new gradients before the server has even heard of it. `others`: the models that can be
    compared with this one; `src`: the view's data set."""
    view = st.session_state["view"]
    for key in FRAGMENT_KEYS:  # on a fragment rerun, the widgets' new values
        if key in st.session_state:
            view[key] = st.session_state[key]
    with render.failures_said():
        info = cache.model_info(view["model"])
        names = info.class_names  # the data set's, or an uploaded model's own
        with target_slot:
            _target_control(names)
            problem = "" if image is None else _layer_control(view, image)
        if problem:
            label = saliency.method_info(view["method"]).label
            st.warning(
                f"**{label} can't explain {render.plain(cache.display_name(view['model']))}:** "
                f"{render.plain(problem)}. Choose another method in the sidebar; nothing else "
                "you chose has changed."
            )
        elif image is not None:
            try:
                _explain(view, info, names, image, true, described, others, src)
            except (ValueError, TypeError) as err:
                if view["method"] in saliency.METHODS:
                    raise  # the pixel gradients explain every differentiable model
                # The library refusing this model for this method (LRP: no rule for a layer;
                # guided backprop: no nn.ReLU), found only when the map is asked for.
                label = saliency.method_info(view["method"]).label
                st.warning(
                    f"**{label} can't explain "
                    f"{render.plain(cache.display_name(view['model']))}:** "
                    f"{render.plain(err)}. Choose another method in the sidebar; nothing else "
                    "you chose has changed."
                )
    state.sync()  # the link follows


def _is_pixel(method: str) -> bool:
    """A map that is a derivative of the score with respect to the pixels (or made of one)."""
    return saliency.method_info(method).family == "pixel gradients"


def _layer_control(view: dict, image: np.ndarray) -> str:
    """For a layer map (Grad-CAM and its kin): the layer picker, the automatic layer named in
    its first option; returns why the method can't explain this model ("" when it can)."""
    method = view["method"]
    if not saliency.method_info(method).layer:
        return ""
    auto = cache.method_facts(view["model"], image.shape, method)
    if auto["problem"]:
        return auto["problem"]
    options = ("", *auto["layers"])
    if state.get("layer") not in options:
        state.put("layer", "")  # another model's layer
    st.selectbox(
        LAYER_LABEL,
        options,
        key="layer",
        format_func=lambda n: n or f"automatic: {auto['layer']}",
        help="The module whose activations and gradients the map is made of. Automatic: the "
        "last one that runs once and keeps a spatial grid (N, C, h, w), or a transformer's "
        "patch tokens before its last attention; earlier layers are finer and less "
        "class-specific.",
    )
    return ""


def _on_pick() -> None:
    """A class clicked in the panel (already on screen there): it becomes the target."""
    pick = saliency_panel.trigger(PANEL_KEY, "pick")
    if not isinstance(pick, dict):
        return
    k, seq = pick.get("k"), pick.get("seq")
    if type(k) is int and 0 <= k < state.MAX_CLASSES:
        state.put("target", str(k))
    if type(seq) is int:
        st.session_state[f"{PANEL_KEY}_seq"] = seq


def _class_maps(model_name, image, method, score, signed, asked, layer=""):
    """`(maps, sent, of_signed)`: the maps shown, and what the panel gets. A vanilla gradient of
    a one-channel image is one Jacobian whichever the sign: its absolute map is |signed map|
    (bit for bit what `absolute=True` computes), so the panel gets the signed maps once and a
    switch between the two needs neither new gradients nor new maps."""
    if method == "gradient" and image.shape[0] == 1:
        raw = cache.class_maps(model_name, image, method, score, False, asked)
        return (raw if signed else np.abs(raw)), raw, not signed
    computed = cache.class_maps(model_name, image, method, score, not signed, asked, layer)
    return computed, computed, False


def _grid_text(everything: bool, method: str, style: Style) -> tuple[str, str]:
    title = "Every class" if everything else f"The top {TOP_CLASSES} classes"
    note = (
        ("One map per class" if everything else
         f"One map for each of the {TOP_CLASSES} most probable classes "
         "(and the true class), most probable first")
        + (
            " from one Jacobian call (one forward pass, one backward pass per class)"
            if method == "gradient"
            else f", {METHOD_LABELS[method]}, all classes in one batch"
        )
        + ". Orange frame: predicted class; green frame: true class."
        + (" Shared colour scale." if style.shared else " Each map on its own scale.")
    )  # fmt: skip
    return title, note


def _bar_classes(probs: np.ndarray, true: int | None) -> list[int]:
    """The classes of the probability chart: all K up to ALL_CLASSES_UP_TO, else the
    TOP_CLASSES most probable, and the true class however unlikely."""
    k_all = len(probs)
    shown = range(k_all) if k_all <= ALL_CLASSES_UP_TO else np.argsort(-probs)[:TOP_CLASSES]
    shown = [int(k) for k in shown]
    if true is not None and true not in shown:
        shown.append(true)
    return shown


def _thumbnail_width(h: int, w: int, px: int) -> int:
    """The width of `render.thumbnail` of an h × w picture, without making it."""
    return w if max(h, w) <= px else max(1, round(w * px / max(h, w)))


@dataclass(frozen=True)
class Explained:
    """What the view shows for one image, model and settings: computed, nothing drawn."""

    probs: np.ndarray
    pred: int
    true: int | None
    target: int
    versus: int  # the contrast's other class
    runner_up: int
    style: Style
    classes: list[int]  # the classes of `maps` (and of the rows of `sent`)
    grid_classes: list[int]
    maps: dict[int, np.ndarray]  # as shown: absolute or signed
    sent: np.ndarray  # what the panel gets (see `_class_maps`)
    of_signed: bool
    compare: dict[str, np.ndarray]  # other models' maps, on the same settings
    compare_targets: dict[str, int]
    lo: float
    hi: float
    diff: np.ndarray  # the contrast map, target minus versus
    from_maps: bool  # the contrast is a difference of two rows of `sent`

    @property
    def main(self) -> np.ndarray:
        return self.maps[self.target]


EXPLAINED_BYTES = budget.share("explained")  # the latest `explained` answers, by their bytes
# The view's keys that `explained` reads.
EXPLAINED_KEYS = ("model", "target", "method", "layer", "score", "sign", "cmap", "cmap_signed",
                  "alpha", "clip", "scale")  # fmt: skip
_explained = lru.store("explained")


def _arrays_of(ex: Explained) -> list[np.ndarray]:
    return [ex.probs, ex.sent, ex.diff, *ex.maps.values(), *ex.compare.values()]


def explained(view: dict, image: np.ndarray, true: int | None) -> Explained:
    """Every number the view shows for `image` under `view`'s model and settings: the latest
    answers are kept (up to EXPLAINED_BYTES, their arrays read-only), so a view seen again (a
    method or model switched back, another student on the same image, the explore route and
    the page's rerun) costs a lookup instead of the caches' hashing and copying. Keyed as those
    caches are: by model name, the image's bytes and the settings."""
    key = (
        *(view[k] for k in EXPLAINED_KEYS),
        tuple(view["compare"]),
        true,
        *cache.key_part(image),
    )
    ex = _explained.get(key)
    if ex is None:
        ex = _explained_now(view, image, true)
        arrays = _arrays_of(ex)
        for array in arrays:
            array.flags.writeable = False
        _explained.put(key, ex, sum(a.nbytes for a in arrays))
    return ex


def _explained_now(view: dict, image: np.ndarray, true: int | None) -> Explained:
    model_name = view["model"]
    probs = cache.probabilities(model_name, image)
    pred = int(probs.argmax())
    runner_up = int(np.argsort(-probs)[1])
    if view["target"] == "predicted":
        target = pred
    elif view["target"] == "true":
        target = pred if true is None else true
    else:
        target = int(view["target"])
    versus = pred if target != pred else runner_up

    method, score = view["method"], view["score"]
    signed = view["sign"] == "signed" and method not in UNSIGNED
    style = Style(
        signed=signed,
        cmap=view["cmap_signed"] if signed else view["cmap"],
        alpha=float(view["alpha"]),
        clip=float(view["clip"]),
        shared=view["scale"] == "shared",
    )
    asked, grid_classes = _maps_shown(probs, target, versus, true)
    layer = view["layer"] if saliency.method_info(method).layer else ""
    computed, sent, of_signed = _class_maps(model_name, image, method, score, signed, asked,
                                            layer)  # fmt: skip
    classes = list(range(len(probs))) if asked is None else list(asked)
    maps = dict(zip(classes, computed, strict=True))
    compare, compare_targets = {}, {}
    for m in view["compare"]:
        if cache.method_facts(m, image.shape, method)["problem"]:
            continue  # said beside the comparison (`_compare_models`)
        p = cache.probabilities(m, image)
        t = int(p.argmax()) if view["target"] == "predicted" else target
        try:
            compare[m] = cache.class_maps(m, image, method, score, not signed, (t,))[0]
        except (ValueError, TypeError):
            if method in saliency.METHODS:
                raise
            continue  # refused when it ran (LRP without a rule for a layer): said there too
        compare_targets[m] = t
    on_screen = [maps[target], *(maps[k] for k in grid_classes), *compare.values()]
    lo, hi = style.range(on_screen if style.shared else [maps[target]])
    # The contrast of two classes: for a vanilla gradient of a one-channel image, the difference
    # of their Jacobian rows (what the panel computes too: any target, no new gradients).
    from_maps = method == "gradient" and image.shape[0] == 1
    if from_maps or not saliency.method_info(method).has_class:  # (a class-less map: zero)
        diff = sent[classes.index(target)] - sent[classes.index(versus)]
    else:
        diff = cache.contrast_map(model_name, image, target, versus, method, score, layer)
    return Explained(
        probs, pred, true, target, versus, runner_up, style, classes, grid_classes, maps, sent,
        of_signed, compare, compare_targets, lo, hi, diff, from_maps,
    )  # fmt: skip


def panel_content(
    view: dict,
    info,
    image: np.ndarray,
    described: str,
    ex: Explained,
    seq: int,
    route: dict | None = None,
) -> tuple[dict[str, np.ndarray], dict]:
    """The panel's arrays and data (what saliency_panel.js reads) for `ex`. The same whether
    the page's fragment or the explore route (`route_payload`) asks."""
    names = info.class_names
    c, h, w = image.shape
    target, probs, style = ex.target, ex.probs, ex.style
    big = render.scale_for(image.shape)
    small = render.scale_for(image.shape, 140)
    grid_title, grid_note = _grid_text(len(ex.grid_classes) == len(names), view["method"], style)
    bars = _bar_classes(probs, ex.true)
    before, after = _export_stem(view, described)
    facts = _export_facts(info, described, target, probs, ex.pred, ex.true, (ex.lo, ex.hi))
    arrays = {
        "maps": ex.sent,
        "rgb": display.to_rgb(image),
        **({} if ex.from_maps else {"contrast": ex.diff}),
        # Every colour table (a few hundred bytes each, sent once): a colour map picked in
        # the sidebar is drawn before the server has heard of it.
        **{f"lut:{n}": saliency_panel.lut(n) for n in SEQUENTIAL_CMAPS + DIVERGING_CMAPS},
        **{f"extra{i}": m for i, m in enumerate(ex.compare.values() if style.shared else ())},
    }
    data = {
        "classes": ex.classes,
        "target": target,
        "pred": ex.pred,
        "true": ex.true,
        "runner_up": ex.runner_up,
        "grid": [int(k) for k in ex.grid_classes],
        "bars": [[k, float(probs[k])] for k in bars],
        "labels": {str(k): class_label(k, names) for k in {*ex.classes, *bars}},
        "absolute_of_signed": ex.of_signed,
        "signed": style.signed,
        "alpha": style.alpha,
        "clip": style.clip,
        "shared": style.shared,
        # The sidebar's settings as the view holds them, the labels the panel finds them
        # by in the page, and which of them it can draw without new maps.
        "cmap": view["cmap"],
        "cmap_signed": view["cmap_signed"],
        "sign": view["sign"],
        "scale_view": view["scale"],
        "controls": CONTROLS,
        "sign_local": view["method"] == "gradient" and c == 1,
        "scale_local": not view["compare"],
        "symbol": SCORE_SYMBOL[view["score"]],
        # A map that is not a derivative of the pixels (Grad-CAM, LRP, …) is named by its
        # method in the caption: "Grad-CAM of logit[7]", not "∂ logit[7] / ∂x".
        "map_of": "" if _is_pixel(view["method"]) else saliency.method_info(view["method"]).label,
        "scale": big,
        "grid_px": _thumbnail_width(h, w, 160) * small,
        "image_caption": f"What the model sees ({h} × {w}{', RGB' if c == 3 else ''})",
        "grid_title": grid_title,
        "grid_note": grid_note,
        "bars_note": (
            f"The {TOP_CLASSES} most probable of {len(probs):,} classes."
            if len(probs) > ALL_CLASSES_UP_TO
            else ""
        ),
        "contrast_from_maps": ex.from_maps,
        "contrast_target": target,
        "contrast_versus": ex.versus,
        "export": {
            "before": before,
            "after": after,
            "note": _export_note(view),
            "json": json.loads(state.settings_json(facts, view)),
        },
        "seq": seq,
        "route": route,
    }
    return arrays, data


def _showing(view, info, names, image, described, ex: Explained) -> tuple[str, str]:
    """The sentence of what the map shows and its colour scale: (the score's symbol, the
    map's caption)."""
    model_name, method = view["model"], view["method"]
    signed = ex.style.signed
    symbol = SCORE_SYMBOL[view["score"]]
    what = f"∂ {symbol}[{class_md(ex.target, names)}] / ∂x"
    c, h, w = image.shape
    reduced = (
        ""
        if c == 1
        else " Three colour channels, one map: max |g| over the channels"
        + (" (signed maps: their sum)." if signed else ".")
    )
    method_info = saliency.method_info(method)
    at = ""
    if not _is_pixel(method):
        what = f"{symbol}[{class_md(ex.target, names)}]"  # not a derivative of the pixels
        reduced = ""
    if method_info.layer:
        layer = cache.method_facts(model_name, image.shape, method, view["layer"])["layer"]
        chosen = "chosen" if view["layer"] else "automatic"
        at = f" At layer {render.plain(layer)} ({chosen}), upsampled to the image."
    st.markdown(
        f"**Showing** {METHOD_LABELS[method]} of "
        f"{'|' + what + '|' if not signed and _is_pixel(method) else what} "
        f"for {render.plain(described)}, model {render.plain(cache.display_name(model_name))} "
        f"({info.test_accuracy:.2%} accuracy).{reduced}{at}"
    )
    map_caption = what if _is_pixel(method) else f"{method_info.label} of {what}"
    st.caption(ex.style.describe(ex.lo, ex.hi))
    return symbol, map_caption


def _map_notes(view, names, image, ex: Explained) -> None:
    """What to know before reading the map: zero everywhere, a saturated softmax, integrated
    gradients' completeness, a target that hardly matters."""
    method, score, probs = view["method"], view["score"], ex.probs
    target, versus = ex.target, ex.versus
    if saliency.method_info(method).layer and not np.any(ex.main):
        st.info(
            "This map is zero everywhere: at this layer every class-weighted activation is "
            "negative, and the method's ReLU keeps only evidence for the class. Try another "
            "layer, or LayerCAM, which weighs each position by its own gradient."
        )

    if score == "probability" and probs.max() > 0.99:
        st.info(
            f"The softmax is saturated (p = {probs.max():.4f}): when a class is this certain, "
            "changing a pixel barely changes any probability, so probability maps go flat. "
            "The logit map still shows what the score depends on."
        )
    if method == "integrated_gradients":
        delta = cache.integrated_gradients_delta(view["model"], image, target, score)
        st.caption(
            f"Completeness: sum(map) − (f(x) − f(black)) = {delta:.2e}. Integrated gradients "
            "should add up to the score difference; a large delta means more steps are needed."
        )
    rho = spearman(ex.maps[target], ex.maps[versus])
    if rho >= SAME_MAP_RHO:
        st.warning(
            f"**The target hardly matters here.** The maps for {class_md(target, names)} and "
            f"{class_md(versus, names)} are nearly the same (Spearman ρ = {rho:.2f}): they show "
            "where the model is sensitive at all, not what tells the two classes apart. "
            "The contrast map below does."
        )


def _server_pictures(view, info, names, image, true, described, ex, data, map_caption, symbol):
    """The server's own pictures, prediction, contrast, grid and exports: where the panel
    failed or hasn't drawn in time."""
    main, lo, hi, style, probs = ex.main, ex.lo, ex.hi, ex.style, ex.probs
    big = render.scale_for(image.shape)
    pred = ex.pred
    with st.container(key=saliency_panel.FALLBACK_KEY):
        c1, c2, c3 = st.columns(3)
        with c1:
            render.show(render.grey(image, 1), data["image_caption"], scale=big)
        with c2:
            render.show(
                render.picture(main, lo, hi, style, scale=1), f"Map: {map_caption}", scale=big
            )
            render.show(render.colorbar(lo, hi, style.cmap), None)
        overlay = render.picture(main, lo, hi, style, image=image, scale=1)
        with c3:
            render.show(overlay, f"Overlay (alpha {style.alpha:g})", scale=big)
        left, right = st.columns([1, 1])
        with left:
            st.markdown("#### Prediction")
            if len(probs) > ALL_CLASSES_UP_TO:
                st.caption(f"The {TOP_CLASSES} most probable of {len(probs):,} classes.")
            _prediction_table(probs, names, pred, true)
        with right:
            _contrast(ex.diff, ex.target, ex.versus, names, symbol, view, style, big)
        st.markdown(f"#### {data['grid_title']}")
        st.caption(data["grid_note"])
        _class_grid(ex.maps, ex.grid_classes, image, style, (lo, hi), pred, true, names)
        overlay = render.upscale(overlay, big)  # the download: crisp pixels, as on screen
        _export(view, info, described, ex.target, view["method"], overlay, main, probs, pred,
                true, (lo, hi))  # fmt: skip


def _explain(view, info, names, image, true, described, others, src) -> None:
    ex = explained(view, image, true)
    if view["target"] == "true" and true is None:
        st.caption("This image has no true class: the map is for the predicted class.")
    symbol, map_caption = _showing(view, info, names, image, described, ex)
    _map_notes(view, names, image, ex)

    # The panel: pictures, chart, contrast, every class and the exports, drawn in the browser.
    arrays, data = panel_content(
        view, info, image, described, ex, st.session_state.get(f"{PANEL_KEY}_seq", 0),
        _route(view, src),
    )  # fmt: skip
    # The server's own pictures, where the panel failed or hasn't drawn in time.
    fallback = saliency_panel.panel(key=PANEL_KEY, arrays=arrays, data=data, on_pick=_on_pick)
    if fallback or saliency_panel.said(PANEL_KEY):
        PAGE_DRAWN.set()  # complete (see dashboard/__init__.py)
    else:
        st.session_state[PAGE_WAITS] = True
    if fallback:
        _server_pictures(view, info, names, image, true, described, ex, data, map_caption, symbol)

    _report_button(view, info, image, described, ex, data["export"]["json"])
    _compare_models(view, others, image, ex.main, ex.compare, ex.compare_targets, ex.target,
                    ex.style, names)  # fmt: skip


# --- the report: this view as one HTML file ------------------------------------------------


def _report_button(view, info, image, described, ex: Explained, settings: dict) -> None:
    """The "Download report" button: what this view shows, as one self-contained HTML file,
    made from `ex` (already computed, by the model's own process or worker) and the JSON
    export's `settings` when the button is clicked, never on a rerun."""
    model = cache.display_name(view["model"])  # read here: it looks at this session
    compared = {m: cache.display_name(m) for m in ex.compare}
    method = view["method"]
    before, after = _export_stem(view, described)
    build = functools.partial(
        report_sections, dict(view), info, image, described, ex, model, compared
    )

    def html() -> str:
        return report.report_html(
            build(),
            title=f"{model}: {METHOD_LABELS[method]} of {described}",
            settings=settings,
            model_name=model,
            model_card=reports.card_text(info),
            model_sha256=info.weights_sha256,
        )

    reports.button(
        "📄 Download report", html, f"report_{before}{ex.target}{after}.html", "download_report"
    )


def _marks(ex: Explained, k: int) -> str:
    return (" · predicted" if k == ex.pred else "") + (" · true" if k == ex.true else "")


def _report_main(view, info, image, described, ex: Explained, model: str) -> report.Section:
    """The image, its map, the overlay (the "Map as PNG" download, byte for byte) and scale,
    with the probabilities."""
    names = info.class_names
    style, main = ex.style, ex.main
    big = render.scale_for(image.shape)
    symbol = SCORE_SYMBOL[view["score"]]
    what = f"{symbol}[{class_label(ex.target, names)}]"
    if not _is_pixel(view["method"]):
        what = f"{saliency.method_info(view['method']).label} of {what}"
    elif style.signed:
        what = f"∂ {what} / ∂x"
    else:
        what = f"|∂ {what} / ∂x|"
    c, h, w = image.shape
    overlay = render.picture(main, ex.lo, ex.hi, style, image=image, scale=1)
    return report.Section(
        f"{described}: {model} says {class_label(ex.pred, names)} ({ex.probs[ex.pred]:.1%})",
        images=[
            (
                f"What the model sees ({h} × {w}{', RGB' if c == 3 else ''})",
                render.png(render.grey(image, big)),
            ),
            (f"Map: {what}", render.png(render.picture(main, ex.lo, ex.hi, style, scale=big))),
            (f"Overlay (alpha {style.alpha:g})", render.png(render.upscale(overlay, big))),
            (
                f"Colour scale {ex.lo:.3g} … {ex.hi:.3g}",
                render.png(render.colorbar(ex.lo, ex.hi, style.cmap)),
            ),
        ],
        probabilities=[
            (class_label(k, names) + _marks(ex, k), float(ex.probs[k]))
            for k in _bar_classes(ex.probs, ex.true)
        ],
        note=f"{METHOD_LABELS[view['method']]}, model {model} "
        f"({info.test_accuracy:.2%} accuracy). {ex.style.describe(ex.lo, ex.hi)}.",
    )


def _report_contrast(view, names, image, ex: Explained) -> report.Section:
    """Why the target and not the versus class: the signed contrast on its own scale."""
    style, target, versus = ex.style, ex.target, ex.versus
    big = render.scale_for(image.shape)
    symbol = SCORE_SYMBOL[view["score"]]
    c_style = Style(True, view["cmap_signed"], style.alpha, style.clip, False)
    c_lo, c_hi = c_style.range([ex.diff])
    t_label, v_label = class_label(target, names), class_label(versus, names)
    return report.Section(
        f"Why {t_label} and not {v_label}?",
        images=[
            (
                f"{symbol}[{target}] − {symbol}[{versus}]",
                render.png(render.picture(ex.diff, c_lo, c_hi, c_style, scale=big)),
            ),
            (
                f"Colour scale {c_lo:.3g} … {c_hi:.3g}",
                render.png(render.colorbar(c_lo, c_hi, c_style.cmap)),
            ),
        ],
        note=f"Red pixels, when brighter, favour {t_label}; blue ones favour {v_label}. "
        "Signed, on its own symmetric scale.",
    )


def _report_grid(view, names, image, ex: Explained) -> report.Section:
    """The grid of classes' overlays, on the scale the view uses."""
    style = ex.style
    small = render.scale_for(image.shape, 140)
    grid = []
    for k in ex.grid_classes:
        k_lo, k_hi = (ex.lo, ex.hi) if style.shared else style.range([ex.maps[k]])
        rgb = render.thumbnail(render.picture(ex.maps[k], k_lo, k_hi, style, image=image, scale=1),
                               160)  # fmt: skip
        grid.append((class_label(k, names) + _marks(ex, k), render.png(render.upscale(rgb, small))))
    title, note = _grid_text(len(ex.grid_classes) == len(names), view["method"], style)
    note = note.replace(" Orange frame: predicted class; green frame: true class.", "")
    return report.Section(title, images=grid, note=note)  # no frames: captions say


def _report_compare(view, image, ex: Explained, model: str, compared: dict) -> report.Section:
    """The compared models' maps beside this one's, on one shared colour scale."""
    style = ex.style
    shown = [(view["model"], model, ex.main)]
    shown += [(m, compared[m], a) for m, a in ex.compare.items()]
    s_lo, s_hi = style.range([a for *_, a in shown])
    scale = render.scale_for(image.shape, 224)
    pictures = [
        (f"{name}: map of class {ex.compare_targets.get(m, ex.target)}",
         render.png(render.picture(a, s_lo, s_hi, style, image=image, scale=scale)))
        for m, name, a in shown
    ]  # fmt: skip
    pictures.append((f"Colour scale {s_lo:.3g} … {s_hi:.3g}",
                     render.png(render.colorbar(s_lo, s_hi, style.cmap))))  # fmt: skip
    note = "The same image and settings, on one shared colour scale."
    return report.Section("Compare models", images=pictures, note=note)


def report_sections(view, info, image, described, ex: Explained, model: str,
                    compared: dict[str, str]) -> list[report.Section]:  # fmt: skip
    """The report's sections: the pictures exactly as the view draws and exports them (the
    overlay is the "Map as PNG" download, byte for byte), the probabilities, and the grid,
    contrast and compared models, each on the scale the view uses."""
    names = info.class_names
    sections = [
        _report_main(view, info, image, described, ex, model),
        _report_contrast(view, names, image, ex),
        _report_grid(view, names, image, ex),
    ]
    if ex.compare:
        sections.append(_report_compare(view, image, ex, model, compared))
    return sections


# --- the explore route: the panel's content without a session -------------------------------

ROUTE_ENV = saliency_panel.ROUTE_ENV
# The view's keys the route reads (the test image's, the model's and the map's settings).
ROUTE_KEYS = ("dataset", "model", "index", "true_class", "correctness", "target", "method",
              "layer", "score", "sign", "scale", "clip", "alpha", "cmap",
              "cmap_signed")  # fmt: skip


def _route(view: dict, src: Source) -> dict | None:
    """How the panel asks `dashboard.serve`'s explore route for the content of another method,
    class score, model or test image itself, before the server's rerun brings it: the route's
    address, this view's query, the images Next and Previous show, and the labels of the
    sidebar's pickers. None where the route can't answer: no route (`streamlit run`), an
    uploaded or drawn image, a model of this session's, or models compared (the route knows
    nothing of sessions)."""
    url = os.environ.get(ROUTE_ENV)
    if not url or view["source"] != "test" or view["compare"]:
        return None
    public = state.public_models(view["dataset"])
    if view["model"] not in public:
        return None
    candidates = _candidates(view, src)
    i = int(view["index"])
    return {
        "url": url,
        "query": {k: state.FIELDS[k].dump(view[k]) for k in ROUTE_KEYS},
        "next": _neighbour(candidates, i, 1),
        "previous": _neighbour(candidates, i, -1),
        **_pickers(tuple(public)),
    }


_pickers_made: dict[tuple[str, ...], dict] = {}


def _pickers(public: tuple[str, ...]) -> dict:
    """The labels of the sidebar's pickers, by which the panel finds and reads them. Made once
    per list of registry models (each label reads its model's card)."""
    made = _pickers_made.get(public)
    if made is not None:
        return made
    models = {state.model_label(m): m for m in public}
    made = {
        "models": models,
        "methods": {label: m for m, label in METHOD_LABELS.items()},
        "scores": list(state.SCORES),
        "labels": {
            "model": state.MODEL_PICKER,
            "method": CONTROLS["method"],
            "score": CONTROLS["score"],
        },
        "buttons": {"next": NEXT_LABEL, "previous": PREVIOUS_LABEL},
    }
    registry = not any(sources.is_workspace(m) for m in public)  # a workspace's card can change
    if registry and all(label != m for label, m in models.items()) and len(_pickers_made) < 256:
        _pickers_made[public] = made
    return made


ROUTE_CACHE_BYTES = budget.share("route")  # 92 MB by default: ~1,400 payloads of 28 × 28
_route_cache = lru.store("route")


def route_payload(query: dict[str, str]) -> bytes:
    """`_route_payload` of the query's keys that matter, the latest answers kept (up to
    ROUTE_CACHE_BYTES): the same view asked for again (by other students, or on the way back)
    costs nothing."""
    key = tuple((k, str(query[k])[:100]) for k in (*ROUTE_KEYS, "seq") if k in query)
    body = _route_cache.get(key)
    if body is None:
        # SmoothGrad and the like take seconds of a core: one (SALIENCY_EXPENSIVE_AT_ONCE) at a
        # time, the others wait their turn, or are refused when too many wait (issue 28).
        with EXPENSIVE.turn(dict(key).get("method")):
            body = _route_payload(dict(key))
        _route_cache.put(key, body, len(body))
    return body


def _route_payload(query: dict[str, str]) -> bytes:
    """The panel's payload, every array carried, for the view that `query` describes (the
    keys of ROUTE_KEYS, as the link writes them; the others take their defaults) and a bundled
    test image or a workspace's image: public content, the same for every visitor. Raises
    ValueError for a malformed query, LookupError for a data set, model or image this server
    doesn't have."""
    own = ("dataset", "model")  # checked here: the fields' own checks read the session
    view = {k: f.default for k, f in state.FIELDS.items() if k not in own}
    view.update(compare=[], source="test", dataset=query.get("dataset", ""))
    view["model"] = query.get("model", "")
    for key in ROUTE_KEYS:
        if key not in own and key in query:
            view[key] = state.FIELDS[key].parse(query[key])
    if view["dataset"] not in sources.public_keys():
        raise LookupError(f"no data set {view['dataset'][:40]!r}")
    if view["model"] not in state.public_models(view["dataset"]):
        raise LookupError(f"no model {view['model'][:40]!r} for this data set")
    src = sources.source(view["dataset"])
    index = int(view["index"])
    if index >= len(src):
        raise LookupError(f"no image #{index}")
    info = cache.model_info(view["model"])
    if view["target"] not in state.TARGETS and int(view["target"]) >= len(info.class_names):
        raise ValueError("no such class")
    try:
        image = src.image(index)
    except ImageError as err:
        raise LookupError(str(err)) from None
    seq = query.get("seq", "0")
    seq = int(seq) if seq.isdigit() and len(seq) < 10 else 0
    ex = explained(view, image, int(src.labels[index]))
    arrays, data = panel_content(view, info, image, _described(src, index), ex, seq,
                                 _route(view, src))  # fmt: skip
    return saliency_panel.pack_all(arrays, data)


def _contrast(diff, target, versus, names, symbol, view, style, big) -> None:
    st.markdown(f"#### Why {class_md(target, names)} and not {class_md(versus, names)}?")
    c_style = Style(True, view["cmap_signed"], style.alpha, style.clip, False)
    c_lo, c_hi = c_style.range([diff])
    render.show(render.picture(diff, c_lo, c_hi, c_style, scale=1), None, scale=big)
    render.show(render.colorbar(c_lo, c_hi, c_style.cmap), None)
    st.caption(
        f"Map of {symbol}[{target}] − {symbol}[{versus}]: red pixels, when brighter, favour "
        f"{class_md(target, names)}; blue ones favour {class_md(versus, names)}. "
        f"Signed, on its own symmetric scale ({c_lo:.3g} … {c_hi:.3g})."
    )


def _class_grid(maps, classes, image, style, scale_range, pred, true, names) -> None:
    """Every class's map (the most probable ones for a large K), five to a row: the server's
    pictures, shown until the panel has drawn its own."""
    small = render.scale_for(image.shape, 140)
    pictures, captions = [], []
    for k in classes:
        k_lo, k_hi = scale_range if style.shared else style.range([maps[k]])
        rgb = render.thumbnail(
            render.picture(maps[k], k_lo, k_hi, style, image=image, scale=1), 160
        )
        colour = PREDICTED_COLOUR if k == pred else TRUE_COLOUR if k == true else None
        marks = (" · predicted" if k == pred else "") + (" · true" if k == true else "")
        pictures.append(_framed(rgb, colour, max(1, round(4 / small))))  # ~4 px on screen
        captions.append(f"{class_md(k, names)}{marks}")
    render.show_row(pictures, captions, scale=small)


def _compare_models(view, others, image, main, compare, compare_targets, target, style, names):
    """The same image and settings on up to MAX_COMPARE other models of the data set."""
    model_name = view["model"]
    if not others:
        return
    st.markdown("#### Compare models")
    st.multiselect(
        "Models to show beside this one (same image, same settings, one shared colour scale)",
        others,
        key="compare",
        max_selections=state.MAX_COMPARE,
    )
    if not view["compare"]:
        return
    chosen = [model_name, *(m for m in view["compare"] if m in compare)]
    skipped = [m for m in view["compare"] if m not in compare]
    if skipped:
        label = saliency.method_info(view["method"]).label
        st.caption(
            f"{label} can't explain "
            + ", ".join(render.plain(cache.display_name(m)) for m in skipped)
            + " (the library refuses them for this method): left out of the comparison."
        )
    targets = {model_name: target, **compare_targets}
    shown = {model_name: main, **compare}
    s_lo, s_hi = style.range(list(shown.values()))
    scale = render.scale_for(image.shape, 224)
    cols = st.columns(len(chosen))
    for col, m in zip(cols, chosen, strict=True):
        p = cache.probabilities(m, image)
        acc = cache.model_info(m).test_accuracy
        with col:
            render.show(
                render.picture(shown[m], s_lo, s_hi, style, image=image, scale=scale),
                f"{m} ({acc:.1%}): says {class_md(int(p.argmax()), names)} "
                f"({p.max():.0%}); map of class {targets[m]}",
            )
    render.show(render.colorbar(s_lo, s_hi, style.cmap), None)


def _export_note(view: dict) -> str:
    return (
        "The address bar holds this whole view (data set, model, image, target, method and "
        "options): copy it to share, or bookmark it. Drawn and uploaded digits travel in the "
        "link (a workspace's uploaded image does not: it stays in this session)."
        + (
            " It also holds the secret keys of the models you uploaded (`mine=…`): remove that "
            "part before you share it, unless the others may use your models."
            if view.get("mine")
            else ""
        )
    )


def _export_stem(view: dict, described: str) -> tuple[str, str]:
    """File names are `{before}{target}{after}.png` (and .npy, .json)."""
    safe = "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in described)
    return f"{view['model'].replace(':', '-')}_{safe}_class", f"_{view['method']}"


def _export_facts(info, described, target, probs, pred, true, lo_hi) -> dict:
    """What the JSON export says beside the settings."""
    top = np.argsort(-probs)[:TOP_CLASSES]
    return {
        "model_test_accuracy": info.test_accuracy,
        "image": described,
        "predicted": pred,
        "true": true,
        "target": target,
        "probabilities": (
            [round(float(p), 6) for p in probs]
            if len(probs) <= ALL_CLASSES_UP_TO
            else {int(k): round(float(probs[k]), 6) for k in top}
        ),
        "display_range": list(lo_hi),
    }


def _export(view, info, described, target, method, overlay, main, probs, pred, true, lo_hi):
    """The link, and the map as PNG, .npy and its settings as JSON: the server's buttons, in
    the fallback (the panel has its own, which export what it shows)."""
    st.markdown("#### Share and export")
    st.caption(_export_note(view))
    c1, c2, c3 = st.columns(3)
    before, after = _export_stem(view, described)
    stem = f"{before}{target}{after}"
    c1.download_button(
        "Map as PNG",
        render.png(overlay),
        f"{stem}.png",
        "image/png",
        key="download_png",
        on_click="ignore",
    )
    c2.download_button(
        "Raw map as .npy",
        render.npy_bytes(main),
        f"{stem}.npy",
        "application/octet-stream",
        key="download_npy",
        on_click="ignore",
    )
    c3.download_button(
        "Settings as JSON",
        state.settings_json(_export_facts(info, described, target, probs, pred, true, lo_hi)),
        f"{stem}.json",
        "application/json",
        key="download_json",
        on_click="ignore",
    )
