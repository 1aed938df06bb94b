"""The panel's content (`panel_content`: what saliency_panel.js reads), the same whether the
page's fragment or the explore route asks, and the explore route itself (`route_payload`:
the panel's content without a session, for `dashboard.serve`). Split from
`dashboard.views.explore`, which re-exports every name (issue 31)."""

from __future__ import annotations

import json
import os

import numpy as np

import saliency
from dashboard import budget, cache, lru, render, sources, state
from dashboard.components import saliency_panel
from dashboard.rate_limits import EXPENSIVE
from dashboard.render import Style, class_label
from dashboard.views.explore_controls import (
    ALL_CLASSES_UP_TO,
    CONTROLS,
    METHOD_LABELS,
    NEXT_LABEL,
    PREVIOUS_LABEL,
    SCORE_LABELS,
    SCORE_SYMBOL,
    TOP_CLASSES,
    _is_pixel,
    saliency_methods,
    target_choices,
)
from dashboard.views.explore_explained import Explained, explained
from dashboard.views.explore_image import _candidates, _described, _neighbour
from saliency import display
from saliency.display import DIVERGING_CMAPS, SEQUENTIAL_CMAPS
from sandbox.images import ImageError
from workspace.opened import Workspace


def _grid_text(shown: int, k: int, method: str, style: Style) -> tuple[str, str]:
    """The grid's title and note, for `shown` maps of a model's `k` classes."""
    if shown < min(k, TOP_CLASSES):  # an expensive method on a large image (`few_maps`)
        return "The classes compared", (
            f"{METHOD_LABELS[method]} takes seconds of the server per class on an image this "
            "large: only the maps of the class explained and of the contrast's other class "
            "(and the true class) are computed. Choose another class above for its map."
            + (" Shared colour scale." if style.shared else " Each map on its own scale.")
        )
    everything = shown == k
    title = "Every class" if everything else f"The top {TOP_CLASSES} classes"
    note = (
        ("One map per class" if everything else
         f"One map for each of the {TOP_CLASSES} most probable classes "
         "(and the true class), most probable first")
        + (
            " from one Jacobian call (one forward pass, one backward pass per class)"
            if method == "gradient"
            else f", {METHOD_LABELS[method]}, all classes in one batch"
        )
        + ". Orange frame: predicted class; green frame: true class."
        + (" Shared colour scale." if style.shared else " Each map on its own scale.")
    )  # fmt: skip
    return title, note


def _bar_classes(probs: np.ndarray, true: int | None) -> list[int]:
    """The classes of the probability chart: all K up to ALL_CLASSES_UP_TO, else the
    TOP_CLASSES most probable, and the true class however unlikely."""
    k_all = len(probs)
    shown = range(k_all) if k_all <= ALL_CLASSES_UP_TO else np.argsort(-probs)[:TOP_CLASSES]
    shown = [int(k) for k in shown]
    if true is not None and true not in shown:
        shown.append(true)
    return shown


def _thumbnail_width(h: int, w: int, px: int) -> int:
    """The width of `render.thumbnail` of an h × w picture, without making it."""
    return w if max(h, w) <= px else max(1, round(w * px / max(h, w)))


def _export_note(view: dict) -> str:
    return (
        "The address bar holds this whole view (data set, model, image, target, method and "
        "options): copy it to share, or bookmark it. Drawn and uploaded digits travel in the "
        "link (a workspace's uploaded image does not: it stays in this session)."
        + (
            " It also holds the secret keys of the models you uploaded (`mine=…`): remove that "
            "part before you share it, unless the others may use your models."
            if view.get("mine")
            else ""
        )
    )


def _export_stem(view: dict, described: str) -> tuple[str, str]:
    """File names are `{before}{target}{after}.png` (and .npy, .json)."""
    safe = "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in described)
    return f"{view['model'].replace(':', '-')}_{safe}_class", f"_{view['method']}"


def _export_facts(info, described, target, probs, pred, true, lo_hi) -> dict:
    """What the JSON export says beside the settings."""
    top = np.argsort(-probs)[:TOP_CLASSES]
    return {
        "model_test_accuracy": info.test_accuracy,
        "image": described,
        "predicted": pred,
        "true": true,
        "target": target,
        "probabilities": (
            [round(float(p), 6) for p in probs]
            if len(probs) <= ALL_CLASSES_UP_TO
            else {int(k): round(float(probs[k]), 6) for k in top}
        ),
        "display_range": list(lo_hi),
    }


