"""Explore: one image, one model, every class and method. Why did the model say 9?

The page and its explanation fragment live here; the rest is beside it (issue 31), every name
re-exported here: the labels and the map's controls (`explore_controls`), the image chooser
(`explore_image`), the computed view and its store (`explore_explained`), the panel's content
and the explore route (`explore_route`), and the report (`explore_report`)."""

from __future__ import annotations

import numpy as np
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

import saliency
from dashboard import PAGE_DRAWN, PAGE_WAITS, cache, render, sources, state
from dashboard.components import saliency_panel
from dashboard.rate_limits import EXPENSIVE, Refused
from dashboard.render import Style, class_label, class_md
from dashboard.views import explore_weights
from dashboard.views.explore_controls import (  # noqa: F401 (re-exported: pages and tests read them here)
    _PIXEL_LABELS,
    ALL_CLASSES_UP_TO,
    CONTROLS,
    LAYER_LABEL,
    MAIN_FRAGMENT,
    METHOD_LABELS,
    NEXT_LABEL,
    PREDICTED_COLOUR,
    PREVIOUS_LABEL,
    SAME_MAP_RHO,
    SCORE_SYMBOL,
    TARGET_LABELS,
    TOP_CLASSES,
    TRUE_COLOUR,
    UNSIGNED,
    _is_pixel,
    map_controls,
    method_controls,
    panel_choice,
    panel_settings,
    saliency_methods,
    sidebar_controls,
    sidebar_pickers,
)
from dashboard.views.explore_explained import (  # noqa: F401 (re-exported)
    EXPLAINED_BYTES,
    EXPLAINED_KEYS,
    Explained,
    _arrays_of,
    _class_maps,
    _explained,
    _explained_now,
    _maps_shown,
    explained,
    few_maps,
)
from dashboard.views.explore_image import (  # noqa: F401 (re-exported)
    _candidates,
    _described,
    _drawn_image,
    _neighbour,
    _open_path,
    _remember_image,
    _step,
    _test_image,
    _uploaded_image,
    _workspace_upload,
    choose_image,
)
from dashboard.views.explore_report import (  # noqa: F401 (re-exported)
    _marks,
    _report_button,
    _report_compare,
    _report_contrast,
    _report_grid,
    _report_main,
    report_sections,
)
from dashboard.views.explore_route import (  # noqa: F401 (re-exported)
    ROUTE_CACHE_BYTES,
    ROUTE_ENV,
    ROUTE_KEYS,
    _bar_classes,
    _export_facts,
    _export_note,
    _export_stem,
    _grid_text,
    _route,
    _route_cache,
    _route_payload,
    _thumbnail_width,
    panel_content,
    route_payload,
)
from saliency.metrics import spearman
from workspace.opened import Workspace

# Session keys of this page: the panel's (its component's key, a prefix of its own keys) and
# the downloads'.
PANEL_KEY = "explore_panel"
# Next or Previous clicked in the panel, or another model chosen there: the page reruns.
PANEL_STEPPED = "explore_panel_stepped"
DOWNLOAD_PNG = "download_png"
DOWNLOAD_NPY = "download_npy"
DOWNLOAD_JSON = "download_json"


# --- sections -------------------------------------------------------------------------------


def _prediction_table(probs: np.ndarray, names: tuple[str, ...], pred: int, true: int | None):
    """The class probabilities as a Markdown table: the fallback's (the panel draws them as bars
    to hover over and click). Not a chart: drawing one costs a fresh browser over a second, and
    the fallback shows while the panel loads."""
    rows = ["| class | probability |", "| :-- | --: |"]
    for k in _bar_classes(probs, true):
        marks = (" · predicted" if k == pred else "") + (" · true" if k == true else "")
        label = render.plain(class_label(k, names)).replace("|", "\\|")
        rows.append(f"| {label}{marks} | {probs[k]:.4f} |")
    st.markdown("\n".join(rows))


def _framed(rgb: np.ndarray, colour: tuple[int, int, int] | None, width: int = 4) -> np.ndarray:
    """A picture inside a coloured frame (white when `colour` is None)."""
    h, w = rgb.shape[:2]
    out = np.empty((h + 2 * width, w + 2 * width, 3), dtype=np.uint8)
    out[:] = colour or (255, 255, 255)
    out[width:-width, width:-width] = rgb
    return out


