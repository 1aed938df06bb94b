"""The kinds of model and data set (issue 31: "prefixes are parsed in one function"):
`sandbox.kinds.parse` reads every key, and no other product module spells a prefix."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from sandbox import kinds

ROOT = Path(__file__).resolve().parents[2]
PREFIXES = (
    kinds.UPLOAD_PREFIX,
    kinds.WORKSPACE_PREFIX,
    kinds.UPLOADED_PREFIX,
    kinds.IMAGENET_PREFIX,
    kinds.TABLE_PREFIX,
    kinds.PHOTOS_PREFIX,
)


@pytest.mark.parametrize(
    "key, kind, name",
    [
        ("mnist-cnn", kinds.BUNDLED, "mnist-cnn"),
        ("fashion-mnist", kinds.BUNDLED, "fashion-mnist"),
        ("upload:3f2a9c04d1e7", kinds.UPLOAD, "3f2a9c04d1e7"),
        ("ws:cells", kinds.WORKSPACE, "cells"),
        ("ws:cells-2", kinds.WORKSPACE, "cells-2"),
        ("ws:upload-3f2a9c04d1e7", kinds.UPLOADED, "3f2a9c04d1e7"),
        ("imagenet:resnet18/random", kinds.IMAGENET, "resnet18/random"),
        ("table:3f2a9c04d1e7", kinds.TABLE, "3f2a9c04d1e7"),
        ("photos:imagenet", kinds.PHOTOS, "imagenet"),
        (None, kinds.BUNDLED, "None"),
    ],
)
def test_each_key_is_read_as_its_kind(key, kind, name):
    assert kinds.parse(key) == (kind, name)
    assert kinds.is_upload(key) == (kind == kinds.UPLOAD)
    assert kinds.is_workspace(key) == (kind in (kinds.WORKSPACE, kinds.UPLOADED))


def test_the_builders_are_the_parsers_inverse():
    assert kinds.parse(kinds.upload("abc")) == (kinds.UPLOAD, "abc")
    assert kinds.parse(kinds.workspace("cells")) == (kinds.WORKSPACE, "cells")
    assert kinds.uploaded(kinds.upload("abc")) == "ws:upload-abc"
    assert kinds.parse(kinds.uploaded("upload:abc")) == (kinds.UPLOADED, "abc")
    with pytest.raises(ValueError, match="not an uploaded model"):
        kinds.uploaded("ws:cells")
    assert kinds.parse(kinds.table("abc")) == (kinds.TABLE, "abc")
    assert kinds.parse(kinds.photos("imagenet")) == (kinds.PHOTOS, "imagenet")
    key = kinds.imagenet("mobilenet_v3_small", "pretrained")
    assert kinds.imagenet_parts(key) == ("mobilenet_v3_small", "pretrained")
    with pytest.raises(ValueError, match="not an ImageNet model"):
        kinds.imagenet_parts("mnist-cnn")


def spelled_prefixes(root: Path) -> list[str]:
    """file:line of every string in the product code, other than `sandbox/kinds.py` and
    docstrings, that is a key prefix or starts with one (an f-string's first part included)."""
    found = []
    for package in ("saliency", "pretrained", "sandbox", "workspace", "dashboard"):
        for path in sorted((root / package).rglob("*.py")):
            if path.name == "kinds.py" and path.parent.name == "sandbox":
                continue
            tree = ast.parse(path.read_text(), str(path))
            docstrings = {
                id(node.body[0].value)
                for node in ast.walk(tree)
                if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
                and node.body
                and isinstance(node.body[0], ast.Expr)
                and isinstance(node.body[0].value, ast.Constant)
            }
            for node in ast.walk(tree):
                text = None
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    text = None if id(node) in docstrings else node.value
                elif isinstance(node, ast.JoinedStr) and node.values:
                    first = node.values[0]
                    text = first.value if isinstance(first, ast.Constant) else None
                if text is not None and text.startswith(PREFIXES):
                    found.append(f"{path.relative_to(root)}:{node.lineno}: {text[:40]!r}")
    return sorted(set(found))  # an f-string's first part is also a string of its own


def test_no_product_module_spells_a_prefix():
    assert spelled_prefixes(ROOT) == []


def test_the_check_finds_a_spelled_prefix(tmp_path):
    (tmp_path / "dashboard").mkdir()
    (tmp_path / "dashboard" / "views.py").write_text(
        '"""ws: in a docstring is fine."""\nx = name.startswith("upload:")\ny = f"ws:{name}"\n'
    )
    assert [f.split(": ", 1)[0] for f in spelled_prefixes(tmp_path)] == [
        "dashboard/views.py:2",
        "dashboard/views.py:3",
    ]


@pytest.mark.parametrize("module", ["pretrained", "sandbox.kinds", "workspace.model_ref"])
def test_the_docstrings_examples_are_what_the_code_does(module):
    """A package's face says what it holds; its examples are run (pretrained's listed four
    MNIST models while the zoo had five)."""
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, result
