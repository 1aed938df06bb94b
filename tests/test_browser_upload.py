"""The Photos (ImageNet) and Your model pages in a real Chromium.

Needs /usr/bin/chromium (never `playwright install`): skips without it, fails instead when
SALIENCY_REQUIRE_BROWSER=1. Starts its own server (`python -m dashboard`, as the README does);
its log goes to artifacts/browser/upload-server.log, the screenshot next to it.
"""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update",
        "--disable-sync"]  # fmt: skip
TIMEOUT_MS = 90_000  # first run imports torch and torchvision on 2 shared cores
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'


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
    log = artifacts_dir / "upload-server.log"
    cmd = [sys.executable, "-m", "dashboard",
           "--server.headless", "true", "--server.port", str(port),
           "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]  # fmt: skip
    env = {**os.environ, "SALIENCY_CACHE_DIR": tempfile.mkdtemp(prefix="saliency-cache-")}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
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


def photo_png() -> bytes:
    rng = np.random.default_rng(0)
    img = np.kron(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8), np.ones((10, 10, 1), "u1"))
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def test_photos_page_shows_the_offline_message_or_a_prediction(server, artifacts_dir):
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 2000})
        page.set_default_timeout(TIMEOUT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{server}/photos")
        expect(page.get_by_role("heading", name="Photos (ImageNet)")).to_be_visible()
        page.wait_for_selector(IDLE)
        offline = page.get_by_text(re.compile("weights are not in the torch cache"))
        if offline.count():  # this machine: no weights, no network
            expect(offline).to_be_visible()
            page.get_by_text("Use random weights", exact=False).click()
            page.wait_for_selector(IDLE)
        page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(
            files=[{"name": "photo.png", "mimeType": "image/png", "buffer": photo_png()}]
        )
        expect(page.get_by_role("heading", name=re.compile(r" says "))).to_be_visible()
        expect(page.get_by_test_id("stImageCaption").filter(has_text="Map: ")).to_be_visible()
        page.wait_for_selector(IDLE)
        assert page.get_by_test_id("stException").count() == 0
        page.screenshot(path=str(artifacts_dir / "photos.png"))

        # The Your model page opens too, with its form.
        page.goto(f"{server}/your-model")
        expect(page.get_by_role("heading", name="Your model")).to_be_visible()
        expect(page.get_by_role("button", name="Check and add")).to_be_visible()
        assert page.get_by_test_id("stException").count() == 0
        browser.close()
    assert not errors, errors