def render_view() -> None:
    view = state.current()
    for problem in st.session_state.get(state.URL_PROBLEMS, []):
        st.warning(f"Link: {problem}")
    src = sources.source(view["dataset"])
    slots = sidebar_controls()
    st.title("Explore")
    for note in src.notes:
        st.caption(note)
    if not explore_weights.ready(cache.model_info(view["model"])):
        return
    with st.container(border=True):
        image, true, described = choose_image(view, src)
    if image is not None:  # what the model says: the same whatever the map
        info = cache.model_info(view["model"])
        probs = cache.probabilities(view["model"], image)
        pred = int(probs.argmax())
        names = info.class_names
        verdict = "" if true is None else "✓ right" if true == pred else "✗ wrong"
        st.subheader(
            f"{render.plain(cache.display_name(view['model']))} says "
            f"**{class_md(pred, names)}** ({probs[pred]:.1%})"
            + (f" · true class {class_md(true, names)} {verdict}" if true is not None else "")
        )
    others = [m for m in state.models(view["dataset"]) if m != view["model"]]
    explanation(image, true, described, slots, others, src)


# The view's keys that change in the explanation fragment (it copies them into the view).
FRAGMENT_KEYS = (state.TARGET, state.LAYER, state.METHOD, state.SCORE, state.SIGN, state.SCALE,
                 state.CLIP, state.ALPHA, state.CMAP, state.CMAP_SIGNED, state.COMPARE)  # fmt: skip


@st.fragment(key=MAIN_FRAGMENT)
def explanation(
    image: np.ndarray | None,
    true: int | None,
    described: str,
    slots: tuple[DeltaGenerator, DeltaGenerator, DeltaGenerator],
    others: list[str],
    src: Workspace,
) -> None:
    """Everything below the prediction, as one fragment: a new target, method or colour reruns
    this alone, not the router, the sidebar and the image chooser. The panel shows what needs
    no new gradients before the server has even heard of it. `slots`: the sidebar's places of
    the fragment's controls (`sidebar_controls`); `others`: the models that can be compared with
    this one; `src`: the view's data set."""
    if st.session_state.pop(PANEL_STEPPED, False):
        st.rerun(scope="app")  # another image: the chooser and the heading too, not this alone
    view = state.current()
    for key in FRAGMENT_KEYS:  # on a fragment rerun, the widgets' new values
        if key in st.session_state:
            view[key] = st.session_state[key]
    places, owned = None, False  # owned: the panel draws its own method, score and model pickers
    with render.failures_said():
        info = cache.model_info(view["model"])
        names = info.class_names  # the data set's, or an uploaded model's own
        fallback = True  # the server draws: no panel (no image, or a method that can't explain)

        def panel_draws(problem: str) -> bool:
            nonlocal fallback
            if image is not None and not problem:
                fallback = saliency_panel.fallback_due(PANEL_KEY, saliency_panel.said(PANEL_KEY))
            return not fallback

        problem, places = map_controls(view, image, names, slots, panel_draws)
        if problem:
            label = saliency.method_info(view["method"]).label
            st.warning(
                f"**{label} can't explain {render.plain(cache.display_name(view['model']))}:** "
                f"{render.plain(problem)}. Choose another method in the sidebar; nothing else "
                "you chose has changed."
            )
        elif image is not None:
            try:
                owned = _explain(view, info, names, image, true, described, others, src, fallback)
            except (ValueError, TypeError) as err:
                if view["method"] in saliency.METHODS:
                    raise  # the pixel gradients explain every differentiable model
                # The library refusing this model for this method (LRP: no rule for a layer;
                # guided backprop: no nn.ReLU), found only when the map is asked for.
                label = saliency.method_info(view["method"]).label
                st.warning(
                    f"**{label} can't explain "
                    f"{render.plain(cache.display_name(view['model']))}:** "
                    f"{render.plain(err)}. Choose another method in the sidebar; nothing else "
                    "you chose has changed."
                )
    if places is not None:  # also after a failure said above: the sidebar's boxes then
        sidebar_pickers(view, places, owned)
    state.sync()  # the link follows


