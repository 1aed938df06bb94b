"""Train a registered model on the full training set and record how well it does.

    python -m pretrained.train mnist-cnn [--epochs E] [--data-dir D] [--seed S]
    python -m pretrained.train all

Writes `weights/<name>.pt` (float32 state dict), `weights/<name>.json` (test accuracy,
per-class accuracy, confusion matrix on all 10,000 test images, time, command, seed, versions)
and `cards/<name>.md`. Seeded and deterministic: the same command on the same torch version
and thread count gives the same weights.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import registry
from .architectures import build_model, count_parameters
from .data import NORMALISATION, load_dataset
from .evaluation import evaluate


@dataclass(frozen=True)
class Recipe:
    """AdamW with a one-cycle learning-rate schedule; `lr` is the peak rate."""

    epochs: int
    lr: float
    weight_decay: float = 0.0
    batch_size: int = 128


# Chosen to clear the accuracy targets with margin in a few CPU minutes each.
RECIPES: dict[str, Recipe] = {
    "mnist-linear": Recipe(epochs=15, lr=2e-3),
    "mnist-mlp": Recipe(epochs=12, lr=2e-3, weight_decay=1e-4),
    "mnist-cnn": Recipe(epochs=5, lr=3e-3, weight_decay=1e-4),
    "mnist-cnn-bn": Recipe(epochs=4, lr=3e-3, weight_decay=1e-4),
    "fashion-mnist-linear": Recipe(epochs=15, lr=2e-3),
    "fashion-mnist-mlp": Recipe(epochs=20, lr=2e-3, weight_decay=1e-4),
    "fashion-mnist-cnn": Recipe(epochs=15, lr=3e-3, weight_decay=1e-4),
    # Transformers want more weight decay than the convolutional nets (ViT's 0.05).
    "mnist-vit": Recipe(epochs=10, lr=2e-3, weight_decay=0.05),
    "fashion-mnist-vit": Recipe(epochs=12, lr=2e-3, weight_decay=0.05),
}
SEED = 0


def _log(msg: str) -> None:
    print(msg, flush=True)


def train(
    name: str,
    *,
    epochs: int | None = None,
    seed: int = SEED,
    data_dir: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    threads: int | None = None,
) -> dict:
    """Train `name` from scratch, evaluate it on the test set, save weights and record.

    `out_dir` defaults to the package's `weights/` (where the registry reads from). `threads`
    sets torch's CPU thread count (float sums, hence weights, can depend on it).
    Returns the record written to `<out_dir>/<name>.json`.
    """
    info = registry._entry(name)
    recipe = RECIPES[name]
    epochs = recipe.epochs if epochs is None else epochs
    out = Path(out_dir) if out_dir is not None else registry.WEIGHTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    # The command that reproduces this run; --data-dir is left out as it changes only where
    # the same files are read from.
    command = registry.train_command(name)
    if epochs != recipe.epochs:
        command += f" --epochs {epochs}"
    if seed != SEED:
        command += f" --seed {seed}"
    if threads is not None:
        command += f" --threads {threads}"

    with _reproducible(seed, threads):
        return _train(info, recipe, epochs, seed, data_dir, out, command)


@contextlib.contextmanager
def _reproducible(seed: int, threads: int | None) -> Iterator[None]:
    """Seed, pin the thread count and force deterministic kernels; restore all on exit."""
    old_threads, old_deterministic = (
        torch.get_num_threads(),
        torch.are_deterministic_algorithms_enabled(),
    )
    with torch.random.fork_rng(devices=[]):
        try:
            if threads is not None:
                torch.set_num_threads(threads)
            torch.manual_seed(seed)
            torch.use_deterministic_algorithms(True)
            yield
        finally:
            torch.set_num_threads(old_threads)
            torch.use_deterministic_algorithms(old_deterministic)


def _epoch(model, train_set, recipe, shuffle, optimiser, schedule, loss_fn, epoch, start) -> dict:
    """One pass over `train_set` in the order `shuffle` draws; the epoch's history row."""
    model.train()
    order = torch.randperm(len(train_set), generator=shuffle)
    total_loss, correct = 0.0, 0
    for i in range(0, len(order), recipe.batch_size):
        x, y = train_set[order[i : i + recipe.batch_size]]  # (B, 1, 28, 28), (B,)
        logits = model(x)  # (B, 10)
        loss = loss_fn(logits, y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        total_loss += loss.item() * len(y)
        correct += int((logits.argmax(1) == y).sum())
    return {
        "epoch": epoch,
        "loss": total_loss / len(train_set),
        "train_accuracy": correct / len(train_set),
        "elapsed": time.perf_counter() - start,
    }


def _train(
    info: registry._Entry,
    recipe: Recipe,
    epochs: int,
    seed: int,
    data_dir: str | os.PathLike | None,
    out: Path,
    command: str,
) -> dict:
    name = info.name
    train_set = load_dataset(info.dataset, "train", data_dir=data_dir)
    test_set = load_dataset(info.dataset, "test")
    model = build_model(info.architecture, normalisation=NORMALISATION[info.dataset])
    n_params = count_parameters(model)
    _log(
        f"{name}: {info.architecture}, {n_params:,} parameters, {len(train_set):,} training "
        f"images, {epochs} epochs, {torch.get_num_threads()} threads"
    )

    steps_per_epoch = -(-len(train_set) // recipe.batch_size)
    optimiser = torch.optim.AdamW(
        model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=recipe.lr, epochs=epochs, steps_per_epoch=steps_per_epoch
    )
    shuffle = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    history = []
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        row = _epoch(model, train_set, recipe, shuffle, optimiser, schedule, loss_fn, epoch, start)
        history.append(row)
        _log(
            f"  epoch {epoch:2d}/{epochs}  loss {row['loss']:.4f}  "
            f"train acc {row['train_accuracy']:.2%}  elapsed {row['elapsed']:.0f}s"
        )
    train_seconds = time.perf_counter() - start

    model.eval()
    result = evaluate(model, test_set, batch_size=1000)
    _log(f"  test accuracy {result.accuracy:.2%} ({result.correct}/{result.n})")

    weights_file = out / f"{name}.pt"
    # Parameters are float32 already; BatchNorm's step counter stays int64.
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, weights_file)
    record = {
        "name": name,
        "dataset": info.dataset,
        "architecture": info.architecture,
        "n_params": n_params,
        "test_accuracy": result.accuracy,
        "test_correct": result.correct,
        "n_test": result.n,
        "per_class_accuracy": list(result.per_class_accuracy),
        "confusion_matrix": [list(row) for row in result.confusion],
        "train_command": command,
        "train_seconds": round(train_seconds, 1),
        "epochs": epochs,
        "batch_size": recipe.batch_size,
        "optimiser": (
            f"AdamW(lr={recipe.lr}, weight_decay={recipe.weight_decay}) with OneCycleLR, "
            "cross-entropy loss, no augmentation"
        ),
        "seed": seed,
        "threads": torch.get_num_threads(),
        "n_train": len(train_set),
        "history": history,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "weights_sha256": registry.sha256(weights_file),
        "weights_bytes": weights_file.stat().st_size,
    }
    (out / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pretrained.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", choices=[*registry.list_models(), "all"])
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--data-dir", default=None, help="directory with the train idx files")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    names = registry.list_models() if args.name == "all" else [args.name]
    for name in names:
        train(
            name, epochs=args.epochs, seed=args.seed, data_dir=args.data_dir, threads=args.threads
        )
        from .cards import write_card  # after the record exists

        _log(f"  wrote {write_card(name)}")
        from .test_predictions import write as write_predictions  # keyed by the new weights

        _log(f"  wrote {write_predictions(name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
