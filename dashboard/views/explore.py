"""Explore: one image, one model, every class and method. Why did the model say 9?"""

from __future__ import annotations

import hashlib

import numpy as np
import streamlit as st

from dashboard import cache, render, sources, state
from dashboard.render import Style, class_label
from dashboard.sources import Source
from pretrained.images import (
    ImageError,
    canvas_to_mnist,
    decode_image,
    decode_image28,
    encode_image,
    mnist_style,
)
from saliency.display import DIVERGING_CMAPS, SEQUENTIAL_CMAPS
from saliency.metrics import spearman

METHOD_LABELS = {
    "gradient": "Vanilla gradient",
    "smoothgrad": "SmoothGrad (mean |g|, 50 noisy copies, σ = 0.15)",
    "smoothgrad_sq": "SmoothGrad² (mean g², 50 copies, σ = 0.15)",
    "vargrad": "VarGrad (variance of g, 50 copies, σ = 0.15)",
    "input_x_gradient": "Gradient × Input",
    "integrated_gradients": "Integrated Gradients (black baseline, 50 steps)",
}
SCORE_SYMBOL = {"logit": "logit", "probability": "p", "log_probability": "log p"}
SAME_MAP_RHO = 0.9
PREDICTED_COLOUR = (255, 140, 0)
TRUE_COLOUR = (40, 170, 60)
ALL_CLASSES_UP_TO = 20  # more classes than this: the grid and the chart show the top ones
TOP_CLASSES = 10


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


def _step(candidates: np.ndarray, direction: int) -> None:
    if len(candidates) == 0:
        return
    i = state.get("index")
    if direction == 0:
        state.put("index", int(np.random.default_rng().choice(candidates)))
    elif direction > 0:
        after = candidates[candidates > i]
        state.put("index", int(after[0] if len(after) else candidates[0]))
    else:
        before = candidates[candidates < i]
        state.put("index", int(before[-1] if len(before) else candidates[-1]))


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
        f"{view['model']} got it",
        state.CORRECTNESS,
        key="correctness",
        horizontal=True,
        format_func={"all": "either", "correct": "right", "wrong": "wrong"}.get,
    )
    candidates = _candidates(view, src)
    c1, c2, c3, c4 = st.columns([2, 1, 1, 1], vertical_alignment="bottom")
    c1.number_input("Image index", 0, len(src) - 1, step=1, key="index")
    c2.button("◀ Previous", key="previous", on_click=_step, args=(candidates, -1))
    c3.button("Next ▶", key="next", on_click=_step, args=(candidates, 1))
    c4.button("🎲 Random", key="random", on_click=_step, args=(candidates, 0))
    if src.paths is not None:
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
    described = f"test image #{index}" if src.paths is None else f"#{index} {src.paths[index]}"
    return image, int(src.labels[index]), described


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
    )
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
    )
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
    from streamlit_drawable_canvas import st_canvas

    result = st_canvas(
        stroke_width=22,
        stroke_color="#FFFFFF",
        background_color="#000000",
        height=280,
        width=280,
        drawing_mode="freedraw",
        return_image_data=True,
        key="canvas",
    )
    st.caption("Draw one digit, large, in the middle. It is converted like MNIST digits were.")
    data = result.image_data
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


def prediction_chart(probs: np.ndarray, names: tuple[str, ...], pred: int, true: int | None):
    """Horizontal bars of the class probabilities, predicted and true classes coloured.

    A plain Vega-Lite spec with inline data rather than Altair and pandas: Altair validates its
    schema on every rerun, which cost more than everything else this chart does, and neither
    library then has to be imported before the first page shows.
    """
    k_all = len(probs)
    shown = range(k_all) if k_all <= ALL_CLASSES_UP_TO else np.argsort(-probs)[:TOP_CLASSES]
    if true is not None and true not in shown:  # the true class, however unlikely
        shown = [*shown, true]

    def role(k: int) -> str:
        if k == pred:
            return "predicted = true" if k == true else "predicted"
        return "true" if k == true else "other"

    rows = [
        {"class": class_label(int(k), names), "probability": float(probs[k]), "role": role(k)}
        for k in shown
    ]
    spec = {
        "data": {"values": rows},
        "mark": {"type": "bar"},
        "height": 300 if len(rows) <= 12 else 25 * len(rows),
        "encoding": {
            "x": {"field": "probability", "type": "quantitative", "scale": {"domain": [0, 1]}},
            "y": {
                "field": "class",
                "type": "nominal",
                "sort": None,
                "title": None,
                "axis": {"labelOverlap": False},
            },
            "color": {
                "field": "role",
                "type": "nominal",
                "scale": {
                    "domain": ["predicted", "true", "predicted = true", "other"],
                    "range": ["#ff8c00", "#28aa3c", "#28aa3c", "#9aa5b1"],
                },
                "legend": {"orient": "top", "title": None},
            },
            "tooltip": [
                {"field": "class", "type": "nominal"},
                {"field": "probability", "type": "quantitative", "format": ".4f"},
            ],
        },
    }
    st.vega_lite_chart(None, spec, width="stretch")


