"""The view's whole state, mirrored in the URL query so a link reopens the exact view.

Each field is a widget key. Its canonical value lives in `st.session_state["view"]`, which
outlives the widgets (Streamlit forgets a widget's value when a page without it runs). Every
run: `init()` seeds missing widget keys from the canonical values (the URL's on a session's
first run), the widgets render, then `sync()` copies widget values back and rewrites the query.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import streamlit as st

import saliency
from dashboard import cache, render, sources
from saliency.display import DIVERGING_CMAPS, SEQUENTIAL_CMAPS
from saliency.names import METRICS
from workspace import WorkspaceError

# Session keys. The URL's fields (FIELDS' names): each is also its widget's key and its
# query parameter's name.
DATASET = "dataset"
MODEL = "model"
SOURCE = "source"
INDEX = "index"
IMAGE = "image"
TRUE_CLASS = "true_class"
CORRECTNESS = "correctness"
TARGET = "target"
METHOD = "method"
LAYER = "layer"
SCORE = "score"
SIGN = "sign"
CMAP = "cmap"
CMAP_SIGNED = "cmap_signed"
ALPHA = "alpha"
CLIP = "clip"
SCALE = "scale"
COMPARE = "compare"
LESSON = "lesson"
B_METHODS = "b_methods"
B_METRICS = "b_metrics"
B_PER_CLASS = "b_per_class"
PRESENT = "present"
MIS_KIND = "mis_kind"
MIS_TRUE = "mis_true"
MIS_PRED = "mis_pred"
MIS_OTHER = "mis_other"
MIS_PAGE = "mis_page"
MIS_INDEX = "mis_index"
RANDOM_WEIGHTS = "random_weights"
T_SOURCE = "t_source"
T_ALL = "t_all"
T_FEATURES = "t_features"
T_TARGET = "t_target"
T_DROP = "t_drop"
T_OUTPUT = "t_output"
T_SCALE = "t_scale"
T_SCORE = "t_score"
T_ROW = "t_row"
T_NUDGE = "t_nudge"
ROOM = "room"
TEACHER = "teacher"
ME = "me"
MINE = "mine"
# Never in the URL: the canonical view (see above), the URL's values that were ignored,
# this session's upload keys by model, the notes on uploads gone, the model last chosen
# per data set.
VIEW = "view"
URL_PROBLEMS = "url_problems"
# A data set a page asked for (`open_dataset`), chosen by the next run's `init`, before the
# sidebar's box is drawn.
OPEN_DATASET = "open_dataset"
UPLOAD_TOKENS = "upload_tokens"
GONE_MODELS = "gone_models"
MODEL_PER_DATASET = "model_per_dataset"

SOURCES = ("test", "upload", "draw")
TARGETS = ("predicted", "true")  # or a class index, "0" to "999"
MAX_CLASSES = 1000
SCORES = saliency.SCORES
SIGNS = ("absolute", "signed")
SCALES = ("map", "shared")
CORRECTNESS_CHOICES = ("all", "correct", "wrong")
# Classroom lessons (dashboard/views/classroom.py), in teaching order.
LESSONS = (
    "nudge", "autograd", "saturation", "linear", "sanity", "deletion", "tabular", "trust",
)  # fmt: skip


# The Tables page (dashboard/views/tables.py).
TABLE_SOURCES = ("example", "upload")
TABLE_SCALES = ("std", "none")  # × std first: only it compares features
MAX_NAME = 100  # characters of a column name in a link

# The metric bench (dashboard/views/bench.py): its default methods and `saliency.bench.METRICS`
# (named here so that a first page needs no torch; a test checks they are the library's).
BENCH_METHODS = (
    "gradient",
    "smoothgrad",
    "integrated_gradients",
    "input_x_gradient",
    "guided_backprop",
    "grad_cam",
)
BENCH_METRICS = METRICS  # the page offers every metric of saliency.bench
BENCH_PER_CLASS = (1, 2, 5, 10)
# Misclassifications: what its gallery shows (dashboard/views/mistakes.py's KINDS).
MIS_KINDS = ("cell", "all", "unsure", "disagree")
MAX_BENCH_METHODS = 8

MAX_COMPARE = 3  # models shown beside the main one
MODEL_PICKER = "Model"  # the sidebar's model picker's label
# The sidebar's model picker's container while it offers only the public models (no upload of
# this session's): it hides while the Explore panel shows its own Model picker (panel.css).
PUBLIC_MODEL_BOX = "public_model_box"
TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def public_models(dataset: str | None = None) -> list[str]:
    """What every visitor of this server may use: the models of workspace `dataset`
    (`Workspace.models`: a bundled set's registry models, a server workspace's own, the
    ImageNet workspace's), or of every data set but the ImageNet one (None). No session's
    uploads: this needs no session (`dashboard.serve`'s route uses it)."""
    if dataset is None:
        return list(sources.workspace_folders()) + sources.registry_models(None)
    try:
        return sources.source(dataset).models()
    except (WorkspaceError, ValueError):  # not (or no longer) one of this server's
        return []


def models(dataset: str | None = None) -> list[str]:
    """`public_models`, then the models this session uploaded (or claimed with their token)
    that are still on the server."""
    ready = list(public_models(dataset))
    pool = cache.uploads()
    for name in list(st.session_state.get(cache.USER_MODELS, [])):  # this session's uploads
        if name not in pool:
            forget_upload(name)
            continue
        if dataset in (None, cache.model_info(name).dataset):
            ready.append(name)
    return ready


def remember_upload(name: str, token: str) -> None:
    """This session may use upload `name`; its secret token goes into the URL (`mine=`), so a
    reload (or the uploader's own bookmark) gets it back. Nobody without the token can."""
    mine = st.session_state.setdefault(cache.USER_MODELS, [])
    if name not in mine:
        mine.append(name)
    st.session_state.setdefault(UPLOAD_TOKENS, {})[name] = token


def forget_upload(name: str) -> None:
    """Drop an upload that left the server, and say so once on the next page."""
    mine = st.session_state.get(cache.USER_MODELS, [])
    if name in mine:
        mine.remove(name)
        st.session_state.get(UPLOAD_TOKENS, {}).pop(name, None)
        why = cache.uploads().evicted.get(name, "the server no longer has it")
        st.session_state.setdefault(GONE_MODELS, []).append(
            f"Your model **{name}** is gone: {why}. Upload it again on the Your model page; "
            "everything else you chose is kept."
        )


def _claim(tokens: list[str]) -> None:
    """Give this session the uploads whose tokens a link carries (a reload keeps the URL)."""
    pool = cache.uploads()
    lost = 0
    for token in tokens:
        name = pool.claim(token)
        if name is None:
            lost += 1
        else:
            remember_upload(name, token)
            workspace = sources.uploaded().for_model(name)
            if workspace:  # a model uploaded with its images: the workspace comes back too
                sources.remember(workspace)
    if lost:
        st.session_state.setdefault(GONE_MODELS, []).append(
            f"{lost} model{'s' if lost > 1 else ''} you uploaded earlier "
            f"{'are' if lost > 1 else 'is'} no longer on this server (it was restarted, or it "
            f"keeps only the last {cache.MAX_UPLOADS} uploads): upload "
            f"{'them' if lost > 1 else 'it'} again on the Your model page."
        )


def default_model(dataset: str) -> str:
    ready = models(dataset)
    if sources.has_one_model(dataset):
        return ready[0]
    return f"{dataset}-cnn" if f"{dataset}-cnn" in ready else ready[0]


@dataclass(frozen=True)
class Field:
    initial: Any  # the value, or a function giving it (read when a session starts)
    parse: Callable[[str], Any]  # raises ValueError for a bad URL value
    dump: Callable[[Any], str] = str

    @property
    def default(self) -> Any:
        return self.initial() if callable(self.initial) else self.initial


def _first_source() -> str:
    """The first workspace the server was started on (python -m dashboard --workspace W),
    else MNIST."""
    return sources.keys()[0]


def _first_model() -> str:
    first = _first_source()
    return first if sources.has_one_model(first) else "mnist-cnn"


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


def _class_or(*words: str) -> Callable[[str], str]:
    """One of `words`, or a class index "0" … "999" (a view checks it against its K)."""

    def parse(text: str) -> str:
        if text in words or (text.isdigit() and int(text) < MAX_CLASSES and text == str(int(text))):
            return text
        raise ValueError(f"expected {', '.join(words)} or a class number")

    return parse


def _source_key(text: str) -> str:
    if text not in sources.keys():
        raise ValueError(f"unknown data set; known: {', '.join(sources.keys())}")
    return text


def _flag(text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise ValueError("expected true or false")
    return text.lower() == "true"


def _model(text: str) -> str:
    if text in sources.PHOTO_MODEL_KEYS and text in sources.photo_models():
        return text  # the ImageNet workspace's (`models()` lists a data set's: its own)
    if text not in models():
        raise ValueError(f"unknown model; known: {', '.join(models())}")
    return text


def _model_or_none(text: str) -> str:
    return "" if not text else _model(text)


def _models(text: str) -> list[str]:
    names = list(dict.fromkeys(t for t in text.split(",") if t))  # each model once
    if len(names) > MAX_COMPARE:
        raise ValueError(f"at most {MAX_COMPARE} models can be compared")
    return [_model(t) for t in names]


def _names_of(known: tuple[str, ...], most: int) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = list(dict.fromkeys(t for t in text.split(",") if t))
        if len(names) > most or not set(names) <= set(known):
            raise ValueError(f"expected at most {most} of {', '.join(known)}")
        return names

    return parse


def _tokens(text: str) -> list[str]:
    tokens = list(dict.fromkeys(t for t in text.split(",") if t))
    if len(tokens) > cache.MAX_UPLOADS or not all(
        0 < len(t) <= 32 and set(t) <= TOKEN_CHARS for t in tokens
    ):
        raise ValueError("not a list of upload keys")
    return tokens


def _image(text: str) -> str:
    from sandbox.images import decode_image28

    decode_image28(text)  # validates
    return text


def _column_name(text: str) -> str:
    if len(text) > MAX_NAME:
        raise ValueError(f"a column name of at most {MAX_NAME} characters")
    return text


def _column_names(text: str) -> list[str]:
    names = [urllib.parse.unquote(t) for t in text.split(",") if t]
    if len(names) > 500:
        raise ValueError("at most 500 columns")
    return [_column_name(n) for n in dict.fromkeys(names)]


def _dump_names(names: list[str]) -> str:
    return ",".join(urllib.parse.quote(n, safe="") for n in names)


def _layer_name(text: str) -> str:
    """A module's dotted name in a model ("layer4", "features.7.0"), or "" for the automatic
    layer: letters, digits, "_" and "." only, as `named_modules` writes them."""
    name = text.strip()
    if len(name) > 200 or not all(c.isalnum() or c in "_." for c in name):
        raise ValueError("not a layer's name")
    return name


def _room_code(text: str) -> str:
    code = text.strip().upper()
    if not 0 < len(code) <= 16 or not code.isalnum():
        raise ValueError("not a class code")
    return code


def _secret(text: str) -> str:
    if not 0 < len(text) <= 64 or not set(text) <= TOKEN_CHARS:
        raise ValueError("not a key")
    return text


def _output(text: str) -> str:
    """An output of a table model: JSON `[key, column]`, key null, an index or a dict key."""
    try:
        key, column = json.loads(text)
    except (ValueError, TypeError):
        raise ValueError("expected [key, column]") from None
    if not (key is None or isinstance(key, int | str)) or not isinstance(column, int):
        raise ValueError("expected [key, column]")
    if column < 0 or (isinstance(key, str) and len(key) > MAX_NAME):
        raise ValueError("expected [key, column]")
    return text


FIELDS: dict[str, Field] = {
    DATASET: Field(_first_source, _source_key),
    MODEL: Field(_first_model, _model),
    SOURCE: Field("test", _choice(SOURCES)),
    INDEX: Field(0, _number(int, 0, 10_000_000)),
    IMAGE: Field("", _image),
    TRUE_CLASS: Field("any", _class_or("any")),
    CORRECTNESS: Field("all", _choice(CORRECTNESS_CHOICES)),
    TARGET: Field("predicted", _class_or(*TARGETS)),
    METHOD: Field("gradient", _choice(tuple(saliency.METHOD_INFO))),
    LAYER: Field("", _layer_name),  # a layer map's layer by its dotted name; "": automatic
    SCORE: Field("logit", _choice(SCORES)),
    SIGN: Field("absolute", _choice(SIGNS)),
    CMAP: Field("inferno", _choice(SEQUENTIAL_CMAPS)),
    CMAP_SIGNED: Field("RdBu_r", _choice(DIVERGING_CMAPS)),
    ALPHA: Field(0.5, _number(float, 0.0, 1.0)),
    CLIP: Field(99.0, _number(float, 50.0, 100.0)),
    SCALE: Field("map", _choice(SCALES)),
    COMPARE: Field([], _models, lambda v: ",".join(v)),
    LESSON: Field("nudge", _choice(LESSONS)),
    # The metric bench: methods, metrics and images per class.
    B_METHODS: Field(
        list(BENCH_METHODS),
        _names_of(tuple(saliency.METHOD_INFO), MAX_BENCH_METHODS),
        lambda v: ",".join(v),
    ),
    B_METRICS: Field(
        list(BENCH_METRICS), _names_of(BENCH_METRICS, len(BENCH_METRICS)), lambda v: ",".join(v)
    ),
    B_PER_CLASS: Field(2, lambda t: int(_choice(tuple(map(str, BENCH_PER_CLASS)))(t))),
    PRESENT: Field(False, _flag, lambda v: "true" if v else "false"),
    # Misclassifications: -1 (true and predicted class, image) is the page's own start (the
    # most frequent confusion, the first image shown); "" the first other model.
    MIS_KIND: Field("cell", _choice(MIS_KINDS)),
    MIS_TRUE: Field(-1, _number(int, -1, 999_999)),
    MIS_PRED: Field(-1, _number(int, -1, 999_999)),
    MIS_OTHER: Field("", _model_or_none),
    MIS_PAGE: Field(1, _number(int, 1, 10_000_000)),
    MIS_INDEX: Field(-1, _number(int, -1, 10_000_000)),
    # The ImageNet workspace without its weights (offline): its visitor opted into random ones.
    RANDOM_WEIGHTS: Field(False, _flag, lambda v: "true" if v else "false"),
    # Tables: "" and [] mean "this table's default" (every numeric column but the target...).
    T_SOURCE: Field("example", _choice(TABLE_SOURCES)),
    T_ALL: Field(True, _flag, lambda v: "true" if v else "false"),
    T_FEATURES: Field([], _column_names, _dump_names),
    T_TARGET: Field("", _column_name),
    T_DROP: Field(False, _flag, lambda v: "true" if v else "false"),
    T_OUTPUT: Field("", _output),
    T_SCALE: Field("std", _choice(TABLE_SCALES)),  # only × std compares features
    # What y is for an output of K ≥ 2 columns (a classifier): its class's probability, as a
    # classifier's user reads it; a one-column output (a regression) is always itself.
    T_SCORE: Field("probability", _choice(SCORES)),
    T_ROW: Field(1, _number(int, 1, 10_000_000)),
    T_NUDGE: Field("", _column_name),
    # The live class: the room's code; the teacher's and a student's secret keys (a reload
    # keeps the URL, so it keeps control of the class or the student's answers).
    ROOM: Field("", _room_code),
    TEACHER: Field("", _secret),
    ME: Field("", _secret),
    # Secret keys of this session's uploads: a reload (which keeps the URL) gets them back.
    MINE: Field([], _tokens, lambda v: ",".join(v)),
}


def _canonical() -> dict[str, Any]:
    if VIEW not in st.session_state:
        view = {k: f.default for k, f in FIELDS.items()}
        problems = []
        query = st.query_params.to_dict()
        try:  # first: the uploads this link may use, so that model= and compare= can name them
            _claim(_tokens(query.get(MINE, "")))
        except ValueError as err:
            problems.append(f"`mine=` ignored ({err})")
        for key, text in query.items():
            if key not in FIELDS or key == MINE:
                continue
            try:
                view[key] = FIELDS[key].parse(text)
            except (ValueError, TypeError) as err:
                problems.append(f"`{key}={text[:40]}` ignored ({err})")
        st.session_state[VIEW] = view
        st.session_state[URL_PROBLEMS] = problems
    return st.session_state[VIEW]


def init() -> dict[str, Any]:
    """Seed every widget key from the canonical state and return the canonical dict. The
    router (app.py) calls it once per rerun, before any page; pages read `current()`."""
    view = _canonical()
    if (asked := st.session_state.pop(OPEN_DATASET, None)) in sources.keys():
        st.session_state[DATASET] = asked  # `put` is too late once the box is drawn
    if view[DATASET] not in sources.keys():  # a workspace the server no longer serves
        view[DATASET] = FIELDS[DATASET].default
    for key in FIELDS:  # a widget changed in the last interaction is newer than the canonical
        if key in st.session_state:
            view[key] = st.session_state[key]
    # A model from another data set (an edited link, or a data-set switch) falls back: to
    # the one this session last chose for that data set, so switching away and back keeps it.
    ready = models(view[DATASET])
    chosen = st.session_state.setdefault(MODEL_PER_DATASET, {})
    if view[MODEL] not in ready:
        kept = chosen.get(view[DATASET])
        view[MODEL] = kept if kept in ready else default_model(view[DATASET])
    chosen[view[DATASET]] = view[MODEL]
    view[COMPARE] = [m for m in dict.fromkeys(view[COMPARE]) if m in ready and m != view[MODEL]][
        :MAX_COMPARE
    ]
    tokens = st.session_state.get(UPLOAD_TOKENS, {})
    view[MINE] = [tokens[m] for m in st.session_state.get(cache.USER_MODELS, []) if m in tokens]
    for key, value in view.items():
        if key not in st.session_state or st.session_state[key] != value:
            st.session_state[key] = value
    return view


def open_dataset(key: str, page: str) -> None:
    """Open `page` (a file of `page_files/`) on data set `key`: a page's link to another's."""
    st.session_state[OPEN_DATASET] = key
    st.switch_page(page)


def current() -> dict[str, Any]:
    """This rerun's canonical view, as the router's `init` made it."""
    return st.session_state[VIEW]


def keep(*keys: str) -> None:
    """Keep a view's own widget values while other widgets or pages show: Streamlit drops a
    widget's value on a run that does not draw it; writing it back makes it survive."""
    for key in keys:
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]


def get(key: str) -> Any:
    return st.session_state[VIEW][key]


def put(key: str, value: Any) -> None:
    """Change a value from code (a button): widget and canonical state together."""
    st.session_state[VIEW][key] = value
    st.session_state[key] = value


def sync() -> None:
    """Copy widget values into the canonical state and write the non-default ones to the URL."""
    view = st.session_state[VIEW]
    for key in FIELDS:
        if key in st.session_state:
            view[key] = st.session_state[key]
    defaults = {k: f.default for k, f in FIELDS.items()}
    query = {k: FIELDS[k].dump(v) for k, v in view.items() if v != defaults[k]}
    if view[SOURCE] == "test":
        query.pop(IMAGE, None)
    if query != st.query_params.to_dict():
        st.query_params.from_dict(query)


def model_label(name: str) -> str:
    """A model as the sidebar's picker shows it: its name and test accuracy."""
    try:
        accuracy = render.accuracy(cache.model_info(name).test_accuracy, "")
        return f"{cache.display_name(name)} ({accuracy})"
    except WorkspaceError:
        return name


def settings_json(extra: dict[str, Any] | None = None, view: dict[str, Any] | None = None) -> str:
    """The view's settings (this session's, or `view`) and `extra` facts (the prediction…) as
    pretty JSON."""
    view = dict(st.session_state[VIEW] if view is None else view)
    for secret in (MINE, TEACHER, ME):  # upload and class keys are secrets, not settings
        view.pop(secret, None)
    if view[SOURCE] == "test":
        view.pop(IMAGE, None)
    return json.dumps({"settings": view, **(extra or {})}, indent=2, default=str)
