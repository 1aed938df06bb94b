"""The dashboard driven through Streamlit's AppTest, by widget keys (no browser)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

import pretrained  # noqa: E402
import saliency  # noqa: E402
import sandbox.jobs  # noqa: E402
from saliency.metrics import spearman  # noqa: E402
from sandbox.images import decode_image28, encode_image  # noqa: E402

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")


def run_app(**params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [s.value for s in at.subheader]
    parts += [c.value for c in at.caption] + [w.value for w in at.warning]
    parts += [i.value for i in at.info] + [e.value for e in at.error]
    parts += [img.caption for el in at.get("image") for img in el.proto.imgs]
    return "\n".join(str(p) for p in parts)


def png(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def default_app() -> AppTest:
    return run_app()


def test_default_view_is_mnist_cnn_on_test_image_0(default_app):
    at = default_app
    ds = pretrained.load_dataset("mnist")
    model = pretrained.load_model("mnist-cnn")
    with torch.no_grad():
        probs = model(ds.images[:1]).softmax(1)[0]
    pred = int(probs.argmax())
    assert at.selectbox(key="dataset").value == "mnist"
    assert at.selectbox(key="model").value == "mnist-cnn"
    assert at.number_input(key="index").value == 0
    heading = at.subheader[0].value
    assert f"mnist-cnn says **{pred}** ({float(probs[pred]):.1%})" in heading
    assert f"true class {int(ds.labels[0])}" in heading
    assert "Vanilla gradient" in texts(at)
    # image, map, its colour bar, overlay, contrast map and its bar; the grid's 10 maps are
    # one element (one message a rerun)
    assert len(at.get("image")) == 7
    assert sum(len(el.proto.imgs) for el in at.get("image")) == 16
    assert dict(at.query_params) == {}


def test_every_map_control_by_key_and_url_follows():
    at = run_app()
    at.selectbox(key="target").select("3").run()
    # The sidebar's other map controls rerun only the explanation fragment (st.rerun(key) from
    # their callback); AppTest then holds just that fragment's elements until the next run.
    for widget in (
        lambda: at.selectbox(key="method").select("smoothgrad"),
        lambda: at.radio(key="score").set_value("log_probability"),
        lambda: at.radio(key="sign").set_value("signed"),
        lambda: at.radio(key="scale").set_value("shared"),
        lambda: at.slider(key="clip").set_value(95.0),
        lambda: at.slider(key="alpha").set_value(0.8),
        lambda: at.selectbox(key="cmap").select("viridis"),
        lambda: at.selectbox(key="cmap_signed").select("coolwarm"),
    ):
        widget().run()
        assert not at.exception, [e.value for e in at.exception]
        assert "Showing" in texts(at)  # the explanation followed
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    q = {k: at.query_params[k] for k in at.query_params}
    assert q == {
        "target": "3",
        "method": "smoothgrad",
        "score": "log_probability",
        "sign": "signed",
        "scale": "shared",
        "clip": "95.0",
        "alpha": "0.8",
        "cmap": "viridis",
        "cmap_signed": "coolwarm",
    }
    page = texts(at)
    assert "SmoothGrad" in page and "∂ log p[3] / ∂x" in page
    assert "signed (diverging colours" in page and "shared by every map on screen" in page
    assert "clipped at the 95th percentile" in page and "colour map coolwarm" in page

    # The same link opens the same view in a new session.
    again = run_app(**q)
    for key in ("target", "method", "cmap", "cmap_signed"):
        assert again.selectbox(key=key).value == at.selectbox(key=key).value
    for key in ("score", "sign", "scale"):
        assert again.radio(key=key).value == at.radio(key=key).value
    assert again.slider(key="clip").value == 95.0 and again.slider(key="alpha").value == 0.8
    assert again.subheader[0].value == at.subheader[0].value


@pytest.mark.parametrize("method", saliency.METHODS)
def test_every_method_renders(method):
    at = run_app(method=method, index="7")
    page = texts(at)
    assert "Showing" in page
    if method == "integrated_gradients":
        assert "Completeness: sum(map)" in page


def test_image_navigation_and_filters():
    at = run_app()
    ds = pretrained.load_dataset("mnist")
    labels = ds.labels.numpy()
    at.selectbox(key="true_class").select("4").run()
    at.button(key="next").click().run()
    first_four = int(np.flatnonzero(labels == 4)[0])
    assert at.number_input(key="index").value == first_four
    at.button(key="next").click().run()
    assert at.number_input(key="index").value == int(np.flatnonzero(labels == 4)[1])
    at.button(key="previous").click().run()
    assert at.number_input(key="index").value == first_four
    at.button(key="random").click().run()
    assert labels[at.number_input(key="index").value] == 4
    # Only the images the CNN gets wrong.
    at.radio(key="correctness").set_value("wrong").run()
    model = pretrained.load_model("mnist-cnn")
    with torch.no_grad():
        pred = torch.cat([model(x).argmax(1) for x, _ in ds.batches(1000)]).numpy()
    wrong_fours = np.flatnonzero((labels == 4) & (pred != 4))
    assert f"{len(wrong_fours):,} of 10,000 test images match" in texts(at)
    at.button(key="next").click().run()
    assert at.number_input(key="index").value in set(wrong_fours.tolist())
    assert "✗ wrong" in at.subheader[0].value
    at.number_input(key="index").set_value(3).run()
    assert at.query_params["index"] == "3"


def test_dataset_switch_resets_model_and_compare():
    at = run_app(compare="mnist-linear,mnist-mlp")
    assert at.multiselect(key="compare").value == ["mnist-linear", "mnist-mlp"]
    assert "mnist-linear (" in texts(at)
    at.selectbox(key="dataset").select("fashion-mnist").run()
    assert not at.exception
    assert at.selectbox(key="model").value == "fashion-mnist-cnn"
    assert at.multiselect(key="compare").value == []
    assert at.selectbox(key="model").options == [
        f"{m} ({pretrained.model_info(m).test_accuracy:.2%})"
        for m in pretrained.list_models("fashion-mnist")
    ]
    at.selectbox(key="model").select("fashion-mnist-mlp").run()
    assert "fashion-mnist-mlp says" in at.subheader[0].value
    assert at.query_params["model"] == "fashion-mnist-mlp"


def test_bad_url_values_are_reported_and_ignored():
    at = run_app(model="no-such-model", method="gradcam", index="-3", clip="abc")
    page = texts(at)
    for key in ("model", "method", "index", "clip"):
        assert f"`{key}=" in page
    assert at.selectbox(key="model").value == "mnist-cnn"
    assert at.selectbox(key="method").value == "gradient"


def test_target_matters_message_agrees_with_rank_correlation():
    # The message appears exactly when the two maps' Spearman correlation is >= 0.9.
    ds = pretrained.load_dataset("mnist")
    for name in ("mnist-linear", "mnist-cnn"):
        model = pretrained.load_model(name)
        x = ds.images[:1]
        maps = saliency.jacobian(model, x)[0, :, 0].abs().numpy()  # (10, 28, 28)
        pred = int(model(x).argmax())
        at = run_app(model=name, target="2")
        rho = spearman(maps[2], maps[pred])
        shown = "The target hardly matters here" in texts(at)
        assert shown == (rho >= 0.9), (name, rho)


def test_upload_then_bad_uploads_keep_the_image():
    at = run_app(source="upload")
    assert "No image yet" in texts(at)
    digit = pretrained.load_dataset("mnist").images[0, 0].numpy()
    big = np.kron(255 - np.round(digit * 255).astype(np.uint8), np.ones((8, 8), np.uint8))
    at.file_uploader(key="upload_file").set_value(("seven.png", png(big), "image/png")).run()
    assert not at.exception and not at.error
    assert "your upload" in texts(at)
    assert "Your image, as uploaded" in texts(at) and "centred by mass in 28 × 28" in texts(at)
    shared = at.query_params["image"]
    seen = decode_image28(shared)
    assert seen.shape == (28, 28) and np.corrcoef(seen.ravel(), digit.ravel())[0, 1] > 0.8
    for name, data in [
        ("notes.txt", b"hello, this is not an image"),
        ("broken.png", png(big)[:200]),
        ("empty.png", b""),
    ]:
        at.file_uploader(key="upload_file").set_value((name, data, "image/png")).run()
        assert not at.exception
        assert at.error and name in at.error[0].value, name
        assert "The image shown below is the one you had before" in at.error[0].value
        assert at.query_params["image"] == shared  # the previous image is still shown
        assert "your upload" in texts(at)


def test_shared_link_carries_a_drawn_image():
    img = np.zeros((28, 28), np.float32)
    img[6:22, 12:16] = 1.0  # a "1"
    at = run_app(source="draw", image=encode_image(img))
    assert "your drawing" in texts(at)
    model = pretrained.load_model("mnist-cnn")
    with torch.no_grad():
        pred = int(model(torch.from_numpy(decode_image28(encode_image(img)))[None, None]).argmax())
    assert f"mnist-cnn says **{pred}**" in at.subheader[0].value


def test_saturation_note_for_probability_maps():
    at = run_app(score="probability")  # test image 0 is a confident 7
    assert "The softmax is saturated" in texts(at)
    assert "The softmax is saturated" not in texts(run_app(score="logit"))


def test_downloads_exist():
    at = run_app()
    keys = {b.proto.id for b in at.get("download_button")}
    assert len(keys) == 4  # PNG, .npy, JSON and the report (tests/dashboard/test_report.py)
    labels = {b.proto.label for b in at.get("download_button")}
    assert {"Map as PNG", "Raw map as .npy", "Settings as JSON"} <= labels


def test_app_start_does_not_import_torchvision():
    # torchvision takes seconds to import; only the Photos page needs it.
    import subprocess
    import sys

    code = "import sys, pretrained, dashboard.cache; print('torchvision' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def panel_payload(at: AppTest) -> tuple[dict, dict]:
    """What the Explore panel (a custom component: AppTest can't draw it) was sent this run."""
    from dashboard.components import saliency_panel

    (element,) = at.get("bidi_component")
    assert element.proto.component_name == "saliency_panel"
    return saliency_panel.unpack(element.proto.bytes)


def test_the_first_run_waits_for_the_panel_before_the_servers_own_pictures(monkeypatch):
    """By default a first run sends the panel alone. The server draws its own pictures once
    the wait has passed with no word from the panel, or at once when the panel reports that
    it failed; never once it reported that it drew."""
    monkeypatch.setenv("SALIENCY_PANEL_WAIT_S", "3")
    at = run_app()
    data, _ = panel_payload(at)
    assert (data["fallback"], data["alive"]) == (False, False)  # the panel is to say it drew
    assert at.get("image") == [] and "Map: " not in texts(at)
    at.run()  # a rerun within the wait (another click): still the panel alone
    assert panel_payload(at)[0]["fallback"] is False and at.get("image") == []

    since = at.session_state["explore_panel_waiting_since"]
    at.session_state["explore_panel_waiting_since"] = since - 3.01  # the wait is over
    at.run()
    assert panel_payload(at)[0]["fallback"] is True
    captions = [img.caption for el in at.get("image") for img in el.proto.imgs]
    assert any(c.startswith("Map: ") for c in captions) and len(at.get("image")) == 7

    at.session_state["explore_panel"] = {"alive": True}  # the panel drew, late
    at.run()
    data, _ = panel_payload(at)
    assert (data["fallback"], data["alive"]) == (False, True) and at.get("image") == []
    assert "explore_panel_waiting_since" not in at.session_state

    fresh = run_app()
    fresh.session_state["explore_panel"] = {"alive": False}  # failed on its first draw
    fresh.run()
    data, _ = panel_payload(fresh)
    assert (data["fallback"], data["alive"]) == (True, False) and len(fresh.get("image")) == 7


def _map_control_keys(at: AppTest) -> set[str]:
    return {w.key for kind in ("selectbox", "slider", "radio") for w in at.get(kind)}


def test_the_panel_draws_its_own_switches_and_the_sidebar_only_in_the_fallback(monkeypatch):
    """The target class and colours are the panel's own switches (their labels, options and
    values in its payload); the sidebar draws them only when the server draws its pictures."""
    from saliency.display import DIVERGING_CMAPS, SEQUENTIAL_CMAPS

    monkeypatch.setenv("SALIENCY_PANEL_WAIT_S", "3")
    own = {"target", "sign", "scale", "clip", "alpha", "cmap", "cmap_signed"}
    at = run_app(target="3", cmap="viridis")
    at.session_state["explore_panel"] = {"alive": True}  # the panel drew
    at.run()
    data, _ = panel_payload(at)
    assert data["own_controls"] and not data["fallback"]
    assert (data["target_choice"], data["cmap"]) == ("3", "viridis")
    assert data["target_choices"][:3] == [
        ["predicted", "the predicted class"],
        ["true", "the true class"],
        ["0", "0"],
    ]
    assert len(data["target_choices"]) == 12
    c = data["controls"]
    assert (c["cmaps"], c["cmaps_signed"]) == (list(SEQUENTIAL_CMAPS), list(DIVERGING_CMAPS))
    assert (c["target"], c["cmap"], c["alpha"]) == ("Target class", "Colour map", "Overlay alpha")
    keys = _map_control_keys(at)
    assert not keys & own and {"method", "score"} <= keys

    at.session_state["explore_panel"] = {"alive": False}  # it failed: the server draws
    at.run()
    assert panel_payload(at)[0]["fallback"] is True
    assert own <= _map_control_keys(at)
    assert at.selectbox(key="target").value == "3" and at.selectbox(key="cmap").value == "viridis"


def test_the_panels_settings_are_checked_as_a_links_values():
    """What the panel reports (its state "settings") reaches the view only as values a link
    may hold; anything else is left out."""
    from dashboard.views.explore import panel_settings

    assert panel_settings(
        {"cmap": "viridis", "cmap_signed": "PiYG", "alpha": 0.55, "clip": 98.5, "scale": "shared",
         "sign": "signed"}
    ) == {"cmap": "viridis", "cmap_signed": "PiYG", "alpha": 0.55, "clip": 98.5,
          "scale": "shared", "sign": "signed"}  # fmt: skip
    bad = {"cmap": "nope", "cmap_signed": 3, "alpha": 1.5, "clip": float("nan"), "scale": True,
           "sign": None, "target": "3", "method": "smoothgrad"}  # fmt: skip
    assert panel_settings(bad) == {}
    assert panel_settings({"alpha": 1, "clip": "95"}) == {"alpha": 1.0, "clip": 95.0}
    assert panel_settings(None) == panel_settings(["cmap"]) == {}


def test_the_wait_for_the_panel_is_read_from_the_environment(monkeypatch):
    from dashboard.components.saliency_panel import WAIT_ENV, wait_s

    for value, seconds in [("0", 0.0), ("1.5", 1.5), ("-1", 3.0), ("nan", 3.0), ("inf", 3.0),
                           ("soon", 3.0), ("7200", 3.0)]:  # fmt: skip
        monkeypatch.setenv(WAIT_ENV, value)
        assert wait_s() == seconds, value
    monkeypatch.delenv(WAIT_ENV)
    assert wait_s() == 3.0


def test_panel_gets_the_maps_once_and_then_settings_only():
    at = run_app()
    data, arrays = panel_payload(at)
    model = pretrained.load_model("mnist-cnn")
    x = pretrained.load_dataset("mnist").images[:1]
    with torch.no_grad():
        pred = int(model(x).argmax())
    # The signed Jacobian, as the server computes it: the panel shows its absolute values.
    signed = sandbox.jobs.run(
        "class_maps", model, x.numpy(), method="gradient", score="logit", absolute=False
    )[0][:, 0]
    # (the default view's maps are the stored first answers, computed on another CPU: equal to
    # float32 rounding, as tests/dashboard/test_first_answers.py checks them)
    np.testing.assert_allclose(arrays["maps"], signed, rtol=1e-5, atol=1e-6)
    assert arrays["maps"].dtype == np.float32 and data["absolute_of_signed"] is True
    assert (data["target"], data["pred"], data["true"]) == (pred, pred, 7)
    assert (data["fallback"], data["alive"]) == (True, False)  # no wait here: see conftest.py
    assert data["classes"] == data["grid"] == list(range(10))
    assert [k for k, _ in data["bars"]] == list(range(10))
    assert arrays["rgb"].shape == (28, 28, 3) and arrays["rgb"].dtype == np.uint8
    assert data["contrast_from_maps"] is True and "contrast" not in arrays
    for name in saliency.display.SEQUENTIAL_CMAPS + saliency.display.DIVERGING_CMAPS:
        table = saliency.display.colorize(np.arange(256) / 255, name)
        np.testing.assert_array_equal(arrays[f"lut:{name}"], table)
    assert (data["sign_local"], data["scale_local"], data["cmap"]) == (True, True, "inferno")
    assert data["export"]["before"] == "mnist-cnn_test_image__0_class"
    assert data["export"]["json"]["settings"]["model"] == "mnist-cnn"
    maps_id = data["arrays"]["maps"]["id"]

    # A new target, a signed view, another colour map: the same maps, not sent again.
    at.selectbox(key="target").select("3").run()
    at.radio(key="sign").set_value("signed").run()
    data, arrays = panel_payload(at)
    assert data["target"] == 3 and data["signed"] is True and data["absolute_of_signed"] is False
    assert data["arrays"]["maps"]["id"] == maps_id and "maps" not in arrays
    assert arrays == {}  # the colour tables, every one, went with the first run
    at.run()
    at.selectbox(key="cmap_signed").select("PiYG").run()
    data, arrays = panel_payload(at)
    assert data["cmap_signed"] == "PiYG" and data["sign"] == "signed"
    assert data["arrays"]["maps"]["id"] == maps_id and arrays == {}

    # Another method needs other maps: they are sent, with a contrast the server computed.
    at.run()
    at.selectbox(key="method").select("smoothgrad").run()
    data, arrays = panel_payload(at)
    assert data["arrays"]["maps"]["id"] != maps_id and arrays["maps"].shape == (10, 28, 28)
    assert data["contrast_from_maps"] is False and arrays["contrast"].shape == (28, 28)
    assert (data["contrast_target"], data["contrast_versus"]) == (3, pred)


def test_misclassifications_and_photos_choices_are_in_the_url():
    """Every choice of the Misclassifications and Photos pages is in the URL (issue 31): a
    link opens them as chosen, and a change is written back; the names the URL may hold are
    the pages' own. Photos is Explore on the ImageNet workspace: Explore's own fields."""
    from dashboard import state
    from dashboard.views import mistakes

    assert mistakes.KINDS == state.MIS_KINDS

    at = run_app(mis_kind="all", mis_page="2", model="mnist-mlp")
    at.switch_page("page_files/mistakes.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.radio(key="mis_kind").value == "all" and at.number_input(key="mis_page").value == 2
    shown = at.selectbox(key="mis_index").value
    at.radio(key="mis_kind").set_value("cell").run()
    q = {k: at.query_params[k] for k in at.query_params}
    q = {k: v[0] if isinstance(v, list) else v for k, v in q.items()}
    assert "mis_kind" not in q  # "cell", the default, is not written
    true, pred = at.selectbox(key="mis_true").value, at.selectbox(key="mis_pred").value
    assert (q["mis_true"], q["mis_pred"]) == (str(true), str(pred))  # the most frequent confusion
    again = run_app(**q)
    again.switch_page("page_files/mistakes.py").run()
    assert (again.selectbox(key="mis_true").value, again.selectbox(key="mis_pred").value) == (
        true, pred)  # fmt: skip
    assert shown is not None

    from dashboard import sources

    mobilenet = sources.photo_models()[1]  # with random weights offline
    at = run_app(dataset="photos:imagenet", model=mobilenet, method="vargrad",
                 random_weights="true")  # fmt: skip
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="dataset").value == "photos:imagenet"
    assert at.selectbox(key="model").value == mobilenet
    assert at.checkbox(key="random_weights").value or mobilenet.endswith("/pretrained")
    assert at.selectbox(key="method").value == "vargrad"  # every Explore method, here too
    at.selectbox(key="method").set_value("grad_cam").run()
    assert at.query_params["method"] in ("grad_cam", ["grad_cam"])  # (AppTest's list form)
    assert at.query_params["model"] in (mobilenet, [mobilenet])
