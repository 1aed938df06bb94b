"""The Explore view's saliency panel: the image, the target's map and overlay, the class
probabilities, the contrast map, every class's map and the exports, drawn in the browser from
arrays the server sends once. Its JavaScript, its payload (`PanelData`) and the packing live in
the library (`saliency.panel`), shared with the notebook widget; this module mounts it in
Streamlit (entry point `saliency/panel/streamlit.js`).

What needs no new gradients then needs no server to be seen: hovering over a class (in the
grid or the chart) previews its map, a click shows it at once and reaches the server as a
trigger (`pick`) that reruns only the view's fragment (for the link, the target box, the
contrast map of the new pair of classes). The target class, colour maps, alpha, clip, colour
scale and sign are the panel's own switches (`PanelData.own_controls`): a change is drawn at
once and reaches the server as the component's state `settings` (every one of them; a target
chosen in the box as `pick`), which reruns the fragment too: `on_settings` puts them in the
view, so the link, the downloads and the report follow. The sidebar draws those controls only
in the fallback. The exports are made in the browser from what it shows.

The browser does `saliency.display`'s arithmetic operation for operation, so its pixels equal the
server's (tests/browser/test_browser.py compares them). A panel that fails to load or to draw never
leaves a blank space: the server draws its own pictures, chart and buttons (the fallback) when
the panel reports an error (its state `alive` false), and when it has not reported that it drew
(`alive` true) within `wait_s()` of the first run that mounted it: a small fragment with
`run_every` (`_watchdog`) looks then. The first run does not send them at once: a new
visitor's browser (one core) drew the panel ~0.8 s later when it also had to build and fetch
pictures that the panel hides as soon as it draws.

What needs new gradients (another method, class score, model or test image) the server computes,
and the panel draws the rerun's payload. But for public content (a bundled test image or a
workspace's, a registry model) the panel has its own Next and Previous (trigger `step`; the
image chooser's hide meanwhile) and its own method, class score and model pickers (trigger
`choose`; the sidebar doesn't draw its method and score boxes meanwhile, and its model box
hides), and need not wait for the page's rerun: it asks `dashboard.serve`'s explore route for
the same payload (`pack_all`; `dashboard.views.explore.route_payload`) at the click, and
fetches the image Next shows ahead of it. A view the page has drawn before (Previous, or back
to a method) it draws again from the arrays it still holds, asking nothing. The panel's
JavaScript reads nothing of Streamlit's page.

Arrays travel by content: each is named by a hash, and its bytes are sent (raw, in one binary
payload with the settings: `saliency.panel.pack`) only when this session's browser has not had
them yet, so colours, clip or alpha send a few kilobytes of settings, not the maps. A browser
that lost some asks for them again (trigger `missing`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import streamlit as st

from dashboard import EXPLORE_ROUTE_ENV
from saliency import panel as core
from saliency.panel import MAGIC, PanelData, array_id, exact, lut, pack, unpack  # noqa: F401

ROUTE_ENV = EXPLORE_ROUTE_ENV  # where dashboard.serve tells the pages its explore route is
FALLBACK_KEY = "explore_fallback"  # the container of the server's own pictures (see the CSS)
MAX_SENT = 48  # arrays this session's browser is taken to hold (arith.js keeps 64)
WAIT_ENV = "SALIENCY_PANEL_WAIT_S"  # seconds a first run waits for the panel; 0: never waits
WAIT_S = 3.0
MIN_WATCH_S = 0.5

_mount = st.components.v2.component(
    "saliency_panel",
    html='<div class="sal-panel"></div>',
    css=core.css(),
    js=core.source("streamlit"),
    isolate_styles=False,  # in the page's DOM: the map's <img> is found as st.image's is
)


def pack_arrays(
    data: dict[str, Any], arrays: dict[str, np.ndarray], carry: Callable[[str], bool]
) -> bytes:
    """`saliency.panel.pack_arrays` of the view's `data`, checked against `PanelData`'s fields
    (a key it doesn't name is a TypeError here, not a panel that ignores it)."""
    return core.pack_arrays(PanelData(**data), arrays, carry)


def pack_all(arrays: dict[str, np.ndarray], data: dict[str, Any]) -> bytes:
    """`data` and every one of `arrays` in one payload (for a browser that may hold none)."""
    return core.pack_all(arrays, PanelData(**data))


def said(key: str) -> bool | None:
    """What the panel last reported in this session's browser (its state `alive`): True, it
    drew; False, it failed; None, nothing yet."""
    value = st.session_state.get(key)
    return bool(value["alive"]) if value and "alive" in value else None


def wait_s() -> float:
    """How long a panel that has said nothing yet is waited for (`SALIENCY_PANEL_WAIT_S`, in
    seconds, up to an hour; anything else: 3)."""
    try:
        value = float(os.environ.get(WAIT_ENV, WAIT_S))
    except ValueError:
        return WAIT_S
    return value if 0 <= value <= 3600 else WAIT_S


def _since_key(key: str) -> str:
    return f"{key}_waiting_since"


def fallback_due(key: str, reported: bool | None) -> bool:
    """Whether the server draws its own pictures in this run: the panel reported an error, or
    (`reported`, from `said`) has reported nothing for `wait_s()` since the first run that
    mounted it."""
    if reported is not None:
        st.session_state.pop(_since_key(key), None)
        return not reported
    since = st.session_state.setdefault(_since_key(key), time.monotonic())
    return time.monotonic() - since >= wait_s()


def _look(key: str) -> None:
    if fallback_due(key, said(key)):
        st.rerun(scope="app")


def _watchdog(key: str) -> None:
    """Mounted while the panel has said nothing and the fallback isn't due: a fragment that
    Streamlit's front end reruns once the wait is over (`run_every`), which then reruns the
    page to draw the server's pictures. Its timer starts after this run, so by then the wait
    is over. Normally the panel's first report comes sooner: it reruns the view without this
    fragment, and Streamlit stops the timer. (A shorter period cost a new visitor's browser a
    whole page render, ~0.35 s on one core, before the panel had drawn.)"""
    st.fragment(_look, run_every=max(wait_s(), MIN_WATCH_S))(key)


def trigger(key: str, name: str) -> Any:
    """The panel's trigger `name` during the callback of the rerun it started, or its state
    `name` (the last it reported), else None."""
    value = st.session_state.get(key)
    return value.get(name) if value else None


def panel(
    *,
    key: str,
    arrays: dict[str, np.ndarray],
    data: dict[str, Any],
    fallback: bool,
    on_pick: Callable[[], None],
    on_settings: Callable[[], None],
    on_step: Callable[[], None],
    on_choose: Callable[[], None],
) -> None:
    """Mount the panel with `data` (`PanelData`'s fields) and `arrays`, each
    described in `data["arrays"][name]` (`id`, `dtype`, `shape`) and, when this session's
    browser has not had it yet, carried in the payload (`at`, `nbytes`: see `pack`).
    `fallback`: the caller draws its own pictures in this run (`fallback_due`, asked before
    the run drew the controls that only the fallback has). `on_pick`, `on_settings`,
    `on_step`, `on_choose`: called when the panel reports a target (trigger "pick"), its
    switches (state "settings"), its Next or Previous (trigger "step") or a method, class
    score or model chosen in its pickers (trigger "choose")."""
    sent: list[str] = st.session_state.setdefault(f"{key}_sent", [])

    def carry(ident: str) -> bool:
        held = ident in sent
        if held:
            sent.remove(ident)
        sent.append(ident)  # most recently used last
        return not held

    # "fallback": the server draws its pictures in this run (a panel that fails then needn't
    # say so); "alive": the server has heard that the panel drew (else it says so once it did).
    heard = said(key) is True
    data = dataclasses.replace(PanelData(**data), fallback=fallback, alive=heard)
    payload = core.pack_arrays(data, arrays, carry)
    del sent[:-MAX_SENT]

    def missing() -> None:
        lost = trigger(key, "missing")
        for ident in lost if isinstance(lost, list) else ():
            if ident in sent:
                sent.remove(ident)

    def noop() -> None:
        pass

    _mount(
        key=key,
        data=payload,
        on_pick_change=on_pick,
        on_settings_change=on_settings,
        on_step_change=on_step,
        on_choose_change=on_choose,
        on_missing_change=missing,
        on_alive_change=noop,
        width="stretch",
    )
    if not fallback and not heard:
        _watchdog(key)
