"""Explore's labels and constants, and the map's controls: the sidebar's method and class score
(a change reruns only the explanation fragment), the layer picker, and the target class and
colours, which the panel draws as its own switches; the sidebar draws those only where the
server draws its own pictures (the fallback). Split from `dashboard.views.explore`, which
re-exports every name (issue 31)."""

from __future__ import annotations

from typing import Any

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
NEXT_LABEL, PREVIOUS_LABEL = "Next ▶", "◀ Previous"  # the panel's buttons and the chooser's


MAIN_FRAGMENT = "explore_main"  # st.fragment key of `explanation`
TARGET_LABELS = {"predicted": "the predicted class", "true": "the true class"}
# The map controls' labels and options: the sidebar's, and the panel's own switches' (payload
# `controls`).
CONTROLS = {
    "method": "Method",
    "score": "Class score",
    "target": "Target class",
    "sign": "Values",
    "signs": state.SIGNS,
    "scale": "Colour scale",
    "scales": state.SCALES,
    "clip": "Clip at percentile",
    "alpha": "Overlay alpha",
    "cmap": "Colour map",
    "cmap_signed": "Signed colour map",
    "cmaps": SEQUENTIAL_CMAPS,
    "cmaps_signed": DIVERGING_CMAPS,
}
# What the panel reports as its state "settings" (each also a view key, as the link names it).
PANEL_SETTINGS = (state.SIGN, state.SCALE, state.CLIP, state.ALPHA, state.CMAP, state.CMAP_SIGNED)


def _rerun_explanation() -> None:
    """A map control changed: rerun the explanation fragment only, not the whole page."""
    st.rerun(MAIN_FRAGMENT)


def sidebar_controls() -> tuple[DeltaGenerator, DeltaGenerator]:
    """The method and class score, drawn by the full run; a change reruns only the explanation
    fragment (`st.rerun(key)` from the callback: the sidebar's widgets are not drawn again,
    about a third of a rerun's cost). Returns the places of the target class box with the layer
    picker, and of the colours, which that fragment fills (`map_controls`).

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
        colours = st.container()
    return slot, colours


def _colour_controls() -> None:
    """The sign and colours, in the sidebar: drawn by the explanation fragment (a change reruns
    that alone) where the panel doesn't draw them."""
    st.radio(CONTROLS["sign"], state.SIGNS, key=state.SIGN, horizontal=True)
    st.markdown("### Colours")
    st.radio(
        CONTROLS["scale"],
        state.SCALES,
        key=state.SCALE,
        horizontal=True,
        format_func={"map": "per map", "shared": "shared"}.get,
    )
    st.slider(CONTROLS["clip"], 50.0, 100.0, step=0.5, key=state.CLIP)
    st.slider(CONTROLS["alpha"], 0.0, 1.0, step=0.05, key=state.ALPHA)
    c1, c2 = st.columns(2)
    c1.selectbox(CONTROLS["cmap"], SEQUENTIAL_CMAPS, key=state.CMAP)
    c2.selectbox(CONTROLS["cmap_signed"], DIVERGING_CMAPS, key=state.CMAP_SIGNED)


def panel_settings(value: object) -> dict[str, Any]:
    """The settings the panel reported (its state "settings"), each checked as a link's value
    is (`state.FIELDS[key].parse`); what isn't a valid value of its setting is left out."""
    if not isinstance(value, dict):
        return {}
    out = {}
    for key in PANEL_SETTINGS:
        v = value.get(key)
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            continue
        try:
            out[key] = state.FIELDS[key].parse(str(v))
        except (ValueError, TypeError):
            continue
    return out


def target_choices(names: tuple[str, ...]) -> list[list[str]]:
    """The target box's [value, text] choices, the panel's and the sidebar's alike."""
    return [[t, TARGET_LABELS[t]] for t in state.TARGETS] + [
        [str(k), class_label(k, names)] for k in range(len(names))
    ]


def _valid_target(names: tuple[str, ...]) -> None:
    if state.get(state.TARGET) not in state.TARGETS and int(state.get(state.TARGET)) >= len(names):
        state.put(state.TARGET, "predicted")  # a class number this model doesn't have


def _target_control(names: tuple[str, ...]) -> None:
    labels = dict(target_choices(names))
    st.selectbox(
        CONTROLS["target"],
        tuple(labels),
        key=state.TARGET,
        help="Type to search the class names, or click a class's map in the panel.",
        format_func=labels.get,
    )  # drawn by the explanation fragment: a change reruns that alone


def map_controls(
    view: dict, image: np.ndarray | None, names: tuple[str, ...], slots, panel_draws
) -> str:
    """The fragment's part of the sidebar (`slots`: `sidebar_controls`' places): the layer
    picker, and the target box and colours unless the panel draws them (`panel_draws(problem)`
    says whether it will). Returns why the method can't explain this model ("" when it can)."""
    target_slot, colour_slot = slots
    _valid_target(names)
    # Both places written on every run, filled or not: a fragment rerun may fill only a place
    # outside it that the last full run's fragment wrote to (Streamlit reserves it then).
    with target_slot:
        box = st.container()
        problem = "" if image is None else _layer_control(view, image)
    colours = colour_slot.container()
    if not panel_draws(problem):
        with box:
            _target_control(names)
        with colours:
            _colour_controls()
    return problem


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
