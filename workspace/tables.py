"""Tables: a CSV read defensively, the bundled diabetes example, and explaining a table model.

    >>> table = read_csv(Path("my.csv").read_bytes())     # refuses what it can't read, saying why
    >>> X, rows = table.matrix(["age", "bmi"])            # (N, 2) float64, the rows kept
    >>> model, table = example()                          # the Tables page's offline default

The example's training recipe is the zoo's: `python -m pretrained.tables train diabetes-mlp`.

A CSV is a user's upload, so nothing in it is trusted: its size is checked before it is
decoded, rows and columns are bounded, and every cell of a chosen column must be a number.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch

from pretrained import registry

# The CSV reader is a module of its own (issue 31): every name is re-exported here.
from .csv_table import (  # noqa: F401
    MAX_BYTES,
    MAX_COLUMNS,
    MAX_ROWS,
    MIN_ROWS,
    MISSING,
    Column,
    Table,
    TableError,
    _Parsed,
    _unique,
    quote,
    read_csv,
)

# Explaining a model on a table. `run(job, x, **kwargs)` runs a `sandbox.jobs` job on the
# model, in this process for the bundled example or in an upload's sandboxed worker.

BATCH_ROWS = 8192  # rows per job: a progress bar moves between them
CHECK_ROWS = 8  # rows of the autograd-against-differences check
CHECK_STEP = 1e-3  # its step, times each feature's std
FALLBACK_STEP = 0.1  # finite differences' step for a model autograd can't differentiate
DIFFERENTIABLE_TOLERANCE = 0.05  # max relative error of autograd against the differences
NUDGES = (-1.0, -0.5, -0.25, -0.1, 0.1, 0.25, 0.5, 1.0)  # times the feature's std


def spreads(X: np.ndarray) -> np.ndarray:
    """Each column's std, or for a constant column its magnitude (at least 1): a feature's
    typical change, from which the finite-difference steps are made."""
    std = X.std(axis=0, ddof=1) if len(X) > 1 else np.zeros(X.shape[1])
    return np.where(std > 0, std, np.maximum(np.abs(X).max(axis=0), 1.0))


@dataclass(frozen=True)
class GradientCheck:
    """Autograd against central differences on a few rows.

    `rel_error`: max |autograd - differences| / max |differences| (NaN when autograd failed);
    `differentiable`: whether the ranking can use autograd; `reason`: why not, for the page.
    """

    rows: np.ndarray
    autograd: np.ndarray | None
    differences: np.ndarray
    rel_error: float
    differentiable: bool
    reason: str
    float64: bool


def check_gradients(
    run, X: np.ndarray, *, output, column: int, score: str = "logit"
) -> GradientCheck:
    """Compare autograd with central differences (step 0.001·std per feature) on up to 8
    rows spread over the table. Not differentiable: autograd fails (an integer output, a
    detached graph), gives NaN, gives exactly zero everywhere though the outputs differ
    (`round` inside), or disagrees with the differences by more than 5 %."""
    rows = np.unique(np.linspace(0, len(X) - 1, min(CHECK_ROWS, len(X))).round().astype(int))
    steps = CHECK_STEP * spreads(X)
    r = run("table_check", X[rows], output=output, column=column, steps=steps, score=score)
    rows = rows[np.asarray(r["kept"], dtype=np.int64)]  # those with a finite output
    if not len(rows):
        raise TableError(
            "The model's output is NaN or inf on every row checked: does it expect the "
            "features scaled, or in another order?"
        )
    autograd, diff = r["autograd"], np.asarray(r["differences"], dtype=np.float64)
    values = np.asarray(r["values"], dtype=np.float64)
    if autograd is None:
        return GradientCheck(rows, None, diff, math.nan, False, f"autograd failed: {r['error']}",
                             bool(r["float64"]))  # fmt: skip
    autograd = np.asarray(autograd, dtype=np.float64)
    scale = float(np.abs(diff).max()) if np.isfinite(diff).all() else math.nan
    error = float(np.abs(autograd - diff).max() / scale) if scale > 0 else 0.0
    reason = ""
    if not np.isfinite(autograd).all():
        reason = "autograd's gradient is NaN or inf"
    elif not np.abs(autograd).any() and np.ptp(values) > 0:
        reason = (
            "autograd's gradient is exactly zero at every checked row, although the outputs "
            "differ: the model is flat where it is differentiable (round, argmax or a "
            "comparison inside)"
        )
    elif error > DIFFERENTIABLE_TOLERANCE:
        reason = (
            f"autograd and finite differences disagree by {error:.0%} (more than "
            f"{DIFFERENTIABLE_TOLERANCE:.0%}): the model has steps or kinks"
        )
    return GradientCheck(rows, autograd, diff, error, not reason, reason, bool(r["float64"]))


@dataclass(frozen=True)
class Explained:
    """The chosen output's `values` `(N,)` and `jacobian` `(N, D)` at every usable row;
    `rows`: their positions in the matrix given; `dropped`: rows whose output or gradient was
    NaN or inf, left out; `method`: "autograd" or "finite differences"."""

    values: np.ndarray
    jacobian: np.ndarray
    rows: np.ndarray
    dropped: np.ndarray
    method: str


def explain(
    run,
    X: np.ndarray,
    *,
    output,
    column: int,
    score: str = "logit",
    autograd: bool = True,
    progress=None,
) -> Explained:
    """The Jacobian of one output column (its `score`: "logit" the column itself,
    "probability" or "log_probability" a softmax over the output's columns, taken at this
    one) at every row of `X`, `BATCH_ROWS` rows per job,
    calling `progress(done, total)` after each. By autograd, or (`autograd=False`) by central
    differences with a step of 0.1·std per feature. Rows with a NaN or inf output or gradient
    are dropped and listed; if none is left, TableError."""
    steps = FALLBACK_STEP * spreads(X)
    values, jac = [], []
    for i in range(0, len(X), BATCH_ROWS):
        part = X[i : i + BATCH_ROWS]
        if autograd:
            r = run("table_jacobian", part, output=output, column=column, score=score)
        else:
            r = run("table_differences", part, output=output, column=column, steps=steps,
                    score=score)  # fmt: skip
        v, j = np.asarray(r["values"], np.float64), np.asarray(r["jacobian"], np.float64)
        if v.shape != (len(part),) or j.shape != part.shape:
            raise TableError(
                f"The model's worker sent results of shape {v.shape} and {j.shape} for "
                f"{part.shape} rows."
            )
        values.append(v)
        jac.append(j)
        if progress is not None:
            progress(min(i + BATCH_ROWS, len(X)), len(X))
    values, jac = np.concatenate(values), np.concatenate(jac)
    ok = np.isfinite(values) & np.isfinite(jac).all(axis=1)
    if not ok.any():
        raise TableError(
            "The model's output (or its gradient) is NaN or inf on every row: nothing can be "
            "ranked. Does it expect the features scaled, or in another order?"
        )
    rows = np.flatnonzero(ok)
    return Explained(values[ok], jac[ok], rows, np.flatnonzero(~ok),
                     "autograd" if autograd else "finite differences")  # fmt: skip


def nudges(
    run, x: np.ndarray, feature: int, std: float, *, output, column: int, score: str = "logit"
) -> dict:
    """One row, one feature moved by Δ = k·std for k in `NUDGES`: `deltas`, the `predicted`
    change Δ·∂y/∂x_j and the `actual` one, and the `gradient`."""
    deltas = np.asarray(NUDGES) * std
    r = run("table_nudge", x[None], output=output, column=column, feature=feature,
            deltas=deltas, score=score)  # fmt: skip
    return {"deltas": deltas, **r}


MAX_CLASSES = 100  # distinct values of a target read as class labels, at most


def class_labels(y: np.ndarray, k: int) -> tuple[np.ndarray, tuple[float, ...]] | None:
    """A target column read as the labels of a `k`-class output, or None when it isn't one:
    `(labels, classes)`, `labels` in 0..k-1 and `classes[c]` the value column c stands for.
    Integers 0..k-1 are the columns themselves (scikit-learn's `target`); otherwise exactly `k`
    distinct values are taken in sorted order (a 1/2 or a -1/+1 label), as scikit-learn's
    LabelEncoder numbers them."""
    if k < 2 or k > MAX_CLASSES or not len(y) or not np.isfinite(y).all():
        return None
    values = np.unique(y)
    if len(values) > k:
        return None
    if (values == np.round(values)).all() and values.min() >= 0 and values.max() < k:
        return y.astype(np.int64), tuple(float(c) for c in range(k))
    if len(values) == k:
        return np.searchsorted(values, y).astype(np.int64), tuple(float(v) for v in values)
    return None


@dataclass(frozen=True)
class Fit:
    """A classifier against class labels: `accuracy` (argmax = label) and `log_loss` (the mean
    of -log softmax at the label) over `n` rows."""

    accuracy: float
    log_loss: float
    n: int


def classify(run, X: np.ndarray, labels: np.ndarray, *, output, progress=None) -> Fit:
    """Accuracy and log-loss of the chosen output `(N, K)` against `labels`, `BATCH_ROWS` rows
    per job; rows whose output is NaN or inf are left out."""
    right, loss, n = 0, 0.0, 0
    for i in range(0, len(X), BATCH_ROWS):
        part, t = X[i : i + BATCH_ROWS], labels[i : i + BATCH_ROWS]
        r = run("table_classify", part, output=output, labels=t)
        predicted = np.asarray(r["predicted"], np.int64)
        logp = np.asarray(r["log_probability"], np.float64)
        if predicted.shape != (len(part),) or logp.shape != (len(part),):
            raise TableError(
                f"The model's worker sent results of shape {predicted.shape} and {logp.shape} "
                f"for {len(part)} rows."
            )
        ok = np.isfinite(logp) & (predicted >= 0)
        right += int((predicted[ok] == t[ok]).sum())
        loss += float(-logp[ok].sum())
        n += int(ok.sum())
        if progress is not None:
            progress(min(i + BATCH_ROWS, len(X)), len(X))
    if not n:
        raise TableError("The model's output is NaN or inf on every row: no fit to report.")
    return Fit(right / n, loss / n, n)


# The bundled example.


def example_table(name: str = "diabetes-mlp") -> Table:
    info = registry.table_model_info(name)
    return read_csv(info.data_file.read_bytes())


def example(name: str = "diabetes-mlp") -> tuple[torch.nn.Module, Table]:
    """The registered table model (on the CPU: a table is small) and its bundled table."""
    return registry.load_table_model(name, device="cpu"), example_table(name)


def example_program(name: str = "diabetes-mlp") -> bytes:
    """The example model as a `torch.export` program with a dynamic number of rows: the
    format the Tables page accepts for uploads, so a user can download it to see (or try)
    what an upload looks like."""
    model = registry.load_table_model(name, device="cpu")
    x = torch.zeros(2, len(registry.table_model_info(name).features))
    rows = torch.export.Dim("rows", min=1, max=MAX_ROWS)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: rows},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()
