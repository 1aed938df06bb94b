"""Every reach into `multiprocessing`'s internals, in one place (issue 31), checked by
tests/sandbox/test_compat_mp.py, which fails loudly when a Python release moves one (`REACHES`).

- `skip_parent_main(name)`: a new process named `name` does not re-import its parent's
  `__main__` first. A child normally does (`multiprocessing.spawn.get_preparation_data` puts
  the parent's main module in the data the child prepares itself from). Inside Streamlit that is
  the app's script (Streamlit runs it as `__main__`), so every sandboxed model worker would
  first run the whole dashboard, in bare mode, before its own code: slow, noisy, and not what a
  sandboxed model worker should execute. Other processes are left as they were.
"""

from __future__ import annotations

import multiprocessing.spawn
import threading
from collections.abc import Callable

# (module, attribute): what this module reaches for.
REACHES = (("multiprocessing.spawn", "get_preparation_data"),)
MAIN_KEYS = ("init_main_from_path", "init_main_from_name")  # what the child would re-import

_names: set[str] = set()
_lock = threading.Lock()
_original: Callable[[str], dict] | None = None


def _preparation_data(name: str) -> dict:
    data = _original(name)
    if name in _names:
        for key in MAIN_KEYS:
            data.pop(key, None)
    return data


def skip_parent_main(name: str) -> None:
    """Processes named `name` start without their parent's `__main__` (idempotent)."""
    global _original
    with _lock:
        _names.add(name)
        if _original is None:
            _original = multiprocessing.spawn.get_preparation_data
            multiprocessing.spawn.get_preparation_data = _preparation_data