def _on_pick() -> None:
    """A class clicked in the panel, or chosen in its target box (already on screen there, if
    the panel holds its map): it becomes the target."""
    pick = saliency_panel.trigger(PANEL_KEY, "pick")
    if not isinstance(pick, dict):
        return
    k, seq = pick.get("k"), pick.get("seq")
    if type(k) is int and 0 <= k < state.MAX_CLASSES:
        state.put(state.TARGET, str(k))
    elif k in state.TARGETS:  # chosen in the panel's target box
        state.put(state.TARGET, k)
    if type(seq) is int:
        st.session_state[f"{PANEL_KEY}_seq"] = seq


def _on_step() -> None:
    """Next or Previous clicked in the panel (the image already drawn there, from the explore
    route): the view's image; the fragment this reruns then reruns the whole page for it."""
    step = saliency_panel.trigger(PANEL_KEY, "step")
    index = step.get("index") if isinstance(step, dict) else None
    if type(index) is int and index >= 0:
        state.put(state.INDEX, index)  # the chooser says so if this data set has no such image
        st.session_state[PANEL_STEPPED] = True


def _on_choose() -> None:
    """A method, class score or model chosen in the panel's own pickers (already drawn there,
    from the explore route): the view's. A method or score reruns the fragment alone; a model
    the whole page (the heading, the sidebar's model box), as Next does."""
    models = state.public_models(state.get(state.DATASET))
    choice = panel_choice(saliency_panel.trigger(PANEL_KEY, "choose"), models)
    if choice is None:
        return
    key, value = choice
    state.put(key, value)
    if key == state.MODEL:
        state.put(state.LAYER, "")  # another model's layers (the route was asked so too)
        st.session_state[PANEL_STEPPED] = True


def _on_settings() -> None:
    """Colours, clip, scale or sign changed in the panel (already drawn there, if it can): the
    view's, the link's, the downloads' and the report's."""
    for key, value in panel_settings(saliency_panel.trigger(PANEL_KEY, "settings")).items():
        state.put(key, value)


def _showing(view, info, names, image, described, ex: Explained) -> tuple[str, str]:
    """The sentence of what the map shows and its colour scale: (the score's symbol, the
    map's caption)."""
    model_name, method = view["model"], view["method"]
    signed = ex.style.signed
    symbol = SCORE_SYMBOL[view["score"]]
    what = f"∂ {symbol}[{class_md(ex.target, names)}] / ∂x"
    c, h, w = image.shape
    reduced = (
        ""
        if c == 1
        else " Three colour channels, one map: max |g| over the channels"
        + (" (signed maps: their sum)." if signed else ".")
    )
    method_info = saliency.method_info(method)
    at = ""
    if not _is_pixel(method):
        what = f"{symbol}[{class_md(ex.target, names)}]"  # not a derivative of the pixels
        reduced = ""
    if method_info.layer:
        layer = cache.method_facts(model_name, image.shape, method, view["layer"])["layer"]
        chosen = "chosen" if view["layer"] else "automatic"
        at = f" At layer {render.plain(layer)} ({chosen}), upsampled to the image."
    st.markdown(
        f"**Showing** {METHOD_LABELS[method]} of "
        f"{'|' + what + '|' if not signed and _is_pixel(method) else what} "
        f"for {render.plain(described)}, model {render.plain(cache.display_name(model_name))} "
        f"({render.accuracy(info.test_accuracy)}).{reduced}{at}"
    )
    map_caption = what if _is_pixel(method) else f"{method_info.label} of {what}"
    st.caption(ex.style.describe(ex.lo, ex.hi))
    return symbol, map_caption


def _map_notes(view, names, image, ex: Explained) -> None:
    """What to know before reading the map: zero everywhere, a saturated softmax, integrated
    gradients' completeness, a target that hardly matters."""
    method, score, probs = view["method"], view["score"], ex.probs
    target, versus = ex.target, ex.versus
    if saliency.method_info(method).layer and not np.any(ex.main):
        st.info(
            "This map is zero everywhere: at this layer every class-weighted activation is "
            "negative, and the method's ReLU keeps only evidence for the class. Try another "
            "layer, or LayerCAM, which weighs each position by its own gradient."
        )

    if score == "probability" and probs.max() > 0.99:
        st.info(
            f"The softmax is saturated (p = {probs.max():.4f}): when a class is this certain, "
            "changing a pixel barely changes any probability, so probability maps go flat. "
            "The logit map still shows what the score depends on."
        )
    if method == "integrated_gradients":
        delta = cache.integrated_gradients_delta(view["model"], image, target, score)
        st.caption(
            f"Completeness: sum(map) − (f(x) − f(black)) = {delta:.2e}. Integrated gradients "
            "should add up to the score difference; a large delta means more steps are needed."
        )
    rho = spearman(ex.maps[target], ex.maps[versus])
    if rho >= SAME_MAP_RHO:
        st.warning(
            f"**The target hardly matters here.** The maps for {class_md(target, names)} and "
            f"{class_md(versus, names)} are nearly the same (Spearman ρ = {rho:.2f}): they show "
            "where the model is sensitive at all, not what tells the two classes apart. "
            "The contrast map below does."
        )


