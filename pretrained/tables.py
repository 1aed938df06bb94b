"""Tables: a CSV read defensively, the bundled diabetes example, and its training recipe.

    >>> table = read_csv(Path("my.csv").read_bytes())     # refuses what it can't read, saying why
    >>> X, rows = table.matrix(["age", "bmi"])            # (N, 2) float64, the rows kept
    >>> model, table = example()                          # the Tables page's offline default

    python -m pretrained.tables train diabetes-mlp        # retrain the example, write its card

A CSV is a user's upload, so nothing in it is trusted: its size is checked before it is
decoded, rows and columns are bounded, and every cell of a chosen column must be a number.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import registry

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
from .train import _reproducible

# Explaining a model on a table. `run(job, x, **kwargs)` runs a `pretrained.jobs` job on the
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


# Training.

STEPS = 150  # more overfits 354 rows: held-out R² falls (0.43 at 150, 0.21 at 800)
LR = 3e-3
WEIGHT_DECAY = 0.1
TEST_FRACTION = 0.2
SEED = 0


def _r2(pred: torch.Tensor, y: torch.Tensor) -> float:
    return float(1 - ((pred - y) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def train(name: str = "diabetes-mlp", *, seed: int = SEED) -> dict:
    """Train the table model on 80 % of its table's rows (a seeded split), measure R² and RMSE
    on the rest, and write `weights/<name>.pt`, `weights/<name>.json` and `cards/<name>.md`.

    Full-batch AdamW on the mean squared error of `y_scaled`, with the input and target
    statistics taken from the training rows only. Deterministic for one torch version."""
    entry = registry._TABLE_ENTRIES[name]
    csv_path = registry.DATA_DIR / entry.table / f"{entry.table}.csv"
    table = read_csv(csv_path.read_bytes())
    features = [n for n in table.names if n != entry.target]
    X, _ = table.matrix(features)
    y, _ = table.matrix([entry.target])
    X, y = torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    start = time.perf_counter()
    with _reproducible(seed, threads=1):
        order = torch.randperm(len(X))
        n_test = round(TEST_FRACTION * len(X))
        test, fit = order[:n_test], order[n_test:]
        model = registry.build_table_model(name, len(features))
        model.x_mean.copy_(X[fit].mean(0))
        model.x_std.copy_(X[fit].std(0))
        model.y_mean.copy_(y[fit].mean())
        model.y_std.copy_(y[fit].std())
        target = (y[fit] - model.y_mean) / model.y_std
        opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
        for _ in range(STEPS):
            opt.zero_grad()
            loss = ((model(X[fit])[1] - target) ** 2).mean()
            loss.backward()
            opt.step()
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        pred = model(X[test])[0]
    ones = torch.ones(len(fit), 1)
    design = torch.cat([X[fit], ones], 1).double()
    coef = torch.linalg.lstsq(design, y[fit].double()).solution
    linear = torch.cat([X[test], torch.ones(len(test), 1)], 1).double() @ coef
    weights_file = registry.WEIGHTS_DIR / f"{name}.pt"
    torch.save(model.state_dict(), weights_file)
    record = {
        "name": name,
        "features": features,
        "target": entry.target,
        "outputs": ["y", "y_scaled"],
        "n_train": len(fit),
        "n_test": len(test),
        "test_r2": _r2(pred, y[test]),
        "test_rmse": float(((pred - y[test]) ** 2).mean().sqrt()),
        "linear_r2": _r2(linear.float(), y[test]),
        "train_command": f"python -m pretrained.tables train {name}",
        "train_seconds": round(seconds, 2),
        "steps": STEPS,
        "optimiser": f"AdamW(lr={LR}, weight_decay={WEIGHT_DECAY}), full batch, MSE on y_scaled",
        "seed": seed,
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "weights_sha256": registry.sha256(weights_file),
    }
    (registry.WEIGHTS_DIR / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    write_card(name)
    return record


def write_card(name: str) -> Path:
    info = registry.table_model_info(name)
    n_params = sum(
        p.numel() for p in registry.build_table_model(name, len(info.features)).net.parameters()
    )
    size = info.weights_file.stat().st_size / 1024
    data = info.data_file.relative_to(registry.DATA_DIR.parent.parent)
    rows = [
        (
            "Data",
            f"`{data}`: {info.n_train + info.n_test} rows (see `SOURCE.md` beside it); "
            f"{info.n_train} for training, {info.n_test} held out (seeded split)",
        ),
        (
            "Inputs",
            f"`(N, {len(info.features)})` in raw units: {', '.join(info.features)}; "
            "standardised inside `forward` with the training rows' mean and std",
        ),
        (
            "Outputs",
            f"a tuple `(y, y_scaled)`, each `(N, 1)`: {info.target} in its own units, and in "
            "standard units",
        ),
        ("Parameters", f"{n_params:,} (plus the input and target statistics, kept as buffers)"),
        (
            "Held-out R²",
            f"**{info.test_r2:.3f}** (RMSE {info.test_rmse:.1f}); least squares on the same "
            f"split: R² {info.linear_r2:.3f}",
        ),
        ("Training", f"{info.steps} steps of {info.optimiser}; seed {info.seed}"),
        (
            "Training time",
            f"{info.train_seconds:.1f} s on 1 CPU thread, torch {info.torch_version}",
        ),
        ("Command", f"`{info.train_command}`"),
        (
            "Weights",
            f"`pretrained/weights/{name}.pt` ({size:.1f} KB, sha256 `{info.weights_sha256[:16]}…`)",
        ),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    text = f"""# {name}

{info.description}

| | |
|---|---|
{table}

## What it is for

The Tables page's offline example: which of the ten measurements does the prediction depend
on most? The features are in different units (years, kg/m², mmHg, mg/dL, a log), so their raw
gradients can't be compared; scaled by each feature's std they can. `tc` and `ldl` are
strongly correlated (r ≈ 0.90), so the net may use one and ignore the other.

On the held-out rows a straight line (least squares) does a little better: with 442 rows the
net is here for its gradients, not its accuracy. It is a teaching model, not a clinical one.
"""
    path = registry.CARDS_DIR / f"{name}.md"
    path.write_text(text)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train a table model and write its card.")
    parser.add_argument("command", choices=["train", "card"])
    parser.add_argument("name", choices=registry.list_table_models())
    args = parser.parse_args(argv)
    if args.command == "train":
        record = train(args.name)
        print(json.dumps(record, indent=2))
    else:
        print(write_card(args.name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
