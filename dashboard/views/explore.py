"""Explore: one image, one model, every class and method. Why did the model say 9?"""

from __future__ import annotations

import hashlib

import numpy as np
import streamlit as st

import pretrained
from dashboard import cache, render, state
from dashboard.render import Style
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


def class_label(k: int, names: tuple[str, ...]) -> str:
    return str(k) if names[k] == str(k) else f"{k} · {names[k]}"


# --- choosing the image ---------------------------------------------------------------------


def _candidates(view: dict, ds: pretrained.Dataset) -> np.ndarray:
    """Test-set indices matching the true-class and correct/wrong filters."""
    keep = np.ones(len(ds), dtype=bool)
    if view["true_class"] != "any":
        keep &= ds.labels.numpy() == int(view["true_class"])
    if view["correctness"] != "all":
        pred = cache.test_set_probabilities(view["model"], view["dataset"]).argmax(1)
        right = pred == ds.labels.numpy()
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


def _test_image(view: dict, ds: pretrained.Dataset) -> tuple[np.ndarray, int, str]:
    names = ds.classes
    c1, c2 = st.columns(2)
    c1.selectbox(
        "True class",
        ("any",) + tuple(str(k) for k in range(10)),
        key="true_class",
        format_func=lambda v: "any class" if v == "any" else class_label(int(v), names),
    )
    c2.radio(
        f"{view['model']} got it",
        state.CORRECTNESS,
        key="correctness",
        horizontal=True,
        format_func={"all": "either", "correct": "right", "wrong": "wrong"}.get,
    )
    candidates = _candidates(view, ds)
    c1, c2, c3, c4 = st.columns([2, 1, 1, 1], vertical_alignment="bottom")
    c1.number_input("Test image index", 0, len(ds) - 1, step=1, key="index")
    c2.button("◀ Previous", key="previous", on_click=_step, args=(candidates, -1))
    c3.button("Next ▶", key="next", on_click=_step, args=(candidates, 1))
    c4.button("🎲 Random", key="random", on_click=_step, args=(candidates, 0))
    index = int(st.session_state["index"])
    note = f"{len(candidates):,} of {len(ds):,} test images match the filters."
    if len(candidates) and index not in set(candidates.tolist()):
        note += f" Image #{index} does not: use Next or Random."
    st.caption(note)
    image = ds.images[index, 0].numpy()
    return image, int(ds.labels[index]), f"test image #{index}"


def _remember_image(image: np.ndarray) -> None:
    state.put("image", encode_image(image))


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


def choose_image(view: dict, ds: pretrained.Dataset) -> tuple[np.ndarray | None, int | None, str]:
    """The 28x28 image to explain, its true class if known, and a short description."""
    st.radio(
        "Image",
        state.SOURCES,
        key="source",
        horizontal=True,
        format_func={"test": "Test set", "upload": "Upload", "draw": "Draw"}.get,
    )
    if view["source"] == "test":
        return _test_image(view, ds)
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
    return image, None, "your drawing" if view["source"] == "draw" else "your upload"


# --- sections -------------------------------------------------------------------------------