def panel_content(
    view: dict,
    info,
    image: np.ndarray,
    described: str,
    ex: Explained,
    seq: int,
    route: dict | None = None,
) -> tuple[dict[str, np.ndarray], dict]:
    """The panel's arrays and data (what saliency_panel.js reads) for `ex`. The same whether
    the page's fragment or the explore route (`route_payload`) asks."""
    names = info.class_names
    c, h, w = image.shape
    target, probs, style = ex.target, ex.probs, ex.style
    big = render.scale_for(image.shape)
    small = render.scale_for(image.shape, 140)
    grid_title, grid_note = _grid_text(len(ex.grid_classes), len(names), view["method"], style)
    bars = _bar_classes(probs, ex.true)
    before, after = _export_stem(view, described)
    facts = _export_facts(info, described, target, probs, ex.pred, ex.true, (ex.lo, ex.hi))
    arrays = {
        "maps": ex.sent,
        "rgb": display.to_rgb(image),
        **({} if ex.from_maps else {"contrast": ex.diff}),
        # Every colour table (a few hundred bytes each, sent once): a colour map picked in
        # the sidebar is drawn before the server has heard of it.
        **{f"lut:{n}": saliency_panel.lut(n) for n in SEQUENTIAL_CMAPS + DIVERGING_CMAPS},
        **{f"extra{i}": m for i, m in enumerate(ex.compare.values() if style.shared else ())},
    }
    data = {
        "classes": ex.classes,
        "target": target,
        "pred": ex.pred,
        "true": ex.true,
        "runner_up": ex.runner_up,
        "grid": [int(k) for k in ex.grid_classes],
        "bars": [[k, float(probs[k])] for k in bars],
        "labels": {str(k): class_label(k, names) for k in {*ex.classes, *bars}},
        "absolute_of_signed": ex.of_signed,
        "signed": style.signed,
        "alpha": style.alpha,
        "clip": style.clip,
        "shared": style.shared,
        # The settings, the panel's switches' labels and options, and which it draws itself.
        "cmap": view["cmap"],
        "cmap_signed": view["cmap_signed"],
        "sign": view["sign"],
        "scale_view": view["scale"],
        "controls": CONTROLS,
        "sign_local": view["method"] == "gradient" and c == 1,
        "scale_local": not view["compare"],
        "symbol": SCORE_SYMBOL[view["score"]],
        # A map that is not a derivative of the pixels (Grad-CAM, LRP, …) is named by its
        # method in the caption: "Grad-CAM of logit[7]", not "∂ logit[7] / ∂x".
        "map_of": "" if _is_pixel(view["method"]) else saliency.method_info(view["method"]).label,
        "scale": big,
        "grid_px": _thumbnail_width(h, w, 160) * small,
        "image_caption": f"What the model sees ({h} × {w}{', RGB' if c == 3 else ''})",
        "grid_title": grid_title,
        "grid_note": grid_note,
        "bars_note": (
            f"The {TOP_CLASSES} most probable of {len(probs):,} classes."
            if len(probs) > ALL_CLASSES_UP_TO
            else ""
        ),
        "contrast_from_maps": ex.from_maps,
        "contrast_target": target,
        "contrast_versus": ex.versus,
        "export": {
            "before": before,
            "after": after,
            "note": _export_note(view),
            "json": json.loads(state.settings_json(facts, view)),
        },
        "seq": seq,
        "route": route,
        "own_controls": True,  # and its target box:
        **{"target_choices": target_choices(names), "target_choice": view["target"]},
    }
    return arrays, data


# --- the explore route: the panel's content without a session -------------------------------

ROUTE_ENV = saliency_panel.ROUTE_ENV
# The view's keys the route reads (the test image's, the model's and the map's settings).
ROUTE_KEYS = ("dataset", "model", "index", "true_class", "correctness", "target", "method",
              "layer", "score", "sign", "scale", "clip", "alpha", "cmap",
              "cmap_signed")  # fmt: skip


def routable(view: dict, public: list[str] | None = None) -> bool:
    """Whether the explore route can answer for this view: a route (`python -m dashboard`, not
    `streamlit run`), a test image (not an upload or a drawing), a public model and no models
    compared (the route knows nothing of sessions). `public`: the data set's public models,
    where the caller has them."""
    return (
        bool(os.environ.get(ROUTE_ENV))
        and view["source"] == "test"
        and not view["compare"]
        and view["model"] in (state.public_models(view["dataset"]) if public is None else public)
    )


