"""Data-set sensitivity: the mean of |J| over many inputs, streamed batch by batch.

A single map explains one decision; the average over a data set says how much the model uses
each input element overall. It describes the model, not the world: of two correlated pixels a
model may use one and ignore the other, and the average will say the other does not matter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from ._gradients import _target_gradients, jacobian
from ._validate import OutputSelector, check_input, check_score, eval_mode, model_device

TARGETS = ("label", "predicted", "all")


def _batches(data: Any) -> tuple[Iterable, int | None]:
    """An iterable of (x, y-or-None) batches, and the number of examples if it is known."""
    if isinstance(data, torch.Tensor):
        return [(data, None)], data.shape[0]
    if (
        isinstance(data, (tuple, list))
        and len(data) == 2
        and all(isinstance(t, torch.Tensor) for t in data)
        and data[1].ndim == 1
        and data[0].ndim >= 2
        and data[0].shape[0] == data[1].shape[0]
        and not data[1].is_floating_point()
    ):
        return [tuple(data)], data[0].shape[0]  # one (X, y) pair, not two batches
    total = None
    dataset = getattr(data, "dataset", None)
    if dataset is not None and hasattr(dataset, "__len__"):
        total = len(dataset)  # a DataLoader

    def split(item: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        if isinstance(item, torch.Tensor):
            return item, None
        if isinstance(item, (tuple, list)) and len(item) >= 1:
            return item[0], (item[1] if len(item) > 1 else None)
        raise TypeError(f"data must yield tensors or (x, y) batches, got {type(item).__name__}")

    return (split(item) for item in data), total


def _batch_gradients(model, x, y, target, by_class, absolute, score, output, device):
    """One batch of `average_sensitivity`: `(x, y, g, k)`, the batch and its labels on the
    device, its float64 gradients (absolute if asked) and the model's number of outputs."""
    check_input(x)
    dev = torch.device(device) if device is not None else model_device(model, x.device)
    x = x.to(dev)
    needs_y = by_class or target == "label"
    if needs_y and y is None:
        raise ValueError(
            f"target={target!r}, by_class={by_class} needs labels: pass (x, y) batches"
        )
    if y is not None:
        y = torch.as_tensor(y, device=dev).long().reshape(-1)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"a batch has {x.shape[0]} inputs but {y.shape[0]} labels")
    if target == "all":
        g = jacobian(model, x, score=score, output=output)  # (n, K, ...)
        k = g.shape[1]
    else:
        t = y if target == "label" else (None if target == "predicted" else target)
        g, out, _ = _target_gradients(model, x, t, score=score, output=output)  # (n, ...)
        k = out.shape[1]
    g = g.double()
    if absolute:
        g = g.abs()
    return x, y, g, k


def average_sensitivity(
    model: Callable,
    data: Any,
    *,
    target: str | int = "label",
    by_class: bool = False,
    absolute: bool = True,
    score: str = "logit",
    output: OutputSelector = None,
    num_classes: int | None = None,
    device: torch.device | str | None = None,
    progress: Callable[[int, int | None], Any] | None = None,
) -> torch.Tensor:
    """Mean (absolute by default) input gradient over a data set, accumulated in float64.

    Args:
        data: an iterable of `(x, y)` batches (a DataLoader, a list of pairs) or of `x` tensors,
            or one tensor `X`, or one pair `(X, y)`. Batches are moved to `device` (default: the
            model's device).
        target: "label" (each example's true class; needs y), "predicted", an int, or "all"
            (every class: one map per class from a Jacobian).
        by_class: group the average by the example's label (needs y).
        absolute: average |gradient| (how much each input is used) instead of the signed one.
        progress: called as `progress(examples_done, total_or_None)` after every batch; it may
            raise to cancel.

    Returns (float64, on the model's device), with S = the shape of one example:
        - target "label"/"predicted"/int: `S`, or `(K, *S)` with `by_class` (row k averages the
          examples labelled k);
        - target "all": `(K, *S)` (row c averages d score_c / dx over all examples), or
          `(K, K, *S)` with `by_class` (`[k, c]`: examples labelled k, class c).
        Groups with no examples are NaN. K is the model's number of outputs (or `num_classes`).

    Evaluated in eval mode, like every function here.
    """
    check_score(score)
    if not (isinstance(target, int) and not isinstance(target, bool)) and target not in TARGETS:
        raise ValueError(f"target must be 'label', 'predicted', 'all' or an int, got {target!r}")
    batches, total = _batches(data)
    sums: torch.Tensor | None = None
    counts: torch.Tensor | None = None
    done = 0
    with eval_mode(model):
        for x, y in batches:
            x, y, g, k = _batch_gradients(
                model, x, y, target, by_class, absolute, score, output, device
            )
            k = num_classes or k
            if sums is None:
                groups = (k,) if by_class else ()
                sums = g.new_zeros((*groups, *g.shape[1:]))
                counts = g.new_zeros(groups)
            if by_class:
                if int(y.min()) < 0 or int(y.max()) >= k:
                    raise ValueError(f"labels must lie in 0..{k - 1}, got {int(y.max())}")
                sums.index_add_(0, y, g)
                counts.index_add_(0, y, torch.ones_like(y, dtype=torch.float64))
            else:
                sums += g.sum(0)
                counts += x.shape[0]
            done += x.shape[0]
            if progress is not None:
                progress(done, total)
    if sums is None:
        raise ValueError("data is empty: no batch was seen")
    return _group_means(sums, counts)


