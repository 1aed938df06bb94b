"""The versions requirements.txt pins, for the tests that check a library is the one the
project's private reaches were written against (test_compat_torch, test_compat_streamlit)."""

from __future__ import annotations

from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().parents[1] / "requirements.txt"


def pinned(package: str) -> str:
    """The `==` version requirements.txt pins for `package`."""
    for line in REQUIREMENTS.read_text().splitlines():
        name, _, version = line.split("#")[0].strip().partition("==")
        if name == package:
            return version
    raise AssertionError(f"{package} is not pinned in requirements.txt")
