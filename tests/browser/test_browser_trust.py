"""A hostile student in a real Chromium against the session's real server (issue 15).

Each upload comes from its own browser context (a new student). The server's memory is read
from /proc before and after; its model workers are separate processes and are not counted.
`benchmarks/hostile_uploads.py` runs every hostile kind this way and prints the peak memory.
"""

from __future__ import annotations

import time
import urllib.parse

import hostile
import numpy as np
import pytest
from browser_support import IDLE, VIEWPORT, choose_file, require_browser

from sandbox.images import encode_image

pytestmark = [pytest.mark.browser, hostile.needs_sandbox]

require_browser()
from playwright.sync_api import expect  # noqa: E402

ALERTS = '[data-testid="stAlertContentError"], [data-testid="stAlertContentSuccess"]'


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def settled_rss_mb(pid: int, timeout_s: float = 60.0) -> float:
    """The server's RSS once it stops growing (two readings a second apart within 2 MB): a
    fresh server imports torch and the rest in a background warm-up after its first page."""
    deadline = time.monotonic() + timeout_s
    last = rss_mb(pid)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = rss_mb(pid)
        if abs(now - last) < 2:
            return now
        last = now
    return last


def upload(page, url: str, name: str, data: bytes) -> str:
    page.goto(f"{url}/your-model")
    expect(page.get_by_role("button", name="Check and add")).to_be_visible()
    choose_file(page, name, data)  # the file goes up in its own HTTP request, and stays
    page.get_by_role("button", name="Check and add").click()
    expect(page.locator(ALERTS).first).to_be_visible()
    page.wait_for_selector(IDLE)
    assert page.get_by_test_id("stException").count() == 0
    return page.locator(ALERTS).first.inner_text()


def test_hostile_uploads_in_a_real_browser(server, browser, tmp_path, artifacts_dir):
    written = tmp_path / "written"
    warm = browser.new_page()
    warm.goto(f"{server.url}/?index=1")  # not the stored first answers: torch and the model
    expect(warm.get_by_test_id("stImageCaption").filter(has_text="Map: ").first).to_be_visible()
    warm.wait_for_selector(IDLE)
    warm.close()
    before = settled_rss_mb(server.proc.pid)  # the server's warm-up (torch, pandas…) done

    for name, data, message in [
        ("writer.pt", hostile.writer(str(written)), "aten::from_file, which reads and writes"),
        ("bomb.pt", hostile.deflate_bomb(1024), "is compressed"),
        ("loop.pt", hostile.forever_loop(), "did not run on one image within 8 s"),
    ]:
        context = browser.new_context(viewport=VIEWPORT)
        text = upload(context.new_page(), server.url, name, data)
        assert text.startswith(f"{name}: ") and message in text, text
        context.close()
    assert not written.exists()

    # A model that works on the test set, then hangs on one image: a message, then it recovers.
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    assert upload(page, server.url, "trap.pt", hostile.trap()).startswith("Accepted")
    page.get_by_role("button", name="Open it in Explore").click()
    expect(page.get_by_role("heading", name="Explore", exact=True)).to_be_visible()
    page.wait_for_selector(IDLE)
    parts = urllib.parse.urlsplit(page.url)
    white = encode_image(np.ones((28, 28), np.float32))
    query = [*urllib.parse.parse_qsl(parts.query), ("source", "draw"), ("image", white)]
    start = time.perf_counter()
    page.goto(parts._replace(query=urllib.parse.urlencode(query)).geturl())
    error = page.locator('[data-testid="stAlertContentError"]').first
    expect(error).to_contain_text("did not classify the image within 8 s")
    expect(error).to_contain_text("The rest of the dashboard is unaffected")
    assert time.perf_counter() - start < 60
    page.wait_for_selector(IDLE)
    page.screenshot(path=str(artifacts_dir / "hostile-trap.png"))
    page.get_by_text("Test set", exact=True).click()  # back to a test image: a fresh worker
    expect(page.get_by_test_id("stImageCaption").filter(has_text="Map: ").first).to_be_visible()
    page.wait_for_selector(IDLE)
    assert page.get_by_test_id("stException").count() == 0
    context.close()

    after = rss_mb(server.proc.pid)
    print(f"\nserver RSS around the hostile uploads: {before:.0f} MB -> {after:.0f} MB")
    assert after - before < 400, (before, after)
