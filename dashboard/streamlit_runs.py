"""Streamlit's per-run work that never changes while a server runs, done once.

Each script run (a fragment's too) starts with a NewSession message that carries the theme:
six sections of `[theme]` options, each read by `config.get_options_for_section`, which walks
all ~370 config options under a lock. On the Explore view that was ~4.5 of the ~50 ms of server
CPU a method switch cost (py-spy, --gil). Theme options can't change while the server runs
(`st.set_option` refuses them) except when the config file is parsed again, so
`reuse_theme_messages` keeps each section's message and forgets them all when it is.

`python -m dashboard` (serve.py) applies it; `streamlit run dashboard/app.py` runs without it.
If Streamlit's internals are not what this expects, nothing is changed.
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
