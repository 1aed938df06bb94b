"""saliency.widget in a real JupyterLab, driven in Chromium (issue 34): the example notebook
runs, both panels draw, a class click redraws the map with no message to the kernel, a method
change recomputes in the kernel, and the panel's pixels equal saliency.display's."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from browser_support import VIEWPORT
from PIL import Image
from test_browser import data_url_pixels, expected_pictures

from saliency import display
from saliency.report import read_report

pytest.importorskip("anywidget")
pytest.importorskip("jupyterlab")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "explore.ipynb"
TOKEN = "saliency-notebook-test"
TIMEOUT_MS = 180_000
pytestmark = [pytest.mark.browser, pytest.mark.slow]

# What the n-th panel holds and shows (as tests/browser/test_browser.py's PANEL_STATE_JS).
STATE_JS = """
(n) => {
  const p = document.querySelectorAll('.sal-panel')[n].salPanel;
  const d = p.d;
  const s = p.s;
  return {
    chosen: p.chosen, target: d.target, range: p.range, classes: d.classes, grid: d.grid,
    absolute: s.absolute, signed: s.signed, clip: s.clip, alpha: s.alpha, shared: s.shared,
    cmap: s.cmap, shape: [p.h, p.w], maps: Array.from(p.A.maps), rgb: Array.from(p.A.rgb),
    map: p.ui.map.img.src, overlay: p.ui.overlay.img.src, map_of: d.map_of, seq: d.seq,
    scale: d.scale, view: s.view,
  };
}
"""
# The notebook's kernel, once JupyterLab has started and connected it: run-all before that
# asks which kernel to start (a dialog the test would wait behind).
KERNEL_JS = """
() => {
  const w = window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.connectionStatus === "connected" && k.status === "idle";
}
"""
NO_NEWS = {"fetchNews": "false", "checkForUpdates": False}  # no toast over the screenshot
DRAWN_JS = """
(n) => {
  const ps = document.querySelectorAll('.sal-panel');
  return ps.length >= n && [...ps].every((p) => p.salPanel && p.salPanel.ready);
}
"""


def png_pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def jupyter_lab(home: Path, log_path: Path) -> Iterator[str]:
    """`jupyter lab --no-browser` on a free port with a token, serving `home` (with no user
    settings, no news toast); yields its URL and kills it at the end. Also used by
    benchmarks/bench_notebook.py."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for name in ("CONFIG", "RUNTIME"):  # no user settings, no lab workspaces
        env[f"JUPYTER_{name}_DIR"] = str(home / f".jupyter-{name.lower()}")
    settings = home / ".lab-settings"
    (settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True, exist_ok=True)
    (settings / "@jupyterlab/apputils-extension/notification.jupyterlab-settings").write_text(
        json.dumps(NO_NEWS)
    )
    env["JUPYTERLAB_SETTINGS_DIR"] = str(settings)
    log = open(log_path, "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={home}",
         "--allow-root", "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=",
         "--LabApp.extension_manager=readonly",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=home,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not start: see {log.name}") from None
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def run_notebook(page, url: str, name: str, panels: int) -> None:
    """Open notebook `name` in JupyterLab at `url`, run every cell once its kernel is
    connected, and wait for `panels` panels to have drawn (their grids included)."""
    page.goto(f"{url}/lab/tree/{name}?token={TOKEN}")
    page.wait_for_function("() => !!window.jupyterapp", timeout=TIMEOUT_MS)
    page.locator(".jp-Notebook").first.wait_for(timeout=TIMEOUT_MS)
    page.wait_for_function(KERNEL_JS, timeout=TIMEOUT_MS)
    # Not awaited: the command's promise settles when every cell has run.
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    page.wait_for_function(DRAWN_JS, arg=panels, timeout=TIMEOUT_MS)
    page.wait_for_function(
        "() => document.querySelectorAll('.sal-panel .sal-cell canvas').length >= 20",
        timeout=TIMEOUT_MS,
    )


@pytest.fixture(scope="module")
def lab(tmp_path_factory, artifacts_dir: Path):
    """JupyterLab in a temp dir holding a copy of the example notebook."""
    home = tmp_path_factory.mktemp("lab")
    shutil.copy(NOTEBOOK, home / NOTEBOOK.name)
    with jupyter_lab(home, artifacts_dir / "jupyterlab.log") as url:
        yield url


def kernel_messages(page) -> list[bytes]:
    """The widget messages (`comm_msg`) `page` sends its kernels from now on, as they go: read
    off the websockets, so a message drawn nowhere is still counted."""
    sent: list[bytes] = []

    def watch(ws) -> None:
        def frame(payload) -> None:
            data = payload.encode() if isinstance(payload, str) else payload
            if b'"comm_msg"' in data:
                sent.append(data)

        ws.on("framesent", frame)

    page.on("websocket", watch)
    return sent


def test_widget_in_jupyterlab(lab: str, browser, artifacts_dir: Path) -> None:
    page = browser.new_page(viewport=VIEWPORT)
    sent = kernel_messages(page)
    try:
        run_notebook(page, lab, NOTEBOOK.name, 2)
        first = page.locator(".sal-panel").first
        first.scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts_dir / "notebook-widget.png"))

        # The pixels: saliency.display's, from the maps the panel received.
        st = page.evaluate(STATE_JS, 0)
        assert st["shape"] == [28, 28] and st["classes"] == list(range(10))
        want = expected_pictures(st, st["cmap"])
        np.testing.assert_array_equal(data_url_pixels(st["map"]), want["map"])
        np.testing.assert_array_equal(data_url_pixels(st["overlay"]), want["overlay"])

        # A class click: drawn in the browser, nothing sent to the kernel.
        before = len(sent)
        k = next(c for c in range(10) if c != st["chosen"])
        first.locator(f'.sal-cell[data-k="{k}"]').click()
        page.wait_for_function(
            f"() => document.querySelector('.sal-panel').salPanel.chosen === {k}"
        )
        clicked = page.evaluate(STATE_JS, 0)
        assert clicked["map"] != st["map"]
        want = expected_pictures(clicked, clicked["cmap"])
        np.testing.assert_array_equal(data_url_pixels(clicked["map"]), want["map"])
        page.wait_for_timeout(1000)  # time for any message to go
        assert len(sent) == before, "a class click reached the kernel"

        # The panel's own switch: the sign (a vanilla gradient of a grey image), no message.
        first.get_by_role("radiogroup", name="Values").get_by_text("absolute").click()
        page.wait_for_function("() => document.querySelector('.sal-panel').salPanel.s.absolute")
        st = page.evaluate(STATE_JS, 0)
        want = expected_pictures(st, st["cmap"])
        np.testing.assert_array_equal(data_url_pixels(st["map"]), want["map"])
        page.wait_for_timeout(500)
        assert len(sent) == before, "a sign switch reached the kernel"

        # A method change: computed in the kernel (one message there), then drawn.
        page.locator(".sal-widget-bar select").first.select_option("grad_cam")
        page.wait_for_function(
            "() => document.querySelector('.sal-panel').salPanel.d.map_of === 'Grad-CAM'",
            timeout=TIMEOUT_MS,
        )
        assert len(sent) > before and any(b'"method"' in m for m in sent[before:])
        cam = page.evaluate(STATE_JS, 0)
        assert cam["maps"] != st["maps"]
        want = expected_pictures(cam, cam["cmap"])
        np.testing.assert_array_equal(data_url_pixels(cam["map"]), want["map"])
        np.testing.assert_array_equal(data_url_pixels(cam["overlay"]), want["overlay"])

        # "Download report": the kernel makes it from this view (class and switches as shown).
        with page.expect_download(timeout=TIMEOUT_MS) as download:
            first.get_by_role("button", name="Download report").click()
        path = download.value.path()
        assert download.value.suggested_filename.endswith(f"_class{cam['chosen']}_grad_cam.html")
        back = read_report(Path(path).read_text(encoding="utf-8"))
        assert back["settings"]["target"] == cam["chosen"]
        assert {k: back["settings"]["settings"][k] for k in cam["view"]} == cam["view"]
        assert back["settings"]["display_range"] == cam["range"] == list(want["range"])
        pictures = [png_pixels(data) for _, data in back["sections"][0]["images"]]
        np.testing.assert_array_equal(pictures[1], display.upscale(want["map"], cam["scale"]))
        np.testing.assert_array_equal(pictures[2], display.upscale(want["overlay"], cam["scale"]))

        # The torchvision model's panel drew too: 224 x 224, the top 10 classes.
        photo = page.evaluate(STATE_JS, 1)
        assert photo["shape"] == [224, 224] and len(photo["grid"]) == 10
    finally:
        page.close()
