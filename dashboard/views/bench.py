"""Which map can I trust? The metric bench: methods and three controls × metrics, each a mean
over N images of each class with a bootstrap 95 % interval, the metrics' agreement, and each
cell's per-image values, from which an image opens in Explore.

The numbers are `saliency.bench`'s (computed by `dashboard.bench_cache`); this module only
draws them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

import saliency
from dashboard import bench_cache, cache, render, sources, state
from dashboard.bench_cache import Request, Result
from saliency import bench
from workspace.opened import Workspace

# Session keys of this page: the prefixes of its widgets' keys (`show_table(result, BENCH)` keys
# its table "bench_table"), so that the trust lesson can show the same widgets under its own.
BENCH = "bench"
BENCH_CELL = "bench_cell"

METRIC_LABELS = {
    "sparseness": "Sparseness",
    "complexity": "Complexity",
    "deletion_auc": "Deletion AUC",
    "insertion_auc": "Insertion AUC",
    "road_morf": "ROAD (MoRF)",
    "road_lerf": "ROAD (LeRF)",
    "max_sensitivity": "Max-Sensitivity",
    "random_logit": "Random Logit",
    "model_randomisation": "Randomisation ρ",
}
METRIC_HELP = {
    "sparseness": "Gini index of the map (Chalasani et al. 2020): a few bright pixels score high.",
    "complexity": "Entropy of the map (Bhatt et al. 2020): a spread-out map scores high.",
    "deletion_auc": "The class's probability as the map's brightest pixels are deleted first "
    "(Petsiuk et al. 2018): a faithful map makes it fall fast.",
    "insertion_auc": "The probability as the brightest pixels are put back onto a blank image "
    "first: a faithful map makes it rise fast.",
    "road_morf": "ROAD (Rong et al. 2022): the accuracy as the most relevant pixels are "
    "replaced by their neighbours' noisy interpolation, which leaks less than blanking them.",
    "road_lerf": "ROAD, removing the least relevant pixels first: a faithful map keeps the "
    "accuracy up.",
    "max_sensitivity": "How far the map moves when the image is nudged by small noise (Yeh et al. "
    "2019): a robust map moves little.",
    "random_logit": "How similar the map of the class is to the map of another, random class "
    "(Sixt et al. 2020): a map that explains the class differs.",
    "model_randomisation": "Spearman ρ between the map and the map of a fully randomised model "
    "(Adebayo et al. 2018): a map that depends on the model falls.",
}
CONTROL_LABELS = {
    "random": "control: a random map",
    "edge": "control: the edge detector",
    "blurred": "control: the first method, blurred",
}
CONTROL_WORDS = {
    "random": "a random map",
    "edge": "the edge detector",
    "blurred": "its own blurred copy",
}


def row_label(row: str) -> str:
    return CONTROL_LABELS.get(row) or saliency.method_info(row).label


def table_frame(table: bench.Bench) -> pd.DataFrame:
    """The methods, then the controls, × the metrics: "mean [low, high]" (3 significant
    figures) with the rank of a method under each metric."""
    rows = []
    for row in (*table.methods, *table.controls):
        cells = {"": row_label(row)}
        for metric in table.metrics:
            s = table.score(row, metric)
            rank = table.ranks[metric].get(row)
            cell = "—" if np.isnan(s.mean) else f"{s.mean:.3g} [{s.low:.3g}, {s.high:.3g}]"
            cells[column(metric)] = cell + (f" #{rank}" if rank and len(table.methods) > 1 else "")
        rows.append(cells)
    return pd.DataFrame(rows)


def column(metric: str) -> str:
    arrow = "↑" if bench.HIGHER_IS_BETTER[metric] else "↓"
    return f"{METRIC_LABELS[metric]} {arrow}"


def losses(table: bench.Bench) -> list[str]:
    """One plain sentence per (method, metric) where a control's mean beats the method's."""
    out = []
    for row in table.methods:
        for control in table.controls:
            for metric in table.metrics:
                mine, theirs = table.score(row, metric).mean, table.score(control, metric).mean
                better = theirs > mine if bench.HIGHER_IS_BETTER[metric] else theirs < mine
                if better:
                    out.append(
                        f"{saliency.method_info(row).label} is worse than "
                        f"{CONTROL_WORDS[control]} on {METRIC_LABELS[metric]}"
                    )
    return out


def agreement_chart(table: bench.Bench) -> dict:
    """Kendall τ between the metrics' rankings of the methods, as a labelled heat map."""
    names = [METRIC_LABELS[m] for m in table.metrics]
    data = [
        {"a": names[i], "b": names[j], "tau": None if np.isnan(t) else round(float(t), 2)}
        for (i, j), t in np.ndenumerate(table.agreement)
    ]
    enc = {
        "x": {"field": "b", "type": "nominal", "sort": names, "title": None},
        "y": {"field": "a", "type": "nominal", "sort": names, "title": None},
    }
    # (a numeric height leaves Streamlit's band scale no room: the rows collapse to nothing;
    # a step per row, with the encoding shared by both layers, draws the matrix)
    return {
        "data": {"values": data},
        "height": {"step": 28},
        "encoding": enc,
        "layer": [
            {
                "mark": "rect",
                "encoding": {
                    "color": {
                        "field": "tau",
                        "type": "quantitative",
                        "scale": {"scheme": "redblue", "domain": [-1, 1]},
                        "title": "Kendall τ",
                    }
                },
            },
            {"mark": {"type": "text"}, "encoding": {"text": {"field": "tau"}}},
        ],
    }


