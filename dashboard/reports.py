"""What the views' "Download report" buttons share: the model's card as text, and the button.

The report itself is `saliency.report`; a view hands it pictures it has already computed (the
same arrays it draws, encoded by `render.png`), so a report costs no model call of its own."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import streamlit as st

from saliency import report

MIME = "text/html"
_CARD_FIELDS = ("kind", "architecture", "filename", "n_params", "dataset", "n_test",
                "seconds_per_example")  # fmt: skip


def card_text(info) -> str:
    """A registry model's card (its Markdown file, at most `report.MAX_CARD` characters); for
    a workspace's or an uploaded model, what its info says. Plain text: the report escapes it."""
    card = getattr(info, "card_file", None)
    if isinstance(card, Path) and card.is_file():
        with card.open(encoding="utf-8", errors="replace") as f:
            return f.read(report.MAX_CARD)
    lines = [str(info.description), ""]
    acc = info.test_accuracy
    lines.append("weights: random (no accuracy)" if acc is None else f"test accuracy: {acc:.2%}")
    have = {f.name for f in dataclasses.fields(info)} if dataclasses.is_dataclass(info) else set()
    for name in _CARD_FIELDS:
        if name in have and getattr(info, name) not in (None, ""):
            lines.append(f"{name.replace('_', ' ')}: {getattr(info, name)}")
    names = tuple(info.class_names)
    shown = ", ".join(str(n)[:60] for n in names[:20]) + (", …" if len(names) > 20 else "")
    lines.append(f"classes ({len(names):,}): {shown}")
    return "\n".join(lines)


def file_stem(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in text)[:120]


def button(label: str, build: Callable[[], str], file_name: str, key: str) -> None:
    """A download whose HTML `build()` makes when it is clicked (Streamlit's deferred data),
    never on a rerun: a view redrawn a hundred times encodes nothing."""
    st.download_button(
        label,
        data=lambda: build().encode("utf-8"),
        file_name=file_name,
        mime=MIME,
        key=key,
        on_click="ignore",
        help="One HTML file: the pictures, the probabilities, every setting, the model's card "
        "and sha256, the library versions. It opens offline in any browser.",
    )
