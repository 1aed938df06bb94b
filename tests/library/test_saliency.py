"""The saliency library against known answers, finite differences and independent references."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import saliency
from saliency import display, metrics


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# --- small models with known derivatives -------------------------------------------------


def linear_model(d_in=12, k=5, dtype=torch.float32):
    m = nn.Linear(d_in, k).to(dtype)
    return m


class SigmoidMLP(nn.Module):
    """3 -> 8 -> 1 with sigmoid activations: smooth, so finite differences are exact to O(h^2)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 8)
        self.b = nn.Linear(8, 1)

    def forward(self, x):
        return torch.sigmoid(self.b(torch.sigmoid(self.a(x))))


class StandardisingRegressor(nn.Module):
    """4 -> 2 regression net that standardises inside forward and returns (y_descaled, y_scaled)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([1.0, -2.0, 100.0, 0.5]))
        self.register_buffer("std", torch.tensor([0.5, 3.0, 40.0, 0.01]))
        self.register_buffer("y_scale", torch.tensor([10.0, 0.1]))
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2))

    def forward(self, x):
        scaled = self.net((x - self.mean) / self.std)
        return scaled * self.y_scale, scaled


class SmallCNN(nn.Module):
    def __init__(self, bn=False):
        super().__init__()
        layers = [nn.Conv2d(1, 4, 3, padding=1)]
        if bn:
            layers.append(nn.BatchNorm2d(4))
        layers += [
            nn.Tanh(),
            nn.MaxPool2d(2),
            nn.Dropout(0.5),
            nn.Flatten(),
            nn.Linear(4 * 14 * 14, 10),
        ]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


# --- known answers --------------------------------------------------------------------------


def test_linear_gradient_is_weight_row():
    m = linear_model()
    x = torch.randn(6, 12)
    for k in range(5):
        g = saliency.gradients(m, x, target=k, absolute=False)
        torch.testing.assert_close(g, m.weight[k].detach().expand(6, 12), rtol=0, atol=0)
        torch.testing.assert_close(
            saliency.gradients(m, x, target=k), m.weight[k].abs().expand(6, 12).detach()
        )


@pytest.mark.parametrize("k", [1, 7, 300])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_per_example_targets_for_any_number_of_classes(k, dtype):
    m = linear_model(12, k, dtype)
    x = torch.randn(4, 12, dtype=dtype)
    t = torch.tensor([0, k - 1, k // 2, 0])
    g = saliency.gradients(m, x, t, absolute=False)
    assert g.dtype == dtype
    torch.testing.assert_close(g, m.weight.detach()[t], rtol=0, atol=0)


def test_default_target_is_prediction():
    m = linear_model()
    x = torch.randn(9, 12)
    pred = m(x).argmax(1)
    torch.testing.assert_close(
        saliency.gradients(m, x, absolute=False), m.weight.detach()[pred], rtol=0, atol=0
    )


def test_per_example_targets_list_and_tensor():
    m = linear_model()
    x = torch.randn(4, 12)
    t = [0, 3, 3, 1]
    expected = m.weight.detach()[t]
    torch.testing.assert_close(saliency.gradients(m, x, t, absolute=False), expected)
    torch.testing.assert_close(saliency.gradients(m, x, torch.tensor(t), absolute=False), expected)


def test_sigmoid_mlp_against_float64_finite_differences():
    m = SigmoidMLP().double()
    x = torch.randn(7, 3, dtype=torch.float64)
    auto = saliency.gradients(m, x, absolute=False)  # one output unit: target None means it
    fd = saliency.finite_differences(m, x)
    torch.testing.assert_close(auto, fd, rtol=1e-7, atol=1e-9)
    # By hand: d sigma(b . sigma(Ax + a0) + b0)/dx = s'(z2) * (b * s'(z1)) @ A
    z1 = x @ m.a.weight.T + m.a.bias
    s1 = torch.sigmoid(z1)
    z2 = s1 @ m.b.weight.T + m.b.bias
    s2 = torch.sigmoid(z2)
    by_hand = (s2 * (1 - s2)) * ((s1 * (1 - s1)) * m.b.weight) @ m.a.weight
    torch.testing.assert_close(auto, by_hand.detach(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("output", [0, 1, lambda out: out[0]])
def test_standardising_tuple_regressor_against_finite_differences(output):
    m = StandardisingRegressor().double()
    x = (torch.randn(5, 4, dtype=torch.float64) * m.std + m.mean).detach()
    fd = saliency.finite_differences(m, x, target=1, output=output, eps=1e-7)
    auto = saliency.gradients(m, x, target=1, absolute=False, output=output)
    torch.testing.assert_close(auto, fd, rtol=1e-5, atol=1e-8)
    # The standardisation inside forward is differentiated through: feature 3 (std 0.01) has
    # a gradient 4000x that of feature 2 (std 40) for equal weights.
    jac = saliency.jacobian(m, x, output=output)
    assert jac.shape == (5, 2, 4)


def test_gradient_of_probability_and_log_probability():
    m = linear_model(dtype=torch.float64)
    x = torch.randn(3, 12, dtype=torch.float64)
    p = torch.softmax(m(x), 1).detach()
    k = 2
    # d p_k / dx = p_k (W_k - sum_j p_j W_j)
    expected = p[:, k : k + 1] * (m.weight[k] - p @ m.weight).detach()
    got = saliency.gradients(m, x, k, score="probability", absolute=False)
    torch.testing.assert_close(got, expected)
    # d log p_k / dx = W_k - sum_j p_j W_j
    got = saliency.gradients(m, x, k, score="log_probability", absolute=False)
    torch.testing.assert_close(got, (m.weight[k] - p @ m.weight).detach())


# --- jacobian -------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["loop", "batched", "auto"])
@pytest.mark.parametrize(
    "make",
    [
        SmallCNN,
        lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10)),
    ],
)
def test_jacobian_matches_per_class_loop_and_autograd_functional(strategy, make):
    m = make()
    x = torch.rand(3, 1, 28, 28)
    jac = saliency.jacobian(m, x, strategy=strategy)
    assert jac.shape == (3, 10, 1, 28, 28)
    for k in range(10):
        torch.testing.assert_close(jac[:, k], saliency.gradients(m, x, k, absolute=False))
    m.eval()
    for n in range(3):
        ref = torch.autograd.functional.jacobian(
            lambda v: m(v.unsqueeze(0))[0], x[n]
        )  # (10, 1, 28, 28)
        torch.testing.assert_close(jac[n], ref, rtol=1e-5, atol=1e-6)


def test_jacobian_class_subset_and_score():
    m = SmallCNN()
    x = torch.rand(4, 1, 28, 28)
    full = saliency.jacobian(m, x, score="log_probability")
    sub = saliency.jacobian(m, x, score="log_probability", classes=[7, 2])
    torch.testing.assert_close(sub, full[:, [7, 2]])


@pytest.mark.parametrize("make", [SmallCNN, lambda: SmallCNN(bn=True)])
def test_results_do_not_depend_on_batch_size(make):
    m = make()
    m.train()  # train mode on purpose: the functions must switch to eval themselves
    x = torch.rand(64, 1, 28, 28)
    ref_g = torch.cat([saliency.gradients(m, x[i : i + 1], 3) for i in range(64)])
    ref_j = torch.cat([saliency.jacobian(m, x[i : i + 1]) for i in range(64)])
    for bs in (1, 7, 64):
        g = torch.cat([saliency.gradients(m, x[i : i + bs], 3) for i in range(0, 64, bs)])
        j = torch.cat([saliency.jacobian(m, x[i : i + bs]) for i in range(0, 64, bs)])
        torch.testing.assert_close(g, ref_g, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(j, ref_j, rtol=1e-5, atol=1e-7)
    # chunking inside jacobian gives the same answer as one chunk
    torch.testing.assert_close(saliency.jacobian(m, x, chunk_size=5), ref_j, rtol=1e-5, atol=1e-7)
    assert m.training


def test_no_side_effects_on_model_or_input():
    m = SmallCNN(bn=True)
    m.train()
    m.net[4].eval()  # a mixed state must be restored module by module
    flags = [mod.training for mod in m.modules()]
    state = {k: v.clone() for k, v in m.state_dict().items()}  # includes BN running stats
    x = torch.rand(5, 1, 28, 28)
    x_before = x.clone()
    for fn in (
        lambda: saliency.gradients(m, x),
        lambda: saliency.jacobian(m, x),
        lambda: saliency.finite_differences(m, x[:1], batch_size=512),
        lambda: saliency.average_sensitivity(m, (x, torch.arange(5)), target="all"),
        lambda: saliency.attribute(m, x, method="smoothgrad", n_samples=3),
        lambda: saliency.attribute(m, x, method="integrated_gradients", steps=4),
    ):
        fn()
        assert [mod.training for mod in m.modules()] == flags
        assert all(p.grad is None for p in m.parameters())
        assert not x.requires_grad and torch.equal(x, x_before)
        for k, v in m.state_dict().items():
            assert torch.equal(v, state[k]), k


class ModeSpy(nn.Module):
    """Records the training flag it had at each forward."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(self.training)
        return x


