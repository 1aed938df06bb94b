"""Classroom: eight short lessons on sensitivity analysis, run live on the model chosen in Explore.

Each lesson shows its formula beside the live numbers and says in two sentences what to notice.
Drawn by `render_view`, which the page file `page_files/classroom.py` calls.
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from dashboard import cache, render, sources, state
from dashboard import classroom_cache as lessons
from dashboard.render import Style
from pretrained.images import ImageError, decode_image28
from saliency.metrics import spearman

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
ABS = Style(signed=False, cmap="inferno", alpha=0.5, clip=100.0, shared=False)
SIGNED = Style(signed=True, cmap="RdBu_r", alpha=0.5, clip=100.0, shared=False)
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


def notice(text: str) -> None:
    st.info(f"**What to notice.** {text}")


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


def _map(m: np.ndarray, style: Style, caption: str, image: np.ndarray | None = None) -> None:
    lo, hi = style.range([m])
    render.show(render.picture(m, lo, hi, style, image=image, scale=8), caption)


# --- lessons --------------------------------------------------------------------------------


def _most_salient(jac: np.ndarray) -> None:
    row, col = np.unravel_index(int(np.abs(jac).argmax()), jac.shape)
    st.session_state["nudge_row"], st.session_state["nudge_col"] = int(row), int(col)


def lesson_nudge(ctx: dict, controls) -> None:
    jac = cache.class_maps(ctx["model"], ctx["image"], "gradient", "logit", False)[ctx["target"]]
    if "nudge_row" not in st.session_state:
        _most_salient(jac)
    with controls:
        c1, c2, c3, c4 = st.columns([1, 1, 2, 1], vertical_alignment="bottom")
        c1.number_input("Row i", 0, 27, step=1, key="nudge_row")
        c2.number_input("Column j", 0, 27, step=1, key="nudge_col")
        c3.slider("Δ (change of the pixel)", -1.0, 1.0, 0.2, step=0.05, key="nudge_delta")
        c4.button("Most salient pixel", key="nudge_reset", on_click=_most_salient, args=(jac,))
    row, col = int(st.session_state["nudge_row"]), int(st.session_state["nudge_col"])
    delta = float(st.session_state["nudge_delta"])
    deltas = tuple(np.round(np.linspace(-1, 1, 41), 4).tolist())
    res = lessons.nudge(ctx["model"], ctx["image"], ctx["target"], row, col, deltas + (delta,))
    predicted, actual = float(res["predicted"][-1]), float(res["actual"][-1])
    left, right = st.columns([1, 1])
    with left:
        st.latex(
            r"z_c(x + \Delta\, e_{ij}) - z_c(x) \;\approx\; \Delta \cdot J_{ij},"
            r"\qquad J_{ij} = \frac{\partial z_c}{\partial x_{ij}}"
        )
        m1, m2, m3 = st.columns(3)
        m1.metric("Predicted Δ·J_ij", f"{predicted:+.4f}")
        m2.metric("Actual change", f"{actual:+.4f}")
        m3.metric("Error", f"{actual - predicted:+.4f}")
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
    st.session_state["fd_run"] = st.session_state.get("fd_run", 0) + 1


def lesson_autograd(ctx: dict, controls) -> None:
    with controls:
        st.button("Time again", key="fd_again", on_click=_time_again)
    res = lessons.autograd_vs_fd(
        ctx["model"], ctx["image"], ctx["target"], st.session_state.get("fd_run", 0)
    )
    left, right = st.columns([1, 1])
    with left:
        st.latex(
            r"\frac{\partial z_c}{\partial x_j} \approx "
            r"\frac{z_c(x + h e_j) - z_c(x - h e_j)}{2h},\quad h = 6\cdot 10^{-6}"
        )
        ratio = res["fd_ms"] / res["autograd_ms"]
        m1, m2, m3 = st.columns(3)
        m1.metric("Autograd (1 backward)", f"{res['autograd_ms']:.1f} ms")
        m2.metric(f"Finite differences ({res['forwards']} forwards)", f"{res['fd_ms']:.0f} ms")
        m3.metric("Ratio", f"{ratio:.0f}×")
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
            _map(res["autograd"], SIGNED, "Autograd")
        with c2:
            _map(res["fd"], SIGNED, "Finite differences")
        with c3:
            _map(np.abs(res["autograd"] - res["fd"]), ABS, "|difference|")
    notice(
        "Both give the same map wherever the model is smooth, but autograd needs one backward "
        "pass where finite differences need 2·784 forward passes. Where they differ the model "
        "has a corner (a ReLU at 0, max-pool ties on a flat black background): there neither "
        "is 'the' derivative. Finite differences are the right tool only to check autograd, or "
        "for a model that isn't differentiable (a tree, a black-box service)."
    )


def _confident(model: str, dataset: str) -> None:
    probs = cache.test_set_probabilities(model, dataset)
    state.put("source", "test")
    state.put("index", int(np.flatnonzero(probs.max(1) > 0.9999)[0]))


def lesson_saturation(ctx: dict, controls) -> None:
    with controls:
        st.button(
            "Show a confident test image",
            key="saturation_confident",
            on_click=_confident,
            args=(ctx["model"], ctx["dataset"]),
        )
    logit = cache.class_maps(ctx["model"], ctx["image"], "gradient", "logit", True)[ctx["target"]]
    prob = cache.class_maps(ctx["model"], ctx["image"], "gradient", "probability", True)
    prob = prob[ctx["target"]]
    p = float(ctx["probs"][ctx["target"]])
    left, right = st.columns([1, 1])
    with left:
        st.latex(
            r"\frac{\partial p_c}{\partial x} = p_c\Big(\frac{\partial z_c}{\partial x} - "
            r"\sum_k p_k \frac{\partial z_k}{\partial x}\Big) \;\to\; 0 \text{ as } p_c \to 1"
        )
        m1, m2, m3 = st.columns(3)
        m1.metric(f"p (class {ctx['target']})", f"{p:.6f}")
        m2.metric("max |∂z/∂x| (logit)", f"{logit.max():.3g}")
        m3.metric("max |∂p/∂x| (probability)", f"{prob.max():.3g}")
        st.caption(f"1 − p = {1 - p:.2e}. Each map on its own colour scale.")
    with right:
        c1, c2 = st.columns(2)
        with c1:
            _map(logit, ABS, "Logit map |∂z_c/∂x|")
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
        other = st.number_input("Second test image", 0, len(ds) - 1, step=1, key="linear_other")
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
                _map(mp, ABS, f"{m} · {name}", image=img)
    notice(
        "The linear model's map is one template per class, |W_c|/σ, the same for every image: "
        "it says which pixels the class weighs, never why this image got its score. A CNN's "
        "gradient changes with the image, because its slope depends on where it is evaluated."
    )


SANITY_LABELS = {
    "gradient": "Gradient",
    "smoothgrad": "SmoothGrad",
    "integrated_gradients": "Integrated Gradients",
    "input_x_gradient": "Input × Gradient",
    "guided_backprop": "Guided Backprop",
    "guided_grad_cam": "Guided Grad-CAM",
    "grad_cam": "Grad-CAM",
    "lrp": "LRP (ε-z⁺)",
}
SANITY_ROW = 4  # methods side by side
# Adebayo et al. 2018, cascading randomisation (their MNIST CNN and Inception v3 figures): what
# each method's rank correlation with the original map does as the layers are randomised from
# the top down. LRP is not in the paper; Sixt et al. 2020 showed that z+-rule LRP, like
# Guided Backprop, converges to a map that ignores the later layers.
PAPER = {
    "gradient": "falls towards 0",
    "smoothgrad": "falls towards 0",
    "integrated_gradients": "stays ≈ 0.99",
    "input_x_gradient": "stays ≈ 0.99",
    "guided_backprop": "nearly unchanged until the lowest layers are randomised",
    "guided_grad_cam": "nearly unchanged until the lowest layers are randomised",
    "grad_cam": "changes once the top layer is randomised",
    "lrp": "not tested there (Sixt et al. 2020: z⁺ LRP ignores the later layers)",
}


def rho_text(spearman, *, spread: bool = True) -> str:
    """Mean (± std) of the examples' ρ; a flat map (one value everywhere, as Grad-CAM's ReLU
    can leave) has no ranking, so its ρ is undefined and the mean is over the others."""
    v = np.asarray(spearman, dtype=float)
    flat = int(np.isnan(v).sum())
    if flat == len(v):
        return "— (every map flat)"
    text = f"{np.nanmean(v):.2f}" + (f" ± {np.nanstd(v):.2f}" if spread else "")
    return text + (f" · {flat} of {len(v)} flat" if flat else "")


def _sanity_chart(steps: list[dict]) -> dict:
    """A Vega-Lite spec: mean Spearman ρ and SSIM per step, with a ±1 std band."""
    rows = []
    for i, s in enumerate(steps):
        for metric, key in (("Spearman ρ", "spearman"), ("SSIM", "ssim")):
            v = np.asarray(s[key], dtype=float)
            mean, sd = float(np.nanmean(v)), float(np.nanstd(v))
            rows.append(
                {"step": i, "metric": metric, "mean": mean, "lo": mean - sd, "hi": mean + sd}
            )
    x = {"field": "step", "type": "ordinal", "title": "layers randomised (0 = none)"}
    colour = {
        "field": "metric",
        "type": "nominal",
        "scale": {"domain": ["Spearman ρ", "SSIM"], "range": ["#1f5fa8", "#e07b00"]},
        "legend": {"orient": "bottom", "title": None},
    }
    return {
        "data": {"values": rows},
        "height": 200,
        "layer": [
            {
                "mark": {"type": "area", "opacity": 0.2},
                "encoding": {"x": x, "y": {"field": "lo", "type": "quantitative"},
                             "y2": {"field": "hi"}, "color": colour},
            },
            {
                "mark": {"type": "line", "point": True},
                "encoding": {
                    "x": x,
                    "y": {"field": "mean", "type": "quantitative", "title": None,
                          "scale": {"domain": [-0.2, 1.0]}},
                    "color": colour,
                },
            },
        ],
    }  # fmt: skip


def _sanity_grid(ctx: dict, found: dict) -> None:
    """Each method's chart of ρ and SSIM per step, and its maps at the first, second and last
    step; or why the method can't explain the model."""
    methods = list(found)
    for start in range(0, len(methods), SANITY_ROW):
        row = methods[start : start + SANITY_ROW]
        for col, method in zip(st.columns(SANITY_ROW), row, strict=False):
            with col:
                st.markdown(f"**{SANITY_LABELS[method]}**")
                steps = found[method]
                if isinstance(steps, str):
                    who = render.plain(cache.display_name(ctx["model"]))
                    st.warning(f"Can't explain {who}: {render.plain(steps)}.")
                    continue
                chart = _sanity_chart(steps)
                st.vega_lite_chart(chart, width="stretch", key=f"sanity_chart_{method}")
                last = len(steps) - 1
                for i in sorted({0, 1, last}):
                    s = steps[i]
                    label = "original" if i == 0 else f"to {s['step']}"
                    _map(s["map"], ABS, f"{label} · ρ {rho_text(s['spearman'], spread=False)}")


