"""What every Classroom lesson draws with: the two map styles, the "What to notice" box, a
formula with its numbers and a map at the lessons' scale."""

from __future__ import annotations

import numpy as np
import streamlit as st

from dashboard import render
from dashboard.render import Style

ABS = Style(signed=False, cmap="inferno", alpha=0.5, clip=100.0, shared=False)
SIGNED = Style(signed=True, cmap="RdBu_r", alpha=0.5, clip=100.0, shared=False)


def notice(text: str) -> None:
    st.info(f"**What to notice.** {text}")


def formula(latex: str, *metrics: tuple[str, str]) -> None:
    """A lesson's formula and, in a row beneath it, the numbers (label, value) that bear it out."""
    st.latex(latex)
    for column, (label, value) in zip(st.columns(len(metrics)), metrics, strict=True):
        column.metric(label, value)


def show_map(m: np.ndarray, style: Style, caption: str, image: np.ndarray | None = None) -> None:
    """The map `m` on its own range (over `image` when given), 8 screen pixels a pixel."""
    lo, hi = style.range([m])
    render.show(render.picture(m, lo, hi, style, image=image, scale=8), caption)