def prediction_chart(probs: np.ndarray, names: tuple[str, ...], pred: int, true: int | None):
    """Horizontal bars of the class probabilities, predicted and true classes coloured.

    A plain Vega-Lite spec with inline data rather than Altair and pandas: Altair validates its
    schema on every rerun, which cost more than everything else this chart does, and neither
    library then has to be imported before the first page shows.
    """
    role = ["predicted" if k == pred else "true" if k == true else "other" for k in range(10)]
    if true is not None and true == pred:
        role[pred] = "predicted = true"
    rows = [
        {"class": class_label(k, names), "probability": float(probs[k]), "role": role[k]}
        for k in range(len(probs))
    ]
    spec = {
        "data": {"values": rows},
        "mark": {"type": "bar"},
        "height": 300,
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
        st.selectbox(
            "Target class",
            state.TARGETS,
            key="target",
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


def render_view() -> None:
    view = state.init()
    for problem in st.session_state.get("url_problems", []):
        st.warning(f"Link: {problem}")
    ds = cache.dataset(view["dataset"])
    info = cache.model_info(view["model"])
    names = info.class_names  # the data set's, or an uploaded model's own

    sidebar_controls(view, names)
    st.title("Explore")
    with st.container(border=True):
        image, true, described = choose_image(view, ds)
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
    maps = cache.class_maps(model_name, image, method, score, not signed)  # (K, 28, 28)
    main = maps[target]
    compare = {m: cache.class_maps(m, image, method, score, not signed) for m in view["compare"]}
    compare_targets = {}
    for m in compare:
        p = cache.probabilities(m, image)
        compare_targets[m] = int(p.argmax()) if view["target"] == "predicted" else target
    on_screen = [main, *maps] + [compare[m][compare_targets[m]] for m in compare]
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
    st.markdown(
        f"**Showing** {METHOD_LABELS[method]} of {'|' + what + '|' if not signed else what} "
        f"for {described}, model {model_name} ({info.test_accuracy:.2%} test accuracy)."
    )
    st.caption(style.describe(lo, hi))

    c1, c2, c3 = st.columns(3)
    with c1:
        render.show(render.grey(image), "What the model sees (28 × 28)")
    with c2:
        render.show(render.picture(main, lo, hi, style), f"Map: {what}")
        render.show(render.colorbar(lo, hi, style.cmap), None)
    with c3:
        overlay = render.picture(main, lo, hi, style, image=image)
        render.show(overlay, f"Overlay (alpha {style.alpha:g})")

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
        prediction_chart(probs, names, pred, true)
    with right:
        st.markdown(f"#### Why {class_label(target, names)} and not {class_label(versus, names)}?")
        diff = cache.contrast_map(model_name, image, target, versus, method, score)
        c_style = Style(True, view["cmap_signed"], style.alpha, style.clip, False)
        c_lo, c_hi = c_style.range([diff])
        render.show(render.picture(diff, c_lo, c_hi, c_style), None)
        render.show(render.colorbar(c_lo, c_hi, c_style.cmap), None)
        st.caption(
            f"Map of {symbol}[{target}] − {symbol}[{versus}]: red pixels, when brighter, favour "
            f"{class_label(target, names)}; blue ones favour {class_label(versus, names)}. "
            f"Signed, on its own symmetric scale ({c_lo:.3g} … {c_hi:.3g})."
        )

    st.markdown("#### Every class")
    st.caption(
        "One map per class"
        + (
            " from one Jacobian call (one forward, ten backward passes)"
            if method == "gradient"
            else f", {METHOD_LABELS[method]}, all classes in one batch"
        )
        + ". Orange frame: predicted class; green frame: true class."
        + (" Shared colour scale." if style.shared else " Each map on its own scale.")
    )
    cols = st.columns(5)
    for k in range(len(maps)):
        k_lo, k_hi = (lo, hi) if style.shared else style.range([maps[k]])
        rgb = render.picture(maps[k], k_lo, k_hi, style, image=image, scale=5)
        colour = PREDICTED_COLOUR if k == pred else TRUE_COLOUR if k == true else None
        marks = (" · predicted" if k == pred else "") + (" · true" if k == true else "")
        with cols[k % 5]:
            render.show(_framed(rgb, colour), f"{class_label(k, names)}{marks}")

    st.markdown("#### Compare models")
    others = [m for m in state.models(view["dataset"]) if m != model_name]
    st.multiselect(
        "Models to show beside this one (same image, same settings, one shared colour scale)",
        others,
        key="compare",
        max_selections=state.MAX_COMPARE,
    )
    if view["compare"]:
        chosen = [model_name, *view["compare"]]
        targets = {model_name: target, **compare_targets}
        shown = {model_name: main} | {m: compare[m][compare_targets[m]] for m in compare}
        s_lo, s_hi = style.range(list(shown.values()))
        cols = st.columns(len(chosen))
        for col, m in zip(cols, chosen, strict=True):
            p = cache.probabilities(m, image)
            acc = cache.model_info(m).test_accuracy
            with col:
                render.show(
                    render.picture(shown[m], s_lo, s_hi, style, image=image, scale=8),
                    f"{m} ({acc:.1%}): says {class_label(int(p.argmax()), names)} "
                    f"({p.max():.0%}); map of class {targets[m]}",
                )
        render.show(render.colorbar(s_lo, s_hi, style.cmap), None)

    st.markdown("#### Share and export")
    st.caption(
        "The address bar holds this whole view (data set, model, image, target, method and "
        "options): copy it to share, or bookmark it. Drawn and uploaded images travel in the link."
        + (
            " It also holds the secret keys of the models you uploaded (`mine=…`): remove that "
            "part before you share it, unless the others may use your models."
            if view.get("mine")
            else ""
        )
    )
    c1, c2, c3 = st.columns(3)
    stem = f"{model_name}_{described.replace(' ', '_').replace('#', '')}_class{target}_{method}"
    c1.download_button(
        "Map as PNG",
        render.png_bytes(overlay),
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
    extra = {
        "model_test_accuracy": info.test_accuracy,
        "predicted": pred,
        "true": true,
        "target": target,
        "probabilities": [round(float(p), 6) for p in probs],
        "display_range": [lo, hi],
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