def _sanity_tables(found: dict, runs: dict) -> None:
    """Our ρ beside the paper's verdict for each method, and the steps re-initialised."""
    gradient_steps = runs["gradient"]
    table = pd.DataFrame(
        {
            "method": [SANITY_LABELS[m] for m in found],
            "Adebayo et al. 2018": [PAPER[m] for m in found],
            "ours: ρ after the top layer": [
                "doesn't apply" if m not in runs else rho_text(runs[m][1]["spearman"])
                for m in found
            ],
            "ours: ρ, all layers random": [
                "doesn't apply" if m not in runs else rho_text(runs[m][-1]["spearman"])
                for m in found
            ],
        }
    )
    st.dataframe(table, hide_index=True, width="stretch", key="sanity_table")
    steps_df = pd.DataFrame(
        {
            "step": [f"{i}. {s['step']}" for i, s in enumerate(gradient_steps)],
            "re-initialised with": [s["init"] or "—" for s in gradient_steps],
            "note": [s["note"] for s in gradient_steps],
        }
    )
    st.dataframe(steps_df, hide_index=True, width="stretch", key="sanity_steps")


def lesson_sanity(ctx: dict, controls) -> None:
    with controls:
        n = st.radio(
            "Images averaged",
            (1, 5, 10),
            index=1,
            key="sanity_n",
            horizontal=True,
            format_func=lambda k: "this image" if k == 1 else f"this image and {k - 1} more",
            help="The image chosen in Explore, then the data set's first other test images; "
            "the band around each line is ±1 standard deviation over them.",
        )
    ds = cache.dataset(ctx["dataset"])
    rest = [k for k in range(n) if k != ctx["index"]][: n - 1]  # never the chosen one twice
    others = ds.images[rest, 0].numpy()
    images = np.concatenate([ctx["image"][None], others]).astype(np.float32)
    found = {m: lessons.sanity_or_why(ctx["model"], images, m) for m in SANITY_LABELS}
    runs = {m: steps for m, steps in found.items() if not isinstance(steps, str)}
    st.latex(
        r"\rho_{\text{Spearman}}\big(|A(x)|_{\theta},\;|A(x)|_{\tilde\theta_{L..l}}\big)"
        r"\quad\text{for each method } A \text{ below}"
    )
    _sanity_grid(ctx, found)
    _sanity_tables(found, runs)
    st.caption(
        f"Layers re-initialised cumulatively from the output down, in the order forward uses "
        f"them (on deep copies; the shared {render.plain(ctx['model'])} is untouched). Maps are "
        "absolute values; each image's target is the class the original model predicts; "
        "Grad-CAM at the automatic layer, LRP with z⁺ on convolutions and ε on linear layers. "
        "SSIM on maps scaled to [0, 1]. A flat map (the same value everywhere: Grad-CAM's ReLU "
        "can leave nothing) has no ranking, so ρ is averaged over the other images. A layer "
        "without its own reset_parameters (inside TorchScript or an exported program) gets "
        "N(0, 0.05²)."
    )
    notice(
        "Gradient and SmoothGrad change beyond recognition as the network is destroyed: they "
        "depend on what the model learned. Integrated Gradients and Input × Gradient barely "
        "move, because both multiply by the input: on MNIST most pixels are exactly 0, so "
        "their maps are 0 wherever the image is black, whatever the weights, and what is left "
        "is the digit's outline. The paper's sharpest contrast is Guided Backprop against "
        "Grad-CAM: Guided Backprop drops every negative gradient at each ReLU, which makes it "
        "redraw the image's edges whatever the top layers hold, while Grad-CAM is made of the "
        "top layers' gradients and changes at once. Compare the paper's column with ours. A "
        "map that survives the destruction of the model shows the image, not the model."
    )