def _framed(rgb: np.ndarray, colour: tuple[int, int, int] | None, width: int = 4) -> np.ndarray:
    """A picture inside a coloured frame (white when `colour` is None)."""
    h, w = rgb.shape[:2]
    out = np.empty((h + 2 * width, w + 2 * width, 3), dtype=np.uint8)
    out[:] = colour or (255, 255, 255)
    out[width:-width, width:-width] = rgb
    return out


def sidebar_controls(view: dict, names: tuple[str, ...]) -> None:
    with st.sidebar:
        st.markdown("### Map")
        if state.get("target") not in state.TARGETS and int(state.get("target")) >= len(names):
            state.put("target", "predicted")  # a class number this model doesn't have
        st.selectbox(
            "Target class",
            state.TARGETS + tuple(str(k) for k in range(len(names))),
            key="target",
            help="Type to search the class names.",
            format_func=lambda t: (
                {"predicted": "the predicted class", "true": "the true class"}.get(t, None)
                or class_label(int(t), names)
            ),
        )
        st.selectbox("Method", saliency_methods(), key="method", format_func=METHOD_LABELS.get)
        st.radio(
            "Class score",
            state.SCORES,
            key="score",
            horizontal=True,
            format_func={
                "logit": "logit",
                "probability": "probability",
                "log_probability": "log p",
            }.get,
        )
        st.radio("Values", state.SIGNS, key="sign", horizontal=True)
        st.markdown("### Colours")
        st.radio(
            "Colour scale",
            state.SCALES,
            key="scale",
            horizontal=True,
            format_func={"map": "per map", "shared": "shared"}.get,
        )
        st.slider("Clip at percentile", 50.0, 100.0, step=0.5, key="clip")
        st.slider("Overlay alpha", 0.0, 1.0, step=0.05, key="alpha")
        c1, c2 = st.columns(2)
        c1.selectbox("Colour map", SEQUENTIAL_CMAPS, key="cmap")
        c2.selectbox("Signed colour map", DIVERGING_CMAPS, key="cmap_signed")


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


def render_view() -> None:
    view = state.init()
    for problem in st.session_state.get("url_problems", []):
        st.warning(f"Link: {problem}")
    src = sources.source(view["dataset"])
    info = cache.model_info(view["model"])
    names = info.class_names  # the data set's, or an uploaded model's own

    sidebar_controls(view, names)
    st.title("Explore")
    for note in src.notes:
        st.caption(note)
    with st.container(border=True):
        image, true, described = choose_image(view, src)
    if image is None:
        return

    # What the model says.
    model_name = view["model"]
    probs = cache.probabilities(model_name, image)
    pred = int(probs.argmax())
    order = np.argsort(-probs)
    runner_up = int(order[1])
    if view["target"] == "predicted":
        target = pred
    elif view["target"] == "true":
        target = pred if true is None else true
    else:
        target = int(view["target"])
    versus = pred if target != pred else runner_up

    method, score = view["method"], view["score"]
    signed = view["sign"] == "signed" and method not in ("smoothgrad_sq", "vargrad")
    style = Style(
        signed=signed,
        cmap=view["cmap_signed"] if signed else view["cmap"],
        alpha=float(view["alpha"]),
        clip=float(view["clip"]),
        shared=view["scale"] == "shared",
    )
    asked, grid_classes = _maps_shown(probs, target, versus, true)
    computed = cache.class_maps(model_name, image, method, score, not signed, asked)
    maps = dict(zip(range(len(probs)) if asked is None else asked, computed, strict=True))
    main = maps[target]
    compare, compare_targets = {}, {}
    for m in view["compare"]:
        p = cache.probabilities(m, image)
        compare_targets[m] = int(p.argmax()) if view["target"] == "predicted" else target
        compare[m] = cache.class_maps(m, image, method, score, not signed, (compare_targets[m],))[0]
    on_screen = [main, *(maps[k] for k in grid_classes), *compare.values()]
    lo, hi = style.range(on_screen if style.shared else [main])

    verdict = (
        "✓ right" if true is not None and true == pred else "✗ wrong" if true is not None else ""
    )
    st.subheader(
        f"{model_name} says **{class_label(pred, names)}** ({probs[pred]:.1%})"
        + (f" · true class {class_label(true, names)} {verdict}" if true is not None else "")
    )
    if view["target"] == "true" and true is None:
        st.caption("This image has no true class: the map is for the predicted class.")

    symbol = SCORE_SYMBOL[score]
    what = f"∂ {symbol}[{class_label(target, names)}] / ∂x"
    c, h, w = image.shape
    reduced = (
        ""
        if c == 1
        else " Three colour channels, one map: max |g| over the channels"
        + (" (signed maps: their sum)." if signed else ".")
    )
    st.markdown(
        f"**Showing** {METHOD_LABELS[method]} of {'|' + what + '|' if not signed else what} "
        f"for {described}, model {model_name} ({info.test_accuracy:.2%} accuracy).{reduced}"
    )
    st.caption(style.describe(lo, hi))

    big = render.scale_for(image.shape)
    c1, c2, c3 = st.columns(3)
    with c1:
        render.show(
            render.grey(image, 1),
            f"What the model sees ({h} × {w}{', RGB' if c == 3 else ''})",
            scale=big,
        )
    with c2:
        render.show(render.picture(main, lo, hi, style, scale=1), f"Map: {what}", scale=big)
        render.show(render.colorbar(lo, hi, style.cmap), None)
    with c3:
        overlay = render.picture(main, lo, hi, style, image=image, scale=1)
        render.show(overlay, f"Overlay (alpha {style.alpha:g})", scale=big)

    if score == "probability" and probs.max() > 0.99:
        st.info(
            f"The softmax is saturated (p = {probs.max():.4f}): when a class is this certain, "
            "changing a pixel barely changes any probability, so probability maps go flat. "
            "The logit map still shows what the score depends on."
        )
    if method == "integrated_gradients":
        delta = cache.integrated_gradients_delta(model_name, image, target, score)
        st.caption(
            f"Completeness: sum(map) − (f(x) − f(black)) = {delta:.2e}. Integrated gradients "
            "should add up to the score difference; a large delta means more steps are needed."
        )

    rho = spearman(maps[target], maps[versus])
    if rho >= SAME_MAP_RHO:
        st.warning(
            f"**The target hardly matters here.** The maps for {class_label(target, names)} and "
            f"{class_label(versus, names)} are nearly the same (Spearman ρ = {rho:.2f}): they show "
            "where the model is sensitive at all, not what tells the two classes apart. "
            "The contrast map below does."
        )

    left, right = st.columns([1, 1])
    with left:
        st.markdown("#### Prediction")
        if len(probs) > ALL_CLASSES_UP_TO:
            st.caption(f"The {TOP_CLASSES} most probable of {len(probs):,} classes.")
        prediction_chart(probs, names, pred, true)
    with right:
        st.markdown(f"#### Why {class_label(target, names)} and not {class_label(versus, names)}?")
        diff = cache.contrast_map(model_name, image, target, versus, method, score)
        c_style = Style(True, view["cmap_signed"], style.alpha, style.clip, False)
        c_lo, c_hi = c_style.range([diff])
        render.show(render.picture(diff, c_lo, c_hi, c_style, scale=1), None, scale=big)
        render.show(render.colorbar(c_lo, c_hi, c_style.cmap), None)
        st.caption(
            f"Map of {symbol}[{target}] − {symbol}[{versus}]: red pixels, when brighter, favour "
            f"{class_label(target, names)}; blue ones favour {class_label(versus, names)}. "
            f"Signed, on its own symmetric scale ({c_lo:.3g} … {c_hi:.3g})."
        )

    _class_grid(maps, grid_classes, image, style, (lo, hi), pred, true, names, method)
    _compare_models(view, image, main, compare, compare_targets, target, style, names)
    overlay = render.upscale(overlay, big)  # the download: crisp pixels, as on screen
    _export(view, info, described, target, method, overlay, main, probs, pred, true, (lo, hi))


