"""Live class: every student commits to an answer, then the projector shows the model's map
beside the whole class's.

The teacher starts a class (a room code, a link and its QR code), picks an image and a model
with the sidebar's pickers and opens a round: "where does it look?" (each student paints the
pixels they think the score depends on) or "what will it say?" (each picks a class and how sure
they are). While it is open the projector shows only how many have answered; the reveal shows
the model's map beside the mean painting with the class's Spearman ρ and top-10 % overlap, or
the guesses against the model's probabilities. Students join at /live?room=CODE.

The state lives in `dashboard.live_store` (SQLite, or Postgres with SALIENCY_CLASS_DB), which
checks every key: this page only shows what the store lets the holder of a key see.

The teacher's key is never in this page's address nor in what it shows by default: the
projector would show it to the room. The session holds it; the page hands its browser a
single-use pass, which the browser trades with `dashboard/serve.py`'s route for a cookie of
its own, so a reopened tab gets the class back. The "teacher link", shown only when the teacher
asks, opens the class on another device of theirs.
Guesses at room codes and joins are limited per client address (`dashboard/rate_limits.py`).
"""

from __future__ import annotations

import os
import time

import numpy as np
import streamlit as st
from PIL import Image

from dashboard import LIVE_STATUS_ENV, cache, live_class, rate_limits, render, sources, state
from dashboard.components import live_watch
from dashboard.live_store import (
    PASS_SECONDS,
    TEACHER_ROUTE_ENV,
    LiveError,
    LiveStore,
    NoRoom,
    format_code,
    teacher_cookie,
)
from dashboard.render import class_label, class_md
from dashboard.views import live_results as results
from dashboard.views.live_results import CANVAS_PX, painting_from_canvas

# Session keys of this page.
LIVE_KEEP = "live_keep"
LIVE_START = "live_start"
LIVE_CODE = "live_code"
LIVE_NAME = "live_name"
LIVE_SHOW_LINK = "live_show_link"
LIVE_KIND = "live_kind"
LIVE_INDEX = "live_index"
LIVE_WRONG = "live_wrong"
LIVE_ANY = "live_any"
LIVE_OPEN = "live_open"
LIVE_REVEAL = "live_reveal"
LIVE_STUDENTS = "live_students"
LIVE_COUNT = "live_count"
LIVE_POLL = "live_poll"
TEACHERS = "live_teachers"  # {room code: teacher's key} of this session's classes
KEPT = "live_cookie_kept"  # the rooms whose cookie the browser said it has
PASSES = "live_passes"  # {room code: (single-use pass, when made)}
FOUND = "live_rooms_found"  # codes this session found (no guess spent again)
# Prefixes of keys made per round, or per image and model.
LIVE_TARGET = "live_target"
LIVE_CSV = "live_csv"
LIVE_NPZ = "live_npz"
LIVE_CANVAS = "live_canvas"

POLL_SECONDS = 2.0  # how often a student's waiting page asks whether a round has opened
COUNT_SECONDS = 0.5  # how often the teacher's count of answers refreshes (a cheap read)
STUDENTS_SECONDS = 1.0  # how often the teacher's count of students refreshes
KIND_LABELS = {"map": "Where does it look? (paint)", "predict": "What will it say? (guess)"}
_painting_from_canvas = painting_from_canvas  # the name tests/browser/test_budget_decode.py reads


def _store() -> LiveStore:
    return cache.live_store()


def _local_only() -> bool:
    return str(st.get_option("server.address") or "localhost") in ("localhost", "127.0.0.1", "::1")


def _client() -> str:
    """Whom the rate limits count this session as: its address (the same key as the routes')."""
    return rate_limits.client_key(st.context.ip_address)


def _base_url() -> str:
    """The address students type: this machine's on the class network, unless the teacher
    reached the server by another name than localhost (then that one)."""
    host = st.context.headers.get("host", "") if st.context.headers else ""
    port = st.get_option("server.port")
    if host and not host.startswith(("localhost", "127.", "[::1]")):
        return f"http://{host}"
    return f"http://{live_class.lan_address()}:{port}"


