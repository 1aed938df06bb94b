"""The README and the manuals in docs/ stay true to the tree: the README is a user's document of
at most 300 lines, every relative link (and its #anchor) lands somewhere, and every command the
documents name can be run. Pure text and file checks: nothing is imported or started."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
DOCUMENTS = [README, *DOCS]
MAX_README_LINES = 300

# [text](target) and ![alt](target); a target ends at the first space or ')'.
LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
# `python -m X` (also `.venv/bin/python -m X`, `torchrun ... -m X`); `python a.py`, `bash b.sh`
MODULE = re.compile(r"(?:python|torchrun)\b[^\n`]*?\s-m\s+([A-Za-z_][\w.]*)")
SCRIPT = re.compile(r"\b(?:python|bash)\s+((?:[\w.-]+/)*[\w.-]+\.(?:py|sh))\b")


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"<[^>]+>", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*$", text, re.M)}


def _links(path: Path) -> list[str]:
    return LINK.findall(FENCE.sub("", path.read_text(encoding="utf-8")))


def test_the_readme_is_a_users_document_of_at_most_300_lines():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md is {len(lines)} lines"


def test_the_readme_keeps_its_two_commands():
    """`.ci/run` runs "exactly the README's test command"; scripts/ and the tests rely on both."""
    text = README.read_text(encoding="utf-8")
    assert "```bash\nbash scripts/dashboard.sh\n```" in text
    assert "```bash\nbash scripts/test.sh\n```" in text


@pytest.mark.parametrize("doc", DOCUMENTS, ids=_name)
def test_every_relative_link_lands_on_a_file_and_heading(doc):
    broken = []
    for target in _links(doc):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (doc.parent / file).resolve() if file else doc
        if not dest.exists():
            broken.append(f"{target} (no file {dest.relative_to(ROOT.parent)})")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {_name(dest)})")
    assert not broken, f"{_name(doc)}: " + "; ".join(broken)


def _module_exists(name: str) -> bool:
    parts = name.split(".")
    base = ROOT.joinpath(*parts)
    if (base / "__main__.py").exists() or base.with_suffix(".py").exists():
        return True
    if (ROOT / parts[0]).is_dir() or (ROOT / f"{parts[0]}.py").exists():
        return False  # one of ours, but no such module
    return importlib.util.find_spec(parts[0]) is not None  # an installed tool (pytest, pip)


@pytest.mark.parametrize("doc", DOCUMENTS, ids=_name)
def test_every_command_named_exists(doc):
    text = doc.read_text(encoding="utf-8").replace("\\\n", " ")
    modules = set(MODULE.findall(text))
    scripts = set(SCRIPT.findall(text))
    missing = [f"python -m {m}" for m in sorted(modules) if not _module_exists(m)]
    missing += [s for s in sorted(scripts) if not (ROOT / s).is_file()]
    assert not missing, f"{_name(doc)} names commands that don't exist: {missing}"
    if doc == README:  # the README's own commands are found, so the check above means something
        assert {"workspace.index", "dashboard", "workspace.export_maps"} <= modules
        assert {"scripts/dashboard.sh", "scripts/test.sh"} <= scripts


def test_the_checks_can_fail(tmp_path):
    """The link and command patterns catch what they are for (a check that finds nothing passes
    whatever the documents say)."""
    doc = tmp_path / "x.md"
    doc.write_text(
        "# A title: with (punctuation)\n[a](missing.md) ![b](pic.png) [c](https://x.org)\n"
        "```bash\n.venv/bin/python -m pretrained.nothing --x\nbash scripts/none.sh\n```\n"
        "`.venv/bin/torchrun --nproc-per-node 2 -m workspace.index` `python benchmarks/b.py`\n",
        encoding="utf-8",
    )
    assert _links(doc) == ["missing.md", "pic.png", "https://x.org"]
    assert _anchors(doc) == {"a-title-with-punctuation"}
    text = doc.read_text(encoding="utf-8")
    assert set(MODULE.findall(text)) == {"pretrained.nothing", "workspace.index"}
    assert set(SCRIPT.findall(text)) == {"scripts/none.sh", "benchmarks/b.py"}
    assert not _module_exists("pretrained.nothing") and _module_exists("workspace.index")
    assert _module_exists("dashboard") and _module_exists("pytest")