def _class_grid(maps, classes, image, style, scale_range, pred, true, names, method) -> None:
    """Every class's map (the most probable ones for a large K), five to a row."""
    everything = len(classes) == len(names)
    st.markdown("#### Every class" if everything else f"#### The top {TOP_CLASSES} classes")
    st.caption(
        ("One map per class" if everything else
         f"One map for each of the {TOP_CLASSES} most probable of {len(names):,} classes "
         "(and the true class), most probable first")
        + (
            " from one Jacobian call (one forward pass, one backward pass per class)"
            if method == "gradient"
            else f", {METHOD_LABELS[method]}, all classes in one batch"
        )
        + ". Orange frame: predicted class; green frame: true class."
        + (" Shared colour scale." if style.shared else " Each map on its own scale.")
    )  # fmt: skip
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
        captions.append(f"{class_label(k, names)}{marks}")
    render.show_row(pictures, captions, scale=small)


def _compare_models(view, image, main, compare, compare_targets, target, style, names) -> None:
    """The same image and settings on up to MAX_COMPARE other models of the data set."""
    model_name = view["model"]
    others = [m for m in state.models(view["dataset"]) if m != model_name]
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
    chosen = [model_name, *view["compare"]]
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
                f"{m} ({acc:.1%}): says {class_label(int(p.argmax()), names)} "
                f"({p.max():.0%}); map of class {targets[m]}",
            )
    render.show(render.colorbar(s_lo, s_hi, style.cmap), None)


def _export(view, info, described, target, method, overlay, main, probs, pred, true, lo_hi):
    """The link, and the map as PNG, .npy and its settings as JSON."""
    st.markdown("#### Share and export")
    st.caption(
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
    c1, c2, c3 = st.columns(3)
    safe = "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in described)
    stem = f"{view['model'].replace(':', '-')}_{safe}_class{target}_{method}"
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
    top = np.argsort(-probs)[:TOP_CLASSES]
    extra = {
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
    c3.download_button(
        "Settings as JSON",
        state.settings_json(extra),
        f"{stem}.json",
        "application/json",
        key="download_json",
        on_click="ignore",
    )


if __name__ == "__main__":  # run as a page by the router (st.Page("views/explore.py"))
    render_view()