# --- the page ------------------------------------------------------------------------------


def render_view() -> None:
    view = state.current()
    st.title("🙋 Live class")
    code = view["room"]
    linked = view["teacher"]  # a teacher link's key (`streamlit run`), or an old link's
    if linked:
        state.put(state.TEACHER, "")  # out of the address: state.sync() rewrites it without
    if not code:
        _landing()
        return
    store = _store()
    try:
        _find(store, code)
    except rate_limits.Refused as err:
        st.error(render.plain(err))
        return
    except NoRoom as err:
        st.error(render.plain(err))
        _join_form(store, None)
        return
    if linked and store.is_teacher(code, linked):
        _remember_teacher(code, linked)
    elif linked:
        st.warning("This link's teacher key isn't this class's: you see the students' page.")
    key = _teacher_key(store, code)
    if key:
        _teacher(store, code, key)
        return
    _student(store, code, view["me"])


def _find(store: LiveStore, code: str) -> None:
    """The room `code`, or NoRoom; a code this session has not found before costs a guess
    (`rate_limits.guess`: Refused when this client has tried too many that don't exist)."""
    found = st.session_state.setdefault(FOUND, set())
    if code in found:
        store.room(code)  # it may have ended since
        return
    client = _client()
    rate_limits.guess(client)
    store.room(code)
    rate_limits.found(client)
    found.add(code)


def _remember_teacher(code: str, key: str) -> None:
    st.session_state.setdefault(TEACHERS, {})[code] = key


def _teacher_key(store: LiveStore, code: str) -> str | None:
    """The key of `code`'s teacher that this session holds (it started the class, or opened
    the teacher link) or that the browser sent as a cookie when the session began (a
    reopened tab); None for a student."""
    held = st.session_state.get(TEACHERS, {}).get(code)
    cookie = st.context.cookies.get(teacher_cookie(code)) if st.context.cookies else None
    for key in (held, cookie):
        if key and store.is_teacher(code, key):
            _remember_teacher(code, key)
            return key
    return None


def _keep_in_browser(store: LiveStore, code: str, key: str) -> None:
    """Until the browser says it has it: a cookie of the teacher's browser, so that a
    reopened tab gets the class back (not needed when a cookie brought the session its key).
    The page holds a single-use pass for it, never the key. Needs the server's route
    (`python -m dashboard`); under `streamlit run`, the teacher link does this."""
    route = os.environ.get(TEACHER_ROUTE_ENV)
    if not route or code in st.session_state.get(KEPT, set()):
        return
    if st.context.cookies and st.context.cookies.get(teacher_cookie(code)) == key:
        return
    passes = st.session_state.setdefault(PASSES, {})
    single, made = passes.get(code, ("", 0.0))
    if time.time() - made > PASS_SECONDS / 2:  # a fresh one well before it ends
        single, made = store.teacher_pass(code, key), time.time()
        passes[code] = (single, made)

    def kept() -> None:
        st.session_state.setdefault(KEPT, set()).add(code)

    live_watch.keep_teacher_key(
        key=LIVE_KEEP, url=route, room=code, single_pass=single, on_stored=kept
    )


def _teacher_link(code: str, key: str) -> str:
    """The link that opens the class as its teacher on another device: through the server's
    route, which sets the cookie and redirects to an address without the key; under
    `streamlit run`, the page itself, which moves the key out of the address."""
    route = os.environ.get(TEACHER_ROUTE_ENV)
    base = _base_url()
    if route:
        return f"{base}{route}?room={code}&key={key}"
    return f"{live_class.join_url(base, code)}&teacher={key}"


