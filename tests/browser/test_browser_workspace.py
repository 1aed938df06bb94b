"""A workspace in a real Chromium: `python -m dashboard --workspace W`, as the README says, on
an RGB 64 x 64 model with five classes and on a resnet18 with 1000 classes."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from browser_support import IDLE, require_browser, send_zip_form, start_server
from workspaces import resnet_workspace, rgb_workspace

from workspace import open_indexed

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def ws_server(tmp_path_factory, artifacts_dir):
    require_browser()
    tmp = tmp_path_factory.mktemp("browser-workspaces")
    rgb, resnet = rgb_workspace(tmp), resnet_workspace(tmp, per_class=10)
    server = start_server(
        artifacts_dir / "server-workspace.log", "--workspace", str(rgb), "--workspace", str(resnet)
    )
    yield server, rgb, resnet
    server.stop()


def wait(page) -> None:
    page.wait_for_selector(IDLE)


def test_explore_misclassifications_and_sensitivity_on_workspaces(ws_server, page, artifacts_dir):
    from playwright.sync_api import expect

    server, rgb, resnet = ws_server
    ws = open_indexed(rgb)
    page.goto(server.url)
    wait(page)
    pred = int(ws.predicted[0])
    expect(page.get_by_text(f"ws:W-rgb says {pred} · class-{pred}")).to_be_visible()
    # The Explore panel's caption (the server's fallback shows the same until the panel drew).
    panel = page.locator(".sal-panel")
    expect(panel.get_by_text("What the model sees (64 × 64, RGB)")).to_be_visible()
    # Open an image by its path: the page follows.
    path = ws.paths[77]
    box = page.get_by_label("Open by path", exact=True).and_(page.get_by_role("textbox"))
    box.fill(path)
    box.press("Enter")
    wait(page)
    expect(page.get_by_text(f"for #77 {path}")).to_be_visible()
    page.screenshot(path=str(artifacts_dir / "workspace-explore.png"))

    page.get_by_role("link", name="Misclassifications").click()
    wait(page)
    expect(page.get_by_text("on all 120 images of Workspace W-rgb")).to_be_visible()
    page.get_by_role("link", name="Data-set sensitivity").click()
    wait(page)
    expect(page.get_by_text("Computed by the index on 120 images")).to_be_visible()

    # The resnet18 workspace, picked in the sidebar: 1000 classes.
    page.goto(f"{server.url}/mistakes?dataset=ws:W-resnet&model=ws:W-resnet")
    wait(page)
    expect(page.get_by_text("The most confused pairs")).to_be_visible()
    rn = open_indexed(resnet)
    first = int(np.bincount(rn.predicted, minlength=1000).argmax())
    expect(page.get_by_text(f"taken for {first} · category {first}").first).to_be_visible()
    page.screenshot(path=str(artifacts_dir / "workspace-mistakes-resnet.png"))


def test_a_model_and_a_zipped_folder_uploaded_in_the_browser(ws_server, page, tmp_path):
    """The Your model page's second form, in Chromium: a torch.export file and a ZIP of an
    ImageFolder become a workspace (indexed in the sandbox) that Explore then shows."""
    from playwright.sync_api import expect

    server, rgb, _ = ws_server
    ws = open_indexed(rgb)
    data = ws.config.data
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in sorted(Path(data).rglob("*.png")):
            z.write(p, f"pictures/{p.relative_to(data)}")
    (tmp_path / "pictures.zip").write_bytes(buf.getvalue())
    send_zip_form(page, server.url, ws.config.model, tmp_path / "pictures.zip", side=64,
                  mean=0.5, std=0.25)  # fmt: skip
    expect(page.get_by_text("Indexed 120 images of 5 classes (3 × 64 × 64)")).to_be_visible()
    expect(page.get_by_text("accuracy 100.00%")).to_be_visible()
    page.get_by_role("button", name="Open it in Explore").click()
    wait(page)
    pred = int(ws.predicted[ws.find("class-0/000.png")])
    expect(
        page.get_by_role("heading").filter(has_text=f"says {pred} · class-{pred}")
    ).to_be_visible()
    expect(page.get_by_text("for #0 class-0/000.png")).to_be_visible()
