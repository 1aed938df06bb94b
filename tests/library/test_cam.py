"""Layer maps (CAM), guided backprop and occlusion against their reference implementations.

pytorch-grad-cam 1.5.7 (`grad-cam` on PyPI, a test-only dependency) for Grad-CAM, Grad-CAM++,
Score-CAM and LayerCAM; Captum 0.9 for occlusion and guided backprop; the authors' Score-CAM
loop written out here; and the layer choice's refusals, word for word.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import pretrained
import saliency

CAMS = ("grad_cam", "grad_cam_pp", "score_cam", "layer_cam")
CLASSED = ("grad_cam", "grad_cam_pp", "score_cam", "layer_cam", "guided_backprop",
           "guided_grad_cam", "occlusion")  # fmt: skip


def pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One correlation per example."""
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


@pytest.fixture(scope="module")
def mnist():
    model = pretrained.load_model("mnist-cnn")
    x, y = pretrained.load_dataset("mnist", "test")[:4]
    return model, x, y


def _reference(method, model, layer, x, targets):
    """pytorch-grad-cam's map, on a copy whose parameters require grad (its backward needs
    them to; the bundled models are frozen) so that the model under test stays untouched."""
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    kind = {"grad_cam": GradCAM, "grad_cam_pp": GradCAMPlusPlus, "score_cam": ScoreCAM,
            "layer_cam": LayerCAM}[method]  # fmt: skip
    twin = copy.deepcopy(model).requires_grad_(True)
    name = dict((m, n) for n, m in model.named_modules())[layer]
    ref = kind(model=twin, target_layers=[dict(twin.named_modules())[name]])
    ref.batch_size = 128  # Score-CAM's masked copies per pass (its default is 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ref(input_tensor=x, targets=[ClassifierOutputTarget(int(k)) for k in targets])


@pytest.mark.parametrize("method", CAMS)
def test_cam_matches_pytorch_grad_cam_on_resnet18(resnet, method, capsys):
    torch.manual_seed(1)
    x = torch.rand(1 if method == "score_cam" else 2, 3, 64, 64)
    targets = [3, 7][: len(x)]
    ours = saliency.cam_map(resnet, x, targets, method=method, normalize=True)
    assert ours.layer == "layer4" and ours.layer_map.shape == (len(x), 2, 2)
    theirs = _reference(method, resnet, resnet.layer4, x, targets)
    r = pearson(ours.map.numpy(), theirs)
    print(f"resnet18 layer4 {method}: Pearson {np.round(r, 6)}")
    assert ours.map.shape == theirs.shape == (len(x), 64, 64)
    assert (r >= 0.999).all(), r


@pytest.mark.parametrize("method", CAMS)
def test_cam_matches_pytorch_grad_cam_on_mnist_cnn(mnist, method):
    model, x, y = mnist
    ours = saliency.cam_map(model, x, y, method=method, normalize=True)
    assert ours.layer == "6"  # the last max-pool, (N, 64, 7, 7)
    theirs = _reference(method, model, model[6], x, y)
    r = pearson(ours.map.numpy(), theirs)
    print(f"mnist-cnn {method}: Pearson {np.round(r, 6)}")
    assert (r >= 0.999).all(), r
    # The library's own view of the same map: shaped like x, the same in every channel.
    a = saliency.attribute(model, x, y, method=method, normalize=True)
    assert a.shape == x.shape
    torch.testing.assert_close(a[:, 0], ours.map)


def test_score_cam_half_pixel_masks_agree_less():
    """The authors' half-pixel masks are an option, measured against the reference here so the
    README's figure stays true; Score-CAM's default follows pytorch-grad-cam's corner-aligned
    masks, which the test above holds to 0.999."""
    model = pretrained.load_model("mnist-cnn")
    x, y = pretrained.load_dataset("mnist", "test")[:4]
    ours = saliency.cam_map(model, x, y, method="score_cam", normalize=True, align_corners=False)
    r = pearson(ours.map.numpy(), _reference("score_cam", model, model[6], x, y))
    assert 0.95 < r.min() < 0.9999, r


