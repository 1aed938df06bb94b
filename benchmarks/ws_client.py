"""Load test with light clients: N sessions speaking Streamlit's own websocket protocol.

    python benchmarks/ws_client.py [--sessions 30] [--think 3] [--seconds 60] [--pace]
                                   [--tree HEAD] [--nice -19] [--profile artifacts/spy.txt]
                                   [--out artifacts/load_test_ws.json]

What a class of 30 students costs one server, without 30 browsers: headless Chromium needs
most of a core for a handful of pages, so 30 of them cannot run beside a server on a two-core
machine. Each session here is what a browser tab does on the wire, in a few hundred lines:

- it fetches the index page (for the `_streamlit_xsrf` cookie), `_stcore/health` and
  `_stcore/host-config`, then opens `ws://HOST:PORT/_stcore/stream` with the subprotocols the
  frontend sends (`streamlit`, then its XSRF token);
- it sends a BackMsg `rerun_script` (a ClientState: query string, page script hash, widget
  states, browser context) and reads ForwardMsgs: `new_session`, `navigation` (the page's
  script hash), `page_info_changed` (the query string the app writes, kept for the next rerun
  as the address bar keeps it), `delta`s and `script_finished`;
- it keeps every widget's value from the deltas as the frontend's widget manager does (the
  server's value when it sets one, else the session's own, else the widget's default; widgets
  a run did not draw again are dropped: of a fragment run, only in its fragments), and remembers
  the fragment that drew each (`delta.fragment_id`): a change is one `rerun_script` with all of
  them and the changed one, and the fragment's id when its widget was drawn by a fragment (a
  fragment rerun), as the frontend sends it;
- the Explore view's saliency panel (dashboard/components/saliency_panel.py, a Streamlit v2
  component: element `bidi_component`, its payload in `bytes`) it holds as saliency_panel.js
  does: the arrays a payload carries are kept by id (least recently used dropped beyond the
  JS's 64 arrays / 256 MB), a payload that names arrays the page lacks is answered with the
  trigger `missing` (never on a normal run: the server assumes 48); once it drew a payload
  whose server hasn't heard from it (`alive` false), the session sends the panel's state
  `{"alive":true}` (a fragment rerun of `explore_main`, then with every BackMsg), and the server
  doesn't draw its own pictures (the fallback) for it;
- its actions are what Chromium sends (checked against a captured Chromium session: the same
  fields and values, but for the widgets' order and the cache's hashes): a target class is a
  click on a class in the panel's grid, the panel's trigger `pick`
  (`$$STREAMLIT_INTERNAL_KEY_<panel id>__events`, `[{"event":"pick","value":{"k":K,"seq":N}}]`,
  a fragment rerun); where the panel draws its own Next and Model picker (its payload's
  `route`), a model is its trigger `choose` (`{"key":"model","value":M}`), sent once the explore
  route's answer for that model has arrived, and Next its trigger `step` (`{"index":I}`), sent
  as the route is asked for image I: each reruns the fragment, which reruns the whole script
  (the fragment's run ends `FINISHED_EARLY_FOR_RERUN`; the action ends with the script's run).
  Elsewhere, and on trees before the panel's pickers, the "Model" selectbox (its label, as the
  frontend sends it) and the image chooser's "Next ▶" button (`trigger_value`); "🎲 Random" is
  always the chooser's button. On a tree without the panel (`--tree`), the "Target class"
  selectbox and the "Map: ..." picture, as before it;
- it GETs every picture and download the deltas name (`/media/...`) once, as the browser does,
  over at most 6 keep-alive HTTP/1.1 connections (h11);
- it asks the explore route (`/api/explore/panel`, dashboard/serve.py) what saliency_panel.js
  asks it: once Next was clicked, the image Next shows, once per panel payload whose maps
  differ from the last one's;
- it keeps the frontend's message cache: every message the server marks `cacheable` (a new
  element of 10 kB or more: the panel's), by hash, aged as the frontend ages it (dropped after
  `max_cached_message_age` runs, of a fragment run only its fragments'), its hashes declared in
  every `rerun_script` (`cached_message_hashes`), and a `ref_hash` the server sends instead of
  such a message is read from it.

An action is timed from sending the BackMsg until its run's `script_finished` has arrived and
its map is on screen: the panel's payload (for a class, showing that class) with every array it
names held, and every picture the run named downloaded (none once the panel is alive); on a
tree without the panel, the new "Map: ..." picture downloaded. Errors: an exception element
(`st.exception`, a traceback) in a delta, a `script_finished` other than success (whole or
fragment), a run without a map, a picture that does not download, a disconnect, a timeout;
after one the session reconnects (a reload, the query string kept). `LOAD_TEST_VERBOSE=1`
prints each action, `=2` every BackMsg too.

How it runs: one server (`python -m dashboard`, its own process group, pinned to CPU 0 with
`taskset -c 0`, SALIENCY_CACHE_DIR in a temporary folder; benchmarks/load_test.py starts it),
and this process, pinned to CPU 1, runs every session as asyncio tasks on one event loop, one
websocket per session. All sessions open together; then, for `--seconds`, each waits `--think`
seconds ±50 % (a student looks at the map), does a random action (target class, model, Next,
Random) and waits for its map (the first run and the panel's "alive" rerun are not actions);
with `--pace`, each instead starts an action every `--think` seconds ±50 % counted from the
previous action's start (at once when that one took longer). Measured: latency per action type
(p50/p95/max), the server's CPU (utime + stime of its process group from /proc) over the action
phase and per action, and how much of it its event-loop thread (websocket sends, pictures over
HTTP) took; its RSS sampled every 0.5 s; how long `/_stcore/health` takes every 0.5 s (the
server's event loop, busy or not); and this client's own CPU and event-loop lag (so that a slow
client is not taken for a slow server). With one session, each action's server CPU is also
measured on its own (until 0.3 s after the map), comparable with benchmarks/bench_clicks.py's
browser clicks. The JSON also holds time lines: every action (start, latency, kind, session),
the server's CPU and RSS.

On a machine others use too, `--nice -19` (root) raises the priority of the server and of this
client, their scheduling autogroups included (load_test.prioritise), and the JSON says how much
CPU other processes took from each core meanwhile (`other_load`).

Results are printed as a table and written as JSON. benchmarks/load_test.py runs real browser
sessions against the same server, for the realism check (`--sessions 5 --think 3`).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import gzip
import json
import math
import os
import random
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

import h11
from google.protobuf.json_format import MessageToDict
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
from load_test import (  # noqa: E402
    REPO,
    SERVERS,
    RssSampler,
    group_cpu_s,
    group_rss_mb,
    prioritise,
    snapshot_of_head,
    start_server,
    stop_server,
    summary,
)

from dashboard.components.saliency_panel import MAGIC as PANEL_MAGIC  # noqa: E402
from dashboard.components.saliency_panel import unpack  # noqa: E402

ACTIONS = ("target", "model", "next", "random")
BUTTONS = {"next": "next", "random": "random"}  # action -> widget key of its button
HTTP_CONNECTIONS = 6  # a browser's limit per host over HTTP/1.1
HTTP_IDLE_S = 4.0  # uvicorn closes a keep-alive connection after 5 s idle
MEDIA_SEEN_MAX = 2000  # the pictures a session remembers having downloaded (its browser cache)
BROWSER_HEADERS = [
    ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"),
    ("Accept", "*/*"),
    ("Accept-Encoding", "gzip, deflate, br, zstd"),
    ("Accept-Language", "en-US"),
]
FINISHED = ForwardMsg.ScriptFinishedStatus
SUCCESS = (FINISHED.FINISHED_SUCCESSFULLY, FINISHED.FINISHED_FRAGMENT_RUN_SUCCESSFULLY)
TRIGGERS = ("trigger_value", "json_trigger_value", "string_trigger_value")  # not kept
PANEL_MAX_ARRAYS = 64  # saliency_panel.js's MAX_ARRAYS and MAX_BYTES
PANEL_MAX_BYTES = 256 * 2**20
COLOUR_KEYS = ("cmap", "cmap_signed", "alpha", "clip", "scale")  # saliency_panel.js's COLOURS


CLK_TCK = os.sysconf("SC_CLK_TCK")
VERBOSE = bool(os.environ.get("LOAD_TEST_VERBOSE"))
SHOW_BACKMSGS = os.environ.get("LOAD_TEST_VERBOSE") == "2"  # print every BackMsg sent


# --- server CPU -------------------------------------------------------------------------------


def thread_cpu_s(pid: int, tid: int) -> float:
    """utime + stime of one thread (the server's main thread runs its event loop)."""
    try:
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cores_busy_s() -> dict[int, tuple[float, float]]:
    """Per CPU, from /proc/stat: (seconds busy, by anyone; seconds stolen by the hypervisor)."""
    busy = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *v = line.split()
            if name.startswith("cpu") and name[3:].isdigit():
                user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, v[:8])
                busy[int(name[3:])] = (
                    (user + nice + system + irq + softirq) / CLK_TCK,
                    steal / CLK_TCK,
                )
    return busy


