"""The Live class page through AppTest (issue 17): a teacher session and two student sessions
through a whole round of each kind, and the isolation cases as a page sees them. Paintings
are sent to the store as the canvas would send them (AppTest can't draw on a canvas; the
Chromium test paints for real)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("streamlit")
from scipy.stats import spearmanr  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

import pretrained  # noqa: E402
import saliency  # noqa: E402
from dashboard import cache, rate_limits  # noqa: E402
from dashboard.live_store import LiveStore, format_code  # noqa: E402
from saliency.metrics import top_overlap  # noqa: E402

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")


@pytest.fixture()
def class_db(tmp_path, monkeypatch) -> LiveStore:
    """A fresh SQLite store for the page (and the same file for the test to check), and fresh
    rate limits (every AppTest session counts as this machine)."""
    url = f"sqlite:///{tmp_path / 'live.sqlite3'}"
    monkeypatch.setenv("SALIENCY_CLASS_DB", url)
    cache.live_store.clear()
    rate_limits.clear()
    yield LiveStore(url)
    cache.live_store.clear()
    rate_limits.clear()


def teacher_key(at: AppTest, code: str) -> str:
    """The key the teacher's session holds (never in its address)."""
    return at.session_state["live_teachers"][code]


def live(**params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    for key, value in params.items():
        at.query_params[key] = value
    at.switch_page("page_files/live.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def join(code: str, name: str) -> AppTest:
    at = live(room=code)
    at.text_input(key="live_name").input(name)
    at.button[0].click().run()  # the form's Join
    assert not at.error, [e.body for e in at.error]
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def text(at: AppTest) -> str:
    return " ".join(
        [m.value for m in at.markdown] + [c.value for c in at.caption] + [i.body for i in at.info]
    )


def charts(at: AppTest) -> list[dict]:
    """The Vega-Lite specs of the page's charts (wherever they sit: columns, expanders), with
    the rows Streamlit sends beside the spec put back as `values`."""
    import json

    from streamlit import dataframe_util

    out = []
    for n in all_nodes(at._tree):
        if getattr(n, "type", "") in ("vega_lite_chart", "arrow_vega_lite_chart"):
            spec = json.loads(n.proto.spec)
            if n.proto.data.data:
                rows = dataframe_util.convert_arrow_bytes_to_pandas_df(n.proto.data.data)
                spec["values"] = rows.to_dict("records")
            out.append(spec)
    return out


def test_a_class_plays_a_map_round_and_a_prediction_round(class_db):
    teacher = live()
    teacher.button(key="live_start").click().run()
    code = teacher.query_params["room"]
    assert len(code) == 8 and "teacher" not in teacher.query_params
    assert teacher_key(teacher, code) not in text(teacher)
    assert f"Class code **{code[:4]}-{code[4:]}**" in text(teacher)
    assert ["Scan to join"] in [im.captions for im in teacher.get("image")]  # the QR code
    ada, bo = join(code, "Ada"), join(code, "<b>Bo</b>")
    cy = join(code, "![t](http://127.0.0.1:9/x.png)\u202eCy")  # an image, and an override
    assert "You are **!\\[t\\](http://127.0.0.1:9/x.png)Cy**" in text(cy)
    assert "Waiting for your teacher" in text(ada)
    assert "teacher" not in ada.query_params and ada.query_params["me"]
    teacher.run()
    assert metrics(teacher)["Students in the class"] == "3"

    # Round 1: where does it look? Image 0 of MNIST, mnist-cnn, its predicted class.
    teacher.number_input(key="live_index").set_value(0).run()
    teacher.button(key="live_open").click().run()
    assert metrics(teacher)["Answers so far"] == "0"
    assert "Reveal" in [b.label for b in teacher.button]
    ada.run()
    assert "Round 1: Paint the pixels 7's score depends on most." in text(ada)
    paint_a = np.zeros((28, 28))
    paint_a[8:22, 8:20] = 1.0
    paint_b = np.zeros((28, 28))
    paint_b[0:4, 0:4] = 1.0
    class_db.answer(code, ada.query_params["me"], 1, painting=paint_a)
    class_db.answer(code, bo.query_params["me"], 1, painting=paint_b)
    teacher.run()
    assert metrics(teacher)["Answers so far"] == "2"
    teacher.button(key="live_reveal").click().run()
    assert not teacher.exception

    # The reveal against a direct computation on the model itself.
    model = pretrained.load_model("mnist-cnn", device="cpu")
    x, _ = pretrained.load_dataset("mnist", "test")[:1]
    direct = saliency.gradients(model, x, target=7)[0, 0].double().numpy()
    mean = (paint_a + paint_b) / 2
    result = class_db.current_round(code).result
    np.testing.assert_allclose(
        np.reshape(result["map"], (28, 28)), direct / direct.max(), atol=1e-4
    )
    rho = spearmanr(direct.ravel(), mean.ravel()).statistic
    assert result["rho"] == pytest.approx(rho, abs=1e-3)
    assert result["overlap"] == pytest.approx(top_overlap(direct, mean), abs=1e-9)
    shown = metrics(teacher)
    assert shown["The class's Spearman ρ with the map"] == f"{rho:+.2f}"
    assert shown["Top-10 % overlap"] == f"{top_overlap(direct, mean):.0%}"
    assert teacher.get("download_button")  # the round's CSV
    # Issue 29: the histogram counts whole students in bins of ρ (0.1 wide, -1 to 1).
    (hist,) = [c for c in charts(teacher) if "students" in c["encoding"]["y"]["field"]]
    assert hist["encoding"]["y"]["axis"] == {"tickMinStep": 1, "format": "d"}
    bins = hist["values"]
    assert len(bins) == 20 and bins[0]["from"] == -1.0 and bins[-1]["to"] == 1.0
    own_rhos = [spearmanr(direct.ravel(), p.ravel()).statistic for p in (paint_a, paint_b)]
    expected = np.histogram(own_rhos, bins=np.linspace(-1, 1, 21))[0].tolist()
    assert [b["students"] for b in bins] == expected and sum(expected) == 2
    ada.run()
    own = spearmanr(direct.ravel(), paint_a.ravel()).statistic
    assert metrics(ada)["Your ρ · your overlap"].startswith(f"{own:+.2f} · ")
    bo.run()
    assert "You are **\\<b\\>Bo\\</b\\>**" in text(bo)  # the HTML nickname, shown as text

    # Round 2: what will it say?
    teacher.radio(key="live_kind").set_value("predict").run()
    teacher.button(key="live_open").click().run()
    for student, guess, sure in ((ada, 7, 90), (bo, 1, 40)):
        student.run()
        student.selectbox[0].set_value(guess)
        student.slider[0].set_value(sure)
        student.button[0].click().run()  # Send my guess
        assert f"Sent: {guess}, {sure}% sure." in " ".join(s.body for s in student.success)
    teacher.run()
    assert metrics(teacher)["Answers so far"] == "2"
    teacher.button(key="live_reveal").click().run()
    assert "**1 of 2** students guessed it" in text(teacher)
    # Issue 29: the reveal shows the image, and uses how sure each student said they were.
    assert ["The image (true class: 7)"] in [im.captions for im in teacher.get("image")]
    assert (
        "How sure they were: **90%** on average for those who guessed it, **40%** for the others."
        in text(teacher)
    )
    (bars,) = [c for c in charts(teacher) if c["encoding"].get("yOffset")]
    weighted = {
        r["class"]: r["share"]
        for r in bars["values"]
        if r["who"] == "the guesses, weighted by how sure"
    }
    assert weighted["7"] == pytest.approx(0.9 / 1.3, abs=1e-6)
    assert weighted["1"] == pytest.approx(0.4 / 1.3, abs=1e-6) and weighted["3"] == 0
    calibration = {r["student"]: r for r in teacher.dataframe[0].value.to_dict("records")}
    assert calibration["Ada"] == {"student": "Ada", "guesses": 1, "right": 1,
                                  "share right": "100%", "said they were sure": "90%"}  # fmt: skip
    assert calibration["<b>Bo</b>"]["share right"] == "0%"
    ada.run()
    assert "You guessed **7**, 90% sure: right." in text(ada)
    assert (
        "Your guesses so far: **1 of 1** right (100%), and you said you were **90%** sure"
        in text(ada)
    )
    bo.run()
    assert "You guessed **1**, 40% sure: not what the model said." in text(bo)
    assert "Your guesses so far: **0 of 1** right (0%)" in text(bo)


def test_isolation_as_the_page_sees_it(class_db):
    a_room, a_key = class_db.create_room()
    b_room, _ = class_db.create_room()
    class_db.open_round(a_room, a_key, "predict", {"dataset": "mnist", "model": "mnist-cnn",
                        "index": 0, "target": 7, "predicted": 7, "true": 7, "n_classes": 10,
                        "question": "Which class?"})  # fmt: skip
    # A wrong code.
    at = live(room="ZZZZZ")
    assert "no class with the code 'ZZZZZ'" in " ".join(e.body for e in at.error)
    # A student who edits the URL to become the teacher: a student's page, no controls.
    ada = join(a_room, "Ada")
    hacker = live(room=a_room, teacher="guessed-key", me=ada.query_params["me"])
    assert "teacher key isn't this class's" in " ".join(w.body for w in hacker.warning)
    labels = [b.label for b in hacker.button]
    assert "Reveal" not in labels and "Open the round" not in labels
    # Room B's student key in room A is not a student of A: the page asks them to join.
    bob = join(b_room, "Bob")
    lost = live(room=a_room, me=bob.query_params["me"])
    assert f"Joining the class **{format_code(a_room)}**" in text(lost)
    # A nickname of 10,000 characters is cut by the box; the store refuses longer ones anyway.
    at = live(room=a_room)
    at.text_input(key="live_name").input("x" * 10_000)
    at.button[0].click().run()
    assert not at.exception


def test_the_teacher_reloads_and_the_server_restarts_mid_round(class_db):
    teacher = live()
    teacher.button(key="live_start").click().run()
    code = teacher.query_params["room"]
    key = teacher_key(teacher, code)
    ada = join(code, "Ada")
    teacher.button(key="live_open").click().run()
    p = np.zeros((28, 28))
    p[10:15, 10:15] = 1.0
    class_db.answer(code, ada.query_params["me"], 1, painting=p)
    cache.live_store.clear()  # the server's connection is gone, as after a restart
    # A new session with the teacher link (as `streamlit run` gives it: the page's own address;
    # under `python -m dashboard` it is the server's route, tests/browser/test_browser_live.py): the
    # teacher's page, and the key leaves the address at once.
    again = live(room=code, teacher=key)
    assert "teacher" not in again.query_params and again.query_params["room"] == code
    assert metrics(again)["Answers so far"] == "1"
    again.button(key="live_reveal").click().run()
    assert class_db.current_round(code).state == "revealed"
    assert os.environ["SALIENCY_CLASS_DB"].startswith("sqlite:///")


def test_a_workspace_can_be_played(class_db, tmp_path, monkeypatch):
    """A map round on a workspace's 64 × 64 RGB image and model: the published map is the
    model's max-over-channels |gradient|, box-averaged onto the paintings' 28 × 28 grid."""
    import torch
    from PIL import Image
    from workspaces import rgb_workspace

    from workspace import load_model, open_indexed

    folder = rgb_workspace(tmp_path)
    monkeypatch.setenv("SALIENCY_WORKSPACES", str(folder))
    teacher = live(dataset="ws:W-rgb")
    teacher.button(key="live_start").click().run()
    code = teacher.query_params["room"]
    ada = join(code, "Ada")
    teacher.number_input(key="live_index").set_value(3).run()
    teacher.button(key="live_open").click().run()
    spec = class_db.current_round(code).spec
    assert (spec["dataset"], spec["model"], spec["index"]) == ("ws:W-rgb", "ws:W-rgb", 3)
    p = np.zeros((28, 28))
    p[10:18, 10:18] = 1.0
    class_db.answer(code, ada.query_params["me"], 1, painting=p)
    teacher.button(key="live_reveal").click().run()
    assert not teacher.exception
    ws = open_indexed(folder)
    net = load_model(ws.config, len(ws.classes), device="cpu")
    x = torch.from_numpy(ws.image(3))[None]
    g = saliency.gradients(net, x, target=spec["target"])[0].amax(0).numpy()
    pooled = np.asarray(
        Image.fromarray(g.astype(np.float32), mode="F").resize((28, 28), Image.Resampling.BOX)
    )
    result = class_db.current_round(code).result
    np.testing.assert_allclose(
        np.reshape(result["map"], (28, 28)), pooled / pooled.max(), atol=1e-4
    )
    ada.run()
    assert "Your ρ · your overlap" in metrics(ada)


def all_nodes(node) -> list:
    """Every element of the page, sidebar included (to look for a key in their protos)."""
    out = [node]
    for child in getattr(node, "children", {}).values():
        out += all_nodes(child)
    return out


def page_text(at: AppTest) -> str:
    return " ".join(str(getattr(n, "proto", "")) for n in all_nodes(at._tree))


def test_the_teacher_link_shows_only_when_asked(class_db):
    """The projected page holds no key (nor its address); the teacher link appears on the
    teacher's own request, opens the class as its teacher, and leaves that address at once;
    the room's link alone is a student's."""
    teacher = live()
    teacher.button(key="live_start").click().run()
    code = teacher.query_params["room"]
    key = teacher_key(teacher, code)
    assert key not in page_text(teacher) and "teacher" not in teacher.query_params
    teacher.toggle(key="live_show_link").set_value(True).run()
    (link,) = [c.value for c in teacher.code]
    assert link.endswith(f"/live?room={code}&teacher={key}")  # `streamlit run`: no route
    teacher.toggle(key="live_show_link").set_value(False).run()
    assert key not in page_text(teacher)
    again = live(room=code, teacher=key)
    assert "teacher" not in again.query_params and "live_open" in [b.key for b in again.button]
    assert key not in page_text(again)
    student = live(room=code)
    assert "live_open" not in [b.key for b in student.button]
    assert f"Joining the class **{format_code(code)}**" in text(student)


def test_a_full_class_and_too_many_joins_say_so(class_db, monkeypatch):
    """SALIENCY_MAX_STUDENTS=3: the 4th join is told the class is full. One client (every
    AppTest session is this machine) joins JOIN_BURST times at once, then is told to wait."""
    monkeypatch.setenv("SALIENCY_MAX_STUDENTS", "3")
    cache.live_store.clear()
    code, _ = class_db.create_room()
    start = time.monotonic()
    for name in ("Ada", "Bo", "Cy"):
        join(code, name)
    at = live(room=code)
    said = []
    while len(said) < 40 and not (said and said[-1].startswith("Too many joins")):
        at.text_input(key="live_name").input(f"late {len(said)}")
        at.button[0].click().run()
        said.append(" ".join(e.body for e in at.error))
    tried = 3 + len(said) - 1  # joins let through, before the refusal
    allowed = rate_limits.JOIN_BURST + rate_limits.JOINS_PER_MIN / 60 * (time.monotonic() - start)
    assert rate_limits.JOIN_BURST <= tried <= allowed + 1, (tried, allowed)
    assert all("This class is full: it has 3 students" in s for s in said[:-1])
    assert said[-1].startswith("Too many joins from your network in a short time: wait ")
    assert class_db.n_students(code) == 3


def test_guessed_codes_are_limited_on_the_page(class_db):
    """Codes that name no class, opened from this machine: GUESS_BURST are answered "no
    class", then every code is refused, a real one too, with the wait."""
    real, _ = class_db.create_room()
    start = time.monotonic()
    said = []
    while len(said) < 60 and not (said and said[-1].startswith("Too many class codes")):
        at = live(room=f"ZZZZ{len(said):04d}")
        said.append(" ".join(e.body for e in at.error))
    answered = len(said) - 1
    refill = rate_limits.GUESSES_PER_MIN / 60 * (time.monotonic() - start)
    allowed = rate_limits.GUESS_BURST + refill
    assert rate_limits.GUESS_BURST <= answered <= allowed + 1, (answered, allowed)
    assert all("no class with the code" in s for s in said[:-1])
    assert said[-1].startswith("Too many class codes that don't exist were tried")
    rate_limits.GUESSES.charge(rate_limits.LOCAL, 3)  # still guessing: no refill meanwhile
    refused = live(room=real)
    assert "Too many class codes" in " ".join(e.body for e in refused.error)
    assert "live_name" not in [t.key for t in refused.text_input]
