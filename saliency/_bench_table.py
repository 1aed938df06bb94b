"""The bench's table: methods and controls × metrics, each a mean with a bootstrap interval over
images, the methods' rank under each metric, and how far the metrics agree (Kendall τ).

Two halves: `score` gives each (row, metric) its per-image values; `summarise` makes the table
from those values alone, so pieces scored apart (batches, processes, a resumed run) are
concatenated and summarised once. `bench` is the two in one call. `save_table` / `load_table`
store a table as one .npz (per-image values, names, the bootstrap's settings and a JSON meta)
and read it back as the same `Bench`.

Re-exported by `saliency.bench`; the metrics themselves live in `_bench_metrics`.
"""

from __future__ import annotations

import json
import math
import os
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import _bench_metrics as m
from ._atomic import write_atomically
from ._validate import OutputSelector, Target
from .names import MAP_METRICS, METRICS

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
    `n_boot`, `level`, `seed`: the bootstrap that made the intervals (`summarise`'s).
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
    n_boot: int = 1000
    level: float = 0.95
    seed: int = 0

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
    names: Sequence[str], first: Callable, seed: int | list[int], sigma: float
) -> dict[str, Callable]:
    made = {
        "random": lambda model, x, t: m.random_map(x, seed=seed),
        "edge": lambda model, x, t: m.edge_map(x),
        "blurred": lambda model, x, t: m.blurred_map(first(model, x, t), sigma),
    }
    return {name: made[name] for name in names}


def _control_names(controls: bool | Sequence[str]) -> tuple[str, ...]:
    names = tuple(CONTROLS if controls is True else (controls or ()))
    if set(names) - set(CONTROLS):
        raise ValueError(f"controls must be among {CONTROLS}, got {names}")
    return names


def _check_summary(n_boot: int, level: float) -> None:
    if n_boot < 1 or not 0 < level < 1:
        raise ValueError(f"n_boot must be >= 1 and level in (0, 1), got {n_boot} and {level}")


def _image_seeds(seed: int, indices: Sequence[int] | None, n: int) -> int | list[int]:
    """The per-image seed a metric gets: `seed` (image i draws from seed + i) or, given each
    image's place in the whole set, the list seed + indices[i]."""
    if indices is None:
        return seed
    seeds = [seed + int(i) for i in indices]
    if len(seeds) != n:
        raise ValueError(f"indices must give one index per image: {n} images, {len(seeds)} indices")
    return seeds


