"""Misclassifications: the confusion matrix, galleries of mistakes, and why each happened."""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

import pretrained
from dashboard import cache, render, sources, state
from dashboard.render import class_label, class_md
from dashboard.sources import Predictions, Workspace
from dashboard.views.mistakes_export import (  # noqa: F401 (re-exported: tests read them here)
    EXPORT_IMAGES,
    _exporting,
    export_bytes,
    export_panel,
    held_exports,
    held_file,
    model_stem,
)
from dashboard.views.mistakes_report import detail_maps, report_panel
from sandbox.images import ImageError

# Session keys of this page.
MIS_LAST_CLICK = "mis_last_click"
MIS_OPEN = "mis_open"
MIS_CHART = "mis_chart"
MIS_PAIRS = "mis_pairs"
MIS_TABLE = "mis_table"


GALLERY_SIZE = 40  # thumbnails a page
GRID_UP_TO = 20  # more classes than this: a table of the most confused pairs, not the grid
THUMBNAIL_PX = 84
KINDS = state.MIS_KINDS  # ("cell", "all", "unsure", "disagree"), in the URL
KIND_LABELS = {
    "cell": "mistakes in one cell",
    "all": "every mistake",
    "unsure": "least confident correct",
    "disagree": "two models disagree",
}


def confusion_chart(
    confusion: np.ndarray, names: tuple[str, ...], chosen: tuple[int, int] | None = None
) -> alt.Chart:
    """The confusion matrix, counts in the cells; the `chosen` (true, predicted) cell framed."""
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
    layers = [cells, text]
    if chosen is not None:  # the cell whose mistakes the gallery shows
        frame = base.transform_filter(f"datum.t == {int(chosen[0])} && datum.p == {int(chosen[1])}")
        layers.append(frame.mark_rect(fill=None, stroke="#1f4e9c", strokeWidth=3))
    # A title of its own: Streamlit's toolbar (shown on hover) covers it, not the line above.
    title = alt.TitleParams("Confusion matrix", anchor="start", fontSize=13, fontWeight="normal")
    return alt.layer(*layers).add_params(pick).properties(height=380, title=title)


def confused_pairs(confusion: np.ndarray, names: tuple[str, ...]) -> pd.DataFrame:
    """Every (true, predicted) pair with a mistake, the most frequent first: the confusion
    matrix of a model with many classes, as a table that sorts by any column."""
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    t, p = np.nonzero(off)
    order = np.argsort(-off[t, p], kind="stable")
    t, p = t[order], p[order]
    per_true = np.maximum(confusion.sum(1), 1)
    return pd.DataFrame(
        {
            "true": [class_label(int(i), names) for i in t],
            "predicted": [class_label(int(j), names) for j in p],
            "mistakes": off[t, p],
            "share of the true class": off[t, p] / per_true[t],
            "t": t,
            "p": p,
        }
    )


def _apply_table_click(event, pairs: pd.DataFrame) -> None:
    rows = (event or {}).get("selection", {}).get("rows") or []
    if not rows or rows[0] >= len(pairs):
        return
    t, p = int(pairs["t"].iloc[rows[0]]), int(pairs["p"].iloc[rows[0]])
    if st.session_state.get(MIS_LAST_CLICK) == (t, p):
        return
    st.session_state[MIS_LAST_CLICK] = (t, p)
    st.session_state[state.MIS_KIND] = "cell"
    st.session_state[state.MIS_TRUE] = t
    st.session_state[state.MIS_PRED] = p


def _apply_chart_click(event) -> None:
    """A click on an off-diagonal cell selects that (true, predicted) pair, once per click."""
    points = (event or {}).get("selection", {}).get("cell") or []
    if not points:
        return
    t, p = int(points[0]["t"]), int(points[0]["p"])
    if st.session_state.get(MIS_LAST_CLICK) == (t, p):
        return
    st.session_state[MIS_LAST_CLICK] = (t, p)
    if t != p:
        st.session_state[state.MIS_KIND] = "cell"
        st.session_state[state.MIS_TRUE] = t
        st.session_state[state.MIS_PRED] = p


