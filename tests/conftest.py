"""Fixtures shared by the test modules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """`artifacts/browser/` at the repo root (git-ignored): screenshots, timings, server logs."""
    path = REPO / "artifacts" / "browser"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def server(artifacts_dir: Path) -> Iterator:
    """One dashboard server for every browser test module (started on first use)."""
    from browser_support import start_server

    s = start_server(artifacts_dir / "server.log")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def browser():
    """One headless Debian Chromium for every browser test (see tests/browser_support.py)."""
    from browser_support import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, require_browser

    require_browser()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser) -> Iterator:
    """A fresh page (own context); fails the test on any uncaught JavaScript error."""
    from browser_support import TIMEOUT_MS, VIEWPORT

    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    yield p
    context.close()
    assert not errors, f"uncaught JavaScript errors in the page: {errors}"
