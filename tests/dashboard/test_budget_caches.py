"""The server's memory budget (issue 28): every cache of user-derived data is bounded in bytes
against its share of `SALIENCY_MEMORY_MB`, nothing by a count alone; `--no-uploads` means no
uploads on any page; every CSV the project writes goes through one formula-neutralising
function; names people give are shown as plain text."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from dashboard import budget, lru
from dashboard.lru import BytesLRU, memo, nbytes
from sandbox import text
from workspace.opened import Workspace

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "dashboard" / "app.py")
PAGES = ("explore", "mistakes", "dataset", "classroom", "live", "your_model", "photos", "tables")


# --- the budget and its caches -------------------------------------------------------------------


def test_the_budget_is_one_setting_split_into_shares(monkeypatch):
    monkeypatch.setenv("SALIENCY_MEMORY_MB", "1000")
    assert budget.total_bytes() == 1000 * 2**20
    assert budget.share("maps") == int(1000 * 2**20 * budget.SHARES["maps"])
    # the caches' shares leave headroom for requests in flight
    assert 0.5 < sum(budget.SHARES.values()) <= 0.9
    monkeypatch.setenv("SALIENCY_MEMORY_MB", "nonsense")
    assert budget.total_bytes() == budget.DEFAULT_MB * 2**20
    monkeypatch.setenv("SALIENCY_MEMORY_MB", "1")
    assert budget.total_bytes() == 64 * 2**20  # a floor, so the pages still work


def test_bytes_lru_never_holds_more_than_its_bound():
    cache = BytesLRU(1000)
    for i in range(50):
        cache.put(i, bytes(i * 10), i * 10)
        assert cache.bytes <= 1000
        assert cache.bytes == sum(i2 * 10 for i2 in cache.keys())
    assert cache.keys()[-1] == 49  # the newest stays while it fits
    assert cache.put("big", b"", 1001) is False and "big" not in cache.keys()
    assert cache.get("big", "missing") == "missing"


def test_nbytes_counts_what_a_value_holds():
    a = np.zeros((20, 3, 64, 64), np.float32)
    assert a.nbytes <= nbytes(a) <= a.nbytes + 200
    view = a[:1]  # keeps all of `a` alive
    assert nbytes(view) >= a.nbytes
    assert nbytes((a, a, view)) < 2 * a.nbytes  # one buffer, counted once
    d = {"maps": a, "names": [c * 1000 for c in "xyz"], "blob": b"1" * 5000}
    assert a.nbytes + 5000 + 3000 <= nbytes(d) <= a.nbytes + 5000 + 3000 + 1000


def test_memo_computes_once_keeps_by_bytes_and_hands_out_read_only(monkeypatch):
    monkeypatch.setitem(lru._STORES, "maps", BytesLRU(3 * 2**20))  # room for 3 of 1 MB
    calls = []

    @memo("maps")
    def maps(image: np.ndarray, k: int) -> np.ndarray:
        calls.append(k)
        return np.full((2**18,), float(k), np.float32)  # 1 MB

    image = np.arange(784, dtype=np.float32)
    first = maps(image, 1)
    assert maps(image.copy(), 1) is first and calls == [1]  # by content, not identity
    with pytest.raises(ValueError, match="read-only"):
        first[0] = 5.0
    for k in range(2, 10):
        maps(image, k)
        assert lru._STORES["maps"].bytes <= 3 * 2**20
    maps(image, 1)
    assert calls.count(1) == 2  # evicted, computed again


def test_every_dashboard_cache_is_bounded_by_bytes():
    """No `st.cache_data`/`st.cache_resource` with only a count bound holds user-derived data:
    the ones left hold the registry's models, the bundled test sets and the server's own
    stores, whose number is fixed by the server's code and command line."""
    allowed = {  # function: why a count is enough
        "_registry_model": "the registry's models (a fixed list)",
        "uploads": "the upload pool (bounded by its own count and worker limits)",
        "dataset": "the bundled test sets",
        "live_store": "one store",
        "imagenet_model": "torchvision's two models",
        "_bundled": "the bundled test sets",
        "_photos": "the ImageNet workspace (one: its class names, no images)",
        "_workspace": "the server's own --workspace folders (the operator's)",
        "uploaded": "one store, bounded in bytes",
        "example": "the bundled table example",
        "example_program": "the bundled table example",
        "workers": "one store of workers",
        "regressor": "the classroom's three synthetic tables",
        "live_class_store": "one store",
        "held_exports": "one store, bounded in bytes (the gallery's exports)",
        "_exporting": "one lock",
    }
    found = []
    for path in sorted((ROOT / "dashboard").rglob("*.py")):
        source = path.read_text()
        for m in re.finditer(r"@st\.cache_(?:data|resource)\(.*\)\n(?:@.*\n)*def (\w+)", source):
            found.append(m.group(1))
            assert m.group(1) in allowed, f"{path.name}: {m.group(1)} is cached by count"
    assert {"_registry_model", "regressor"} <= set(found)  # the pattern finds what it should
    assert "st.cache_data" not in "".join(p.read_text() for p in (ROOT / "dashboard").rglob("*.py"))


def test_uploaded_workspaces_are_bounded_in_bytes(monkeypatch):
    from dashboard import sources

    store = sources._Uploaded()
    store.max_bytes = 10 * 2**20

    def src(i: int) -> Workspace:
        return Workspace(
            key=f"ws:upload-{i}", title="t", classes=("a", "b"), labels=np.zeros(1, np.int64),
            shape=(1, 1, 1), description="", read=lambda j: np.zeros((1, 1, 1)),
        )  # fmt: skip

    for i in range(6):
        store.add(src(i), 4 * 2**20)
        assert store.bytes <= 10 * 2**20
    assert store.get("ws:upload-5") is not None and store.get("ws:upload-0") is None
    with pytest.raises(sources.WorkspaceError, match="at most 10 MB of uploaded workspaces"):
        store.add(src(9), 11 * 2**20)