def _landing() -> None:
    st.markdown(
        "Every student commits to an answer on their phone or laptop (**where will the network "
        "look?**, **what will it say?**), then the projector shows the model's saliency map "
        "beside the whole class's guesses."
    )
    if _local_only():
        st.info(
            "This server only listens on this computer, so students' phones can't reach it. "
            "Restart it for the class network: `bash scripts/dashboard.sh --class` (or "
            "`python -m dashboard --class`), then open this page again."
        )
    c1, c2 = st.columns(2)
    with c1, st.container(border=True):
        st.markdown("### I'm the teacher")
        if st.button("Start a class", type="primary", key=LIVE_START):
            code, token = _store().create_room()
            _remember_teacher(code, token)
            st.session_state.setdefault(FOUND, set()).add(code)
            state.put(state.ROOM, code)
            st.rerun()
        st.caption(
            "This browser keeps control of the class (a cookie; nothing secret goes into the "
            "page's address, which the projector shows): a closed tab reopened gets it back. "
            "For another device, open the teacher link that the class's page shows when you "
            "ask. Rooms close after 12 hours."
        )
    with c2, st.container(border=True):
        st.markdown("### I'm a student")
        _join_form(_store(), None)


def _join_form(store: LiveStore, code: str | None) -> None:
    with st.form("live_join", border=False):
        typed = code or st.text_input("Class code", key=LIVE_CODE, max_chars=16)
        name = st.text_input("Your nickname", key=LIVE_NAME, max_chars=40)
        joined = st.form_submit_button("Join", type="primary")
    if joined:
        client = _client()
        try:
            rate_limits.join(client)
            rate_limits.guess(client)
            token = store.join(typed, name)
        except rate_limits.Refused as err:
            st.error(render.plain(err))
            return
        except NoRoom as err:  # the guess is kept
            st.error(render.plain(err))
            return
        except LiveError as err:  # a room, but a name taken, or full
            rate_limits.found(client)
            st.error(render.plain(err))
            return
        rate_limits.found(client)
        st.session_state.setdefault(FOUND, set()).add(store.room(typed).code)
        state.put(state.ROOM, store.room(typed).code)
        state.put(state.ME, token)
        state.put(state.TEACHER, "")
        st.rerun()


# --- the teacher ---------------------------------------------------------------------------


def _teacher(store: LiveStore, code: str, teacher: str) -> None:
    _keep_in_browser(store, code, teacher)
    url = live_class.join_url(_base_url(), code)
    rnd = store.current_round(code)
    left, right = st.columns([2, 1])
    with left:
        st.markdown(f"## Class code **{format_code(code)}**")
        st.markdown(f"Students open **{url}** (or scan the code) and pick a nickname.")
        _students_count(store, code, rnd)
        # Off by default, and nothing of it in the page until asked: the projector shows
        # this page, and the link gives whoever holds it the class.
        if st.toggle("Show my teacher link (not on the projector)", key=LIVE_SHOW_LINK):
            link = _teacher_link(code, teacher)
            st.caption(
                "Open this on your own phone or laptop to run the class from there. Anyone "
                "who has it controls the class: don't project, post or share it. Turn this "
                "off before the projector shows this page again."
            )
            st.code(link, language=None)
            st.image(live_class.qr_png(link, scale=5), width=200, caption="Teacher link")
        if _local_only():
            st.warning(
                "This server only listens on this computer: restart it with `--class` "
                "(`bash scripts/dashboard.sh --class`) so that students can reach it."
            )
    with right:
        st.image(live_class.qr_png(url), width=300, caption="Scan to join")
    if rnd is not None and rnd.state == "open":
        _open_round(store, code, teacher, rnd)
        return
    if rnd is not None and rnd.state == "revealed":
        _reveal_teacher(store, code, teacher, rnd)
    _new_round(store, code, teacher, rnd)


