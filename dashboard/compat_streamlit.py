"""Every reach into Streamlit's private parts, in one place (issue 31), each checked against the
version `requirements.txt` pins by tests/house/test_compat_streamlit.py, which fails loudly when an
upgrade moves one (`REACHES` lists them).

- `reuse_theme_messages`: Streamlit's per-run work that never changes while a server runs, done
  once. Each script run (a fragment's too) starts with a NewSession message that carries the
  theme: six sections of `[theme]` options, each read by `config.get_options_for_section`,
  which walks all ~370 config options under a lock. On the Explore view that was ~4.5 of the
  ~50 ms of server CPU a method switch cost (py-spy, --gil). Theme options can't change while
  the server runs (`st.set_option` refuses them) except when the config file is parsed again,
  so each section's message is kept and all are forgotten when it is. `python -m dashboard`
  (serve.py) applies it; `streamlit run dashboard/app.py` runs without it. If Streamlit's
  internals are not what this expects, nothing is changed.
- `no_config_polling`: the same idea for the config files: `python -m dashboard` applies it
  when the file watcher is off, as it is by default.
- `in_script_run`: whether this thread runs a page's script (a spinner or a progress bar can
  be drawn), not the explore route's thread.
- `tcp_no_delay`: Streamlit binds its listening socket as `socket.socket(family=...)`, whose
  `proto` is 0, and asyncio turns Nagle's algorithm off only on sockets whose `proto` says TCP:
  every connection kept it on, and a response written in two parts (headers, then body: the
  explore route's answers, media, the health check) waited ~40 ms for the client's delayed
  acknowledgement. `python -m dashboard` gives the bound socket its protocol.
- `runtime_started`, `warm_emoji`, `load_cli`, `run_cli`: `python -m dashboard`'s start.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

_applied = False


def reuse_theme_messages() -> bool:
    """Make Streamlit fill each NewSession's theme sections from a message made once per
    section (and again after the config is parsed again). Returns whether it did."""
    global _applied
    try:
        from streamlit import config
        from streamlit.runtime import app_session
    except ImportError:  # pragma: no cover - Streamlit is a dependency
        return False
    original = getattr(app_session, "_populate_theme_msg", None)
    if _applied or not callable(original) or not hasattr(config, "on_config_parsed"):
        return _applied
    app_session._populate_theme_msg = memoized_theme(original)
    config.on_config_parsed(app_session._populate_theme_msg.forget, force_connect=True)
    _applied = True
    return True


def memoized_theme(populate: Callable[[Any, str], None]) -> Callable[..., None]:
    """`populate(msg, section)`, made once per section on a fresh message and then merged
    from its bytes: the same fields set, and a section with none left untouched (as
    `populate` leaves it)."""
    made: dict[str, bytes] = {}
    lock = threading.Lock()

    def fill(msg, section: str = "theme") -> None:
        with lock:
            raw = made.get(section)
        if raw is None:
            scratch = type(msg)()
            populate(scratch, section)
            raw = scratch.SerializeToString()
            with lock:
                made[section] = raw
        if raw:
            msg.MergeFromString(raw)

    def forget(*_: Any) -> None:
        with lock:
            made.clear()

    fill.forget = forget
    fill.populate = populate  # the function it stands in for
    return fill


def no_config_polling() -> bool:
    """Keep Streamlit from polling its config files while the server runs. It checks each
    `config.toml` it may read (`~/.streamlit/`, `./.streamlit/`) every 0.2 s in a thread pool,
    even with `server.fileWatcherType none`: ~3 ms of CPU a second, every second, and ~2 ms
    inside each click's measurement (py-spy of an idle server, with one page open). A served
    dashboard's config changes with a restart, as its code does. Call before the server
    starts; returns whether it did."""
    try:
        from streamlit.web import bootstrap
    except ImportError:  # pragma: no cover - Streamlit is a dependency
        return False
    if not callable(getattr(bootstrap, "_install_config_watchers", None)):
        return False
    bootstrap._install_config_watchers = _no_watchers
    return True


def _no_watchers(*_: Any, **__: Any) -> None:
    """Streamlit's `bootstrap._install_config_watchers`, under `no_config_polling`."""


# (module, attribute): what this module reaches for, checked by
# tests/house/test_compat_streamlit.py.
REACHES = (
    ("streamlit.runtime.app_session", "_populate_theme_msg"),
    ("streamlit.config", "on_config_parsed"),
    ("streamlit.web.bootstrap", "_install_config_watchers"),
    ("streamlit.runtime.scriptrunner", "get_script_run_ctx"),
    ("streamlit.runtime", "Runtime"),
    ("streamlit.runtime", "RuntimeState"),
    ("streamlit.string_util", "is_emoji"),
    ("streamlit.web.cli", "main"),
    ("streamlit.web.server.starlette.starlette_server", "_bind_socket"),
)


def tcp_no_delay() -> bool:
    """Make the socket Streamlit's server binds a TCP one by its `proto` too, so that asyncio
    sets TCP_NODELAY on every connection it accepts. Returns whether it did (False: Streamlit
    is not what this expects, and nothing is changed)."""
    import socket

    try:
        from streamlit.web.server.starlette import starlette_server as server
    except ImportError:  # pragma: no cover - another server
        return False
    bind = getattr(server, "_bind_socket", None)
    if not callable(bind):
        return False
    if getattr(bind, "tcp", False):
        return True

    def bind_tcp(*args: Any, **kwargs: Any) -> socket.socket:
        sock = bind(*args, **kwargs)
        if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.proto == 0:
            family, kind, timeout = sock.family, sock.type, sock.gettimeout()
            sock = socket.socket(family, kind, socket.IPPROTO_TCP, fileno=sock.detach())
            sock.settimeout(timeout)  # non-blocking, as bound
        return sock

    bind_tcp.tcp = True  # type: ignore[attr-defined]
    bind_tcp.original = bind  # type: ignore[attr-defined]
    server._bind_socket = bind_tcp
    return True


def in_script_run() -> bool:
    """Whether this thread is running a page's script (Streamlit's script-run context)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    return get_script_run_ctx(suppress_warning=True) is not None


def runtime_started() -> bool:
    """Whether Streamlit's runtime exists and has left its initial state."""
    from streamlit.runtime import Runtime, RuntimeState

    return Runtime.exists() and Runtime.instance().state != RuntimeState.INITIAL


def warm_emoji() -> None:
    """Compile Streamlit's emoji pattern (~0.3 s) before a first page's icon needs it."""
    from streamlit.string_util import is_emoji

    is_emoji("🔥")


def load_cli() -> Any:
    """Streamlit's command line module, imported now (in the calling thread)."""
    from streamlit.web import cli

    return cli


def run_cli(args: list[str]) -> int:
    """`streamlit ARGS…`, in this process (its exit status)."""
    return load_cli().main(args, prog_name="streamlit")