def lesson_deletion(ctx: dict, controls) -> None:
    with controls:
        start = st.radio(
            "Insertion starts from",
            ("blank", "blurred"),
            key="deletion_start",
            horizontal=True,
            format_func={"blank": "a black image", "blurred": "the blurred image (σ = 3)"}.get,
        )
    res = lessons.faithfulness(ctx["model"], ctx["image"], ctx["target"], start)
    left, right = st.columns([1, 2])
    with left:
        st.latex(r"\mathrm{AUC} = \int_0^1 p_c\big(x^{(t)}\big)\,dt \;\;\text{(trapezoid rule)}")
        rows = [
            ("deletion ↓ better", res["deletion_auc"], res["deletion_random_auc"]),
            ("insertion ↑ better", res["insertion_auc"], res["insertion_random_auc"]),
        ]
        st.dataframe(
            pd.DataFrame(rows, columns=["curve", "gradient order", "random order"]),
            hide_index=True,
            width="stretch",
        )
        st.caption(
            f"Probability of class {ctx['target']} as pixels are set to 0 (deletion) or revealed "
            f"(insertion), 14 at a time; random: mean of {lessons.N_RANDOM_ORDERS} orders."
        )
    with right:
        n = len(res["fractions"])
        frames = []
        for kind in ("deletion", "insertion"):
            for order, key in (("gradient", kind), ("random", f"{kind}_random")):
                frames.append(
                    pd.DataFrame(
                        {
                            "fraction of pixels": res["fractions"],
                            "probability": res[key],
                            "order": [order] * n,
                            "curve": [kind] * n,
                        }
                    )
                )
        chart = (
            alt.Chart(pd.concat(frames))
            .mark_line()
            .encode(
                x="fraction of pixels:Q",
                y=alt.Y("probability:Q", scale=alt.Scale(domain=[0, 1])),
                color=alt.Color("order:N", title=None),
                column=alt.Column("curve:N", title=None),
            )
            .properties(height=300, width=300)
        )
        st.altair_chart(chart)
    notice(
        "If the map points at the evidence, deleting its top pixels first makes the probability "
        "fall faster than a random order (lower deletion AUC), and revealing them first makes it "
        "rise faster (higher insertion AUC). Setting pixels to 0 creates images unlike any "
        "training digit, so the curves also measure how the model copes with that."
    )