def _new_round(store: LiveStore, code: str, teacher: str, last) -> None:
    view = state.current()
    src = sources.source(view["dataset"])
    if render.no_images(src, "a round"):
        return
    model = view["model"]
    names = cache.model_info(model).class_names
    st.divider()
    st.markdown(f"### {'Next' if last else 'First'} round")
    st.caption(
        f"The image comes from **{render.plain(src.title)}** and the model is "
        f"**{render.plain(cache.display_name(model))}**: change them in the sidebar, as in "
        "Explore."
    )
    kind = st.radio("Kind of round", tuple(KIND_LABELS), format_func=KIND_LABELS.get,
                    key=LIVE_KIND, horizontal=True)  # fmt: skip
    preds = cache.predictions(model, view["dataset"])
    st.session_state.setdefault(LIVE_INDEX, 0)
    c1, c2, c3 = st.columns([2, 1, 1], vertical_alignment="bottom")
    if c2.button("A misclassified one", key=LIVE_WRONG):
        wrong = np.flatnonzero(preds.predicted != src.labels)
        if len(wrong):
            st.session_state[LIVE_INDEX] = int(np.random.default_rng().choice(wrong))
    if c3.button("Any image", key=LIVE_ANY):
        st.session_state[LIVE_INDEX] = int(np.random.default_rng().integers(len(src)))
    index = c1.number_input(f"Image (0 to {len(src) - 1:,})", 0, len(src) - 1, key=LIVE_INDEX)
    image = src.image(index)
    pred = int(preds.predicted[index])
    target = pred
    if kind == "map":
        target = st.selectbox(
            "Class whose score students think about",
            range(len(names)),
            index=pred,
            format_func=lambda k: (
                class_label(k, names) + (" (the model's answer)" if k == pred else "")
            ),  # fmt: skip
            key=f"{LIVE_TARGET}_{index}_{model}",
        )
    c1, c2 = st.columns([1, 2])
    with c1:
        render.show(render.grey(image, render.scale_for(image.shape)), "What the class will see")
    with c2:
        with st.expander("What the model says (closed, so the projector doesn't tell)"):
            st.caption(
                f"True class: {class_md(int(src.labels[index]), names)} · the model says "
                f"{class_md(pred, names)} ({preds.p_predicted[index]:.1%})."
            )
        question = (
            f"Paint the pixels {class_label(int(target), names)}'s score depends on most."
            if kind == "map"
            else "Which class will the model say, and how sure are you?"
        )
        st.markdown(f"Students will be asked: **{render.plain(question)}**")
        if st.button("Open the round", type="primary", key=LIVE_OPEN):
            spec = {
                "dataset": view["dataset"],
                "model": model,
                "index": int(index),
                "target": int(target),
                "predicted": pred,
                "true": int(src.labels[index]),
                "n_classes": len(names),
                "question": question,
            }
            store.open_round(code, teacher, kind, spec)
            st.rerun()


def _open_round(store: LiveStore, code: str, teacher: str, rnd) -> None:
    st.divider()
    st.markdown(f"### Round {rnd.number}: {render.plain(rnd.spec['question'])}")
    image = results.round_image(rnd.spec)
    c1, c2 = st.columns([1, 2])
    with c1:
        render.show(render.grey(image, render.scale_for(image.shape)))
    with c2:
        _answer_count(store, code, rnd.number)
        if st.button("Reveal", type="primary", key=LIVE_REVEAL):
            results.reveal(store, code, teacher, rnd)
            st.rerun()


def _status_url() -> str | None:
    """The server's status route (`dashboard/serve.py`), or None when the app runs without it
    (`streamlit run dashboard/app.py`, AppTest): the pages then poll with a fragment."""
    return os.environ.get(LIVE_STATUS_ENV) or None


def _round_changed() -> None:
    """The watcher saw another round (or state): the rerun it starts shows it."""


