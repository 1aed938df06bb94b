"""The model-randomisation sanity check (Adebayo et al. 2018, "Sanity checks for saliency maps").

Cascading randomisation re-initialises a network's layers one at a time, from the output layer
down, and recomputes the map after each step. A map that explains the model must change as the
model is destroyed; one that stays the same is showing the input (edges, strokes), not what the
network learned. Every step works on a deep copy: the caller's model is never touched, which
keeps a model shared between sessions safe.

    >>> steps = sanity_check(model, x[:1])             # original, then one step per layer
    >>> [(s.name, float(s.spearman[0])) for s in steps]
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ._gradients import gradients
from ._validate import Target, check_input, check_score, eval_mode, forward_scores, resolve_target
from .metrics import spearman, ssim


def _layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules holding parameters of their own, from the output back to the input."""
    found = [
        (name, m) for name, m in model.named_modules() if any(True for _ in m.parameters(False))
    ]
    return found[::-1]


def _reinitialise(module: nn.Module, generator_seed: int) -> None:
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(generator_seed)
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()  # the layer's own initialisation (Kaiming for Linear/Conv)
        else:
            for p in module.parameters(False):
                p.normal_(0.0, 0.05)


def cascading_randomisation(model: nn.Module, *, seed: int = 0) -> Iterator[tuple[str, nn.Module]]:
    """Yield `(step name, model copy)` with the top 1, 2, ... layers re-initialised.

    Layers are the modules holding parameters of their own (Linear, Conv, BatchNorm, ...), taken
    from the output layer towards the input; each yielded model is an independent deep copy in
    eval mode, so keeping one does not alter the next. The step name is `"<module path>
    (<Type>)"`. Re-initialisation uses each layer's `reset_parameters` under a seeded RNG (the
    global RNG is left as it was). `model` itself is never modified.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    work = copy.deepcopy(model)
    for i, (name, module) in enumerate(_layers(work)):
        _reinitialise(module, seed + i)
        yield f"{name} ({type(module).__name__})", copy.deepcopy(work).eval()


@dataclass(frozen=True)
class SanityStep:
    """One step of the check: `map` shaped like x; `spearman`, `ssim`: `(N,)` float64, each
    example's map against the original model's map (1.0 for the original itself)."""

    name: str
    map: torch.Tensor
    spearman: torch.Tensor
    ssim: torch.Tensor


def _scaled(m: np.ndarray) -> np.ndarray:
    """A non-negative (H, W) map divided by its maximum, so maps of any size compare in [0, 1]."""
    top = m.max()
    return m / top if top > 0 else m


def sanity_check(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    *,
    score: str = "logit",
    seed: int = 0,
) -> list[SanityStep]:
    """Gradient maps of `x` under cascading randomisation, each compared with the original.

    `x` is an image batch `(N, C, H, W)`; `target` None means the class the *original* model
    predicts, kept fixed for every step. Returns the original step first, then one step per
    layer (see `cascading_randomisation`). Maps are |gradient|; they are compared by Spearman rank
    correlation and by SSIM (channels reduced by max, each map divided by its maximum, data range
    1). `model` and `x` are left unchanged.
    """
    check_input(x)
    check_score(score)
    if x.ndim != 4:
        raise ValueError(f"x must be an image batch (N, C, H, W), got shape {tuple(x.shape)}")
    with eval_mode(model), torch.no_grad():
        out, _ = forward_scores(model, x, score=score, output=None)
    t = resolve_target(target, out)
    original = gradients(model, x, t, score=score)

    def step(name: str, m: torch.Tensor) -> SanityStep:
        a = original.amax(1).double().cpu().numpy()  # (N, H, W)
        b = m.amax(1).double().cpu().numpy()
        rho = [spearman(a[n], b[n]) for n in range(len(a))]
        sim = [ssim(_scaled(a[n]), _scaled(b[n]), data_range=1.0) for n in range(len(a))]
        as_tensor = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
        return SanityStep(name, m, as_tensor(rho), as_tensor(sim))

    steps = [step("original", original)]
    for name, randomised in cascading_randomisation(model, seed=seed):
        steps.append(step(name, gradients(randomised, x, t, score=score)))
    return steps
