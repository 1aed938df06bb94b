"""Input gradients by automatic differentiation: one class per example, or every class.

J_kj(x) = d score_k(x) / d x_j. A backward pass from a batch of scores gives the gradient of each
example's own score with respect to its own input, because in eval mode the examples of a batch
do not interact; that is why every function here switches the model to eval mode (and restores
each submodule's flag afterwards).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

from ._validate import (
    OutputSelector,
    Target,
    check_classes,
    check_inputs,
    eval_mode,
    forward_scores,
    predict,
    resolve_target,
)
from .compat_torch import engine_run_backward, vmap


def _vjp(
    scores: torch.Tensor,
    xd: torch.Tensor,
    seed: torch.Tensor,
    *,
    retain_graph: bool = False,
    batched: bool = False,
) -> torch.Tensor:
    """`torch.autograd.grad(scores, xd, grad_outputs=seed, ...)[0]` for a `seed` shaped like
    `scores` (with a leading batch of seeds when `batched`), without torch's Python-level check
    of the seed (the engine's own entry, `compat_torch.engine_run_backward`, where torch has
    it). The engine's own errors are torch's: an output that does not require grad, an input
    the graph does not use."""
    if engine_run_backward is None:
        (g,) = torch.autograd.grad(
            scores, xd, grad_outputs=seed, retain_graph=retain_graph, is_grads_batched=batched
        )
        return g

    def vjp(s: torch.Tensor) -> torch.Tensor:
        (g,) = engine_run_backward(
            (scores,), (s,), retain_graph, False, (xd,), False, accumulate_grad=False
        )
        return g

    return vmap(vjp, 0, 0, allow_none_pass_through=True)(seed) if batched else vjp(seed)


def _target_vjp(scores: torch.Tensor, xd: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """d scores[n, t[n]] / d xd for every example n, from one backward pass: the seed is a
    one-hot (N, K) matrix, and each example gets its own row."""
    seed = torch.zeros_like(scores).scatter_(1, t[:, None], 1.0)
    return _vjp(scores, xd, seed)


def _class_vjps(
    scores: torch.Tensor, xd: torch.Tensor, classes: Sequence[int]
) -> Iterator[torch.Tensor]:
    """d scores[:, k] / d xd for each k of `classes` in turn: one backward pass each, reusing
    the graph (freed after the last)."""
    for j, k in enumerate(classes):
        seed = torch.zeros_like(scores)
        seed[:, k] = 1
        yield _vjp(scores, xd, seed, retain_graph=j < len(classes) - 1)


def _target_gradients(
    model: Callable,
    x: torch.Tensor,
    target: Target,
    *,
    score: str,
    output: OutputSelector,
    during: AbstractContextManager | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Signed d score_target / dx for a batch, plus the raw outputs and the targets used.
    `during` is entered around the forward pass (guided backprop's ReLU hooks)."""
    xd = x.detach().requires_grad_(True)
    with torch.enable_grad(), during or nullcontext():
        out, scores = forward_scores(model, xd, score=score, output=output)  # (N, K)
        t = resolve_target(target, out)  # (N,)
        g = _target_vjp(scores, xd, t)
    return g, out.detach(), t


