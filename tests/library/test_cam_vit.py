"""Layer maps on vision transformers: the patch tokens read as a grid.

Against pytorch-grad-cam 1.5.7 with its documented ViT recipe (a `reshape_transform` that
drops the class/register tokens and reshapes the patches to (N, D, h, w)), on the same layer:
`mnist-vit`, timm's `vit_tiny_patch16_224` and a small torchvision `VisionTransformer`, all but
the first with seeded random weights. The prefix and the grid in each reference are written
out here by hand, not taken from the library.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import timm
import torch
import torchvision
from torch import nn

import pretrained
import saliency

CAMS = ("grad_cam", "grad_cam_pp", "layer_cam", "score_cam")
REFERENCE_EPS = 1e-6  # pytorch-grad-cam's term in Grad-CAM++'s denominator


def pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One correlation per example."""
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))


def reshape_transform(prefix: int, h: int, w: int):
    """pytorch-grad-cam's ViT recipe (its tutorial's `reshape_transform`), for `prefix` tokens
    before an h x w patch grid."""

    def run(tensor):
        result = tensor[:, prefix:, :].reshape(tensor.size(0), h, w, tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)  # (N, D, h, w)

    return run


def reference(method, model, name, x, targets, layout):
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    kind = {"grad_cam": GradCAM, "grad_cam_pp": GradCAMPlusPlus, "score_cam": ScoreCAM,
            "layer_cam": LayerCAM}[method]  # fmt: skip
    twin = copy.deepcopy(model).requires_grad_(True)  # its backward needs them; ours doesn't
    ref = kind(model=twin, target_layers=[dict(twin.named_modules())[name]],
               reshape_transform=reshape_transform(*layout))  # fmt: skip
    ref.batch_size = 64
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ref(input_tensor=x, targets=[ClassifierOutputTarget(int(k)) for k in targets])


def mnist_vit():
    x, y = pretrained.load_dataset("mnist", "test")[:3]
    return pretrained.load_model("mnist-vit", device="cpu"), x, y


def timm_tiny(size: int = 224):
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10,
                              img_size=size)  # fmt: skip
    return model.eval(), torch.rand(2, 3, size, size), torch.tensor([3, 8])


def timm_registers():
    torch.manual_seed(0)
    model = timm.models.VisionTransformer(img_size=32, patch_size=8, embed_dim=48, depth=3,
                                          num_heads=3, num_classes=5, reg_tokens=4)  # fmt: skip
    return model.eval(), torch.rand(2, 3, 32, 32), torch.tensor([1, 4])


def timm_mixer():
    """Patch tokens without attention or prefix (average-pooled): its last token grid."""
    torch.manual_seed(0)
    model = timm.models.MlpMixer(num_classes=5, img_size=32, patch_size=8, num_blocks=3,
                                 embed_dim=32)  # fmt: skip
    nn.init.normal_(model.head.weight)  # timm starts it at zero: no gradient
    return model.eval(), torch.rand(2, 3, 32, 32), torch.tensor([1, 2])


def torchvision_vit():
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=48, patch_size=8, num_layers=3, num_heads=2, hidden_dim=32, mlp_dim=64,
        num_classes=5,
    )  # fmt: skip
    nn.init.normal_(model.heads.head.weight)  # torchvision starts it at zero: no gradient
    return model.eval(), torch.rand(2, 3, 48, 48), torch.tensor([0, 2])


# model, the automatic layer, (prefix, h, w) written out by hand
CASES = {
    "mnist-vit": (mnist_vit, "1.blocks.3.norm1", (1, 4, 4)),
    "timm-vit-tiny": (timm_tiny, "blocks.11.norm1", (1, 14, 14)),
    # Score-CAM runs 192 masked passes per image: the same architecture on 64 x 64 pictures.
    "timm-vit-tiny-64": (lambda: timm_tiny(64), "blocks.11.norm1", (1, 4, 4)),
    "timm-registers": (timm_registers, "blocks.2.norm1", (5, 4, 4)),
    "torchvision": (torchvision_vit, "encoder.layers.encoder_layer_2.ln_1", (1, 6, 6)),
    "timm-mixer": (timm_mixer, "norm", (0, 4, 4)),
}
ONLY = {"timm-vit-tiny": CAMS[:3], "timm-vit-tiny-64": ("score_cam",)}
_built: dict = {}


