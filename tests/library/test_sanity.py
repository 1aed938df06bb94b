"""The sanity check (issue 16): the right layers, in forward order, for any model and method;
the caller's random streams untouched; Adebayo et al.'s MNIST pattern reproduced."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import pretrained
import saliency
from saliency.sanity import layer_order


@pytest.fixture(scope="module")
def mnist():
    return pretrained.load_dataset("mnist", "test")


class HeadFirst(nn.Module):
    """Registers its output layer before its convolution: forward runs conv, then head."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(4 * 26 * 26, 10)
        self.unused = nn.Linear(3, 3)  # never runs
        self.conv = nn.Conv2d(1, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).flatten(1))


class Twice(nn.Module):
    """One block used twice, and a layer tied to another's weight."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(784, 32)
        self.block = nn.Linear(32, 32)
        self.out = nn.Linear(32, 10)
        self.tied = nn.Linear(32, 32)
        self.tied.weight = self.block.weight  # shared parameter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(x.flatten(1)))
        h = torch.relu(self.block(h))
        h = torch.relu(self.tied(h))
        h = torch.relu(self.block(h))  # the same module again
        return self.out(h)


def scripted(model: nn.Module) -> torch.jit.ScriptModule:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(model), buf)
        return torch.jit.load(io.BytesIO(buf.getvalue()))


def exported(model: nn.Module) -> nn.Module:
    batch = torch.export.Dim("batch", min=1, max=1024)
    ep = torch.export.export(
        model.eval(), (torch.zeros(2, 1, 28, 28),), dynamic_shapes=({0: batch},)
    )
    return ep.module()


def test_layers_are_ordered_by_forward_not_by_registration():
    torch.manual_seed(1)  # not the cascade's own seed: re-initialised layers must differ
    model = HeadFirst().eval()
    assert [n for n, _ in model.named_children()] == ["head", "unused", "conv"]
    order = layer_order(model, torch.rand(1, 1, 28, 28))
    assert order.layers == ("conv", "head") and order.never_ran == ("unused",)
    steps = list(saliency.cascade(model, torch.rand(1, 1, 28, 28)))
    assert [s.name for s in steps] == ["head (Linear)", "conv (Conv2d)"]  # output first
    first = steps[0].model
    assert not torch.equal(first.head.weight, model.head.weight)
    assert torch.equal(first.conv.weight, model.conv.weight)  # the input layer comes last
    checked = saliency.sanity_check(model, torch.rand(2, 1, 28, 28))
    assert "never ran, skipped: unused" in checked[0].note
    assert [s.name for s in checked[1:]] == ["head (Linear)", "conv (Conv2d)"]


@pytest.mark.parametrize("kind", ["torchscript", "export"])
def test_programs_are_ordered_the_same_way_and_get_the_named_fallback(kind):
    torch.manual_seed(1)
    model = HeadFirst().eval()
    program = scripted(model) if kind == "torchscript" else exported(model)
    x = torch.rand(2, 1, 28, 28)
    assert layer_order(program, x).layers == ("conv", "head")
    steps = saliency.sanity_check(program, x)
    assert [s.name.split(" ")[0] for s in steps[1:]] == ["head", "conv"]
    assert all(s.init == "N(0, 0.05²) (no reset_parameters)" for s in steps[1:])
    kaiming = saliency.sanity_check(program, x, fallback_init="kaiming_uniform")
    assert kaiming[1].init.startswith("Kaiming uniform")
    assert not torch.equal(kaiming[1].map, steps[1].map)
    wide = list(saliency.cascade(program, x, fallback_std=0.5))[0].model
    narrow = list(saliency.cascade(program, x, fallback_std=0.05))[0].model
    w = dict(wide.named_parameters())
    n = dict(narrow.named_parameters())
    key = next(k for k in w if k.startswith("head") and k.endswith("weight"))
    assert float(w[key].detach().std()) == pytest.approx(0.5, rel=0.05)
    assert float(n[key].detach().std()) == pytest.approx(0.05, rel=0.05)
    with pytest.raises(ValueError, match="fallback_init must be one of"):
        list(saliency.cascade(program, x, fallback_init="xavier"))


def test_a_module_called_twice_counts_once_and_shared_parameters_are_said():
    torch.manual_seed(0)
    model = Twice().eval()
    x = torch.rand(1, 1, 28, 28)
    order = layer_order(model, x)
    assert order.layers == ("inp", "block", "tied", "out")
    assert ("tied", "block") in order.shared
    steps = list(saliency.cascade(model, x))
    names = [s.name.split(" ")[0] for s in steps]
    assert names == ["out", "tied", "block", "inp"]  # block once, at its first use
    notes = {s.name.split(" ")[0]: s.note for s in steps}
    assert notes["block"] == "shares parameters with tied"
    tied_step = steps[1].model
    assert tied_step.tied.weight is tied_step.block.weight  # still tied in the copies
    assert not torch.equal(tied_step.block.weight, model.block.weight)


def test_the_callers_random_streams_are_left_as_they_were(monkeypatch, mnist):
    model = pretrained.load_model("mnist-cnn", device="cpu")
    x = mnist.images[:2]
    torch.manual_seed(123)
    expected = torch.rand(5)
    torch.manual_seed(123)
    cpu_before = torch.get_rng_state()

    def forbidden(*args, **kwargs):
        raise AssertionError("the sanity check must not (re)seed CUDA generators")

    for name in ("manual_seed", "manual_seed_all", "seed", "seed_all", "set_rng_state"):
        monkeypatch.setattr(torch.cuda, name, forbidden)
    monkeypatch.setattr(torch.cuda.random, "manual_seed_all", forbidden)
    saliency.sanity_check(model, x)
    saliency.sanity_check(model, x, method="smoothgrad", n_samples=3, noise=0.1)
    assert torch.equal(torch.get_rng_state(), cpu_before)
    assert torch.equal(torch.rand(5), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_every_cuda_devices_random_stream_is_left_as_it_was(mnist):
    model = pretrained.load_model("mnist-cnn", device="cuda")
    states = [torch.cuda.get_rng_state(i) for i in range(torch.cuda.device_count())]
    saliency.sanity_check(model, mnist.images[:2].cuda(), method="smoothgrad", n_samples=3)
    after = [torch.cuda.get_rng_state(i) for i in range(torch.cuda.device_count())]
    assert all(torch.equal(a, b) for a, b in zip(states, after, strict=True))


def test_results_are_reproducible_and_the_model_is_untouched(mnist):
    model = pretrained.load_model("mnist-mlp", device="cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = mnist.images[:3]
    a = saliency.sanity_check(model, x, method="smoothgrad", n_samples=4)
    b = saliency.sanity_check(model, x, method="smoothgrad", n_samples=4)
    for s, t in zip(a, b, strict=True):
        torch.testing.assert_close(s.map, t.map)
        torch.testing.assert_close(s.spearman, t.spearman)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize(
    "method, options",
    [
        ("gradient", {}),
        ("smoothgrad", {"n_samples": 50, "noise": 0.15, "noise_range": (0.0, 1.0)}),
        ("integrated_gradients", {"steps": 50}),
        ("input_x_gradient", {}),
    ],
)
def test_the_maps_of_each_method_are_that_methods_maps(mnist, method, options):
    model = pretrained.load_model("mnist-mlp", device="cpu")
    x = mnist.images[:2]
    steps = saliency.sanity_check(model, x, method=method, **options)
    target = model(x).argmax(1)
    expected = saliency.attribute(model, x, target, method=method, absolute=True, **options)
    torch.testing.assert_close(steps[0].map, expected)
    assert all(float(r) == pytest.approx(1.0) for r in steps[0].spearman)


def test_the_papers_mnist_pattern_on_the_bundled_cnn(mnist):
    """Adebayo et al. 2018 on MNIST: Gradient decays as the layers are randomised; Integrated
    Gradients and Input x Gradient, which multiply by the (mostly black) input, stay ~0.99."""
    model = pretrained.load_model("mnist-cnn", device="cpu")
    x = mnist.images[:10]  # N = 10
    rho = {}
    for method, options in [
        ("gradient", {}),
        ("integrated_gradients", {"steps": 50}),
        ("input_x_gradient", {}),
    ]:
        steps = saliency.sanity_check(model, x, method=method, **options)
        rho[method] = [float(s.spearman.mean()) for s in steps]
    g = rho["gradient"]
    assert g[-1] < 0.3, g
    assert g[1] - g[-1] >= 0.15, g
    for method in ("integrated_gradients", "input_x_gradient"):
        assert min(rho[method]) >= 0.9, (method, rho[method])
    print("\nmean Spearman per step (CNN, N = 10):")
    for method, values in rho.items():
        print(f"  {method:22s} " + " ".join(f"{v:.3f}" for v in values))


def test_a_sanity_job_runs_through_the_worker_wire_format(mnist):
    from sandbox import jobs

    model = pretrained.load_model("mnist-mlp", device="cpu")
    out = jobs.sanity(model, mnist.images[:3].numpy(), method="input_x_gradient")
    assert [s["step"] for s in out] == ["original", "4 (Linear)", "2 (Linear)"]
    assert out[0]["spearman"].shape == (3,) and out[1]["init"] == "its own reset_parameters"
    assert out[0]["map"].shape == (1, 28, 28)
    with pytest.raises(ValueError, match="method must be one of"):
        saliency.sanity_check(model, mnist.images[:1], method="no_such_method")


def test_x_must_be_an_image_batch():
    with pytest.raises(ValueError, match="image batch"):
        saliency.sanity_check(nn.Linear(4, 2), torch.rand(3, 4))
    np.testing.assert_equal(saliency.sanity.FALLBACK_INITS, ("normal", "kaiming_uniform"))
