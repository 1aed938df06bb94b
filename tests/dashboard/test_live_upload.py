"""Issue 29, item 1 (live part): a live "where does it look?" round on the teacher's uploaded
TorchScript model opens, reveals, and publishes that model's own gradient, as an independent
`torch.autograd` computation on the same file gives it; the reveal's agreement numbers (issue
33) are the library's on that model's maps; the student's page shows the reveal."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("streamlit")
import hostile  # noqa: E402
import torch  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

import pretrained  # noqa: E402
import saliency  # noqa: E402
from dashboard import cache, rate_limits  # noqa: E402
from dashboard.live_store import LiveStore  # noqa: E402
from sandbox import user_models

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")


@pytest.fixture()
def class_db(tmp_path, monkeypatch) -> LiveStore:
    url = f"sqlite:///{tmp_path / 'live.sqlite3'}"
    monkeypatch.setenv("SALIENCY_CLASS_DB", url)
    monkeypatch.setattr(user_models, "TEST_IMAGES", 500)
    cache.live_store.clear()
    rate_limits.clear()
    yield LiveStore(url)
    cache.live_store.clear()
    rate_limits.clear()


def small_cnn() -> torch.nn.Module:
    """A model nobody trained: a conv layer (so the map has structure) and a linear head."""
    torch.manual_seed(29)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.Tanh(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 28 * 28, 10),
    ).eval()


@hostile.needs_sandbox
def test_a_map_round_on_an_uploaded_torchscript_model(class_db):
    data = hostile.scripted(small_cnn())
    teacher = AppTest.from_file(APP, default_timeout=300)
    teacher.run()
    teacher.switch_page("page_files/your_model.py").run()
    teacher.file_uploader(key="um_file").set_value(("tiny-cnn.pt", data, "application/x"))
    teacher.button(key="um_submit").click().run()
    assert not teacher.exception, [e.value for e in teacher.exception]
    name = teacher.session_state["um_accepted"]
    assert name and name.startswith("upload:")
    teacher.switch_page("page_files/live.py").run()
    teacher.button(key="live_start").click().run()
    code = teacher.query_params["room"]
    teacher.selectbox(key="model").set_value(name).run()
    assert teacher.selectbox(key="model").value == name

    student = AppTest.from_file(APP, default_timeout=300)
    student.query_params["room"] = code
    student.switch_page("page_files/live.py")
    student.run()
    student.text_input(key="live_name").input("Ada")
    student.button[0].click().run()
    assert not student.error, [e.body for e in student.error]

    teacher.number_input(key="live_index").set_value(3).run()
    teacher.button(key="live_open").click().run()
    assert not teacher.error, [e.body for e in teacher.error]
    spec = class_db.current_round(code).spec
    assert (spec["model"], spec["index"]) == (name, 3)
    p = np.zeros((28, 28))
    p[6:20, 8:20] = 1.0
    class_db.answer(code, student.query_params["me"], 1, painting=p)
    rng = np.random.default_rng(29)
    for i in range(4):  # four more students, so the class can be read against itself
        q = np.zeros((28, 28))
        r, c = rng.integers(4, 10, 2)
        q[r : r + 14, c : c + 10] = 1.0
        class_db.answer(code, class_db.join(code, f"s{i}"), 1, painting=q)
    teacher.button(key="live_reveal").click().run()
    assert not teacher.exception, [e.value for e in teacher.exception]
    assert not teacher.error, [e.body for e in teacher.error]
    rnd = class_db.current_round(code)
    assert rnd.state == "revealed"

    # The same file, loaded here and differentiated by plain autograd.
    net = torch.jit.load(io.BytesIO(data)).eval()
    x, _ = pretrained.load_dataset("mnist", "test")[3:4]
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(net(x)[0, spec["target"]], x)
    direct = g[0, 0].abs().double().numpy()  # (28, 28)
    np.testing.assert_allclose(
        np.reshape(rnd.result["map"], (28, 28)), direct / direct.max(), atol=1e-4
    )
    captions = [c for im in teacher.get("image") for c in im.captions]
    assert "The class: the mean of 5 paintings" in captions, captions

    # The reveal's agreement numbers (issue 33), read against the upload's own maps.
    def upload_map(index: int) -> np.ndarray:
        xi, _ = pretrained.load_dataset("mnist", "test")[index : index + 1]
        xi = xi.clone().requires_grad_(True)
        (gi,) = torch.autograd.grad(net(xi)[0, spec["target"]], xi)
        return gi[0, 0].abs().double().numpy()

    got = rnd.result["agreement"]
    key = teacher.session_state["live_teachers"][code]
    stored = np.stack([a.painting for a in class_db.answers(code, key, 1)])
    others = np.stack([upload_map(i) for i in rnd.result["null_images"]])
    expect = saliency.class_agreement(stored, direct, others)
    assert got["n"] == 5 and got["ceiling_reason"] is None
    assert got["ceiling"] == pytest.approx(expect.ceiling, abs=1e-12)
    assert got["alignment"] == pytest.approx(expect.alignment, abs=1e-3)
    assert got["null"] == pytest.approx(expect.null.tolist(), abs=1e-3)
    assert (got["dice"], got["iou"]) == pytest.approx((expect.dice, expect.iou), abs=1e-9)
    student.run()
    assert not student.exception, [e.value for e in student.exception]
    assert "Your ρ · your overlap" in [m.label for m in student.metric]