def test_score_cam_paper_weights_match_the_authors_loop(mnist):
    """weights="score" with probabilities is the authors' code: for each channel, the class's
    softmax probability of the input masked by that channel, upsampled (half-pixel) and
    min-max scaled, weighs the channel; ReLU; one channel at a time here."""
    model, x, y = mnist
    got = saliency.cam_map(model, x[:2], y[:2], method="score_cam", score="probability",
                           weights="score", align_corners=False)  # fmt: skip
    acts = {}
    handle = model[6].register_forward_hook(lambda m, i, o: acts.setdefault("a", o.detach()))
    with torch.no_grad():
        model(x[:2])
    handle.remove()
    a = acts["a"]
    for n in range(2):
        total = torch.zeros(7, 7)
        for c in range(a.shape[1]):
            up = nn.functional.interpolate(a[n : n + 1, c : c + 1], size=(28, 28), mode="bilinear")
            up = (up - up.min()) / (up.max() - up.min() + 1e-8)
            with torch.no_grad():
                p = model(x[n : n + 1] * up).softmax(1)[0, int(y[n])]
            total += p * a[n, c]
        torch.testing.assert_close(got.layer_map[n], total.clamp(min=0), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("window", "stride"), [(4, 2), (5, 3)])
def test_occlusion_matches_captum(mnist, window, stride):
    from captum.attr import Occlusion

    model, x, y = mnist
    ours = saliency.attribute(model, x, y, method="occlusion", window=window, stride=stride)
    theirs = Occlusion(model).attribute(
        x, sliding_window_shapes=(1, window, window), strides=(1, stride, stride), target=y,
        baselines=0.0, perturbations_per_eval=64,
    )  # fmt: skip
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    assert float(theirs.abs().max()) > 0.1  # a real map, not two zeros