def _students_count(store: LiveStore, code: str, rnd) -> None:
    """ "Students in the class", following joins within a second: read by the watcher from the
    status route, or by a fragment without it. In the lobby (no round open) this watcher also
    notices a round opened from the teacher's other device; while one is open, the count of
    answers does."""
    url = _status_url()
    if url is None:
        _students_fragment(store, code)
        return
    now = store.public_status(code) or {"students": 0}
    live_watch.watch(
        key=LIVE_STUDENTS, url=url, room=code, every=STUDENTS_SECONDS,
        round_shown=rnd.number if rnd else 0, state_shown=rnd.state if rnd else "none",
        on_change=_round_changed, students=now["students"],
        notify=rnd is None or rnd.state != "open",
    )  # fmt: skip


@st.fragment(run_every=STUDENTS_SECONDS)
def _students_fragment(store: LiveStore, code: str) -> None:
    st.metric("Students in the class", store.n_students(code))


def _answer_count(store: LiveStore, code: str, number: int) -> None:
    url = _status_url()
    if url is None:
        _answer_count_fragment(store, code, number)
        return
    now = store.public_status(code) or {"round": 0, "answers": 0, "students": 0}
    live_watch.watch(
        key=LIVE_COUNT, url=url, room=code, every=COUNT_SECONDS, round_shown=number,
        state_shown="open", on_change=_round_changed,
        count=(now["answers"] if now["round"] == number else 0, now["students"]),
    )  # fmt: skip


@st.fragment(run_every=1.0)  # a script run each time: not as often as the route's read
def _answer_count_fragment(store: LiveStore, code: str, number: int) -> None:
    n, _, answers = store.status(code)
    st.metric("Answers so far", answers if n == number else 0)
    st.caption(f"of {store.n_students(code)} students; they can change them until the reveal.")


def _reveal_teacher(store: LiveStore, code: str, teacher: str, rnd) -> None:
    st.divider()
    st.markdown(f"### Round {rnd.number}, revealed: {render.plain(rnd.spec['question'])}")
    results.result(rnd)
    answers = store.answers(code, teacher, rnd.number)
    if rnd.kind == "predict":
        results.class_calibration(store, code, teacher, rnd.number)
    saliency_map = np.reshape(rnd.result["map"], (28, 28)) if rnd.kind == "map" else None
    c1, c2 = st.columns(2)
    c1.download_button(
        "This round's answers as CSV",
        live_class.answers_csv(rnd, answers, saliency_map),
        f"class-{code}-round-{rnd.number}.csv",
        "text/csv",
        key=f"{LIVE_CSV}_{rnd.number}",
        on_click="ignore",
    )
    if rnd.kind == "map":
        try:
            data = live_class.round_npz(
                rnd, answers, results.round_image(rnd.spec), cache.display_name(rnd.spec["model"])
            )
        except LiveError as err:
            c2.warning(render.plain(err))
            return
        c2.download_button(
            "Download the class's paintings (.npz)",
            data,
            f"class-{code}-round-{rnd.number}.npz",
            "application/octet-stream",
            key=f"{LIVE_NPZ}_{rnd.number}",
            on_click="ignore",
            help="The paintings (no names), the model's map, the image and its label: this "
            "round of your class's own ClickMe. Keep one file per round.",
        )


# --- the students --------------------------------------------------------------------------


def _student(store: LiveStore, code: str, me: str) -> None:
    try:
        name = store.student(code, me)
    except LiveError:
        st.markdown(f"Joining the class **{format_code(code)}**.")
        _join_form(store, code)
        return
    st.caption(f"You are **{render.plain(name)}** in the class {format_code(code)}.")
    rnd = store.current_round(code)
    _round_for_student(store, code, me, rnd)
    # Last on the page: the poll's fragment reruns alone every 2 s, after everything above.
    _poll(store, code, (rnd.number, rnd.state) if rnd else (0, "none"))


def _round_for_student(store: LiveStore, code: str, me: str, rnd) -> None:
    if rnd is None or rnd.state == "closed":
        st.info("Waiting for your teacher to open a round…")
        return
    mine = store.my_answer(code, me, rnd.number)
    if rnd.state == "revealed":
        st.markdown(f"### Round {rnd.number}: the answer")
        results.result(rnd, mine)
        if rnd.kind == "predict":
            results.my_calibration(store, code, me, rnd.number)
        return
    st.markdown(f"### Round {rnd.number}: {render.plain(rnd.spec['question'])}")
    if rnd.kind == "map":
        _paint(store, code, me, rnd, mine)
    else:
        _guess(store, code, me, rnd, mine)


