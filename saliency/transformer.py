"""Transformer maps: attention rollout and gradient-weighted rollout, on the patch grid.

Both follow the attention from the CLS token back through every block to the image patches:

- `attention_rollout` (Abnar & Zuidema 2020): each block's attention averaged over heads, with
  the residual connection as an identity, A_l = 0.5 mean_h(attn_l) + 0.5 I; the rollout is
  A_L @ ... @ A_1 and the map is its CLS row over the patch tokens. It has no class.
- `gradient_rollout` (Chefer et al. 2021, "Generic attention-model explainability"):
  each block's attention weighted by the gradient of the class score with respect to it,
  Abar_l = mean_h((d score / d attn_l * attn_l)^+), accumulated from R = I as
  R <- R + Abar_l @ R; the map is R's CLS row over the patch tokens.

Where the attention weights come from: fused attention (`scaled_dot_product_attention`) never
shows them, so for the computation

- a timm-style attention module (a `fused_attn` flag and an `attn_drop` submodule: timm's ViT
  and DeiT, and the registry's `mnist-vit`) is switched to its explicit path (`fused_attn =
  False`, restored afterwards), and a forward hook on `attn_drop` reads the softmax weights;
- an `nn.MultiheadAttention` (torchvision's `VisionTransformer`) is recomputed by a forward
  hook from its own projection weights with the softmax made explicit, and the hook's result
  replaces the module's output, so the rest of the forward pass (and the gradient) runs
  through the weights the hook read. Only plain self-attention is accepted (no masks).

A model cached for every session of a server may be running another request meanwhile: the
hooks act only for the thread that registered them, and the `fused_attn` switch is counted per
module under a lock, so the last computation to finish restores it (another thread's forward
in the meantime takes the explicit path, which gives the same scores up to rounding).

The CLS token is row 0; it and the other prefix tokens (register and distillation tokens) are
dropped from the columns: their number is the model's `num_prefix_tokens` (timm, mnist-vit),
or 1 for torchvision (`class_token`). The patch grid is the remaining tokens arranged with the
input's aspect ratio. Maps are upsampled to the input's height and width (bilinear, as the CAM
references do) and repeated over its channels, so they come back shaped like `x`;
`upsample=False` gives the raw `(N, grid_h, grid_w)` grid. A model without a class token (a
timm ViT with average pooling) is read through the mean of its patch rows. Values are the
rollout's own (not rescaled).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from contextlib import ExitStack, contextmanager

import torch
from torch import nn

from ._validate import (
    OutputSelector,
    Target,
    check_input,
    check_score,
    eval_mode,
    forward_scores,
    registry_method,
    resolve_target,
)


def _attention_modules(model: Callable) -> list[nn.Module]:
    if not isinstance(model, nn.Module):
        return []
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.MultiheadAttention)
        or (hasattr(m, "fused_attn") and isinstance(getattr(m, "attn_drop", None), nn.Module))
    ]


def _prefix_tokens(model: nn.Module) -> tuple[int | None, bool]:
    """(how many tokens come before the patches, whether the first is a class token): timm's
    and mnist-vit's `num_prefix_tokens` and `cls_token` (None in a timm ViT built without
    one, whose prefix is then register tokens only), torchvision's `class_token`."""
    for m in model.modules():
        n = getattr(m, "num_prefix_tokens", None)
        if isinstance(n, int):
            return n, isinstance(getattr(m, "cls_token", None), nn.Parameter)
        if isinstance(getattr(m, "class_token", None), nn.Parameter):  # torchvision
            return 1, True
    return None, True