def test_a_model_changed_between_calls_is_seen_anew():
    # Nothing about the model is remembered between calls: a mode switched, a submodule added
    # or the parameters converted after a first call are handled as on a first call.
    spy = ModeSpy()
    m = nn.Sequential(nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 5)).eval()
    x = torch.randn(4, 12)
    ref = saliency.gradients(m, x, 3)
    m[2].train()  # one submodule switched to training mode after a first call
    m.append(spy)  # a submodule added after a first call (in training mode, the default)
    m.append(nn.Dropout(0.9))  # random in training mode: the map would change
    for _ in range(3):
        torch.testing.assert_close(saliency.gradients(m, x, 3), ref)
        torch.testing.assert_close(saliency.jacobian(m, x)[:, 3].abs(), ref)
    assert spy.seen and not any(spy.seen)  # evaluated in eval mode every time
    assert [mod.training for mod in m] == [False, False, True, True, True]  # each restored
    m.train()
    spy.seen.clear()
    torch.testing.assert_close(saliency.gradients(m, x, 3), ref)
    assert spy.seen == [False] and all(mod.training for mod in m.modules())
    # a nested submodule added to a submodule, and a module shared by two parents
    inner = nn.Sequential(ModeSpy())
    m[1] = nn.Sequential(nn.Tanh(), inner)
    m.append(nn.Sequential(inner))
    m.eval()
    inner.train()
    saliency.gradients(m, x, 3)
    assert inner[0].seen == [False, False] and inner.training and not m.training
    m.double()  # parameters converted after a first call
    with pytest.raises(TypeError, match="x is torch.float32 but the model's parameters are"):
        saliency.gradients(m, x, 3)
    saliency.gradients(m, x.double(), 3)