def _open_in_explore(index: int, target: str) -> None:
    state.put(state.SOURCE, "test")
    state.put(state.INDEX, index)
    state.put(state.TARGET, target)
    state.put(state.TRUE_CLASS, "any")
    state.put(state.CORRECTNESS, "all")


def detail(model_name: str, src: Workspace, index: int, preds: Predictions) -> None:
    """Image, true-class map, predicted-class map, contrast; one shared scale; probabilities."""
    names = src.classes
    try:
        image = src.image(index)
    except ImageError as err:
        st.error(f"{render.plain(src.name(index))} can't be read now: {render.plain(err)}.")
        return
    true = int(src.labels[index])
    pred = int(preds.predicted[index])
    # Right or wrong, the contrast asks "why this class and not the other?": the true class
    # for a mistake, the runner-up for a correct answer (a class minus itself would be 0).
    versus = true if pred != true else int(preds.top_classes[index, 1])
    maps, (style, lo, hi), diff, (c_style, c_lo, c_hi) = detail_maps(
        model_name, image, true, pred, versus
    )
    st.markdown(
        f"**{render.plain(src.name(index))}**: true {class_md(true, names)} "
        f"(p = {preds.p_label[index]:.3f}), predicted {class_md(pred, names)} "
        f"(p = {preds.p_predicted[index]:.3f})"
    )
    scale = render.scale_for(image.shape, 196)
    cols = st.columns(4)
    with cols[0]:
        render.show(render.grey(image, scale), "The image")
    with cols[1]:
        render.show(
            render.picture(maps[true], lo, hi, style, image=image, scale=scale),
            f"|∂ logit[{true}] / ∂x|: true class",
        )
    with cols[2]:
        render.show(
            render.picture(maps[pred], lo, hi, style, image=image, scale=scale),
            f"|∂ logit[{pred}] / ∂x|: predicted class",
        )
    with cols[3]:
        render.show(
            render.picture(diff, c_lo, c_hi, c_style, scale=scale),
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
            f"Contrast, signed: red pixels pushed the model towards {class_md(pred, names)}, "
            f"blue ones towards {class_md(versus, names)}."
        )
    st.button(
        "🔍 Open in Explore",
        key=MIS_OPEN,
        on_click=_open_in_explore,
        args=(index, str(true)),
        help="Opens this image in Explore, with the true class as the target.",
    )
    if st.session_state.get(MIS_OPEN):
        st.switch_page("page_files/explore.py")


def _thumbnail(src: Workspace, index: int) -> np.ndarray:
    try:
        image = src.image(index)
    except ImageError:  # a file gone since indexing: a grey square, said in the caption
        return np.full((THUMBNAIL_PX, THUMBNAIL_PX, 3), 128, np.uint8)
    rgb = render.grey(image, render.scale_for(image.shape, THUMBNAIL_PX))
    return render.thumbnail(rgb, THUMBNAIL_PX)


def counted(n: int, verb: tuple[str, str], note: str) -> str:
    """ "1 image is taken for 4", "2 images are …": `verb` in its singular and plural."""
    return f"{n:,} image{'' if n == 1 else 's'} {verb[n != 1]} {note}"


