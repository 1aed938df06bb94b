"""Declared state (issue 31): every session key in dashboard/ is a named constant, declared once.

A string literal used as a key (`st.session_state["x"]`, `.get("x")`, `.setdefault("x", …)`,
`.pop("x", …)`, `"x" in st.session_state`, a widget's `key="x"`, `state.put("x", …)`; or an
f-string that starts with literal text, `f"x_{i}"`) is a key nobody can find by name: a typo
makes a second key silently, and two pages can use one string for two things.
Read with `ast`, so it checks code that no test runs. Tests themselves may use the literal
strings: they check the public contract (URLs, AppTest's keys).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "dashboard"
METHODS = ("get", "setdefault", "pop")
STATE = ("get", "put")


def _is_session_state(node: ast.AST) -> bool:
    """`st.session_state`, `streamlit.session_state` or a bare `session_state`."""
    if isinstance(node, ast.Attribute):
        return node.attr == "session_state"
    return isinstance(node, ast.Name) and node.id == "session_state"


def _key_nodes(tree: ast.AST) -> list[ast.expr]:
    """Every expression of `tree` used as a session key, in the forms the issue lists, and as
    `state.get(KEY)`, `state.put(KEY, …)` or `state.keep(KEY, …)`."""
    keys: list[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and _is_session_state(node.value):
            keys.append(node.slice)
        elif isinstance(node, ast.Call):
            func = node.func
            if (
                isinstance(func, ast.Attribute)
                and func.attr in METHODS
                and _is_session_state(func.value)
                and node.args
            ):
                keys.append(node.args[0])
            keys.extend(k.value for k in node.keywords if k.arg == "key")
            if isinstance(func, ast.Attribute) and getattr(func.value, "id", None) == "state":
                # dashboard.state's helpers: get(KEY), put(KEY, value), keep(KEY, ...)
                if func.attr == "keep":
                    keys.extend(node.args)
                elif func.attr in STATE and node.args:
                    keys.append(node.args[0])
        elif isinstance(node, ast.Compare):
            for op, right in zip(node.ops, node.comparators, strict=True):
                if isinstance(op, ast.In | ast.NotIn) and _is_session_state(right):
                    keys.append(node.left)
    return keys


def _is_literal(node: ast.expr) -> bool:
    """A plain string, or an f-string that starts with literal text: `f"sens_{slot}"` names a
    family of keys by a prefix nobody declared (`f"{SENS}_{slot}"` declares it, and
    `f"{key}_sent"` derives its keys from one declared elsewhere)."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    return isinstance(node, ast.JoinedStr) and isinstance(node.values[0], ast.Constant)


def _modules(folder: Path) -> dict[Path, ast.Module]:
    return {p: ast.parse(p.read_text(encoding="utf-8")) for p in sorted(folder.rglob("*.py"))}


def literal_keys(folder: Path = DASHBOARD) -> list[str]:
    """`file:line: 'key'` for each string literal used as a session key under `folder`."""
    found = []
    for path, tree in _modules(folder).items():
        for node in sorted(_key_nodes(tree), key=lambda n: (n.lineno, n.col_offset)):
            if _is_literal(node):
                text = ast.unparse(node)
                found.append(f"{path.relative_to(folder.parent)}:{node.lineno}: {text}")
    return found


def _string_constants(tree: ast.Module) -> dict[str, str]:
    """A module's top-level `NAME = "string"` (and `NAME: str = "string"`) constants."""
    found = {}
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        value = getattr(node, "value", None)
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            for target in targets:
                if isinstance(target, ast.Name) and target.id.isupper():
                    found[target.id] = value.value
    return found


def _names_in(node: ast.expr) -> set[str]:
    """The constants' names an expression used as a key reads: `KEY`, `state.KEY`, and those
    formatted into an f-string (`f"{KEY}_sent"`)."""
    names = set()
    for part in ast.walk(node):
        if isinstance(part, ast.Name):
            names.add(part.id)
        elif isinstance(part, ast.Attribute):
            names.add(part.attr)
    return {n for n in names if n.isupper()}


def declared_keys(folder: Path = DASHBOARD) -> dict[str, set[str]]:
    """Each key string that a module-level constant declares, with the modules declaring it:
    a constant counts when some module uses a name like it as a key (resolving names across
    imports would only narrow this down further)."""
    modules = _modules(folder)
    used = set()
    for tree in modules.values():
        for node in _key_nodes(tree):
            used |= _names_in(node)
    declared: dict[str, set[str]] = defaultdict(set)
    for path, tree in modules.items():
        for name, value in _string_constants(tree).items():
            if name in used:
                declared[value].add(f"{path.relative_to(folder.parent)}:{name}")
    return declared


def test_no_session_key_is_a_string_literal():
    found = literal_keys()
    assert not found, f"{len(found)} session keys are string literals:\n" + "\n".join(found)


def test_each_key_string_is_declared_by_one_module():
    twice = {
        key: sorted(where)
        for key, where in declared_keys().items()
        if len({w.partition(":")[0] for w in where}) > 1
    }
    assert not twice, f"key strings declared by several modules: {twice}"


def test_the_checks_find_what_they_look_for(tmp_path):
    folder = tmp_path / "dashboard"
    folder.mkdir()
    (folder / "a.py").write_text(
        "import streamlit as st\n"
        "from streamlit import session_state\n"
        "OWN = 'own'\n"
        "SHARED = 'shared'\n"
        "st.session_state['x'] = 1\n"
        "st.session_state.get('y')\n"
        "st.session_state.setdefault(f'z', {})\n"
        "session_state.pop('w', None)\n"
        "if 'v' not in st.session_state: pass\n"
        "st.button('Go', key='u')\n"
        "st.session_state[OWN] = st.session_state.get(f'{SHARED}_sent')\n"
        "st.checkbox('c', key=f'{OWN}_{1}')\n"
        "st.checkbox('d', key=f'own_{OWN}')\n"
        "sorted([], key=len)\n"
        "from dashboard import state\n"
        "state.keep(OWN, 'a', 'b')\n"
        "state.put('c', 1)\n"
    )
    (folder / "b.py").write_text("SHARED = 'shared'\nOTHER = 'own'\nNOT_A_KEY = 'own'\n")
    lines = [f.split(":")[1] for f in literal_keys(folder)]
    assert lines == ["5", "6", "7", "8", "9", "10", "13", "16", "16", "17"]
    declared = declared_keys(folder)
    assert declared["shared"] == {"dashboard/a.py:SHARED", "dashboard/b.py:SHARED"}
    assert declared["own"] == {"dashboard/a.py:OWN"}
