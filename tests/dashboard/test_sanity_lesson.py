"""The Classroom's sanity lesson with the field's methods (issue 32): Guided Backprop, Guided
Grad-CAM, Grad-CAM and LRP beside the four pixel-gradient methods, Adebayo et al.'s finding
beside the numbers measured live, which are `saliency.sanity_check`'s on the same model and
images; a method that can't explain the model says the library's reason and the rest show."""

from __future__ import annotations

from pathlib import Path

import hostile
import numpy as np
import pytest
import torch

import pretrained
import saliency
from dashboard import classroom_cache
from dashboard.views import classroom

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")
METHODS = (
    "gradient",
    "smoothgrad",
    "integrated_gradients",
    "input_x_gradient",
    "guided_backprop",
    "guided_grad_cam",
    "grad_cam",
    "lrp",
)


def sanity_lesson(model: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    at.query_params["model"] = model
    at.query_params["lesson"] = "sanity"
    at.run()
    at.switch_page("page_files/classroom.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.header[0].value == "5 · Sanity check"
    return at


def shown_table(at: AppTest):
    (table,) = [d.value for d in at.dataframe if "Adebayo et al. 2018" in d.value.columns]
    return table.set_index("method")


def written(rho: torch.Tensor) -> str:
    """ρ as the lesson writes it, from the library's values: mean ± std over the images whose
    maps have a ranking (a flat map's ρ is NaN), and how many were flat."""
    v = rho.numpy()
    ok = v[~np.isnan(v)]
    flat = len(v) - len(ok)
    text = f"{ok.mean():.2f} ± {ok.std():.2f}"
    return text + (f" · {flat} of {len(v)} flat" if flat else "")


def test_the_lesson_shows_sanity_checks_numbers_beside_the_papers_finding():
    at = sanity_lesson("mnist-cnn")
    table = shown_table(at)
    labels = [classroom.SANITY_LABELS[m] for m in METHODS]
    assert list(table.index) == labels
    assert list(table["Adebayo et al. 2018"]) == [classroom.PAPER[m] for m in METHODS]
    assert table.loc["Guided Backprop", "Adebayo et al. 2018"].startswith("nearly unchanged")
    assert table.loc["Grad-CAM", "Adebayo et al. 2018"].startswith("changes")
    assert len(at.get("vega_lite_chart")) == len(METHODS)  # every method applies to a CNN
    assert not at.warning

    # The lesson's images: test image #0 (Explore's default), then #1-#4.
    model = pretrained.load_model("mnist-cnn", device="cpu")
    x = pretrained.load_dataset("mnist", "test").images[:5]
    full = {}
    for method in METHODS:
        options = classroom_cache.SANITY_METHODS[method]
        steps = saliency.sanity_check(model, x, method=method, **options)
        label = classroom.SANITY_LABELS[method]
        assert table.loc[label, "ours: ρ after the top layer"] == written(steps[1].spearman)
        assert table.loc[label, "ours: ρ, all layers random"] == written(steps[-1].spearman)
        full[method] = float(np.nanmean(steps[-1].spearman.numpy()))
        top = float(np.nanmean(steps[1].spearman.numpy()))
        print(f"{method}: rho after the top layer {top:.3f}, all layers random {full[method]:.3f}")
    # The paper's contrast, as measured here (0.37 against 0.19 on this model and images).
    assert full["guided_backprop"] > full["gradient"] + 0.1


def test_a_method_that_cant_explain_the_model_says_why_and_the_others_show():
    at = sanity_lesson("mnist-mlp")
    mlp = pretrained.load_model("mnist-mlp", device="cpu")
    with pytest.raises(ValueError) as err:
        saliency.find_layer(mlp, torch.zeros(1, 1, 28, 28))
    why = str(err.value)
    assert why.startswith("no spatial layer: an MLP has no Grad-CAM")
    warnings = [w.value for w in at.warning]
    assert len(warnings) == 2  # Grad-CAM and Guided Grad-CAM
    for w in warnings:
        assert w.replace("\\", "") == f"Can't explain mnist-mlp: {why}."
    assert len(at.get("vega_lite_chart")) == len(METHODS) - 2
    table = shown_table(at)
    for label in ("Grad-CAM", "Guided Grad-CAM"):
        assert table.loc[label, "ours: ρ, all layers random"] == "doesn't apply"
        assert table.loc[label, "Adebayo et al. 2018"]  # the paper's finding still stated
    for label in ("Guided Backprop", "LRP (ε-z⁺)", "Gradient"):
        assert table.loc[label, "ours: ρ, all layers random"] != "doesn't apply"


@hostile.needs_sandbox
@pytest.mark.slow
def test_an_uploads_refusals_come_from_its_worker_in_the_librarys_words(monkeypatch):
    """A torch.export upload has no layers to hook: the four methods that need them say the
    library's sentence (from the upload's worker, without the worker's framing), and the four
    pixel-gradient methods run there."""
    from test_every_view import SmallCNN, exported

    from sandbox import user_models

    monkeypatch.setattr(user_models, "TEST_IMAGES", 500)  # the accuracy isn't the point here
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page("page_files/your_model.py").run()
    data = exported(SmallCNN().eval())
    at.file_uploader(key="um_file").set_value(("small.pt2", data, "application/octet-stream"))
    at.button(key="um_submit").click().run()
    assert not at.exception, [e.value for e in at.exception]
    token = at.query_params["mine"]
    token = token[0] if isinstance(token, list) else token
    lesson = AppTest.from_file(APP, default_timeout=300)
    params = {"model": at.session_state["um_accepted"], "mine": token, "lesson": "sanity"}
    for key, value in params.items():
        lesson.query_params[key] = value
    lesson.run()
    lesson.switch_page("page_files/classroom.py").run()
    assert not lesson.exception, [e.value for e in lesson.exception]
    warnings = [w.value.replace("\\", "") for w in lesson.warning]
    assert len(warnings) == 4 and not any("failed" in w for w in warnings), warnings
    hooks = "reads a layer through forward hooks, and a torch.export program keeps"
    assert all(w.startswith("Can't explain small.pt2: ") and hooks in w for w in warnings[:3])
    assert warnings[3].startswith("Can't explain small.pt2: lrp has no rule for")
    assert len(lesson.get("vega_lite_chart")) == 4
    table = shown_table(lesson)
    assert (table["ours: ρ, all layers random"] == "doesn't apply").sum() == 4