def case(name):
    if name not in _built:
        make, layer, layout = CASES[name]
        _built[name] = (*make(), layer, layout)
    return _built[name]


@pytest.mark.parametrize(
    ("name", "method"),
    [(n, m) for n in CASES for m in CAMS if n not in ONLY or m in ONLY[n]],
)
def test_cam_on_patch_tokens_matches_pytorch_grad_cam(name, method):
    model, x, y, layer, layout = case(name)
    opts = {"eps": REFERENCE_EPS} if method == "grad_cam_pp" else {}
    ours = saliency.cam_map(model, x, y, method=method, normalize=True, **opts)
    assert ours.layer == layer  # the automatic choice
    assert ours.layer_map.shape == (len(x), *layout[1:])
    theirs = reference(method, model, layer, x, y, layout)
    r = pearson(ours.map.numpy(), theirs)
    print(f"{name} {layer} {method}: Pearson {np.round(r, 6)}")
    assert ours.map.shape == theirs.shape == (len(x), *x.shape[-2:])
    assert (r >= 0.999).all(), r
    assert float(ours.layer_map.amax()) > 0.99  # a real map, not zeros


def test_grad_cam_pp_on_a_random_vit_differs_from_the_reference_by_its_eps():
    """A random-weight ViT's gradients at the layer are ~1e-5, so pytorch-grad-cam's 1e-6 in
    alpha's denominator outweighs 2 g^2 there: the paper's formula (eps=0, the default)
    gives another map, and `eps=1e-6` gives the reference's (the test above)."""
    model, x, y, layer, layout = case("timm-vit-tiny")
    theirs = reference("grad_cam_pp", model, layer, x, y, layout)
    paper = saliency.cam_map(model, x, y, method="grad_cam_pp", normalize=True)
    r = pearson(paper.map.numpy(), theirs)
    print(f"timm-vit-tiny grad_cam_pp, eps=0: Pearson {np.round(r, 6)}")
    assert (r < 0.95).all(), r
    with pytest.raises(ValueError, match="eps is Grad-CAM\\+\\+'s, a finite number >= 0"):
        saliency.cam_map(model, x, y, method="grad_cam", eps=1e-6)
    with pytest.raises(TypeError, match="grad_cam got unexpected option eps"):
        saliency.attribute(model, x, y, method="grad_cam", eps=1e-6)


def test_find_layer_names_the_last_blocks_norm_of_each_vit():
    """And a token model without attention (MLP-Mixer) its last token grid, the final norm."""
    for name in ("mnist-vit", "timm-registers", "torchvision", "timm-mixer"):
        model, x, _, layer, (prefix, h, w) = case(name)
        found = saliency.find_layer(model, x)
        assert (found.name, found.tokens, found.grid) == (layer, (prefix, h, w), (h, w))
        assert found.spatial and found.shape[1] == prefix + h * w
    found = saliency.find_layer(case("mnist-vit")[0], case("mnist-vit")[1])
    assert found.label == "1.blocks.3.norm1 (patch tokens, 4 × 4)"
    # The patch embedding is still a layer, an image-like one, but no longer the choice.
    every = {l.name: l for l in saliency.layers(case("mnist-vit")[0], case("mnist-vit")[1])}
    embed = every["1.patch_embed"]
    assert embed.spatial and embed.tokens is None and embed.label == "1.patch_embed"
    assert every["1.head"].tokens is None and not every["1.head"].spatial


def test_torchvision_vit_b_16_picks_its_last_ln_1():
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(num_classes=4).eval()
    found = saliency.find_layer(model, torch.rand(1, 3, 224, 224))
    assert (found.name, found.tokens) == ("encoder.layers.encoder_layer_11.ln_1", (1, 14, 14))


