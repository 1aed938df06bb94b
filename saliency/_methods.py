"""Attribution methods behind one switch: `attribute`, `class_maps` and `contrast` dispatch
through the registry in `names.METHOD_INFO` (one entry per method, its function imported when
first used). The pixel-gradient methods are here, computed by Captum; the layer maps are in
`cam.py`, guided backprop in `guided.py`, occlusion in `perturbation.py`.

Captum's defaults suit none of these for images in [0, 1] (NoiseTunnel adds noise of absolute
sigma 1 with 5 samples, which drowns a digit); the defaults here follow Smilkov et al. 2017:
sigma = 15% of the input range and 50 samples.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from functools import partial

import torch
from torch import nn

from ._gradients import gradients
from ._validate import (
    OutputSelector,
    Target,
    check_inputs,
    eval_mode,
    num_classes,
    predict,
    resolve_target,
    scores_from,
    select_output,
)
from .names import METHOD_INFO, METHODS, MethodInfo, method_info

__all__ = ["METHODS", "METHOD_INFO", "attribute", "class_maps", "contrast"]

# Which methods give a signed map (absolute=None keeps their natural sign).
SIGNED = {name: info.signed for name, info in METHOD_INFO.items()}


def _generator(device: torch.device) -> torch.Generator:
    """The global generator that sampling on `device` uses."""
    if device.type == "cuda":
        return torch.cuda.default_generators[device.index or torch.cuda.current_device()]
    return torch.random.default_generator


def _score_function(model: Callable, score: str, output: OutputSelector) -> Callable:
    def forward(x: torch.Tensor) -> torch.Tensor:
        return scores_from(select_output(model(x), output), score)

    return forward


def _function(spec: str, method: str) -> Callable:
    """The callable a registry entry names: "module:attribute" in this package, where the
    attribute is a function or a dict of functions by method name."""
    module, attr = spec.split(":")
    found = getattr(importlib.import_module(f".{module}", __package__), attr)
    return found[method] if isinstance(found, dict) else found


def _layer_option(info: MethodInfo, layer, options: dict) -> dict:
    if layer is None:
        return options
    if not info.layer:
        takes = ", ".join(n for n, i in METHOD_INFO.items() if i.layer)
        raise ValueError(f"method {info.name!r} takes no layer (these do: {takes})")
    return {**options, "layer": layer}


def attribute(
    model: Callable,
    x: torch.Tensor,
    target: Target = None,
    *,
    method: str = "gradient",
    layer: nn.Module | str | None = None,
    absolute: bool | None = None,
    score: str = "logit",
    output: OutputSelector = None,
    **options,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """An attribution map shaped like `x`, by the chosen `method` (`names.METHOD_INFO`).

    Pixel gradients (their options are those of `_pixel_method`, below):
        "gradient": |d score / dx| (or signed), as `gradients`.
        "smoothgrad": mean |gradient| over `n_samples` noisy copies (Smilkov et al. 2017).
        "smoothgrad_sq": mean squared gradient over the noisy copies.
        "vargrad": variance of the gradient over the noisy copies (Adebayo et al. 2018).
        "input_x_gradient": x * gradient (signed).
        "integrated_gradients": path integral of the gradient from `baseline` to x in `steps`
            Riemann steps (Sundararajan et al. 2017, signed). With `return_delta=True` also
            returns the completeness delta per example: sum(attribution) - (f(x) - f(baseline)).
        "guided_backprop": the gradient with negative gradients stopped at every nn.ReLU
            (Springenberg et al. 2015; `guided.py`, signed).
    Layer maps (CAM) of one layer, upsampled to x's size, the same map in every channel
    (`cam.py`; options `relu`, `normalize`, for Grad-CAM++ `eps`, and for Score-CAM
    `weights`, `batch_size`, `align_corners`; `saliency.cam_map` also returns the layer-grid
    map and the layer's name; a ViT's patch tokens are read as a grid):
        "grad_cam" (Selvaraju et al. 2017), "grad_cam_pp" (Chattopadhay et al. 2018),
        "score_cam" (Wang et al. 2020), "layer_cam" (Jiang et al. 2021), and
        "guided_grad_cam": guided backprop times the upsampled Grad-CAM (signed).
    Perturbation (`perturbation.py`):
        "occlusion": the mean score drop when a `window` x `window` square, moved `stride`
            pixels at a time, is set to `baseline` (Zeiler & Fergus 2014, signed).

    `layer` (layer maps only): None picks the last module whose output keeps a spatial grid
    (`find_layer`); a dotted name or a submodule overrides. `absolute` None keeps each method's
    natural sign (True: |map|). `target`, `score` and `output` are as in `gradients`. Computed
    in eval mode; `x` and the model are left untouched. An option a method doesn't take is a
    TypeError.
    """
    info = method_info(method)
    check_inputs(x, score)
    function = _function(info.function, method)
    options = _layer_option(info, layer, options)
    return function(model, x, target, absolute=absolute, score=score, output=output, **options)


def _noise_tunnel(forward, x, xc, t, method, n_samples, group, noise, noise_range, seed, absolute):
    """SmoothGrad, SmoothGrad² or VarGrad of `forward` at `xc` (a copy of `x`), via Captum."""
    from captum.attr import NoiseTunnel, Saliency

    lo, hi = noise_range if noise_range is not None else (float(x.min()), float(x.max()))
    sigma = float(noise) * (hi - lo)
    # Seed only the generator the noise comes from (x's device), inside fork_rng, which
    # restores it: torch.manual_seed would also (re)seed every CUDA device.
    rng = torch.random.fork_rng(devices=[x.device] if x.is_cuda else [])
    with rng if seed is not None else nullcontext():
        if seed is not None:
            _generator(x.device).manual_seed(seed)
        tunnel = NoiseTunnel(Saliency(forward))
        return tunnel.attribute(
            xc,
            nt_type=method,
            nt_samples=n_samples,
            nt_samples_batch_size=group,
            stdevs=sigma,
            target=t,
            abs=method == "smoothgrad" and absolute is not False,
        )


def _pixel_method(
    model: Callable,
    x: torch.Tensor,
    target: Target = None,
    *,
    method: str = "gradient",
    absolute: bool | None = None,
    score: str = "logit",
    output: OutputSelector = None,
    n_samples: int = 50,
    noise: float = 0.15,
    noise_range: tuple[float, float] | None = None,
    steps: int = 50,
    baseline: float | torch.Tensor = 0.0,
    seed: int | None = 0,
    return_delta: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """A pixel-gradient method's map shaped like `x`: the methods are the "Pixel gradients"
    of `attribute`'s docstring, guided backprop (`guided.py`) excepted.

    `noise` is sigma as a fraction of the input range: `noise_range` (lo, hi) if given, else the
    batch's max - min. `seed` makes the noise reproducible (None: the global RNG). `absolute`
    None keeps each method's natural sign (gradient and SmoothGrad are absolute; SmoothGrad²
    and VarGrad are non-negative anyway; Gradient×Input and IG are signed).
    `target`, `score` and `output` are as in `gradients`. Computed in eval mode; `x` and the
    model are left untouched.
    """
    if return_delta and method != "integrated_gradients":
        raise ValueError("return_delta is only defined for method='integrated_gradients'")
    if method == "gradient":
        return gradients(
            model, x, target, score=score, absolute=absolute is not False, output=output
        )
    if n_samples < 1 or steps < 1:
        raise ValueError(f"n_samples and steps must be positive, got {n_samples} and {steps}")
    if not float(noise) >= 0:  # also refuses NaN
        raise ValueError(f"noise must be >= 0 (sigma as a fraction of the data range), got {noise}")
    # Imported here: plain gradients never pay for importing Captum.
    from captum.attr import InputXGradient, IntegratedGradients

    forward = _score_function(model, score, output)
    # Captum flips requires_grad on its inputs: give it a private copy that already requires it.
    xc = x.detach().clone().requires_grad_(True)
    # Process the noisy copies in groups so memory stays near that of ~256 images.
    group = max(1, min(n_samples, 256 // x.shape[0]))
    _, _, t = predict(model, xc.detach(), target, score=score, output=output)
    with eval_mode(model):
        if method in ("smoothgrad", "smoothgrad_sq", "vargrad"):
            result = _noise_tunnel(
                forward, x, xc, t, method, n_samples, group, noise, noise_range, seed, absolute
            )
        elif method == "input_x_gradient":
            result = InputXGradient(forward).attribute(xc, target=t)
        else:
            base = torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)
            result, delta = IntegratedGradients(forward).attribute(
                xc,
                baselines=base.contiguous(),
                target=t,
                n_steps=steps,
                internal_batch_size=max(1, 256 // x.shape[0]) * x.shape[0],
                return_convergence_delta=True,
            )
    result = result.detach()
    if absolute:
        result = result.abs()
    if return_delta:
        return result, delta.detach()
    return result


# The registry's "_methods:_PIXEL": one function per pixel-gradient method.
_PIXEL = {name: partial(_pixel_method, method=name) for name in METHODS}


def _has_class(info: MethodInfo, what: str) -> None:
    if not info.has_class:
        raise ValueError(
            f"{info.label} has no class: its map is the same for every class, so {what}"
        )


def class_maps(
    model: Callable,
    x: torch.Tensor,
    classes: Sequence[int] | None = None,
    *,
    method: str = "gradient",
    layer: nn.Module | str | None = None,
    absolute: bool | None = None,
    score: str = "logit",
    output: OutputSelector = None,
    **options,
) -> torch.Tensor:
    """The `method`'s map for several classes of every example: `(N, C, *x.shape[1:])`.

    "gradient" takes one `jacobian` call (one forward, C backward passes); a method with an
    `all_classes` function in the registry uses it (the layer maps: one forward pass and one
    backward from the layer per class; Score-CAM and occlusion: the same masked passes for
    every class); other methods run once on the batch repeated C times, one target per copy.
    `classes` None means every class. Options are those of `attribute`.
    """
    from ._gradients import jacobian

    info = method_info(method)
    _has_class(info, "an every-class grid shows one map K times")
    check_inputs(x, score)
    options = _layer_option(info, layer, options)
    if method == "gradient":
        jac = jacobian(model, x, score=score, output=output, classes=classes)
        return jac if absolute is False else jac.abs()
    if info.all_classes:
        every = _function(info.all_classes, method)
        return every(model, x, classes, absolute=absolute, score=score, output=output, **options)
    if classes is None:
        classes = range(num_classes(model, x, score=score, output=output))
    cls = list(classes)
    n, c = x.shape[0], len(cls)
    repeated = x.repeat_interleave(c, dim=0)  # (N*C, ...): example n's copies side by side
    targets = torch.tensor(cls, device=x.device).repeat(n)
    maps = attribute(
        model,
        repeated,
        targets,
        method=method,
        absolute=absolute,
        score=score,
        output=output,
        **options,
    )
    return maps.reshape(n, c, *x.shape[1:])


class _Difference(nn.Module):
    """score_a - score_b as a model with one output, wrapping `model` as a submodule so that a
    method which reads the model's layers (hooks, ReLUs) finds them inside."""

    def __init__(self, model: Callable, a: int, b: int, score: str, output: OutputSelector):
        super().__init__()
        self.model, self.a, self.b, self.score, self.output = model, a, b, score, output

    def forward(self, xx: torch.Tensor) -> torch.Tensor:
        s = scores_from(select_output(self.model(xx), self.output), self.score)
        return (s[:, self.a] - s[:, self.b]).unsqueeze(1)  # (n, 1)


