"""dashboard.compat_streamlit: Streamlit is the version requirements.txt pins and every private
part the module reaches for is where it expects (a Streamlit upgrade fails here, loudly, not in
a served page); each run's NewSession theme, made once, is the message Streamlit would have
made itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pins import pinned
from streamlit import config
from streamlit.proto.NewSession_pb2 import CustomThemeConfig, NewSession
from streamlit.runtime import app_session

from dashboard import compat_streamlit
from dashboard.compat_streamlit import memoized_theme

REPO = Path(__file__).resolve().parents[2]
SECTIONS = ("theme", "theme.light", "theme.dark", "theme.sidebar", "theme.light.sidebar",
            "theme.dark.sidebar")  # fmt: skip


def test_streamlit_is_the_pinned_version_and_every_reach_is_there():
    import importlib
    import inspect

    import streamlit

    assert streamlit.__version__ == pinned("streamlit"), (
        "Streamlit is not the version requirements.txt pins: check every reach of "
        "dashboard/compat_streamlit.py (REACHES) against the new version, then pin it"
    )
    missing = [f"{m}.{a}" for m, a in compat_streamlit.REACHES
               if not hasattr(importlib.import_module(m), a)]  # fmt: skip
    assert not missing, f"Streamlit moved what dashboard/compat_streamlit.py reaches for: {missing}"
    assert list(inspect.signature(app_session._populate_theme_msg).parameters)[:2] == [
        "msg", "section"]  # fmt: skip
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    assert "suppress_warning" in inspect.signature(get_script_run_ctx).parameters
    assert compat_streamlit.in_script_run() is False  # no page runs in this thread
    assert not compat_streamlit.runtime_started()  # no server in this process


@pytest.fixture
def themed():
    """A theme with options in two sections, the others empty; restored afterwards."""
    options = {"theme.primaryColor": "#ff4b4b", "theme.baseRadius": "small",
               "theme.sidebar.backgroundColor": "#f0f2f6"}  # fmt: skip
    before = {k: config.get_option(k) for k in options}
    for k, v in options.items():
        config.set_option(k, v)
    yield
    for k, v in before.items():
        config.set_option(k, v)


def _filled(populate) -> NewSession:
    msg = NewSession()
    theme = msg.custom_theme
    populate(theme, "theme")
    populate(theme.light, "theme.light")
    populate(theme.dark, "theme.dark")
    populate(theme.sidebar, "theme.sidebar")
    populate(theme.light.sidebar, "theme.light.sidebar")
    populate(theme.dark.sidebar, "theme.dark.sidebar")
    return msg


def _streamlits_own():
    """Streamlit's function, also where a server in this process has replaced it."""
    populate = app_session._populate_theme_msg
    return getattr(populate, "populate", populate)


def test_the_same_message_as_streamlits_own_run_after_run(themed):
    original = _streamlits_own()
    fill = memoized_theme(original)
    want = _filled(original)
    assert want.custom_theme.primary_color == "#ff4b4b"
    assert want.custom_theme.sidebar.background_color == "#f0f2f6"
    assert not want.custom_theme.HasField("dark")  # an empty section stays unset
    for _ in range(3):  # made once, then merged from its bytes
        got = _filled(fill)
        assert got.SerializeToString() == want.SerializeToString()
        assert got.custom_theme.ListFields() == want.custom_theme.ListFields()
        assert not got.custom_theme.HasField("dark")


def test_made_once_per_section_until_the_config_is_parsed_again(themed):
    calls = []

    def populate(msg: CustomThemeConfig, section: str = "theme") -> None:
        calls.append(section)
        _streamlits_own()(msg, section)

    fill = memoized_theme(populate)
    for _ in range(4):
        _filled(fill)
    assert sorted(calls) == sorted(SECTIONS)  # six sections, each made once
    config.set_option("theme.primaryColor", "#00ff00")
    fill.forget()  # what a new parse of the config file calls
    assert _filled(fill).custom_theme.primary_color == "#00ff00"
    assert len(calls) == 2 * len(SECTIONS)


