"""The Tables page in a real Chromium: the bundled example on first open, then a CSV and a
torch.export model uploaded through the page's file inputs, ranked in the sandbox."""

from __future__ import annotations

import re

import numpy as np
import pytest
from browser_support import IDLE, choose_file
from test_tables import CLASS_FEATURES, Linear, csv_bytes, exported, train_classifier

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_tables_page_example_then_uploaded_csv_and_model(server, page, artifacts_dir):
    from playwright.sync_api import expect

    page.goto(f"{server.url}/tables")
    page.wait_for_selector(IDLE)
    expect(page.get_by_role("heading", name=re.compile("Tables: which features"))).to_be_visible()
    chart = page.get_by_test_id("stVegaLiteChart").first
    expect(chart).to_be_visible()
    expect(page.get_by_text("tc and ldl: r = +0.90")).to_be_visible()
    # Raw units: the order changes and the URL says so (× std, the default, needn't).
    page.get_by_text("raw units: mean", exact=False).click()
    page.wait_for_selector(IDLE)
    expect(page).to_have_url(re.compile(r"t_scale=none"))
    page.screenshot(path=str(artifacts_dir / "tables-example.png"), full_page=True)
    assert page.get_by_test_id("stException").count() == 0

    # Your own CSV and model: y = 2a − 3b + 0.5c, columns with spreads 1, 10 and 100.
    X = np.random.default_rng(0).normal(size=(200, 3)) * np.array([1.0, 10.0, 100.0])
    page.get_by_text("Your own CSV and model").click()
    page.wait_for_selector(IDLE)
    choose_file(page, "mine.csv", csv_bytes(X, "abc"), nth=0)
    expect(page.get_by_text("Upload the model to go on")).to_be_visible()
    page.wait_for_selector(IDLE)
    choose_file(page, "mine.pt2", exported(Linear([2.0, -3.0, 0.5]), 3), nth=1)
    # Raw units, as chosen above: b's weight (-3) is the largest, and its row's nudge shows.
    expect(page.get_by_text("∂y/∂b = -3 at this row")).to_be_visible(timeout=120_000)
    page.wait_for_selector(IDLE)
    expect(page.get_by_test_id("stVegaLiteChart").first).to_be_visible()
    grid = page.get_by_test_id("stDataFrame").first
    expect(grid).to_be_visible()
    assert page.get_by_test_id("stException").count() == 0
    page.screenshot(path=str(artifacts_dir / "tables-upload.png"), full_page=True)


def test_tables_page_classifier_gets_probability_accuracy_and_log_loss(server, page):
    """A data scientist's path: a CSV with a 0/1 `target` column and an MLP with two logits.
    The page explains the class's probability and reports accuracy and log-loss, not R²."""
    import torch
    from playwright.sync_api import expect
    from torch import nn

    X, y, model = train_classifier()
    with torch.no_grad():
        z = model(torch.tensor(X, dtype=torch.float32)).double()
    accuracy = float((z.argmax(1).numpy() == y).mean())
    log_loss = float(nn.functional.cross_entropy(z, torch.tensor(y)))
    page.goto(f"{server.url}/tables?t_source=upload")
    page.wait_for_selector(IDLE)
    # Chosen after the page's second run, which would clear it (browser_support.choose_file):
    # CI saw "Upload a CSV to go on" once, the file gone.
    data = csv_bytes(np.column_stack([X, y]), [*CLASS_FEATURES, "target"])
    choose_file(page, "cancer.csv", data, nth=0)
    # The table was read (a bare wait for idle can pass before the upload's rerun starts).
    expect(page.get_by_text("Upload the model to go on")).to_be_visible()
    page.wait_for_selector(IDLE)
    choose_file(page, "mlp.pt2", exported(model, 4), nth=1)
    line = f"accuracy {accuracy:.2%} (argmax), log-loss {log_loss:.4f} on 400 rows"
    expect(page.get_by_text(line, exact=False)).to_be_visible(timeout=120_000)
    expect(page.get_by_text("probability (softmax)")).to_be_visible()
    metric = page.get_by_test_id("stMetricLabel")
    expect(metric.get_by_text("Probability of class 0")).to_be_visible()
    assert page.get_by_text("R²", exact=False).count() == 0
    page.get_by_text("log-probability", exact=True).click()
    page.wait_for_selector(IDLE)
    expect(page).to_have_url(re.compile(r"t_score=log_probability"))
    expect(metric.get_by_text("Log-probability of class 0")).to_be_visible()
    assert page.get_by_test_id("stException").count() == 0