def gradients(
    model: Callable,
    x: torch.Tensor,
    target: Target = None,
    *,
    score: str = "logit",
    absolute: bool = True,
    output: OutputSelector = None,
    return_outputs: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Gradient of one class score per example with respect to the input (a saliency map).

    Args:
        model: a module (or callable) mapping a batch `(N, ...)` to scores `(N, K)`, `(N,)`, or a
            tuple/dict holding them (see `output`).
        x: batch-first input `(N, ...)`, floating point, finite. Not modified.
        target: None (each example's predicted class), an int, or N ints (list or tensor).
            A model with one output unit has target 0.
        score: "logit" (the raw output), "probability" (softmax; sigmoid for one unit) or
            "log_probability".
        absolute: return |gradient| (Simonyan et al. 2013) instead of the signed gradient.
        output: which output of a model returning a tuple/list (an index), a dict (a key), or a
            callable applied to the raw output.
        return_outputs: also return the model's selected `(N, K)` outputs (detached), from the
            same forward pass: predictions and maps for the price of one forward and one
            backward.

    Returns:
        A tensor shaped like `x`, on its device and dtype (and the outputs, if asked).

    The model is evaluated in eval mode (BatchNorm/Dropout in training mode would mix the
    examples of a batch); each submodule's training flag is restored afterwards. Parameters'
    `.grad` are never written.

    Example:
        >>> s = gradients(model, images[:8], target=3)   # |d logit_3 / d x|, (8, 1, 28, 28)
    """
    check_inputs(x, score)
    with eval_mode(model):
        g, out, _ = _target_gradients(model, x, target, score=score, output=output)
    if absolute:
        # Autograd's result is a fresh tensor, so abs can work in place, unless it is a broadcast
        # view (a model like x.sum(1) gets an expanded gradient), which is never contiguous.
        g = g.abs_() if g.is_contiguous() else g.abs()
    return (g, out) if return_outputs else g


def _has_conv(model: Callable) -> bool:
    if not isinstance(model, nn.Module):
        return True  # unknown structure: the per-class loop works for anything
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())


# Intermediate results of one vmapped backward are (classes, n, ...): keep them under ~32M
# elements by splitting the classes into groups.
_BATCHED_BUDGET = 1 << 25
# Chunk sizes measured on a 2-core CPU (benchmarks/bench_saliency.py): conv backward slows
# down past ~128 examples a chunk (cache misses); fully connected nets like large chunks.
_CONV_CHUNK = 128
_DENSE_CHUNK = 1024
_BATCHED_MAX = 256


def _jacobian_chunk(
    model: Callable,
    x: torch.Tensor,
    classes: Sequence[int] | torch.Tensor | None,
    *,
    score: str,
    output: OutputSelector,
    strategy: str,
    during: AbstractContextManager | None = None,
) -> torch.Tensor:
    """Signed Jacobian of one chunk from one forward pass, class-major: `(C, n, ...)`.

    Class-major is the layout autograd produces (one `(n, ...)` gradient per class), so no
    strided copy is needed; `jacobian` returns a transposed view of it. `during` is entered
    around the forward pass (guided backprop's ReLU hooks).
    """
    xd = x.detach().requires_grad_(True)
    with torch.enable_grad():
        with during or nullcontext():
            _, scores = forward_scores(model, xd, score=score, output=output)  # (n, K)
        cls = check_classes(classes, scores.shape[1])
        rows = torch.arange(x.shape[0], device=x.device)
        if strategy == "batched":
            # One vmapped backward per group of classes: fastest for small nets.
            group = max(1, _BATCHED_BUDGET // max(1, xd.numel()))
            parts = []
            for start in range(0, len(cls), group):
                part = cls[start : start + group]
                seeds = scores.new_zeros((len(part), *scores.shape))  # (c, n, K)
                for j, k in enumerate(part):
                    seeds[j, rows, k] = 1
                g = _vjp(scores, xd, seeds, batched=True, retain_graph=start + group < len(cls))
                parts.append(g)  # (c, n, ...)
            return parts[0] if len(parts) == 1 else torch.cat(parts)
        # One forward, then one backward per class reusing the graph.
        jac = x.new_empty((len(cls), *x.shape))  # (C, n, ...)
        for j, g in enumerate(_class_vjps(scores, xd, cls)):
            jac[j] = g
    return jac


def _auto_strategy(model: Callable, n: int) -> str:
    # Measured on a 2-core CPU (benchmarks/bench_saliency.py): the vmapped backward wins for
    # fully connected nets on up to a few hundred examples, where per-call overhead matters;
    # past that, and for conv nets (whose vmapped backward falls behind), the per-class loop.
    return "batched" if n <= _BATCHED_MAX and not _has_conv(model) else "loop"


def jacobian(
    model: Callable,
    x: torch.Tensor,
    *,
    score: str = "logit",
    output: OutputSelector = None,
    classes: Sequence[int] | torch.Tensor | None = None,
    chunk_size: int | None = None,
    strategy: str = "auto",
) -> torch.Tensor:
    """Signed gradients of every class score (or of `classes`) for every example.

    Returns a tensor `(N, C, *x.shape[1:])` where C is the number of classes (or of
    `classes`, in the given order): `J[n, c] = d score_c(x_n) / d x_n`.

    `strategy`: "loop" (one forward, then one backward per class), "batched" (one vmapped
    backward over all classes with `is_grads_batched`), or "auto" (batched for networks without
    convolutions on chunks of up to 256 examples, loop otherwise; measured in `benchmarks/`).
    The batch is processed in chunks of `chunk_size` examples (default 128 for conv nets, 1024
    otherwise), and the batched backward splits classes into groups, so the memory beyond the
    result stays bounded. To keep the result itself small for a model with many classes, pass
    only the `classes` you need.

    The result is a transposed view of a class-major buffer (that is how autograd produces the
    gradients, so nothing is copied twice); call `.contiguous()` if you need a packed tensor.
    Evaluated in eval mode; the model's flags, parameters' `.grad` and `x` are left untouched.

    Example:
        >>> J = jacobian(model, images[:8])        # (8, 10, 1, 28, 28)
        >>> torch.equal(J[:, 3].abs(), gradients(model, images[:8], target=3))
    """
    check_inputs(x, score)
    if strategy not in ("auto", "loop", "batched"):
        raise ValueError(f"strategy must be 'auto', 'loop' or 'batched', got {strategy!r}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size}")
    if chunk_size is None:
        chunk_size = _CONV_CHUNK if _has_conv(model) else _DENSE_CHUNK
    n = x.shape[0]
    result = None  # (C, N, ...): class-major, returned as an (N, C, ...) view
    with eval_mode(model):
        for i in range(0, n, chunk_size):
            xc = x[i : i + chunk_size]
            how = _auto_strategy(model, len(xc)) if strategy == "auto" else strategy
            part = _jacobian_chunk(
                model, xc, classes, score=score, output=output, strategy=how
            )  # (C, n, ...)
            if part.shape[1] == n:
                return part.transpose(0, 1)
            if result is None:
                result = part.new_empty((part.shape[0], n, *part.shape[2:]))
            result[:, i : i + part.shape[1]] = part
    return result.transpose(0, 1)


def _default_eps(dtype: torch.dtype) -> float:
    # Central differences balance truncation (h^2) against rounding (eps_machine / h): the best
    # step is about eps_machine ** (1/3) for inputs of order one.
    return 6e-6 if dtype == torch.float64 else 5e-3


def finite_differences(
    model: Callable,
    x: torch.Tensor,
    target: Target = None,
    *,
    eps: float | None = None,
    score: str = "logit",
    output: OutputSelector = None,
    batch_size: int = 1024,
) -> torch.Tensor:
    """Central differences (f(x + eps e_j) - f(x - eps e_j)) / (2 eps) for every input element.

    Signed, shaped like `x`. Uses 2·D forward passes per example (D = elements per example),
    evaluated `batch_size` perturbed copies at a time. Only for checking autograd, or for models
    that are not differentiable: `gradients` gets the same answer from one backward pass.
    `target` None means each example's predicted class at `x`. `eps` defaults to 6e-6 for
    float64 and 5e-3 otherwise. For a tight check, run a float64 copy of the model on float64
    inputs. Evaluated in eval mode without gradients.
    """
    check_inputs(x, score)
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size}")
    eps = _default_eps(x.dtype) if eps is None else float(eps)
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")
    shape = x.shape[1:]
    d = x[0].numel()
    result = torch.empty_like(x)
    _, _, t = predict(model, x, target, score=score, output=output)  # (N,)
    with eval_mode(model), torch.no_grad():
        steps = torch.eye(d, dtype=x.dtype, device=x.device) * eps  # (D, D)
        for n in range(x.shape[0]):
            base = x[n].reshape(1, d)
            copies = torch.cat([base + steps, base - steps])  # (2D, D)
            values = []
            for i in range(0, 2 * d, batch_size):
                chunk = copies[i : i + batch_size].reshape(-1, *shape)
                _, s = forward_scores(model, chunk, score=score, output=output)
                values.append(s[:, t[n]])
            v = torch.cat(values)  # (2D,)
            result[n] = ((v[:d] - v[d:]) / (2 * eps)).reshape(shape)
    return result
