"""Relevance and transformer maps against independent implementations (issue 32).

- Attention rollout (Abnar & Zuidema 2020) and gradient rollout (Chefer et al. 2021) against
  the papers' formulas written out here, on attention weights from a forward pass also written
  out here from each model's parameters (its logits checked equal to the model's own): on the
  registry's mnist-vit, a timm ViT (with and without register tokens) and a torchvision ViT,
  the last two with random weights.
- LRP (Zennit) against Captum's LRP on the same rules, on the registry's CNNs.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import pretrained
import saliency
from saliency.relevance import lrp
from saliency.transformer import attention_rollout, gradient_rollout

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")


# --------------------------------------------------------------------------------------------
# A ViT's forward written out, with its attention weights in the open


class Written:
    """A model's forward re-written from its parameters: `embed(x)` -> (N, T, D) tokens with
    the prefix tokens first, `blocks` of (norm1, qkv, heads, proj, norm2, mlp), `head(t)`."""

    def __init__(self, embed, blocks, head, prefix):
        self.embed, self.blocks, self.head, self.prefix = embed, blocks, head, prefix

    def __call__(self, x):
        t = self.embed(x)
        weights = []
        for norm1, qkv, heads, proj, norm2, mlp in self.blocks:
            n, tokens, d = t.shape
            q, k, v = qkv(norm1(t)).reshape(n, tokens, 3, heads, d // heads).unbind(2)
            q, k, v = (a.transpose(1, 2) for a in (q, k, v))  # (N, heads, T, d)
            attn = (q @ k.transpose(-2, -1) / math.sqrt(d // heads)).softmax(-1)
            weights.append(attn)
            t = t + proj((attn @ v).transpose(1, 2).reshape(n, tokens, d))
            t = t + mlp(norm2(t))
        return self.head(t), weights


def _written_mnist_vit(model):
    normalize, vit = model[0], model[1]

    def embed(x):
        t = vit.patch_embed(normalize(x)).flatten(2).transpose(1, 2)
        return torch.cat([vit.cls_token.expand(len(x), -1, -1), t], 1) + vit.pos_embed

    blocks = [
        (b.norm1, b.attn.qkv, b.attn.num_heads, b.attn.proj, b.norm2, b.mlp) for b in vit.blocks
    ]
    return Written(embed, blocks, lambda t: vit.head(vit.norm(t)[:, 0]), 1)


def _written_timm(model):
    def embed(x):
        return model._pos_embed(model.patch_embed(x))  # cls and register tokens first

    blocks = [(b.norm1, b.attn.qkv, b.attn.num_heads, b.attn.proj, b.norm2, b.mlp)
              for b in model.blocks]  # fmt: skip
    return Written(
        embed, blocks, lambda t: model.forward_head(model.norm(t)), model.num_prefix_tokens
    )


def _written_torchvision(model):
    def embed(x):
        t = model._process_input(x)
        cls = model.class_token.expand(len(x), -1, -1)
        return torch.cat([cls, t], 1) + model.encoder.pos_embedding

    def qkv(mha):
        return lambda h: F.linear(h, mha.in_proj_weight, mha.in_proj_bias)

    blocks = [
        (b.ln_1, qkv(b.self_attention), b.self_attention.num_heads, b.self_attention.out_proj,
         b.ln_2, b.mlp)
        for b in model.encoder.layers
    ]  # fmt: skip
    return Written(embed, blocks, lambda t: model.heads(model.encoder.ln(t)[:, 0]), 1)


def _reference_rollout(weights, prefix, grid, cls=True):
    """Abnar & Zuidema 2020, eq. for attention rollout: A~ = 0.5 W_att + 0.5 I per layer
    (heads averaged), rollout = A~_L ... A~_1, read at the CLS row (without a class token:
    the mean of the patch rows), one example at a time."""
    maps = []
    for i in range(weights[0].shape[0]):
        r = None
        for w in weights:
            a = 0.5 * w[i].mean(0) + 0.5 * torch.eye(w.shape[-1], dtype=w.dtype)
            r = a if r is None else a @ r
        row = r[0] if cls else r[prefix:].mean(0)
        maps.append(row[prefix:].reshape(grid))
    return torch.stack(maps)


def _reference_gradient_rollout(weights, grads, prefix, grid, cls=True):
    """Chefer et al. 2021 (ICCV), eqs. 5-6 for self-attention: Abar = E_h[(grad * A)^+],
    R = I, R <- R + Abar R, read at the CLS row (or the patch rows' mean)."""
    maps = []
    for i in range(weights[0].shape[0]):
        r = torch.eye(weights[0].shape[-1], dtype=weights[0].dtype)
        for w, g in zip(weights, grads, strict=True):
            abar = (g[i] * w[i]).clamp(min=0).mean(0)
            r = r + abar @ r
        row = r[0] if cls else r[prefix:].mean(0)
        maps.append(row[prefix:].reshape(grid))
    return torch.stack(maps)


def _mnist_vit():
    return pretrained.load_model("mnist-vit", device="cpu"), _written_mnist_vit


def _timm_vit(**kw):
    torch.manual_seed(0)
    model = timm.models.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=48, depth=3, num_heads=3, num_classes=5, **kw
    )
    return model.eval(), _written_timm