def _check_names(methods: Sequence[str], metrics: Sequence[str]) -> None:
    unknown = [k for k in metrics if k not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; known: {', '.join(METRICS)}")
    if not methods:
        raise ValueError("methods is empty: name at least one method to score")


def score(
    model: torch.nn.Module,
    x: torch.Tensor,
    target: Target = None,
    *,
    methods: Sequence[str] = ("gradient",),
    metrics: Sequence[str] = METRICS,
    controls: bool | Sequence[str] = True,
    seed: int = 0,
    blur_sigma: float = 2.0,
    options: dict[str, dict] | None = None,
    metric_options: dict[str, dict] | None = None,
    output: OutputSelector = None,
    indices: Sequence[int] | None = None,
) -> dict[tuple[str, str], np.ndarray]:
    """The per-image half of `bench`: each (row, metric) -> `(N,)` float64, one value per
    image, rows in the order methods then controls (arguments as in `bench`).

    Image i's random draws (ROAD's noise, Max-Sensitivity's δ, Random Logit's other class, the
    random control) come from seed + i, or from seed + `indices[i]` when `indices` gives each
    image's place in a larger set (a dataset index): then scoring the set in pieces, each with
    its own indices, gives the values of one call over the whole set. The model-level draws
    (MPRT's re-initialisation) come from `seed` itself. A method that draws its own noise
    (SmoothGrad) draws it for its whole batch, so its maps depend on which images share a batch:
    keep the batches the same to reproduce them.
    """
    _check_names(methods, metrics)
    control_names = _control_names(controls)
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
    rows |= _controls(control_names, rows[methods[0]], _image_seeds(seed, indices, len(x)),
                      blur_sigma)  # fmt: skip
    values: dict[tuple[str, str], np.ndarray] = {}
    for row, fn in rows.items():
        # Max-Sensitivity and Random Logit start from the row's maps too (given, not made again).
        wants_maps = set(metrics) & {*MAP_METRICS, "max_sensitivity", "random_logit"}
        maps = fn(model, x, t).detach() if wants_maps else None
        for metric in metrics:
            kw = dict(metric_options.get(metric, {}))
            if metric in ("sparseness", "complexity"):
                v = getattr(m, metric)(maps)
            elif metric in ("road_morf", "road_lerf"):
                kw["seed"] = _image_seeds(kw.get("seed", seed), indices, len(x))
                v = m.road(model, x, t, maps, order=metric[5:], output=output, **kw)
            elif metric in MAP_METRICS:
                v = getattr(m, metric)(model, x, t, maps, output=output, **kw)
            elif metric == "model_randomisation":
                v = m.model_randomisation(model, x, t, method=fn, seed=seed, **kw)
            else:
                kw["seed"] = _image_seeds(kw.get("seed", seed), indices, len(x))
                v = getattr(m, metric)(model, x, t, method=fn, output=output, maps=maps, **kw)
            values[row, metric] = v.double().cpu().numpy()
    return values


def summarise(
    values: dict[tuple[str, str], np.ndarray],
    *,
    methods: Sequence[str],
    controls: bool | Sequence[str] = True,
    metrics: Sequence[str] = METRICS,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Bench:
    """The table half of `bench`, from per-image values alone (`score`'s, or several `score`
    calls' concatenated, or a stored table's): each cell's mean and percentile bootstrap `level`
    interval from `n_boot` resamples of the images (the same resamples for every cell, from
    `seed`), the methods' ranks, the metrics' Kendall τ agreement and the methods beaten by a
    control. `controls` as in `bench` (only those present in `values` when True); every
    (row, metric) must be in `values`, each the same length N.
    """
    _check_summary(n_boot, level)
    methods, metrics = tuple(methods), tuple(metrics)
    _check_names(methods, metrics)
    if controls is True:
        control_names = tuple(c for c in CONTROLS if any((c, k) in values for k in metrics))
    else:
        control_names = _control_names(controls)
    rows = methods + control_names
    missing = [(r, k) for r in rows for k in metrics if (r, k) not in values]
    if missing:
        raise ValueError(f"values lack {len(missing)} cells, e.g. {missing[0]}")
    values = {(r, k): np.asarray(values[r, k], dtype=np.float64) for r in rows for k in metrics}
    lengths = {v.shape for v in values.values()}
    if len(lengths) != 1 or len(next(iter(lengths))) != 1:
        raise ValueError(f"every cell needs one value per image, (N,); got shapes {lengths}")
    n = next(iter(lengths))[0]
    if n == 0:
        raise ValueError("no images: nothing to summarise")
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
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
        methods, control_names, metrics, scores, values, ranks, agreement, note, tuple(losses),
        n_boot, level, seed,
    )  # fmt: skip


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
    indices: Sequence[int] | None = None,
) -> Bench:
    """Score `methods` (names of `saliency.attribute`) and the controls on `metrics`, per image:
    `summarise(score(...))`.

    Controls (`controls` True: all three, or a subset of `CONTROLS`): "random", a uniform random
    map; "edge", the Sobel edge map of the input (Adebayo et al. 2018); "blurred", a Gaussian
    blur (sigma `blur_sigma` pixels) of the first method's map. Each cell is the mean over
    images with a percentile bootstrap `level` interval from `n_boot` resamples of the images
    (the same resamples for every cell, from `seed`). `options`: method -> its options;
    `metric_options`: metric -> options for that metric's function (e.g. {"road_morf":
    {"noise": 0.0}}). `target` None: the class predicted at `x`, fixed for every method.
    `indices`: each image's place in a larger set, for its random draws (see `score`). The
    caller's random streams are left as they were.
    """
    _check_summary(n_boot, level)
    control_names = _control_names(controls)
    values = score(
        model, x, target, methods=methods, metrics=metrics, controls=control_names, seed=seed,
        blur_sigma=blur_sigma, options=options, metric_options=metric_options, output=output,
        indices=indices,
    )  # fmt: skip
    return summarise(
        values, methods=methods, controls=control_names, metrics=metrics, n_boot=n_boot,
        level=level, seed=seed,
    )  # fmt: skip


def _mean(v: np.ndarray) -> float:
    return float(np.nanmean(v)) if (~np.isnan(v)).any() else float("nan")


# --- a stored table ------------------------------------------------------------------------------

TABLE_FORMAT = 1
# What a stored table may hold at most: rows x metrics x images values (a table read from disk is
# untrusted; 8 methods and 3 controls x 9 metrics x 100,000 images is 79 MB of float64).
MAX_STORED_VALUES = 10_000_000
_PER_IMAGE = ("indices", "labels", "targets")