def show_table(result: Result, key: str) -> tuple[str, str] | None:
    """The table, the losses and the agreement matrix; the (row, metric) the user clicked."""
    table = result.table
    frame = table_frame(table)
    event = st.dataframe(
        frame, hide_index=True, width="stretch", key=f"{key}_table", on_select="rerun",
        selection_mode="single-cell",
        column_config={column(m): st.column_config.TextColumn(help=METRIC_HELP[m])
                       for m in table.metrics},
    )  # fmt: skip
    st.caption(
        f"Mean over {len(result.indices)} images, with a bootstrap 95 % interval (resampling "
        "the images); #k is a method's rank under that metric (controls are not ranked). ↑: "
        "higher is better, ↓: lower is better. Click a cell for its images."
    )
    for method, why in result.refused.items():
        st.warning(f"{saliency.method_info(method).label} left out: {render.plain(why)}")
    lost = losses(table)
    if lost:
        st.error(
            "**Beaten by a control** (a score that a random map, the edge detector or a blur "
            "reaches says little about the method):\n\n" + render.bullets(lost)
        )
    else:
        st.success("Every method beats every control on every metric shown.")
    st.markdown("**Do the metrics agree?** Kendall τ between their rankings of the methods")
    if table.agreement_note:
        st.info(f"Not computable: {table.agreement_note}.")
    else:
        st.vega_lite_chart(agreement_chart(table), width="stretch", key=f"{key}_tau")
        st.caption(
            "1: the two metrics rank the methods the same way; −1: in opposite ways; blank: a "
            "metric gave every method the same score."
        )
    cells = event.selection.cells if event and event.selection else []
    if not cells:
        return None
    i, col = cells[0]
    names = [*table.methods, *table.controls]
    metric = next((m for m in table.metrics if column(m) == col), None)
    return (names[int(i)], metric) if metric else None


def show_cell(result: Result, row: str, metric: str, src: Workspace, key: str) -> None:
    """One cell's per-image values, worst first, and a button opening a chosen one in Explore."""
    values = result.table.values[row, metric]
    good = bench.HIGHER_IS_BETTER[metric]
    st.markdown(f"**{render.plain(row_label(row))} · {METRIC_LABELS[metric]}**, image by image")
    names = src.classes
    frame = pd.DataFrame(
        {
            "image": [int(i) for i in result.indices],
            "label": [render.class_label(int(c), names) for c in result.labels],
            "scored class": [render.class_label(int(c), names) for c in result.targets],
            "value": values,
        }
    )
    order = np.argsort(values if good else -values, kind="stable")  # worst first, NaN last
    frame = frame.iloc[order].reset_index(drop=True)
    st.vega_lite_chart(
        {
            "data": {"values": frame[["image", "value"]].dropna().to_dict("records")},
            "mark": {"type": "bar"},
            "encoding": {
                "x": {"field": "value", "bin": {"maxbins": 20}, "title": METRIC_LABELS[metric]},
                "y": {"aggregate": "count", "title": "images"},
            },
            "height": 160,
        },
        width="stretch",
        key=f"{key}_hist",
    )
    picked = st.dataframe(
        frame, hide_index=True, width="stretch", key=f"{key}_images", on_select="rerun",
        selection_mode="single-row", height=240,
    )  # fmt: skip
    rows = picked.selection.rows if picked and picked.selection else []
    if not rows:
        st.caption("Worst first. Pick an image to open it in Explore.")
        return
    index = int(frame.loc[rows[0], "image"])
    image = src.image(index)
    rgb = render.grey(image, render.scale_for(image.shape, 112))
    render.show(render.thumbnail(rgb, 112), render.plain(src.name(index)))
    if st.button(f"Open {render.plain(src.name(index))} in Explore", key=f"{key}_open"):
        state.put(state.SOURCE, "test")
        state.put(state.INDEX, index)
        if row in saliency.METHOD_INFO:
            state.put(state.METHOD, row)
        st.switch_page("page_files/explore.py")


