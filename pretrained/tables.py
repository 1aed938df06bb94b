"""The table models' training recipe: `python -m pretrained.tables train diabetes-mlp`
retrains the bundled example on its bundled CSV and writes its weights, record and card.

Reading a user's CSV and explaining a table model are the workspace's (`workspace.tables`).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from . import registry
from .train import _reproducible


def _read_bundled(path: Path) -> tuple[list[str], np.ndarray]:
    """A bundled CSV's header and its `(N, columns)` float64 values. The file is ours (a header
    line, then numbers), so it is read plainly; a user's CSV goes through `workspace.tables`."""
    lines = path.read_text().splitlines()
    values = [[float(v) for v in line.split(",")] for line in lines[1:] if line.strip()]
    return lines[0].split(","), np.array(values, dtype=np.float64)


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
    names, values = _read_bundled(csv_path)
    features = [n for n in names if n != entry.target]
    X = values[:, [names.index(n) for n in features]]
    y = values[:, [names.index(entry.target)]]
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
