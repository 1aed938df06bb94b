"""The dashboard as an ASGI app (`st.App`): Streamlit's own server, the pages of `app.py`, and
small routes: `GET /api/live/status?room=CODE` for the Live class's waiting pages,
`GET|POST /api/live/teacher` which hands a teacher's key to the browser as a cookie, and
`GET /api/explore/panel?…` for the Explore panel. Each is limited per client address
(`dashboard/rate_limits.py`): beyond its limit it answers 429 with `Retry-After`.

`python -m dashboard` serves this file (Streamlit runs it with uvicorn, in the same process).
The route answers `{"round": n, "state": "open", "answers": k, "students": m}` from the store
without a script run: a student's waiting page asks it every 2 s and reruns only when the round
changed, and the teacher's count reads it twice a second. A poll by a fragment rerun cost the
server 7.2 ms of CPU (Streamlit's session machinery, for one small query); one by this route
costs 2.2 ms, the server's idle work included (benchmarks/bench_live.py, 30 waiting pages).
`streamlit run dashboard/app.py` (and AppTest) still work without the route: the pages then
poll with a fragment (`dashboard.views.live`).

The route tells no more than a student's page shows: whether a round is open, its number and
how many have answered. Anyone with the room's code may see that, so the codes are long (32⁸)
and a client that tries codes which name no room soon gets nothing but 429s.

The teacher's key never goes into a page's address or its content: a projector shows both,
and a photograph would give away the class. The teacher's page has its browser POST a
single-use pass (`LiveStore.teacher_pass`, from `dashboard/components/live_watch`), and this
server answers with an HttpOnly cookie holding a token of that browser's own
(`LiveStore.teacher_device`); a tab reopened later gets control back from the cookie. The
"teacher link" (GET, with the key) is for the teacher's own devices: it sets such a cookie and
redirects to the room's page, whose address holds only the code.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from pathlib import Path
from urllib.parse import quote, urlparse

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from streamlit import config
from streamlit.starlette import App

from dashboard import EXPLORE_ROUTE_ENV, LIVE_STATUS_ENV, rate_limits
from dashboard.compat_streamlit import reuse_theme_messages
from dashboard.live_store import (
    TEACHER_ROUTE_ENV,
    LiveError,
    LiveStore,
    normalise_code,
    teacher_cookie,
)

STATUS_PATH = "/api/live/status"
TEACHER_PATH = "/api/live/teacher"
EXPLORE_PATH = "/api/explore/panel"
MAX_TEACHER_BODY = 1024  # bytes of the page's POST: {"room": …, "pass": …}
NO_STORE = {"Cache-Control": "no-store"}
_store: LiveStore | None = None
_lock = threading.Lock()


def _live_store() -> LiveStore:
    """The same database as the pages' (`dashboard.cache.live_store`), opened on first use."""
    global _store
    with _lock:
        if _store is None:
            _store = LiveStore.open(os.environ.get("SALIENCY_CACHE_DIR") or None)
        return _store


def _client(request: Request) -> str:
    return rate_limits.client_key(request.client.host if request.client else None)


def _refused(err: rate_limits.Refused) -> JSONResponse:
    headers = {**NO_STORE, "Retry-After": str(err.retry_after)}
    return JSONResponse({"error": str(err)}, status_code=err.status, headers=headers)


def status(request: Request) -> JSONResponse:
    """Run by Starlette in its thread pool (a plain function): the store's queries block.
    Every read costs a token of READS; one of a code that names no room, a guess too."""
    client = _client(request)
    code = normalise_code(request.query_params.get("room", ""))
    try:
        if wait := rate_limits.READS.take(client):
            raise rate_limits.Refused("Too many requests from your network: slow down.", wait)
        rate_limits.guess(client)
    except rate_limits.Refused as err:
        return _refused(err)
    body = _live_store().public_status(code) if code else None
    if body is None:
        return JSONResponse({"error": "no such class"}, status_code=404, headers=NO_STORE)
    rate_limits.found(client)
    return JSONResponse(body, headers=NO_STORE)


def _teacher_token(
    client: str, room: str, secret: str, *, by_pass: bool
) -> tuple[str, str, float] | None:
    """(code, a new browser token of the teacher's, seconds the room has left), from the
    teacher's key (`by_pass` False) or from a page's single-use pass; None for anything else
    (a guess spent)."""
    rate_limits.guess(client)
    store = _live_store()
    try:
        found = store.room(room)
        if by_pass:
            token = store.redeem_pass(found.code, secret)
        else:
            token = store.teacher_device(found.code, secret)
    except LiveError:
        return None
    if token is None:
        return None
    rate_limits.found(client)
    return found.code, token, found.expires - time.time()


def _with_cookie(response: Response, code: str, key: str, seconds: float) -> Response:
    response.set_cookie(
        teacher_cookie(code), key, max_age=max(1, math.floor(seconds)), path=_url("/"),
        httponly=True, samesite="strict",
    )  # fmt: skip
    return response