def test_eval_mode_restores_each_flag_after_an_error():
    m = SmallCNN(bn=True).train()
    m.net[1].eval()
    flags = [mod.training for mod in m.modules()]
    with pytest.raises(RuntimeError, match="inside"), saliency.eval_mode(m):
        assert not any(mod.training for mod in m.modules())
        raise RuntimeError("inside")
    assert [mod.training for mod in m.modules()] == flags

    def failing(_):
        raise RuntimeError("model failed")

    m.net.register_forward_hook(lambda *args: failing(args))
    with pytest.raises(RuntimeError, match="model failed"):
        saliency.gradients(m, torch.rand(2, 1, 28, 28))
    assert [mod.training for mod in m.modules()] == flags


def test_results_keep_dtype_and_device():
    m = SmallCNN().double()
    x = torch.rand(2, 1, 28, 28, dtype=torch.float64)
    for r in (
        saliency.gradients(m, x),
        saliency.jacobian(m, x),
        saliency.finite_differences(m, x[:1]),
    ):
        assert r.dtype == torch.float64 and r.device == x.device


# --- errors ---------------------------------------------------------------------------------


def test_errors_have_clear_messages():
    m = linear_model()
    x = torch.randn(3, 12)
    with pytest.raises(ValueError, match=r"batch-first .* got shape \(12,\).*unsqueeze"):
        saliency.gradients(m, x[0])
    with pytest.raises(ValueError, match="2 non-finite values"):
        bad = x.clone()
        bad[0, 0] = float("nan")
        bad[1, 1] = float("inf")
        saliency.gradients(m, bad)
    with pytest.raises(TypeError, match="floating-point"):
        saliency.gradients(m, torch.ones(3, 12, dtype=torch.long))
    with pytest.raises(ValueError, match=r"target 5 is out of range .* 5 outputs \(valid: 0..4\)"):
        saliency.gradients(m, x, target=5)
    with pytest.raises(ValueError, match=r"target -1 is out of range"):
        saliency.gradients(m, x, target=[0, -1, 2])
    with pytest.raises(ValueError, match="target has 2 entries but x has 3 examples"):
        saliency.gradients(m, x, target=[0, 1])
    with pytest.raises(TypeError, match="target must hold integers"):
        saliency.gradients(m, x, target=torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="score must be one of"):
        saliency.gradients(m, x, score="softmax")
    with pytest.raises(ValueError, match=r"classes \[9\] out of range"):
        saliency.jacobian(m, x, classes=[1, 9])


