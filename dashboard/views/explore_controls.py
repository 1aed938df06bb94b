"""Explore's labels and constants, and the map's controls: the sidebar's (a change reruns only
the explanation fragment), the target class box and the layer picker that fragment draws.
Split from `dashboard.views.explore`, which re-exports every name (issue 31)."""

from __future__ import annotations

import numpy as np
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

import saliency
from dashboard import cache, state
from dashboard.render import class_label
from saliency.display import DIVERGING_CMAPS, SEQUENTIAL_CMAPS

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
    holds the fragment's elements until the next `run()` (tests/dashboard/test_dashboard.py)."""
    rerun = _rerun_explanation
    with st.sidebar:
        st.markdown("### Map")
        slot = st.container()
        st.selectbox(
            CONTROLS["method"], saliency_methods(), key=state.METHOD, format_func=METHOD_LABELS.get,
            on_change=rerun,
        )  # fmt: skip
        st.radio(
            CONTROLS["score"],
            state.SCORES,
            key=state.SCORE,
            horizontal=True,
            format_func={
                "logit": "logit",
                "probability": "probability",
                "log_probability": "log p",
            }.get,
            on_change=rerun,
        )
        st.radio(CONTROLS["sign"], state.SIGNS, key=state.SIGN, horizontal=True, on_change=rerun)
        st.markdown("### Colours")
        st.radio(
            CONTROLS["scale"],
            state.SCALES,
            key=state.SCALE,
            horizontal=True,
            format_func={"map": "per map", "shared": "shared"}.get,
            on_change=rerun,
        )
        st.slider(CONTROLS["clip"], 50.0, 100.0, step=0.5, key=state.CLIP, on_change=rerun)
        st.slider(CONTROLS["alpha"], 0.0, 1.0, step=0.05, key=state.ALPHA, on_change=rerun)
        c1, c2 = st.columns(2)
        c1.selectbox(CONTROLS["cmap"], SEQUENTIAL_CMAPS, key=state.CMAP, on_change=rerun)
        c2.selectbox(
            CONTROLS["cmap_signed"], DIVERGING_CMAPS, key=state.CMAP_SIGNED, on_change=rerun
        )
    return slot


def _target_control(names: tuple[str, ...]) -> None:
    if state.get(state.TARGET) not in state.TARGETS and int(state.get(state.TARGET)) >= len(names):
        state.put(state.TARGET, "predicted")  # a class number this model doesn't have
    st.selectbox(
        CONTROLS["target"],
        state.TARGETS + tuple(str(k) for k in range(len(names))),
        key=state.TARGET,
        help="Type to search the class names, or click a class's map in the panel.",
        format_func=lambda t: TARGET_LABELS.get(t) or class_label(int(t), names),
    )  # drawn by the explanation fragment: a change reruns that alone


def saliency_methods() -> tuple[str, ...]:
    return tuple(METHOD_LABELS)


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
    if state.get(state.LAYER) not in options:
        state.put(state.LAYER, "")  # another model's layer
    layer_picker(state.LAYER, auto)
    return ""


def layer_picker(key: str, auto: dict, *, transformers: bool = True) -> None:
    """The layer selectbox of a layer map, Explore's and Photos': "" is the automatic layer,
    `auto["layer"]`, named in its option. `transformers` False: a page without any, whose help
    leaves them out. The caller resets `key` to "" when it holds another model's layer."""
    tokens = ", or a transformer's patch tokens before its last attention" if transformers else ""
    st.selectbox(
        LAYER_LABEL,
        ("", *auto["layers"]),
        key=key,
        format_func=lambda n: n or f"automatic: {auto['layer']}",
        help="The module whose activations and gradients the map is made of. Automatic: the "
        f"last one that runs once and keeps a spatial grid (N, C, h, w){tokens}; earlier "
        "layers are finer and less class-specific.",
    )
