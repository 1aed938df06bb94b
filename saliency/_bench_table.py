"""The bench's table: methods and controls × metrics, each a mean with a bootstrap interval over
images, the methods' rank under each metric, and how far the metrics agree (Kendall τ).

Re-exported by `saliency.bench`; the metrics themselves live there.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ._validate import OutputSelector, Target

MAP_METRICS = (
    "sparseness",
    "complexity",
    "deletion_auc",
    "insertion_auc",
    "road_morf",
    "road_lerf",
)
METHOD_METRICS = ("max_sensitivity", "random_logit", "model_randomisation")
METRICS = MAP_METRICS + METHOD_METRICS
CONTROLS = ("random", "edge", "blurred")
CONTROL_LABELS = {
    "random": "a random map",
    "edge": "the edge detector",
    "blurred": "its blurred copy",
}


@dataclass(frozen=True)
class Score:
    """One cell: `row` (a method or a control), `metric`, the mean over images, its bootstrap
    interval [`low`, `high`], `n` images with a value (NaN ones left out), `higher_is_better`."""

    row: str
    metric: str
    mean: float
    low: float
    high: float
    n: int
    control: bool
    higher_is_better: bool


@dataclass(frozen=True)
class Bench:
    """What `bench` returns.

    `scores`: every cell (`Score`), rows in the order methods then controls. `values`: the
    per-image values `(N,)` float64 of each (row, metric). `ranks`: metric -> method -> rank
    (1 = best, controls not ranked). `agreement`: `(M, M)` Kendall τ-b between the metrics'
    rankings of the methods (NaN where undefined), with `agreement_note` saying why when it
    can't be computed. `losses`: plain sentences, one per method beaten by a control.
    """

    methods: tuple[str, ...]
    controls: tuple[str, ...]
    metrics: tuple[str, ...]
    scores: tuple[Score, ...]
    values: dict[tuple[str, str], np.ndarray] = field(repr=False)
    ranks: dict[str, dict[str, int]]
    agreement: np.ndarray
    agreement_note: str
    losses: tuple[str, ...]

    def score(self, row: str, metric: str) -> Score:
        for s in self.scores:
            if s.row == row and s.metric == metric:
                return s
        raise KeyError((row, metric))

    def rows(self) -> list[dict]:
        """The table as a list of plain dicts (one per cell), ready for a data frame or CSV."""
        return [s.__dict__ | {"rank": self.ranks[s.metric].get(s.row)} for s in self.scores]


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's τ-b of two score vectors (ties in either corrected for; scipy's default).
    NaN when either has fewer than two distinct values."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    i, j = np.triu_indices(len(a), 1)
    da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
    n0 = len(i)
    n1, n2 = n0 - np.count_nonzero(da), n0 - np.count_nonzero(db)
    denom = np.sqrt((n0 - n1) * (n0 - n2))
    return float((da * db).sum() / denom) if denom > 0 else float("nan")


def _bootstrap(values: np.ndarray, idx: np.ndarray, level: float) -> tuple[float, float, float]:
    ok = ~np.isnan(values)
    if not ok.any():
        return float("nan"), float("nan"), float("nan")
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN resample
        means = np.nanmean(values[idx], axis=1)  # (B,) one mean per resample
    means = means[~np.isnan(means)]
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(np.nanmean(values)), float(low), float(high)


def _controls(
    names: Sequence[str], first: Callable, seed: int, sigma: float
) -> dict[str, Callable]:
    from . import bench as m  # (bench imports this module: not at its top)

    made = {
        "random": lambda model, x, t: m.random_map(x, seed=seed),
        "edge": lambda model, x, t: m.edge_map(x),
        "blurred": lambda model, x, t: m.blurred_map(first(model, x, t), sigma),
    }
    return {name: made[name] for name in names}


def bench(
    model: torch.nn.Module,
    x: torch.Tensor,
    target: Target = None,
    *,
    methods: Sequence[str] = ("gradient",),
    metrics: Sequence[str] = METRICS,
    controls: bool | Sequence[str] = True,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    blur_sigma: float = 2.0,
    options: dict[str, dict] | None = None,
    metric_options: dict[str, dict] | None = None,
    output: OutputSelector = None,
) -> Bench:
    """Score `methods` (names of `saliency.attribute`) and the controls on `metrics`, per image.

    Controls (`controls` True: all three, or a subset of `CONTROLS`): "random", a uniform random
    map; "edge", the Sobel edge map of the input (Adebayo et al. 2018); "blurred", a Gaussian
    blur (sigma `blur_sigma` pixels) of the first method's map. Each cell is the mean over
    images with a percentile bootstrap `level` interval from `n_boot` resamples of the images
    (the same resamples for every cell, from `seed`). `options`: method -> its options;
    `metric_options`: metric -> options for that metric's function (e.g. {"road_morf":
    {"noise": 0.0}}). `target` None: the class predicted at `x`, fixed for every method. The
    caller's random streams are left as they were.
    """
    from . import bench as m  # (bench imports this module: not at its top)

    unknown = [k for k in metrics if k not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; known: {', '.join(METRICS)}")
    if not methods:
        raise ValueError("methods is empty: name at least one method to score")
    if n_boot < 1 or not 0 < level < 1:
        raise ValueError(f"n_boot must be >= 1 and level in (0, 1), got {n_boot} and {level}")
    control_names = tuple(CONTROLS if controls is True else (controls or ()))
    if set(control_names) - set(CONTROLS):
        raise ValueError(f"controls must be among {CONTROLS}, got {control_names}")
    options = options or {}
    metric_options = metric_options or {}
    t, _ = m._targets(model, x, target, output)

    def method_fn(name: str) -> Callable:
        def explain(model, x, t):
            from ._methods import attribute

            with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):
                return attribute(model, x, t, method=name, absolute=True, **options.get(name, {}))

        return explain

    rows = {name: method_fn(name) for name in methods}
    rows |= _controls(control_names, rows[methods[0]], seed, blur_sigma)
    values: dict[tuple[str, str], np.ndarray] = {}
    for row, fn in rows.items():
        maps = fn(model, x, t).detach() if set(metrics) & set(MAP_METRICS) else None
        for metric in metrics:
            kw = dict(metric_options.get(metric, {}))
            if metric in ("sparseness", "complexity"):
                v = getattr(m, metric)(maps)
            elif metric in ("road_morf", "road_lerf"):
                kw.setdefault("seed", seed)
                v = m.road(model, x, t, maps, order=metric[5:], output=output, **kw)
            elif metric in MAP_METRICS:
                v = getattr(m, metric)(model, x, t, maps, output=output, **kw)
            elif metric == "model_randomisation":
                v = m.model_randomisation(model, x, t, method=fn, seed=seed, **kw)
            else:
                kw.setdefault("seed", seed)
                v = getattr(m, metric)(model, x, t, method=fn, output=output, **kw)
            values[row, metric] = v.double().cpu().numpy()
    idx = np.random.default_rng(seed).integers(0, x.shape[0], size=(n_boot, x.shape[0]))
    scores = tuple(
        Score(
            row, k, *_bootstrap(values[row, k], idx, level),
            int((~np.isnan(values[row, k])).sum()), row in control_names, m.HIGHER_IS_BETTER[k],
        )
        for row in rows
        for k in metrics
    )  # fmt: skip
    # Goodness: each metric's means turned so that larger is better, for ranks and τ.
    good = {
        k: np.array([(1 if m.HIGHER_IS_BETTER[k] else -1) * _mean(values[r, k]) for r in methods])
        for k in metrics
    }
    ranks = {
        k: {r: int((good[k] > good[k][i]).sum()) + 1 for i, r in enumerate(methods)}
        for k in metrics
    }
    agreement = np.full((len(metrics), len(metrics)), np.nan)
    note = ""
    if len(methods) < 2:
        note = "the agreement between metrics needs at least 2 methods to rank; got 1"
    else:
        for a, ka in enumerate(metrics):
            for b, kb in enumerate(metrics):
                agreement[a, b] = kendall_tau(good[ka], good[kb])
    losses = []
    for r in methods:
        for c in control_names:
            for k in metrics:
                mine, theirs = _mean(values[r, k]), _mean(values[c, k])
                sign = 1 if m.HIGHER_IS_BETTER[k] else -1
                if sign * (theirs - mine) > 0:
                    losses.append(f"{r} is worse than {CONTROL_LABELS[c]} on {k}")
    return Bench(
        tuple(methods), control_names, tuple(metrics), scores, values, ranks, agreement, note,
        tuple(losses),
    )  # fmt: skip


def _mean(v: np.ndarray) -> float:
    return float(np.nanmean(v)) if (~np.isnan(v)).any() else float("nan")
