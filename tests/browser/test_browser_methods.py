"""The field's methods in Explore, in a real Chromium (issue 32): Grad-CAM picked from the
panel's Method picker names its automatic layer and draws; the (sidebar's) Layer picker's
choice is named and goes into the link; an MLP is told it has no spatial layer, and the
sidebar's Method and Model boxes are back while no panel shows; LRP on the CNN draws."""

from __future__ import annotations

import re

import pytest
from browser_support import require_browser
from test_browser import (
    assert_no_exception,
    model_option,
    open_select,
    option,
    panel_control,
    wait_complete,
    wait_idle,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

require_browser()
from playwright.sync_api import Page, expect  # noqa: E402


def pick(page: Page, box: str, value: str, name: str | re.Pattern | None = None) -> None:
    """Choose in the panel's own picker `box` (by value) where the panel shows it, else in the
    sidebar's (by the option's text `name`, or the value)."""
    wait_idle(page)
    mine = panel_control(page, "combobox", box)
    if mine.count():
        mine.select_option(value)
        return
    open_select(page, box)
    option(page, name or value).click()


def test_layer_maps_and_lrp_in_explore(server, page: Page, artifacts_dir) -> None:
    page.goto(server.url)
    wait_complete(page)  # the default view: mnist-cnn, the vanilla gradient

    pick(page, "Method", "grad_cam")
    expect(page.get_by_text("At layer 6 (automatic), upsampled to the image.")).to_be_visible()
    wait_complete(page)  # the panel drew the Grad-CAM maps, and nothing raised
    expect(page).to_have_url(re.compile(r"method=grad_cam"))
    sidebar = page.get_by_test_id("stSidebar")
    layer_box = sidebar.get_by_role("combobox", name="Layer (layer maps)", exact=True)
    expect(sidebar.get_by_role("combobox", name="Method", exact=True)).to_have_count(0)
    expect(layer_box).to_have_value("automatic: 6")

    pick(page, "Layer (layer maps)", "2")  # the sidebar's
    expect(page.get_by_text("At layer 2 (chosen), upsampled to the image.")).to_be_visible()
    wait_complete(page)
    expect(layer_box).to_have_value("2")
    expect(page).to_have_url(re.compile(r"[?&]layer=2(&|$)"))
    page.screenshot(path=str(artifacts_dir / "methods-grad-cam-layer-2.png"), full_page=True)

    pick(page, "Model", "mnist-mlp")
    warning = page.get_by_test_id("stAlertContentWarning").filter(has_text="can't explain")
    expect(warning).to_contain_text("Grad-CAM can't explain mnist-mlp:")
    expect(warning).to_contain_text("no spatial layer: an MLP has no Grad-CAM")
    assert_no_exception(page)
    expect(heading := page.get_by_role("heading").filter(has_text="says")).to_be_visible()
    expect(heading).to_contain_text("mnist-mlp says")  # the prediction is still shown

    # No panel (nothing to draw): the sidebar's Method and Model boxes are back.
    expect(page.locator(".sal-pickers")).to_have_count(0)
    expect(sidebar.get_by_role("combobox", name="Method", exact=True)).to_be_visible()
    pick(page, "Model", "mnist-cnn", model_option("mnist-cnn"))
    wait_complete(page)
    pick(page, "Method", "lrp")
    expect(page.get_by_text(re.compile("^Showing LRP · relevance \\(LRP\\)"))).to_be_visible()
    wait_complete(page)
    expect(page).to_have_url(re.compile(r"method=lrp"))
    assert page.get_by_text("can't explain").count() == 0
    page.screenshot(path=str(artifacts_dir / "methods-lrp.png"), full_page=True)
