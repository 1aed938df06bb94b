"""Every computation a view asks of a model, as a plain function of (model, arrays) -> arrays.

The dashboard runs these in its own process for the bundled, trusted models, and inside the
sandboxed worker (`sandbox.worker`) for uploaded ones: the same function either way, so an
uploaded model gets exactly the maths a registry model gets. Arguments and results are numpy
arrays, numbers, strings and lists/dicts of them, which is what the worker's wire format
carries.

    >>> maps = run("class_maps", model, x, method="gradient", score="logit", absolute=True)
    >>> maps.shape  # (N, K, C, H, W)

Never imports streamlit.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

import saliency
from saliency._validate import check_score, model_device, scores_from, select_output

# What each job answers is a module of its own (issue 31): every name is re-exported here.
from sandbox.job_answers import (  # noqa: F401
    _WORD,
    MAX_BENCH_METRICS,
    MAX_BENCH_ROWS,
    MAX_SANITY_STEPS,
    _count,
    answer_bytes,
    answer_shape,
    check_result,
)

__all__ = ["JOBS", "answer_bytes", "answer_shape", "check_result", "run"]

N_RANDOM_ORDERS = 5  # random pixel orders averaged in the faithfulness baseline


def _tensor(model: Any, x: np.ndarray | torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """`x` as a tensor of `dtype` on the model's device."""
    device = model_device(model, torch.device("cpu"))
    t = torch.as_tensor(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    return t.to(device=device, dtype=dtype)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def logits(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """(N, K) float32 raw outputs."""
    with torch.no_grad():
        return _np(model(_tensor(model, x)).float())


def probabilities(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """(N, K) float32 softmax probabilities."""
    with torch.no_grad():
        return _np(model(_tensor(model, x)).float().softmax(1))


def check(model: nn.Module, x: np.ndarray, *, n_classes: int) -> dict:
    """Run one example and describe what came back, for the acceptance check: the output's
    shape, whether it is finite, and the seconds it took. Raises nothing the model didn't."""
    start = time.perf_counter()
    with torch.no_grad():
        out = model(_tensor(model, x))
    seconds = time.perf_counter() - start
    if not isinstance(out, torch.Tensor):
        return {"type": type(out).__name__, "seconds": seconds}
    return {
        "type": "Tensor",
        "shape": list(out.shape),
        "finite": bool(torch.isfinite(out).all()),
        "seconds": seconds,
        "n_classes": n_classes,
    }


def method_facts(model: nn.Module, x: np.ndarray, *, method: str, layer: str = "") -> dict:
    """Whether `method` can explain `model` on inputs like `x`, asked before any map: the
    library's reason when it can't (`problem`: "no spatial layer: an MLP has no Grad-CAM", a
    TorchScript file whose layers can't be hooked, a layer name that isn't there), and for a
    layer map the layer used (`layer`: the automatic one when none is named) and the spatial
    layers that run once, which a user may choose instead (`layers`, in forward order)."""
    info = saliency.method_info(method)
    facts = {"problem": "", "layer": "", "layers": []}
    if not info.layer:
        return facts
    t = _tensor(model, x[:1])
    try:
        found = saliency.layers(model, t)
        facts["layers"] = [f.name for f in found if f.spatial and f.learned and f.calls == 1][-64:]
        facts["layer"] = layer or saliency.find_layer(model, t).name
        if layer and layer not in facts["layers"]:
            listed = ", ".join(facts["layers"][-8:]) or "none"
            raise ValueError(f"no spatial layer named {layer!r} runs once; some that do: {listed}")
    except (ValueError, TypeError) as err:
        facts["problem"] = str(err)[:600]
    return facts


def batch_check(model: nn.Module, x: np.ndarray) -> dict:
    """Why the model fails on a batch `x` of two or more images, or None, as `{"error": …}`:
    after `check` (one image), a file traced or exported with its batch size fixed runs on
    one image and on nothing else. Its own deadline, apart from the check's: a model that
    hangs only on a batch is stopped here, and told so."""
    try:
        with torch.no_grad():
            out = model(_tensor(model, x))
    except Exception as err:  # noqa: BLE001 - the model's own failure, reported as a fact
        return {"error": str(err)[:2000] or type(err).__name__}
    if isinstance(out, torch.Tensor) and (out.dim() == 0 or out.shape[0] != len(x)):
        return {"error": f"it returned shape {tuple(out.shape)} for {len(x)} images"}
    return {"error": None}


def class_maps(
    model: nn.Module, x: np.ndarray, *, method: str, score: str, absolute: bool, **options
) -> np.ndarray:
    """(N, K, *S) maps of every class by one method (gradient: one `jacobian` call)."""
    return _np(
        saliency.class_maps(
            model, _tensor(model, x), method=method, score=score, absolute=absolute, **options
        )
    )


def maps(
    model: nn.Module,
    x: np.ndarray,
    *,
    targets: np.ndarray,
    method: str,
    score: str,
    absolute: bool,
    **options,
) -> np.ndarray:
    """(N, *S) each example's map for its own class `targets[i]`: an export of many images,
    each explained for its own predicted (or true) class, in one pass per batch instead of
    one `class_maps` call per class."""
    t = torch.as_tensor(np.asarray(targets, dtype=np.int64))
    return _np(
        saliency.attribute(
            model, _tensor(model, x), t, method=method, score=score, absolute=absolute, **options
        )
    )


def contrast(
    model: nn.Module, x: np.ndarray, *, target: int, versus: int, method: str, score: str, **options
) -> np.ndarray:
    """(N, *S) signed map of score_target - score_versus."""
    return _np(
        saliency.contrast(
            model, _tensor(model, x), target, versus, method=method, score=score, **options
        )
    )


def ig_delta(model: nn.Module, x: np.ndarray, *, target: int, score: str, **options) -> np.ndarray:
    """(N,) completeness delta of Integrated Gradients: sum(map) - (f(x) - f(baseline))."""
    _, delta = saliency.attribute(
        model,
        _tensor(model, x),
        target,
        method="integrated_gradients",
        score=score,
        return_delta=True,
        **options,
    )
    return _np(delta)


def summary(model: nn.Module, x: np.ndarray, *, labels: np.ndarray, num_classes: int) -> dict:
    """One chunk's `saliency.sensitivity_summary` sums (float64; add chunks to combine)."""
    s = saliency.sensitivity_summary(
        model,
        [(_tensor(model, x), torch.as_tensor(labels))],
        num_classes=num_classes,
    )
    return {"abs_sums": _np(s.abs_sums), "signed_sums": _np(s.signed_sums), "counts": _np(s.counts)}


def own_class(model: nn.Module, x: np.ndarray, *, labels: np.ndarray) -> dict:
    """`logits` `(N, K)` and `maps` `(N, *S)`, |∂logit_label/∂x| of each image for its own
    label, from one forward and one backward pass (what indexing a workspace needs)."""
    maps, out = saliency.gradients(
        model, _tensor(model, x), torch.as_tensor(labels), return_outputs=True
    )
    return {"logits": _np(out.float()), "maps": _np(maps)}


def nudge(
    model: nn.Module, x: np.ndarray, *, pixel: tuple[int, ...], deltas: tuple, target: int
) -> dict:
    """Predicted (Δ·J) and actual change of the target's logit for each Δ, at one pixel."""
    n = saliency.nudge(model, _tensor(model, x), tuple(pixel), tuple(deltas), target)
    return {
        "deltas": _np(n.deltas),
        "gradient": float(n.gradient[0]),
        "predicted": _np(n.predicted[0]),
        "actual": _np(n.actual[0]),
    }


def _best_ms(fn: Callable, repeat: int) -> tuple[Any, float]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return result, best * 1e3


def autograd_vs_fd(model: nn.Module, x: np.ndarray, *, target: int) -> dict:
    """Signed maps by autograd and by central differences on a float64 copy, and their cost
    (the copy: the shared model is never changed)."""
    model64 = copy.deepcopy(model).double()
    x64 = _tensor(model64, x, torch.float64)
    saliency.gradients(model64, x64, target)  # warm-up: first calls allocate
    ag, ag_ms = _best_ms(lambda: saliency.gradients(model64, x64, target, absolute=False), 5)
    fd, fd_ms = _best_ms(lambda: saliency.finite_differences(model64, x64, target), 1)
    ag, fd = _np(ag[0]), _np(fd[0])
    image = np.asarray(x)[0]
    diff = np.abs(ag - fd)
    lit = image > 0
    return {
        "autograd": ag,
        "fd": fd,
        "autograd_ms": ag_ms,
        "fd_ms": fd_ms,
        "forwards": 2 * int(image.size),
        "max_diff": float(diff.max()),
        "max_diff_digit": float(diff[lit].max()) if lit.any() else float("nan"),
        "max_diff_background": float(diff[~lit].max()) if (~lit).any() else float("nan"),
        "max_abs": float(np.abs(ag).max()),
    }


def sanity(
    model: nn.Module,
    x: np.ndarray,
    *,
    target: int | None = None,
    method: str = "gradient",
    **options,
) -> list[dict]:
    """Cascading randomisation (on deep copies) with one method: per step, the first example's
    map, each example's Spearman ρ and SSIM against the original, and how the step's layer was
    re-initialised. `target` None: each example's predicted class."""
    steps = saliency.sanity_check(model, _tensor(model, x), target, method=method, **options)
    return [
        {
            "step": s.name,
            "map": _np(s.map[0]),
            "spearman": _np(s.spearman),
            "ssim": _np(s.ssim),
            "init": s.init,
            "note": s.note,
        }
        for s in steps
    ]


def faithfulness(model: nn.Module, x: np.ndarray, *, target: int, start: str) -> dict:
    """Deletion and insertion curves of the target's probability, gradient order vs random.

    `start` is "blank" (all 0) or "blurred" (Gaussian blur, sigma 3) for insertion. The random
    curve is the mean over `N_RANDOM_ORDERS` seeded orders.
    """
    xt = _tensor(model, x)
    grad = saliency.gradients(model, xt, target)
    begin = saliency.blur(xt) if start == "blurred" else 0.0
    curves = {
        "deletion": saliency.deletion_curve(model, xt, grad, target),
        "insertion": saliency.insertion_curve(model, xt, grad, target, start=begin),
    }
    out: dict[str, Any] = {"fractions": _np(curves["deletion"].fractions)}
    for kind, curve in curves.items():
        random_scores = []
        for seed in range(N_RANDOM_ORDERS):
            g = torch.Generator().manual_seed(seed)
            order = torch.rand(xt.shape, generator=g).to(xt.device)
            fn = saliency.deletion_curve if kind == "deletion" else saliency.insertion_curve
            extra = {} if kind == "deletion" else {"start": begin}
            random_scores.append(fn(model, xt, order, target, **extra).scores[0])
        rand = torch.stack(random_scores).mean(0)  # (S + 1,)
        out[kind] = _np(curve.scores[0])
        out[f"{kind}_random"] = _np(rand)
        out[f"{kind}_auc"] = float(curve.auc[0])
        out[f"{kind}_random_auc"] = float(saliency.faithfulness.auc(curve.fractions, rand[None])[0])
    return out


def bench_scores(
    model: nn.Module,
    x: np.ndarray,
    *,
    targets: np.ndarray,
    indices: np.ndarray,
    methods: list[str],
    metrics: list[str],
    controls: list[str],
    seed: int = 0,
    options: dict | None = None,
) -> dict:
    """The metric bench's per-image values for a batch (`saliency.bench.score`): "row\tmetric"
    -> `(N,)` float64, each image's random draws seeded from its index in the whole set
    (`indices`), so a bench computed a batch at a time equals one computed at once."""
    from saliency import bench

    values = bench.score(
        model, _tensor(model, x), torch.as_tensor(np.asarray(targets, dtype=np.int64)),
        methods=list(methods), metrics=list(metrics), controls=list(controls), seed=int(seed),
        options=options or {}, indices=[int(i) for i in indices],
    )  # fmt: skip
    return {f"{row}\t{metric}": v.astype(np.float64) for (row, metric), v in values.items()}


# Table models: rows (N, D) in; a tensor, tuple or dict out. `output` picks the entry of a
# tuple (an index) or dict (a key), None for a tensor; `column` one column of it.

MAX_OUTPUTS = 16  # entries of a tuple or dict output that are described


def _column_of(output: Any, column: int, score: str = "logit") -> Callable[[Any], torch.Tensor]:
    """The selector `saliency` takes: one column of one output, as (N, 1). With `score`
    "probability" or "log_probability" that column is taken after a softmax over the whole
    output row (a sigmoid for a one-column output), as the image pages' scores are: a
    classifier's class is then explained by its probability, not by one logit."""
    check_score(score)

    def pick(raw: Any) -> torch.Tensor:
        out = select_output(raw, output)
        if not 0 <= column < out.shape[1]:
            raise ValueError(f"column {column} is out of range: that output has {out.shape[1]}")
        return scores_from(out, score)[:, column : column + 1]

    return pick


def table_outputs(model: nn.Module, x: np.ndarray, **_: Any) -> dict:
    """Run the rows `x` and describe what came back, for choosing what to explain: each
    output's key (None for a plain tensor, an index for a tuple, a key for a dict), shape and
    whether it is finite; and the seconds it took."""
    start = time.perf_counter()
    with torch.no_grad():
        raw = model(_tensor(model, x))
    seconds = time.perf_counter() - start
    if isinstance(raw, torch.Tensor):
        entries = [(None, raw)]
    elif isinstance(raw, dict):
        entries = list(raw.items())
    elif isinstance(raw, list | tuple):
        entries = list(enumerate(raw))
    else:
        return {"type": type(raw).__name__, "seconds": seconds, "outputs": []}
    outputs = []
    for key, value in entries[:MAX_OUTPUTS]:
        if not isinstance(key, int | str | None) or not isinstance(value, torch.Tensor):
            continue
        outputs.append(
            {
                "key": key,
                "shape": list(value.shape),
                "finite": bool(torch.isfinite(value).all()) if value.is_floating_point() else True,
                "floating": bool(value.is_floating_point()),
            }
        )
    return {"type": type(raw).__name__, "seconds": seconds, "outputs": outputs}


def _column_values(model: nn.Module, x: np.ndarray, pick: Callable) -> tuple[torch.Tensor, ...]:
    """`x` as a tensor on the model's device, and the chosen column's score of each row `(N,)`
    (`pick`, from `_column_of`), without a graph."""
    xt = _tensor(model, x)
    with torch.no_grad():
        return xt, pick(model(xt))[:, 0]


def table_jacobian(
    model: nn.Module, x: np.ndarray, *, output: Any, column: int, score: str = "logit"
) -> dict:
    """`values` `(N,)` of the chosen output column's `score` and its `jacobian` `(N, D)` by
    autograd (`saliency.jacobian`), both float64. Rows whose output is NaN or inf get NaN
    gradients (`saliency` refuses non-finite scores; the caller leaves those rows out)."""
    pick = _column_of(output, column, score)
    xt, values = _column_values(model, x, pick)
    values = values.double()
    jac = torch.full(xt.shape, torch.nan, dtype=torch.float64)
    ok = torch.isfinite(values)
    if bool(ok.any()):
        jac[ok] = saliency.jacobian(model, xt[ok], output=pick)[:, 0].double().cpu()
    return {"values": _np(values), "jacobian": _np(jac)}


def table_differences(
    model: nn.Module,
    x: np.ndarray,
    *,
    output: Any,
    column: int,
    steps: np.ndarray,
    score: str = "logit",
) -> dict:
    """Like `table_jacobian`, by central differences with a step per feature
    (`saliency.column_differences`): for a model autograd can't differentiate."""
    pick = _column_of(output, column, score)
    xt, values = _column_values(model, x, pick)
    jac = saliency.column_differences(model, xt, torch.as_tensor(steps), output=pick)
    return {"values": _np(values.double()), "jacobian": _np(jac.double())}


def table_check(
    model: nn.Module,
    x: np.ndarray,
    *,
    output: Any,
    column: int,
    steps: np.ndarray,
    score: str = "logit",
) -> dict:
    """Autograd against central differences on a few rows: `autograd` `(n, D)` (None and an
    `error` when autograd fails: an integer output, a detached graph), `differences` `(n, D)`
    and `values` `(n,)`, on the rows whose output is finite (`kept`, their positions in `x`).
    On a float64 copy of the model when it converts (then `float64`), else in float32."""
    pick = _column_of(output, column, score)
    try:
        copy64 = copy.deepcopy(model).double()
        xt = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float64)
        with torch.no_grad():
            values = pick(copy64(xt))[:, 0]
        model, float64 = copy64, True
    except Exception:  # noqa: BLE001 - a program that won't run in float64: check in float32
        xt, values = _column_values(model, x, pick)
        float64 = False
    kept = torch.isfinite(values)
    xt, values = xt[kept], values[kept]
    differences = saliency.column_differences(model, xt, torch.as_tensor(steps), output=pick)
    try:
        autograd, error = _np(saliency.jacobian(model, xt, output=pick)[:, 0].double()), None
    except Exception as err:  # noqa: BLE001 - reported: the page switches to differences
        autograd, error = None, str(err).strip().splitlines()[0][:300] if str(err) else repr(err)
    return {
        "kept": _np(torch.nonzero(kept)[:, 0]),
        "values": _np(values.double()),
        "autograd": autograd,
        "differences": _np(differences.double()),
        "error": error,
        "float64": float64,
    }


def table_nudge(
    model: nn.Module,
    x: np.ndarray,
    *,
    output: Any,
    column: int,
    feature: int,
    deltas: np.ndarray,
    score: str = "logit",
) -> dict:
    """One row `x` `(1, D)`, one feature moved by each Δ: the predicted change Δ·∂y/∂x_j
    against the actual one (`saliency.nudge`), y being the column's `score`."""
    pick = _column_of(output, column, score)
    n = saliency.nudge(
        model, _tensor(model, x), (feature,), torch.as_tensor(deltas), target=0, output=pick
    )
    return {
        "gradient": float(n.gradient[0]),
        "predicted": _np(n.predicted[0].double()),
        "actual": _np(n.actual[0].double()),
    }


def table_classify(model: nn.Module, x: np.ndarray, *, output: Any, labels: np.ndarray) -> dict:
    """A classifier's fit on the rows `x`, from its whole output row `(N, K)`: `predicted`
    `(N,)` the argmax (-1 where the row is NaN or inf) and `log_probability` `(N,)` the log
    softmax at each row's label, `labels` `(N,)` in 0..K-1 (NaN where the row is not finite).
    Only two numbers a row come back, whatever K."""
    with torch.no_grad():
        out = select_output(model(_tensor(model, x)), output).double()
    t = torch.as_tensor(np.asarray(labels, dtype=np.int64), device=out.device)
    if t.shape != (out.shape[0],) or not bool(((t >= 0) & (t < out.shape[1])).all()):
        raise ValueError(f"labels must be {out.shape[0]} class numbers in 0..{out.shape[1] - 1}")
    ok = torch.isfinite(out).all(1)
    predicted = torch.where(ok, out.argmax(1), torch.full_like(t, -1))
    logp = out.log_softmax(1).gather(1, t[:, None])[:, 0]
    logp = torch.where(ok, logp, torch.full_like(logp, torch.nan))
    return {"predicted": _np(predicted), "log_probability": _np(logp)}


JOBS: dict[str, Callable[..., Any]] = {
    f.__name__: f
    for f in (
        logits,
        probabilities,
        check,
        batch_check,
        method_facts,
        class_maps,
        maps,
        contrast,
        ig_delta,
        summary,
        own_class,
        nudge,
        autograd_vs_fd,
        sanity,
        faithfulness,
        bench_scores,
        table_outputs,
        table_jacobian,
        table_differences,
        table_check,
        table_nudge,
        table_classify,
    )
}


def run(job: str, model: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """`JOBS[job](model, *args, **kwargs)`; an unknown job name is a KeyError naming the known."""
    if job not in JOBS:
        raise KeyError(f"unknown job {job!r}; known: {', '.join(JOBS)}")
    return JOBS[job](model, *args, **kwargs)