def contrast(
    model: Callable,
    x: torch.Tensor,
    target: Target,
    versus: Target,
    *,
    method: str = "gradient",
    layer: nn.Module | str | None = None,
    score: str = "logit",
    output: OutputSelector = None,
    **options,
) -> torch.Tensor:
    """Signed map of the score difference score_target - score_versus, shaped like `x`.

    Answers "why 4 and not 9?": positive where raising the input favours `target` over
    `versus`. The `method` is applied to the difference itself (signed; SmoothGrad averages the
    signed gradient of the difference over the noise; a layer map weighs the channels by the
    difference's gradient, and its ReLU keeps the evidence for `target` over `versus`).
    `target`/`versus`: as in `gradients`; `layer` as in `attribute`.
    """
    from ._layers import resolve_layer

    info = method_info(method)
    _has_class(info, "a contrast of two classes is zero")
    check_inputs(x, score)
    out, _, t = predict(model, x, target, score=score, output=output)
    v = resolve_target(versus, out)
    same = (t == v).nonzero().flatten()
    if len(same):
        i = int(same[0])
        raise ValueError(
            f"target and versus are both class {int(t[i])} for example {i}: the map of a score "
            "minus itself is zero everywhere; choose two different classes"
        )
    if isinstance(layer, str):  # a name of the caller's model, not of the wrapper below
        layer = resolve_layer(model, x, layer, output=output)[1]
    options = _layer_option(info, layer, options)
    result = None
    # The difference is one scalar output per example; examples sharing `versus` go together.
    for pair in torch.unique(torch.stack([t, v], 1), dim=0).tolist():
        rows = ((t == pair[0]) & (v == pair[1])).nonzero().flatten()
        difference = _Difference(model, pair[0], pair[1], score, output)
        with eval_mode(model):
            part = attribute(difference, x[rows], 0, method=method, absolute=False, **options)
        if result is None:
            result = part.new_empty((x.shape[0], *part.shape[1:]))
        result[rows] = part
    return result
