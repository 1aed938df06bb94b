"""Classroom: eight short lessons on sensitivity analysis, run live on the model chosen in Explore.

Each lesson shows its formula beside the live numbers and says in two sentences what to notice.
Drawn by `render_view`, which the page file `page_files/classroom.py` calls. Lessons 1 to 4
(how a gradient works) live here, 5 to 8 (does a map show the model?) in `classroom_checks`.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from dashboard import cache, render, sources, state
from dashboard import classroom_cache as lessons
from dashboard.views.classroom_checks import (  # noqa: F401 (tests read PAPER, SANITY_LABELS here)
    PAPER,
    SANITY_LABELS,
    lesson_deletion,
    lesson_sanity,
    lesson_tabular,
    lesson_trust,
)
from dashboard.views.lesson_kit import ABS, SIGNED, formula, notice, show_map
from saliency.metrics import spearman
from sandbox.images import ImageError, decode_image28

# Session keys of this page.
NUDGE_ROW = "nudge_row"
NUDGE_COL = "nudge_col"
NUDGE_DELTA = "nudge_delta"
NUDGE_RESET = "nudge_reset"
FD_RUN = "fd_run"
FD_AGAIN = "fd_again"
SATURATION_CONFIDENT = "saturation_confident"
LINEAR_OTHER = "linear_other"
LESSON_PICK = "lesson_pick"


TITLES = {
    "nudge": "1 · Nudge a pixel",
    "autograd": "2 · Autograd vs finite differences",
    "saturation": "3 · Saturation",
    "linear": "4 · The linear model",
    "sanity": "5 · Sanity check",
    "deletion": "6 · Does the map point at what matters?",
    "tabular": "7 · Tabular sensitivity",
    "trust": "8 · Which map can I trust?",
}
PRESENTATION_CSS = """
<style>
section[data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"] {display: none;}
.block-container {max-width: 100% !important; padding: 3.5rem 2rem 2rem 2rem !important;}
[data-testid="stMarkdownContainer"] p, [data-testid="stMarkdownContainer"] li,
[data-testid="stCaptionContainer"], [data-testid="stAlertContainer"] p
  {font-size: 1.5rem !important;}
h1 {font-size: 3.2rem !important;} h2 {font-size: 2.5rem !important;}
[data-testid="stMetricValue"] {font-size: 2.8rem !important;}
.katex {font-size: 1.7em !important;}
</style>
"""


def _subject(view: dict) -> tuple[np.ndarray | None, int | None, str]:
    """The image chosen in Explore, its true class if known, and a short description."""
    i = _index(view)
    if i is not None:
        ds = cache.dataset(view["dataset"])
        return ds.images[i, 0].numpy(), int(ds.labels[i]), f"test image #{i}"
    try:
        image = decode_image28(view["image"]) if view["image"] else None
    except ImageError:
        image = None
    return image, None, "your drawing" if view["source"] == "draw" else "your upload"


def _index(view: dict) -> int | None:
    """The chosen test image's index, as `_subject` reads it; None for a drawing or upload."""
    if view["source"] != "test":
        return None
    i = int(view["index"])
    return i if i < len(cache.dataset(view["dataset"])) else 0  # a workspace's index


def _target(view: dict, probs: np.ndarray, true: int | None) -> int:
    if view["target"] == "true" and true is not None:
        return true
    if view["target"] in ("predicted", "true") or int(view["target"]) >= len(probs):
        return int(probs.argmax())
    return int(view["target"])


def _marked(rgb: np.ndarray, row: int, col: int, scale: int = render.SCALE) -> np.ndarray:
    """The picture with a green square around pixel (row, col)."""
    out = rgb.copy()
    r0, c0 = row * scale, col * scale
    r1, c1 = min(r0 + scale, out.shape[0]) - 1, min(c0 + scale, out.shape[1]) - 1
    for r, c in ((slice(r0, r1 + 1), c0), (slice(r0, r1 + 1), c1), (r0, slice(c0, c1 + 1))):
        out[r, c] = (0, 220, 0)
    out[r1, c0 : c1 + 1] = (0, 220, 0)
    return out


# --- lessons --------------------------------------------------------------------------------


def _most_salient(jac: np.ndarray) -> None:
    row, col = np.unravel_index(int(np.abs(jac).argmax()), jac.shape)
    st.session_state[NUDGE_ROW], st.session_state[NUDGE_COL] = int(row), int(col)


def lesson_nudge(ctx: dict, controls) -> None:
    jac = cache.class_maps(ctx["model"], ctx["image"], "gradient", "logit", False)[ctx["target"]]
    if NUDGE_ROW not in st.session_state:
        _most_salient(jac)
    with controls:
        c1, c2, c3, c4 = st.columns([1, 1, 2, 1], vertical_alignment="bottom")
        c1.number_input("Row i", 0, 27, step=1, key=NUDGE_ROW)
        c2.number_input("Column j", 0, 27, step=1, key=NUDGE_COL)
        c3.slider("Δ (change of the pixel)", -1.0, 1.0, 0.2, step=0.05, key=NUDGE_DELTA)
        c4.button("Most salient pixel", key=NUDGE_RESET, on_click=_most_salient, args=(jac,))
    row, col = int(st.session_state[NUDGE_ROW]), int(st.session_state[NUDGE_COL])
    delta = float(st.session_state[NUDGE_DELTA])
    deltas = tuple(np.round(np.linspace(-1, 1, 41), 4).tolist())
    res = lessons.nudge(ctx["model"], ctx["image"], ctx["target"], row, col, deltas + (delta,))
    predicted, actual = float(res["predicted"][-1]), float(res["actual"][-1])
    left, right = st.columns([1, 1])
    with left:
        formula(
            r"z_c(x + \Delta\, e_{ij}) - z_c(x) \;\approx\; \Delta \cdot J_{ij},"
            r"\qquad J_{ij} = \frac{\partial z_c}{\partial x_{ij}}",
            ("Predicted Δ·J_ij", f"{predicted:+.4f}"),
            ("Actual change", f"{actual:+.4f}"),
            ("Error", f"{actual - predicted:+.4f}"),
        )
        st.caption(
            f"Pixel ({row}, {col}) is {ctx['image'][row, col]:.3f}; J_ij = {res['gradient']:+.4f} "
            f"(logit of class {ctx['target']}, {ctx['model']}). The nudged pixel is not clipped "
            "to [0, 1]."
        )
        rgb = render.picture(jac, *SIGNED.range([jac]), SIGNED, scale=8)
        render.show(_marked(rgb, row, col, 8), "Signed gradient map; the green square: (i, j)")
    with right:
        df = pd.DataFrame(
            {
                "Δ": np.tile(res["deltas"][:-1], 2),
                "change of the logit": np.r_[res["predicted"][:-1], res["actual"][:-1]],
                "curve": ["predicted Δ·J_ij"] * 41 + ["actual"] * 41,
            }
        )
        lines = (
            alt.Chart(df)
            .mark_line(point=True)
            .encode(x="Δ:Q", y="change of the logit:Q", color=alt.Color("curve:N", title=None))
        )
        rule = alt.Chart(pd.DataFrame({"Δ": [delta]})).mark_rule(strokeDash=[4, 4]).encode(x="Δ:Q")
        st.altair_chart((lines + rule).properties(height=360), width="stretch")
    notice(
        "For small Δ the two agree: the gradient is the slope of the score along that pixel. "
        "As Δ grows the actual curve bends away (ReLUs switch, pooling picks another pixel), "
        "except for the linear model, where the prediction is exact for every Δ."
    )


def _time_again() -> None:
    st.session_state[FD_RUN] = st.session_state.get(FD_RUN, 0) + 1


def lesson_autograd(ctx: dict, controls) -> None:
    with controls:
        st.button("Time again", key=FD_AGAIN, on_click=_time_again)
    res = lessons.autograd_vs_fd(
        ctx["model"], ctx["image"], ctx["target"], st.session_state.get(FD_RUN, 0)
    )
    left, right = st.columns([1, 1])
    with left:
        formula(
            r"\frac{\partial z_c}{\partial x_j} \approx "
            r"\frac{z_c(x + h e_j) - z_c(x - h e_j)}{2h},\quad h = 6\cdot 10^{-6}",
            ("Autograd (1 backward)", f"{res['autograd_ms']:.1f} ms"),
            (f"Finite differences ({res['forwards']} forwards)", f"{res['fd_ms']:.0f} ms"),
            ("Ratio", f"{res['fd_ms'] / res['autograd_ms']:.0f}×"),
        )
        st.markdown(
            f"Largest difference between the maps: **{res['max_diff']:.2e}** (largest |J| "
            f"{res['max_abs']:.3f}); on the digit (pixels > 0): {res['max_diff_digit']:.2e}, on "
            f"the black background: {res['max_diff_background']:.2e}."
        )
        st.caption(
            f"Both computed live on a float64 copy of {ctx['model']}, timed on this server "
            "(autograd: best of 5). 'Time again' measures once more."
        )
    with right:
        c1, c2, c3 = st.columns(3)
        with c1:
            show_map(res["autograd"], SIGNED, "Autograd")
        with c2:
            show_map(res["fd"], SIGNED, "Finite differences")
        with c3:
            show_map(np.abs(res["autograd"] - res["fd"]), ABS, "|difference|")
    notice(
        "Both give the same map wherever the model is smooth, but autograd needs one backward "
        "pass where finite differences need 2·784 forward passes. Where they differ the model "
        "has a corner (a ReLU at 0, max-pool ties on a flat black background): there neither "
        "is 'the' derivative. Finite differences are the right tool only to check autograd, or "
        "for a model that isn't differentiable (a tree, a black-box service)."
    )


def _confident(model: str, dataset: str) -> None:
    probs = cache.test_set_probabilities(model, dataset)
    state.put(state.SOURCE, "test")
    state.put(state.INDEX, int(np.flatnonzero(probs.max(1) > 0.9999)[0]))


def lesson_saturation(ctx: dict, controls) -> None:
    with controls:
        st.button(
            "Show a confident test image",
            key=SATURATION_CONFIDENT,
            on_click=_confident,
            args=(ctx["model"], ctx["dataset"]),
        )
    logit = cache.class_maps(ctx["model"], ctx["image"], "gradient", "logit", True)[ctx["target"]]
    prob = cache.class_maps(ctx["model"], ctx["image"], "gradient", "probability", True)
    prob = prob[ctx["target"]]
    p = float(ctx["probs"][ctx["target"]])
    left, right = st.columns([1, 1])
    with left:
        formula(
            r"\frac{\partial p_c}{\partial x} = p_c\Big(\frac{\partial z_c}{\partial x} - "
            r"\sum_k p_k \frac{\partial z_k}{\partial x}\Big) \;\to\; 0 \text{ as } p_c \to 1",
            (f"p (class {ctx['target']})", f"{p:.6f}"),
            ("max |∂z/∂x| (logit)", f"{logit.max():.3g}"),
            ("max |∂p/∂x| (probability)", f"{prob.max():.3g}"),
        )
        st.caption(f"1 − p = {1 - p:.2e}. Each map on its own colour scale.")
    with right:
        c1, c2 = st.columns(2)
        with c1:
            show_map(logit, ABS, "Logit map |∂z_c/∂x|")
        with c2:
            # One scale for both: the probability map drawn on the logit map's scale.
            lo, hi = ABS.range([logit])
            render.show(render.picture(prob, lo, hi, ABS, scale=8), "Probability map, same scale")
    notice(
        "When the model is sure, p is stuck near 1 and small changes of any pixel barely move "
        "it, so the probability map goes flat although the logit map still shows structure. "
        "A flat probability map means 'saturated', not 'no pixel matters'."
    )


def lesson_linear(ctx: dict, controls) -> None:
    dataset = ctx["dataset"]
    linear, cnn = f"{dataset}-linear", f"{dataset}-cnn"
    ds = cache.dataset(dataset)
    with controls:
        other = st.number_input("Second test image", 0, len(ds) - 1, step=1, key=LINEAR_OTHER)
    b = ds.images[int(other), 0].numpy()
    a = ctx["image"]
    c = ctx["target"]
    maps = {
        (m, k): cache.class_maps(m, img, "gradient", "logit", True)[c]
        for m in (linear, cnn)
        for k, img in (("a", a), ("b", b))
    }
    w = lessons.linear_map_facts(linear, c)["w_over_std"]
    lin_diff = float(np.abs(maps[linear, "a"] - maps[linear, "b"]).max())
    w_diff = float(np.abs(maps[linear, "a"] - np.abs(w)).max())
    cnn_diff = float(np.abs(maps[cnn, "a"] - maps[cnn, "b"]).max())
    cnn_rho = spearman(maps[cnn, "a"], maps[cnn, "b"])
    left, right = st.columns([1, 1])
    with left:
        st.latex(
            r"z = W\,\frac{x - \mu}{\sigma} + b \;\Rightarrow\; "
            r"\Big|\frac{\partial z_c}{\partial x}\Big| = \frac{|W_c|}{\sigma}"
            r"\quad\text{(no } x \text{ in it)}"
        )
        st.markdown(
            f"**{linear}**, class {c}: the maps of {ctx['described']} and test image #{other} "
            f"are **identical**: max |difference| = {lin_diff:.1e}; against |W_c|/σ read from "
            f"the weights: {w_diff:.1e}."
        )
        st.markdown(
            f"**{cnn}**, same class: max |difference| = {cnn_diff:.3g}, Spearman ρ = "
            f"{cnn_rho:.2f}: its map depends on the image."
        )
    with right:
        cols = st.columns(4)
        for col, ((m, k), mp) in zip(cols, maps.items(), strict=True):
            with col:
                name = ctx["described"] if k == "a" else f"#{other}"
                img = a if k == "a" else b
                show_map(mp, ABS, f"{m} · {name}", image=img)
    notice(
        "The linear model's map is one template per class, |W_c|/σ, the same for every image: "
        "it says which pixels the class weighs, never why this image got its score. A CNN's "
        "gradient changes with the image, because its slope depends on where it is evaluated."
    )


LESSONS = {
    "nudge": lesson_nudge,
    "autograd": lesson_autograd,
    "saturation": lesson_saturation,
    "linear": lesson_linear,
    "sanity": lesson_sanity,
    "deletion": lesson_deletion,
    "tabular": lesson_tabular,
    "trust": lesson_trust,
}


def render_view() -> None:
    view = state.current()
    present = bool(view["present"])
    if present:
        st.markdown(PRESENTATION_CSS, unsafe_allow_html=True)
    head, toggle = st.columns([3, 1], vertical_alignment="bottom")
    if present:  # a projector's 720 lines: the lesson itself above the fold, its picker small
        # A widget of its own (the radio's key keeps the radio's state), following the view.
        st.session_state[LESSON_PICK] = view["lesson"]
        head.selectbox(
            "Lesson", state.LESSONS, key=LESSON_PICK, format_func=TITLES.get,
            label_visibility="collapsed",
            on_change=lambda: state.put(state.LESSON, st.session_state[LESSON_PICK]),
        )  # fmt: skip
    else:
        head.title("Classroom")
    toggle.toggle(
        "Presentation mode",
        key=state.PRESENT,
        help="Large type, no sidebar, controls tucked into an expander below the lesson: for "
        "a projector.",
    )
    if not present:
        st.radio("Lesson", state.LESSONS, key=state.LESSON, horizontal=True, format_func=TITLES.get)
    if not sources.source(view["dataset"]).bundled:
        st.info(
            "The lessons are written for the bundled models: pick MNIST digits or Fashion-MNIST "
            "as the data set in the sidebar. Your workspace stays one click away."
        )
        return
    image, true, described = _subject(view)
    if image is None:
        st.info("No image yet: choose, upload or draw one in Explore.")
        return
    model = view["model"]
    probs = cache.probabilities(model, image)
    target = _target(view, probs, true)
    ctx = {
        "model": model,
        "dataset": view["dataset"],
        "image": image,
        "target": target,
        "probs": probs,
        "described": described,
        "index": _index(view),
    }
    live_on = (
        f"Live on **{render.plain(cache.display_name(model))}** and {described} (class "
        f"{target}, p = {probs[target]:.3f}), as chosen in Explore"
        + (". Turn presentation mode off to change them." if present else " and the sidebar.")
    )
    lesson = view["lesson"]
    if not present:
        st.caption(live_on)
        st.header(TITLES[lesson])
        LESSONS[lesson](ctx, st.container())
        return
    # The lesson first; its controls and what it runs on below it, folded away.
    body = st.container()
    controls = st.expander("Controls", expanded=False)
    st.caption(live_on)
    with body:
        st.header(TITLES[lesson])
        LESSONS[lesson](ctx, controls)
