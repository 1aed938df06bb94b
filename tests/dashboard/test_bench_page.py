"""The "Which map can I trust?" page and the Classroom's lesson on it (issue 33): for a registry
model, a command-line workspace's model and an uploaded model, the table the page shows is
`saliency.bench`'s on the same images, computed here from the same model; a cell opens its
images, and an image opens in Explore; a method the model can't be explained by is left out
with its reason; one bench runs at a time; a table is saved and read back."""

from __future__ import annotations

from pathlib import Path

import hostile
import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest
from test_every_view import SmallCNN

import pretrained
import saliency
from dashboard import bench_cache, budget, cache, lru, sources, state
from dashboard.views import bench as bench_view
from saliency import bench
from workspace.opened import Workspace

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")
METHODS = ("gradient", "input_x_gradient")
METRICS = ("sparseness", "deletion_auc", "road_morf")


@pytest.fixture(scope="module", autouse=True)
def own_cache(tmp_path_factory):
    """One disk cache for the module: a bench computed by one test is read by the next (as a
    later visitor reads it), which the registry tests rely on to compute it once."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SALIENCY_CACHE_DIR", str(tmp_path_factory.mktemp("bench-cache")))
    yield
    mp.undo()


@pytest.fixture(autouse=True)
def empty_caches():
    for share in budget.SHARES:
        lru.store(share).clear()


def bench_page(**params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    query = {"b_methods": ",".join(METHODS), "b_metrics": ",".join(METRICS), "b_per_class": "1"}
    for key, value in (query | params).items():
        at.query_params[key] = value
    at.run()
    at.switch_page("page_files/bench.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def computed(at: AppTest) -> AppTest:
    at.button(key="bench_compute").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def library_values(f, src: Workspace, metrics=METRICS) -> dict:
    """The library's per-image values on the page's images (the first of each class), their
    predicted classes as targets, each image's draws seeded by its index: the reference."""
    idx = bench_cache.chosen_images(src.labels, len(src.classes), 1)
    x = torch.as_tensor(np.stack([src.image(int(i)) for i in idx]))
    with torch.no_grad():
        t = f(x).argmax(1)
    return bench.score(f, x, t, methods=METHODS, metrics=metrics, indices=idx.tolist())


def check_table(at: AppTest, req: bench_cache.Request, expected: dict, metrics=METRICS) -> None:
    result, note = bench_cache.stored(req)
    assert note is None and result is not None
    for key, want in expected.items():
        np.testing.assert_allclose(result.table.values[key], want, rtol=1e-5, atol=1e-7)
    shown = at.dataframe[0].value
    assert list(shown[""]) == ["Gradient", "Input × Gradient", *bench_view.CONTROL_LABELS.values()]
    for r, row in enumerate((*METHODS, *bench.CONTROLS)):
        for metric in metrics:
            s = result.table.score(row, metric)
            assert shown[bench_view.column(metric)][r].startswith(f"{s.mean:.3g} [{s.low:.3g}")


def test_the_states_bench_names_are_the_librarys():
    assert state.BENCH_METRICS == bench.METRICS
    assert set(state.BENCH_METHODS) <= set(saliency.METHOD_INFO)
    assert set(bench_view.METRIC_LABELS) == set(bench.METRICS) == set(bench_view.METRIC_HELP)


def test_a_registry_models_table_is_the_librarys_and_is_saved_for_the_next_visitor():
    at = bench_page(dataset="mnist", model="mnist-cnn")
    assert "Not computed yet: 2 methods and 3 controls on 10 images" in at.info[0].value
    computed(at)
    req = bench_cache.Request("mnist-cnn", "mnist", 1, METHODS, METRICS)
    model = pretrained.load_model("mnist-cnn", "cpu")
    check_table(at, req, library_values(model, sources.source("mnist")))
    assert bench_cache.path(req).is_file()
    lost = " ".join(e.value for e in at.error)  # a method beaten by a control is said plainly
    expected = bench_view.losses(bench_cache.stored(req)[0].table)
    assert expected and all(line in lost for line in expected)
    assert at.get("vega_lite_chart"), "the agreement matrix is drawn"
    spec = bench_view.agreement_chart(bench_cache.stored(req)[0].table)
    # A row per metric (a numeric height collapsed the matrix's rows to nothing in Chromium),
    # each metric against each, the diagonal 1.
    assert spec["height"] == {"step": 28} and spec["encoding"]["y"]["field"] == "a"
    cells = {(v["a"], v["b"]): v["tau"] for v in spec["data"]["values"]}
    labels = [bench_view.METRIC_LABELS[m] for m in METRICS]
    assert len(cells) == len(labels) ** 2 and all(cells[m, m] == 1.0 for m in labels)
    again = bench_page(dataset="mnist", model="mnist-cnn")  # another visitor: read, not computed
    assert any("saved for every visitor" in c.value for c in again.caption)
    assert not any(b.key == "bench_compute" for b in again.button)