def own_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# --- HTTP: keep-alive GETs, as a browser fetches pictures -----------------------------------


class Http:
    """GETs over at most `connections` keep-alive HTTP/1.1 connections (h11)."""

    def __init__(self, host: str, port: int, connections: int = HTTP_CONNECTIONS):
        self.host, self.port = host, port
        self.slots = asyncio.Semaphore(connections)
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, h11.Connection, float]]
        self.idle = []
        self.cookie = ""

    async def get(self, target: str) -> tuple[int, dict[str, str], bytes]:
        async with self.slots:
            while self.idle:  # a connection idle too long may be closed by now: a fresh one
                reader, writer, conn, since = self.idle.pop()
                if time.monotonic() - since < HTTP_IDLE_S:
                    try:
                        return await self._request(reader, writer, conn, target)
                    except (OSError, h11.ProtocolError, EOFError):
                        pass  # the server closed it meanwhile: as a browser, retry on a new one
                writer.close()
            reader, writer = await asyncio.open_connection(self.host, self.port)
            conn = h11.Connection(h11.CLIENT)
            return await self._request(reader, writer, conn, target)

    async def _request(self, reader, writer, conn: h11.Connection, target: str):
        headers = [("Host", f"{self.host}:{self.port}"), *BROWSER_HEADERS]
        if self.cookie:
            headers.append(("Cookie", self.cookie))
        try:
            writer.write(conn.send(h11.Request(method="GET", target=target, headers=headers)))
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
            status, response_headers, body = 0, {}, bytearray()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    if not data and conn.their_state is h11.SEND_RESPONSE:
                        raise EOFError("connection closed before the response")
                    conn.receive_data(data)
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    response_headers = {k.decode(): v.decode() for k, v in event.headers}
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise EOFError("connection closed during the response")
        except BaseException:
            writer.close()
            raise
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
            self.idle.append((reader, writer, conn, time.monotonic()))
        else:
            writer.close()
        return status, response_headers, bytes(body)

    def close(self) -> None:
        for _, writer, _, _ in self.idle:
            writer.close()
        self.idle.clear()


# --- the frontend's message cache -------------------------------------------------------------


class MessageCache:
    """What Streamlit's frontend keeps of the messages it received (its ForwardMsgCache): each
    one the server marks `cacheable` (a new element of at least global.minCachedMessageSize,
    10 kB), by hash; every rerun_script declares their hashes, and the server then sends such a
    message again as a `ref_hash` only. After each run that finished (whole or fragment), an
    entry older than `max_cached_message_age` runs (the server's config, 2) goes, for a
    fragment run only the entries of its fragments."""

    def __init__(self):
        self.entries: dict[str, list] = {}  # hash -> [raw message, run count, fragment id]
        self.runs = 0
        self.max_age = 2

    def configure(self, max_age: int) -> None:
        self.max_age = max_age or self.max_age

    def keep(self, msg: ForwardMsg, raw: bytes) -> None:
        if not msg.metadata.cacheable or not msg.hash:
            return
        if msg.hash in self.entries:
            self.entries[msg.hash][1] = self.runs  # seen again: as new
        else:
            fragment = msg.delta.fragment_id if msg.WhichOneof("type") == "delta" else ""
            self.entries[msg.hash] = [raw, self.runs, fragment]

    def get(self, ref_hash: str) -> bytes | None:
        entry = self.entries.get(ref_hash)
        if entry is None:
            return None
        entry[1] = self.runs
        return entry[0]

    def age(self, fragments: set[str]) -> None:
        self.runs += 1
        for h, (_, run, fragment) in list(self.entries.items()):
            if fragments and (not fragment or fragment not in fragments):
                continue
            if self.runs - run > self.max_age:
                del self.entries[h]

    def hashes(self) -> list[str]:
        return list(self.entries)


# --- widget states, as the frontend keeps them ------------------------------------------------


