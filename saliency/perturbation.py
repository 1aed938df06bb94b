"""Occlusion (Zeiler & Fergus 2014): how much the class score drops when a square of the image
is covered.

A `window` x `window` square (every channel) is set to `baseline` at positions `stride` pixels
apart, the last one clipped at the border so every pixel is covered (Captum's placement); each
pixel's attribution is the mean score drop f(x) - f(x occluded) over the windows that cover it.
The occluded copies go through the model in batches, and every class's map comes from the same
passes, so `occlusion_classes` costs what one class does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from ._validate import (
    OutputSelector,
    Target,
    check_classes,
    check_inputs,
    eval_mode,
    expand_class_maps,
    expand_map,
    forward_scores,
    resolve_target,
)

# Perturbed copies per forward batch, in input elements. On a CPU a conv net runs fastest on
# batches of a few dozen small images (measured on mnist-cnn: 64 digits a batch went ~1.5x
# faster than 1352, the activations staying in cache); a GPU wants large batches.
_CPU_BUDGET = 1 << 16
_GPU_BUDGET = 1 << 22


def default_batch(x: torch.Tensor) -> int:
    """How many perturbed copies of one example of `x` go through the model at once."""
    budget = _GPU_BUDGET if x.device.type != "cpu" else _CPU_BUDGET
    return max(8, budget // x[0].numel())


def _positions(size: int, window: int, stride: int) -> torch.Tensor:
    count = math.ceil((size - window) / stride) + 1
    return torch.arange(count) * stride


def _windows(h: int, w: int, window: int, stride: int, device, dtype) -> torch.Tensor:
    """(P, H, W) indicator of each window position, row-major over the positions."""
    ys, xs = _positions(h, window, stride), _positions(w, window, stride)
    r = torch.arange(h)
    c = torch.arange(w)
    rows = (r[None] >= ys[:, None]) & (r[None] < ys[:, None] + window)  # (Py, H)
    cols = (c[None] >= xs[:, None]) & (c[None] < xs[:, None] + window)  # (Px, W)
    win = rows[:, None, :, None] & cols[None, :, None, :]  # (Py, Px, H, W)
    return win.reshape(-1, h, w).to(device=device, dtype=dtype)


def _defaults(x: torch.Tensor, window: int | None, stride: int | None) -> tuple[int, int]:
    h, w = x.shape[-2:]
    if window is None:
        window = max(1, round(min(h, w) / 7))
    if stride is None:
        stride = max(1, window // 2)
    for name, v in (("window", window), ("stride", stride)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive number of pixels, got {v!r}")
    if window > min(h, w):
        raise ValueError(f"window {window} is larger than the image ({h} x {w})")
    if stride > window:
        raise ValueError(
            f"stride {stride} is larger than window {window}: some pixels would never be covered"
        )
    return window, stride


def _occlusion(
    model: Callable,
    x: torch.Tensor,
    *,
    score: str,
    output: OutputSelector,
    window: int | None,
    stride: int | None,
    baseline: float,
    batch_size: int | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every class's score drop per window: ((N, P, K) drops, (P, H, W) windows, (N, K)
    scores of x)."""
    check_inputs(x, score)
    if x.ndim != 4:
        raise ValueError(f"occlusion needs an image batch (N, C, H, W), got shape {tuple(x.shape)}")
    window, stride = _defaults(x, window, stride)
    n = x.shape[0]
    h, w = x.shape[-2:]
    win = _windows(h, w, window, stride, x.device, x.dtype)  # (P, H, W)
    p = win.shape[0]
    if batch_size is None:
        batch_size = default_batch(x)
    elif batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size}")
    keep = (1 - win)[:, None]  # (P, 1, H, W)
    fill = (win * baseline)[:, None]
    with eval_mode(model), torch.no_grad():
        _, base = forward_scores(model, x, score=score, output=output)  # (N, K)
        drops = []
        flat = torch.arange(n * p, device=x.device)  # (example, window) pairs
        for i in range(0, n * p, batch_size):
            idx = flat[i : i + batch_size]
            ex, pos = idx // p, idx % p
            _, s = forward_scores(model, x[ex] * keep[pos] + fill[pos], score=score, output=output)
            drops.append(base[ex] - s)  # (b, K)
        d = torch.cat(drops).reshape(n, p, -1)  # (N, P, K)
    return d, win, base


def _spread(d: torch.Tensor, win: torch.Tensor) -> torch.Tensor:
    """(N, P, S) drops -> (N, S, H, W): each pixel's mean drop over the windows covering it,
    one matmul for every class (only the classes asked for: 1000 ImageNet maps are big)."""
    count = win.sum(0)  # (H, W), >= 1 since stride <= window
    return torch.einsum("nps,phw->nshw", d, win) / count


def occlusion(
    model: Callable,
    x: torch.Tensor,
    target: Target = None,
    *,
    absolute: bool | None = None,
    score: str = "logit",
    output: OutputSelector = None,
    window: int | None = None,
    stride: int | None = None,
    baseline: float = 0.0,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Occlusion map of the class score, shaped like `x` (the same map in every channel).

    Args:
        window: the square's side in pixels (default: a seventh of the image's smaller side,
            4 for a 28 x 28 digit).
        stride: pixels between window positions (default window // 2); at most `window`.
            The model runs on N * P occluded copies, P = (ceil((H - window) / stride) + 1)
            * (the same across), e.g. 169 for 28 x 28 with window 4 and stride 2.
        baseline: the value the square is set to (0: black in [0, 1] images).
        batch_size: occluded copies per forward pass (default `default_batch(x)`: 83 digits
            on a CPU, 5350 on a GPU).
    Signed: positive where covering the square lowers the score (evidence for the class).
    `target`, `score` and `output` are as in `gradients`. Runs without gradients, in eval mode.

    Example:
        >>> m = saliency.attribute(model, digits, 7, method="occlusion", window=4, stride=2)
    """
    d, win, base = _occlusion(
        model, x, score=score, output=output, window=window, stride=stride,
        baseline=baseline, batch_size=batch_size,
    )  # fmt: skip
    t = resolve_target(target, base)
    picked = d.gather(2, t[:, None, None].expand(-1, d.shape[1], 1))  # (N, P, 1)
    return expand_map(_spread(picked, win)[:, 0], x, absolute)  # (N, H, W) -> x's shape


def occlusion_classes(
    model: Callable,
    x: torch.Tensor,
    classes: Sequence[int] | None = None,
    *,
    absolute: bool | None = None,
    score: str = "logit",
    output: OutputSelector = None,
    window: int | None = None,
    stride: int | None = None,
    baseline: float = 0.0,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Occlusion maps of several classes from the same passes: `(N, C, *x.shape[1:])`."""
    d, win, base = _occlusion(
        model, x, score=score, output=output, window=window, stride=stride,
        baseline=baseline, batch_size=batch_size,
    )  # fmt: skip
    cls = check_classes(classes, base.shape[1])
    return expand_class_maps(_spread(d[:, :, cls], win), x, absolute)  # from (N, C, H, W)
