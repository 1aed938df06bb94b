"""Misclassifications: the confusion matrix, galleries of mistakes, and why each happened."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

import pretrained
from dashboard import cache, render, state
from dashboard.render import Style
from dashboard.views.explore import class_label

GALLERY_SIZE = 40
KINDS = ("cell", "all", "unsure", "disagree")
KIND_LABELS = {
    "cell": "mistakes in one cell",
    "all": "every mistake",
    "unsure": "least confident correct",
    "disagree": "two models disagree",
}


def confusion_chart(confusion: np.ndarray, names: tuple[str, ...]) -> alt.Chart:
    k = confusion.shape[0]
    df = pd.DataFrame(
        [
            {
                "true": class_label(i, names),
                "predicted": class_label(j, names),
                "count": int(confusion[i, j]),
                "t": i,
                "p": j,
                "kind": "correct" if i == j else "mistake",
                # Off-diagonal cells coloured by count; the large diagonal only labelled.
                "shade": 0 if i == j else int(confusion[i, j]),
            }
            for i in range(k)
            for j in range(k)
        ]
    )
    order = [class_label(i, names) for i in range(k)]
    pick = alt.selection_point(fields=["t", "p"], name="cell", on="click")
    base = alt.Chart(df).encode(
        x=alt.X("predicted:N", sort=order, title="predicted class"),
        y=alt.Y("true:N", sort=order, title="true class"),
    )
    cells = base.mark_rect(stroke="#ddd").encode(
        color=alt.Color("shade:Q", scale=alt.Scale(scheme="oranges"), legend=None),
        tooltip=["true", "predicted", "count"],
    )
    text = base.mark_text(fontSize=12).encode(
        text="count:Q",
        color=alt.condition("datum.kind == 'correct'", alt.value("#1f7a33"), alt.value("black")),
    )
    return (cells + text).add_params(pick).properties(height=380)


def _apply_chart_click(event) -> None:
    """A click on an off-diagonal cell selects that (true, predicted) pair, once per click."""
    points = (event or {}).get("selection", {}).get("cell") or []
    if not points:
        return
    t, p = int(points[0]["t"]), int(points[0]["p"])
    if st.session_state.get("mis_last_click") == (t, p):
        return
    st.session_state["mis_last_click"] = (t, p)
    if t != p:
        st.session_state["mis_kind"] = "cell"
        st.session_state["mis_true"] = t
        st.session_state["mis_pred"] = p


def _open_in_explore(index: int, target: str) -> None:
    state.put("source", "test")
    state.put("index", index)
    state.put("target", target)
    state.put("true_class", "any")
    state.put("correctness", "all")


def detail(model_name: str, ds: pretrained.Dataset, index: int, probs: np.ndarray) -> None:
    """Image, true-class map, predicted-class map, contrast; one shared scale; probabilities."""
    names = ds.classes
    image = ds.images[index, 0].numpy()
    true = int(ds.labels[index])
    p = probs[index]
    pred = int(p.argmax())
    maps = cache.class_maps(model_name, image, "gradient", "logit", True)
    style = Style(signed=False, cmap="inferno", alpha=0.5, clip=99.0, shared=True)
    lo, hi = style.range([maps[true], maps[pred]])
    # Right or wrong, the contrast asks "why this class and not the other?": the true class
    # for a mistake, the runner-up for a correct answer (a class minus itself would be 0).
    versus = true if pred != true else int(np.argsort(-p)[1])
    diff = cache.contrast_map(model_name, image, pred, versus, "gradient", "logit")
    c_style = Style(signed=True, cmap="RdBu_r", alpha=0.5, clip=99.0, shared=False)
    c_lo, c_hi = c_style.range([diff])
    st.markdown(
        f"**Test image #{index}**: true {class_label(true, names)} "
        f"(p = {p[true]:.3f}), predicted {class_label(pred, names)} (p = {p[pred]:.3f})"
    )
    cols = st.columns(4)
    with cols[0]:
        render.show(render.grey(image, 7), "The image")
    with cols[1]:
        render.show(
            render.picture(maps[true], lo, hi, style, image=image, scale=7),
            f"|∂ logit[{true}] / ∂x|: true class",
        )
    with cols[2]:
        render.show(
            render.picture(maps[pred], lo, hi, style, image=image, scale=7),
            f"|∂ logit[{pred}] / ∂x|: predicted class",
        )
    with cols[3]:
        render.show(
            render.picture(diff, c_lo, c_hi, c_style, scale=7),
            f"∂ (logit[{pred}] − logit[{versus}]) / ∂x"
            + ("" if versus == true else ": predicted minus runner-up"),
        )
    c1, c2 = st.columns(2)
    with c1:
        render.show(render.colorbar(lo, hi, "inferno", width=196), None)
        st.caption(f"Both class maps share one scale ({lo:.3g} … {hi:.3g}), 99th percentile.")
    with c2:
        render.show(render.colorbar(c_lo, c_hi, "RdBu_r", width=196), None)
        st.caption(
            f"Contrast, signed: red pixels pushed the model towards {class_label(pred, names)}, "
            f"blue ones towards {class_label(versus, names)}."
        )
    st.button(
        "🔍 Open in Explore",
        key="mis_open",
        on_click=_open_in_explore,
        args=(index, str(true)),
        help="Opens this image in Explore, with the true class as the target.",
    )
    if st.session_state.get("mis_open"):
        st.switch_page("views/explore.py")


def gallery(indices: np.ndarray, ds: pretrained.Dataset, probs: np.ndarray, *, note: str) -> int:
    """Thumbnails of `indices` (first GALLERY_SIZE) and a picker; returns the chosen index."""
    names = ds.classes
    shown = indices[:GALLERY_SIZE]
    st.caption(
        f"{len(indices):,} images {note}"
        + (f"; the first {len(shown)} shown." if len(indices) > len(shown) else ".")
    )
    if len(shown) == 0:
        return -1
    cols = st.columns(10)
    for i, index in enumerate(shown):
        p = probs[index]
        pred = int(p.argmax())
        with cols[i % 10]:
            render.show(
                render.grey(ds.images[index, 0].numpy(), 3),
                f"#{index}: {class_label(pred, names)} {p[pred]:.2f}",
            )
    options = [int(i) for i in shown]
    if st.session_state.get("mis_index") not in options:
        st.session_state["mis_index"] = options[0]
    return st.selectbox(
        "Look closer at",
        options,
        key="mis_index",
        format_func=lambda i: (
            f"#{i}: true {class_label(int(ds.labels[i]), names)}, predicted "
            f"{class_label(int(probs[i].argmax()), names)} ({probs[i].max():.3f})"
        ),
    )


def render_view() -> None:
    view = state.init()
    state.keep("mis_kind", "mis_true", "mis_pred", "mis_index", "mis_other")
    model_name, dataset_name = view["model"], view["dataset"]
    ds = cache.dataset(dataset_name)
    names = ds.classes
    info = cache.model_info(model_name)
    probs = cache.test_set_probabilities(model_name, dataset_name)  # (10000, K)
    labels = ds.labels.numpy()
    pred = probs.argmax(1)
    confusion = pretrained.confusion_matrix(labels, pred, len(names))
    accuracy = float(np.trace(confusion)) / confusion.sum()

    st.title("Misclassifications")
    st.markdown(
        f"**{model_name}** on all {confusion.sum():,} {dataset_name} test images: "
        f"accuracy **{accuracy:.2%}** ({np.trace(confusion):,} right, "
        f"{confusion.sum() - np.trace(confusion):,} wrong); the model card says "
        f"{info.test_accuracy:.2%}."
    )
    left, right = st.columns([3, 2])
    with left:
        event = st.altair_chart(
            confusion_chart(confusion, names), on_select="rerun", key="mis_chart", width="stretch"
        )
        st.caption("Click an off-diagonal cell to see exactly those mistakes.")
    _apply_chart_click(event)
    with right:
        per_class = np.diag(confusion) / np.maximum(confusion.sum(1), 1)
        st.dataframe(
            pd.DataFrame(
                {
                    "class": [class_label(k, names) for k in range(len(names))],
                    "accuracy": per_class,
                    "images": confusion.sum(1),
                    "mistakes": confusion.sum(1) - np.diag(confusion),
                }
            ),
            column_config={"accuracy": st.column_config.ProgressColumn(format="percent")},
            hide_index=True,
            key="mis_table",
        )

    st.session_state.setdefault("mis_kind", "cell")
    st.radio("Show", KINDS, key="mis_kind", horizontal=True, format_func=KIND_LABELS.get)
    kind = st.session_state["mis_kind"]
    if kind == "cell":
        if "mis_true" not in st.session_state:  # start at the model's most frequent confusion
            off = confusion - np.diag(np.diag(confusion))
            t, p = np.unravel_index(off.argmax(), off.shape)
            st.session_state["mis_true"], st.session_state["mis_pred"] = int(t), int(p)
        c1, c2 = st.columns(2)
        fmt = lambda k: class_label(k, names)  # noqa: E731
        true = c1.selectbox("True class", range(len(names)), key="mis_true", format_func=fmt)
        predicted = c2.selectbox("Predicted as", range(len(names)), key="mis_pred", format_func=fmt)
        indices = pretrained.mistakes(probs, labels, true=true, predicted=predicted)
        note = (
            f"are {class_label(true, names)} taken for {class_label(predicted, names)}, "
            "the most confident mistakes first"
        )
    elif kind == "all":
        indices = pretrained.mistakes(probs, labels)
        note = "are misclassified, the most confident mistakes first"
    elif kind == "unsure":
        indices = pretrained.least_confident_correct(probs, labels, n=GALLERY_SIZE)
        note = "are the least confident right answers, lowest probability first"
    else:
        others = [m for m in state.models(dataset_name) if m != model_name]
        other = st.selectbox("Compare with", others, key="mis_other")
        indices = pretrained.disagreements(probs, cache.test_set_probabilities(other, dataset_name))
        note = f"get different answers from {model_name} and {other}, most confident clash first"
    index = gallery(indices, ds, probs, note=note)
    if index >= 0:
        st.divider()
        detail(model_name, ds, index, probs)


if __name__ == "__main__":  # run as a page by the router
    render_view()
