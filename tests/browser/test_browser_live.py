"""The Live class in a real Chromium (issue 17): the teacher's page and two students on
phone-sized pages. The students paint on the canvas with the mouse, send, and see the reveal;
the teacher sees the count rise without reloading, then reveals. Screenshots in artifacts/."""

from __future__ import annotations

import json
import re
import urllib.request
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from browser_support import IDLE, TIMEOUT_MS

pytestmark = [pytest.mark.browser, pytest.mark.slow]
PHONE = {"width": 390, "height": 1400}


def idle(page) -> None:
    page.wait_for_selector(IDLE)


def paint(page, strokes: list[tuple[float, float, float, float]]) -> None:
    """Mouse strokes on the canvas, each (x0, y0, x1, y1) as fractions of its size."""
    canvas = page.locator("canvas.upper-canvas")  # fabric.js: the top canvas takes the mouse
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    assert box and box["width"] >= 200, box
    for x0, y0, x1, y1 in strokes:
        page.mouse.move(box["x"] + x0 * box["width"], box["y"] + y0 * box["height"])
        page.mouse.down()
        for t in np.linspace(0, 1, 10)[1:]:
            x = x0 + t * (x1 - x0)
            y = y0 + t * (y1 - y0)
            page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=2)
        page.mouse.up()


def test_a_live_round_with_a_teacher_and_two_students(server, browser, page, artifacts_dir):
    from playwright.sync_api import expect

    teacher = page
    teacher.goto(f"{server.url}/live")
    idle(teacher)
    teacher.get_by_role("button", name="Start a class").click()
    expect(teacher.get_by_text("Class code", exact=False)).to_be_visible()
    expect(teacher).to_have_url(re.compile(r"room=\w+$"))  # written when the run ends
    idle(teacher)
    query = parse_qs(urlparse(teacher.url).query)
    code = query["room"][0]
    assert set(query) == {"room"}  # the teacher's key is not in the address (issue 28)
    expect(
        teacher.get_by_alt_text("Scan to join").or_(teacher.get_by_text("Scan to join"))
    ).to_be_visible()

    # Issue 29: the lobby's count follows joins, with no rerun of the teacher's page.
    in_class = teacher.locator(".live-watch[data-students] .live-count-value")
    expect(in_class).to_have_text("0")
    students = []
    for name in ("Ada", "Bo"):
        context = browser.new_context(viewport=PHONE)
        context.set_default_timeout(TIMEOUT_MS)
        s = context.new_page()
        s.goto(f"{server.url}/live?room={code}")
        idle(s)
        s.get_by_label("Your nickname").fill(name)
        s.get_by_role("button", name="Join").click()
        expect(s.get_by_text("Waiting for your teacher")).to_be_visible()
        assert "teacher=" not in s.url
        students.append((context, s))
        expect(in_class).to_have_text(str(len(students)))  # read every 1 s, no rerun

    teacher.get_by_role("button", name="Open the round").click()
    idle(teacher)
    expect(teacher.get_by_text("Answers so far")).to_be_visible()
    # The students' pages notice the round by themselves (a 2 s poll), without a reload.
    strokes = {
        "Ada": [(0.35, 0.2, 0.55, 0.8), (0.45, 0.2, 0.65, 0.8)],  # over the digit
        "Bo": [(0.05, 0.05, 0.25, 0.05)],  # a corner
    }
    for (_, s), name in zip(students, ("Ada", "Bo"), strict=True):
        expect(s.get_by_text(re.compile("Round 1: Paint the pixels"))).to_be_visible()
        idle(s)
        paint(s, strokes[name])  # sent when the mouse is lifted
        expect(s.get_by_text("Sent.", exact=False)).to_be_visible()
    # The teacher's count rises by itself (the status route, read every 0.5 s).
    count = teacher.locator(".live-watch[data-answers] .live-count-value")
    expect(count).to_have_text("2")
    # Counted from the server's status route, which the waiting pages poll without a rerun.
    with urllib.request.urlopen(f"{server.url}/api/live/status?room={code.lower()}") as r:
        assert json.loads(r.read()) == {"round": 1, "state": "open", "answers": 2, "students": 2}
    teacher.screenshot(path=str(artifacts_dir / "live-teacher-open.png"), full_page=True)
    teacher.get_by_role("button", name="Reveal").click()
    idle(teacher)
    expect(teacher.get_by_text("The class's Spearman ρ with the map")).to_be_visible()
    expect(teacher.get_by_text("The class: the mean of 2 paintings")).to_be_visible()
    teacher.screenshot(path=str(artifacts_dir / "live-teacher-reveal.png"), full_page=True)
    assert teacher.get_by_test_id("stException").count() == 0

    rhos = {}
    for (_, s), name in zip(students, ("Ada", "Bo"), strict=True):
        expect(s.get_by_text("Your ρ · your overlap")).to_be_visible()
        idle(s)
        metric = s.get_by_test_id("stMetric").filter(has_text="Your ρ")
        rhos[name] = float(metric.get_by_test_id("stMetricValue").inner_text().split("·")[0])
        s.screenshot(path=str(artifacts_dir / f"live-student-{name}.png"), full_page=True)
        assert s.get_by_test_id("stException").count() == 0
    # Painting over the digit agrees with the model's map better than painting a corner.
    assert rhos["Ada"] > rhos["Bo"], rhos

    # Round 2: what will it say? Test image 0 is a 7, and mnist-cnn says 7.
    teacher.get_by_text("What will it say?", exact=False).click()
    idle(teacher)
    teacher.get_by_role("button", name="Open the round").click()
    idle(teacher)
    for (_, s), guess in zip(students, ("7", "1"), strict=True):
        expect(s.get_by_text("Round 2: Which class will the model say")).to_be_visible()
        idle(s)
        s.get_by_role("combobox").last.click()
        s.get_by_role("option", name=guess, exact=True).click()
        s.get_by_role("button", name="Send my guess").click()
        expect(s.get_by_text(f"Sent: {guess}, 50% sure.")).to_be_visible()
    expect(count).to_have_text("2")
    teacher.get_by_role("button", name="Reveal").click()
    expect(teacher.get_by_text("1 of 2 students guessed it", exact=False)).to_be_visible()
    idle(teacher)
    teacher.screenshot(path=str(artifacts_dir / "live-teacher-predict.png"), full_page=True)
    (_, ada), (_, bo) = students
    expect(ada.get_by_text("You guessed 7, 50% sure: right.")).to_be_visible()
    expect(bo.get_by_text("You guessed 1, 50% sure: not what the model said.")).to_be_visible()
    for context, s in students:
        assert s.get_by_test_id("stException").count() == 0
        context.close()