def widget_value(kind: str, w, known: WidgetState | None) -> WidgetState | None:
    """The state the frontend holds for widget element `w` of type `kind` once it is drawn:
    the value the server sets, else the one it had, else the widget's default. None for
    elements without a value (buttons, download buttons: a click is a trigger)."""
    if kind not in ("selectbox", "radio", "slider", "number_input", "multiselect", "checkbox",
                    "text_input"):  # fmt: skip
        return None
    if known is not None and not w.set_value:
        return known
    s = WidgetState(id=w.id)
    if kind in ("selectbox", "radio"):
        if w.set_value or w.HasField("raw_value"):
            s.string_value = w.raw_value
        elif w.HasField("default") and 0 <= w.default < len(w.options):
            s.string_value = w.options[w.default]
        else:
            return None  # no selection
    elif kind == "slider":
        s.double_array_value.data.extend(w.value if w.set_value else w.default)
    elif kind == "number_input":
        value = w.value if w.set_value or w.HasField("value") else w.default
        if w.data_type == w.INT:
            s.int_value = int(value)
        else:
            s.double_value = value
    elif kind == "multiselect":
        chosen = list(w.raw_values) if w.set_value else [w.options[i] for i in w.default]
        s.string_array_value.data.extend(chosen)
    elif kind == "checkbox":
        s.bool_value = w.value if w.set_value else w.default
    elif kind == "text_input":
        if w.set_value or w.HasField("value"):
            s.string_value = w.value
        elif w.HasField("default"):
            s.string_value = w.default
        else:
            return None
    return s


def widget_key(widget_id: str) -> str:
    """The user key of an id like "$$ID-<hash>-target" ("" for a widget without a key)."""
    return widget_id.split("-", 2)[2] if widget_id.startswith("$$ID-") else ""


# --- one session ------------------------------------------------------------------------------


class ActionError(Exception):
    pass


class Panel:
    """The Explore view's saliency panel (a Streamlit v2 component) as saliency_panel.js holds
    it in one page: the arrays it has (by id, least recently used first, its limits), the
    seq of its last click, and the last payload it drew."""

    def __init__(self, element_id: str, fragment_id: str):
        self.id = element_id
        self.fragment_id = fragment_id  # the fragment that draws it: its BackMsgs rerun that
        # Its trigger values travel in one "aggregator" widget (streamlit.components.v2).
        self.events_id = f"$$STREAMLIT_INTERNAL_KEY_{element_id}__events"
        self.data: dict | None = None
        self.seq: int | None = None  # saliency_panel.js's `panel.seq`, from its first payload
        self.held: OrderedDict[str, int] = OrderedDict()  # array id -> bytes
        self.asked: dict[str, float] = {}  # array id -> when it was last asked for again

    def receive(self, payload: bytes) -> tuple[dict, list[str]]:
        """A payload, as saliency_panel.js's `unpack` and `arrays` take it: the arrays it
        carries are kept, the ones it names are used (most recently used last), the oldest
        unused are dropped beyond the JS's limits. Returns the data and the ids it lacks."""
        data, carried = unpack(payload)
        refs = data["arrays"]
        for name, array in carried.items():
            self.held.setdefault(refs[name]["id"], array.nbytes)
        used = dict.fromkeys(ref["id"] for ref in refs.values())  # in the payload's order
        lost = [i for i in used if i not in self.held]
        for i in used:
            if i in self.held:
                self.held.move_to_end(i)
        total = sum(self.held.values())
        while len(self.held) > PANEL_MAX_ARRAYS or (
            total > PANEL_MAX_BYTES and len(self.held) > len(used)
        ):
            oldest = next(iter(self.held))
            if oldest in used:
                break
            total -= self.held.pop(oldest)
        if self.seq is None:
            self.seq = int(data.get("seq") or 0)
        self.data = data
        return data, lost

    def trigger(self, event: str, value) -> WidgetState:
        """The BackMsg widget state of `setTriggerValue(event, value)`."""
        payload = json.dumps([{"event": event, "value": value}], separators=(",", ":"))
        return WidgetState(id=self.events_id, json_trigger_value=payload)


class Run:
    """One script run, from the BackMsg that asked for it to its map on screen."""

    def __init__(self, action: str, expect=None):
        self.action = action
        self.start = time.perf_counter()
        self.status: int | None = None
        self.map_url: str | None = None
        self.map_loaded: asyncio.Future | None = None
        self.media: list[asyncio.Future] = []  # every picture or download the run named
        self.panel: dict | None = None  # the last panel payload's data the run sent
        self.lost: list[str] = []  # array ids that payload names and the page lacks
        self.expect = expect  # what the panel's data must show, a function of it
        self.problems: list[str] = []
        self.finished = asyncio.Event()
        self.finished_at = 0.0  # when script_finished arrived (perf_counter)

    async def wait(self) -> float:
        """Seconds from the request until the run finished and its map was downloaded (with
        the panel alive: every picture the run named, none expected)."""
        await self.finished.wait()
        if self.map_loaded is not None:
            await self.map_loaded
        if self.panel is not None and not self.panel.get("fallback"):
            await asyncio.gather(*self.media)
        return time.perf_counter() - self.start