def _group_means(sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """`sums` divided by their groups' `counts` (whose axes lead `sums`'), NaN for an empty
    group."""
    counts = counts.reshape(counts.shape + (1,) * (sums.ndim - counts.ndim))
    return sums / counts.where(counts > 0, torch.nan)


@dataclass(frozen=True)
class SensitivitySummary:
    """Every class's input gradients over a labelled data set, grouped by label (float64).

    `abs_sums[k, c]` and `signed_sums[k, c]`: sums over the examples labelled k of
    |d score_c / dx| and d score_c / dx, shape `(K, K, *S)`; `counts[k]`: examples labelled k.
    The properties give the means a dashboard shows; groups with no examples are NaN.
    """

    abs_sums: torch.Tensor
    signed_sums: torch.Tensor
    counts: torch.Tensor

    def _own_class(self, sums: torch.Tensor) -> torch.Tensor:
        k = self.counts.shape[0]
        return _group_means(sums, self.counts)[torch.arange(k), torch.arange(k)]  # (K, *S)

    def _all_examples(self, sums: torch.Tensor) -> torch.Tensor:
        return sums.sum(0) / self.counts.sum()  # (K, *S)

    @property
    def own_class(self) -> torch.Tensor:
        """`(K, *S)`: row c = mean |d score_c / dx| over the examples labelled c."""
        return self._own_class(self.abs_sums)

    @property
    def all_examples(self) -> torch.Tensor:
        """`(K, *S)`: row c = mean |d score_c / dx| over every example."""
        return self._all_examples(self.abs_sums)

    @property
    def signed_own_class(self) -> torch.Tensor:
        """`(K, *S)`: row c = mean d score_c / dx over the examples labelled c (signed)."""
        return self._own_class(self.signed_sums)

    @property
    def signed_all_examples(self) -> torch.Tensor:
        """`(K, *S)`: row c = mean d score_c / dx over every example (signed)."""
        return self._all_examples(self.signed_sums)

    @property
    def overall(self) -> torch.Tensor:
        """`S`: mean over classes and examples of |d score_c / dx|."""
        return self.all_examples.mean(0)

    @property
    def n(self) -> int:
        return int(self.counts.sum())


def sensitivity_summary(
    model: Callable,
    data: Any,
    *,
    score: str = "logit",
    output: OutputSelector = None,
    num_classes: int | None = None,
    device: torch.device | str | None = None,
    progress: Callable[[int, int | None], Any] | None = None,
) -> SensitivitySummary:
    """One pass over labelled data giving every class's mean |J| and signed mean J, by label.

    The same Jacobian (one forward and K backward passes per chunk) feeds both the absolute
    and the signed sums, so the dashboard's whole data-set view costs one pass. `data` and
    `progress` are as in `average_sensitivity`. Evaluated in eval mode.
    """
    check_score(score)
    batches, total = _batches(data)
    abs_sums = signed_sums = counts = None
    done = 0
    with eval_mode(model):
        for x, y in batches:
            check_input(x)
            if y is None:
                raise ValueError("sensitivity_summary needs labels: pass (x, y) batches")
            dev = torch.device(device) if device is not None else model_device(model, x.device)
            x = x.to(dev)
            y = torch.as_tensor(y, device=dev).long().reshape(-1)
            # jacobian's result is a view of a class-major (K, n, ...) buffer: use that layout.
            g = jacobian(model, x, score=score, output=output).transpose(0, 1)  # (K, n, ...)
            g = g.reshape(g.shape[0], g.shape[1], -1).double()  # (K, n, D)
            if abs_sums is None:
                k = num_classes or g.shape[0]
                shape = (k, g.shape[0], *x.shape[1:])
                abs_sums, signed_sums = g.new_zeros(shape), g.new_zeros(shape)
                counts = g.new_zeros(k)
            if int(y.min()) < 0 or int(y.max()) >= counts.shape[0]:
                raise ValueError(f"labels must lie in 0..{counts.shape[0] - 1}")
            # Group sums by label as one float64 matmul per class: (L, n) @ (n, D).
            onehot = torch.nn.functional.one_hot(y, counts.shape[0]).to(g.dtype).T  # (L, n)
            signed_sums += (onehot @ g).transpose(0, 1).reshape(signed_sums.shape)
            abs_sums += (onehot @ g.abs_()).transpose(0, 1).reshape(abs_sums.shape)
            counts += onehot.sum(1)
            done += x.shape[0]
            if progress is not None:
                progress(done, total)
    if abs_sums is None:
        raise ValueError("data is empty: no batch was seen")
    return SensitivitySummary(abs_sums=abs_sums, signed_sums=signed_sums, counts=counts)