def test_a_cell_shows_its_images_and_one_opens_in_explore():
    at = bench_page(dataset="mnist", model="mnist-cnn")  # saved by the test above
    if any(b.key == "bench_compute" for b in at.button):
        computed(at)
    at.session_state["bench_table"] = {
        "selection": {"rows": [], "columns": [], "cells": [[1, bench_view.column("road_morf")]]}
    }
    at.run()
    assert any("Input × Gradient · ROAD (MoRF)" in m.value for m in at.markdown)
    images = at.dataframe[1].value
    assert len(images) == 10 and list(images["value"]) == sorted(images["value"], reverse=True)
    worst = int(images["image"][0])  # ROAD MoRF: lower is better, so the worst is the highest
    at.session_state["bench_cell_images"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    at.run()
    at.button(key="bench_cell_open").click().run()
    assert not at.exception
    assert at.session_state["view"]["index"] == worst
    assert at.session_state["view"]["method"] == "input_x_gradient"
    assert at.title[0].value != "Which map can I trust?"  # on Explore now


def test_a_method_the_model_cant_use_is_left_out_with_the_librarys_reason():
    at = bench_page(
        dataset="mnist", model="mnist-mlp", b_methods="gradient,grad_cam", b_metrics="sparseness"
    )
    computed(at)
    warned = " ".join(w.value for w in at.warning)
    assert "Grad-CAM left out" in warned and "no spatial layer" in warned
    assert list(at.dataframe[0].value[""])[:1] == ["Gradient"]
    assert any("Not computable: the agreement" in i.value for i in at.info)  # one method left


def test_one_bench_at_a_time_the_second_is_told_the_firsts_progress():
    req = bench_cache.Request("mnist-cnn", "mnist", 1, ("gradient",), ("sparseness",))
    assert bench_cache._ONE.acquire(blocking=False)
    try:
        bench_cache._running["progress"] = "Another bench is running on this server (3 of 9"
        with pytest.raises(bench_cache.Busy, match="3 of 9"):
            bench_cache.compute(req)
        at = bench_page(
            dataset="mnist", model="mnist-cnn", b_methods="gradient", b_metrics="sparseness"
        )
        at.button(key="bench_compute").click().run()
        assert any("3 of 9" in w.value for w in at.warning) and not at.exception
    finally:
        bench_cache._running.pop("progress", None)
        bench_cache._ONE.release()


def test_a_damaged_saved_table_is_said_and_computed_again():
    req = bench_cache.Request("mnist-cnn", "mnist", 1, ("gradient",), ("complexity",))
    file = bench_cache.path(req)
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_bytes(b"not a table")
    result, note = bench_cache.stored(req)
    assert result is None and "unreadable" in note
    assert bench_cache.compute(req).table.methods == ("gradient",)


def test_images_are_bounded_whatever_the_classes():
    labels = np.repeat(np.arange(1000), 3)
    picked = bench_cache.chosen_images(labels, 1000, 2)
    assert len(picked) == bench_cache.MAX_IMAGES and list(picked[:4]) == [0, 1, 3, 4]


def test_the_lesson_reads_the_bench_and_says_how_to_read_it(monkeypatch):
    from dashboard.views import classroom_checks

    monkeypatch.setattr(classroom_checks, "TRUST_METHODS", ("gradient", "grad_cam"))  # short
    monkeypatch.setattr(classroom_checks, "TRUST_METRICS", ("sparseness", "deletion_auc"))
    at = AppTest.from_file(APP, default_timeout=300)
    at.query_params["lesson"] = "trust"
    at.query_params["model"] = "mnist-mlp"
    at.run()
    at.switch_page("page_files/classroom.py").run()
    assert at.header[0].value == "8 · Which map can I trust?" and at.latex
    at.button(key="trust_compute").click().run()
    assert not at.exception, [e.value for e in at.exception]
    shown = at.dataframe[0].value
    assert "Grad-CAM" not in list(shown[""])  # an MLP: left out, with the reason
    assert any("Grad-CAM left out" in w.value for w in at.warning)
    assert any("What to notice" in i.value for i in at.info)


# --- every kind of model ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    import os

    from workspaces import rgb_workspace

    tmp = tmp_path_factory.mktemp("bench-ws")
    folder = rgb_workspace(tmp, per_class=4)
    before = os.environ.get("SALIENCY_WORKSPACES")
    os.environ["SALIENCY_WORKSPACES"] = str(folder)
    ep = torch.export.load(str(tmp / "tiny.pt2")).module()
    yield folder, lambda x: ep((x - 0.5) / 0.25)  # the workspace standardises inside
    if before is None:
        os.environ.pop("SALIENCY_WORKSPACES", None)
    else:
        os.environ["SALIENCY_WORKSPACES"] = before


def test_a_workspaces_table_is_the_librarys(workspace):
    folder, f = workspace
    key = f"ws:{folder.name}"
    few = ("sparseness", "deletion_auc")  # ROAD's imputation on 64 × 64 RGB: the registry's test
    at = computed(bench_page(dataset=key, model=key, b_metrics=",".join(few)))
    req = bench_cache.Request(key, key, 1, METHODS, few)
    check_table(at, req, library_values(f, sources.source(key), few), few)


@hostile.needs_sandbox
def test_an_uploaded_models_table_is_the_librarys_computed_in_its_worker(monkeypatch):
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page("page_files/your_model.py").run()
    data = hostile.scripted(SmallCNN().eval())
    at.file_uploader(key="um_file").set_value(("mine.pt", data, "application/octet-stream"))
    at.button(key="um_submit").click().run()
    assert not at.exception, [e.value for e in at.exception]
    name = at.session_state["um_accepted"]
    token = at.query_params["mine"]
    token = token[0] if isinstance(token, list) else token
    calls = []
    real = cache.run

    def run(model, job, x, **kwargs):
        calls.append((model, job))
        return real(model, job, x, **kwargs)

    monkeypatch.setattr(cache, "run", run)
    page = computed(bench_page(dataset="mnist", model=name, mine=token))
    assert (name, "bench_scores") in calls  # in the upload's worker, through cache.run
    req = bench_cache.Request(name, "mnist", 1, METHODS, METRICS)
    check_table(page, req, library_values(SmallCNN().eval(), sources.source("mnist")))
