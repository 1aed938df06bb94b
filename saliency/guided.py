"""Guided Backprop (Springenberg et al. 2015) and Guided Grad-CAM (Selvaraju et al. 2017).

Guided backprop is the input gradient with every ReLU's backward pass also zeroing negative
incoming gradients: R_in = [in > 0] * [R_out > 0] * R_out. Here a forward hook on each
`nn.ReLU` module passes its output through an identity whose backward clamps the gradient at
zero; the ReLU's own backward then applies [in > 0]. The model is not modified (pytorch-grad-cam
swaps its ReLU modules, which a model shared between requests must not see), and, as in
Captum, only ReLUs written as modules are guided: a functional `torch.relu` in `forward` keeps
its plain backward.

Adebayo et al. 2018 found both maps nearly unchanged when the model's weights are randomised:
they look crisp because of the guided rule, not because of what the model learned.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import torch
from torch import nn

from ._gradients import _jacobian_chunk, _target_gradients
from ._layers import LayerSpec, _check_module, _hooks
from ._validate import (
    OutputSelector,
    Target,
    check_inputs,
    eval_mode,
)


class _PositiveGradient(torch.autograd.Function):
    """Identity forward; backward lets only positive gradients through."""

    @staticmethod
    def forward(t: torch.Tensor) -> torch.Tensor:
        return t.clone()

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        pass

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        return g.clamp(min=0)


def _guide(module: nn.Module, args, out):
    return _PositiveGradient.apply(out) if isinstance(out, torch.Tensor) else None


def _guided(model: Callable) -> AbstractContextManager:
    """The hooks that guide every `nn.ReLU` module of `model`, while the context is open."""
    model = _check_module(model, "guided backprop")
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        raise ValueError(
            "guided backprop guides the model's nn.ReLU modules and this model has none (a "
            "functional relu in forward isn't seen): its map would be the plain gradient"
        )
    return _hooks([(m, _guide) for m in relus])


def guided_backprop(
    model: Callable,
    x: torch.Tensor,
    target: Target = None,
    *,
    absolute: bool | None = None,
    score: str = "logit",
    output: OutputSelector = None,
) -> torch.Tensor:
    """Guided backprop of the class score, shaped like `x`, signed (absolute=True: |map|).

    `target`, `score` and `output` are as in `gradients`. Evaluated in eval mode; the model
    (hooks removed afterwards), its parameters' `.grad` and `x` are left untouched.

    Example:
        >>> gb = saliency.attribute(resnet, images, 3, method="guided_backprop")
    """
    check_inputs(x, score)
    with eval_mode(model):
        g, _, _ = _target_gradients(
            model, x, target, score=score, output=output, during=_guided(model)
        )
    return g.abs() if absolute else g


def guided_backprop_classes(
    model: Callable,
    x: torch.Tensor,
    classes: Sequence[int] | None = None,
    *,
    absolute: bool | None = None,
    score: str = "logit",
    output: OutputSelector = None,
) -> torch.Tensor:
    """Guided backprop for several classes: `(N, C, *x.shape[1:])` from one forward pass and
    one backward pass per class."""
    check_inputs(x, score)
    with eval_mode(model):
        jac = _jacobian_chunk(
            model, x, classes, score=score, output=output, strategy="loop", during=_guided(model)
        )  # (C, N, ...)
    result = jac.transpose(0, 1)
    return result.abs() if absolute else result


def guided_grad_cam(
    model: Callable,
    x: torch.Tensor,
    target: Target = None,
    *,
    absolute: bool | None = None,
    score: str = "logit",
    output: OutputSelector = None,
    layer: LayerSpec = None,
    relu: bool = True,
) -> torch.Tensor:
    """Guided Grad-CAM: guided backprop times the upsampled Grad-CAM map, shaped like `x`.

    Selvaraju et al. 2017 Sec. 3.1: the element-wise product, so the map keeps guided
    backprop's sign and detail where Grad-CAM locates the class. The Grad-CAM factor is the
    raw (ReLU'd, not normalised) map of `cam_map(..., method="grad_cam")` at `layer`.
    """
    from .cam import cam_map

    # Both factors resolve target None to the same predicted class (the same model in eval
    # mode on the same input).
    heat = cam_map(
        model, x, target, method="grad_cam", layer=layer, score=score, output=output, relu=relu
    )
    gb = guided_backprop(model, x, target, score=score, output=output)
    m = gb * heat.map.unsqueeze(1)  # (N, C, H, W)
    return m.abs() if absolute else m


def guided_grad_cam_classes(
    model: Callable,
    x: torch.Tensor,
    classes: Sequence[int] | None = None,
    *,
    absolute: bool | None = None,
    score: str = "logit",
    output: OutputSelector = None,
    layer: LayerSpec = None,
    relu: bool = True,
) -> torch.Tensor:
    """Guided Grad-CAM for several classes: `(N, C, *x.shape[1:])`."""
    from .cam import cam_map

    gb = guided_backprop_classes(model, x, classes, score=score, output=output)
    if classes is None:
        classes = range(gb.shape[1])
    heat = cam_map(
        model, x, method="grad_cam", classes=list(classes), layer=layer, score=score,
        output=output, relu=relu,
    )  # fmt: skip
    m = gb * heat.map.unsqueeze(2)  # (N, K, C, H, W)
    return m.abs() if absolute else m
