"""Classroom lessons 5 to 8: does a map show the model? The sanity check (Adebayo et al.
2018), deletion and insertion, tabular sensitivity's caveats, and which map to trust.
`dashboard.views.classroom` draws them, as it draws lessons 1 to 4."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from dashboard import cache, render
from dashboard import classroom_cache as lessons
from dashboard.views.lesson_kit import ABS, notice, show_map

# Session keys of this page.
SANITY_TABLE = "sanity_table"
SANITY_STEPS = "sanity_steps"
SANITY_N = "sanity_n"
DELETION_START = "deletion_start"
SANITY_CHART = "sanity_chart"  # a prefix: one chart per method
TRUST = "trust"  # the prefix of the trust lesson's bench widgets (bench.show_table...)


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
                st.vega_lite_chart(chart, width="stretch", key=f"{SANITY_CHART}_{method}")
                last = len(steps) - 1
                for i in sorted({0, 1, last}):
                    s = steps[i]
                    label = "original" if i == 0 else f"to {s['step']}"
                    show_map(s["map"], ABS, f"{label} · ρ {rho_text(s['spearman'], spread=False)}")


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
    st.dataframe(table, hide_index=True, width="stretch", key=SANITY_TABLE)
    steps_df = pd.DataFrame(
        {
            "step": [f"{i}. {s['step']}" for i, s in enumerate(gradient_steps)],
            "re-initialised with": [s["init"] or "—" for s in gradient_steps],
            "note": [s["note"] for s in gradient_steps],
        }
    )
    st.dataframe(steps_df, hide_index=True, width="stretch", key=SANITY_STEPS)


def lesson_sanity(ctx: dict, controls) -> None:
    with controls:
        n = st.radio(
            "Images averaged",
            (1, 5, 10),
            index=1,
            key=SANITY_N,
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
            key=DELETION_START,
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
    result = bench_view.result_or_offer(req, TRUST, "Score the four methods")
    if result is None:
        return
    bench_view.show_table(result, TRUST)
    notice(
        "The metrics disagree: a method that wins on one can lose on another, because each "
        "measures a different idea of a good map (the τ matrix shows how much). And removal "
        "scores reward blur and edges: when the edge detector, which never looked at the "
        "model, beats a method, that score says nothing about the method. Trust a method on "
        "a metric only where it beats every control. The page *Which map can I trust?* runs "
        "the same bench with more methods, metrics and images."
    )
