"""The view's whole state, mirrored in the URL query so a link reopens the exact view.

Each field is a widget key. Its canonical value lives in `st.session_state["view"]`, which
outlives the widgets (Streamlit forgets a widget's value when a page without it runs). Every
run: `init()` seeds missing widget keys from the canonical values (the URL's on a session's
first run), the widgets render, then `sync()` copies widget values back and rewrites the query.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import streamlit as st

import pretrained
import saliency
from dashboard import cache
from saliency.display import DIVERGING_CMAPS, SEQUENTIAL_CMAPS

SOURCES = ("test", "upload", "draw")
TARGETS = ("predicted", "true") + tuple(str(k) for k in range(10))
SCORES = saliency.SCORES
SIGNS = ("absolute", "signed")
SCALES = ("map", "shared")
CORRECTNESS = ("all", "correct", "wrong")
# Classroom lessons (dashboard/views/classroom.py), in teaching order.
LESSONS = ("nudge", "autograd", "saturation", "linear", "sanity", "deletion", "tabular")


def models(dataset: str | None = None) -> list[str]:
    """Registry models that have weights and a training record (a model registered but not
    yet trained is left out, so one missing file cannot break every page), then the models
    this session uploaded and that are still loaded."""
    ready = []
    for name in pretrained.list_models(dataset):
        try:
            pretrained.model_info(name)
        except FileNotFoundError:
            continue
        ready.append(name)
    for name in st.session_state.get("user_models", []):  # this session's accepted uploads
        if name in cache.uploads() and dataset in (None, cache.model_info(name).dataset):
            ready.append(name)
    return ready


def default_model(dataset: str) -> str:
    ready = models(dataset)
    return f"{dataset}-cnn" if f"{dataset}-cnn" in ready else ready[0]


@dataclass(frozen=True)
class Field:
    default: Any
    parse: Callable[[str], Any]  # raises ValueError for a bad URL value
    dump: Callable[[Any], str] = str


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return text

    return parse


def _number(kind: type, lo: float, hi: float) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if not lo <= value <= hi:
            raise ValueError(f"expected a number in [{lo}, {hi}]")
        return value

    return parse


def _flag(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise ValueError("expected true or false")
    return text.lower() == "true"


def _model(text: str) -> str:
    if text not in models():
        raise ValueError(f"unknown model; known: {', '.join(models())}")
    return text


def _models(text: str) -> list[str]:
    return [_model(t) for t in text.split(",") if t]


def _image(text: str) -> str:
    from pretrained.images import decode_image28

    decode_image28(text)  # validates
    return text


FIELDS: dict[str, Field] = {
    "dataset": Field("mnist", _choice(pretrained.DATASETS)),
    "model": Field("mnist-cnn", _model),
    "source": Field("test", _choice(SOURCES)),
    "index": Field(0, _number(int, 0, 9999)),
    "image": Field("", _image),
    "true_class": Field("any", _choice(("any",) + tuple(str(k) for k in range(10)))),
    "correctness": Field("all", _choice(CORRECTNESS)),
    "target": Field("predicted", _choice(TARGETS)),
    "method": Field("gradient", _choice(saliency.METHODS)),
    "score": Field("logit", _choice(SCORES)),
    "sign": Field("absolute", _choice(SIGNS)),
    "cmap": Field("inferno", _choice(SEQUENTIAL_CMAPS)),
    "cmap_signed": Field("RdBu_r", _choice(DIVERGING_CMAPS)),
    "alpha": Field(0.5, _number(float, 0.0, 1.0)),
    "clip": Field(99.0, _number(float, 50.0, 100.0)),
    "scale": Field("map", _choice(SCALES)),
    "compare": Field([], _models, lambda v: ",".join(v)),
    "lesson": Field("nudge", _choice(LESSONS)),
    "present": Field(False, _flag, lambda v: "true" if v else "false"),
}


def _canonical() -> dict[str, Any]:
    if "view" not in st.session_state:
        view = {k: f.default for k, f in FIELDS.items()}
        problems = []
        for key, text in st.query_params.to_dict().items():
            if key not in FIELDS:
                continue
            try:
                view[key] = FIELDS[key].parse(text)
            except (ValueError, TypeError) as err:
                problems.append(f"`{key}={text[:40]}` ignored ({err})")
        st.session_state["view"] = view
        st.session_state["url_problems"] = problems
    return st.session_state["view"]


def init() -> dict[str, Any]:
    """Seed every widget key from the canonical state and return the canonical dict."""
    view = _canonical()
    for key in FIELDS:  # a widget changed in the last interaction is newer than the canonical
        if key in st.session_state:
            view[key] = st.session_state[key]
    # A model from another data set (an edited link, or a data-set switch) falls back.
    ready = models(view["dataset"])
    if view["model"] not in ready:
        view["model"] = default_model(view["dataset"])
    view["compare"] = [m for m in view["compare"] if m in ready and m != view["model"]]
    for key, value in view.items():
        if key not in st.session_state or st.session_state[key] != value:
            st.session_state[key] = value
    return view


def keep(*keys: str) -> None:
    """Keep a view's own widget values while other widgets or pages show: Streamlit drops a
    widget's value on a run that does not draw it; writing it back makes it survive."""
    for key in keys:
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]


def get(key: str) -> Any:
    return st.session_state["view"][key]


def put(key: str, value: Any) -> None:
    """Change a value from code (a button): widget and canonical state together."""
    st.session_state["view"][key] = value
    st.session_state[key] = value


def sync() -> None:
    """Copy widget values into the canonical state and write the non-default ones to the URL."""
    view = st.session_state["view"]
    for key in FIELDS:
        if key in st.session_state:
            view[key] = st.session_state[key]
    query = {k: FIELDS[k].dump(v) for k, v in view.items() if v != FIELDS[k].default}
    if view["source"] == "test":
        query.pop("image", None)
    if query != st.query_params.to_dict():
        st.query_params.from_dict(query)


def settings_json(extra: dict[str, Any] | None = None) -> str:
    """The view's settings (and `extra` facts, e.g. the prediction) as pretty JSON."""
    view = dict(st.session_state["view"])
    if view["source"] == "test":
        view.pop("image", None)
    return json.dumps({"settings": view, **(extra or {})}, indent=2, default=str)