def _ranking_table(r: dict, scaled: bool) -> pd.DataFrame:
    learned = r["learned_std"] if scaled else r["learned"]
    analytic = r["analytic_std"] if scaled else r["analytic"]
    order = np.argsort(-learned, kind="stable")
    return pd.DataFrame(
        {
            "rank": np.arange(1, 4),
            "feature": [f"{r['features'][j]} ({r['units'][j]})" for j in order],
            "learned mean |∂y/∂x|" + (" · std" if scaled else ""): learned[order],
            "analytic" + (" · std" if scaled else ""): analytic[order],
        }
    )


def lesson_tabular(ctx: dict, controls) -> None:
    cubic = lessons.tabular_ranking("cubic")
    left, right = st.columns([1, 1])
    with left:
        st.latex(
            r"y = 3x_1^3 - x_2^2 + 0\cdot x_3 + \varepsilon,\quad "
            r"\Big|\frac{\partial y}{\partial x}\Big| = (|9x_1^2|,\ |2x_2|,\ 0)"
        )
        st.caption(
            "x ~ Uniform(−1, 1), 2000 rows, seed 0; a 3-32-32-1 tanh MLP that standardises its "
            f"inputs inside forward, trained here in about a second (RMSE {cubic['rmse']:.3f})."
        )
    with right:
        st.dataframe(_ranking_table(cubic, False), hide_index=True, width="stretch")

    st.markdown("#### Caveat 1: units. The same x1, in millimetres")
    mm = lessons.tabular_ranking("cubic-mm")
    c1, c2 = st.columns(2)
    with c1:
        st.latex(
            r"x_1^{\mathrm{mm}} = 1000\,x_1 \Rightarrow "
            r"\frac{\partial y}{\partial x_1^{\mathrm{mm}}} = "
            r"\frac{1}{1000}\frac{\partial y}{\partial x_1}"
        )
        st.markdown("Ranked raw:")
        st.dataframe(_ranking_table(mm, False), hide_index=True, width="stretch")
    with c2:
        st.latex(r"\text{scaled: } \overline{|\partial y/\partial x_j|}\cdot \mathrm{std}(x_j)")
        st.markdown('Scaled by each feature\'s std (`scale="std"`):')
        st.dataframe(_ranking_table(mm, True), hide_index=True, width="stretch")

    st.markdown("#### Caveat 2: correlated inputs")
    corr = lessons.tabular_ranking("correlated")
    c1, c2 = st.columns(2)
    with c1:
        st.latex(r"y = 2x_1 + \varepsilon,\qquad x_2 = x_1 + 0.1\,\eta")
        st.markdown(
            f"corr(x1, x2) = **{corr['corr'][0, 1]:.3f}**; corr(x2, y) = "
            f"**{corr['corr_y'][1]:.3f}**: x2 alone predicts y almost as well as x1."
        )
    with c2:
        st.dataframe(_ranking_table(corr, False), hide_index=True, width="stretch")
    notice(
        "A gradient is per unit of input: the same feature in millimetres looks 1000 times less "
        "important until sensitivities are scaled by each feature's spread. And with correlated "
        "inputs the model leans on one; the other looks unimportant although it carries the "
        "same information: a low rank describes the model, not the world."
    )