def controls(view: dict, key: str) -> Request:
    c1, c2 = st.columns([3, 1])
    c1.multiselect(
        "Methods",
        list(saliency.METHOD_INFO),
        key=state.B_METHODS,
        format_func=lambda m: saliency.method_info(m).label,
        max_selections=8,
        help="Each is scored beside three controls: a random map, the Sobel edge map of the "
        "image, and the first method's map blurred.",
    )
    c2.selectbox(
        "Images per class",
        bench_cache.PER_CLASS,
        key=state.B_PER_CLASS,
        help=f"The first N test images of each class (at most {bench_cache.MAX_IMAGES} in all).",
    )
    st.multiselect(
        "Metrics",
        list(bench.METRICS),
        key=state.B_METRICS,
        format_func=METRIC_LABELS.get,
    )
    return Request(
        view["model"], view["dataset"], int(st.session_state[state.B_PER_CLASS]),
        tuple(st.session_state[state.B_METHODS]), tuple(st.session_state[state.B_METRICS]),
    )  # fmt: skip


def result_or_offer(req: Request, key: str, compute_label: str = "Score the maps") -> Result | None:
    """The stored bench, or an offer to compute it (with progress); None until there is one."""
    result, note = bench_cache.stored(req)
    if note:
        st.warning(f"{note}; compute it again.")
    if result is not None:
        st.caption(
            f"Computed {result.computed} in {result.seconds:.0f} s; saved for every visitor."
        )
        return result
    if not req.methods or not req.metrics:
        st.info("Pick at least one method and one metric.")
        return None
    src = sources.source(req.dataset)
    n = len(bench_cache.chosen_images(src.labels, len(src.classes), req.per_class))
    offer = st.empty()
    with offer.container():
        st.info(
            f"Not computed yet: {len(req.methods)} methods and 3 controls on {n} images. A "
            "bench takes a minute or more of the server's time (Max-Sensitivity recomputes "
            "each map ten times); it is saved, so it is computed once for every visitor."
        )
        if not st.button(compute_label, key=f"{key}_compute", type="primary"):
            return None
        bar = st.progress(0.0, text="Starting…")
    _, progress, waiting = render.bar_calls(
        bar, "Another visitor is computing this bench: waiting for it…"
    )
    try:
        result = bench_cache.compute(req, progress, waiting)
    except bench_cache.Busy as err:
        offer.empty()
        st.warning(str(err))
        return None
    except ValueError as err:
        offer.empty()
        st.error(f"This bench can't be computed: {render.plain(err)}")
        return None
    offer.empty()
    return result


def render_view() -> None:
    view = state.current()
    st.title("Which map can I trust?")
    st.markdown(
        "Six methods give six maps. This page scores each method on the metrics the field "
        "uses, over test images, **beside three controls**: a random map, the edge detector "
        "(Adebayo et al. 2018: an input's edges look like a saliency map), and the first "
        "method's map blurred (removal-based metrics reward blur). A method that doesn't beat "
        "the controls on a metric has shown nothing on it. Metrics also disagree with each "
        "other; the matrix under the table says how much."
    )
    name = render.plain(cache.display_name(view["model"]))
    st.caption(f"Model: **{name}** on {render.plain(sources.title(view['dataset']))}.")
    if render.no_images(sources.source(view["dataset"]), "the bench"):
        return
    req = controls(view, BENCH)
    result = result_or_offer(req, BENCH)
    if result is None:
        return
    picked = show_table(result, BENCH)
    if picked:
        show_cell(result, *picked, sources.source(req.dataset), BENCH_CELL)
