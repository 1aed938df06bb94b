"""The stated memory budget, held by a real server (issue 28): `python -m dashboard` started with
SALIENCY_MEMORY_MB=600, driven through Chromium as visitors would, its peak RSS (VmHWM, reset
once the server is warm) compared with its warm baseline.

Needs /usr/bin/chromium (tests/browser_support.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from browser_support import IDLE, proc_status, require_browser, reset_peak, settle, start_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

require_browser()
from playwright.sync_api import expect  # noqa: E402

BUDGET_MB = 600


def status(pid: int, field: str) -> int:
    """A /proc/PID/status field in MB."""
    return proc_status(pid, field) >> 20


@pytest.fixture(scope="module")
def budget_server(artifacts_dir):
    log = artifacts_dir / "budget-server.log"
    s = start_server(log, env={"SALIENCY_MEMORY_MB": str(BUDGET_MB)})
    yield s
    s.stop()


def csv_of(seed: int, rows: int = 180_000, cols: int = 20) -> bytes:
    """About 14 MB of short numeric cells (the shape that cost the most per byte), under the
    uploader's 16 MB (the browser counts 16,000,000 bytes). Each cell is the four bytes
    `0.D,` (a newline ends a row), written as one array: 0.05 s a table, not 0.8 s of
    formatting cell by cell."""
    values = np.random.default_rng(seed).integers(0, 10, size=(rows, cols))
    cells = np.empty((rows, cols, 4), np.uint8)
    cells[...] = np.frombuffer(b"0.0,", np.uint8)
    cells[:, :, 2] += values.astype(np.uint8)  # the digit
    cells[:, -1, 3] = ord("\n")
    header = ",".join(f"c{j}" for j in range(cols))
    return (header + "\n").encode() + cells.tobytes()


def test_eight_large_tables_stay_within_the_budget(budget_server, page):
    pid = budget_server.proc.pid
    page.goto(f"{budget_server.url}/tables")
    page.wait_for_selector(IDLE)
    expect(page.get_by_text("tc and ldl: r = +0.90")).to_be_visible()  # warm: the example ran
    page.get_by_text("Your own CSV and model").click()
    page.wait_for_selector(IDLE)
    baseline = status(pid, "VmRSS")
    reset_peak(pid)
    inputs = page.get_by_test_id("stFileUploaderDropzoneInput")
    for seed in range(8):
        data = csv_of(seed)
        assert len(data) > 12 * 2**20
        inputs.nth(0).set_input_files(
            files=[{"name": f"t{seed}.csv", "mimeType": "text/csv", "buffer": data}]
        )
        expect(page.get_by_text("Upload the model to go on")).to_be_visible(timeout=120_000)
        page.wait_for_selector(IDLE)
    assert page.get_by_test_id("stException").count() == 0
    peak = status(pid, "VmHWM") - baseline
    kept = status(pid, "VmRSS") - baseline
    print(f"8 tables of 14 MB: peak +{peak} MB, kept +{kept} MB (budget {BUDGET_MB} MB)")
    # Before issue 28 (measured by this test on 197c942): peak +650 MB, kept +321 MB. What
    # stays resident afterwards also holds the session's uploaded files and the pages the
    # allocator keeps for reuse (-49 to +268 MB in runs here), so the peak is what is held to
    # the budget; the tables' own cache is held to its share by test_budget_caches.
    assert peak < BUDGET_MB, f"peak growth {peak} MB over the {BUDGET_MB} MB budget"


def heavy_zip(side: int, per_class: int, classes: int = 20) -> bytes:
    """`classes` folders of flat RGB pictures `side` pixels square: a few kB of ZIP (flat PNGs
    compress to almost nothing) that are `side`² × 3 float32 numbers each once prepared."""
    import io
    import zipfile

    from PIL import Image

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for k in range(classes):
            for i in range(per_class):
                png = io.BytesIO()
                Image.new("RGB", (side, side), (10 * k, 200 - 5 * i, 90)).save(png, "PNG")
                z.writestr(f"pictures/class-{k:02d}/{i}.png", png.getvalue())
    return buf.getvalue()


def any_size_model(path: Path, k: int = 20) -> Path:
    """A small conv net for any picture size and batch (torch.export, dynamic dimensions)."""
    import torch
    from workspaces import Tiny

    torch.manual_seed(0)
    net = Tiny(k).eval()
    x = torch.rand(2, 3, 64, 64)
    batch = torch.export.Dim("batch", min=1, max=4096)
    h, w = torch.export.Dim("h", min=16, max=2048), torch.export.Dim("w", min=16, max=2048)
    ep = torch.export.export(net, (x,), dynamic_shapes=({0: batch, 2: h, 3: w},))
    torch.export.save(ep, str(path))
    return path


def upload_folder(page, model: Path, data: bytes, name: str) -> None:
    """Fill the Your model page's second form and press "Check and index" (not waiting for
    the answer). Each file is seen in its uploader first: a run of the page that starts while
    a file goes up clears it (browser_support.choose_file), and the form then sent no file."""
    from playwright.sync_api import expect

    form = page.get_by_test_id("stForm").nth(1)
    files = form.locator('input[type="file"]')
    files.nth(0).set_input_files(str(model))
    expect(form.get_by_text(model.name, exact=True)).to_be_visible()
    files.nth(1).set_input_files(files=[{"name": name, "mimeType": "application/zip",
                                         "buffer": data}])  # fmt: skip
    expect(form.get_by_text(name, exact=True)).to_be_visible()
    form.get_by_role("button", name="Check and index").click()


def test_three_pixel_heavy_workspaces_at_once_stay_within_the_budget(
    budget_server, browser, tmp_path
):
    """The issue's 126 kB ZIP (20 classes of 1024² RGB) kept 1.3 GB per upload, and three at
    once took a server to 7.7 GB. Now each is refused from its first image's size (its
    prepared images alone would be over the workspaces' share), three at once, and then an
    honest workspace is indexed and kept: the server's peak stays within its budget."""
    from playwright.sync_api import expect

    pid = budget_server.proc.pid
    model = any_size_model(tmp_path / "any-size.pt2")
    heavy = heavy_zip(1024, 2)
    assert len(heavy) < 200_000
    contexts = [browser.new_context(viewport={"width": 1400, "height": 2600}) for _ in range(3)]
    pages = [c.new_page() for c in contexts]
    try:
        for page in pages:
            page.goto(f"{budget_server.url}/your-model")
            settle(page)  # the page's second run would clear a file chosen before it
        baseline = status(pid, "VmRSS")
        reset_peak(pid)
        for i, page in enumerate(pages):  # three visitors press at once
            upload_folder(page, model, heavy, f"heavy-{i}.zip")
        for page in pages:
            expect(page.get_by_text("this server keeps at most")).to_be_visible(timeout=180_000)
            assert page.get_by_test_id("stException").count() == 0
        refused_peak = status(pid, "VmHWM") - baseline
        upload_folder(pages[0], model, heavy_zip(128, 1), "honest.zip")
        expect(
            pages[0].get_by_text("Indexed 20 images of 20 classes (3 × 128 × 128)")
        ).to_be_visible(timeout=180_000)
        peak = status(pid, "VmHWM") - baseline
    finally:
        for c in contexts:
            c.close()
    print(f"3 heavy ZIPs at once: peak +{refused_peak} MB; then an honest one: +{peak} MB")
    assert refused_peak < 200, refused_peak
    assert peak < BUDGET_MB, f"peak growth {peak} MB over the {BUDGET_MB} MB budget"