def test_occlusion_of_colour_images_covers_every_channel(resnet):
    from captum.attr import Occlusion

    x = torch.rand(1, 3, 32, 32)
    ours = saliency.attribute(resnet, x, 2, method="occlusion", window=8, stride=4)
    theirs = Occlusion(resnet).attribute(
        x, sliding_window_shapes=(3, 8, 8), strides=(3, 4, 4), target=2
    )
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def test_guided_backprop_matches_captum(resnet, mnist):
    from captum.attr import GuidedBackprop

    model, x, y = mnist
    twin = copy.deepcopy(model).requires_grad_(True)
    xr = torch.rand(2, 3, 64, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_mnist = GuidedBackprop(twin).attribute(x.clone().requires_grad_(), target=y)
        ref_resnet = GuidedBackprop(resnet).attribute(xr.clone().requires_grad_(), target=[1, 4])
    # ResNet's ReLUs work in place and one module serves two places in each block.
    got_resnet = saliency.attribute(resnet, xr, [1, 4], method="guided_backprop")
    torch.testing.assert_close(got_resnet, ref_resnet, rtol=1e-5, atol=1e-7)
    got = saliency.attribute(model, x, y, method="guided_backprop")
    torch.testing.assert_close(got, ref_mnist, rtol=1e-5, atol=1e-7)
    # The guided rule changes the map: it is not the plain gradient.
    plain = saliency.gradients(model, x, y, absolute=False)
    assert not torch.allclose(got, plain, atol=1e-4)


def test_guided_grad_cam_is_guided_backprop_times_upsampled_grad_cam(mnist):
    model, x, y = mnist
    got = saliency.attribute(model, x, y, method="guided_grad_cam")
    gb = saliency.attribute(model, x, y, method="guided_backprop")
    heat = saliency.cam_map(model, x, y, method="grad_cam").map
    torch.testing.assert_close(got, gb * heat[:, None])
    assert got.shape == x.shape and float(got.abs().max()) > 0


@pytest.mark.parametrize("method", CLASSED)
def test_class_maps_equal_one_class_at_a_time(mnist, method):
    model, x, _ = mnist
    opts = {"batch_size": 500} if method == "score_cam" else {}
    maps = saliency.class_maps(model, x[:2], [2, 7, 0], method=method, **opts)
    assert maps.shape == (2, 3, 1, 28, 28)
    for j, k in enumerate([2, 7, 0]):
        one = saliency.attribute(model, x[:2], k, method=method, **opts)
        torch.testing.assert_close(maps[:, j], one, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", ["grad_cam", "occlusion"])
def test_contrast_is_the_map_of_the_score_difference(mnist, method):
    """Grad-CAM without its ReLU and occlusion are linear in the score, so the map of
    score_4 - score_9 is the difference of the two maps."""
    model, x, _ = mnist
    opts = {"relu": False} if method == "grad_cam" else {"window": 4, "stride": 2}
    got = saliency.contrast(model, x, 4, 9, method=method, **opts)
    four = saliency.attribute(model, x, 4, method=method, **opts)
    nine = saliency.attribute(model, x, 9, method=method, **opts)
    torch.testing.assert_close(got, four - nine, rtol=1e-4, atol=1e-5)
    # With its ReLU, the contrast keeps the evidence for 4 over 9; a named layer still works.
    pos = saliency.contrast(model, x, 4, 9, method="grad_cam", layer="4")
    assert pos.shape == x.shape and float(pos.min()) >= 0


def test_all_classes_backward_runs_from_the_layer(resnet):
    """The forward pass records no graph before the layer, so no gradient reaches conv1."""
    reached = []
    handle = resnet.conv1.register_full_backward_hook(lambda *a: reached.append(1))
    try:
        maps = saliency.class_maps(resnet, torch.rand(2, 3, 64, 64), method="grad_cam")
    finally:
        handle.remove()
    assert maps.shape == (2, 10, 3, 64, 64) and reached == []


def test_maps_do_not_depend_on_the_batch(mnist):
    model, x, y = mnist
    for method in ("grad_cam_pp", "score_cam", "occlusion"):
        whole = saliency.attribute(model, x, y, method=method)
        alone = torch.cat([saliency.attribute(model, x[i : i + 1], y[i : i + 1], method=method)
                           for i in range(len(x))])  # fmt: skip
        scale = float(whole.abs().max())
        assert scale > 0, method
        torch.testing.assert_close(whole, alone, rtol=1e-4, atol=1e-5 * scale, msg=method)


def test_model_and_input_are_left_as_they_were(resnet):
    model = copy.deepcopy(resnet).train()
    model.layer4.eval()  # a mixed set of flags, restored one by one
    flags = [m.training for m in model.modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(2, 3, 32, 32)
    x0 = x.clone()
    for method in CLASSED:
        saliency.attribute(model, x, 1, method=method)
    assert [m.training for m in model.modules()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert torch.equal(x, x0)


# --- the layer: the automatic choice and what is refused ------------------------------------


class TwiceUsed(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.head = nn.Linear(64, 3)

    def forward(self, x):
        return self.head(self.conv(self.conv(x)).flatten(1))


class Exploding(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.fill_(torch.inf)
        self.head = nn.Linear(128, 3)

    def forward(self, x):  # finite scores from infinite activations
        return self.head(torch.nan_to_num(self.conv(x)).clamp(-1, 1).flatten(1))


def test_find_layer(resnet, mnist):
    found = saliency.find_layer(resnet, torch.rand(1, 3, 64, 64))
    assert (found.name, found.module, found.shape) == ("layer4", resnet.layer4, (1, 512, 2, 2))
    assert saliency.find_layer(mnist[0], mnist[1]).name == "6"
    names = [l.name for l in saliency.layers(resnet, torch.rand(1, 3, 64, 64)) if l.spatial]
    assert names[0] == "conv1" and names[-1] == "layer4" and "avgpool" not in names


def test_an_mlp_has_no_grad_cam():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
    x = torch.rand(2, 1, 28, 28)
    with pytest.raises(ValueError, match=r"^no spatial layer: an MLP has no Grad-CAM; "):
        saliency.attribute(mlp, x, method="grad_cam")
    assert saliency.method_info("grad_cam").why_not == "no spatial layer: an MLP has no Grad-CAM"


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.trace, used on purpose
def test_refusals_word_for_word(resnet):
    x = torch.rand(1, 3, 64, 64)  # layer4 keeps a 2 x 2 grid (at 32 x 32 it is 1 x 1)
    with pytest.raises(ValueError) as err:
        saliency.attribute(resnet, x, method="grad_cam", layer="layer5")
    msg = str(err.value)
    assert msg.startswith("the model has no layer named 'layer5'; candidates: conv1, bn1, ")
    assert msg.endswith(", layer4.1, layer4")
    with pytest.raises(ValueError, match=r"^layer 'fc' gives \(2, 10\), not a spatial grid"):
        saliency.attribute(resnet, torch.rand(2, 3, 32, 32), method="grad_cam", layer="fc")
    with pytest.raises(ValueError, match=r"^layer 'layer4' gives \(1, 512, 1, 1\), not a"):
        saliency.attribute(resnet, torch.rand(1, 3, 32, 32), method="grad_cam", layer="layer4")
    with pytest.raises(ValueError, match="the layer given \\(Conv2d\\) is not a submodule"):
        saliency.attribute(resnet, x, method="grad_cam", layer=nn.Conv2d(1, 1, 1))
    twice = TwiceUsed()
    with pytest.raises(ValueError, match=(
        r"^layer 'conv' runs more than once in one forward pass: hooks would mix the two uses"
    )):  # fmt: skip
        saliency.attribute(twice, torch.rand(1, 1, 8, 8), method="grad_cam", layer="conv")
    with pytest.raises(ValueError, match=r"^the activations of layer 'conv' are not finite"):
        saliency.attribute(Exploding(), torch.rand(1, 1, 8, 8), method="layer_cam")
    with pytest.raises(ValueError, match="method 'gradient' takes no layer"):
        saliency.attribute(resnet, x, method="gradient", layer="layer4")
    with pytest.raises(TypeError, match="grad_cam got unexpected option window"):
        saliency.attribute(resnet, x, method="grad_cam", window=4)
    with pytest.raises(ValueError, match="stride 5 is larger than window 4"):
        saliency.attribute(resnet, x, method="occlusion", window=4, stride=5)
    with pytest.raises(TypeError, match="forward hooks, which a TorchScript module does not run"):
        saliency.attribute(torch.jit.trace(resnet, x), x, method="grad_cam")
    # Hooks were removed after every refusal.
    assert all(not m._forward_hooks for m in [*resnet.modules(), *twice.modules()])


def test_the_registry_describes_every_method():
    assert saliency.methods("layer maps (CAM)") == (*CAMS, "guided_grad_cam")
    for name in CLASSED:
        info = saliency.method_info(name)
        assert info.has_class and info.paper and info.reference
        assert info.layer == (info.family == "layer maps (CAM)")
    assert saliency.METHODS == ("gradient", "smoothgrad", "smoothgrad_sq", "vargrad",
                                "input_x_gradient", "integrated_gradients")  # fmt: skip
    with pytest.raises(ValueError, match="method must be one of gradient, smoothgrad,"):
        saliency.method_info("gradcam")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_every_method_runs_on_cuda(mnist):
    model, x, y = mnist
    gpu = copy.deepcopy(model).cuda()
    for method in CLASSED:
        on_gpu = saliency.attribute(gpu, x.cuda(), y.cuda(), method=method)
        assert on_gpu.device.type == "cuda"
        torch.testing.assert_close(
            on_gpu.cpu(), saliency.attribute(model, x, y, method=method), rtol=1e-3, atol=1e-4
        )
    maps = saliency.class_maps(gpu, x.cuda(), method="grad_cam")
    assert maps.device.type == "cuda" and maps.shape == (4, 10, 1, 28, 28)
