"""Data-set sensitivity: how much does the model use each pixel, over a whole test set?"""

from __future__ import annotations

import time

import numpy as np
import streamlit as st

import saliency
from dashboard import cache, render, sources, state
from dashboard.render import Style, class_label, class_md
from saliency import display
from workspace.opened import Workspace

# Session keys of this page.
SENS_N = "sens_n"
SENS_OTHER = "sens_other"
# Prefixes of keys made per slot ("a", "b") or per data set.
SENS_COMPUTE = "sens_compute"
SENS_CANCEL = "sens_cancel"
SENS_CLASSES = "sens_classes"


SIZES = (10_000, 1_000)
ABS = Style(signed=False, cmap="inferno", alpha=0.5, clip=99.0, shared=True)
SIGNED = Style(signed=True, cmap="RdBu_r", alpha=0.5, clip=99.0, shared=True)


GRID_UP_TO = 20  # more classes than this: the classes the user picks (searchable)


def grid(
    maps: np.ndarray,
    style: Style,
    names: tuple[str, ...],
    caption: str,
    classes: list[int] | None = None,
) -> None:
    """Maps on one shared scale, five to a row, with the scale's range under them: every
    class's (`maps` is `(K, H, W)`), or those of `classes` (`maps[i]` is class `classes[i]`)."""
    classes = list(range(len(maps))) if classes is None else classes
    finite = [m for m in maps if np.isfinite(m).all()]  # a class without images is NaN
    lo, hi = style.range(finite) if finite else (0.0, 1.0)
    scale = render.scale_for(maps.shape, 112)
    cols = st.columns(5)
    for i, (k, m) in enumerate(zip(classes, maps, strict=True)):
        with cols[i % 5]:
            if not np.isfinite(m).all():
                st.caption(f"{class_md(k, names)}: no images of this class")
                continue
            rgb = render.thumbnail(render.picture(m, lo, hi, style, scale=scale), 160)
            render.show(rgb, class_md(k, names))
    render.show(render.colorbar(lo, hi, style.cmap), None)
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
    st.subheader(f"{render.plain(cache.display_name(model_name))} ({info.test_accuracy:.2%})")
    summary, note = cache.stored_summary(model_name, dataset_name, n)
    if note:
        st.warning(f"For {render.plain(cache.display_name(model_name))}: {note}; compute it again.")
    if summary is None:
        # The offer, the button and the progress go once the result is there: only the result
        # and how long it took stay on the page.
        offer = st.empty()
        with offer.container():
            st.info(
                f"Not computed yet for {n:,} images: one forward and ten backward passes per "
                "image. The result is saved on disk, so it is computed once for every user."
            )
            shown = render.plain(cache.display_name(model_name))
            if not st.button(f"Compute for {shown}", key=f"{SENS_COMPUTE}_{slot}"):
                return
            st.button(
                "Cancel",
                key=f"{SENS_CANCEL}_{slot}",
                help="Stops the computation; nothing is saved.",
            )
            bar = st.progress(0.0, text="Starting…")
        start, progress, waiting = render.bar_calls(
            bar, "Another visitor is computing this right now: waiting for it…"
        )
        summary = cache.compute_summary(model_name, dataset_name, n, progress, waiting)
        offer.empty()
        st.success(f"Computed in {time.perf_counter() - start:.1f} s and saved.")
    show_summary(summary, cache.dataset(dataset_name).classes)


def _reduce(m: np.ndarray) -> np.ndarray:
    """`(K, C, H, W)` mean |g| -> `(K, H, W)`: the larger channel's, as Explore shows one map."""
    return m[:, 0] if m.shape[1] == 1 else display.reduce_channels(m, "max", channel_axis=1)


def workspace_summary(src: Workspace) -> None:
    """What `python -m workspace.index` computed: each class's mean |∂logit/∂x| over its own
    images (and, for K ≤ 20, over all images)."""
    summary = src.summary()
    names = src.classes
    k = len(names)
    if "mean_abs_grad_by_class" not in summary:
        st.info(
            "This workspace was indexed with --predictions-only, so there are no gradients to "
            f"show. Index it again without that flag:\n\n`{src.again}`"
        )
        return
    own = _reduce(summary["mean_abs_grad_by_class"])  # (K, H, W), NaN for an empty class
    counts = summary["counts"]
    st.caption(
        f"Computed by the index on {int(counts.sum()):,} images ({src.description}); "
        + ("" if src.shape[0] == 1 else "max over the three colour channels; ")
        + "float64 sums, so every image counts the same."
    )
    weights = counts / max(counts.sum(), 1)
    overall = np.nansum(own * weights[:, None, None], axis=0)
    if k <= GRID_UP_TO:
        st.markdown("**Each class, over the images of that class**: mean |∂ logit_c / ∂x|")
        grid(own, ABS, names, "Row c averages over the images labelled c.")
    else:
        # The ten classes with the most images (never a class without any).
        biggest = [int(c) for c in np.argsort(-counts, kind="stable")[:10] if counts[c] > 0]
        st.multiselect(
            f"Classes to show (type to search {k:,} names)",
            range(k),
            default=biggest,
            key=f"{SENS_CLASSES}_{src.key}",
            format_func=lambda c: class_label(c, names),
            max_selections=40,
        )
        chosen = list(st.session_state[f"{SENS_CLASSES}_{src.key}"]) or biggest
        st.markdown("**Each chosen class, over the images of that class**: mean |∂ logit_c / ∂x|")
        grid(own[chosen], ABS, names, "Each averages over the images of its class.", chosen)
    if "mean_abs_grad_all" in summary:
        every = _reduce(summary["mean_abs_grad_all"])
        st.markdown("**Each class, over all images**")
        grid(every, ABS, names, f"Averaged over all {int(counts.sum()):,} images.")
    st.markdown("**Overall**: mean of the maps above, each class weighted by its images")
    lo, hi = ABS.range([overall])
    render.show(
        render.picture(overall, lo, hi, ABS, scale=render.scale_for(overall.shape, 168)), None
    )
    render.show(render.colorbar(lo, hi, ABS.cmap), None)


def render_view() -> None:
    view = state.current()
    state.keep(SENS_N, SENS_OTHER)
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
    src = sources.source(dataset_name)
    if render.no_images(src, "Data-set sensitivity"):
        return
    if not src.bundled:
        for note in src.notes:
            st.caption(note)
        workspace_summary(src)
        return
    for slot in ("a", "b"):
        if st.session_state.get(f"{SENS_CANCEL}_{slot}"):
            st.info("Computation cancelled; nothing was saved.")
    c1, c2 = st.columns(2)
    n = c1.selectbox(
        "Test images",
        SIZES,
        key=SENS_N,
        format_func=lambda v: f"all {v:,}" if v == 10_000 else f"the first {v:,}",
    )
    others = ["none"] + [m for m in state.models(dataset_name) if m != model_name]
    other = c2.selectbox("Beside it", others, key=SENS_OTHER)
    if other == "none":
        model_column(model_name, dataset_name, n, "a")
        return
    left, right = st.columns(2)
    with left:
        model_column(model_name, dataset_name, n, "a")
    with right:
        model_column(other, dataset_name, n, "b")