def page_and_frames(page) -> str:
    """The page's DOM and every frame's: what a projector could show, or a photo hold."""
    return "\n".join([page.content(), *(f.content() for f in page.frames)])


def test_the_projected_page_holds_no_teacher_key(server, browser, page):
    """Issue 28: the teacher's page (on the projector) has no key in its address or DOM; a
    tab reopened in the same browser gets control back from the cookie; a fresh browser
    opening the teacher link gets control and an address without the key; a fresh browser
    with the room's link is a student."""
    from playwright.sync_api import expect

    page.goto(f"{server.url}/live")
    idle(page)
    page.get_by_role("button", name="Start a class").click()
    expect(page.get_by_role("button", name="Open the round")).to_be_visible()
    expect(page).to_have_url(re.compile(r"room=\w+"))  # written when the run ends
    idle(page)
    code = parse_qs(urlparse(page.url).query)["room"][0]
    projected = page.url + page_and_frames(page)
    # The browser holds a token of its own for the class (HttpOnly: no script reads it).
    for _ in range(300):  # the page's POST may still be on its way
        cookies = {c["name"]: c for c in page.context.cookies()}
        if f"saliency_teacher_{code}" in cookies:
            break
        page.wait_for_timeout(100)
    cookie = cookies[f"saliency_teacher_{code}"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    # The teacher link, shown on the teacher's own request only. (A rerun still drawing can
    # show the toggle twice for a moment, the old one going: wait, and take the newest.)
    idle(page)
    page.get_by_text("Show my teacher link").last.click()
    link = page.get_by_test_id("stCode").inner_text().strip()
    key = parse_qs(urlparse(link).query)["key"][0]
    assert len(key) >= 20
    for secret in (key, cookie["value"]):
        assert secret not in projected
    page.get_by_text("Show my teacher link").last.click()
    idle(page)
    expect(page.get_by_test_id("stCode")).to_have_count(0)
    assert key not in page.url + page_and_frames(page)

    # A tab reopened in the same browser: the cookie gives the class back.
    again = page.context.new_page()
    again.goto(f"{server.url}/live?room={code}")
    idle(again)
    expect(again.get_by_role("button", name="Open the round")).to_be_visible()
    assert key not in again.url + page_and_frames(again)
    again.close()

    # Another browser with the teacher link: the class, at an address without the key.
    other = browser.new_context(viewport=PHONE)
    other.set_default_timeout(TIMEOUT_MS)
    mine = other.new_page()
    parts = urlparse(link)  # the class network's address; this server listens on localhost
    mine.goto(f"{server.url}{parts.path}?{parts.query}")
    idle(mine)
    expect(mine.get_by_role("button", name="Open the round")).to_be_visible()
    assert mine.url == f"{server.url}/live?room={code}"
    assert key not in mine.url + page_and_frames(mine)
    other.close()

    # Another browser with the room's link only: a student.
    other = browser.new_context(viewport=PHONE)
    other.set_default_timeout(TIMEOUT_MS)
    student = other.new_page()
    student.goto(f"{server.url}/live?room={code}")
    idle(student)
    expect(student.get_by_label("Your nickname")).to_be_visible()
    assert student.get_by_role("button", name="Open the round").count() == 0
    other.close()
