"""Misclassification galleries and data-set sensitivity: library and views."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import pretrained
import saliency

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")


@pytest.fixture(scope="module")
def mnist():
    return pretrained.load_dataset("mnist")


@pytest.fixture(scope="module")
def cnn_probs(mnist):
    model = pretrained.load_model("mnist-cnn", "cpu")
    with torch.no_grad():
        return torch.cat([model(x).softmax(1) for x, _ in mnist.batches(1000)]).numpy()


def test_confusion_matrix_sums_to_test_set_and_matches_model_card(mnist, cnn_probs):
    labels = mnist.labels.numpy()
    confusion = pretrained.confusion_matrix(labels, cnn_probs.argmax(1))
    assert confusion.sum() == 10_000
    info = pretrained.model_info("mnist-cnn")
    np.testing.assert_array_equal(confusion, np.array(info.confusion_matrix))
    assert np.trace(confusion) / 10_000 == pytest.approx(info.test_accuracy, abs=1e-12)


def test_gallery_of_a_cell_holds_exactly_the_independently_found_images(mnist, cnn_probs):
    labels = mnist.labels.numpy()
    pred = cnn_probs.argmax(1)
    for true, predicted in [(9, 4), (7, 2), (6, 0), (1, 1), (3, 8)]:
        # Independent: a plain loop over the test set.
        expected = [i for i in range(10_000) if labels[i] == true and pred[i] == predicted]
        expected = [i for i in expected if true != predicted]
        expected.sort(key=lambda i: -cnn_probs[i, predicted])
        got = pretrained.mistakes(cnn_probs, labels, true=true, predicted=predicted)
        assert got.tolist() == expected
    every = pretrained.mistakes(cnn_probs, labels)
    assert len(every) == int((pred != labels).sum())
    conf = cnn_probs[every, pred[every]]
    assert np.all(np.diff(conf) <= 0)  # most confident mistakes first


def test_least_confident_correct_and_disagreements(mnist, cnn_probs):
    labels = mnist.labels.numpy()
    pred = cnn_probs.argmax(1)
    unsure = pretrained.least_confident_correct(cnn_probs, labels, n=15)
    correct = np.flatnonzero(pred == labels)
    lowest = correct[np.argsort(cnn_probs[correct].max(1), kind="stable")][:15]
    assert unsure.tolist() == lowest.tolist()
    model = pretrained.load_model("mnist-linear", "cpu")
    with torch.no_grad():
        lin = torch.cat([model(x).softmax(1) for x, _ in mnist.batches(1000)]).numpy()
    clash = pretrained.disagreements(cnn_probs, lin)
    assert set(clash.tolist()) == set(np.flatnonzero(pred != lin.argmax(1)).tolist())
    both = np.minimum(cnn_probs[clash].max(1), lin[clash].max(1))
    assert np.all(np.diff(both) <= 0)


def test_sensitivity_summary_equals_mean_of_per_image_gradients(mnist):
    model = pretrained.load_model("mnist-cnn", "cpu")
    x, y = mnist[:90]
    assert (torch.bincount(y, minlength=10) > 0).all()  # every class present
    batches = [(x[i : i + 25], y[i : i + 25]) for i in range(0, 90, 25)]
    s = saliency.sensitivity_summary(model, batches)
    jac = torch.stack(
        [saliency.gradients(model, x, c, absolute=False) for c in range(10)], 1
    ).double()  # (90, 10, 1, 28, 28), one class at a time: an independent route
    torch.testing.assert_close(s.all_examples, jac.abs().mean(0))
    torch.testing.assert_close(s.signed_all_examples, jac.mean(0))
    for c in range(10):
        torch.testing.assert_close(s.own_class[c], jac[y == c, c].abs().mean(0))
        torch.testing.assert_close(s.signed_own_class[c], jac[y == c, c].mean(0))
    torch.testing.assert_close(s.overall, jac.abs().mean((0, 1)))
    # and it agrees with average_sensitivity's grouped variants
    torch.testing.assert_close(
        s.own_class, saliency.average_sensitivity(model, batches, by_class=True)
    )
    assert s.n == 90


# --- the views, through AppTest ---------------------------------------------------------------


@pytest.fixture()
def app(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("SALIENCY_CACHE_DIR", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    assert not at.exception
    return at


def test_misclassification_view_gallery_detail_and_jump_to_explore(app, mnist, cnn_probs):
    at = app
    at.switch_page("page_files/mistakes.py").run()
    assert not at.exception, [e.value for e in at.exception]
    page = "\n".join(m.value for m in at.markdown)
    assert "accuracy **99.35%** (9,935 right, 65 wrong); the model card says 99.35%." in page
    labels = mnist.labels.numpy()
    for kind in ("all", "unsure", "disagree", "cell"):
        at.radio(key="mis_kind").set_value(kind).run()
        assert not at.exception, kind
    at.selectbox(key="mis_true").set_value(7).run()
    at.selectbox(key="mis_pred").set_value(2).run()
    expected = pretrained.mistakes(cnn_probs, labels, true=7, predicted=2)
    captions = [c.value for c in at.caption]
    assert any(c.startswith(f"{len(expected):,} images are 7 taken for 2") for c in captions)
    assert at.selectbox(key="mis_index").options[0].startswith(f"#{expected[0]}:")
    chosen = int(expected[-1])
    at.selectbox(key="mis_index").set_value(chosen).run()
    assert f"**Test image #{chosen}**: true 7" in "\n".join(m.value for m in at.markdown)
    # Looking at another gallery and back keeps the chosen cell.
    at.radio(key="mis_kind").set_value("unsure").run()
    at.radio(key="mis_kind").set_value("cell").run()
    assert (at.selectbox(key="mis_true").value, at.selectbox(key="mis_pred").value) == (7, 2)
    at.selectbox(key="mis_index").set_value(chosen).run()
    at.button(key="mis_open").click().run()
    assert not at.exception
    assert at.query_params["index"] == str(chosen) and at.query_params["target"] == "7"
    assert "true class 7" in at.subheader[0].value


def test_dataset_view_computes_caches_on_disk_and_reloads(app, tmp_path):
    at = app
    at.switch_page("page_files/dataset.py").run()
    assert not at.exception
    assert "describe the *model*, not the data" in at.warning[0].value
    at.selectbox(key="sens_n").set_value(1_000).run()
    assert any("Not computed yet" in i.value for i in at.info)
    at.button(key="sens_compute_a").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.success and "saved" in at.success[0].value
    # Once computed, the offer and its buttons are gone (issue 29.7): only the result stays.
    assert not any("Not computed yet" in i.value for i in at.info)
    assert not {"sens_compute_a", "sens_cancel_a"} & {b.key for b in at.button}
    files = list((tmp_path / "sensitivity").glob("mnist-cnn-*-mnist-test1000-*.npz"))
    assert len(files) == 1
    # 10 + 10 + 10 class maps, their 3 colour bars, the overall map and its bar
    assert len(at.get("image")) == 35
    # A second visit reads the disk cache: no compute button, same pictures.
    at.selectbox(key="sens_other").set_value("mnist-linear").run()
    assert not at.exception
    assert at.button(key="sens_compute_b")  # the linear model has not been computed yet
    with np.load(files[0]) as f:
        assert f["counts"].sum() == 1_000
        np.testing.assert_array_equal(
            f["counts"], np.bincount(pretrained.load_dataset("mnist").labels[:1000], minlength=10)
        )


def test_the_gallery_counts_in_sentences():
    from dashboard.views.mistakes import counted

    assert counted(1, ("is", "are"), "0 taken for 4") == "1 image is 0 taken for 4"
    assert counted(2, ("is", "are"), "0 taken for 4") == "2 images are 0 taken for 4"
    assert counted(1, ("gets", "get"), "different answers") == "1 image gets different answers"
    assert counted(1_234, ("is", "are"), "right") == "1,234 images are right"


def test_the_chosen_cell_is_framed_in_the_confusion_matrix(app):
    at = app
    at.switch_page("page_files/mistakes.py").run()
    assert not at.exception, [e.value for e in at.exception]
    t, p = at.session_state["mis_true"], at.session_state["mis_pred"]

    def spec() -> str:
        charts = [e for e in at.main if getattr(e, "type", "") == "vega_lite_chart"]
        return charts[0].proto.spec

    assert f"datum.t == {t} && datum.p == {p}" in spec()
    assert '"text": "Confusion matrix"' in spec()  # the toolbar covers the chart's own title
    at.selectbox(key="mis_pred").set_value((p + 1) % 10 if (p + 1) % 10 != t else (p + 2) % 10)
    at.run()
    p2 = at.session_state["mis_pred"]
    assert f"datum.t == {t} && datum.p == {p2}" in spec() and p2 != p
