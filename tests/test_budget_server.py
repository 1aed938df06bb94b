"""The stated memory budget, held by a real server (issue 28): `python -m dashboard` started with
SALIENCY_MEMORY_MB=600, driven through Chromium as visitors would, its peak RSS (VmHWM, reset
once the server is warm) compared with its warm baseline.

Needs /usr/bin/chromium (tests/browser_support.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from browser_support import IDLE, require_browser, start_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

require_browser()
from playwright.sync_api import expect  # noqa: E402

from dashboard import budget  # noqa: E402

BUDGET_MB = 600


def status(pid: int, field: str) -> int:
    """A /proc/PID/status field in MB (VmRSS: now; VmHWM: the peak since the last reset)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) // 1024
    raise KeyError(field)


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux >= 4.0)


@pytest.fixture(scope="module")
def budget_server(artifacts_dir):
    old = os.environ.get("SALIENCY_MEMORY_MB")
    os.environ["SALIENCY_MEMORY_MB"] = str(BUDGET_MB)
    try:
        s = start_server(artifacts_dir / "budget-server.log")
    finally:
        if old is None:
            os.environ.pop("SALIENCY_MEMORY_MB")
        else:
            os.environ["SALIENCY_MEMORY_MB"] = old
    yield s
    s.stop()


def csv_of(seed: int, rows: int = 200_000, cols: int = 20) -> bytes:
    """About 15 MB of short numeric cells: the shape that cost the most per byte."""
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 10, size=(rows, cols))
    header = ",".join(f"c{j}" for j in range(cols))
    body = "\n".join(",".join(f"0.{v}" for v in row) for row in values.tolist())
    return (header + "\n" + body + "\n").encode()


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
    print(f"8 tables of 15 MB: peak +{peak} MB, kept +{kept} MB (budget {BUDGET_MB} MB)")
    # Before issue 28 (measured by this test on 197c942): peak +650 MB, kept +321 MB.
    assert peak < BUDGET_MB, f"peak growth {peak} MB over the {BUDGET_MB} MB budget"
    tables_share = budget.SHARES["tables"] * BUDGET_MB
    assert kept < tables_share + 100, f"{kept} MB kept, over the tables' {tables_share:.0f} MB"
