"""The classroom lessons: each number against an independent reference, then the page (AppTest)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

import pretrained
import saliency
from pretrained import tabular
from saliency import metrics


@pytest.fixture(scope="module")
def mnist():
    ds = pretrained.load_dataset("mnist")
    return ds.images[:2], ds.labels[:2]  # (2, 1, 28, 28), (2,)


@pytest.fixture(scope="module")
def cnn():
    return pretrained.load_model("mnist-cnn")


# --- 1. nudge a pixel -----------------------------------------------------------------------


def test_taylor_prediction_is_exact_for_the_linear_model(mnist):
    model = copy.deepcopy(pretrained.load_model("mnist-linear")).double()
    x = mnist[0][:1].double()
    jac = saliency.gradients(model, x, absolute=False)[0, 0]
    row, col = np.unravel_index(int(jac.abs().argmax()), jac.shape)
    n = saliency.nudge(model, x, (0, row, col), [-1.0, -0.1, 0.3, 1.0])
    with torch.no_grad():  # independent reference: change the pixel by hand, forward twice
        t = int(model(x).argmax())
        for d, actual in zip(n.deltas.tolist(), n.actual[0].tolist(), strict=True):
            moved = x.clone()
            moved[0, 0, row, col] += d
            assert actual == pytest.approx(float(model(moved)[0, t] - model(x)[0, t]), abs=1e-12)
    torch.testing.assert_close(n.predicted, n.actual, rtol=1e-10, atol=1e-10)
    assert float(n.gradient[0]) == pytest.approx(float(jac[row, col]))


def test_taylor_prediction_degrades_with_delta_on_the_cnn(mnist, cnn):
    x = mnist[0][:1].double()
    model = copy.deepcopy(cnn).double()
    jac = saliency.gradients(model, x, absolute=False)[0, 0]
    row, col = np.unravel_index(int(jac.abs().argmax()), jac.shape)
    n = saliency.nudge(model, x, (0, row, col), [1e-4, 1.0])
    err = (n.actual - n.predicted).abs()[0]
    assert err[0] < 1e-6 < 1e-2 < err[1]


# --- 2. autograd vs finite differences ------------------------------------------------------


def test_finite_differences_match_autograd_on_a_float64_copy(mnist):
    shared = pretrained.load_model("mnist-mlp")
    before = {k: v.clone() for k, v in shared.state_dict().items()}
    model = copy.deepcopy(shared).double()
    x = mnist[0].double()
    torch.testing.assert_close(
        saliency.finite_differences(model, x),
        saliency.gradients(model, x, absolute=False),
        rtol=1e-6,
        atol=1e-8,
    )
    for k, v in shared.state_dict().items():
        assert torch.equal(v, before[k]) and v.dtype == torch.float32


# --- 5. sanity check ------------------------------------------------------------------------


def test_cascading_randomisation_leaves_the_model_alone(mnist, cnn):
    x = mnist[0][:1]
    before = {k: v.clone() for k, v in cnn.state_dict().items()}
    rng = torch.get_rng_state()
    steps = list(saliency.cascading_randomisation(cnn, x, seed=0))
    assert torch.equal(torch.get_rng_state(), rng)
    for k, v in cnn.state_dict().items():
        assert torch.equal(v, before[k]), k
    # Top first, cumulative, one independent copy per step.
    assert [name for name, _ in steps] == [
        "11 (Linear)",
        "8 (Linear)",
        "4 (Conv2d)",
        "1 (Conv2d)",
    ]
    first, last = steps[0][1].state_dict(), steps[-1][1].state_dict()
    assert not torch.equal(first["11.weight"], before["11.weight"])
    assert torch.equal(first["8.weight"], before["8.weight"])
    assert torch.equal(last["11.weight"], first["11.weight"])
    assert not torch.equal(last["1.weight"], before["1.weight"])
    assert all(not m.training for _, m in steps)
    again = [m.state_dict()["11.weight"] for _, m in saliency.cascading_randomisation(cnn, x)]
    assert torch.equal(again[0], first["11.weight"])  # seeded


def test_sanity_check_spearman_and_ssim(mnist, cnn):
    x = mnist[0][:1]
    steps = saliency.sanity_check(cnn, x)
    assert steps[0].name == "original"
    assert float(steps[0].spearman[0]) == pytest.approx(1.0)
    assert float(steps[0].ssim[0]) == pytest.approx(1.0)
    torch.testing.assert_close(steps[0].map, saliency.gradients(cnn, x))
    # Randomising the top layer alone already changes the ranking of pixels.
    assert float(steps[1].spearman[0]) < 0.9
    assert float(steps[-1].spearman[0]) < float(steps[1].spearman[0])
    assert all(float(s.ssim[0]) < 0.9 for s in steps[1:])
    # The target stays the class the original model predicts.
    target = int(cnn(x).argmax())
    with torch.no_grad():
        _, last = list(saliency.cascading_randomisation(cnn, x))[-1]
    torch.testing.assert_close(steps[-1].map, saliency.gradients(last, x, target))


def test_spearman_is_one_for_identical_maps():
    m = np.random.default_rng(0).random((28, 28))
    assert metrics.spearman(m, m.copy()) == pytest.approx(1.0)
    assert metrics.spearman(m, 3 * m**2) == pytest.approx(1.0)  # monotone: same ranks


def _ssim_reference(a, b, data_range):
    """Wang et al. 2004 with scipy's Gaussian filter: an independent implementation."""
    f = lambda m: ndimage.gaussian_filter(m, 1.5, mode="reflect", truncate=3.5)  # noqa: E731
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = f(a), f(b)
    va, vb, cov = f(a * a) - mu_a**2, f(b * b) - mu_b**2, f(a * b) - mu_a * mu_b
    s = (2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))
    return s[5:-5, 5:-5].mean()