def _torchvision_vit():
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=3, num_heads=2, hidden_dim=32, mlp_dim=64,
        num_classes=5,
    )  # fmt: skip
    nn.init.normal_(model.heads.head.weight)  # torchvision starts it at zero: no gradient
    return model.eval(), _written_torchvision


VITS = {
    "mnist-vit": (_mnist_vit, (1, 28, 28), (4, 4)),
    "timm": (_timm_vit, (3, 32, 32), (4, 4)),
    "timm-registers": (lambda: _timm_vit(reg_tokens=2), (3, 32, 32), (4, 4)),
    "torchvision": (_torchvision_vit, (3, 32, 32), (4, 4)),
    "timm-no-class-token": (
        lambda: _timm_vit(class_token=False, reg_tokens=2, global_pool="avg"),
        (3, 32, 32),
        (4, 4),
    ),
}


def _vit_case(name, n=3):
    make, shape, grid = VITS[name]
    model, write = make()
    model = copy.deepcopy(model).double()  # float64: the comparisons can be tight
    torch.manual_seed(1)
    if name == "mnist-vit":
        x = pretrained.load_dataset("mnist")[:n][0].double()
    else:
        x = torch.rand(n, *shape, dtype=torch.float64)
    written = write(model)
    with torch.no_grad():
        torch.testing.assert_close(written(x)[0], model(x), rtol=1e-9, atol=1e-9)
    return model, x, written, grid