# The bench the lesson reads: four methods of three families, four metrics that disagree, one
# test image of each class (a minute of a core, once per model: saved for every visitor).
TRUST_METHODS = ("gradient", "integrated_gradients", "guided_backprop", "grad_cam")
TRUST_METRICS = ("sparseness", "deletion_auc", "road_morf", "random_logit")


def lesson_trust(ctx: dict, controls) -> None:
    from dashboard.bench_cache import Request
    from dashboard.views import bench as bench_view

    st.markdown(
        "Every method gives a map, and they differ. Metrics score maps without a ground truth, "
        "each by one idea of what a good map is: **few bright pixels** (Sparseness), **the "
        "class falls when its pixels go** (Deletion, ROAD), **another class gets another map** "
        "(Random Logit). Read each score beside three **controls** that know nothing about the "
        "model: a random map, the edge detector, and a blurred copy of the first map."
    )
    st.latex(
        r"\tau_b(a, b) = \frac{\sum_{i<j} \operatorname{sign}(a_i - a_j)\,"
        r"\operatorname{sign}(b_i - b_j)}{\sqrt{(n_0 - n_a)(n_0 - n_b)}}"
    )
    st.caption(
        "Kendall's τ between two metrics' scores a and b of the methods: 1 when they rank the "
        "methods alike, −1 when in reverse (n₀ pairs; n_a, n_b the tied ones)."
    )
    req = Request(ctx["model"], ctx["dataset"], 1, TRUST_METHODS, TRUST_METRICS)
    result = bench_view.result_or_offer(req, "trust", "Score the four methods")
    if result is None:
        return
    bench_view.show_table(result, "trust")
    notice(
        "The metrics disagree: a method that wins on one can lose on another, because each "
        "measures a different idea of a good map (the τ matrix shows how much). And removal "
        "scores reward blur and edges: when the edge detector, which never looked at the "
        "model, beats a method, that score says nothing about the method. Trust a method on "
        "a metric only where it beats every control. The page *Which map can I trust?* runs "
        "the same bench with more methods, metrics and images."
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
        st.session_state["lesson_pick"] = view["lesson"]
        head.selectbox(
            "Lesson", state.LESSONS, key="lesson_pick", format_func=TITLES.get,
            label_visibility="collapsed",
            on_change=lambda: state.put("lesson", st.session_state["lesson_pick"]),
        )  # fmt: skip
    else:
        head.title("Classroom")
    toggle.toggle(
        "Presentation mode",
        key="present",
        help="Large type, no sidebar, controls tucked into an expander below the lesson: for "
        "a projector.",
    )
    if not present:
        st.radio("Lesson", state.LESSONS, key="lesson", horizontal=True, format_func=TITLES.get)
    if sources.is_workspace(view["dataset"]):
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
