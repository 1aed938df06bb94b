"""The layers' "never imports" rules, each checked by importing *every* submodule of a package
in a clean interpreter (a guard that imports only a package's lazy face passes while one of
its modules breaks the rule):

- `saliency` (the maths) never imports streamlit or any other package of ours;
- `pretrained` (the zoo) never imports streamlit, `sandbox`, `workspace` or `dashboard`;
- `sandbox` (untrusted files and models) never imports streamlit, `workspace` or `dashboard`;
- `workspace` (a model with its pictures) never imports streamlit or `dashboard`;

each checked again by reading every `import` statement, those inside functions too (which
importing a module doesn't run); and that no two of our modules import each other, at their
top or inside a function (issue 31: on the session's first commit, 4420a77, this finds three
circles).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RULES = {
    "saliency": ("streamlit", "pretrained", "sandbox", "workspace", "dashboard"),
    "pretrained": ("streamlit", "sandbox", "workspace", "dashboard"),
    "sandbox": ("streamlit", "workspace", "dashboard"),
    "workspace": ("streamlit", "dashboard"),
}
# Modules that are programs, run as `python -m`, or the sandbox's own entry points: imported
# like the others (their top level must obey the rule too), never executed.
PROBE = """
import importlib, json, pkgutil, sys
package = importlib.import_module({name!r})
names = sorted(m.name for m in pkgutil.walk_packages(package.__path__, {name!r} + "."))
for module in names:
    importlib.import_module(module)
print(json.dumps({{"modules": names, "loaded": sorted(sys.modules)}}))
"""


@pytest.mark.parametrize("package", sorted(RULES))
def test_no_submodule_imports_what_its_layer_must_not(package):
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(name=package)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    facts = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(facts["modules"]) >= 8, facts["modules"]  # the walk found the package's modules
    loaded = set(facts["loaded"])
    broken = [
        name
        for name in RULES[package]
        if name in loaded or any(m.startswith(name + ".") for m in loaded)
    ]
    assert not broken, f"importing every module of {package} imports {broken}"


def banned_imports(package: str, root: Path = ROOT) -> list[str]:
    """Every `import` in `package`'s files, inside functions too (which importing every
    submodule doesn't run), of a package its layer must not import: "path:line name"."""
    import ast

    found = []
    for path in sorted((root / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            rel = path.relative_to(root)
            found += [f"{rel}:{node.lineno} {n}" for n in names
                      if n.split(".")[0] in RULES[package]]  # fmt: skip
    return found


@pytest.mark.parametrize("package", sorted(RULES))
def test_no_function_imports_what_its_layer_must_not(package):
    assert banned_imports(package) == []


def test_the_import_finder_finds_a_lazy_import(tmp_path):
    (tmp_path / "sandbox").mkdir()
    (tmp_path / "sandbox" / "a.py").write_text("def f():\n    from workspace import index\n")
    assert banned_imports("sandbox", tmp_path) == ["sandbox/a.py:2 workspace"]


# --- No import circle (issue 31) --------------------------------------------------------------
PACKAGES = ("saliency", "pretrained", "sandbox", "workspace", "dashboard")


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Every module of ours that `path` imports, at its top or inside a function: `from . import
    x` and `from .a import b` count as importing `a.b` when that is a module, else `a`."""
    import ast

    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                found.add(target)  # (a module importing its own package's face is no circle)
    return found


def import_circles(root: Path = ROOT) -> list[list[str]]:
    """The strongly connected components of more than one module in our import graph."""
    paths = {_module_name(p, root): p for pkg in PACKAGES for p in (root / pkg).rglob("*.py")}
    graph = {name: _imports(path, name, set(paths)) for name, path in paths.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return circles


def test_no_import_circle():
    assert import_circles() == [], "modules that import each other (even inside a function)"


def test_the_circle_finder_finds_a_circle(tmp_path):
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "pretrained" / "a.py").write_text("from . import b\n")
    (tmp_path / "pretrained" / "b.py").write_text("def f():\n    from .a import g\n")
    (tmp_path / "saliency" / "c.py").write_text("import saliency\n")  # its own face: no circle
    assert import_circles(tmp_path) == [["pretrained.a", "pretrained.b"]]