def test_output_selection_errors():
    reg = StandardisingRegressor()
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match="returned a tuple of 2 outputs; pass output="):
        saliency.gradients(reg, x)
    with pytest.raises(ValueError, match="output=2 is out of range: the model returned 2 outputs"):
        saliency.gradients(reg, x, output=2)
    with pytest.raises(ValueError, match="output='y' was given but the model returned a single"):
        saliency.gradients(linear_model(4, 2), x, output="y")

    class DictModel(nn.Module):
        def forward(self, x):
            return {"y": x.sum(1, keepdim=True), "image": x.reshape(-1, 2, 2)}

    with pytest.raises(ValueError, match=r"returned a dict with keys \['y', 'image'\]"):
        saliency.gradients(DictModel(), x)
    with pytest.raises(ValueError, match="output='z' is not a key"):
        saliency.gradients(DictModel(), x, output="z")
    with pytest.raises(
        ValueError, match=r"must be \(N, K\) scores after output selection, got shape \(3, 2, 2\)"
    ):
        saliency.gradients(DictModel(), x, output="image")
    torch.testing.assert_close(saliency.gradients(DictModel(), x, output="y"), torch.ones(3, 4))


def test_model_returning_nan_is_reported():
    class NaNModel(nn.Module):
        def forward(self, x):
            return x * float("nan")

    with pytest.raises(ValueError, match="non-finite scores"):
        saliency.gradients(NaNModel(), torch.ones(2, 3))


# --- finite differences ---------------------------------------------------------------------