class Session:
    def __init__(self, n: int, host: str, port: int, args, rng: random.Random, pgid: int):
        self.n, self.host, self.port, self.rng, self.pgid = n, host, port, rng, pgid
        self.timeout, self.query = args.timeout, args.query
        self.base = f"http://{host}:{port}"
        self.http = Http(host, port)
        self.ws: ClientConnection | None = None
        self.reader: asyncio.Task | None = None
        self.run: Run | None = None
        self.page_hash = ""
        self.widgets: OrderedDict[str, WidgetState] = OrderedDict()
        self.options: dict[str, list[str]] = {}
        self.ids: dict[str, str] = {}  # widget key -> id
        self.fragment_of: dict[str, str] = {}  # widget id -> the fragment that draws it ("")
        self.drawn: set[str] = set()  # the widget ids the current run drew
        self.panel: Panel | None = None
        self.cache = MessageCache()
        self.media: OrderedDict[str, asyncio.Future] = OrderedDict()  # url -> its download
        self.latencies: dict[str, list[float]] = {a: [] for a in ACTIONS}
        # (monotonic start, ms until the map was downloaded, ms until script_finished, action)
        self.timeline: list[tuple[float, float, float, str]] = []
        self.cpu_ms: dict[str, list[float]] = {a: [] for a in ACTIONS}
        self.errors: list[str] = []
        self.alerts: list[str] = []
        self.messages = 0
        self.bytes_in = 0
        self.cache_refs = 0  # messages the server sent as a ref_hash to this session's cache
        self.panel_reruns = {"alive": 0, "missing": 0}
        self.media_gets = 0
        self.media_errors: list[str] = []
        self.route_gets = 0  # GETs of the explore route (the panel's prefetch)
        self.prefetched: tuple | None = None
        self.route_views: set[tuple] = set()  # the views this page asked the route for
        self.browsing = False  # Next clicked in this page: the panel prefetches from then on
        self.route_tasks: set[asyncio.Task] = set()
        self.reconnects = 0

    # The connection.

    async def connect(self) -> None:
        status, headers, _ = await self.http.get("/")
        if status != 200:
            raise ActionError(f"index page: HTTP {status}")
        cookie = headers.get("set-cookie", "").split(";", 1)[0]
        self.http.cookie = cookie if cookie.startswith("_streamlit_xsrf=") else ""
        for path in ("/_stcore/health", "/_stcore/host-config"):
            await self.http.get(path)
        token = self.http.cookie.partition("=")[2] or "PLACEHOLDER_AUTH_TOKEN"
        self.ws = await connect(
            f"ws://{self.host}:{self.port}/_stcore/stream",
            subprotocols=["streamlit", token],
            additional_headers={"Cookie": self.http.cookie} if self.http.cookie else None,
            origin=self.base,
            compression=None,  # the server turns it off anyway (server.enableWebsocketCompression)
            proxy=None,
            ping_interval=None,  # the browser sends no pings; it answers the server's
            max_size=None,
            open_timeout=self.timeout,
        )
        # A new page: no widgets, no arrays in the panel, an empty message cache.
        self.widgets.clear()
        self.fragment_of.clear()
        self.panel = None
        self.prefetched, self.browsing = None, False
        self.route_views = set()
        self.cache = MessageCache()
        self.page_hash = ""
        self.reader = asyncio.create_task(self.read())

    async def close(self) -> None:
        for task in list(self.route_tasks):  # a GET still under way when the test ends
            task.cancel()
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            self.reader.cancel()
            try:
                await self.reader
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        self.http.close()

    async def reconnect(self) -> None:
        self.reconnects += 1
        await self.close()
        self.http = Http(self.host, self.port)
        await self.connect()
        await self.request("reload", {})
        await self.report_alive()

    # What the server sends.

    async def read(self) -> None:
        try:
            async for raw in self.ws:
                self.messages += 1
                self.bytes_in += len(raw)
                msg = ForwardMsg.FromString(raw)
                if msg.WhichOneof("type") == "ref_hash":
                    self.cache_refs += 1
                    cached = self.cache.get(msg.ref_hash)
                    if cached is None:
                        self.fail(f"ref_hash {msg.ref_hash} not in this session's cache")
                        continue
                    msg = ForwardMsg.FromString(cached)
                else:
                    self.cache.keep(msg, raw)
                self.handle(msg)
        except ConnectionClosed as e:
            self.fail(f"disconnected: {e}")
        else:
            self.fail("disconnected")

    def fail(self, problem: str) -> None:
        if self.run is not None and not self.run.finished.is_set():
            self.run.problems.append(problem)
            self.run.finished.set()

    def handle(self, msg: ForwardMsg) -> None:
        kind = msg.WhichOneof("type")
        if kind == "delta":
            if msg.delta.WhichOneof("type") == "new_element":
                self.element(msg.delta.new_element, msg.delta.fragment_id)
        elif kind == "new_session":
            self.drawn = set()
            self.page_hash = self.page_hash or msg.new_session.page_script_hash
            self.cache.configure(msg.new_session.config.max_cached_message_age)
        elif kind == "navigation":
            self.page_hash = msg.navigation.page_script_hash
        elif kind == "page_info_changed":
            self.query = msg.page_info_changed.query_string
        elif kind == "script_finished":
            status = msg.script_finished
            fragments = set(msg.metadata.run.fragment_ids)
            if status in SUCCESS:
                # The frontend drops the state of widgets the run did not draw again (of a
                # fragment run: in its fragments), and ages its message cache.
                for gone in [
                    i
                    for i in self.widgets
                    if i not in self.drawn
                    and (not fragments or self.fragment_of.get(i, "") in fragments)
                ]:
                    del self.widgets[gone]
                self.cache.age(fragments)
            if status == FINISHED.FINISHED_EARLY_FOR_RERUN:
                return  # a fragment's st.rerun(scope="app"): the action goes on as that run
            if self.run is not None and not self.run.finished.is_set():
                self.run.status = status
                self.run.finished_at = time.perf_counter()
                self.run.finished.set()

    def element(self, el, fragment_id: str) -> None:
        kind = el.WhichOneof("type")
        if kind == "imgs":
            for img in el.imgs.imgs:
                loaded = self.fetch(img.url)
                if self.run is not None and loaded is not None:
                    self.run.media.append(loaded)
                if img.caption.startswith("Map: ") and self.run is not None:
                    self.run.map_url = img.url
                    self.run.map_loaded = loaded
        elif kind == "download_button":
            if el.download_button.url:
                loaded = self.fetch(el.download_button.url)
                if self.run is not None and loaded is not None:
                    self.run.media.append(loaded)
        elif kind == "exception":
            e = el.exception
            if not e.is_warning and self.run is not None:
                self.run.problems.append(f"exception {e.type}: {e.message[:300]}")
        elif kind == "alert" and el.alert.format == el.alert.ERROR:
            self.alerts.append(el.alert.body[:300])
        elif kind == "bidi_component":
            c = el.bidi_component
            self.drawn.add(c.id)
            self.fragment_of[c.id] = fragment_id
            self.ids[widget_key(c.id)] = c.id
            if c.WhichOneof("data") == "bytes" and c.bytes[:4] == PANEL_MAGIC:
                if self.panel is None or self.panel.id != c.id:
                    self.panel = Panel(c.id, fragment_id)
                self.panel.fragment_id = fragment_id
                try:
                    data, lost = self.panel.receive(c.bytes)
                except Exception as e:  # noqa: BLE001 - the page would show an error
                    if self.run is not None:
                        self.run.problems.append(f"panel payload: {type(e).__name__}: {e}")
                    return
                if self.run is not None:
                    self.run.panel, self.run.lost = data, lost
                self.prefetch(data)
        else:
            w = getattr(el, kind) if kind else None
            if w is not None and hasattr(w, "id") and w.id:
                self.drawn.add(w.id)
                self.fragment_of[w.id] = fragment_id
                self.ids[widget_key(w.id)] = w.id
                if hasattr(w, "options"):
                    self.options[w.id] = list(w.options)
                state = widget_value(kind, w, self.widgets.get(w.id))
                if state is not None:
                    self.widgets[w.id] = state

    def fetch(self, url: str) -> asyncio.Future | None:
        """Download a picture or a download's data once per session, in the background."""
        if not url.startswith("/"):
            return None  # a data: URL or an outside address: nothing for the server
        if url in self.media:
            self.media.move_to_end(url)
            return self.media[url]
        task = asyncio.ensure_future(self._fetch(url))
        task.add_done_callback(self._fetched)
        self.media[url] = task
        while len(self.media) > MEDIA_SEEN_MAX:
            self.media.popitem(last=False)
        return task

    def _fetched(self, task: asyncio.Future) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.media_errors.append(f"session {self.n}: {task.exception()!s:.200}")

    async def _fetch(self, url: str) -> None:
        self.media_gets += 1
        status, _, body = await self.http.get(url)
        if status != 200 or not body:
            raise ActionError(f"GET {url}: HTTP {status}, {len(body)} bytes")

    # The explore route (dashboard/serve.py), as saliency_panel.js asks it.

    def route_get(self, data: dict, **want: str) -> asyncio.Future:
        """GET the route for the panel's view with `want` changed, in the background."""
        route = data["route"]
        self.route_views.add(tuple(sorted({**route["query"], **want}.items())))
        query = {**route["query"], **want, "seq": str(data["seq"])}
        task = asyncio.ensure_future(self._route_get(f"{route['url']}?{urlencode(query)}"))
        task.add_done_callback(self._fetched)
        self.route_tasks.add(task)
        task.add_done_callback(self.route_tasks.discard)
        return task

    async def _route_get(self, target: str) -> None:
        self.route_gets += 1
        status, headers, body = await self.http.get(target)
        if headers.get("content-encoding") == "gzip":  # as the browser asks (BROWSER_HEADERS)
            body = gzip.decompress(body)
        if status != 200 or body[:4] != PANEL_MAGIC:
            raise ActionError(f"GET {target[:80]}: HTTP {status}, {len(body)} bytes")

    def prefetch(self, data: dict) -> None:
        """The image Next shows, asked for once per view whose maps differ (the JS's
        `prefetch`: colours, and the target when the contrast comes from the maps, don't)."""
        route = data.get("route")
        if not route or not self.browsing or route.get("next") is None:
            return
        skip = set(COLOUR_KEYS)
        if data.get("contrast_from_maps"):
            skip.add("target")
        key = (route["next"], data["seq"], *sorted(
            (k, v) for k, v in route["query"].items() if k not in skip
        ))  # fmt: skip
        if key != self.prefetched:
            self.prefetched = key
            self.route_get(data, index=str(route["next"]))

    # What the session sends.

    async def request(
        self, action: str, changed: dict[str, WidgetState], fragment_id: str = "", expect=None
    ) -> Run:
        """One rerun_script with every widget's state, `changed` replacing or adding some, for
        the whole script or (`fragment_id`) one fragment, as the frontend sends it for a widget
        drawn in that fragment; returns the run, finished and its map on screen: the "Map: ..."
        picture downloaded, or the panel's payload (`expect(data)` true, every array it names
        held: the ones the page lacks are asked for again, trigger `missing`, as the JS does)."""
        run = await self._request(action, changed, fragment_id, expect)
        for _ in range(2):
            if not run.lost or self.panel is None:
                break
            now = time.monotonic()
            fresh = [i for i in run.lost if now - self.panel.asked.get(i, -1e9) > 3.0]
            if not fresh:
                break
            for i in fresh:
                self.panel.asked[i] = now
            self.panel_reruns["missing"] += 1
            trigger = self.panel.trigger("missing", fresh)
            changed = {trigger.id: trigger}
            again = await self._request(action, changed, self.panel.fragment_id, expect)
            again.start = run.start  # one action, timed from its first BackMsg
            run = again
        if run.lost:
            raise ActionError(f"the panel lacks arrays {run.lost}")
        return run

    async def _request(self, action, changed, fragment_id, expect) -> Run:
        for widget_id, state in changed.items():
            if state.WhichOneof("value") not in TRIGGERS:
                self.widgets[widget_id] = state  # the frontend holds the new value at once
        msg = BackMsg()
        rerun = msg.rerun_script
        rerun.query_string = self.query
        rerun.page_script_hash = self.page_hash
        rerun.fragment_id = fragment_id
        rerun.cached_message_hashes.extend(self.cache.hashes())
        states = {**self.widgets, **changed}
        if self.page_hash:  # the very first request sends no widgets (none are drawn yet)
            rerun.widget_states.widgets.extend(states.values())
        else:
            rerun.widget_states.SetInParent()
        ctx = rerun.context_info
        ctx.timezone, ctx.timezone_offset, ctx.locale = "UTC", 0, "en-US"
        ctx.url, ctx.is_embedded, ctx.color_scheme = f"{self.base}/", False, "light"
        if SHOW_BACKMSGS:
            print(f"  session {self.n} sends {action}: {MessageToDict(msg)}", flush=True)
        run = self.run = Run(action, expect)
        await self.ws.send(msg.SerializeToString())
        try:
            await asyncio.wait_for(run.wait(), self.timeout)
        except TimeoutError:
            raise ActionError(f"timeout after {self.timeout} s") from None
        finally:
            self.run = None
        if run.problems:
            raise ActionError("; ".join(run.problems))
        if run.status not in SUCCESS:
            raise ActionError(f"script_finished {FINISHED.Name(run.status)}")
        if run.panel is not None:
            if expect is not None and not expect(run.panel):
                raise ActionError(f"the panel shows target {run.panel.get('target')}")
        elif run.map_url is None:
            raise ActionError("the run drew no map")
        return run

    async def report_alive(self) -> None:
        """What saliency_panel.js does once it drew a payload whose server hasn't heard from it
        (`alive` false; on a tree before that flag, one marked `fallback`):
        `setStateValue("alive", true)`, a rerun of the panel's fragment with the component's
        state, which it sends from then on (the server then doesn't draw its own pictures)."""
        if self.panel is None:
            return
        data = self.panel.data or {}
        if data.get("alive", not data.get("fallback")):
            return
        state = WidgetState(id=self.panel.id, json_value='{"alive":true}')  # JSON.stringify
        self.panel_reruns["alive"] += 1
        await self.request("alive", {self.panel.id: state}, self.panel.fragment_id)

    async def open(self) -> float:
        """Seconds until the first run's map is on screen (the panel's "alive" rerun follows,
        not counted)."""
        start = time.perf_counter()
        await self.connect()
        await self.request("open", {})
        took = time.perf_counter() - start
        await self.report_alive()
        return took

    def routed(self) -> dict | None:
        """The explore route of the panel's last payload, where the panel draws its own Next and
        pickers (their triggers then say what was chosen); None where it doesn't."""
        data = self.panel.data if self.panel is not None else None
        route = data.get("route") if data else None
        return route if route and route.get("pickers") else None

    def asked(self, route: dict, **want: str) -> bool:
        """Whether this page asked the route for this view already (the panel draws it from
        what it holds: `recalled` and `prefetched` in streamlit.js)."""
        return tuple(sorted({**route["query"], **want}.items())) in self.route_views

    async def panel_choice(self, action: str) -> tuple[WidgetState, Callable]:
        """What the panel's Model picker or Next sends (streamlit.js `choose`, `step`), once it
        asked the route as the panel does; and what the rerun's payload must then show."""
        data, route = self.panel.data, self.routed()
        if action == "model":
            now = route["query"]["model"]
            model = self.rng.choice([m for m, _ in route["pickers"]["models"] if m != now])
            if not self.asked(route, model=model, layer=""):  # else recalled: no question
                await self.route_get(data, model=model, layer="")  # drawn, then told
            trigger = self.panel.trigger("choose", {"key": "model", "value": model})
            return (
                trigger,
                lambda d, m=model: (d.get("route") or {}).get("query", {}).get("model") == m,
            )
        self.browsing = True  # Next's image is fetched ahead from now on
        index = route["next"]
        trigger = self.panel.trigger("step", {"index": index})
        if not self.asked(route, index=str(index)):  # fetched ahead, or seen: not asked
            self.route_get(data, index=str(index))  # asked as the trigger goes, not awaited
        return (
            trigger,
            lambda d, i=str(index): (d.get("route") or {}).get("query", {}).get("index") == i,
        )

    async def act(self, action: str, measure_cpu: bool) -> None:
        fragment_id, expect = "", None
        began = time.perf_counter()
        route = self.routed()
        if (
            action in ("model", "next")
            and route
            and (action == "model" or route["next"] is not None)
        ):
            trigger, expect = await self.panel_choice(action)
            changed, fragment_id = {trigger.id: trigger}, self.panel.fragment_id
        elif action == "target" and self.panel is not None and self.panel.data is not None:
            # A click on another class's map in the panel's grid: trigger "pick".
            d = self.panel.data
            k = self.rng.choice([c for c in d["grid"] if c != d["target"] and c in d["classes"]])
            self.panel.seq += 1
            trigger = self.panel.trigger("pick", {"k": k, "seq": self.panel.seq})
            changed, fragment_id = {trigger.id: trigger}, self.panel.fragment_id
            expect = lambda data, k=k: data.get("target") == k  # noqa: E731
        elif action in ("target", "model"):  # a selectbox (the target's: without the panel)
            widget_id = self.ids[action]
            current = self.widgets[widget_id].string_value
            choices = [
                o
                for o in self.options[widget_id]
                if o != current and not (action == "target" and o.startswith("the "))
            ]  # a class, never the predicted/true entry (which could be the same map)
            choice = self.rng.choice(choices)
            changed = {widget_id: WidgetState(id=widget_id, string_value=choice)}
            fragment_id = self.fragment_of.get(widget_id, "")
        else:
            self.browsing = self.browsing or action == "next"
            widget_id = self.ids[BUTTONS[action]]
            changed = {widget_id: WidgetState(id=widget_id, trigger_value=True)}
            fragment_id = self.fragment_of.get(widget_id, "")
        cpu = group_cpu_s(self.pgid) if measure_cpu else 0.0
        run = await self.request(action, changed, fragment_id, expect)
        run.start = min(run.start, began)  # the panel's model: from asking the route
        ms = (time.perf_counter() - run.start) * 1000
        self.latencies[action].append(ms)
        finished_ms = round((run.finished_at - run.start) * 1000, 1)
        self.timeline.append((time.monotonic() - ms / 1000, round(ms, 1), finished_ms, action))
        if measure_cpu:  # one session: this action's own server CPU, as bench_clicks does
            await asyncio.sleep(0.3)
            self.cpu_ms[action].append((group_cpu_s(self.pgid) - cpu) * 1000)

    async def loop(self, deadline: float, think: float, pace: bool, measure_cpu: bool) -> None:
        next_start = time.monotonic()
        while time.monotonic() < deadline:
            wait = think * self.rng.uniform(0.5, 1.5)
            if pace:  # every `think` s ±50 % from the previous action's start
                next_start += wait
                wait = max(0.0, next_start - time.monotonic())
            await asyncio.sleep(wait)
            if time.monotonic() >= deadline:
                break
            next_start = max(next_start, time.monotonic())
            action = self.rng.choice(ACTIONS)
            if VERBOSE:
                print(f"  session {self.n}: {action}", flush=True)
            try:
                await self.act(action, measure_cpu)
            except Exception as e:  # noqa: BLE001 - timeouts, disconnects and the like: count
                self.errors.append(f"session {self.n} {action}: {type(e).__name__}: {e!s:.300}")
                if time.monotonic() < deadline:
                    try:
                        await self.reconnect()
                    except Exception as e2:  # noqa: BLE001
                        self.errors.append(f"session {self.n} reconnect: {type(e2).__name__}")