def _server_pictures(view, info, names, image, true, described, ex, data, map_caption, symbol):
    """The server's own pictures, prediction, contrast, grid and exports: where the panel
    failed or hasn't drawn in time."""
    main, lo, hi, style, probs = ex.main, ex.lo, ex.hi, ex.style, ex.probs
    big = render.scale_for(image.shape)
    pred = ex.pred
    with st.container(key=saliency_panel.FALLBACK_KEY):
        c1, c2, c3 = st.columns(3)
        with c1:
            render.show(render.grey(image, 1), data["image_caption"], scale=big)
        with c2:
            render.show(
                render.picture(main, lo, hi, style, scale=1), f"Map: {map_caption}", scale=big
            )
            render.show(render.colorbar(lo, hi, style.cmap), None)
        overlay = render.picture(main, lo, hi, style, image=image, scale=1)
        with c3:
            render.show(overlay, f"Overlay (alpha {style.alpha:g})", scale=big)
        left, right = st.columns([1, 1])
        with left:
            st.markdown("#### Prediction")
            if len(probs) > ALL_CLASSES_UP_TO:
                st.caption(f"The {TOP_CLASSES} most probable of {len(probs):,} classes.")
            _prediction_table(probs, names, pred, true)
        with right:
            _contrast(ex.diff, ex.target, ex.versus, names, symbol, view, style, big)
        st.markdown(f"#### {data['grid_title']}")
        st.caption(data["grid_note"])
        _class_grid(ex.maps, ex.grid_classes, image, style, (lo, hi), pred, true, names)
        overlay = render.upscale(overlay, big)  # the download: crisp pixels, as on screen
        _export(view, info, described, ex.target, view["method"], overlay, main, probs, pred,
                true, (lo, hi))  # fmt: skip


def _explain(view, info, names, image, true, described, others, src, fallback) -> bool:
    """The map's notes, the panel (or, where `fallback`, the server's own pictures), the report
    and the models compared. Returns whether the panel draws its own method, class score and
    model pickers (where the explore route can answer)."""
    costly = few_maps(view["method"], image)  # one at a time, as the explore route's
    try:
        with EXPENSIVE.turn(view["method"] if costly else None):
            ex = explained(view, image, true)
    except Refused as err:
        st.warning(render.plain(err))
        return False
    if view["target"] == "true" and true is None:
        st.caption("This image has no true class: the map is for the predicted class.")
    symbol, map_caption = _showing(view, info, names, image, described, ex)
    _map_notes(view, names, image, ex)

    # The panel: pictures, chart, contrast, every class and the exports, drawn in the browser.
    route = _route(view, src)
    arrays, data = panel_content(
        view, info, image, described, ex, st.session_state.get(f"{PANEL_KEY}_seq", 0), route
    )
    # The server's own pictures, where the panel failed or hasn't drawn in time.
    saliency_panel.panel(
        key=PANEL_KEY, arrays=arrays, data=data, fallback=fallback, on_pick=_on_pick,
        on_settings=_on_settings, on_step=_on_step, on_choose=_on_choose,
    )  # fmt: skip
    if fallback or saliency_panel.said(PANEL_KEY):
        PAGE_DRAWN.set()  # complete (see dashboard/__init__.py)
    else:
        st.session_state[PAGE_WAITS] = True
    if fallback:
        _server_pictures(view, info, names, image, true, described, ex, data, map_caption, symbol)

    _report_button(view, info, image, described, ex, data["export"]["json"])
    _compare_models(view, others, image, ex.main, ex.compare, ex.compare_targets, ex.target,
                    ex.style, names)  # fmt: skip
    return route is not None and not fallback


