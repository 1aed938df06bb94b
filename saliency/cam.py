"""Class activation maps: a layer's channels weighted by how much the class score needs them.

Every method here reads one layer's activations A `(N, C, h, w)` (chosen as in `find_layer`;
a vision transformer's patch tokens `(N, T, D)` are read as `(N, D, h, w)`, the class and
register tokens dropped, as pytorch-grad-cam's `reshape_transform` for ViTs does), weights its
channels for the class, sums them to an `(N, h, w)` map on the layer's grid,
applies the paper's ReLU and upsamples the map bilinearly to the input's size (half-pixel
centres, `align_corners=False`, as OpenCV's resize that pytorch-grad-cam uses). No method's
formula normalises its map: `normalize=True` min-max scales each map to [0, 1] as the
references do for display.

    grad_cam      Selvaraju et al. 2017   w_c = mean over the grid of dS/dA_c
    grad_cam_pp   Chattopadhay et al. 2018  w_c = sum over the grid of alpha * relu(dS/dA_c)
    layer_cam     Jiang et al. 2021        relu(dS/dA) * A per position, summed over channels
    score_cam     Wang et al. 2020         w_c from the score of x masked by A_c (no gradient)

The gradient methods run the forward pass without a graph up to the layer, so their backward
starts at the class score and stops at the layer: all K classes cost one forward pass and K
backward passes through the network's head (one vmapped call), not K full passes. Score-CAM
runs one forward pass per channel and example, batched, and gets every class from the same
passes.

Each `*_classes` function returns `(N, C, *x.shape[1:])` for `class_maps`; the plain ones
return a map shaped like `x`, the same map in every channel (an expanded view; call
`.contiguous()` for a packed tensor). `cam_map(...)` returns the layer-grid map and the layer's
name too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ._gradients import _vjp
from ._layers import LayerSpec, check_tokens_read, layer_forward, resolve_layer
from ._validate import (
    OutputSelector,
    Target,
    check_classes,
    check_input,
    check_score,
    eval_mode,
    expand_class_maps,
    expand_map,
    num_classes,
    registry_method,
    resolve_target,
)

CAM_METHODS = ("grad_cam", "grad_cam_pp", "layer_cam", "score_cam")
# Intermediate gradients of one vmapped backward are (classes, N, C, h, w): keep them under
# ~32M elements by splitting the classes into groups.
_GRAD_BUDGET = 1 << 25


@dataclass(frozen=True)
class CAM:
    """A layer map: `map` `(N, H, W)` at the input's size, `layer_map` `(N, h, w)` on the
    layer's grid (before upsampling), `layer` the layer's dotted name. With several classes
    (`cam_map(..., classes=...)`) both gain a class axis after N."""

    map: torch.Tensor
    layer_map: torch.Tensor
    layer: str


def _check_image(x: torch.Tensor, method: str) -> None:
    check_input(x)
    if x.ndim != 4:
        raise ValueError(f"{method} needs an image batch (N, C, H, W), got shape {tuple(x.shape)}")


def _weights_grad_cam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Selvaraju et al. Eq. 1: each channel's gradient averaged over the grid."""
    w = g.mean(dim=(-2, -1))  # (S, N, C)
    return torch.einsum("snc,nchw->snhw", w, a)