def test_ssim_known_values_and_reference():
    rng = np.random.default_rng(0)
    a = rng.random((28, 28))
    b = np.clip(a + 0.2 * rng.standard_normal((28, 28)), 0, 1)
    assert metrics.ssim(a, a) == pytest.approx(1.0)
    assert metrics.ssim(np.zeros((28, 28)), np.zeros((28, 28))) == 1.0
    assert metrics.ssim(a, b, data_range=1.0) == pytest.approx(metrics.ssim(b, a, data_range=1.0))
    assert metrics.ssim(a, b, data_range=1.0) == pytest.approx(_ssim_reference(a, b, 1.0))
    assert metrics.ssim(a, b, data_range=1.0) < 0.9
    assert metrics.ssim(a, 1 - a, data_range=1.0) < 0  # anti-correlated structure
    with pytest.raises(ValueError, match="2-D"):
        metrics.ssim(a, a[:10])


def test_ssim_against_scikit_image():
    skm = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(1)
    a, b = rng.random((28, 28)), rng.random((28, 28))
    expected = skm.structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0
    )
    assert metrics.ssim(a, b, data_range=1.0) == pytest.approx(expected)


def test_ssim_many_is_ssim_of_each_pair():
    """`ssim_many` (the metric bench's and the sanity check's batched SSIM) equals a loop of
    `ssim` bit for bit, and refuses what `ssim` refuses."""
    rng = np.random.default_rng(2)
    a, b = rng.random((6, 28, 28)), rng.random((6, 28, 28))
    b[0] = a[0]
    got = metrics.ssim_many(a, b, data_range=1.0)
    want = [metrics.ssim(p, q, data_range=1.0) for p, q in zip(a, b, strict=True)]
    np.testing.assert_array_equal(got, want)
    assert got[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="stacks"):
        metrics.ssim_many(a[0], b[0], data_range=1.0)
    with pytest.raises(ValueError, match="window"):
        metrics.ssim_many(a[:, :8, :8], b[:, :8, :8], data_range=1.0)


# --- 6. deletion and insertion --------------------------------------------------------------