@pytest.mark.parametrize("name", list(VITS))
def test_attention_rollout_is_the_papers_formula(name):
    model, x, written, grid = _vit_case(name)
    with torch.no_grad():
        _, weights = written(x)
    cls = name != "timm-no-class-token"
    expected = _reference_rollout(weights, written.prefix, grid, cls)  # (N, 4, 4)
    raw = attention_rollout(model, x, upsample=False)
    assert raw.shape == (len(x), *grid)
    torch.testing.assert_close(raw, expected, rtol=1e-10, atol=1e-12)
    # The rows of every A~ sum to 1, so the CLS row of the product does too: what is left for
    # the patches is 1 minus what stays on the prefix tokens, strictly between 0 and 1.
    assert ((raw.sum((1, 2)) > 0) & (raw.sum((1, 2)) < 1)).all()
    up = attention_rollout(model, x)
    assert up.shape == x.shape
    torch.testing.assert_close(
        up[:, :1],
        F.interpolate(expected[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False),
    )
    assert torch.equal(up[:, 0], up[:, -1])  # the same map on every channel


@pytest.mark.parametrize("name", list(VITS))
def test_gradient_rollout_is_the_papers_formula(name):
    model, x, written, grid = _vit_case(name)
    target = torch.tensor([2, 0, 1])
    out, weights = written(x.clone().requires_grad_())  # frozen weights: grad flows from x
    grads = torch.autograd.grad(out.gather(1, target[:, None]).sum(), weights)
    expected = _reference_gradient_rollout(
        [w.detach() for w in weights], grads, written.prefix, grid, name != "timm-no-class-token"
    )
    raw = gradient_rollout(model, x, target, upsample=False)
    torch.testing.assert_close(raw, expected, rtol=1e-10, atol=1e-12)
    # Can fail: another class gives another map.
    other = gradient_rollout(model, x, torch.tensor([1, 2, 0]), upsample=False)
    spread = (raw - raw.mean((1, 2), keepdim=True)).abs().max()  # the identity's share aside
    assert (other - raw).abs().max() > 1e-2 * spread
    assert gradient_rollout(model, x, target).shape == x.shape
    assert all(p.grad is None for p in model.parameters())


def test_rollout_leaves_the_model_as_it_was_and_is_batch_invariant():
    model, _ = _timm_vit()
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
    fused = [b.attn.fused_attn for b in model.blocks]
    together = gradient_rollout(model, x, 1)
    alone = torch.cat([gradient_rollout(model, x[i : i + 1], 1) for i in range(4)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(
        attention_rollout(model, x),
        torch.cat([attention_rollout(model, x[i : i + 1]) for i in range(4)]),
    )
    assert [b.attn.fused_attn for b in model.blocks] == fused == [True] * 3
    assert not any(m._forward_hooks for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(x), before)
    tv, _ = _torchvision_vit()
    gradient_rollout(tv, torch.rand(2, 3, 32, 32))
    assert not any(m._forward_hooks for m in tv.modules())


@pytest.mark.parametrize("make", [_timm_vit, _torchvision_vit])
def test_rollout_hooks_ignore_other_threads(make):
    """A model cached for every session runs other requests meanwhile: a forward on another
    thread in the middle of a rollout neither lands in the rollout nor sees its hooks."""
    import threading

    model, _ = make()
    x, other = torch.rand(2, 3, 32, 32), torch.rand(3, 3, 32, 32)
    expected = gradient_rollout(model, x, 1)
    with torch.no_grad():
        other_expected = model(other)
    seen = []

    def meanwhile(_module, _args):
        if threading.current_thread() is threading.main_thread():
            thread = threading.Thread(target=lambda: seen.append(model(other).detach()))
            thread.start()
            thread.join()

    handle = model.register_forward_pre_hook(meanwhile)
    try:
        got = gradient_rollout(model, x, 1)
    finally:
        handle.remove()
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(seen[0], other_expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", [attention_rollout, gradient_rollout])
def test_rollout_refuses_what_is_not_a_transformer(method):
    model = pretrained.load_model("mnist-cnn", device="cpu")
    x = pretrained.load_dataset("mnist")[:2][0]
    words = method.__name__.replace("_", " ")
    with pytest.raises(ValueError) as err:
        method(model, x)
    assert str(err.value) == (
        f"{words} needs a transformer: Sequential has no self-attention layer "
        "(nn.MultiheadAttention or a timm-style Attention)"
    )
    vit = pretrained.load_model("mnist-vit", device="cpu")
    with pytest.raises(ValueError) as err:
        method(vit, x.flatten(1))
    assert str(err.value) == f"{words} needs images (N, C, H, W) or (N, H, W); got shape (2, 784)"
    with pytest.raises(ValueError, match="finite"):
        method(vit, torch.full((1, 1, 28, 28), float("nan")))


def test_patch_grid_follows_the_input_shape():
    from saliency.transformer import _grid

    assert _grid(17, 1, 28, 28) == (1, 4, 4)
    assert _grid(53, 5, 64, 48) == (5, 8, 6)  # CLS and 4 registers, 8 x 6 patches
    assert _grid(16, None, 28, 28) == (0, 4, 4)  # nothing says: the first count that fits
    with pytest.raises(ValueError) as err:
        _grid(17, 1, 28, 14)
    assert str(err.value) == (
        "cannot arrange 17 tokens into a patch grid for a 28x14 input after 1 prefix tokens"
    )


def test_rollout_on_the_trained_mnist_vit_looks_at_the_digit():
    model = pretrained.load_model("mnist-vit", device="cpu")
    x = pretrained.load_dataset("mnist")[:32][0]
    raw = gradient_rollout(model, x, upsample=False)  # (32, 4, 4)
    ink = F.avg_pool2d(x, 7)[:, 0]  # (32, 4, 4): how much of each patch is digit
    # The map puts more weight on patches with ink than on empty ones, for most images.
    inked = (raw * (ink > 0.05)).sum((1, 2)) / (ink > 0.05).sum((1, 2))
    empty = (raw * (ink <= 0.05)).sum((1, 2)) / (ink <= 0.05).sum((1, 2)).clamp(min=1)
    assert (inked > empty).float().mean() >= 0.8


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_rollout_and_lrp_on_cuda_equal_cpu():
    for make in (_mnist_vit,):
        model, _ = make()
        x = pretrained.load_dataset("mnist")[:4][0]
        for fn in (attention_rollout, gradient_rollout):
            torch.testing.assert_close(fn(model.cuda(), x.cuda()).cpu(), fn(model.cpu(), x),
                                       rtol=1e-3, atol=1e-5)  # fmt: skip
    cnn = pretrained.load_model("mnist-cnn", device="cpu")
    torch.testing.assert_close(lrp(cnn.cuda(), x.cuda()).cpu(), lrp(cnn.cpu(), x),
                               rtol=1e-3, atol=1e-5)  # fmt: skip


# --------------------------------------------------------------------------------------------
# LRP: Zennit (the library) against Captum (the reference)


class _CaptumReady(nn.Module):
    """The same layers with the flattening done in forward: Captum's LRP has no rule for
    `nn.Flatten` (its IdentityRule needs equal shapes)."""

    def __init__(self, seq: nn.Sequential) -> None:
        super().__init__()
        cut = [type(m) for m in seq].index(nn.Flatten)
        self.features, self.classifier = seq[:cut], seq[cut + 1 :]

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def _captum_lrp(model: nn.Sequential, x, target, conv_rule):
    from captum.attr import LRP
    from captum.attr._utils.lrp_rules import EpsilonRule, IdentityRule

    ready = _CaptumReady(copy.deepcopy(model))
    for m in ready.modules():
        if isinstance(m, pretrained.Normalize):
            m.rule = IdentityRule()  # relevance passes through unchanged, as in the library
        elif isinstance(m, nn.Conv2d):
            m.rule = conv_rule()
        elif isinstance(m, nn.Linear):
            m.rule = EpsilonRule(epsilon=1e-6)
    return LRP(ready).attribute(x.clone().requires_grad_(), target=target).detach()


def _agree(ours, reference):
    pearson = torch.corrcoef(torch.stack([ours.flatten(), reference.flatten()]))[0, 1]
    scale = reference.abs().max()
    return float(pearson), float((ours - reference).abs().max() / scale)


@pytest.mark.parametrize("name", ["mnist-cnn", "fashion-mnist-cnn", "mnist-mlp"])
def test_lrp_epsilon_equals_captums(name):
    from captum.attr._utils.lrp_rules import EpsilonRule

    model = pretrained.load_model(name, device="cpu")
    x, y = pretrained.load_dataset(pretrained.model_info(name).dataset)[:16]
    ours = lrp(model, x, y, composite="epsilon")
    reference = _captum_lrp(model, x, y, lambda: EpsilonRule(epsilon=1e-6))
    pearson, worst = _agree(ours, reference)
    assert pearson >= 0.99999 and worst <= 1e-5, (pearson, worst)
    # Conservation: without biases (which absorb relevance) a ReLU net's relevance sums to
    # the target's logit, the normalisation layer passing it through.
    unbiased = copy.deepcopy(model)
    for m in unbiased.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.bias.zero_()
    with torch.no_grad():
        logits = unbiased(x).gather(1, y[:, None])[:, 0]
    kept = lrp(unbiased, x, y, composite="epsilon").sum((1, 2, 3))
    torch.testing.assert_close(kept, logits, rtol=1e-4, atol=1e-4)


def test_lrp_epsilon_plus_equals_captums_alpha1_beta0():
    """z+ on the convolutions, epsilon on the linear layers. Zennit's z+ takes x+ w+ and
    x- w- (and the positive part of biases); Captum's alpha-1-beta-0 takes x w+ with the whole
    bias. They agree where the convolutions see non-negative inputs and have no bias: the
    net from its first convolution on, on raw pixels, with the convolutions' biases zeroed."""
    from captum.attr._utils.lrp_rules import Alpha1_Beta0_Rule

    net = copy.deepcopy(pretrained.load_model("mnist-cnn", device="cpu"))[1:]
    for m in net:
        if isinstance(m, nn.Conv2d):
            m.bias.zero_()
    x, y = pretrained.load_dataset("mnist")[:16]
    ours = lrp(net, x, y)  # the default composite
    reference = _captum_lrp(net, x, y, lambda: Alpha1_Beta0_Rule(set_bias_to_zero=True))
    pearson, worst = _agree(ours, reference)
    assert pearson >= 0.99999 and worst <= 1e-5, (pearson, worst)
    # Can fail: it is not the epsilon composite's map.
    assert _agree(lrp(net, x, y, composite="epsilon"), reference)[0] < 0.99


def test_lrp_merges_batchnorm_into_the_convolution():
    from captum.attr._utils.lrp_rules import EpsilonRule

    model = pretrained.load_model("mnist-cnn-bn", device="cpu")
    x, y = pretrained.load_dataset("mnist")[:8]
    folded = []  # the BatchNorms folded by hand into the convolutions before them
    for m in copy.deepcopy(model):
        if isinstance(m, nn.BatchNorm2d):
            conv = folded[-1]
            scale = m.weight / (m.running_var + m.eps).sqrt()
            fused = nn.Conv2d(conv.in_channels, conv.out_channels, 3, padding=1)
            with torch.no_grad():
                fused.weight.copy_(conv.weight * scale[:, None, None, None])
                fused.bias.copy_(m.bias - m.running_mean * scale)
            folded[-1] = fused
        else:
            folded.append(m)
    folded = nn.Sequential(*folded).eval()
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)
    ours = lrp(model, x, y, composite="epsilon")
    pearson, worst = _agree(ours, _captum_lrp(folded, x, y, lambda: EpsilonRule(epsilon=1e-6)))
    assert pearson >= 0.99999 and worst <= 1e-4, (pearson, worst)


def test_lrp_leaves_the_model_untouched_and_runs_on_a_resnet():
    model = pretrained.load_model("mnist-cnn", device="cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = pretrained.load_dataset("mnist")[:4][0]
    x0 = x.clone()
    r = lrp(model, x, 3)
    assert r.shape == x.shape and torch.equal(x, x0) and not x.requires_grad
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks or m._backward_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(num_classes=10).eval()
    pictures = torch.rand(2, 3, 64, 64)
    r = lrp(resnet, pictures, composite="epsilon")
    assert r.shape == pictures.shape and torch.isfinite(r).all() and r.abs().sum() > 0


def test_lrp_refuses_with_plain_messages():
    x = pretrained.load_dataset("mnist")[:2][0]
    cnn = pretrained.load_model("mnist-cnn", device="cpu")
    cases = [
        (pretrained.load_model("mnist-vit", device="cpu"), {},
         "lrp has no rule for attention (layer '1.blocks.0.attn'): for a transformer use "
         "attention_rollout or gradient_rollout"),
        (nn.Sequential(nn.Flatten(), nn.LayerNorm(784), nn.Linear(784, 10)), {},
         "lrp has no rule for LayerNorm (layer '1'); it needs a network of convolutions, "
         "linear layers, BatchNorm, pooling and activations"),
        (cnn, {"composite": "alpha2_beta1"},
         "composite must be one of epsilon_plus, epsilon; got 'alpha2_beta1'"),
        (cnn, {"score": "probability"},
         "lrp explains the logit; score='probability' is not defined for it"),
        (cnn, {"epsilon": 0.0}, "epsilon must be positive, got 0.0"),
        (lambda t: cnn(t), {}, "lrp needs the model as an nn.Module (its layers carry the rules)"),
    ]  # fmt: skip
    for model, options, message in cases:
        with pytest.raises(ValueError) as err:
            lrp(model, x, **options)
        assert str(err.value) == message


def test_library_names_and_dispatch():
    assert {"lrp", "attention_rollout", "gradient_rollout"} <= set(dir(saliency))
    families = {m: saliency.method_info(m).family for m in ("lrp", "gradient_rollout")}
    assert families == {"lrp": "relevance (LRP)", "gradient_rollout": "transformer"}
    cnn = pretrained.load_model("mnist-cnn", device="cpu")
    vit = pretrained.load_model("mnist-vit", device="cpu")
    x = pretrained.load_dataset("mnist")[:3][0]
    r = saliency.attribute(cnn, x, 4, method="lrp", composite="epsilon")
    torch.testing.assert_close(r, lrp(cnn, x, 4, composite="epsilon"))
    assert (r < 0).any()  # signed by default
    torch.testing.assert_close(
        saliency.attribute(cnn, x, 4, method="lrp", absolute=True), lrp(cnn, x, 4).abs()
    )
    torch.testing.assert_close(
        saliency.attribute(vit, x, method="attention_rollout"), attention_rollout(vit, x)
    )
    every = saliency.class_maps(vit, x, [1, 7], method="gradient_rollout")  # (3, 2, 1, 28, 28)
    assert every.shape == (3, 2, 1, 28, 28)
    torch.testing.assert_close(every[:, 1], gradient_rollout(vit, x, 7), rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError) as err:
        saliency.class_maps(vit, x, method="attention_rollout")
    assert str(err.value).startswith("Attention rollout has no class")
    with pytest.raises(ValueError, match="attention rollout needs a transformer"):
        saliency.attribute(cnn, x, method="attention_rollout")


def test_the_registry_adapters_pass_options_through_and_pickle_by_name():
    import pickle

    from saliency import cam, relevance, transformer

    vit = pretrained.load_model("mnist-vit", device="cpu")
    x = pretrained.load_dataset("mnist")[:2][0]
    torch.testing.assert_close(
        saliency.attribute(vit, x, 3, method="gradient_rollout", upsample=False),
        gradient_rollout(vit, x, 3, upsample=False),
    )
    # No class: the target, score and output are not the rollout's to use.
    torch.testing.assert_close(
        transformer.attention_rollout_method(vit, x, 5, score="probability", upsample=False),
        attention_rollout(vit, x, upsample=False),
    )
    with pytest.raises(TypeError, match="window"):
        saliency.attribute(vit, x, method="gradient_rollout", window=4)
    adapters = (relevance.lrp_method, transformer.attention_rollout_method,
                transformer.gradient_rollout_method, cam.grad_cam, cam.score_cam)  # fmt: skip
    assert all(pickle.loads(pickle.dumps(f)) is f for f in adapters)