# --- the test ---------------------------------------------------------------------------------


async def loop_lag(stop: asyncio.Event, lags: list[float], every: float = 0.1) -> None:
    """How late this client's event loop wakes up: a busy client would delay every session."""
    while not stop.is_set():
        t = time.perf_counter()
        await asyncio.sleep(every)
        lags.append((time.perf_counter() - t - every) * 1000)


async def probe_health(port: int, stop: asyncio.Event, ms: list[float]) -> None:
    """GET /_stcore/health every 0.5 s: the server's event loop answers it at once when it is
    free, so its latency is how long the loop (which also sends every message and picture)
    waits for the CPU and the GIL."""
    http = Http("localhost", port, connections=1)
    try:
        while not stop.is_set():
            t = time.perf_counter()
            await http.get("/_stcore/health")
            ms.append((time.perf_counter() - t) * 1000)
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except TimeoutError:
                pass
    finally:
        http.close()


def sample_cpu(pgid: int, samples: list, start: float):
    async def run(stop: asyncio.Event) -> None:
        while not stop.is_set():
            t, cpu, loop = time.monotonic() - start, group_cpu_s(pgid), thread_cpu_s(pgid, pgid)
            samples.append((round(t, 2), round(cpu, 3), round(loop, 3)))
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except TimeoutError:
                pass

    return run


