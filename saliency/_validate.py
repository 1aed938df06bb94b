"""Checks and small pieces shared by every public function.

Everything here turns a caller's mistake into a `ValueError`/`TypeError` that says what was
expected and what arrived, before any gradient is computed.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

import numpy as np
import torch
from torch import nn

from .names import SCORES

# Type aliases (typing.Union keeps them valid at run time on Python 3.9).
OutputSelector = Union[int, str, Callable[[Any], torch.Tensor], None]  # noqa: UP007
Target = Union[int, Sequence[int], torch.Tensor, None]  # noqa: UP007


def check_input(x: torch.Tensor, *, name: str = "x") -> torch.Tensor:
    """A batch-first floating tensor with finite values, or a clear error."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 2:
        raise ValueError(
            f"{name} must be batch-first with at least 2 dimensions (N, ...), got shape "
            f"{tuple(x.shape)}; for a single example use {name}.unsqueeze(0)"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(x.shape)})")
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor to be differentiated, got dtype {x.dtype}; "
            f"convert it with {name}.float()"
        )
    if not all_finite(x):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains {bad} non-finite values (NaN or inf)")
    return x


def all_finite(t: torch.Tensor) -> bool:
    """True when every value is finite.

    A NaN or inf anywhere makes the sum non-finite, and one reduction is several times cheaper
    than an elementwise mask: only a non-finite sum (or a finite-valued overflow) needs the mask.
    """
    t = t.detach()  # no graph for the check: cheaper than a no_grad block (~6 us a call here)
    # math.isfinite of the sum's value: torch.isfinite on a 0-d tensor is itself several
    # tensor ops, as slow as a small linear layer (profiled on gradients at batch 1).
    if math.isfinite(float(t.sum())):
        return True
    return bool(torch.isfinite(t).all())


def check_score(score: str) -> str:
    if score not in SCORES:
        raise ValueError(f"score must be one of {', '.join(map(repr, SCORES))}, got {score!r}")
    return score


def select_output(raw: Any, output: OutputSelector) -> torch.Tensor:
    """The one output tensor the caller wants from whatever the model's forward returned.

    `output` is None (the model returns a tensor), an index (tuple or list outputs), a key (dict
    outputs) or a callable applied to the raw output. The result is reshaped to (N, K): a model
    with a single output unit that returns (N,) gives (N, 1).
    """
    if callable(output):
        out = output(raw)
    elif output is None:
        if isinstance(raw, torch.Tensor):
            out = raw
        elif isinstance(raw, Mapping):
            raise ValueError(
                f"the model returned a dict with keys {list(raw)}; pass output=<key> to choose one"
            )
        elif isinstance(raw, Sequence):
            raise ValueError(
                f"the model returned a {type(raw).__name__} of {len(raw)} outputs; "
                f"pass output=<index> (0..{len(raw) - 1}) or a callable to choose one"
            )
        else:
            raise TypeError(f"the model returned {type(raw).__name__}, not a tensor")
    elif isinstance(raw, Mapping):
        if output not in raw:
            raise ValueError(f"output={output!r} is not a key of the model's output {list(raw)}")
        out = raw[output]
    elif isinstance(raw, Sequence) and not isinstance(raw, str):
        if not isinstance(output, int) or isinstance(output, bool):
            raise ValueError(
                f"the model returned a {type(raw).__name__} of {len(raw)} outputs; "
                f"output must be an index, got {output!r}"
            )
        if not -len(raw) <= output < len(raw):
            raise ValueError(
                f"output={output} is out of range: the model returned {len(raw)} outputs"
            )
        out = raw[output]
    else:
        raise ValueError(
            f"output={output!r} was given but the model returned a single "
            f"{type(raw).__name__}; drop output= or pass a callable"
        )
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the selected output is a {type(out).__name__}, not a tensor")
    if out.ndim == 1:
        out = out.unsqueeze(1)
    if out.ndim != 2:
        raise ValueError(
            f"the model's output must be (N, K) scores after output selection, got shape "
            f"{tuple(out.shape)}"
        )
    return out


def scores_from(out: torch.Tensor, score: str) -> torch.Tensor:
    """Turn (N, K) raw outputs into the class scores to differentiate.

    With one output unit "probability" means the sigmoid (a binary classifier's logit).
    """
    if score == "logit":
        return out
    if out.shape[1] == 1:
        return torch.sigmoid(out) if score == "probability" else nn.functional.logsigmoid(out)
    if score == "probability":
        return out.softmax(dim=1)
    return out.log_softmax(dim=1)


