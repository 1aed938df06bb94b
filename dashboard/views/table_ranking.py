"""Tables' ranking: the features by mean |∂y/∂xⱼ|, raw or × std (a chart, a table, a CSV),
and the caveats computed from the data (correlated features, ranks that flip with the units)."""

from __future__ import annotations

import numpy as np
import streamlit as st

import saliency
from dashboard import render, state
from sandbox.text import csv_text

# Session keys of this page.
T_DL_RANKING = "t_dl_ranking"


SCALE_LABELS = {"none": "raw units: mean |∂y/∂xⱼ|", "std": "× std: mean |∂y/∂xⱼ| · stdⱼ"}
CORRELATED = 0.8
FLIP_PLACES = 2
BAR_COLOUR = "#4c78a8"


def ranking_section(Xu, features, raw, scaled) -> saliency.FeatureRanking:
    """The ranking in the units the user chose (chart, table, CSV) and its caveats; returns
    the ranking shown."""
    st.subheader("Ranking")
    st.radio("Scale", state.TABLE_SCALES, key=state.T_SCALE, horizontal=True,
             format_func=SCALE_LABELS.get)  # fmt: skip
    shown = scaled if state.get(state.T_SCALE) == "std" else raw
    other = raw if shown is scaled else scaled
    left, right = st.columns([3, 2])
    with left:
        ranking_chart(shown)
    with right:
        rows = ranking_rows(shown, other)
        st.dataframe(rows, hide_index=True, width="stretch")
        st.download_button(
            "Ranking as CSV",
            ranking_csv(raw, scaled),
            "ranking.csv",
            "text/csv",
            key=T_DL_RANKING,
            on_click="ignore",
        )
    caveats(Xu, features, raw, scaled)
    return shown


def float64_tensor(a: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))


def ranking_chart(r: saliency.FeatureRanking) -> None:
    rows = [
        {"feature": name, "value": value, "signed": float(r.signed[0, r.feature_names.index(name)])}
        for name, value in r.ranked(0)
    ]
    title = "mean |∂y/∂xⱼ| · stdⱼ" if r.scale == "std" else "mean |∂y/∂xⱼ| (per unit of xⱼ)"
    spec = {
        "data": {"values": rows},
        "mark": {"type": "bar", "color": BAR_COLOUR},
        "height": max(120, 26 * len(rows)),
        "encoding": {
            "x": {"field": "value", "type": "quantitative", "title": title},
            "y": {
                "field": "feature",
                "type": "nominal",
                "sort": None,
                "title": None,
                "axis": {"labelOverlap": False, "labelLimit": 200},
            },  # fmt: skip
            "tooltip": [
                {"field": "feature", "type": "nominal"},
                {"field": "value", "type": "quantitative", "format": ".4g", "title": title},
                {
                    "field": "signed",
                    "type": "quantitative",
                    "format": ".4g",
                    "title": "signed mean",
                },  # fmt: skip
            ],
        },
    }
    st.vega_lite_chart(None, spec, width="stretch")


def ranking_rows(shown, other) -> list[dict]:
    places = other.rank(0)
    unit = "× std" if other.scale == "std" else "raw"
    return [
        {
            "rank": place + 1,
            "feature": name,
            "mean |∂y/∂x|": round(float(shown.sensitivity[0, j]), 6),
            "signed mean": round(float(shown.signed[0, j]), 6),
            f"rank {unit}": places[name],
        }
        for place, j in enumerate(shown.order[0].tolist())
        for name in [shown.feature_names[j]]
    ]


def ranking_csv(raw, scaled) -> str:
    """The ranking as CSV; the feature names (a CSV's own header) can't run as formulas."""
    rows = [["feature", "rank_raw", "mean_abs_raw", "signed_mean_raw", "rank_std",
             "mean_abs_std", "signed_mean_std", "std"]]  # fmt: skip
    a, b = raw.rank(0), scaled.rank(0)
    for j in raw.order[0].tolist():
        name = raw.feature_names[j]
        rows.append(
            [name, a[name], repr(float(raw.sensitivity[0, j])), repr(float(raw.signed[0, j])),
             b[name], repr(float(scaled.sensitivity[0, j])), repr(float(scaled.signed[0, j])),
             repr(float(raw.std[j]))]
        )  # fmt: skip
    return csv_text(rows)


def caveats(X, features, raw, scaled) -> None:
    pairs = saliency.correlated_pairs(float64_tensor(X), features, threshold=CORRELATED)
    flips = saliency.rank_flips(raw, scaled, places=FLIP_PLACES)
    if pairs:
        st.warning(
            f"**Correlated features** (|r| ≥ {CORRELATED}): the model may use one of each pair "
            "and ignore the other, so a low rank does not mean a feature carries no "
            "information.\n"
            + render.bullets(
                f"**{render.plain(a)}** and **{render.plain(b)}**: r = {r:+.2f}"
                for a, b, r in pairs
            )
        )
    if flips:
        st.info(
            f"**The order depends on the units** for these features (places differ by ≥ "
            f"{FLIP_PLACES}). A raw gradient is per unit of the feature: per year, per mmHg, "
            "per mg/dL. Scaled by each feature's std it is the change of y for a typical change "
            "of the feature, which is comparable across features.\n"
            + render.bullets(
                f"**{render.plain(n)}**: {a}. in raw units, {b}. × std" for n, a, b in flips
            )
        )
    if not pairs and not flips:
        st.caption(
            f"No pair of features has |r| ≥ {CORRELATED}, and no feature moves by "
            f"{FLIP_PLACES} or more places between raw units and × std."
        )