def test_finite_differences_batches_the_perturbed_copies():
    calls = []

    class Counting(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(20, 3)

        def forward(self, x):
            calls.append(x.shape[0])
            return self.lin(x)

    m = Counting().double()
    x = torch.randn(2, 20, dtype=torch.float64)
    fd = saliency.finite_differences(m, x, target=1, batch_size=16)
    # 1 forward for the targets, then 40 copies per example in batches of at most 16.
    assert calls == [2] + [16, 16, 8] * 2
    torch.testing.assert_close(fd, m.lin.weight[1].detach().expand(2, 20))


def test_finite_differences_match_autograd_on_cnn():
    m = SmallCNN().double()
    x = torch.rand(2, 1, 28, 28, dtype=torch.float64)
    torch.testing.assert_close(
        saliency.finite_differences(m, x, target=4),
        saliency.gradients(m, x, target=4, absolute=False),
        rtol=1e-5,
        atol=1e-7,
    )


# --- data-set averages ----------------------------------------------------------------------


def test_average_sensitivity_equals_mean_of_per_example_maps():
    m = SmallCNN()
    x = torch.rand(20, 1, 28, 28)
    y = torch.tensor([0, 1, 2, 3] * 5)
    batches = [(x[i : i + 6], y[i : i + 6]) for i in range(0, 20, 6)]
    seen = []
    avg = saliency.average_sensitivity(m, batches, progress=lambda done, total: seen.append(done))
    assert seen == [6, 12, 18, 20]
    per = saliency.gradients(m, x, y).double()
    torch.testing.assert_close(avg, per.mean(0))
    by = saliency.average_sensitivity(m, batches, by_class=True)
    assert by.shape == (10, 1, 28, 28)
    for k in range(4):
        torch.testing.assert_close(by[k], per[y == k].mean(0))
    assert torch.isnan(by[4:]).all()  # classes with no examples
    every = saliency.average_sensitivity(m, (x, y), target="all")
    jac = saliency.jacobian(m, x).double().abs()
    torch.testing.assert_close(every, jac.mean(0))
    signed = saliency.average_sensitivity(m, x, target=2, absolute=False)
    torch.testing.assert_close(signed, saliency.gradients(m, x, 2, absolute=False).double().mean(0))
    pred = saliency.average_sensitivity(m, x, target="predicted")
    torch.testing.assert_close(pred, saliency.gradients(m, x).double().mean(0))
    both = saliency.average_sensitivity(m, batches, target="all", by_class=True)
    assert both.shape == (10, 10, 1, 28, 28)
    torch.testing.assert_close(both[1], jac[y == 1].mean(0))


def test_average_sensitivity_errors():
    m = SmallCNN()
    x = torch.rand(4, 1, 28, 28)
    with pytest.raises(ValueError, match="needs labels"):
        saliency.average_sensitivity(m, x)
    with pytest.raises(ValueError, match="target must be"):
        saliency.average_sensitivity(m, x, target="true")
    with pytest.raises(ValueError, match="data is empty"):
        saliency.average_sensitivity(m, [], target="predicted")


# --- tabular --------------------------------------------------------------------------------


def test_feature_ranking_on_known_function_and_scaling():
    class Known(nn.Module):
        # y = 3 x0^3 - x1^2 + 0 * x2, and x3 = x0 in millimetres (y uses x3/1000)
        def forward(self, x):
            y = 3 * x[:, 0] ** 3 - x[:, 1] ** 2 + 0 * x[:, 2] + 0.5 * x[:, 3] / 1000
            return y, y * 2

    X = torch.randn(500, 4, dtype=torch.float64)
    X[:, 3] *= 1000
    r = saliency.feature_ranking(Known(), X, output=0, feature_names=["a", "b", "c", "mm"])
    expected = torch.stack(
        [
            (9 * X[:, 0] ** 2).abs().mean(),
            (2 * X[:, 1]).abs().mean(),
            torch.tensor(0.0, dtype=torch.float64),
            torch.tensor(0.5e-3, dtype=torch.float64),
        ]
    )
    torch.testing.assert_close(r.sensitivity[0], expected)
    assert [n for n, _ in r.ranked()] == ["a", "b", "mm", "c"] and r.scale == "none"
    scaled = saliency.feature_ranking(
        Known(), X, output=0, feature_names=["a", "b", "c", "mm"], scale="std"
    )
    torch.testing.assert_close(scaled.sensitivity[0], expected * X.std(0))
    assert scaled.scale == "std"
    assert scaled.table()[0] == {
        "output": 0,
        "rank": 1,
        "feature": "a",
        "sensitivity": pytest.approx(float(scaled.sensitivity[0, 0])),
        "signed_mean": pytest.approx(float(scaled.sensitivity[0, 0])),  # 9·x0² >= 0
        "scale": "std",
    }
    # The signed mean keeps the sign: dy/dx1 = -2·x1.
    torch.testing.assert_close(r.signed[0, 1], (-2 * X[:, 1]).mean())
    with pytest.raises(ValueError, match="feature_names has 2 names but X has 4 columns"):
        saliency.feature_ranking(Known(), X, output=0, feature_names=["a", "b"])
    with pytest.raises(ValueError, match=r"X must be a table \(N, D\)"):
        saliency.feature_ranking(Known(), X.reshape(500, 2, 2), output=0)


# --- methods --------------------------------------------------------------------------------


def test_methods_against_hand_computed_references():
    m = linear_model(dtype=torch.float64)
    x = torch.randn(4, 12, dtype=torch.float64)
    w = m.weight[3].detach()
    # Linear model: every noisy gradient is W_3, so SmoothGrad = |W_3|, SmoothGrad^2 = W_3^2,
    # VarGrad = 0.
    torch.testing.assert_close(
        saliency.attribute(m, x, 3, method="smoothgrad", n_samples=8), w.abs().expand(4, 12)
    )
    torch.testing.assert_close(
        saliency.attribute(m, x, 3, method="smoothgrad_sq", n_samples=8), (w**2).expand(4, 12)
    )
    torch.testing.assert_close(
        saliency.attribute(m, x, 3, method="vargrad", n_samples=8),
        torch.zeros(4, 12, dtype=torch.float64),
    )
    torch.testing.assert_close(saliency.attribute(m, x, 3, method="input_x_gradient"), x * w)
    ig, delta = saliency.attribute(m, x, 3, method="integrated_gradients", return_delta=True)
    torch.testing.assert_close(ig, x * w)  # exact for a linear model with a zero baseline
    assert delta.abs().max() < 1e-8  # Captum's step weights are float32


def test_smoothgrad_uses_relative_noise_and_is_reproducible():
    m = SigmoidMLP().double()
    x = torch.randn(3, 3, dtype=torch.float64)
    a = saliency.attribute(m, x, method="smoothgrad", seed=1)
    b = saliency.attribute(m, x, method="smoothgrad", seed=1)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # Reference: mean |grad| over 50 copies with sigma = 0.15 * (max - min), same noise draws.
    torch.manual_seed(1)
    sigma = 0.15 * float(x.max() - x.min())
    # Captum draws the noise for all copies in one call, each example's copies side by side.
    noise = torch.normal(0, torch.tensor(sigma).repeat(3 * 50, 3))
    noisy = x.repeat_interleave(50, dim=0) + noise
    grads = saliency.gradients(m, noisy, absolute=True)
    ref = grads.reshape(3, 50, 3).mean(1)
    torch.testing.assert_close(a, ref, rtol=1e-6, atol=1e-9)


def test_integrated_gradients_completeness_on_cnn():
    m = SmallCNN().double()
    x = torch.rand(2, 1, 28, 28, dtype=torch.float64)
    ig, delta = saliency.attribute(
        m, x, 5, method="integrated_gradients", steps=200, return_delta=True
    )
    m.eval()
    gap = (m(x)[:, 5] - m(torch.zeros_like(x))[:, 5]).detach()
    torch.testing.assert_close(ig.sum((1, 2, 3)), gap, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(delta, ig.sum((1, 2, 3)) - gap)


def test_unknown_method():
    with pytest.raises(ValueError, match="method must be one of gradient, smoothgrad"):
        saliency.attribute(linear_model(), torch.randn(2, 12), method="gradcam")


# --- display helpers ------------------------------------------------------------------------


def test_display_helpers():
    m = np.array([[0.0, 1.0], [2.0, 4.0]])
    assert display.display_range(m, percentile=100) == (0.0, 4.0)
    lo, hi = display.display_range([m, 2 * m], percentile=100)  # shared scale
    assert (lo, hi) == (0.0, 8.0)
    assert display.display_range(np.array([-3.0, 1.0]), signed=True, percentile=100) == (-3.0, 3.0)
    assert display.display_range(np.zeros((2, 2))) == (0.0, 1.0)
    n = display.normalise(m, 0.0, 2.0)
    np.testing.assert_array_equal(n, [[0, 0.5], [1, 1]])
    rgb = display.colorize(n, "gray")
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    np.testing.assert_array_equal(rgb[0, 0], [0, 0, 0])
    np.testing.assert_array_equal(rgb[1, 1], [255, 255, 255])
    # Diverging map: 0 of a symmetric range lands in the middle (near white for RdBu_r).
    mid = display.colorize(display.normalise(np.zeros((1, 1)), -1, 1), "RdBu_r")[0, 0]
    assert mid.min() > 230
    img = np.zeros((2, 2))
    over = display.overlay(img, n, cmap="gray", alpha=0.5)
    np.testing.assert_array_equal(over[1, 1], [128, 128, 128])
    assert display.upscale(over, 3).shape == (6, 6, 3)
    np.testing.assert_array_equal(
        display.upscale(over, 3)[:3, :3], np.broadcast_to(over[0, 0], (3, 3, 3))
    )
    g = np.stack([np.full((2, 2), -5.0), np.ones((2, 2))])
    np.testing.assert_array_equal(display.reduce_channels(g, "max"), np.full((2, 2), 5.0))
    np.testing.assert_array_equal(display.reduce_channels(g, "sum"), np.full((2, 2), -4.0))
    strip, ticks = display.colorbar(-2, 2, "RdBu_r")
    assert strip.shape == (14, 256, 3) and ticks[0] == (0.0, -2.0) and ticks[-1] == (1.0, 2.0)
    with pytest.raises(ValueError, match="unknown colour map"):
        display.colorize(n, "nope")


def test_spearman_against_scipy():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    a = rng.normal(size=200)
    b = a + rng.normal(size=200)
    a[:10] = 0  # ties
    assert metrics.spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    assert metrics.spearman(a, a) == pytest.approx(1.0)
    assert metrics.spearman(a, -a) == pytest.approx(-1.0)


def test_library_does_not_import_ui():
    code = (
        "import sys, saliency, saliency.display, saliency.metrics; "
        "print('streamlit' in sys.modules, 'pretrained' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize("method", ["gradient", "input_x_gradient", "integrated_gradients"])
def test_class_maps_match_per_class_attribute(method):
    m = SmallCNN().double()
    x = torch.rand(3, 1, 28, 28, dtype=torch.float64)
    maps = saliency.class_maps(m, x, [2, 7, 0], method=method, absolute=False, steps=16)
    assert maps.shape == (3, 3, 1, 28, 28)
    for j, k in enumerate([2, 7, 0]):
        ref = saliency.attribute(m, x, k, method=method, absolute=False, steps=16)
        torch.testing.assert_close(maps[:, j], ref)
    every = saliency.class_maps(m, x)  # gradient, absolute, all classes = |jacobian|
    torch.testing.assert_close(every, saliency.jacobian(m, x).abs())


def test_contrast_is_gradient_of_score_difference():
    m = linear_model(dtype=torch.float64)
    x = torch.randn(4, 12, dtype=torch.float64)
    versus = [1, 1, 4, 0]
    got = saliency.contrast(m, x, 3, versus)
    w = m.weight.detach()
    torch.testing.assert_close(got, w[3] - w[versus])
    # With IG on a linear model the contrast is x * (W_t - W_v), exactly.
    ig = saliency.contrast(m, x, 3, versus, method="integrated_gradients")
    torch.testing.assert_close(ig, x * (w[3] - w[versus]))


# --- inputs people actually pass (issue 15) -------------------------------------------------


def test_numpy_and_zero_dim_integer_targets_are_ints():
    m = linear_model()
    x = torch.randn(4, 12)
    expected = m.weight[3].abs().expand(4, -1)
    labels = np.array([3, 1, 2])
    for target in (np.int64(3), np.int32(3), torch.tensor(3), np.array(3), labels[0]):
        torch.testing.assert_close(saliency.gradients(m, x, target), expected)
    with pytest.raises(TypeError, match="target must hold integers"):
        saliency.gradients(m, x, torch.tensor(3.0))
    with pytest.raises(TypeError, match="target must be an int"):
        saliency.gradients(m, x, np.bool_(True))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_an_input_of_another_dtype_than_the_model_gets_a_clear_message(dtype):
    m = linear_model()
    x = torch.randn(2, 12, dtype=dtype)
    message = f"x is {dtype} but the model's parameters are torch.float32"
    for call in (
        lambda: saliency.gradients(m, x, 0),
        lambda: saliency.jacobian(m, x),
        lambda: saliency.attribute(m, x, 0, method="integrated_gradients", steps=2),
    ):
        with pytest.raises(TypeError, match=message):
            call()


@pytest.mark.parametrize("noise", [-1.0, float("nan")])
def test_negative_noise_is_refused(noise):
    with pytest.raises(ValueError, match="noise must be >= 0"):
        saliency.attribute(linear_model(), torch.randn(2, 12), 0, method="smoothgrad", noise=noise)


def test_contrast_of_a_class_with_itself_is_refused():
    m, x = linear_model(), torch.randn(3, 12)
    with pytest.raises(ValueError, match="target and versus are both class 3 for example 0"):
        saliency.contrast(m, x, 3, 3)
    with pytest.raises(ValueError, match="both class 1 for example 2"):
        saliency.contrast(m, x, [0, 0, 1], [1, 2, 1])
    diff = saliency.contrast(m, x, [0, 0, 1], [1, 2, 2])  # all different: exact W[a] - W[b]
    torch.testing.assert_close(diff[2], m.weight[1] - m.weight[2])


def test_gradients_can_return_the_outputs_of_the_same_forward_pass():
    m = linear_model()
    x = torch.randn(4, 12)
    calls = []
    m.register_forward_hook(lambda *args: calls.append(1))
    g, out = saliency.gradients(m, x, [0, 1, 2, 3], return_outputs=True)
    assert len(calls) == 1  # one forward for both
    torch.testing.assert_close(out, m(x).detach())
    assert not out.requires_grad
    torch.testing.assert_close(g, saliency.gradients(m, x, [0, 1, 2, 3]))
    torch.testing.assert_close(g[2], m.weight[2].abs())


def test_all_finite_reads_values_not_sums():
    from saliency._validate import all_finite

    x = torch.ones(4, requires_grad=True)
    assert all_finite(x * 2) is True  # a tensor in a graph: checked without extending it
    assert all_finite(torch.tensor([1.0, float("nan")], requires_grad=True)) is False
    assert all_finite(torch.tensor([1.0, float("-inf")])) is False
    big = torch.full((4,), torch.finfo(torch.float32).max)  # finite values, an overflowing sum
    assert all_finite(big) is True


@pytest.mark.parametrize("engine", ["torch's engine entry", "torch.autograd.grad"])
def test_the_backward_pass_is_torch_autograd_grad_s_own(engine, monkeypatch):
    """`_vjp` calls the engine's entry that torch.autograd.grad calls after checking its seeds;
    its results, and its errors, are torch.autograd.grad's (and so when torch lacks that entry
    and `_vjp` calls torch.autograd.grad itself)."""
    from saliency import _gradients

    if engine == "torch.autograd.grad":
        monkeypatch.setattr(_gradients, "engine_run_backward", None)
    m = SigmoidMLP()
    x = torch.rand(4, 3, requires_grad=True)
    out = m(x)  # (4, 1)
    seed = torch.rand_like(out)
    seeds = torch.rand(3, *out.shape)
    got = _gradients._vjp(out, x, seed, retain_graph=True)
    torch.testing.assert_close(got, torch.autograd.grad(out, x, seed, retain_graph=True)[0])
    got = _gradients._vjp(out, x, seeds, batched=True, retain_graph=True)
    (want,) = torch.autograd.grad(out, x, seeds, retain_graph=True, is_grads_batched=True)
    assert got.shape == (3, 4, 3)
    torch.testing.assert_close(got, want)
    _gradients._vjp(out, x, seed)  # the graph is freed: a second pass fails as torch's would
    with pytest.raises(RuntimeError, match="second time"):
        _gradients._vjp(out, x, seed)
    constant = torch.zeros(4, 5)  # an output that does not depend on anything
    with pytest.raises(RuntimeError, match="does not require grad"):
        _gradients._vjp(constant, x, torch.ones(4, 5))
    unused = nn.Linear(3, 5)(torch.rand(4, 3))  # one that does not depend on x
    with pytest.raises(RuntimeError, match="not have been used"):
        _gradients._vjp(unused, x, torch.ones(4, 5))


def test_a_first_backward_pass_imports_no_sympy():
    """torch.autograd.grad's check of its seeds imports sympy (~0.5 s) on a process's first
    call: a cold server's first page paid it. `_vjp` doesn't make that check."""
    code = (
        "import sys, torch, saliency\n"
        "m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))\n"
        "x = torch.rand(2, 1, 4, 4)\n"
        "saliency.gradients(m, x); saliency.jacobian(m, x, strategy='batched')\n"
        "saliency.jacobian(m, x, strategy='loop')\n"
        "print('sympy' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr[-2000:]