def forward_scores(
    model: Callable, x: torch.Tensor, *, score: str, output: OutputSelector
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw (N, K) outputs and the (N, K) scores for one batch, with the usual checks."""
    try:
        raw = model(x)
    except RuntimeError:
        # Torch says "mat1 and mat2 must have the same dtype" from deep inside the first layer:
        # when that is the cause, say so plainly. Checked here, on the way out, rather than
        # before every forward (the parameter walk cost ~15 us of a ~700 us call at batch 1).
        check_dtype(model, x)
        raise
    out = select_output(raw, output)
    if out.shape[0] != x.shape[0]:
        raise ValueError(
            f"the model returned {out.shape[0]} rows for a batch of {x.shape[0]} examples; "
            "its output must be batch-first (N, K)"
        )
    if not all_finite(out.detach()):
        raise ValueError("the model returned non-finite scores (NaN or inf) for this input")
    return out, scores_from(out, score)


def check_inputs(x: torch.Tensor, score: str) -> None:
    """What every map's function checks first: `check_input(x)`, then `check_score(score)`."""
    check_input(x)
    check_score(score)


def predict(
    model: Callable, x: torch.Tensor, target: Target, *, score: str, output: OutputSelector
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward pass in eval mode without gradients: the raw (N, K) outputs, their (N, K)
    scores and the (N,) targets (`resolve_target`: None is each example's predicted class)."""
    with eval_mode(model), torch.no_grad():
        out, scores = forward_scores(model, x, score=score, output=output)
    return out, scores, resolve_target(target, out)


def num_classes(model: Callable, x: torch.Tensor, *, score: str, output: OutputSelector) -> int:
    """How many classes the model scores, from one forward pass of `x[:1]` (eval mode, no
    gradients)."""
    with eval_mode(model), torch.no_grad():
        return forward_scores(model, x[:1], score=score, output=output)[0].shape[1]


def check_dtype(model: Any, x: torch.Tensor) -> None:
    """A clear error when the input's floating dtype is not the model's (torch would say
    "mat1 and mat2 must have the same dtype" from deep inside the first layer). Called when a
    forward pass failed: a model that casts its input itself is left to do so."""
    if not isinstance(model, nn.Module):
        return
    for p in model.parameters():
        if p.is_floating_point():
            if p.dtype != x.dtype:
                raise TypeError(
                    f"x is {x.dtype} but the model's parameters are {p.dtype}: convert the input "
                    f"(x.to({p.dtype})) or the model (model.to({x.dtype}))"
                )
            return


def resolve_target(target: Target, out: torch.Tensor) -> torch.Tensor:
    """(N,) int64 class indices on out's device: None means each example's predicted class.

    An int may be any integer type (`np.int64(3)`, what `labels.numpy()[i]` gives) or a 0-d
    integer tensor or array; it applies to every example."""
    n, k = out.shape
    if target is None:
        return out.argmax(dim=1)
    if isinstance(target, bool | np.bool_):
        raise TypeError("target must be an int, a sequence of ints or an integer tensor")
    if isinstance(target, torch.Tensor) and target.ndim == 0:
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TypeError(f"target must hold integers, got dtype {target.dtype}")
        target = int(target)
    elif isinstance(target, np.ndarray) and target.ndim == 0:
        if not np.issubdtype(target.dtype, np.integer):
            raise TypeError(f"target must hold integers, got dtype {target.dtype}")
        target = int(target)
    if isinstance(target, numbers.Integral):
        target = int(target)
    if isinstance(target, int):
        if not 0 <= target < k:  # checked here, not by two reductions of a filled tensor
            _out_of_range(target, k)
        return torch.full((n,), target, dtype=torch.long, device=out.device)
    else:
        if isinstance(target, torch.Tensor):
            if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
                raise TypeError(f"target must hold integers, got dtype {target.dtype}")
            t = target.to(device=out.device, dtype=torch.long).reshape(-1)
            if target.ndim > 1:
                raise ValueError(f"target must be 1-D, got shape {tuple(target.shape)}")
        else:
            try:
                values = [int(v) for v in target]
            except (TypeError, ValueError) as err:
                raise TypeError(
                    f"target must be None, an int, or a sequence of ints, got {target!r}"
                ) from err
            t = torch.tensor(values, dtype=torch.long, device=out.device)
        if t.numel() != n:
            raise ValueError(f"target has {t.numel()} entries but x has {n} examples")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= k):
        _out_of_range(int(t.min()) if int(t.min()) < 0 else int(t.max()), k)
    return t


def _out_of_range(bad: int, k: int) -> None:
    raise ValueError(
        f"target {bad} is out of range for a model with {k} output"
        f"{'s' if k != 1 else ''} (valid: 0..{k - 1})"
    )


def check_classes(classes: Sequence[int] | torch.Tensor | None, k: int) -> list[int]:
    if classes is None:
        return list(range(k))
    values = [int(c) for c in (classes.tolist() if isinstance(classes, torch.Tensor) else classes)]
    if not values:
        raise ValueError("classes is empty")
    bad = [c for c in values if not 0 <= c < k]
    if bad:
        raise ValueError(f"classes {bad} out of range for a model with {k} outputs (0..{k - 1})")
    return values


class _EvalMode:
    __slots__ = ("flags", "model")

    def __init__(self, model: Any) -> None:
        self.model, self.flags = model, None

    def __enter__(self) -> None:
        if not isinstance(self.model, nn.Module):
            return
        flags = [(m, m.training) for m in self.model.modules()]
        if not any(training for _, training in flags):  # the usual case: already in eval mode
            return
        for m, _ in flags:  # the flags themselves: an exported program refuses .eval()
            m.training = False
        self.flags = flags

    def __exit__(self, *exc: object) -> None:
        for m, was_training in self.flags or ():
            m.training = was_training


def eval_mode(model: Any) -> _EvalMode:
    """A context: every submodule in eval mode; each one's own flag restored afterwards.

    One backward pass serves a whole batch only when examples do not interact: BatchNorm in
    training mode mixes the batch's statistics and Dropout makes the map random. (A class, not
    a generator-based context manager: this runs on every call, and the class costs ~5 us
    less.)
    """
    return _EvalMode(model)


def model_device(model: Any, fallback: torch.device) -> torch.device:
    """The device of the model's first parameter or buffer; `fallback` for parameter-free ones."""
    if isinstance(model, nn.Module):
        for t in model.parameters():
            return t.device
        for t in model.buffers():
            return t.device
    return fallback


def expand_map(m: torch.Tensor, x: torch.Tensor, absolute: bool | None) -> torch.Tensor:
    """(N, H, W) -> x's shape, the same map in every channel (a view; |m| if `absolute`)."""
    if absolute:
        m = m.abs()
    return m.unsqueeze(1).expand_as(x)


def expand_class_maps(m: torch.Tensor, x: torch.Tensor, absolute: bool | None) -> torch.Tensor:
    """(N, K, H, W) -> (N, K, *x.shape[1:]), the same map in every channel (a view; |m| if
    `absolute`)."""
    if absolute:
        m = m.abs()
    return m.unsqueeze(2).expand(m.shape[0], m.shape[1], *x.shape[1:])


def _signed_unless(m: torch.Tensor, x: torch.Tensor, absolute: bool | None) -> torch.Tensor:
    return m.abs() if absolute else m


def registry_method(
    function: Callable,
    *,
    has_class: bool = True,
    finish: Callable[[torch.Tensor, torch.Tensor, bool | None], torch.Tensor] = _signed_unless,
    name: str | None = None,
) -> Callable:
    """`function` as the method registry calls it (`names.MethodInfo.function`):
    `(model, x, target, *, absolute, score, output, **options)`.

    `function` is called as `function(model, x, target, score=..., output=..., **options)`,
    or, for a map with no class (`has_class=False`), as `function(model, x, **options)`, which
    then ignores `target`, `score` and `output`. Its map `m` comes back as
    `finish(m, x, absolute)`: by default |m| when `absolute`, else `m` (`expand_map` for a
    CAM's `(N, H, W)`). An option `function` doesn't take is its own TypeError. The result
    is named `name` (default `<function>_method`) in `function`'s module, where the caller
    binds it, so that it pickles by reference like a function written there.
    """

    def method(
        model: Callable,
        x: torch.Tensor,
        target: Target = None,
        *,
        absolute: bool | None = None,
        score: str = "logit",
        output: OutputSelector = None,
        **options,
    ) -> torch.Tensor:
        if has_class:
            m = function(model, x, target, score=score, output=output, **options)
        else:
            m = function(model, x, **options)
        return finish(m, x, absolute)

    method.__name__ = method.__qualname__ = name or f"{function.__name__}_method"
    method.__module__ = function.__module__
    method.__doc__ = f"`{function.__name__}` as `attribute` calls it: |map| when `absolute`" + (
        "."
        if has_class
        else "; the map has no class: `target`, `score` and `output` change nothing."
    )
    return method