def _weights_grad_cam_pp(a: torch.Tensor, g: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Chattopadhay et al. Eq. 19 with the exponential score's derivatives written in terms of
    g = dS/dA (the factor exp(S) is one number per map and cancels in any normalisation):
    alpha = g^2 / (2 g^2 + sum_grid(A) g^3 + eps), 0 where the denominator is 0 (the authors'
    code) or g is; w_c = sum over the grid of alpha * relu(g)."""
    g2 = g * g
    denom = 2 * g2 + a.sum(dim=(-2, -1), keepdim=True) * g2 * g + eps  # (S, N, C, h, w)
    alpha = g2 / torch.where(denom != 0, denom, torch.ones_like(denom))
    w = (alpha * g.clamp(min=0)).sum(dim=(-2, -1))  # (S, N, C)
    return torch.einsum("snc,nchw->snhw", w, a)


def _weights_layer_cam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Jiang et al. Eq. 5-6: a weight per position, relu(g), times A, summed over channels."""
    return (g.clamp(min=0) * a).sum(dim=2)  # (S, N, h, w)


_COMBINE = {
    "grad_cam": _weights_grad_cam,
    "grad_cam_pp": _weights_grad_cam_pp,
    "layer_cam": _weights_layer_cam,
}


def _seeds(out: torch.Tensor, target: Target, classes: Sequence[int] | None) -> torch.Tensor:
    """(S, N, K) weights on the scores: one map per row s, differentiating sum_k seed * score."""
    n, k = out.shape
    if classes is not None:
        cls = check_classes(classes, k)
        eye = torch.eye(k, dtype=out.dtype, device=out.device)[cls]  # (S, K)
        return eye[:, None, :].expand(len(cls), n, k)
    t = resolve_target(target, out)
    return torch.zeros_like(out).scatter_(1, t[:, None], 1.0)[None]  # (1, N, K)


def _layer_gradients(
    a: torch.Tensor, scores: torch.Tensor, seeds: torch.Tensor, name: str
) -> torch.Tensor:
    """dS/dA for each seed row: (S, N, C, h, w), from the scores back to the layer only."""
    s = seeds.shape[0]
    try:
        if s == 1:
            return _vjp(scores, a, seeds[0].contiguous())[None]
        group = max(1, _GRAD_BUDGET // max(1, a.numel()))
        parts = []
        for start in range(0, s, group):
            part = seeds[start : start + group].contiguous()
            last = start + group >= s
            parts.append(_vjp(scores, a, part, batched=len(part) > 1, retain_graph=not last))
            if len(part) == 1:
                parts[-1] = parts[-1][None]
        return parts[0] if len(parts) == 1 else torch.cat(parts)
    except RuntimeError as err:
        if "not have been used in the graph" in str(err):
            raise ValueError(f"the model's scores do not depend on layer {name!r}") from None
        raise


def _upsample(m: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(..., h, w) -> (..., H, W), bilinear with half-pixel centres."""
    lead = m.shape[:-2]
    flat = m.reshape(-1, 1, *m.shape[-2:])
    up = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
    return up.reshape(*lead, *size)


def _min_max(m: torch.Tensor) -> torch.Tensor:
    """Each map scaled to [0, 1]; a constant map becomes 0 (pytorch-grad-cam's 1e-7 guard)."""
    flat = m.flatten(-2)
    lo = flat.amin(-1, keepdim=True)
    span = flat.amax(-1, keepdim=True) - lo
    return ((flat - lo) / (span + 1e-7)).reshape(m.shape)


def _score_cam_combine(
    model: Callable,
    x: torch.Tensor,
    a: torch.Tensor,
    seeds: torch.Tensor,
    *,
    score: str,
    output: OutputSelector,
    weights: str,
    batch_size: int | None,
    align_corners: bool,
) -> torch.Tensor:
    """Wang et al. 2020: each channel, upsampled and min-max scaled to [0, 1], masks the
    input; the class score of the masked input weighs the channel. (S, N, h, w)."""
    from ._validate import forward_scores

    n, c = a.shape[:2]
    size = tuple(x.shape[-2:])
    if batch_size is None:
        from .perturbation import default_batch

        batch_size = default_batch(x)
    flat = a.reshape(n * c, 1, *a.shape[-2:])  # every (example, channel) pair
    scores = []
    with torch.no_grad():
        for i in range(0, n * c, batch_size):
            part = flat[i : i + batch_size]
            up = F.interpolate(part, size=size, mode="bilinear", align_corners=align_corners)
            lo = up.amin(dim=(2, 3), keepdim=True)
            hi = up.amax(dim=(2, 3), keepdim=True)
            mask = (up - lo) / (hi - lo + 1e-8)  # (b, 1, H, W)
            rows = torch.arange(i, i + len(part), device=x.device) // c
            _, s = forward_scores(model, x[rows] * mask, score=score, output=output)
            scores.append(s)
    per_channel = torch.cat(scores).reshape(n, c, -1)  # (N, C, K)
    w = torch.einsum("nck,snk->snc", per_channel, seeds.to(per_channel.dtype))  # (S, N, C)
    if weights == "softmax":
        w = w.softmax(dim=-1)
    return torch.einsum("snc,nchw->snhw", w, a)


def _compute(
    method: str,
    model: Callable,
    x: torch.Tensor,
    target: Target,
    classes: Sequence[int] | None,
    *,
    layer: LayerSpec,
    score: str,
    output: OutputSelector,
    relu: bool,
    normalize: bool,
    weights: str = "softmax",
    batch_size: int | None = None,
    align_corners: bool = True,
    eps: float = 0.0,
) -> CAM:
    if method not in CAM_METHODS:
        raise ValueError(f"method must be one of {', '.join(CAM_METHODS)}; got {method!r}")
    _check_image(x, method)
    check_score(score)
    if weights not in ("softmax", "score"):
        raise ValueError(f"weights must be 'softmax' or 'score', got {weights!r}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size}")
    if not (0 <= eps < float("inf")) or (eps and method != "grad_cam_pp"):
        raise ValueError(f"eps is Grad-CAM++'s, a finite number >= 0; got {eps} for {method}")
    with eval_mode(model):
        name, module = resolve_layer(model, x, layer, output=output)
        gradient = method != "score_cam"
        a, scores, out, tokens = layer_forward(
            model, x, module, name, score=score, output=output, grad=gradient
        )
        seeds = _seeds(out, target, classes).to(scores.dtype)  # (S, N, K)
        if gradient:
            g = _layer_gradients(a, scores, seeds, name)  # (S, N, C, h, w)
            if tokens and not g.any():  # after a class-token model's last attention?
                check_tokens_read(model, x, module, name, output)
            grid = _COMBINE[method](a.detach(), g, *([eps] if eps else []))
        else:
            grid = _score_cam_combine(
                model,
                x,
                a,
                seeds,
                score=score,
                output=output,
                weights=weights,
                batch_size=batch_size,
                align_corners=align_corners,
            )
    grid = grid.detach()  # (S, N, h, w)
    if relu:
        grid = grid.clamp(min=0)
    up = _upsample(grid, tuple(x.shape[-2:]))  # (S, N, H, W)
    if normalize:
        grid, up = _min_max(grid), _min_max(up)
    if classes is None:
        return CAM(up[0], grid[0], name)
    return CAM(up.transpose(0, 1), grid.transpose(0, 1), name)


def cam_map(
    model: Callable,
    x: torch.Tensor,
    target: Target = None,
    *,
    method: str = "grad_cam",
    layer: LayerSpec = None,
    classes: Sequence[int] | None = None,
    score: str = "logit",
    output: OutputSelector = None,
    relu: bool = True,
    normalize: bool = False,
    weights: str = "softmax",
    batch_size: int | None = None,
    align_corners: bool = True,
    eps: float = 0.0,
) -> CAM:
    """A class activation map with its layer-grid version and the layer's name.

    Args:
        model: an `nn.Module` (its layers are read through forward hooks, so not TorchScript).
        x: an image batch `(N, C, H, W)`, floating point, finite. Not modified.
        target: None (each example's predicted class), an int, or N ints.
        method: "grad_cam", "grad_cam_pp", "layer_cam" or "score_cam" (see the module's notes).
        layer: None (the automatic choice, `find_layer`: a CNN's last spatial layer, a
            ViT's last block's first norm), a dotted name ("layer4"), or a submodule; a
            transformer's token output (N, T, D) is read as its patch grid. A name that
            doesn't exist is refused with the candidates listed; a module that runs twice in
            one forward pass is refused (the hooks would mix the two uses); non-finite
            activations raise ValueError; a token grid whose patches the scores don't read
            (after a class-token model's last attention) is refused.
        classes: instead of `target`, several classes at once: `map` becomes `(N, C, H, W)`
            and `layer_map` `(N, C, h, w)`, one forward pass for all of them.
        score: "logit", "probability" or "log_probability": the class score S the maps
            explain (as in `gradients`).
        relu: the ReLU each paper applies to the weighted sum (False keeps the negative
            evidence, for a signed map).
        normalize: min-max scale each map to [0, 1], as pytorch-grad-cam returns them; off by
            default so that the maps of several classes share one scale.
        weights: Score-CAM only. "softmax" (default): the softmax over channels of the
            masked inputs' class scores, as pytorch-grad-cam computes them; "score": the
            scores themselves, as the authors' code does with `score="probability"`.
        batch_size: Score-CAM only: masked copies per forward pass (default as occlusion's,
            `perturbation.default_batch`).
        align_corners: Score-CAM only: how the channel masks are upsampled. True (default):
            corner-aligned, pytorch-grad-cam's `UpsamplingBilinear2d`; False: half-pixel
            centres, the authors' code (Pearson 0.97-0.9999 with the default on mnist-cnn).
        eps: Grad-CAM++ only: added to alpha's denominator. 0 (default) is the paper's and
            the authors' formula; pytorch-grad-cam adds 1e-6, which outweighs 2 g^2 where
            the layer's gradients g are under ~1e-3 (a random-weight ViT's are ~1e-5): pass
            1e-6 to reproduce its maps there.

    Returns:
        `CAM(map, layer_map, layer)`: `(N, H, W)` and `(N, h, w)` maps, on x's device.

    Evaluated in eval mode; the model's flags, parameters' `.grad` and `x` are left untouched.

    Example:
        >>> r = saliency.cam_map(resnet, images, target=3)        # Grad-CAM at the automatic layer
        >>> r.layer, r.map.shape, r.layer_map.shape
        ('layer4', torch.Size([8, 112, 112]), torch.Size([8, 4, 4]))
    """
    return _compute(
        method,
        model,
        x,
        target,
        classes,
        layer=layer,
        score=score,
        output=output,
        relu=relu,
        normalize=normalize,
        weights=weights,
        batch_size=batch_size,
        align_corners=align_corners,
        eps=eps,
    )


def _one(method: str) -> Callable:
    def layer_map(model, x, target, *, score, output, layer: LayerSpec = None, **options):
        r = _compute(method, model, x, target, None, layer=layer, score=score, output=output,
                     **_options(method, options))  # fmt: skip
        return r.map  # (N, H, W)

    layer_map.__name__ = method
    run = registry_method(layer_map, finish=expand_map, name=method)

    def every(
        model: Callable,
        x: torch.Tensor,
        classes: Sequence[int] | None = None,
        *,
        absolute: bool | None = None,
        score: str = "logit",
        output: OutputSelector = None,
        layer: LayerSpec = None,
        **options,
    ) -> torch.Tensor:
        if classes is None:
            classes = range(num_classes(model, x, score=score, output=output))
        r = _compute(method, model, x, None, list(classes), layer=layer, score=score,
                     output=output, **_options(method, options))  # fmt: skip
        return expand_class_maps(r.map, x, absolute)

    return run, every


_ALLOWED = {
    "grad_cam": ("relu", "normalize"),
    "grad_cam_pp": ("relu", "normalize", "eps"),
    "layer_cam": ("relu", "normalize"),
    "score_cam": ("relu", "normalize", "weights", "batch_size", "align_corners"),
}


def _options(method: str, options: dict) -> dict:
    allowed = _ALLOWED[method]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(
            f"{method} got unexpected option{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(unknown)}; its options are layer, {', '.join(allowed)}"
        )
    return {"relu": True, "normalize": False, **options}


grad_cam, grad_cam_classes = _one("grad_cam")
grad_cam_pp, grad_cam_pp_classes = _one("grad_cam_pp")
layer_cam, layer_cam_classes = _one("layer_cam")
score_cam, score_cam_classes = _one("score_cam")
for _f, _doc in (
    (grad_cam, "Grad-CAM (Selvaraju et al. 2017)"),
    (grad_cam_pp, "Grad-CAM++ (Chattopadhay et al. 2018)"),
    (layer_cam, "LayerCAM (Jiang et al. 2021)"),
    (score_cam, "Score-CAM (Wang et al. 2020)"),
):
    _f.__doc__ = f"{_doc} shaped like `x` (the same map in every channel); options as in `cam_map`."