def _contrast(diff, target, versus, names, symbol, view, style, big) -> None:
    st.markdown(f"#### Why {class_md(target, names)} and not {class_md(versus, names)}?")
    c_style = Style(True, view["cmap_signed"], style.alpha, style.clip, False)
    c_lo, c_hi = c_style.range([diff])
    render.show(render.picture(diff, c_lo, c_hi, c_style, scale=1), None, scale=big)
    render.show(render.colorbar(c_lo, c_hi, c_style.cmap), None)
    st.caption(
        f"Map of {symbol}[{target}] − {symbol}[{versus}]: red pixels, when brighter, favour "
        f"{class_md(target, names)}; blue ones favour {class_md(versus, names)}. "
        f"Signed, on its own symmetric scale ({c_lo:.3g} … {c_hi:.3g})."
    )


def _class_grid(maps, classes, image, style, scale_range, pred, true, names) -> None:
    """Every class's map (the most probable ones for a large K), five to a row: the server's
    pictures, shown until the panel has drawn its own."""
    small = render.scale_for(image.shape, 140)
    pictures, captions = [], []
    for k in classes:
        k_lo, k_hi = scale_range if style.shared else style.range([maps[k]])
        rgb = render.thumbnail(
            render.picture(maps[k], k_lo, k_hi, style, image=image, scale=1), 160
        )
        colour = PREDICTED_COLOUR if k == pred else TRUE_COLOUR if k == true else None
        marks = (" · predicted" if k == pred else "") + (" · true" if k == true else "")
        pictures.append(_framed(rgb, colour, max(1, round(4 / small))))  # ~4 px on screen
        captions.append(f"{class_md(k, names)}{marks}")
    render.show_row(pictures, captions, scale=small)


def _compare_models(view, others, image, main, compare, compare_targets, target, style, names):
    """The same image and settings on up to MAX_COMPARE other models of the data set."""
    model_name = view["model"]
    if not others:
        return
    st.markdown("#### Compare models")
    st.multiselect(
        "Models to show beside this one (same image, same settings, one shared colour scale)",
        others,
        key=state.COMPARE,
        max_selections=state.MAX_COMPARE,
    )
    if not view["compare"]:
        return
    chosen = [model_name, *(m for m in view["compare"] if m in compare)]
    skipped = [m for m in view["compare"] if m not in compare]
    if skipped:
        label = saliency.method_info(view["method"]).label
        st.caption(
            f"{label} can't explain "
            + ", ".join(render.plain(cache.display_name(m)) for m in skipped)
            + " (the library refuses them for this method): left out of the comparison."
        )
    targets = {model_name: target, **compare_targets}
    shown = {model_name: main, **compare}
    s_lo, s_hi = style.range(list(shown.values()))
    scale = render.scale_for(image.shape, 224)
    cols = st.columns(len(chosen))
    for col, m in zip(cols, chosen, strict=True):
        p = cache.probabilities(m, image)
        acc = cache.model_info(m).test_accuracy
        with col:
            render.show(
                render.picture(shown[m], s_lo, s_hi, style, image=image, scale=scale),
                f"{m} ({render.accuracy(acc, '', 1)}): says {class_md(int(p.argmax()), names)} "
                f"({p.max():.0%}); map of class {targets[m]}",
            )
    render.show(render.colorbar(s_lo, s_hi, style.cmap), None)


def _export(view, info, described, target, method, overlay, main, probs, pred, true, lo_hi):
    """The link, and the map as PNG, .npy and its settings as JSON: the server's buttons, in
    the fallback (the panel has its own, which export what it shows)."""
    st.markdown("#### Share and export")
    st.caption(_export_note(view))
    columns = st.columns(3)
    before, after = _export_stem(view, described)
    stem = f"{before}{target}{after}"
    png, npy = render.png(overlay), render.npy_bytes(main)
    settings = state.settings_json(_export_facts(info, described, target, probs, pred, true, lo_hi))
    buttons = (
        ("Map as PNG", png, "png", "image/png", DOWNLOAD_PNG),
        ("Raw map as .npy", npy, "npy", "application/octet-stream", DOWNLOAD_NPY),
        ("Settings as JSON", settings, "json", "application/json", DOWNLOAD_JSON),
    )
    for col, (label, data, ext, mime, key) in zip(columns, buttons, strict=True):
        col.download_button(label, data, f"{stem}.{ext}", mime, key=key, on_click="ignore")
