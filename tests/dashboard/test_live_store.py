"""The live class's store (issue 17) on SQLite and on a throwaway Postgres: every isolation
case, restarts, expiry, 200 students; and the reveal's scores against direct computations."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
from scipy.stats import spearmanr

from dashboard import live_class
from dashboard.live_store import LiveError, LiveStore, NoRoom, NotTeacher, RoundClosed
from saliency.metrics import top_overlap, top_set


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'live.sqlite3'}"
    base = request.getfixturevalue("postgres_url")
    # A fresh schema state per test: drop the tables (they are recreated by LiveStore).
    import psycopg

    with psycopg.connect(base, autocommit=True) as db:
        for table in ("live_answers", "live_rounds", "live_students", "live_passes",
                      "live_teacher_devices", "live_rooms"):  # fmt: skip
            db.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
    return base


def painting(rows: slice, cols: slice) -> np.ndarray:
    p = np.zeros((28, 28))
    p[rows, cols] = 1.0
    return p


MAP_SPEC = {"dataset": "mnist", "model": "mnist-cnn", "index": 0, "target": 7, "n_classes": 10}


def test_a_whole_map_round(url):
    store = LiveStore(url)
    room, teacher = store.create_room()
    assert store.public_status(room) == {"round": 0, "state": "none", "answers": 0, "students": 0}
    ada, bo = store.join(room, "Ada"), store.join(room.lower(), " Bo ")  # codes ignore case
    assert store.student(room, bo) == "Bo"
    n = store.open_round(room, teacher, "map", MAP_SPEC)
    assert store.status(room) == (1, "open", 0)
    assert store.public_status(room.lower()) == {
        "round": 1, "state": "open", "answers": 0, "students": 2
    }  # fmt: skip
    store.answer(room, ada, n, painting=painting(slice(0, 5), slice(0, 5)))
    store.answer(room, ada, n, painting=painting(slice(10, 12), slice(10, 12)))  # changed
    store.answer(room, bo, n, painting=painting(slice(20, 28), slice(0, 28)))
    assert store.status(room) == (1, "open", 2)
    assert store.public_status(room)["answers"] == 2
    mine = store.my_answer(room, ada, n)
    assert mine.nickname == "Ada" and mine.painting.sum() == 4.0
    every = store.answers(room, teacher, n)
    assert [a.nickname for a in every] == ["Ada", "Bo"]
    store.reveal(room, teacher, n, {"rho": 0.5})
    assert store.current_round(room).result == {"rho": 0.5}
    assert store.status(room) == (1, "revealed", 2)
    n2 = store.open_round(room, teacher, "predict", MAP_SPEC)  # the latest round counts
    assert store.public_status(room) == {"round": n2, "state": "open", "answers": 0, "students": 2}
    assert store.public_status("NOPE") is None


def test_isolation_and_bad_input(url):
    store = LiveStore(url)
    a_room, a_teacher = store.create_room()
    b_room, b_teacher = store.create_room()
    ada = store.join(a_room, "Ada")
    bob = store.join(b_room, "Bob")
    # A wrong code.
    with pytest.raises(NoRoom, match="no class with the code 'NOPE1'"):
        store.join("nope1", "X")
    # Students (or anyone without the teacher's token) can't open, reveal or read answers,
    # with their own token, another room's teacher token, or none.
    for token in (ada, None, "", b_teacher, a_teacher + "x"):
        with pytest.raises(NotTeacher):
            store.open_round(a_room, token, "map", MAP_SPEC)
    n = store.open_round(a_room, a_teacher, "map", MAP_SPEC)
    store.open_round(b_room, b_teacher, "map", MAP_SPEC)
    store.answer(a_room, ada, n, painting=painting(slice(0, 3), slice(0, 3)))
    for token in (ada, b_teacher, None):
        with pytest.raises(NotTeacher):
            store.answers(a_room, token, n)
        with pytest.raises(NotTeacher):
            store.reveal(a_room, token, n, {})
    # A student of room B can't answer in, or read from, room A.
    with pytest.raises(LiveError, match="haven't joined this class"):
        store.answer(a_room, bob, n, painting=painting(slice(0, 3), slice(0, 3)))
    with pytest.raises(LiveError, match="haven't joined this class"):
        store.my_answer(a_room, bob, n)
    assert [a.nickname for a in store.answers(b_room, b_teacher, 1)] == []
    # The same nickname twice in one room; the same in another room is fine.
    with pytest.raises(LiveError, match="already called 'Ada'"):
        store.join(a_room, "Ada")
    store.join(b_room, "Ada")
    # Nicknames: 10,000 characters, HTML, control characters.
    with pytest.raises(LiveError, match="at most 40 characters; yours has 10000"):
        store.join(a_room, "x" * 10_000)
    html = store.join(a_room, "<script>alert(1)</script>")
    assert store.student(a_room, html) == "<script>alert(1)</script>"  # stored as text
    assert store.student(a_room, store.join(a_room, "Eve\x00\u202e")) == "Eve"
    with pytest.raises(LiveError, match="Type a nickname"):
        store.join(a_room, " \t ")
    # An empty painting, a wrong shape, NaN.
    for bad, why in ((np.zeros((28, 28)), "empty"), (np.ones((5, 5)), "28 × 28"),
                     (np.full((28, 28), np.nan), "28 × 28")):  # fmt: skip
        with pytest.raises(LiveError, match=why):
            store.answer(a_room, ada, n, painting=bad)
    # An answer after the reveal.
    store.reveal(a_room, a_teacher, n, {})
    with pytest.raises(RoundClosed, match="revealed"):
        store.answer(a_room, ada, n, painting=painting(slice(0, 3), slice(0, 3)))
    with pytest.raises(RoundClosed):
        store.reveal(a_room, a_teacher, n, {})


def test_prediction_answers_are_checked(url):
    store = LiveStore(url)
    room, teacher = store.create_room()
    ada = store.join(room, "Ada")
    n = store.open_round(room, teacher, "predict", {**MAP_SPEC, "n_classes": 10})
    for guess, confidence, why in ((10, 0.5, "Pick the class"), (None, 0.5, "Pick the class"),
                                   (3, 1.5, "between 0 % and 100 %")):  # fmt: skip
        with pytest.raises(LiveError, match=why):
            store.answer(room, ada, n, guess=guess, confidence=confidence)
    store.answer(room, ada, n, guess=3, confidence=0.8)
    a = store.my_answer(room, ada, n)
    assert (a.guess, a.confidence, a.painting) == (3, 0.8, None)


def test_a_restart_or_a_reload_mid_round_loses_nothing(url):
    store = LiveStore(url)
    room, teacher = store.create_room()
    ada = store.join(room, "Ada")
    n = store.open_round(room, teacher, "map", MAP_SPEC)
    store.answer(room, ada, n, painting=painting(slice(3, 9), slice(3, 9)))
    store.close()
    again = LiveStore(url)  # another process, or the same server after a restart
    assert again.is_teacher(room, teacher)
    assert again.student(room, ada) == "Ada"
    assert again.current_round(room).state == "open"
    assert again.my_answer(room, ada, n).painting.sum() == 36.0
    again.answer(room, ada, n, painting=painting(3, slice(3, 9)))  # still open: may change
    again.reveal(room, teacher, n, {"n": 1})
    assert LiveStore(url).current_round(room).result == {"n": 1}


def test_rooms_expire(url):
    store = LiveStore(url)
    room, teacher = store.create_room(ttl_hours=1 / 3600 / 100)  # 36 ms
    time.sleep(0.1)
    assert store.public_status(room) is None
    with pytest.raises(NoRoom, match="has ended"):
        store.join(room, "Late")
    store.create_room()  # expired rooms are deleted on the way
    with pytest.raises(NoRoom, match="no class with the code"):
        store.room(room)


def test_codes_are_long_typeable_and_rooms_are_capped(url, monkeypatch):
    """Eight characters of 32 (no 0/O, 1/I), shown as ABCD-EFGH and typed either way; a room
    takes SALIENCY_MAX_STUDENTS (default 60) students, then says it is full."""
    from dashboard.live_store import CODE_ALPHABET, format_code

    store = LiveStore(url)
    room, _ = store.create_room()
    assert len(room) == 8 and set(room) <= set(CODE_ALPHABET)
    shown = format_code(room)
    assert shown == f"{room[:4]}-{room[4:]}"
    for typed in (shown, shown.lower(), f" {room[:4]} {room[4:]} "):
        assert store.room(typed).code == room
    assert store.max_students == 60
    tokens = [store.join(typed, f"student {i}") for i, typed in enumerate([shown] * 60)]
    assert len(set(tokens)) == 60
    with pytest.raises(LiveError, match="This class is full: it has 60 students"):
        store.join(room, "the 61st")
    assert store.n_students(room) == 60
    monkeypatch.setenv("SALIENCY_MAX_STUDENTS", "3")
    small = LiveStore(url)
    other, _ = small.create_room()
    for name in ("a", "b", "c"):
        small.join(other, name)
    with pytest.raises(LiveError, match="it has 3 students"):
        small.join(other, "d")


def test_a_teachers_browsers_get_tokens_of_their_own(url):
    """A browser token does what the key does, in its room only; a pass is redeemed once, in
    time, in its room, and grants nothing itself; expired rooms take theirs along."""
    from dashboard import live_store

    store = LiveStore(url)
    room, key = store.create_room()
    other, other_key = store.create_room()
    device = store.teacher_device(room, key)
    assert device != key and store.is_teacher(room, device)
    assert not store.is_teacher(other, device)
    n = store.open_round(room, device, "map", MAP_SPEC)
    assert store.answers(room, device, n) == []
    with pytest.raises(NotTeacher):
        store.teacher_device(other, device)
    single = store.teacher_pass(room, key)
    assert not store.is_teacher(room, single)
    assert store.redeem_pass(other, single) is None  # another room's
    browser = store.redeem_pass(room.lower(), single)
    assert browser and store.is_teacher(room, browser)
    assert store.redeem_pass(room, single) is None  # spent
    ada = store.join(room, "Ada")
    with pytest.raises(NotTeacher):
        store.teacher_pass(room, ada)
    late = store.teacher_pass(room, key)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(live_store.time, "time", lambda: time.time_ns() / 1e9 + 121)
        assert store.redeem_pass(room, late) is None  # too late
    assert store.is_teacher(other, other_key)


def test_nicknames_lose_their_direction_controls():
    """Issue 28 (11): a nickname shows what it is: no bidirectional overrides, isolates or
    marks (the override that shows "Ada‮evil" reversed), no control characters."""
    from dashboard.live_store import clean_nickname

    controls = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
    for c in controls:
        assert clean_nickname(f"Ada{c}evil{c}") == "Adaevil"
    assert clean_nickname("  Bo\x00\x1b[31m  ") == "Bo[31m"
    with pytest.raises(LiveError, match="Type a nickname"):
        clean_nickname(controls)


def test_200_students_answer_concurrently(url):
    store = LiveStore(url, max_students=200)
    room, teacher = store.create_room()
    tokens = [store.join(room, f"student {i}") for i in range(200)]
    n = store.open_round(room, teacher, "map", MAP_SPEC)
    rng = np.random.default_rng(0)
    errors = []

    def answer(chunk):
        try:
            for t in chunk:
                store.answer(room, t, n, painting=(rng.random((28, 28)) > 0.9).astype(float))
        except Exception as err:  # noqa: BLE001 - collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=answer, args=(tokens[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert store.status(room) == (1, "open", 200)
    answers = store.answers(room, teacher, n)
    start = time.perf_counter()
    result = live_class.map_result(rng.random((28, 28)), answers, {})
    assert result["n"] == 200 and len(result["scores"]) == 200
    assert time.perf_counter() - start < 60  # generous: the benchmark measures the real cost


def test_scores_equal_direct_computations():
    rng = np.random.default_rng(3)
    m = rng.random((28, 28))
    p = np.zeros((28, 28))
    p[5:15, 5:15] = 1.0
    p[8:12, 8:12] = 0.5
    rho, overlap = live_class.scores(m, p)
    assert rho == pytest.approx(spearmanr(m.ravel(), p.ravel()).statistic, abs=1e-12)
    # Top 10 %: the map's 79 highest pixels (784 · 0.1 = 78.4 → the quantile keeps 79) ...
    top_map = m.ravel() >= np.sort(m.ravel())[-79]
    assert top_map.sum() == 79 and np.array_equal(top_set(m), top_map)
    # ... and the painting's: every pixel painted at its 90th percentile's value or more.
    top_paint = p.ravel() >= np.quantile(p.ravel(), 0.9)
    assert np.array_equal(top_set(p), top_paint & (p.ravel() > 0))
    assert overlap == pytest.approx((top_map & top_paint).sum() / 79)
    # A painting exactly on the map's top pixels overlaps fully; one elsewhere not at all.
    assert top_overlap(m, top_map.reshape(28, 28).astype(float)) == 1.0
    assert top_overlap(m, (~top_map).reshape(28, 28).astype(float)) == 0.0
    assert math.isnan(live_class.scores(m, np.ones((28, 28)))[0] or math.nan)


def test_a_reveal_of_30_paintings(tmp_path):
    """The class result against a direct computation: the mean painting's ρ and overlap,
    each student's own pair, and a prediction round's counts."""
    from dashboard.live_store import Answer

    rng = np.random.default_rng(4)
    m = rng.random((28, 28))
    paints = [(rng.random((28, 28)) > 0.8).astype(float) for _ in range(30)]
    answers = [Answer(f"s{i}", p, None, None, 0.0) for i, p in enumerate(paints)]
    r = live_class.map_result(m, answers, {"target": 7})
    mean = np.mean(paints, axis=0)
    assert r["target"] == 7 and r["n"] == 30
    assert r["rho"] == pytest.approx(spearmanr(m.ravel(), mean.ravel()).statistic, abs=1e-12)
    assert r["overlap"] == pytest.approx(top_overlap(m, mean))
    assert r["scores"][4][0] == pytest.approx(spearmanr(m.ravel(), paints[4].ravel()).statistic)
    np.testing.assert_allclose(np.reshape(r["mean"], (28, 28)), mean / mean.max(), atol=1e-5)
    probs = np.array([0.1, 0.7, 0.2])
    guesses = [Answer(f"s{i}", None, g, 0.5 + i / 100, 0.0) for i, g in enumerate([1, 1, 2, 0])]
    p = live_class.predict_result(probs, guesses, {})
    assert (p["counts"], p["right"], p["predicted"]) == ([1, 2, 1], 2, 1)
    assert p["mean_confidence_right"] == pytest.approx(0.505)
    # Issue 29: confidence used. Confidences 0.50, 0.51, 0.52, 0.53 for guesses 1, 1, 2, 0.
    assert p["weighted"] == pytest.approx([0.53 / 2.06, 1.01 / 2.06, 0.52 / 2.06], abs=1e-6)
    assert p["confidence"] == pytest.approx([0.53, 0.505, 0.52])
    assert p["mean_confidence_wrong"] == pytest.approx(0.525)
    none = live_class.predict_result(probs, [Answer("s", None, 2, 0.9, 0.0)], {})
    assert none["confidence"][:2] == [None, None] and none["mean_confidence_right"] is None


def test_calibration_and_the_histograms_bins():
    c = live_class.calibration([(0.9, True), (0.8, False), (0.7, True), (0.6, True)])
    assert c == {"guesses": 4, "right": 3, "share_right": 0.75, "said": pytest.approx(0.75)}
    assert live_class.calibration([])["share_right"] is None
    bins = live_class.rho_bins([-1.0, -0.95, 0.05, 0.07, 0.55, 1.0])
    assert [b["from"] for b in bins] == pytest.approx(np.linspace(-1, 0.9, 20))
    assert all(isinstance(b["students"], int) for b in bins)
    counted = {round(b["from"], 1): b["students"] for b in bins if b["students"]}
    assert counted == {-1.0: 2, 0.0: 2, 0.5: 1, 0.9: 1}  # 1.0 falls in the last bin


def test_the_csv_export_holds_nicknames_and_scores_only():
    from dashboard.live_store import Answer, Round

    m = np.random.default_rng(5).random((28, 28))
    rnd = Round("ROOM1", 2, "map", MAP_SPEC, "revealed", 0.0, None)
    p = painting(slice(0, 4), slice(0, 4))
    text = live_class.answers_csv(rnd, [Answer("=HYPERLINK(1)", p, None, None, 0.0)], m)
    header, row = text.strip().splitlines()
    assert header == "round,nickname,updated_utc,spearman_rho,top10_overlap,painted_pixels"
    assert row.startswith("2,'=HYPERLINK(1),1970-01-01 00:00:00,") and row.endswith(",16")