def test_a_cnns_automatic_layer_is_unchanged():
    cnn, x = pretrained.load_model("mnist-cnn", device="cpu"), mnist_vit()[1]
    found = saliency.find_layer(cnn, x)
    assert (found.name, found.tokens) == ("6", None)
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(num_classes=10).eval()
    found = saliency.find_layer(resnet, torch.rand(1, 3, 64, 64))
    assert (found.name, found.tokens) == ("layer4", None)


def test_the_prefix_is_inferred_when_the_model_does_not_say():
    """Without `num_prefix_tokens` or a class token, T - h * w from the patch embedding."""
    model, x, y, layer, _ = case("mnist-vit")
    anonymous = copy.deepcopy(model)
    del anonymous[1].num_prefix_tokens
    found = saliency.find_layer(anonymous, x)
    assert (found.name, found.tokens) == (layer, (1, 4, 4))
    torch.testing.assert_close(
        saliency.cam_map(anonymous, x, y).map, saliency.cam_map(model, x, y).map
    )


def test_a_token_layer_the_head_never_reads_is_refused():
    """After the last attention a class-token head reads token 0 alone: the patches'
    gradient is exactly zero, and Grad-CAM there would be blank."""
    model, x, y, _, _ = case("mnist-vit")
    for layer in ("1.blocks.3", "1.norm"):
        with pytest.raises(ValueError, match=(
            f"^the model's scores do not depend on the patch tokens of layer '{layer}': a "
            "class-token head reads only the class token after the last attention layer"
        )):  # fmt: skip
            saliency.attribute(model, x, y, method="grad_cam", layer=layer)
    # An earlier block, named, is read the same way and agrees with the reference there.
    ours = saliency.cam_map(model, x, y, layer="1.blocks.2", normalize=True)
    theirs = reference("grad_cam", model, "1.blocks.2", x, y, (1, 4, 4))
    assert (pearson(ours.map.numpy(), theirs) >= 0.999).all()
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_every_class_and_the_batch_on_a_vit():
    model, x, _, _, _ = case("mnist-vit")
    maps = saliency.class_maps(model, x, [1, 7], method="grad_cam")
    assert maps.shape == (3, 2, 1, 28, 28)
    for j, k in enumerate([1, 7]):
        alone = torch.cat([saliency.attribute(model, x[i : i + 1], k, method="grad_cam")
                           for i in range(len(x))])  # fmt: skip
        torch.testing.assert_close(maps[:, j], alone, rtol=1e-4, atol=1e-6)


def test_the_dashboards_layer_choices_include_the_token_layers():
    from sandbox import jobs

    model, x, _, _, _ = case("mnist-vit")
    facts = jobs.method_facts(model, x[:1].numpy(), method="grad_cam")
    assert facts["problem"] == "" and facts["layer"] == "1.blocks.3.norm1"
    assert {"1.patch_embed", "1.blocks.0.norm1", "1.blocks.3.norm1"} <= set(facts["layers"])
    chosen = jobs.method_facts(model, x[:1].numpy(), method="layer_cam", layer="1.blocks.1")
    assert chosen == {**chosen, "problem": "", "layer": "1.blocks.1"}


@pytest.mark.slow
def test_a_vit_uploads_layer_maps_in_its_locked_down_worker():
    """An upload's worker can import nothing once locked down: the token layers are found and
    read there as in the library, for the layer the page offers by default."""
    import hostile

    from sandbox import safetensors_file, user_models

    if hostile.sandbox.unavailable():
        pytest.skip("no sandbox here")
    original, x, _, layer, _ = case("mnist-vit")
    data = safetensors_file.dumps(original.state_dict())
    w, _ = user_models.accept_upload(data, dataset="mnist", architecture="vit")
    try:
        facts = w.call("method_facts", x[:1].numpy(), method="grad_cam")
        assert facts["problem"] == "" and facts["layer"] == layer
        for method in ("grad_cam", "layer_cam"):
            got = w.call("class_maps", x.numpy(), method=method, score="logit", absolute=True,
                         classes=[3, 7])  # fmt: skip
            expected = saliency.class_maps(original, x, [3, 7], method=method, absolute=True)
            np.testing.assert_allclose(got, expected.numpy(), rtol=1e-4, atol=1e-6)
    finally:
        w.stop()