def profile(pid: int, out: Path, seconds: float) -> list[subprocess.Popen]:
    """py-spy samples the server for the action phase, from CPU 1, without pausing it, into two
    raw (collapsed stacks) files: `out`, every thread that is running or runnable (torch's
    kernels included, but also threads waiting for the CPU), and `out` + ".gil", only the
    thread holding the GIL (on one core, nearly where the CPU goes; GIL-free torch kernels are
    missing)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    spy = str(Path(sys.executable).with_name("py-spy"))
    runs = []
    for extra, path in (([], out), (["--gil"], out.with_name(out.name + ".gil"))):
        cmd = [
            "taskset", "-c", "1", spy, "record", "--pid", str(pid),
            "--duration", str(math.ceil(seconds)), "--rate", "100", "--nonblocking",
            "--threads", *extra, "--format", "raw", "--output", str(path),
        ]  # fmt: skip
        runs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return runs


async def main_async(args) -> dict:
    log = REPO / "artifacts" / "load_test_ws_server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    tree = snapshot_of_head() if args.tree == "HEAD" else Path(args.tree).resolve()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    proc, url = start_server(log, tree)
    prioritise(args.nice)  # the server and this client
    pgid = proc.pid
    port = int(url.rsplit(":", 1)[1])
    await asyncio.sleep(args.settle)  # the server's warm-up thread (torch, the first model)
    sampler = RssSampler(pgid)
    cpu_samples: list = []
    stop = asyncio.Event()
    background = [
        asyncio.create_task(sampler.run(stop)),
        asyncio.create_task(sample_cpu(pgid, cpu_samples, sampler.start)(stop)),
    ]
    rss_baseline = group_rss_mb(pgid)
    rng = random.Random(args.seed)
    sessions = [
        Session(i, "localhost", port, args, random.Random(rng.random()), pgid)
        for i in range(args.sessions)
    ]
    result: dict = {
        "client": "websocket (benchmarks/ws_client.py)",
        "url": url,
        "tree": "HEAD" if args.tree == "HEAD" else str(tree),
        "commit": commit,
        "machine": {"cpus": os.cpu_count(), "loadavg_1_5_15_at_start": os.getloadavg()},
        "nice": args.nice,
        "sessions": args.sessions,
        "seconds": args.seconds,
        "think_s": args.think,
        "schedule": "pace: every think ±50 % from the previous start"
        if args.pace
        else "think: think ±50 % after each map",
    }
    lags: list[float] = []
    health_ms: list[float] = []
    try:
        t0 = time.monotonic()
        opened = await asyncio.gather(*(s.open() for s in sessions), return_exceptions=True)
        open_s = [o for o in opened if isinstance(o, float)]
        open_errors = [f"open: {type(o).__name__}: {o!s:.300}" for o in opened if not
                       isinstance(o, float)]  # fmt: skip
        all_open = time.monotonic() - t0
        print(f"{len(open_s)}/{args.sessions} sessions rendered in {all_open:.1f} s", flush=True)
        live = [s for s, o in zip(sessions, opened, strict=True) if isinstance(o, float)]
        if not live:
            raise SystemExit("no session opened:\n" + "\n".join(open_errors[:5]))
        await asyncio.sleep(1.0)  # the first pictures' downloads
        rss_open = group_rss_mb(pgid)
        lag_task = asyncio.create_task(loop_lag(stop, lags))
        health_task = asyncio.create_task(probe_health(port, stop, health_ms))
        spy = profile(pgid, args.profile, args.seconds) if args.profile else None
        cpu0, own0, load0 = group_cpu_s(pgid), own_cpu_s(), os.getloadavg()
        loop0 = thread_cpu_s(pgid, pgid)
        cores0 = cores_busy_s()
        t1 = time.monotonic()
        measure_cpu = args.sessions == 1
        await asyncio.gather(
            *(s.loop(t1 + args.seconds, args.think, args.pace, measure_cpu) for s in live)
        )
        wall = time.monotonic() - t1
        for run in spy or ():
            run.wait(30)
        cpu1, own1, load1 = group_cpu_s(pgid), own_cpu_s(), os.getloadavg()
        loop1 = thread_cpu_s(pgid, pgid)
        cores1 = cores_busy_s()
        background += [lag_task, health_task]
        for s in sessions:
            await s.close()
    finally:
        stop.set()
        await asyncio.gather(*background, return_exceptions=True)
        rss_end = group_rss_mb(pgid)
        stop_server(proc)

    per_action = {a: [x for s in sessions for x in s.latencies[a]] for a in ACTIONS}
    overall = [x for v in per_action.values() for x in v]
    errors = open_errors + [e for s in sessions for e in s.errors]
    server_cpu = cpu1 - cpu0
    mb = [m for _, m in sampler.samples if m > 0]
    result |= {
        "wall_seconds": round(wall, 1),
        "first_render_ms": summary([x * 1000 for x in open_s])
        | {"all_sessions_s": round(all_open, 1)},
        "actions_completed": len(overall),
        "actions_attempted": len(overall) + sum(len(s.errors) for s in sessions),
        "actions_per_second": round(len(overall) / wall, 2),
        "per_session_actions": [sum(len(v) for v in s.latencies.values()) for s in sessions],
        "errors": len(errors),
        "error_details": errors[:30],
        "timeouts": sum("timeout" in e for e in errors),
        "error_alerts_seen": sum(len(s.alerts) for s in sessions),
        "reconnects": sum(s.reconnects for s in sessions),
        "latency_ms": {a: summary(v) for a, v in per_action.items()}
        | {"overall": summary(overall) | {"mean_ms": round(statistics.fmean(overall or [0]), 1)}},
        "server_cpu": {
            "seconds": round(server_cpu, 2),
            "utilisation_of_cpu0": round(server_cpu / wall, 3),
            "ms_per_action": round(1000 * server_cpu / max(1, len(overall)), 1),
            # The main thread runs the event loop: websocket sends, pictures served over HTTP;
            # the rest is mostly the script runs (one thread per run).
            "event_loop_thread_ms_per_action": round(
                1000 * (loop1 - loop0) / max(1, len(overall)), 1
            ),
        },
        "health_probe_ms": summary(health_ms),
        "server_rss_mb": {
            "baseline": round(rss_baseline, 1),
            "after_open": round(rss_open, 1),
            "peak": round(max(mb), 1) if mb else None,
            "end": round(rss_end, 1),
            "samples": len(mb),
        },
        "client": {
            "cpu_seconds": round(own1 - own0, 2),
            "utilisation_of_cpu1": round((own1 - own0) / wall, 3),
            "loop_lag_ms": summary(lags),
            "messages_received": sum(s.messages for s in sessions),
            "megabytes_received": round(sum(s.bytes_in for s in sessions) / 2**20, 1),
            "media_gets": sum(s.media_gets for s in sessions),
            "route_gets": sum(s.route_gets for s in sessions),
            "media_errors": [e for s in sessions for e in s.media_errors][:10],
            # The server's messages answered from the session's cache (ref_hash), and the
            # panel's own reruns: "alive" (once per page), "missing" (arrays asked again).
            "cache_refs": sum(s.cache_refs for s in sessions),
            "panel_reruns": {
                k: sum(s.panel_reruns[k] for s in sessions) for k in ("alive", "missing")
            },
            "panel_sessions": sum(s.panel is not None for s in sessions),
        },
        "loadavg_before_after": [load0, load1],
        # Whatever else ran on the two CPUs meanwhile (the machine is shared): CPU 0's busy time
        # less the server's, CPU 1's less this client's, and time stolen by the hypervisor.
        "other_load": {
            "cpu0_other_s": round(cores1[0][0] - cores0[0][0] - server_cpu, 2),
            "cpu1_other_s": round(cores1[1][0] - cores0[1][0] - (own1 - own0), 2),
            "steal_s": [round(cores1[c][1] - cores0[c][1], 2) for c in (0, 1)],
        },
        # Time lines, in seconds from the first sample: each action (its start, latency in
        # ms, ms until its script_finished arrived, kind, session), the server's CPU seconds
        # used so far (all, its event-loop thread's), its RSS.
        "actions": sorted(
            (round(t - sampler.start, 3), ms, fin, a, s.n)
            for s in sessions
            for t, ms, fin, a in s.timeline
        ),
        "server_cpu_samples_s": cpu_samples,
        "server_rss_samples_mb": [(round(t, 2), round(m, 1)) for t, m in sampler.samples],
    }
    if measure_cpu:
        result["server_cpu_ms_per_action_alone"] = {
            a: {
                "median": round(statistics.median(v), 1),
                "n": len(v),
            }
            for a in ACTIONS
            if (v := [x for s in sessions for x in s.cpu_ms[a]])
        }
    return result


def print_table(r: dict) -> None:
    print(
        f"\n{r['sessions']} sessions, {r['schedule']} ({r['think_s']:g} s), "
        f"{r['wall_seconds']:g} s: {r['actions_completed']} actions "
        f"({r['actions_per_second']:g}/s), {r['errors']} errors, {r['timeouts']} timeouts"
    )
    print(f"{'action':10s} {'n':>5s} {'p50 ms':>8s} {'p95 ms':>8s} {'max ms':>8s}")
    for a, s in r["latency_ms"].items():
        if s["n"]:
            print(f"{a:10s} {s['n']:5d} {s['p50_ms']:8.0f} {s['p95_ms']:8.0f} {s['max_ms']:8.0f}")
    c, m, cl = r["server_cpu"], r["server_rss_mb"], r["client"]
    print(
        f"server CPU {c['seconds']:.1f} s ({c['utilisation_of_cpu0']:.0%} of CPU 0), "
        f"{c['ms_per_action']:.0f} ms per action ({c['event_loop_thread_ms_per_action']:.0f} ms "
        "of it in the event-loop thread)"
    )
    if "server_cpu_ms_per_action_alone" in r:
        alone = r["server_cpu_ms_per_action_alone"]
        print("server CPU per action alone (median ms): "
              + ", ".join(f"{a} {v['median']:.0f}" for a, v in alone.items()))  # fmt: skip
    h = r["health_probe_ms"]
    if h["n"]:
        print(f"server event loop (/_stcore/health every 0.5 s): p50 {h['p50_ms']:.0f} ms, "
              f"p95 {h['p95_ms']:.0f} ms, max {h['max_ms']:.0f} ms")  # fmt: skip
    print(
        f"server RSS MB: baseline {m['baseline']:.0f}, after open {m['after_open']:.0f}, "
        f"peak {m['peak']:.0f}, end {m['end']:.0f}"
    )
    print(
        f"client: {cl['utilisation_of_cpu1']:.0%} of CPU 1, event-loop lag p95 "
        f"{cl['loop_lag_ms'].get('p95_ms', 0):.0f} ms, max {cl['loop_lag_ms'].get('max_ms', 0):.0f}"
        f" ms; first render p95 {r['first_render_ms'].get('p95_ms', 0):.0f} ms"
    )
    print(
        f"panel: {cl['panel_sessions']} of {r['sessions']} sessions, reruns {cl['panel_reruns']}; "
        f"messages from the cache (ref_hash): {cl['cache_refs']}"
    )
    o = r["other_load"]
    print(
        f"other processes meanwhile: {o['cpu0_other_s']:.1f} s on CPU 0, "
        f"{o['cpu1_other_s']:.1f} s on CPU 1 (stolen {o['steal_s']})"
    )
    for e in r["error_details"][:10]:
        print("  error:", e)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--think", type=float, default=3.0, help="seconds between actions ±50 %%")
    parser.add_argument(
        "--pace", action="store_true", help="think counted from each action's start, not its end"
    )
    parser.add_argument("--timeout", type=float, default=120, help="per action, seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--query", default="", help="the query string the sessions open with")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after the server is up")
    parser.add_argument(
        "--tree",
        default=str(REPO),
        help='app directory to serve; "HEAD": a copy of the last commit',
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="on a shared machine: the server's and the clients' priority, e.g. -19 (root only)",
    )
    parser.add_argument(
        "--profile", type=Path, help="py-spy the server during the actions into this raw file"
    )
    parser.add_argument("--out", type=Path, default=REPO / "artifacts" / "load_test_ws.json")
    args = parser.parse_args()
    os.sched_setaffinity(0, {1})  # the clients: CPU 1 (the server: CPU 0)
    atexit.register(lambda: [stop_server(p) for p in SERVERS])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = asyncio.run(main_async(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print_table(result)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