def teacher_link(request: Request) -> Response:
    """`GET ?room=CODE&key=KEY`, the teacher link: the cookie, and a redirect to the room's
    page (whose address holds only the code). A browser keeps no history entry of a link it
    was redirected from."""
    client = _client(request)
    room, key = request.query_params.get("room", ""), request.query_params.get("key", "")
    try:
        checked = _teacher_token(client, room, key, by_pass=False)
    except rate_limits.Refused as err:
        retry = {**NO_STORE, "Retry-After": str(err.retry_after)}
        return PlainTextResponse(str(err), status_code=err.status, headers=retry)
    if checked is None:
        return PlainTextResponse(
            "This teacher link doesn't open a class: the class has ended (rooms close 12 hours "
            "after they start), or the link was cut short. Start a new class on the Live class "
            "page.",
            status_code=403,
            headers=NO_STORE,
        )
    code, token, seconds = checked
    page = RedirectResponse(f"{_url('/live')}?room={quote(code)}", 303, headers=NO_STORE)
    return _with_cookie(page, code, token, seconds)


async def teacher_pass(request: Request) -> Response:
    """`POST {"room": CODE, "pass": PASS}` from the teacher's page (same origin only): the
    cookie, so that a reopened tab gets the class back."""
    origin = request.headers.get("origin")
    if origin and urlparse(origin).netloc != request.headers.get("host"):
        return JSONResponse({"error": "not from this server"}, status_code=403, headers=NO_STORE)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_TEACHER_BODY:
            return JSONResponse({"error": "too long"}, status_code=413, headers=NO_STORE)
    try:
        asked = json.loads(body)
        room, secret = str(asked["room"]), str(asked["pass"])
    except (ValueError, KeyError, TypeError):
        return JSONResponse({"error": "expected {room, pass}"}, status_code=400, headers=NO_STORE)
    from starlette.concurrency import run_in_threadpool

    try:
        checked = await run_in_threadpool(
            _teacher_token, _client(request), room, secret, by_pass=True
        )
    except rate_limits.Refused as err:
        return _refused(err)
    if checked is None:
        return JSONResponse({"error": "not a pass of this class's"}, status_code=403,
                            headers=NO_STORE)  # fmt: skip
    code, token, seconds = checked
    return _with_cookie(Response(status_code=204, headers=NO_STORE), code, token, seconds)


def explore_panel(request: Request) -> Response:
    """The Explore panel's payload for the view in the query (`explore.route_payload`): a
    plain function, run in Starlette's thread pool (it may compute gradients). Each client
    has a CPU budget here, and at most EXPENSIVE_PER_CLIENT of its expensive methods (which
    wait for one of the server's EXPENSIVE_AT_ONCE turns) running or waiting."""
    from dashboard.views import explore  # here, inside the runtime: its caches are made for it

    client, query = _client(request), dict(request.query_params)
    try:
        with (
            rate_limits.EXPENSIVE.client(client, query.get("method")),
            rate_limits.explore_budget(client),
        ):
            body = explore.route_payload(query)
    except rate_limits.Refused as err:
        return _refused(err)
    except ValueError as err:
        return JSONResponse({"error": str(err)[:200]}, status_code=400, headers=NO_STORE)
    except LookupError as err:
        return JSONResponse({"error": str(err)[:200]}, status_code=404, headers=NO_STORE)
    return Response(body, media_type="application/octet-stream", headers=NO_STORE)


def _url(path: str) -> str:
    base = (config.get_option("server.baseUrlPath") or "").strip("/")
    return f"/{base}{path}" if base else path


STATUS_URL, TEACHER_URL, EXPLORE_URL = _url(STATUS_PATH), _url(TEACHER_PATH), _url(EXPLORE_PATH)
# The pages find the routes here (dashboard.views.live, dashboard.views.explore); unset under
# `streamlit run app.py`.
os.environ[LIVE_STATUS_ENV] = STATUS_URL
os.environ[TEACHER_ROUTE_ENV] = TEACHER_URL
os.environ[EXPLORE_ROUTE_ENV] = EXPLORE_URL

reuse_theme_messages()  # each run's NewSession theme, made once (dashboard/compat_streamlit.py)


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
    routes=[
        Route(STATUS_URL, status),
        Route(TEACHER_URL, teacher_link, methods=["GET"]),
        Route(TEACHER_URL, teacher_pass, methods=["POST"]),
        Route(EXPLORE_URL, explore_panel),
    ],
    middleware=[Middleware(Uncompressed, path=EXPLORE_URL)],
)

# The explore route answers a view's query (the link's keys: dataset, model, index, method…)
# with the Explore panel's payload, as the page's own rerun would bring it: a method, class
# score, model or test image changed in the page is drawn from it about a round trip and a
# page render sooner (dashboard/components/saliency_panel.js). It serves only what every
# visitor may see (bundled test images, the server's workspaces, registry models), never a
# session's uploads, and computes through the same bounded caches as the pages.