def test_deletion_and_insertion_curves(mnist, cnn):
    x = mnist[0]
    grad = saliency.gradients(cnn, x)
    with torch.no_grad():
        probs = cnn(x).softmax(1)
    t = probs.argmax(1)
    p = probs[torch.arange(2), t]
    d = saliency.deletion_curve(cnn, x, grad, steps=28)
    i = saliency.insertion_curve(cnn, x, grad, steps=28)
    assert d.scores.shape == i.scores.shape == (2, 29)
    assert torch.equal(d.target, t)
    torch.testing.assert_close(d.scores[:, 0], p)  # nothing deleted yet
    torch.testing.assert_close(i.scores[:, -1], p)  # everything revealed
    with torch.no_grad():
        blank = cnn(torch.zeros_like(x)).softmax(1)[torch.arange(2), t]
    torch.testing.assert_close(d.scores[:, -1], blank)
    torch.testing.assert_close(i.scores[:, 0], blank)
    # AUC by a hand-written trapezoid rule over equal steps of 1/28.
    s = d.scores.double()
    hand = ((s[:, 1:] + s[:, :-1]) / 2).sum(1) / 28
    torch.testing.assert_close(d.auc.double(), hand)
    # Gradient order beats a random order on a confident digit.
    order = torch.rand(x.shape, generator=torch.Generator().manual_seed(0))
    assert (d.auc < saliency.deletion_curve(cnn, x, order, steps=28).auc).all()


def test_one_deletion_step_by_hand(cnn, mnist):
    x = mnist[0][:1]
    attribution = torch.arange(784, dtype=torch.float32).reshape(1, 1, 28, 28)  # last first
    d = saliency.deletion_curve(cnn, x, attribution, 3, steps=4, baseline=0.5, score="logit")
    removed = x.clone().reshape(-1)
    removed[-196:] = 0.5  # the 196 most-attributed pixels are the last ones
    with torch.no_grad():
        expected = cnn(removed.reshape(1, 1, 28, 28))[0, 3]
    assert float(d.scores[0, 1]) == pytest.approx(float(expected), abs=1e-5)
    torch.testing.assert_close(d.fractions, torch.tensor([0, 0.25, 0.5, 0.75, 1.0]).double())


def test_blur_and_curve_errors(mnist, cnn):
    x = mnist[0]
    constant = torch.full((1, 1, 28, 28), 0.3)
    torch.testing.assert_close(saliency.blur(constant), constant)
    b = saliency.blur(x)
    assert b.shape == x.shape and b.std() < x.std()
    with pytest.raises(ValueError, match="shaped like x"):
        saliency.deletion_curve(cnn, x, x[:1])
    with pytest.raises(ValueError, match="steps"):
        saliency.insertion_curve(cnn, x, x, steps=0)


# --- 7. tabular sensitivity -----------------------------------------------------------------


@pytest.fixture(scope="module")
def cubic():
    table = tabular.cubic_data(seed=0)
    return table, tabular.train_regressor(table.X, table.y, seed=0)


def test_learned_sensitivities_match_the_analytic_ones(cubic):
    table, net = cubic
    r = saliency.feature_ranking(net, table.X, feature_names=table.feature_names)
    analytic = table.dy_dx.abs().double().mean(0)  # mean |9 x1²|, mean |2 x2|, 0
    torch.testing.assert_close(
        analytic,
        torch.stack([(9 * table.X[:, 0] ** 2).mean(), (2 * table.X[:, 1]).abs().mean(),
                     torch.tensor(0.0)]).double(),
    )  # fmt: skip
    assert [n for n, _ in r.ranked()] == ["x1", "x2", "x3"]
    learned = r.sensitivity[0]
    assert abs(learned[0] / analytic[0] - 1) < 0.1
    assert abs(learned[1] / analytic[1] - 1) < 0.1
    assert learned[2] < 0.05 * learned[1]