def test_the_server_applies_it():
    """`python -m dashboard` serves dashboard/serve.py, which applies it on import (checked in
    a process of its own: the import also sets the routes' environment variables), without
    importing torch."""
    code = (
        "import sys\n"
        "import dashboard.serve\n"
        "from streamlit.runtime import app_session\n"
        "print(hasattr(app_session._populate_theme_msg, 'forget'), 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, timeout=120, check=True)  # fmt: skip
    # ... and doesn't import torch: the server listens while the warm-up thread imports it.
    assert out.stdout.strip().splitlines()[-1] == "True False"


def test_no_config_polling_keeps_streamlit_from_watching_its_config_files(monkeypatch):
    """Streamlit's own `_install_config_watchers` starts a poll of each config file; once
    `no_config_polling` has run, it starts none. `python -m dashboard` applies it only when
    the file watcher is off."""
    from streamlit.web import bootstrap

    from dashboard.__main__ import _file_watcher, streamlit_args
    from dashboard.compat_streamlit import no_config_polling

    watched = []
    monkeypatch.setattr(bootstrap, "watch_file", lambda path, *a, **k: watched.append(path))
    monkeypatch.setattr(bootstrap, "_install_config_watchers", bootstrap._install_config_watchers)
    bootstrap._install_config_watchers({})
    assert watched == config.get_config_files("config.toml") and len(watched) == 2
    watched.clear()
    assert no_config_polling()
    bootstrap._install_config_watchers({})
    assert watched == []

    assert _file_watcher(streamlit_args([])) == "none"  # the default: off, and no polling
    assert _file_watcher(streamlit_args(["--server.fileWatcherType", "auto"])) == "auto"
    assert _file_watcher(["--server.fileWatcherType=poll"]) == "poll"


# `python -m dashboard` until its warm-up thread starts: what this process has imported then.
WARM_UP_START = """
import os, sys, threading
start = threading.Thread.start
def started(thread):
    if thread.name == "warm-up":
        print(*(name in sys.modules for name in ("streamlit.web.cli", "numpy")), flush=True)
        os._exit(0)
    start(thread)
threading.Thread.start = started
sys.argv = ["dashboard"]
from dashboard.__main__ import main
main()
"""
# The top-level packages (not the standard library's) that `import_` adds to a process that
# has imported Streamlit's command line and numpy, as `python -m dashboard` has by then.
ADDED = """
import json, sys
from streamlit.web import cli
import numpy
before = set(sys.modules)
{import_}
added = {{m.partition(".")[0] for m in set(sys.modules) - before}}
print(json.dumps(sorted(added - set(sys.stdlib_module_names))))
"""


def test_the_warm_up_imports_nothing_that_the_server_is_importing():
    """Two threads importing modules of one package at once can meet in its circular imports,
    and Python then gives one of them a half-made module: once, a server's start died of an
    ImportError in `streamlit.errors` (the warm-up thread imported `streamlit.string_util`
    while the main thread imported Streamlit). So the warm-up starts once Streamlit and numpy
    are imported, and then the server's own module and the warm-up share no package."""
    run = [sys.executable, "-c"]
    out = subprocess.run([*run, WARM_UP_START], cwd=REPO, capture_output=True, text=True)
    assert out.stdout.split() == ["True", "True"], out.stdout + out.stderr

    def added(import_: str) -> set[str]:
        code = ADDED.format(import_=import_)
        done = subprocess.run([*run, code], cwd=REPO, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        return set(json.loads(done.stdout))

    server = added("import dashboard.serve")
    # No server here: neither its start nor a first page is waited for.
    waits = "w._server_started = lambda: None; m.PAGE_STARTED.set(); m.PAGE_DRAWN.set()"
    warm_up = added(f"import dashboard as m; import dashboard.__main__ as w; {waits}; w.warm_up()")
    assert "torch" in warm_up and "dashboard" in server
    assert server & warm_up <= {"dashboard"}, server & warm_up


def _nodelay_of_a_connection(sock) -> int:
    """TCP_NODELAY of the connection an asyncio server on `sock` accepts (as uvicorn's)."""
    import asyncio
    import concurrent.futures
    import socket

    async def main() -> int:
        seen = asyncio.get_running_loop().create_future()

        def accepted(reader, writer):
            conn = writer.get_extra_info("socket")
            seen.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(accepted, sock=sock)
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        value = await asyncio.wait_for(seen, 10)
        writer.close()
        server.close()
        await server.wait_closed()
        return value

    # In a thread of its own: a test before this one may have left this thread's loop running.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result(timeout=30)


def test_the_servers_connections_have_nagle_off(monkeypatch):
    """Streamlit's bound socket has proto 0, so asyncio left Nagle's algorithm on for every
    connection (a two-part response waited ~40 ms for a delayed ACK); `tcp_no_delay` fixes
    the socket's protocol. Without it the same check finds Nagle on."""
    import socket

    from streamlit.web.server.starlette import starlette_server as server

    original = getattr(server._bind_socket, "original", server._bind_socket)  # a server ran here
    monkeypatch.setattr(server, "_bind_socket", original)  # and restored afterwards
    plain = server._bind_socket("127.0.0.1", 0, 8)
    assert plain.proto == 0 and _nodelay_of_a_connection(plain) == 0
    assert compat_streamlit.tcp_no_delay() and compat_streamlit.tcp_no_delay()  # once
    sock = server._bind_socket("127.0.0.1", 0, 8)
    assert sock.proto == socket.IPPROTO_TCP and not sock.getblocking()
    assert _nodelay_of_a_connection(sock) != 0