def _explicit_mha(
    mha: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-attention as `nn.MultiheadAttention` computes it, with the softmax in the open:
    `(attn_output, weights (N, heads, T, T))`."""
    if not (query is key and key is value):
        raise ValueError("attention rollout reads self-attention only (query, key and value equal)")
    if not mha._qkv_same_embed_dim or mha.bias_k is not None or mha.add_zero_attn:
        raise ValueError("attention rollout reads only a plain nn.MultiheadAttention")
    x = query if mha.batch_first else query.transpose(0, 1)  # (N, T, D)
    n, t, d = x.shape
    h = mha.num_heads
    qkv = nn.functional.linear(x, mha.in_proj_weight, mha.in_proj_bias)  # (N, T, 3D)
    q, k, v = qkv.reshape(n, t, 3, h, d // h).permute(2, 0, 3, 1, 4)  # each (N, h, T, D/h)
    attn = (q @ k.transpose(-2, -1) / math.sqrt(d // h)).softmax(-1)  # (N, h, T, T)
    out = (attn @ v).transpose(1, 2).reshape(n, t, d)
    out = mha.out_proj(out)
    return (out if mha.batch_first else out.transpose(0, 1)), attn


_explicit_lock = threading.Lock()
_explicit_users: dict[int, tuple[int, object]] = {}  # id(module) -> (users, original flag)


@contextmanager
def _explicit(module: nn.Module):
    """`module.fused_attn = False` while any thread needs it; the original flag afterwards."""
    key = id(module)
    with _explicit_lock:
        users, original = _explicit_users.get(key, (0, module.fused_attn))
        _explicit_users[key] = (users + 1, original)
        module.fused_attn = False
    try:
        yield
    finally:
        with _explicit_lock:
            users, original = _explicit_users.pop(key)
            if users > 1:
                _explicit_users[key] = (users - 1, original)
            else:
                module.fused_attn = original


@contextmanager
def _recording(model: nn.Module, method: str):
    """Run the model's attention explicitly and collect each block's weights, in the order
    forward uses them: yields the list the hooks append `(N, heads, T, T)` tensors to."""
    modules = _attention_modules(model)
    if not modules:
        raise ValueError(
            f"{method.replace('_', ' ')} needs a transformer: {type(model).__name__} has no "
            "self-attention layer (nn.MultiheadAttention or a timm-style Attention)"
        )
    weights: list[torch.Tensor] = []
    owner = threading.get_ident()

    def read(_module, _args, out):
        if threading.get_ident() == owner:
            weights.append(out)

    def mha_hook(module, args, kwargs, _out):
        if threading.get_ident() != owner:
            return None
        names = ("query", "key", "value")
        q, k, v = (*args, *(kwargs.get(name) for name in names[len(args) :]))[:3]
        for mask in ("key_padding_mask", "attn_mask"):
            if kwargs.get(mask) is not None:
                raise ValueError(f"attention rollout reads unmasked attention; got a {mask}")
        out, attn = _explicit_mha(module, q, k, v)
        weights.append(attn)
        return out, attn.mean(1)

    with ExitStack() as stack:
        for m in modules:
            if isinstance(m, nn.MultiheadAttention):
                handle = m.register_forward_hook(mha_hook, with_kwargs=True)
            else:
                stack.enter_context(_explicit(m))
                handle = m.attn_drop.register_forward_hook(read)
            stack.callback(handle.remove)
        yield weights


def _grid(tokens: int, prefix: int | None, height: int, width: int) -> tuple[int, int, int]:
    """(prefix, grid_h, grid_w): the patches arranged with the input's aspect ratio."""
    candidates = [prefix] if prefix is not None else range(0, 9)
    for p in candidates:
        n = tokens - p
        gw = max(1, round(math.sqrt(n * width / height)))
        if n > 0 and n % gw == 0 and abs((n // gw) / gw - height / width) <= 0.5 * height / width:
            return p, n // gw, gw
    raise ValueError(
        f"cannot arrange {tokens} tokens into a patch grid for a {height}x{width} input"
        + (f" after {prefix} prefix tokens" if prefix is not None else "")
    )


def _patch_map(r: torch.Tensor, model: nn.Module, x: torch.Tensor, upsample: bool) -> torch.Tensor:
    """The CLS row (or the patch rows' mean) of `r` (N, T, T) over the patches, as a map."""
    known, cls = _prefix_tokens(model)
    prefix, gh, gw = _grid(r.shape[-1], known, x.shape[-2], x.shape[-1])
    rows = r[:, 0] if prefix > 0 and cls else r[:, prefix:].mean(1)  # (N, T)
    grid = rows[:, prefix:].reshape(-1, 1, gh, gw)  # (N, 1, gh, gw)
    if not upsample:
        return grid[:, 0]
    up = nn.functional.interpolate(grid, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return up.expand(-1, x.shape[1], -1, -1).contiguous() if x.dim() == 4 else up[:, 0]


def _check_image(x: torch.Tensor, method: str) -> None:
    check_input(x)
    if x.dim() not in (3, 4):
        raise ValueError(
            f"{method.replace('_', ' ')} needs images (N, C, H, W) or (N, H, W); "
            f"got shape {tuple(x.shape)}"
        )


def attention_rollout(model: nn.Module, x: torch.Tensor, *, upsample: bool = True) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020): how much each patch flows into the CLS token.

    Returns a map shaped like `x` (or `(N, grid_h, grid_w)` with `upsample=False`), the same
    for every class. The model must contain self-attention (see the module's docstring);
    anything else raises "attention rollout needs a transformer". Computed in eval mode,
    without gradients; the model is left as it was.

    Example:
        >>> m = attention_rollout(load_model("mnist-vit"), images[:8])   # (8, 1, 28, 28)
    """
    _check_image(x, "attention_rollout")
    with eval_mode(model), torch.no_grad(), _recording(model, "attention_rollout") as weights:
        model(x)
    eye = torch.eye(weights[0].shape[-1], dtype=x.dtype, device=x.device)
    r = eye.expand(x.shape[0], -1, -1)
    for attn in weights:
        a = 0.5 * attn.mean(1) + 0.5 * eye  # (N, T, T): heads averaged, residual added
        r = a @ r
    return _patch_map(r, model, x, upsample)


def gradient_rollout(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    *,
    score: str = "logit",
    output: OutputSelector = None,
    upsample: bool = True,
) -> torch.Tensor:
    """Gradient-weighted attention rollout (Chefer et al. 2021) for one class per example.

    Returns a non-negative map shaped like `x` (or `(N, grid_h, grid_w)` with
    `upsample=False`). `target`, `score` and `output` are as in `gradients`; one backward pass
    serves the whole batch (eval mode: the examples don't interact). Parameters' `.grad` are
    never written; the model is left as it was.
    """
    _check_image(x, "gradient_rollout")
    check_score(score)
    xd = x.detach().requires_grad_(True)  # so that the attention depends on something
    with eval_mode(model), torch.enable_grad():
        with _recording(model, "gradient_rollout") as weights:
            out, scores = forward_scores(model, xd, score=score, output=output)
        t = resolve_target(target, out)
        chosen = scores.gather(1, t[:, None]).sum()
        grads = torch.autograd.grad(chosen, weights)
    eye = torch.eye(weights[0].shape[-1], dtype=x.dtype, device=x.device)
    r = eye.expand(x.shape[0], -1, -1)
    for attn, grad in zip(weights, grads, strict=True):
        cam = (grad * attn.detach()).clamp(min=0).mean(1)  # (N, T, T)
        r = r + cam @ r
    return _patch_map(r, model, x, upsample)


# As `attribute` calls them (rollout maps are non-negative: `absolute` changes nothing).
attention_rollout_method = registry_method(attention_rollout, has_class=False)
gradient_rollout_method = registry_method(gradient_rollout)
