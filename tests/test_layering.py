"""The layers' "never imports" rules, each checked by importing *every* submodule of a package
in a clean interpreter (a guard that imports only a package's lazy face passes while one of
its modules breaks the rule):

- `saliency` (the maths) never imports streamlit, `pretrained` or `dashboard`;
- `pretrained` (the zoo, the sandbox, workspaces) never imports streamlit or `dashboard`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RULES = {
    "saliency": ("streamlit", "pretrained", "dashboard"),
    "pretrained": ("streamlit", "dashboard"),
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
