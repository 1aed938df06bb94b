"""What each job of `sandbox.jobs` answers: its shape (`answer_shape`), at most how many
bytes of arrays (`answer_bytes`), and whether a result is that answer (`check_result`). The
server checks a sandboxed worker's reply against these before reading it. `sandbox.jobs`
re-exports every name.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

MAX_BENCH_ROWS = 32  # methods and controls a bench job scores
MAX_BENCH_METRICS = 16
MAX_SANITY_STEPS = 257  # the original and up to 256 layers: what an answer may carry
_WORD = 8  # bytes of the widest dtype a reply may carry (float64, int64)


def _count(values: Any, default: int) -> int:
    try:
        return len(values)
    except TypeError:
        return default


def answer_shape(
    job: str, x_shape: tuple[int, ...], n_classes: int, kwargs: dict | None = None
) -> tuple[int, ...] | None:
    """The shape of the one array `job` answers for an input of `x_shape`, or None for a job
    that answers a dict or a list. `class_maps` answers one map per class asked for
    (`classes=`), every one of the model's `n_classes` otherwise."""
    kwargs = kwargs or {}
    n, sample = int(x_shape[0]), tuple(int(d) for d in x_shape[1:])
    if job == "class_maps":
        classes = kwargs.get("classes")
        k = n_classes if classes is None else _count(classes, n_classes)
        return (n, k, *sample)
    return {
        "logits": (n, n_classes),
        "probabilities": (n, n_classes),
        "maps": (n, *sample),
        "contrast": (n, *sample),
        "ig_delta": (n,),
    }.get(job)


def answer_bytes(
    job: str, x_shape: tuple[int, ...], n_classes: int, kwargs: dict | None = None
) -> int:
    """At most how many bytes of arrays `job` answers for an input of `x_shape` (counting 8
    bytes an element, the widest dtype the wire carries): the server refuses a worker's reply
    that announces more before reading any of it. Jobs that answer no array (the checks, an
    unknown name) get 0."""
    kwargs = kwargs or {}
    shape = answer_shape(job, x_shape, n_classes, kwargs)
    if shape is not None:
        return _WORD * math.prod(shape)
    n = int(x_shape[0]) if x_shape else 0
    pixels = math.prod(int(d) for d in x_shape[1:])  # one example's elements (D for a row)
    k = int(kwargs.get("num_classes", n_classes))
    deltas = _count(kwargs.get("deltas", ()), 0)
    elements = {
        "summary": 2 * k * k * pixels + k,
        "own_class": n * n_classes + n * pixels,
        "nudge": 3 * deltas,
        "autograd_vs_fd": 2 * pixels,
        "sanity": MAX_SANITY_STEPS * (pixels + 2 * n),
        "faithfulness": 5 * (pixels + 1),  # at most one step per element
        "table_jacobian": n + n * pixels,
        "table_differences": n + n * pixels,
        "table_check": 2 * n + 2 * n * pixels,
        "table_nudge": 2 * deltas,
        "table_classify": 2 * n,  # two numbers a row, whatever the output's width
        "bench_scores": n
        * min(
            _count(kwargs.get("methods", ()), 0) + _count(kwargs.get("controls", ()), 0),
            MAX_BENCH_ROWS,
        )
        * min(_count(kwargs.get("metrics", ()), 0), MAX_BENCH_METRICS),
    }.get(job, 0)
    return _WORD * elements


def check_result(
    job: str,
    result: Any,
    x_shape: tuple[int, ...],
    n_classes: int,
    kwargs: dict | None = None,
) -> str | None:
    """What is wrong with a job's result for an input of `x_shape` (and the job's `kwargs`:
    `classes` decides how many maps `class_maps` answers), or None. For results that come back
    from a worker, which is not trusted to send what it should."""
    expected = answer_shape(job, x_shape, n_classes, kwargs)
    if expected is None:
        kind = list if job == "sanity" else dict
        ok = isinstance(result, kind)
        return None if ok else f"a {type(result).__name__} instead of a {kind.__name__}"
    if not isinstance(result, np.ndarray) or not np.issubdtype(result.dtype, np.floating):
        return f"a {type(result).__name__} instead of an array of numbers"
    if result.shape != expected:
        return f"shape {result.shape} instead of {expected}"
    return None
