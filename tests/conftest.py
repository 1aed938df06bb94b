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
