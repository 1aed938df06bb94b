"""The dashboard as an ASGI app (`st.App`): Streamlit's own server, the pages of `app.py`, and
two small read-only routes: `GET /api/live/status?room=CODE` for the Live class's waiting
pages, and `GET /api/explore/panel?…` for the Explore panel.

`python -m dashboard` serves this file (Streamlit runs it with uvicorn, in the same process).
The route answers `{"round": n, "state": "open", "answers": k, "students": m}` from the store
without a script run: a student's waiting page asks it every 2 s and reruns only when the round
changed, and the teacher's count reads it twice a second. A poll by a fragment rerun cost the
server 7.2 ms of CPU (Streamlit's session machinery, for one small query); one by this route
costs 2.2 ms, the server's idle work included (benchmarks/bench_live.py, 30 waiting pages).
`streamlit run dashboard/app.py` (and AppTest) still work without the route: the pages then
poll with a fragment (`dashboard.views.live`).

The route tells no more than a student's page shows: whether a round is open, its number and
how many have answered. Anyone with the room's code may see that.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from streamlit import config
from streamlit.starlette import App

from dashboard import EXPLORE_ROUTE_ENV, LIVE_STATUS_ENV
from dashboard.live_store import LiveStore, normalise_code
from dashboard.streamlit_runs import reuse_theme_messages

STATUS_PATH = "/api/live/status"
EXPLORE_PATH = "/api/explore/panel"
_store: LiveStore | None = None
_lock = threading.Lock()


def _live_store() -> LiveStore:
    """The same database as the pages' (`dashboard.cache.live_store`), opened on first use."""
    global _store
    with _lock:
        if _store is None:
            _store = LiveStore.open(os.environ.get("SALIENCY_CACHE_DIR") or None)
        return _store


def status(request: Request) -> JSONResponse:
    """Run by Starlette in its thread pool (a plain function): the store's queries block."""
    code = normalise_code(request.query_params.get("room", ""))
    headers = {"Cache-Control": "no-store"}
    body = _live_store().public_status(code) if code else None
    if body is None:
        return JSONResponse({"error": "no such class"}, status_code=404, headers=headers)
    return JSONResponse(body, headers=headers)


def explore_panel(request: Request) -> Response:
    """The Explore panel's payload for the view in the query (`explore.route_payload`): a
    plain function, run in Starlette's thread pool (it may compute gradients)."""
    from dashboard.views import explore  # here, inside the runtime: its caches are made for it

    headers = {"Cache-Control": "no-store"}
    try:
        body = explore.route_payload(dict(request.query_params))
    except ValueError as err:
        return JSONResponse({"error": str(err)[:200]}, status_code=400, headers=headers)
    except LookupError as err:
        return JSONResponse({"error": str(err)[:200]}, status_code=404, headers=headers)
    return Response(body, media_type="application/octet-stream", headers=headers)


def _url(path: str) -> str:
    base = (config.get_option("server.baseUrlPath") or "").strip("/")
    return f"/{base}{path}" if base else path


STATUS_URL, EXPLORE_URL = _url(STATUS_PATH), _url(EXPLORE_PATH)
# The pages find the routes here (dashboard.views.live, dashboard.views.explore); unset under
# `streamlit run app.py`.
os.environ[LIVE_STATUS_ENV] = STATUS_URL
os.environ[EXPLORE_ROUTE_ENV] = EXPLORE_URL

reuse_theme_messages()  # each run's NewSession theme, made once (dashboard/streamlit_runs.py)


class Uncompressed:
    """ASGI middleware: the explore route's answers go out as they are. They are float32 maps,
    which gzip shrinks by ~12 % (45 kB to 39 kB for a 28 × 28 image) for ~1.8 ms of the
    server's CPU per answer, asked at every method, model or image press: Streamlit's gzip
    middleware, inside this one, then sees a request that doesn't accept gzip."""

    def __init__(self, app, path: str) -> None:
        self.app, self.path = app, path

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope.get("path") == self.path:
            headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"accept-encoding"]
            scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)


app = App(
    Path(__file__).with_name("app.py"),
    routes=[Route(STATUS_URL, status), Route(EXPLORE_URL, explore_panel)],
    middleware=[Middleware(Uncompressed, path=EXPLORE_URL)],
)

# The explore route answers a view's query (the link's keys: dataset, model, index, method…)
# with the Explore panel's payload, as the page's own rerun would bring it: a method, class
# score, model or test image changed in the page is drawn from it about a round trip and a
# page render sooner (dashboard/components/saliency_panel.js). It serves only what every
# visitor may see (bundled test images, the server's workspaces, registry models), never a
# session's uploads, and computes through the same bounded caches as the pages.