def gallery(
    indices: np.ndarray, src: Workspace, preds: Predictions, *, note: str, verb=("is", "are")
) -> int:
    """Thumbnails of `indices`, GALLERY_SIZE a page, and a picker; returns the chosen index.
    The caption counts them: `counted(len(indices), verb, note)`."""
    names = src.classes
    pages = max(1, -(-len(indices) // GALLERY_SIZE))
    if int(st.session_state.get(state.MIS_PAGE, 1)) > pages:
        st.session_state[state.MIS_PAGE] = 1
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    page = 1
    if pages > 1:
        page = int(c2.number_input(f"Page (of {pages:,})", 1, pages, step=1, key=state.MIS_PAGE))
    first = (page - 1) * GALLERY_SIZE
    shown = indices[first : first + GALLERY_SIZE]
    c1.caption(
        counted(len(indices), verb, note)
        + (f"; {first + 1:,} to {first + len(shown):,} shown." if pages > 1 else ".")
    )
    if len(shown) == 0:
        return -1
    cols = st.columns(10)
    for i, index in enumerate(shown):
        pred = int(preds.predicted[index])
        with cols[i % 10]:
            render.show(
                _thumbnail(src, int(index)),
                f"#{index}: {class_md(pred, names)} {preds.p_predicted[index]:.2f}",
            )
    options = [int(i) for i in shown]
    if st.session_state.get(state.MIS_INDEX) not in options:
        st.session_state[state.MIS_INDEX] = options[0]
    return st.selectbox(
        "Look closer at",
        options,
        key=state.MIS_INDEX,
        format_func=lambda i: (
            f"#{i}{'' if src.paths is None else ' ' + src.paths[i]}: "
            f"true {class_label(int(src.labels[i]), names)}, predicted "
            f"{class_label(int(preds.predicted[i]), names)} ({preds.p_predicted[i]:.3f})"
        ),
    )


def _headline(model_name: str, src: Workspace, confusion: np.ndarray) -> None:
    """The page's title, the source's notes and the model's accuracy on every image."""
    info = cache.model_info(model_name)
    right = int(np.trace(confusion))
    accuracy = right / max(confusion.sum(), 1)
    st.title("Misclassifications")
    for note in src.notes:
        st.caption(note)
    st.markdown(
        f"**{render.plain(cache.display_name(model_name))}** on all {confusion.sum():,} "
        f"images of {render.plain(src.title)}: accuracy "
        f"**{accuracy:.2%}** ({right:,} right, {confusion.sum() - right:,} wrong)"
        + (f"; the model card says {info.test_accuracy:.2%}." if src.paths is None else ".")
    )


def _choose_start_cell(confusion: np.ndarray) -> tuple[int, int]:
    """The chosen (true, predicted) cell; the most frequent confusion when none is valid."""
    k = confusion.shape[0]
    if k <= GRID_UP_TO:  # a click on the chart chooses the cell before the chart is drawn
        _apply_chart_click(st.session_state.get(MIS_CHART))
    if not (0 <= st.session_state.get(state.MIS_TRUE, -1) < k) or not (
        0 <= st.session_state.get(state.MIS_PRED, -1) < k
    ):  # start at the model's most frequent confusion (also after a data-set switch)
        off = confusion - np.diag(np.diag(confusion))
        t, p = np.unravel_index(off.argmax(), off.shape)
        st.session_state[state.MIS_TRUE], st.session_state[state.MIS_PRED] = int(t), int(p)
    return (st.session_state[state.MIS_TRUE], st.session_state[state.MIS_PRED])


def _confusion_overview(
    confusion: np.ndarray, names: tuple[str, ...], chosen: tuple[int, int]
) -> None:
    """The matrix (or, for many classes, the most confused pairs) beside per-class accuracy."""
    k = len(names)
    left, right_col = st.columns([3, 2])
    with left:
        if k <= GRID_UP_TO:
            event = st.altair_chart(
                confusion_chart(
                    confusion, names, chosen if st.session_state[state.MIS_KIND] == "cell" else None
                ),
                on_select="rerun",
                key=MIS_CHART,
                width="stretch",
            )
            st.caption("Click an off-diagonal cell to see exactly those mistakes (framed).")
            _apply_chart_click(event)  # read above already, unless the widget's state wasn't
        else:
            pairs = confused_pairs(confusion, names)
            st.markdown(f"**The most confused pairs** ({len(pairs):,} of {k * (k - 1):,} pairs)")
            event = st.dataframe(
                pairs,
                column_config={
                    "share of the true class": st.column_config.ProgressColumn(format="percent"),
                    "t": None,
                    "p": None,
                },
                hide_index=True,
                on_select="rerun",
                selection_mode="single-row",
                key=MIS_PAIRS,
                height=380,
            )
            st.caption(
                f"{k:,} classes are too many for a grid. Sort by any column; pick a row to see "
                "exactly those mistakes."
            )
            _apply_table_click(event, pairs)
    with right_col:
        per_class = np.diag(confusion) / np.maximum(confusion.sum(1), 1)
        st.dataframe(
            pd.DataFrame(
                {
                    "class": [class_label(c, names) for c in range(k)],
                    "accuracy": per_class,
                    "images": confusion.sum(1),
                    "mistakes": confusion.sum(1) - np.diag(confusion),
                }
            ),
            column_config={"accuracy": st.column_config.ProgressColumn(format="percent")},
            hide_index=True,
            key=MIS_TABLE,
        )


def _chosen_images(
    model_name: str, key: str, names: tuple[str, ...], labels: np.ndarray, preds: Predictions
) -> tuple[str, np.ndarray, str, dict]:
    """The "Show" choice and its controls: (kind, ranked image indices, note, what for exports)."""
    k = len(names)
    others = [m for m in state.models(key) if m != model_name]
    kinds = KINDS if others else KINDS[:3]
    if st.session_state[state.MIS_KIND] not in kinds:
        st.session_state[state.MIS_KIND] = "cell"
    st.radio("Show", kinds, key=state.MIS_KIND, horizontal=True, format_func=KIND_LABELS.get)
    kind = st.session_state[state.MIS_KIND]
    what = {"kind": kind}
    if kind == "cell":
        c1, c2 = st.columns(2)
        fmt = lambda c: class_label(c, names)  # noqa: E731
        true = c1.selectbox(
            "True class", range(k), key=state.MIS_TRUE, format_func=fmt, help="Type to search."
        )
        predicted = c2.selectbox(
            "Predicted as", range(k), key=state.MIS_PRED, format_func=fmt, help="Type to search."
        )
        indices = pretrained.ranked_mistakes(
            preds.predicted, preds.p_predicted, labels, true=true, predicted_as=predicted
        )
        note = (
            f"{class_md(true, names)} taken for {class_md(predicted, names)}, "
            "the most confident mistakes first"
        )
        what.update(true=int(true), pred=int(predicted))
    elif kind == "all":
        indices = pretrained.ranked_mistakes(preds.predicted, preds.p_predicted, labels)
        note = "misclassified, the most confident mistakes first"
    elif kind == "unsure":
        indices = pretrained.ranked_least_confident(
            preds.predicted, preds.p_predicted, labels, n=len(labels)
        )
        note = "right, the least confident answers first"
    else:
        if st.session_state.get(state.MIS_OTHER) not in others:
            st.session_state[state.MIS_OTHER] = others[0]
        other = st.selectbox("Compare with", others, key=state.MIS_OTHER)
        theirs = cache.predictions(other, key)
        indices = pretrained.ranked_disagreements(
            preds.predicted, preds.p_predicted, theirs.predicted, theirs.p_predicted
        )
        names_ = " and ".join(render.plain(cache.display_name(m)) for m in (model_name, other))
        note = f"different answers from {names_}, most confident clash first"
        what.update(other=cache.display_name(other))
    return kind, indices, note, what


def render_view() -> None:
    view = state.current()
    state.keep(
        state.MIS_KIND,
        state.MIS_TRUE,
        state.MIS_PRED,
        state.MIS_INDEX,
        state.MIS_OTHER,
        state.MIS_PAGE,
    )
    model_name, key = view["model"], view["dataset"]
    src = sources.source(key)
    if not src.has_images:
        st.title("Misclassifications")
        render.no_images(src, "this page")
        return
    names = src.classes
    preds = cache.predictions(model_name, key)
    confusion = pretrained.confusion_matrix(src.labels, preds.predicted, len(names))
    _headline(model_name, src, confusion)
    st.session_state.setdefault(state.MIS_KIND, "cell")
    chosen = _choose_start_cell(confusion)
    _confusion_overview(confusion, names, chosen)
    kind, indices, note, what = _chosen_images(model_name, key, names, src.labels, preds)
    verb = ("gets", "get") if kind == "disagree" else ("is", "are")
    index = gallery(indices, src, preds, note=note, verb=verb)
    export_panel(model_name, src, preds, indices, what)
    report_panel(model_name, src, preds, indices, what)
    if index >= 0:
        st.divider()
        detail(model_name, src, index, preds)
