"""sandbox.compat_mp: the one reach into multiprocessing's internals is where it expects,
does what the worker needs (a worker's process data names no parent `__main__`, another
process's still does), and a real worker starts without running its parent's main module."""

from __future__ import annotations

import importlib
import inspect
import multiprocessing.spawn
import subprocess
import sys
from pathlib import Path

from sandbox import compat_mp, worker

REPO = Path(__file__).resolve().parents[2]


def test_every_reach_is_there_with_the_signature_it_expects():
    missing = [f"{m}.{a}" for m, a in compat_mp.REACHES
               if not hasattr(importlib.import_module(m), a)]  # fmt: skip
    assert not missing, f"Python moved what sandbox/compat_mp.py reaches for: {missing}"
    original = compat_mp._original or multiprocessing.spawn.get_preparation_data
    assert list(inspect.signature(original).parameters) == ["name"]


def test_a_workers_data_names_no_parent_main_and_others_keep_it():
    assert multiprocessing.spawn.get_preparation_data is compat_mp._preparation_data  # applied
    code = (
        "import multiprocessing.spawn, json\n"
        "from sandbox import worker\n"
        "a = multiprocessing.spawn.get_preparation_data(worker._PROCESS_NAME)\n"
        "b = multiprocessing.spawn.get_preparation_data('another')\n"
        "print(json.dumps([sorted(a), sorted(b)]))\n"
    )
    script = REPO / "tests" / "_compat_mp_probe.py"  # a __main__ with a path, as Streamlit's
    script.write_text(code)
    try:
        out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                             cwd=REPO, timeout=120)  # fmt: skip
    finally:
        script.unlink()
    assert out.returncode == 0, out.stderr[-2000:]
    import json

    mine, other = json.loads(out.stdout.strip().splitlines()[-1])
    assert "init_main_from_path" in other  # the patch has something to remove
    assert not set(compat_mp.MAIN_KEYS) & set(mine)
    assert set(other) - set(mine) == {"init_main_from_path"}


def test_skip_parent_main_is_idempotent():
    before = multiprocessing.spawn.get_preparation_data
    compat_mp.skip_parent_main(worker._PROCESS_NAME)
    assert multiprocessing.spawn.get_preparation_data is before