def _poll(store: LiveStore, code: str, shown: tuple[int, str]) -> None:
    """A student's page asks every 2 s whether the round changed, and reruns only when it did:
    from the browser, by the server's status route (no script run per poll), or else by a
    fragment (one small query, but a script run)."""
    url = _status_url()
    if url is None:
        _poll_fragment(store, code, shown)
        return
    live_watch.watch(
        key=LIVE_POLL, url=url, room=code, every=POLL_SECONDS, round_shown=shown[0],
        state_shown=shown[1], on_change=_round_changed,
    )  # fmt: skip


@st.fragment(run_every=POLL_SECONDS)
def _poll_fragment(store: LiveStore, code: str, shown: tuple[int, str]) -> None:
    number, round_state, _ = store.status(code)
    if (number, round_state) != tuple(shown):
        st.rerun(scope="app")


def _paint(store: LiveStore, code: str, me: str, rnd, mine) -> None:
    from dashboard import canvas  # the browser's PNG is checked before it is decoded

    image = results.round_image(rnd.spec)
    picture = render.thumbnail(render.grey(image, render.scale_for(image.shape)), CANVAS_PX)
    background = Image.fromarray(picture).resize((CANVAS_PX, CANVAS_PX))
    st.caption(
        "Paint over the image where you think the model looks. Each stroke is sent when you "
        "lift your finger; paint more, or undo, until the reveal."
    )
    drawing = canvas.draw(
        width=CANVAS_PX,
        height=CANVAS_PX,
        key=f"{LIVE_CANVAS}_{rnd.number}",
        stroke_width=18,
        stroke_color="rgba(255, 165, 0, 0.8)",
        background_image=background,
        drawing_mode="freedraw",
        update_streamlit=True,
    )
    if drawing.error:
        st.error(render.plain(drawing.error) + " What you sent before is kept.")
    painting = results.painting_from_canvas(drawing.pixels)
    if painting is not None and (painting > 0).any():
        changed = mine is None or np.abs(np.round(painting * 255) / 255 - mine.painting).max() > 0
        if changed:
            try:
                store.answer(code, me, rnd.number, painting=painting)
                mine = store.my_answer(code, me, rnd.number)
            except LiveError as err:
                st.error(render.plain(err))
    if mine is not None:
        st.success("Sent. You can paint more, or undo, until the reveal.")
        render.show(results.heat(mine.painting), "What your teacher has from you", width=140)


def _guess(store: LiveStore, code: str, me: str, rnd, mine) -> None:
    image = results.round_image(rnd.spec)
    names = cache.model_info(rnd.spec["model"]).class_names
    render.show(render.grey(image, render.scale_for(image.shape)))
    with st.form(f"live_guess_{rnd.number}", border=False):
        guess = st.selectbox(
            "The model will say",
            range(len(names)),
            index=mine.guess if mine is not None and mine.guess is not None else None,
            format_func=lambda k: class_label(k, names),
            placeholder="Pick a class",
        )
        sure = st.slider(
            "How sure are you?", 0, 100,
            int(round(100 * mine.confidence)) if mine is not None else 50, format="%d %%",
        )  # fmt: skip
        sent = st.form_submit_button("Send my guess", type="primary")
    if sent:
        try:
            store.answer(code, me, rnd.number, guess=guess, confidence=sure / 100)
            mine = store.my_answer(code, me, rnd.number)
        except LiveError as err:
            st.error(render.plain(err))
    if mine is not None:
        st.success(
            f"Sent: {render.plain(class_label(mine.guess, names))}, {mine.confidence:.0%} sure. "
            "You can change it until the reveal."
        )
