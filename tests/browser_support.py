"""Shared plumbing of the real-browser tests: Debian's Chromium, and dashboard servers.

Needs /usr/bin/chromium (never `playwright install`, which downloads browsers): without it the
browser tests skip, or fail when SALIENCY_REQUIRE_BROWSER=1 (CI).
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Chromium 156 loads its omnibox popup (a WebUI page, chrome://omnibox-popup.top-chrome) in
    # a renderer of its own for each new window: up to 3.5 s of CPU per new context here, on
    # the browser's one core, that no page of ours asks for and a user's open browser has
    # long since done.
    "--disable-features=WebUIOmniboxPopup,WebUIOmniboxFullPopup,PreloadTopChromeWebUI,WebUIOmniboxAimPopup",
]
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
VIEWPORT = {"width": 1400, "height": 2600}  # tall: Streamlit scrolls inside its own container
TIMEOUT_MS = 90_000  # a first run imports torch (and trains the tabular nets) on 2 shared cores


def require_browser() -> None:
    """Skip the calling test module when Chromium or Playwright is missing (fail in CI)."""
    reason = None
    if not Path(CHROMIUM).exists():
        reason = f"{CHROMIUM} not found: apt-get install chromium (never `playwright install`)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "the playwright Python package is not installed: pip install playwright"
    if reason is None:
        return
    if os.environ.get("SALIENCY_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (SALIENCY_REQUIRE_BROWSER=1, so this is an error)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    spawned: float  # time.perf_counter() at spawn
    healthy: float  # ... when /_stcore/health first answered "ok"
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid: int, field: str) -> int:
    """A /proc/PID/status field in bytes (VmRSS: resident now; VmHWM: the peak since the last
    `reset_peak`), 0 when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def reset_peak(pid: int) -> None:
    """VmHWM := VmRSS (Linux >= 4.0): a server's peak measured from a warm baseline."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def start_server(log: Path, *args: str, env: dict[str, str] | None = None) -> Server:
    """`python -m dashboard [args]` (what the README runs) on a free port, with a fresh disk
    cache, and `env` added to this process's environment (a budget, a worker limit)."""
    port = _free_port()
    cmd = [
        sys.executable, "-m", "dashboard",
        "--server.headless", "true",
        "--server.port", str(port),
        "--browser.gatherUsageStats", "false",
        # Others edit the source while tests run: a file change must not alter the app under test.
        "--server.fileWatcherType", "none",
        *args,
    ]  # fmt: skip
    # A fresh disk cache: the data-set page must compute, not find an earlier result.
    # A short deadline for uploaded models, so the hostile-upload test waits seconds, not 30 s.
    env = {
        **os.environ,
        "SALIENCY_CACHE_DIR": tempfile.mkdtemp(prefix="saliency-cache-"),
        "SALIENCY_WORKER_TIMEOUT_S": "8",
        **(env or {}),
    }
    env.pop("SALIENCY_PANEL_WAIT_S", None)  # set for AppTest (conftest.py); a browser waits
    with log.open("wb") as out:
        spawned = time.perf_counter()
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Server(proc, f"http://localhost:{port}", spawned, math.nan, log)
    deadline = spawned + 90
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the dashboard exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{server.url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    server.healthy = time.perf_counter()
                    return server
        except OSError:
            pass
        time.sleep(0.05)
    server.stop()
    pytest.fail(f"the dashboard was not healthy after 90 s:\n{log.read_text()[-3000:]}")


def settle(page, ms: int = 1500) -> None:
    """Let a page that just opened finish its own runs before the test acts. Explore's panel
    reports that it drew, and the report reruns the explanation about 0.7 s after the first
    run; a choice clicked around then was lost once in CI (the Image radio showed Draw, the
    page the test set), which a user clicking that early could meet too."""
    page.wait_for_selector(IDLE, timeout=TIMEOUT_MS)
    page.wait_for_timeout(ms)
    page.wait_for_selector(IDLE, timeout=TIMEOUT_MS)


def send_zip_form(page, url: str, model: str | Path, pictures: str | Path, *, side: int,
                  mean: float, std: float, architecture: str | None = None) -> None:  # fmt: skip
    """The Your model page's second form (a model and a ZIP of class folders), filled in and
    sent as a user would: each file shown in its uploader before the form goes."""
    from playwright.sync_api import expect

    page.goto(f"{url}/your-model")
    page.wait_for_selector(IDLE)
    page.wait_for_timeout(500)  # the page's second run (see choose_file) would clear a file
    page.wait_for_selector(IDLE)
    form = page.get_by_test_id("stForm").nth(1)
    files = form.locator('input[type="file"]')
    for i, path in enumerate((Path(model), Path(pictures))):
        files.nth(i).set_input_files(str(path))
        expect(form.get_by_text(path.name, exact=True)).to_be_visible()
    page.wait_for_selector(IDLE)
    if architecture:  # the box lists every registry, torchvision and timm name: typing filters
        box = form.get_by_role("combobox", name="Architecture (weights only)")
        box.click()
        page.keyboard.type(architecture)
        page.get_by_role("option", name=architecture, exact=True).click()
        expect(box).to_have_value(architecture)
    resize = "Resize shorter side to (px; 0 keeps the size)"
    form.get_by_role("spinbutton", name=resize).fill(str(side))
    form.get_by_role("spinbutton", name="Centre crop (px; 0: none)").fill(str(side))
    form.get_by_role("textbox", name="Normalise: mean").fill(str(mean))
    form.get_by_role("textbox", name="std", exact=True).fill(str(std))
    form.get_by_role("button", name="Check and index").click()


def choose_file(page, name: str, data: bytes, *, nth: int = 0, tries: int = 4) -> None:
    """Choose `data` as file `name` in the page's `nth` file uploader and make sure it stays
    chosen. A script run that starts while a file goes up clears the uploader (Streamlit 1.67:
    a page that opens runs twice, the second ~0.3 s after the first; on a fast machine a test
    chooses its file in between, and "Check and add" then sent no file, about 1 time in 6), so
    the page is let settle, the file chosen, and chosen again if a run took it away."""
    box = page.get_by_test_id("stFileUploaderDropzoneInput").nth(nth)
    shown = page.get_by_test_id("stFileUploader").nth(nth).get_by_text(name, exact=True)
    for _ in range(tries):
        page.wait_for_selector(IDLE)
        page.wait_for_timeout(500)  # the page's second run, if it comes
        page.wait_for_selector(IDLE)
        box.set_input_files(files=[{"name": name, "mimeType": "application/octet-stream",
                                    "buffer": data}])  # fmt: skip
        shown.wait_for()
        page.wait_for_load_state("networkidle")
        page.wait_for_timeout(500)
        page.wait_for_selector(IDLE)
        if shown.count():
            return
    raise AssertionError(f"the uploader lost {name} {tries} times")
