"""Does a map point at what matters? Deletion and insertion curves (Petsiuk et al. 2018, RISE).

Deletion removes input elements most-salient-first (sets them to a baseline, 0 = black
background for MNIST) and records the class score after each step: a map that finds the
evidence makes the score fall fast (small area under the curve). Insertion starts from a blank
or blurred input and reveals elements most-salient-first: the score should rise fast (large
area). Comparing with a random order tells whether the map beats chance.

    >>> d = deletion_curve(model, x, saliency_map)        # d.scores: (N, steps + 1)
    >>> i = insertion_curve(model, x, saliency_map, start=blur(x))
    >>> d.auc, i.auc                                     # (N,) each
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ._validate import (
    OutputSelector,
    Target,
    check_input,
    check_inputs,
    eval_mode,
    forward_scores,
    predict,
)


@dataclass(frozen=True)
class Curve:
    """A deletion or insertion curve.

    fractions: `(S + 1,)` fraction of input elements removed (deletion) or revealed (insertion),
        from 0 to 1.
    scores: `(N, S + 1)` the target's score after each step.
    auc: `(N,)` area under each curve by the trapezoid rule over `fractions` (in [0, 1] for
        probabilities).
    target: `(N,)` the class whose score was followed.
    """

    fractions: torch.Tensor
    scores: torch.Tensor
    auc: torch.Tensor
    target: torch.Tensor


def auc(fractions: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Trapezoid-rule area under `scores` `(N, S + 1)` over `fractions` `(S + 1,)`: `(N,)`."""
    return torch.trapezoid(scores, fractions.to(scores.dtype), dim=-1)


def blur(x: torch.Tensor, sigma: float = 3.0) -> torch.Tensor:
    """Gaussian blur of an image batch `(N, C, H, W)` per channel, edges mirrored: same shape.

    The usual insertion start (Petsiuk et al. 2018): the image with its detail removed.
    """
    check_input(x)
    if x.ndim != 4:
        raise ValueError(f"x must be an image batch (N, C, H, W), got shape {tuple(x.shape)}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    radius = min(int(3 * sigma + 0.5), min(x.shape[2:]) - 1)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    w = torch.exp(-0.5 * (t / sigma) ** 2)
    w = w / w.sum()
    c = x.shape[1]
    padded = torch.nn.functional.pad(x, (radius, radius, radius, radius), mode="reflect")
    rows = torch.nn.functional.conv2d(padded, w.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return torch.nn.functional.conv2d(rows, w.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)


def _curve(
    model: Callable,
    x: torch.Tensor,
    attribution: torch.Tensor,
    target: Target,
    *,
    steps: int,
    fill: torch.Tensor | float,
    insert: bool,
    score: str,
    output: OutputSelector,
    batch_size: int,
) -> Curve:
    check_inputs(x, score)
    if attribution.shape != x.shape:
        raise ValueError(
            f"attribution must be shaped like x {tuple(x.shape)}, got {tuple(attribution.shape)}"
        )
    n, d = x.shape[0], x[0].numel()
    if not 1 <= steps <= d:
        raise ValueError(f"steps must be in 1..{d} (elements per example), got {steps}")
    other = torch.as_tensor(fill, dtype=x.dtype, device=x.device).expand_as(x)
    # The image being changed starts as x (deletion) or the blank/blurred start (insertion).
    source, start = (x, other) if insert else (other, x)
    # Elements in order, most salient first; ties keep index order.
    order = torch.argsort(attribution.reshape(n, d), dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(d, device=x.device).expand(n, d))  # (N, D)
    counts = torch.round(torch.linspace(0, d, steps + 1, dtype=torch.float64)).long()
    fractions = counts.double() / d  # (S + 1,)
    flat_source, flat_start = source.reshape(n, d), start.reshape(n, d)
    scores = x.new_empty((n, steps + 1))
    _, _, t = predict(model, x, target, score=score, output=output)  # (N,): at the full input
    with eval_mode(model), torch.no_grad():
        # Every (image, step) pair of the batch, `batch_size` pairs per forward pass: the images
        # share passes, so a batch of 64 costs what 64 separate curves' forwards cost together,
        # not 64 rounds of Python.
        counts = counts.to(x.device)
        pairs = torch.arange(n * (steps + 1), device=x.device)
        for chunk in pairs.split(batch_size):
            i, s = chunk // (steps + 1), chunk % (steps + 1)  # (B,) image, step
            changed = rank[i] < counts[s].unsqueeze(1)  # (B, D): each image's first k elements
            batch = torch.where(changed, flat_source[i], flat_start[i])  # (B, D)
            _, p = forward_scores(
                model, batch.reshape(-1, *x.shape[1:]), score=score, output=output
            )
            scores[i, s] = p.gather(1, t[i].unsqueeze(1)).squeeze(1)
    return Curve(fractions, scores, auc(fractions, scores), t)


def deletion_curve(
    model: Callable,
    x: torch.Tensor,
    attribution: torch.Tensor,
    target: Target = None,
    *,
    steps: int = 56,
    baseline: torch.Tensor | float = 0.0,
    score: str = "probability",
    output: OutputSelector = None,
    batch_size: int = 256,
) -> Curve:
    """The target's score as input elements are set to `baseline`, most-attributed first.

    `attribution` is shaped like `x` (larger = removed earlier; pass random values for a random
    order). Step s removes round(s·D/steps) elements, so the curve starts at the score of `x`
    itself and ends at the score of the baseline. `target` None: the class predicted at `x`.
    `score` defaults to the probability. Every image's curve in one loop: a forward pass per
    `batch_size` (image, step) pairs; `x` and the model are left unchanged. Lower AUC = the map
    found the evidence (`saliency.bench.deletion_auc` is its area as a metric).
    """
    return _curve(
        model,
        x,
        attribution,
        target,
        steps=steps,
        fill=baseline,
        insert=False,
        score=score,
        output=output,
        batch_size=batch_size,
    )


def insertion_curve(
    model: Callable,
    x: torch.Tensor,
    attribution: torch.Tensor,
    target: Target = None,
    *,
    steps: int = 56,
    start: torch.Tensor | float = 0.0,
    score: str = "probability",
    output: OutputSelector = None,
    batch_size: int = 256,
) -> Curve:
    """The target's score as elements of `x` are revealed on `start`, most-attributed first.

    `start` is a blank value (0.0) or a tensor shaped like `x` (e.g. `blur(x)`). The curve
    starts at the score of `start` and ends at the score of `x`. Higher AUC = the map found the
    evidence. Otherwise as `deletion_curve`.
    """
    return _curve(
        model,
        x,
        attribution,
        target,
        steps=steps,
        fill=start,
        insert=True,
        score=score,
        output=output,
        batch_size=batch_size,
    )