def test_scale_std_flips_the_ranking_of_the_mm_feature():
    table = tabular.cubic_data(seed=0, x1_in_mm=True)
    net = tabular.train_regressor(table.X, table.y, seed=0)
    raw = saliency.feature_ranking(net, table.X, feature_names=table.feature_names)
    scaled = saliency.feature_ranking(net, table.X, feature_names=table.feature_names, scale="std")
    assert raw.ranked()[0][0] == "x2" and raw.ranked()[-1][0] == "x1"  # x1 in mm looks tiny
    assert [n for n, _ in scaled.ranked()] == ["x1", "x2", "x3"]


def test_correlated_inputs_the_model_leans_on_one():
    table = tabular.correlated_data(seed=0)
    assert np.corrcoef(table.X[:, 0], table.X[:, 1])[0, 1] > 0.95
    net = tabular.train_regressor(table.X, table.y, seed=0)
    s = saliency.feature_ranking(net, table.X).sensitivity[0]
    assert s[0] > 20 * s[1]


def test_training_is_seeded_and_deterministic():
    table = tabular.cubic_data(200, seed=1)
    a = tabular.train_regressor(table.X, table.y, seed=3, steps=50)
    b = tabular.train_regressor(table.X, table.y, seed=3, steps=50)
    threads = torch.get_num_threads()
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert torch.get_num_threads() == threads and not a.training


# --- the page -------------------------------------------------------------------------------

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")
LESSONS = ("nudge", "autograd", "saturation", "linear", "sanity", "deletion", "tabular")


def classroom(**params):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=180)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    at.switch_page("page_files/classroom.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_every_lesson_renders_and_its_controls_work():
    pytest.importorskip("streamlit")
    at = classroom(model="mnist-mlp")  # the MLP keeps 2·784 forward passes quick
    assert at.title[0].value == "Classroom"
    seen = []
    for lesson in LESSONS:
        at.radio(key="lesson").set_value(lesson).run()
        assert not at.exception, (lesson, [e.value for e in at.exception])
        seen.append(at.header[0].value)
        assert at.latex, lesson
        assert any("What to notice" in i.value for i in at.info), lesson
        assert dict(at.query_params).get("lesson", "nudge") == lesson  # the default stays out
    assert [h.split(" · ")[0] for h in seen] == [str(k) for k in range(1, 8)]

    at.radio(key="lesson").set_value("nudge").run()
    at.number_input(key="nudge_row").set_value(5).run()
    at.number_input(key="nudge_col").set_value(6).run()
    at.slider(key="nudge_delta").set_value(0.5).run()
    assert "Pixel (5, 6)" in " ".join(c.value for c in at.caption)
    at.button(key="nudge_reset").click().run()
    assert (at.number_input(key="nudge_row").value, at.number_input(key="nudge_col").value) != (
        5,
        6,
    )
    at.radio(key="lesson").set_value("autograd").run()
    at.button(key="fd_again").click().run()
    at.radio(key="lesson").set_value("linear").run()
    at.number_input(key="linear_other").set_value(3).run()
    assert any("identical" in m.value for m in at.markdown)
    at.radio(key="lesson").set_value("deletion").run()
    at.radio(key="deletion_start").set_value("blurred").run()
    at.radio(key="lesson").set_value("saturation").run()
    at.button(key="saturation_confident").click().run()
    assert not at.exception, [e.value for e in at.exception]
    index = int(dict(at.query_params).get("index", 0))
    probs = pretrained.load_model("mnist-mlp")(
        pretrained.load_dataset("mnist").images[index : index + 1]
    )
    assert float(probs.softmax(1).max()) > 0.9999


def test_presentation_mode_is_in_the_url():
    pytest.importorskip("streamlit")
    at = classroom(lesson="linear")
    assert not any("font-size" in m.value for m in at.markdown)
    assert not at.expander
    at.toggle(key="present").set_value(True).run()
    assert not at.exception
    assert at.query_params["present"] == "true"
    assert any("font-size" in m.value for m in at.markdown)
    assert at.expander and at.expander[0].label == "Controls"
    again = classroom(lesson="linear", present="true")
    assert again.toggle(key="present").value is True
    assert again.header[0].value == "4 · The linear model"
