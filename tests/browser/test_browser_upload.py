"""The Photos (ImageNet) page, which is Explore on the ImageNet workspace, and the Your model
page in a real Chromium.

Needs /usr/bin/chromium (see tests/browser_support.py); uses the session's dashboard server
(tests/conftest.py). The screenshot goes to artifacts/browser/.
"""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from browser_support import IDLE, choose_file, require_browser
from PIL import Image

pytestmark = pytest.mark.browser


require_browser()
from playwright.sync_api import expect  # noqa: E402


def photo_png() -> bytes:
    rng = np.random.default_rng(0)
    img = np.kron(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8), np.ones((10, 10, 1), "u1"))
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def test_photos_page_shows_the_offline_message_or_a_prediction(server, page, artifacts_dir):
    page.goto(f"{server.url}/photos")
    expect(page.get_by_role("heading", name="Explore", exact=True)).to_be_visible()
    expect(page).to_have_url(re.compile(r"/(explore)?\?.*dataset=photos%3Aimagenet"))
    page.wait_for_selector(IDLE)
    offline = page.get_by_text(re.compile("weights are not in the torch cache"))
    if offline.count():  # this machine: no weights, no network
        expect(offline).to_be_visible()
        page.get_by_text("Use random weights", exact=False).click()
        page.wait_for_selector(IDLE)
    choose_file(page, "photo.png", photo_png())  # after the runs the click above started
    expect(page.get_by_role("heading", name=re.compile(r" says "))).to_be_visible()
    panel = page.locator(".sal-panel")  # Explore's panel: the 224 × 224 crop and its maps
    expect(panel.locator(".sal-cell canvas")).to_have_count(10)  # the top 10 of 1000 classes
    expect(panel.locator(".sal-bar-row")).to_have_count(10)
    page.wait_for_selector(IDLE)
    assert page.get_by_test_id("stException").count() == 0
    page.screenshot(path=str(artifacts_dir / "photos.png"))

    # The Your model page opens too, with its form.
    page.goto(f"{server.url}/your-model")
    expect(page.get_by_role("heading", name="Your model", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="Check and add")).to_be_visible()
    assert page.get_by_test_id("stException").count() == 0
