"""What the gradient predicts, and what really happens: nudging one input element.

To first order, f(x + Δ·e_j) − f(x) ≈ Δ · ∂f/∂x_j (Taylor). The prediction is exact for a model
that is linear in x (logistic regression's logits) and degrades as Δ grows for a curved one.

    >>> n = nudge(model, x[:1], (0, 14, 14), torch.linspace(-1, 1, 21))
    >>> n.predicted, n.actual                             # (1, 21) each
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ._gradients import gradients
from ._validate import OutputSelector, Target, check_inputs, eval_mode, forward_scores, predict


@dataclass(frozen=True)
class Nudge:
    """deltas `(S,)`; gradient `(N,)` ∂score/∂x_j at x; predicted `(N, S)` = Δ·gradient;
    actual `(N, S)` = score(x + Δ·e_j) − score(x); target `(N,)`."""

    deltas: torch.Tensor
    gradient: torch.Tensor
    predicted: torch.Tensor
    actual: torch.Tensor
    target: torch.Tensor


def nudge(
    model: Callable,
    x: torch.Tensor,
    element: Sequence[int],
    deltas: torch.Tensor | Sequence[float],
    target: Target = None,
    *,
    score: str = "logit",
    output: OutputSelector = None,
) -> Nudge:
    """Change one element of every example by each Δ in `deltas`; predicted vs actual change.

    `element` indexes one example, e.g. `(channel, row, col)` for images `(N, C, H, W)`.
    `target` None means each example's predicted class at `x`, kept for every Δ. The actual
    changes come from one batched forward pass of N·S copies; nothing is clipped (a pixel may
    leave [0, 1]). `x` and the model are left unchanged.
    """
    check_inputs(x, score)
    element = tuple(int(i) for i in element)
    if len(element) != x.ndim - 1:
        raise ValueError(
            f"element must have {x.ndim - 1} indices for inputs shaped {tuple(x.shape)}, "
            f"got {element}"
        )
    for i, size in zip(element, x.shape[1:], strict=True):
        if not 0 <= i < size:
            raise ValueError(f"element {element} is outside an example of shape {x.shape[1:]}")
    d = torch.as_tensor(deltas, dtype=x.dtype, device=x.device).reshape(-1)  # (S,)
    n, s = x.shape[0], d.shape[0]
    _, base, t = predict(model, x, target, score=score, output=output)  # t: (N,)
    with eval_mode(model), torch.no_grad():
        copies = x.detach().unsqueeze(1).repeat(1, s, *([1] * (x.ndim - 1)))  # (N, S, ...)
        copies[(slice(None), slice(None), *element)] += d
        _, moved = forward_scores(
            model, copies.reshape(n * s, *x.shape[1:]), score=score, output=output
        )
        rows = torch.arange(n, device=x.device)
        actual = moved.reshape(n, s, -1)[rows, :, t] - base[rows, t].unsqueeze(1)  # (N, S)
    g = gradients(model, x, t, score=score, absolute=False, output=output)
    g_j = g[(slice(None), *element)]  # (N,)
    return Nudge(d, g_j, g_j.unsqueeze(1) * d, actual, t)
