"""The workers' budget, held by a real server (issue 28, items 2 and 3): `python -m dashboard`
with SALIENCY_MAX_WORKERS=2, six visitors pressing "Check and add" at once on the Your model
page, then a model that answers huge batches. The server's peak RSS (VmHWM, reset once it is
warm) stays within its stated budget (`dashboard.budget.total_bytes()`), no more than two
workers ever run, and they hold at most 2 × (their limit + the fork server's shared base).

Before (main @197c942): six checks ran six workers (9-10 on a server already holding four),
and the huge-batch model took the server up 2.5 GB through this page.

Needs /usr/bin/chromium (tests/browser_support.py)."""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import hostile
import pytest
from browser_support import (
    VIEWPORT,
    choose_file,
    proc_status,
    require_browser,
    reset_peak,
    start_server,
)
from test_budget_workers import HugeBatches, scripted
from torch import nn

from dashboard import budget
from sandbox import worker

pytestmark = [pytest.mark.browser, pytest.mark.slow, hostile.needs_sandbox]

require_browser()
from playwright.sync_api import expect  # noqa: E402

N = 2
ALERTS = '[data-testid="stAlertContentError"], [data-testid="stAlertContentSuccess"]'
MB = 2**20


class Wide(nn.Module):
    """Legal, a little heavy: each image goes through 32 copies of itself."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        import torch

        torch.manual_seed(seed)
        self.linear = nn.Linear(784, 10)

    def forward(self, x):
        return self.linear(x.expand(-1, 32, -1, -1).contiguous().mean(1).flatten(1))


status = proc_status


def children(pid: int) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                fields = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z" and int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def fork_server(pid: int) -> int | None:
    for child in children(pid):
        try:
            if b"forkserver" in Path(f"/proc/{child}/cmdline").read_bytes():
                return child
        except OSError:
            continue
    return None


class Sampler:
    """The server's worker processes (children of its fork server), every 20 ms."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.most = 0
        self.most_rss = 0
        self.base = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            fs = fork_server(self.server_pid)
            if fs is not None:
                self.base = max(self.base, status(fs, "VmRSS"))
                pids = children(fs)
                self.most = max(self.most, len(pids))
                self.most_rss = max(self.most_rss, sum(status(p, "VmRSS") for p in pids))
            time.sleep(0.02)

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


@pytest.fixture(scope="module")
def small_server(artifacts_dir):
    log = artifacts_dir / "budget-workers-server.log"
    s = start_server(log, env={"SALIENCY_MAX_WORKERS": str(N)})
    yield s
    s.stop()


def chosen(page, url: str, name: str, data: bytes) -> None:
    page.goto(f"{url}/your-model")
    expect(page.get_by_role("button", name="Check and add")).to_be_visible()
    choose_file(page, name, data)


def test_six_checks_at_once_and_a_huge_answer_stay_within_the_budget(small_server, browser):
    pid = small_server.proc.pid
    contexts = [browser.new_context(viewport=VIEWPORT) for _ in range(7)]
    pages = [c.new_page() for c in contexts]
    try:
        for i, page in enumerate(pages[:6]):
            chosen(page, small_server.url, f"wide{i}.pt", scripted(Wide(i)))
        chosen(pages[6], small_server.url, "huge.pt", scripted(HugeBatches()))
        baseline = status(pid, "VmRSS")
        reset_peak(pid)
        waited = False
        with Sampler(pid) as sampled:
            for page in pages[:6]:
                page.get_by_role("button", name="Check and add").click()
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                waited = waited or any(
                    p.get_by_text("Waiting for a free model worker").count() for p in pages[:6]
                )
                if all(p.locator(ALERTS).count() for p in pages[:6]):
                    break
                time.sleep(0.2)
            pages[6].get_by_role("button", name="Check and add").click()
            expect(pages[6].locator(ALERTS).first).to_be_visible(timeout=300_000)
        texts = [p.locator(ALERTS).first.inner_text() for p in pages]
        for text in texts[:6]:
            assert text.startswith("Accepted"), text
        assert re.search(r"returned shape \((\d+), 524288\) instead of \(\1, 10\)", texts[6])
        assert all(p.get_by_test_id("stException").count() == 0 for p in pages)
        peak = status(pid, "VmHWM") - baseline
        print(
            f"server peak +{peak / MB:.0f} MB (budget {budget.total_bytes() / MB:.0f} MB); "
            f"{sampled.most} workers at most, {sampled.most_rss / MB:.0f} MB RSS in all"
        )
        assert waited, "no page showed that it waited for a worker"
        assert sampled.most == N
        assert peak <= budget.total_bytes()
        assert peak < 400 * MB  # seven uploads and their sessions: +185 MB measured
        assert sampled.most_rss <= N * (worker.Limits().memory_bytes + sampled.base)
    finally:
        for c in contexts:
            c.close()
