"""The classroom page in a real Chromium: every lesson's heading, and presentation mode.

Needs /usr/bin/chromium (never `playwright install`): skips without it, fails instead when
SALIENCY_REQUIRE_BROWSER=1. Starts its own Streamlit server (tests/conftest.py has no shared
server fixture yet); the server log goes to artifacts/browser/classroom-server.log.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update",
        "--disable-sync"]  # fmt: skip
TIMEOUT_MS = 90_000  # first run imports torch and trains the tabular nets on 2 shared cores
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
HEADINGS = {
    "nudge": "1 · Nudge a pixel",
    "autograd": "2 · Autograd vs finite differences",
    "saturation": "3 · Saturation",
    "linear": "4 · The linear model",
    "sanity": "5 · Sanity check",
    "deletion": "6 · Does the map point at what matters?",
    "tabular": "7 · Tabular sensitivity",
}


def _need_browser(reason: str) -> None:
    if os.environ.get("SALIENCY_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (SALIENCY_REQUIRE_BROWSER=1, so this is an error)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


if not Path(CHROMIUM).exists():
    _need_browser(f"{CHROMIUM} not found: apt-get install chromium (never `playwright install`)")
try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    _need_browser("the playwright Python package is not installed: pip install playwright")


@pytest.fixture(scope="module")
def server(artifacts_dir: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = artifacts_dir / "classroom-server.log"
    cmd = [sys.executable, "-m", "streamlit", "run", "dashboard/app.py",
           "--server.headless", "true", "--server.port", str(port),
           "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://localhost:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"streamlit did not come up:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)


def test_every_lesson_heading_and_presentation_mode(server, artifacts_dir):
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 2000})
        page.set_default_timeout(TIMEOUT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        # The MLP keeps lesson 2's 2·784 forward passes quick.
        page.goto(f"{server}/classroom?model=mnist-mlp")
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
        page.screenshot(path=str(artifacts_dir / "classroom-presentation.png"))
        browser.close()
    assert not errors, errors
