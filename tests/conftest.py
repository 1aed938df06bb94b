"""Fixtures shared by the test modules."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# AppTest runs no JavaScript, so the Explore panel never reports that it drew: its pages get the
# server's own pictures at once, as a browser whose panel never loads gets them after a wait
# (dashboard/components/saliency_panel.py). The browser tests' servers wait, as by default
# (browser_support.start_server); test_dashboard.py tests the wait itself.
os.environ.setdefault("SALIENCY_PANEL_WAIT_S", "0")


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


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory) -> Iterator[str]:
    """A throwaway PostgreSQL server for the test session (../shared/recipes/postgres.md): its
    own data folder, port and socket folder, run as the `postgres` user when we are root.
    Skips without the binaries, unless SALIENCY_REQUIRE_POSTGRES=1 (CI) makes that a failure."""
    import glob
    import os
    import shutil
    import socket
    import subprocess
    import tempfile

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        why = "PostgreSQL is not installed (apt-get install postgresql)"
        if os.environ.get("SALIENCY_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{why}; SALIENCY_REQUIRE_POSTGRES=1 makes that an error", pytrace=False)
        pytest.skip(why)
    bin_dir = Path(found[-1]).parent
    folder = Path(tempfile.mkdtemp(prefix="saliency-pg-"))
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(folder, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data, log = folder / "data", folder / "log"
    subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust",
                    "-U", "postgres"], check=True, capture_output=True)  # fmt: skip
    ctl = [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data)]
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run([*ctl, "-l", str(log), "-w", "-o", options, "start"], check=True,
                   capture_output=True)  # fmt: skip
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
