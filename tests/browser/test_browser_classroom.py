"""The classroom page in a real Chromium: every lesson's heading, and presentation mode.

Needs /usr/bin/chromium (see tests/browser_support.py); uses the session's dashboard server
(tests/conftest.py).
"""

from __future__ import annotations

import pytest
from browser_support import IDLE, require_browser

pytestmark = pytest.mark.browser

HEADINGS = {
    "nudge": "1 · Nudge a pixel",
    "autograd": "2 · Autograd vs finite differences",
    "saturation": "3 · Saturation",
    "linear": "4 · The linear model",
    "sanity": "5 · Sanity check",
    "deletion": "6 · Does the map point at what matters?",
    "tabular": "7 · Tabular sensitivity",
}


require_browser()
from playwright.sync_api import expect  # noqa: E402


def test_every_lesson_heading_and_presentation_mode(server, page, artifacts_dir):
    # The MLP keeps lesson 2's 2·784 forward passes quick.
    page.goto(f"{server.url}/classroom?model=mnist-mlp")
    expect(page.get_by_role("heading", name=HEADINGS["nudge"])).to_be_visible()
    for lesson, heading in HEADINGS.items():
        page.get_by_test_id("stRadio").first.get_by_text(heading, exact=True).click()
        expect(page.get_by_role("heading", name=heading)).to_be_visible()
        page.wait_for_selector(IDLE)
        expect(page.locator('[data-stale="true"]')).to_have_count(0)
        expect(page.get_by_text("What to notice.")).to_be_visible()
        assert page.get_by_test_id("stException").count() == 0, lesson
        assert f"lesson={lesson}" in page.url or lesson == "nudge"
    # Presentation mode: the sidebar goes, the type grows, the controls fold away.
    sidebar = page.get_by_test_id("stSidebar")
    expect(sidebar).to_be_visible()
    size = page.get_by_text("What to notice.").evaluate(
        "e => parseFloat(getComputedStyle(e.closest('p')).fontSize)"
    )
    page.get_by_text("Presentation mode", exact=True).click()
    expect(sidebar).to_be_hidden()
    expect(page.get_by_test_id("stExpander").get_by_text("Controls")).to_be_visible()
    page.wait_for_selector(IDLE)
    bigger = page.get_by_text("What to notice.").evaluate(
        "e => parseFloat(getComputedStyle(e.closest('p')).fontSize)"
    )
    assert bigger > 1.3 * size
    assert "present=true" in page.url
    # On a projector's 1280 × 720, the lesson itself is above the fold: its heading, formula
    # and first numbers (issue 29.10); the controls fold away below it.
    page.set_viewport_size({"width": 1280, "height": 720})
    page.get_by_test_id("stMain").evaluate("e => e.scrollTo(0, 0)")
    heading = page.get_by_role("heading", name=HEADINGS["tabular"]).bounding_box()
    assert heading is not None and heading["y"] + heading["height"] < 300, heading
    first_lesson = page.get_by_test_id("stMain").get_by_test_id("stSelectbox").first
    first_lesson.click()
    page.get_by_role("option", name=HEADINGS["nudge"]).click()
    expect(page.get_by_role("heading", name=HEADINGS["nudge"])).to_be_visible()
    page.wait_for_selector(IDLE)
    formula = page.locator(".katex").first.bounding_box()
    metric = page.get_by_test_id("stMetric").first.bounding_box()
    assert formula is not None and formula["y"] + formula["height"] < 720, formula
    assert metric is not None and metric["y"] + metric["height"] < 720, metric
    controls = page.get_by_test_id("stExpander").bounding_box()
    assert controls is not None and controls["y"] > metric["y"]
    page.screenshot(path=str(artifacts_dir / "classroom-presentation.png"))
