"""The Live class's watcher: a page that waits for the teacher (or a teacher's count of answers)
asks the server's status route (`dashboard/serve.py`) instead of rerunning a fragment, and
reruns the page only when the round it shows has changed.

The watcher reads `GET {url}?room=CODE` every `every` seconds. When the latest round's number
or state differs from the page's (`round`, `state`), it sends the trigger `changed` once, which
reruns the script. With `count`, it also shows the number of answers, refreshed at each read:
the teacher's projector then needs no rerun at all while a round is open. With `students`, it
shows the number of students in the class: the lobby follows joins without a rerun either.

`keep_teacher_key` has the teacher's browser get a cookie of its own (an HttpOnly one, from the
server's route) for a single-use pass: the teacher's key never goes into the page.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import streamlit as st

_HERE = Path(__file__).parent
_mount = st.components.v2.component(
    "live_watch",
    html='<div class="live-watch"></div>',
    css=(_HERE / "live_watch.css").read_text(encoding="utf-8"),
    js=(_HERE / "live_watch.js").read_text(encoding="utf-8"),
    isolate_styles=False,
)


def watch(
    *,
    key: str,
    url: str,
    room: str,
    every: float,
    round_shown: int,
    state_shown: str,
    on_change: Callable[[], None],
    count: tuple[int, int] | None = None,
    students: int | None = None,
    notify: bool = True,
) -> None:
    """Mount the watcher. `count`: (answers, students) now, shown at once and then kept up to
    date; None for a student's page (nothing shown). `students`: the number of students now,
    shown as "Students in the class" and kept up to date. `notify` False: the watcher only
    shows, and never reruns the page (another watcher of the page does)."""
    _mount(
        key=key,
        data={
            "url": url,
            "room": room,
            "every_ms": round(1000 * every),
            "round": round_shown,
            "state": state_shown,
            "count": list(count) if count is not None else None,
            "students": students,
            "notify": notify,
        },
        on_changed_change=on_change,
        width="stretch",
    )


_keeper = st.components.v2.component(
    "live_teacher_key",
    html="<span></span>",
    js=(_HERE / "live_teacher.js").read_text(encoding="utf-8"),
)


def keep_teacher_key(
    *, key: str, url: str, room: str, single_pass: str, on_stored: Callable[[], None]
) -> None:
    """Have the browser POST `single_pass` (`LiveStore.teacher_pass`) for `room` to the
    server's route at `url`, which answers with the cookie of a teacher's browser. Calls
    `on_stored` once the browser has it. The pass is spent by that POST, or worthless two
    minutes later: nothing that grants control stays in the page."""
    _keeper(
        key=key,
        data={"url": url, "room": room, "pass": single_pass},
        on_stored_change=on_stored,
        width="content",
    )
