"""Explore's labels and constants, and the map's controls: the layer picker; the method and
class score, which the panel draws as its own pickers where the explore route can answer
(`panel_choice` checks what it reports); the target class and colours, which the panel draws as
its own switches. The sidebar draws those only where the panel doesn't (the fallback, and for
the method and score also a view the route can't answer). Split from `dashboard.views.explore`,
which re-exports every name (issue 31)."""

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
SCORE_LABELS = {"logit": "logit", "probability": "probability", "log_probability": "log p"}
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


def sidebar_controls() -> tuple[DeltaGenerator, DeltaGenerator, DeltaGenerator]:
    """The sidebar's "Map" section, drawn by the full run: the places that the explanation
    fragment fills (`map_controls`), of the heading with the target class box and the layer
    picker, of the method and class score, and of the colours. A change of any of them reruns
    only that fragment (about a third of a page rerun's cost).

    AppTest keeps only what a run drew: after one of these controls changes, its element tree
    holds the fragment's elements until the next `run()` (tests/dashboard/test_dashboard.py)."""
    with st.sidebar:
        slots = st.container(), st.container(), st.container()
    return slots


def method_controls() -> None:
    """The method and class score, in the sidebar: drawn by the explanation fragment where the
    panel doesn't draw them as its own pickers."""
    st.selectbox(
        CONTROLS["method"], saliency_methods(), key=state.METHOD, format_func=METHOD_LABELS.get
    )
    st.radio(
        CONTROLS["score"], state.SCORES, key=state.SCORE, horizontal=True,
        format_func=SCORE_LABELS.get,
    )  # fmt: skip


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
) -> tuple[str, DeltaGenerator]:
    """The fragment's part of the sidebar (`slots`: `sidebar_controls`' places): the layer
    picker, and the target box and colours unless the panel draws them (`panel_draws(problem)`
    says whether it will). Returns why the method can't explain this model ("" when it can),
    and the place of the method and class score, which the caller fills (`sidebar_pickers`)
    unless the panel draws its own pickers."""
    target_slot, picker_slot, colour_slot = slots
    _valid_target(names)
    # Every place written on every run, filled or not: a fragment rerun may fill only a place
    # outside it that the last full run's fragment wrote to (Streamlit reserves it then).
    with target_slot:
        head, box = st.container(), st.container()
        problem = "" if image is None else _layer_control(view, image)
    pickers = picker_slot.container()
    colours = colour_slot.container()
    if not panel_draws(problem):
        with box:
            _target_control(names)
        with colours:
            _colour_controls()
    return problem, (head, pickers)


def sidebar_pickers(view: dict, places: tuple[DeltaGenerator, DeltaGenerator], owned: bool):
    """The method and class score in the sidebar, unless the panel draws them (`owned`), and
    the section's heading wherever the sidebar has a map control (these, the layer picker, or
    the fallback's target box and colours, which come with these)."""
    head, pickers = places
    if not owned:
        with pickers:
            method_controls()
    if not owned or saliency.method_info(view["method"]).layer:
        head.markdown("### Map")


def panel_choice(value: object, models: list[str]) -> tuple[str, str] | None:
    """What the panel's pickers reported (its trigger "choose": {key, value}), checked: a
    method of the registry, a class score, or one of `models` (the data set's public ones, as
    the explore route serves them); None for anything else."""
    if not isinstance(value, dict):
        return None
    key, chosen = value.get("key"), value.get("value")
    allowed = {state.METHOD: saliency_methods(), state.SCORE: state.SCORES, state.MODEL: models}
    if isinstance(key, str) and isinstance(chosen, str) and chosen in allowed.get(key, ()):
        return key, chosen
    return None


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