def save_table(
    table: Bench | dict[tuple[str, str], np.ndarray],
    path: str | os.PathLike,
    meta: dict | None = None,
    *,
    indices: Sequence[int] | None = None,
    labels: Sequence[int] | None = None,
    targets: Sequence[int] | None = None,
) -> Path:
    """Store a bench as one `.npz` that `load_table` turns back into the same `Bench`.

    `table`: a `Bench`, or `score`'s per-image values (then summarised with `summarise`'s
    defaults; methods are the rows that are not controls). What is stored is the per-image
    values `(R, M, N)` float64 with the row and metric names, the summary's `n_boot`, `level`
    and `seed`, `meta` (anything JSON can hold: the model, the data, the settings) and, when
    given, each image's dataset index, label and target class `(N,)` int64. Written to a
    temporary file beside `path` and renamed, so a reader never sees half a table.
    """
    if not isinstance(table, Bench):
        rows = list(dict.fromkeys(r for r, _ in table))
        controls = tuple(r for r in rows if r in CONTROLS)
        methods = tuple(r for r in rows if r not in CONTROLS)
        metrics = tuple(dict.fromkeys(k for _, k in table))
        table = summarise(table, methods=methods, controls=controls, metrics=metrics)
    rows = table.methods + table.controls
    values = np.stack(
        [np.stack([table.values[r, k] for k in table.metrics]) for r in rows]
    )  # (R, M, N)
    arrays = {
        "format": np.array(TABLE_FORMAT),
        "values": values.astype(np.float64),
        "methods": np.array(table.methods, dtype=str),
        "controls": np.array(table.controls, dtype=str),
        "metrics": np.array(table.metrics, dtype=str),
        "summary": np.array([table.n_boot, table.level, table.seed], dtype=np.float64),
        "meta": np.array(json.dumps(meta or {}, sort_keys=True)),
    }
    n = values.shape[2]
    for name, given in zip(_PER_IMAGE, (indices, labels, targets), strict=True):
        if given is not None:
            a = np.asarray(given, dtype=np.int64).reshape(-1)
            if len(a) != n:
                raise ValueError(f"{name} must give one value per image: {n} images, {len(a)}")
            arrays[name] = a
    return write_atomically(path, lambda f: np.savez(f, **arrays))


def load_table(path: str | os.PathLike) -> tuple[Bench, dict]:
    """A table stored by `save_table`: the `Bench` (summarised again from the stored per-image
    values, with the stored `n_boot`, `level` and `seed`, so it equals the one saved) and the
    meta dict, with `indices`, `labels` and `targets` `(N,)` int64 arrays added when stored.

    Raises ValueError with a plain reason for a file that is not such a table (damaged,
    another format, more than `MAX_STORED_VALUES` values, names or shapes that don't fit).
    """
    try:
        with np.load(path, allow_pickle=False) as f:
            if "values" not in f.files or "metrics" not in f.files:
                raise ValueError("it holds no bench table")
            shape = _npy_shape(f.zip, "values.npy")
            if shape is None or len(shape) != 3 or math.prod(shape) > MAX_STORED_VALUES:
                raise ValueError(
                    f"its values are shaped {shape}; a table holds (rows, metrics, images) "
                    f"with at most {MAX_STORED_VALUES:,} values"
                )
            arrays = {k: f[k] for k in f.files}
    except ValueError as err:
        raise ValueError(f"{path} is not a readable bench table: {err}") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise ValueError(f"{path} is not a readable bench table: {err}") from None
    if int(arrays.get("format", -1)) != TABLE_FORMAT:
        raise ValueError(f"{path}: a bench table of another format ({arrays.get('format')})")
    methods = tuple(str(v) for v in arrays["methods"])
    controls = tuple(str(v) for v in arrays["controls"])
    metrics = tuple(str(v) for v in arrays["metrics"])
    values = np.asarray(arrays["values"], dtype=np.float64)
    rows = methods + controls
    if values.shape[:2] != (len(rows), len(metrics)):
        raise ValueError(
            f"{path}: values shaped {values.shape} for {len(rows)} rows and {len(metrics)} metrics"
        )
    n_boot, level, seed = (float(v) for v in arrays["summary"])
    cells = {(r, k): values[i, j] for i, r in enumerate(rows) for j, k in enumerate(metrics)}
    b = summarise(
        cells, methods=methods, controls=controls, metrics=metrics, n_boot=int(n_boot),
        level=level, seed=int(seed),
    )  # fmt: skip
    try:
        meta = json.loads(str(arrays["meta"]))
    except ValueError:
        raise ValueError(f"{path}: its meta is not JSON") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: its meta is not a JSON object")
    for name in _PER_IMAGE:
        if name in arrays:
            a = np.asarray(arrays[name])
            if a.shape != (values.shape[2],) or not np.issubdtype(a.dtype, np.integer):
                raise ValueError(f"{path}: {name} shaped {a.shape}, not one int per image")
            meta[name] = a.astype(np.int64)
    return b, meta


def _npy_shape(archive: zipfile.ZipFile, name: str) -> tuple[int, ...] | None:
    """An array's shape from its `.npy` header, read before the array itself."""
    try:
        with archive.open(name) as member:
            fmt = np.lib.format
            version = fmt.read_magic(member)
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _, _ = read(member, max_header_size=10_000)
        return tuple(shape)
    except (KeyError, ValueError, OSError):
        return None
