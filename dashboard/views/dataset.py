"""Data-set sensitivity: how much does the model use each pixel, over a whole test set?"""

from __future__ import annotations

import time

import numpy as np
import streamlit as st

import saliency
from dashboard import cache, render, state
from dashboard.render import Style
from dashboard.views.explore import class_label

SIZES = (10_000, 1_000)
ABS = Style(signed=False, cmap="inferno", alpha=0.5, clip=99.0, shared=True)
SIGNED = Style(signed=True, cmap="RdBu_r", alpha=0.5, clip=99.0, shared=True)


def grid(maps: np.ndarray, style: Style, names: tuple[str, ...], caption: str) -> None:
    """K maps on one shared scale, five to a row, with the scale's range under them."""
    lo, hi = style.range(list(maps))
    cols = st.columns(5)
    for k, m in enumerate(maps):
        with cols[k % 5]:
            render.show(render.picture(m, lo, hi, style, scale=4), class_label(k, names))
    render.show(render.colorbar(lo, hi, style.cmap, width=200), None)
    st.caption(f"{caption} One shared scale ({lo:.3g} … {hi:.3g}).")


def show_summary(summary: saliency.SensitivitySummary, names: tuple[str, ...]) -> None:
    own = summary.own_class[:, 0].cpu().numpy()  # (K, 28, 28)
    every = summary.all_examples[:, 0].cpu().numpy()
    signed = summary.signed_own_class[:, 0].cpu().numpy()
    overall = summary.overall[0].cpu().numpy()
    st.markdown("**Each class, over the images of that class**: mean |∂ logit_c / ∂x|")
    grid(own, ABS, names, "Row c averages over the test images labelled c.")
    st.markdown("**Each class, over all images**")
    grid(every, ABS, names, f"Averaged over all {summary.n:,} images.")
    st.markdown("**Signed mean, each class over its own images**: mean ∂ logit_c / ∂x")
    grid(
        signed,
        SIGNED,
        names,
        "Red: brighter pixels here raise the class score on average; blue: lower it.",
    )
    st.markdown("**Overall**: mean |∂ logit_c / ∂x| over every class and image")
    lo, hi = ABS.range([overall])
    render.show(render.picture(overall, lo, hi, ABS, scale=6), None)
    render.show(render.colorbar(lo, hi, ABS.cmap, width=168), None)


def model_column(model_name: str, dataset_name: str, n: int, slot: str) -> None:
    info = cache.model_info(model_name)
    st.subheader(f"{model_name} ({info.test_accuracy:.2%})")
    summary, note = cache.stored_summary(model_name, dataset_name, n)
    if note:
        st.warning(f"For {model_name}: {note}; compute it again below.")
    if summary is None:
        st.info(
            f"Not computed yet for {n:,} images: one forward and ten backward passes per image. "
            "The result is saved on disk, so it is computed once for every user."
        )
        if not st.button(f"Compute for {model_name}", key=f"sens_compute_{slot}"):
            return
        st.button(
            "Cancel", key=f"sens_cancel_{slot}", help="Stops the computation; nothing is saved."
        )
        bar = st.progress(0.0, text="Starting…")
        start = time.perf_counter()

        def progress(done: int, total: int) -> None:
            rate = done / max(time.perf_counter() - start, 1e-9)
            bar.progress(done / total, text=f"{done:,} / {total:,} images · {rate:,.0f} images/s")

        def waiting() -> None:
            bar.progress(0.0, text="Another visitor is computing this right now: waiting for it…")

        summary = cache.compute_summary(model_name, dataset_name, n, progress, waiting)
        bar.empty()
        st.success(f"Computed in {time.perf_counter() - start:.1f} s and saved.")
    show_summary(summary, cache.dataset(dataset_name).classes)


def render_view() -> None:
    view = state.init()
    state.keep("sens_n", "sens_other")
    dataset_name, model_name = view["dataset"], view["model"]
    st.title("Data-set sensitivity")
    st.markdown(
        "One saliency map explains one decision. The mean of |J| over a whole test set tells how "
        "much the model **uses** each pixel overall."
    )
    st.warning(
        "**What this does not say.** These maps describe the *model*, not the data: a dark pixel "
        "is one this model ignores, not one that carries no information. Neighbouring pixels are "
        "strongly correlated, so a model can rely on one and ignore the other; another model "
        "trained on the same data may choose differently (compare two models below)."
    )
    for slot in ("a", "b"):
        if st.session_state.get(f"sens_cancel_{slot}"):
            st.info("Computation cancelled; nothing was saved.")
    c1, c2 = st.columns(2)
    n = c1.selectbox(
        "Test images",
        SIZES,
        key="sens_n",
        format_func=lambda v: f"all {v:,}" if v == 10_000 else f"the first {v:,}",
    )
    others = ["none"] + [m for m in state.models(dataset_name) if m != model_name]
    other = c2.selectbox("Beside it", others, key="sens_other")
    if other == "none":
        model_column(model_name, dataset_name, n, "a")
        return
    left, right = st.columns(2)
    with left:
        model_column(model_name, dataset_name, n, "a")
    with right:
        model_column(other, dataset_name, n, "b")


if __name__ == "__main__":  # run as a page by the router
    render_view()