# --- --no-uploads on every page -----------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES)
def test_no_uploads_means_no_uploader_on_any_page(page, monkeypatch):
    monkeypatch.setenv("SALIENCY_UPLOADS", "off")
    at = AppTest.from_file(APP, default_timeout=180)
    # links that ask for the upload modes of Explore and Tables
    at.query_params["source"] = "upload"
    at.query_params["t_source"] = "upload"
    at.run()
    at.switch_page(f"page_files/{page}.py").run()
    if page == "photos":  # Explore on the ImageNet workspace, past its weights' choice
        at.switch_page("page_files/explore.py").run()
        if at.get("checkbox") and at.checkbox(key="random_weights"):
            at.checkbox(key="random_weights").check().run()
        assert any("Uploading images is turned off" in i.value for i in at.info)
    assert not at.exception, [e.value for e in at.exception]
    assert not at.get("file_uploader"), f"{page} offers an upload on a --no-uploads server"
    if page == "tables":
        assert at.radio(key="t_source").options == ["Bundled example: diabetes (442 patients, 10 "
            "features in their own units) and a net that standardises inside forward and returns "
            "(y, y_scaled)"]  # fmt: skip
        assert any("turned off" in i.value for i in at.info)


# --- CSVs and names -------------------------------------------------------------------------------

FORMULAS = ["=1+1", "+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1", '=HYPERLINK("http://x","y")']


def test_every_formula_is_neutralised_and_reads_back():
    rows = [["name", "value"], *[[f, 1.5] for f in FORMULAS], ["'quoted", -2.0], ["plain", 3]]
    parsed = list(csv.reader(io.StringIO(text.csv_text(rows))))
    for (name, _), (cell, _) in zip(rows[1:], parsed[1:], strict=True):
        assert not cell.startswith(text.FORMULA_STARTS), cell
        assert text.from_csv_cell(cell) == name
    assert parsed[-2][1] == "-2.0" and parsed[-1] == ["plain", "3"]  # numbers stay numbers


def test_the_ranking_csv_neutralises_column_names():
    import torch

    import saliency
    from dashboard.views import tables as view

    X = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    net = torch.nn.Linear(3, 1)
    names = ["=cmd|' /C calc'!A0", "+x", "age"]
    raw = saliency.feature_ranking(net, X, feature_names=names)
    scaled = saliency.feature_ranking(net, X, feature_names=names, scale="std")
    parsed = list(csv.reader(io.StringIO(view._ranking_csv(raw, scaled))))
    assert parsed[0][0] == "feature"
    assert sorted(row[0] for row in parsed[1:]) == sorted(["'" + names[0], "'+x", "age"])


def test_names_show_as_plain_text_without_direction_overrides():
    from dashboard import render

    name = "![t](http://127.0.0.1:9/x.png) \u202egnp.exe **bold** $x$"
    md = render.plain(name)
    assert "\u202e" not in md and "\u202e" not in render.class_label(0, (name,))
    assert "![t]" not in md and "\\[t\\]" in md and "\\*\\*bold\\*\\*" in md and "\\$x\\$" in md
    assert render.class_md(0, (name, "b")) == render.plain(render.class_label(0, (name, "b")))
    assert text.clean("a\u2066b\u2069c\x00\x1bd\ne") == "abcd e"


def test_tables_read_are_kept_within_the_tables_share(monkeypatch):
    """Each CSV read is kept by its columns' bytes in the "tables" share, beside the results
    computed on it: eight 1 MB-ish tables in a 4 MB share keep at most 4 MB."""
    from dashboard import table_cache

    monkeypatch.setitem(lru._STORES, "tables", BytesLRU(4 * 2**20))
    rng = np.random.default_rng(0)
    for seed in range(8):
        X = rng.normal(size=(20_000, 5)) + seed
        data = ("a,b,c,d,e\n" + "\n".join(",".join(f"{v:.3f}" for v in row) for row in X)).encode()
        table = table_cache.read_table(table_cache.sha(data), data)
        assert table.n_rows == 20_000
        assert table_cache.read_table(table_cache.sha(data), data) is table  # kept: read once
        assert 0 < lru._STORES["tables"].bytes <= 4 * 2**20
    assert len(lru._STORES["tables"].keys()) < 8  # the oldest went


def test_single_flight_holds_across_processes(tmp_path):
    """`cache.single_flight`: while one process computes a key, another process's flight for
    the same key waits (the lock file, filelock's); a different key doesn't."""
    import subprocess
    import sys
    import time

    from dashboard import cache

    code = (
        "import sys, time\n"
        "from dashboard import cache\n"
        "print('ready', flush=True)\n"
        "t0 = time.monotonic()\n"
        "with cache.single_flight(sys.argv[1]):\n"
        "    print(round(time.monotonic() - t0, 2), flush=True)\n"
    )

    def start(key: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", code, key], stdout=subprocess.PIPE,
                                text=True, cwd=ROOT)  # fmt: skip
        assert proc.stdout.readline().strip() == "ready"
        return proc

    key = str(tmp_path / "answer.npz")
    with cache.single_flight(key):
        same, other = start(key), start(str(tmp_path / "other.npz"))
        assert float(other.communicate(timeout=120)[0]) < 1.0  # another key: not held
        time.sleep(1.0)
        assert same.poll() is None  # the same key: still waiting
    assert float(same.communicate(timeout=120)[0]) >= 1.0