def _route(view: dict, src: Workspace, public: list[str] | None = None) -> dict | None:
    """How the panel asks `dashboard.serve`'s explore route for the content of the view its own
    Next, Previous or pickers show, before the server's rerun brings it: the route's address,
    this view's query, the images Next and Previous show, the buttons' labels, and the
    pickers' choices (`_pickers`). None where the route can't answer (`routable`). `public`:
    the data set's public models, where the caller has them (listed once per answer)."""
    if public is None:
        public = state.public_models(view["dataset"])
    if not routable(view, public):
        return None
    candidates = _candidates(view, src)
    i = int(view["index"])
    return {
        "url": os.environ[ROUTE_ENV],
        "query": {k: state.FIELDS[k].dump(view[k]) for k in ROUTE_KEYS},
        "next": _neighbour(candidates, i, 1),
        "previous": _neighbour(candidates, i, -1),
        "buttons": {"next": NEXT_LABEL, "previous": PREVIOUS_LABEL},
        "pickers": _pickers(tuple(public)),
    }


def _pickers(public: tuple[str, ...]) -> dict:
    """The panel's method, class score and model pickers: their labels (the sidebar's) and
    [value, text] choices: every method, every score, the data set's public models (the
    route serves no others) by their names and accuracies. Made for each answer (~80 us for
    five models: their cards are cached), so a workspace's card that changes shows."""
    return {
        "labels": {
            "method": CONTROLS["method"],
            "score": CONTROLS["score"],
            "model": state.MODEL_PICKER,
        },
        "methods": [[m, METHOD_LABELS[m]] for m in saliency_methods()],
        "scores": [[s, SCORE_LABELS[s]] for s in state.SCORES],
        "models": [[m, state.model_label(m)] for m in public],
    }


ROUTE_CACHE_BYTES = budget.share("route")  # 92 MB by default: ~1,400 payloads of 28 × 28
_route_cache = lru.store("route")


def route_payload(query: dict[str, str]) -> bytes:
    """`_route_payload` of the query's keys that matter, the latest answers kept (up to
    ROUTE_CACHE_BYTES): the same view asked for again (by other students, or on the way back)
    costs nothing."""
    key = tuple((k, str(query[k])[:100]) for k in (*ROUTE_KEYS, "seq") if k in query)
    body = _route_cache.get(key)
    if body is None:
        # SmoothGrad and the like take seconds of a core: one (SALIENCY_EXPENSIVE_AT_ONCE) at a
        # time, the others wait their turn, or are refused when too many wait (issue 28).
        with EXPENSIVE.turn(dict(key).get("method")):
            body = _route_payload(dict(key))
        _route_cache.put(key, body, len(body))
    return body


def _route_payload(query: dict[str, str]) -> bytes:
    """The panel's payload, every array carried, for the view that `query` describes (the
    keys of ROUTE_KEYS, as the link writes them; the others take their defaults) and a bundled
    test image or a workspace's image: public content, the same for every visitor. Raises
    ValueError for a malformed query, LookupError for a data set, model or image this server
    doesn't have."""
    own = ("dataset", "model")  # checked here: the fields' own checks read the session
    view = {k: f.default for k, f in state.FIELDS.items() if k not in own}
    view.update(compare=[], source="test", dataset=query.get("dataset", ""))
    view["model"] = query.get("model", "")
    for key in ROUTE_KEYS:
        if key not in own and key in query:
            view[key] = state.FIELDS[key].parse(query[key])
    if view["dataset"] not in sources.public_keys():
        raise LookupError(f"no data set {view['dataset'][:40]!r}")
    public = state.public_models(view["dataset"])
    if view["model"] not in public:
        raise LookupError(f"no model {view['model'][:40]!r} for this data set")
    src = sources.source(view["dataset"])
    index = int(view["index"])
    if index >= len(src):
        raise LookupError(f"no image #{index}")
    info = cache.model_info(view["model"])
    if view["target"] not in state.TARGETS and int(view["target"]) >= len(info.class_names):
        raise ValueError("no such class")
    try:
        image = src.image(index)
    except ImageError as err:
        raise LookupError(str(err)) from None
    seq = query.get("seq", "0")
    seq = int(seq) if seq.isdigit() and len(seq) < 10 else 0
    ex = explained(view, image, int(src.labels[index]))
    arrays, data = panel_content(view, info, image, _described(src, index), ex, seq,
                                 _route(view, src, public))  # fmt: skip
    return saliency_panel.pack_all(arrays, data)
