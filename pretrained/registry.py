"""The model registry: the one place that builds models and opens weight files.

Each entry's static part (name, data set, architecture, description) lives in `_ENTRIES`;
its measurements (test accuracy, per-class accuracy, confusion matrix, training time and
command) are read from `weights/<name>.json`, which training writes next to the weights, so
the numbers reported always come from the run that produced the weights.

Example:
    >>> model = load_model("mnist-cnn")        # eval mode, on default_device()
    >>> model_info("mnist-cnn").test_accuracy  # fraction of the 10,000 test images
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from .data import CLASS_NAMES, DATASETS, NORMALISATION

# torch and the architectures are imported by the functions that build or run a model: the
# cards (`model_info`, `list_models`) are read without torch, which takes seconds to import.
if TYPE_CHECKING:
    import torch
    from torch import nn

    from .architectures import StandardisedRegressor

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DATA_DIR = Path(__file__).resolve().parent / "data"
CARDS_DIR = Path(__file__).resolve().parent / "cards"


@lru_cache(maxsize=64)
def _training_record(path: Path, mtime_ns: int) -> dict:
    """The parsed JSON record, read once per file version: the dashboard asks for model info
    (accuracy in menus) on every rerun. `mtime_ns` is part of the key so retraining is seen."""
    return json.loads(path.read_text())


@dataclass(frozen=True)
class _Entry:
    name: str
    dataset: str
    architecture: str
    description: str


_ENTRIES: dict[str, _Entry] = {
    e.name: e
    for e in (
        _Entry(
            "mnist-linear",
            "mnist",
            "linear",
            "Logistic regression on MNIST digits; its input gradient for class c is W[c] for "
            "every image, a teaching anchor for saliency.",
        ),
        _Entry(
            "mnist-mlp",
            "mnist",
            "mlp",
            "Two-layer fully connected net (784-256-10, ReLU) on MNIST digits.",
        ),
        _Entry(
            "mnist-cnn",
            "mnist",
            "cnn",
            "Small two-block convolutional net on MNIST digits.",
        ),
        _Entry(
            "fashion-mnist-linear",
            "fashion-mnist",
            "linear",
            "Logistic regression on Fashion-MNIST clothing images; its input gradient for "
            "class c is W[c] for every image.",
        ),
        _Entry(
            "fashion-mnist-mlp",
            "fashion-mnist",
            "mlp",
            "Two-layer fully connected net (784-256-10, ReLU) on Fashion-MNIST clothing images.",
        ),
        _Entry(
            "fashion-mnist-cnn",
            "fashion-mnist",
            "cnn",
            "Small two-block convolutional net on Fashion-MNIST clothing images.",
        ),
        _Entry(
            "mnist-cnn-bn",
            "mnist",
            "cnn-bn",
            "The small CNN with BatchNorm on MNIST digits; in train mode its outputs depend on "
            "the rest of the batch, which is why saliency needs eval mode.",
        ),
        _Entry(
            "mnist-vit",
            "mnist",
            "vit",
            "Small vision transformer (7x7 patches, a CLS token, 4 blocks) on MNIST digits; "
            "its attention can be read by attention rollout.",
        ),
        _Entry(
            "fashion-mnist-vit",
            "fashion-mnist",
            "vit",
            "Small vision transformer (7x7 patches, a CLS token, 4 blocks) on Fashion-MNIST "
            "clothing images; its attention can be read by attention rollout.",
        ),
    )
}


@dataclass(frozen=True)
class ModelInfo:
    """Everything known about one registered model.

    Accuracies are fractions measured on the full 10,000-image test set by the training run;
    `confusion_matrix[i][j]` counts test images of class i predicted as j.
    """

    name: str
    dataset: str
    architecture: str
    description: str
    class_names: tuple[str, ...]
    normalisation: tuple[float, float]  # (mean, std), applied inside the model's forward
    n_params: int
    test_accuracy: float
    per_class_accuracy: tuple[float, ...]
    confusion_matrix: tuple[tuple[int, ...], ...]
    train_command: str
    n_train: int
    train_seconds: float
    epochs: int
    batch_size: int
    optimiser: str
    seed: int
    threads: int
    torch_version: str
    weights_file: Path
    weights_sha256: str
    metrics_file: Path
    card_file: Path
    input_shape: tuple[int, int, int] = (1, 28, 28)

    @property
    def n_test(self) -> int:
        return sum(sum(row) for row in self.confusion_matrix)

    @property
    def architecture_description(self) -> str:
        from .architectures import ARCHITECTURES

        return ARCHITECTURES[self.architecture]


def list_models(dataset: str | None = None) -> list[str]:
    """Registered model names, optionally only those trained on `dataset`."""
    if dataset is not None and dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; known datasets: {', '.join(DATASETS)}")
    return [n for n, e in _ENTRIES.items() if dataset is None or e.dataset == dataset]


def _entry(name: str) -> _Entry:
    try:
        return _ENTRIES[name]
    except (KeyError, TypeError):
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(_ENTRIES)}") from None


def _record_of(name: str, how_to_train: str) -> tuple[Path, dict]:
    """A registered model's training record (its file and its contents); FileNotFoundError
    saying `how_to_train` it when there is none yet."""
    metrics_file = WEIGHTS_DIR / f"{name}.json"
    if not metrics_file.is_file():
        raise FileNotFoundError(f"{metrics_file}: no training record for {name}; {how_to_train}")
    return metrics_file, _training_record(metrics_file, metrics_file.stat().st_mtime_ns)


def _recorded(name: str, m: dict, metrics_file: Path) -> dict:
    """The fields an image model's info and a table model's info both take from the training
    record `m` and the model's files."""
    return {
        "n_train": int(m["n_train"]),
        "train_command": m["train_command"],
        "train_seconds": float(m["train_seconds"]),
        "optimiser": m["optimiser"],
        "seed": int(m["seed"]),
        "torch_version": m["torch_version"],
        "weights_file": WEIGHTS_DIR / f"{name}.pt",
        "weights_sha256": m["weights_sha256"],
        "metrics_file": metrics_file,
        "card_file": CARDS_DIR / f"{name}.md",
    }


def train_command(name: str) -> str:
    """The command that trains `name` with its default recipe."""
    _entry(name)
    return f"python -m pretrained.train {name}"


def model_info(name: str) -> ModelInfo:
    """Metadata and measured accuracy of a registered model.

    Raises `KeyError` listing the known names for an unknown one, and `FileNotFoundError`
    (saying how to train it) if the model has no training record yet.
    """
    e = _entry(name)
    metrics_file = WEIGHTS_DIR / f"{name}.json"
    if not metrics_file.is_file():
        _record_of(name, f"train it with `{train_command(name)}`")  # raises, saying how
    return _model_info(e, metrics_file, metrics_file.stat().st_mtime_ns)


@lru_cache(maxsize=64)
def _model_info(e: _Entry, metrics_file: Path, mtime_ns: int) -> ModelInfo:
    """`model_info`, made once per entry and version of its training record: the dashboard
    asks for a card (a picker's accuracy, the public models' list) several times per answer,
    and building one (its confusion matrix's 100 ints) cost more than reading the cached
    record."""
    name, m = e.name, _training_record(metrics_file, mtime_ns)
    return ModelInfo(
        name=name,
        dataset=e.dataset,
        architecture=e.architecture,
        description=e.description,
        class_names=CLASS_NAMES[e.dataset],
        normalisation=NORMALISATION[e.dataset],
        n_params=int(m["n_params"]),
        test_accuracy=float(m["test_accuracy"]),
        per_class_accuracy=tuple(float(a) for a in m["per_class_accuracy"]),
        confusion_matrix=tuple(tuple(int(c) for c in row) for row in m["confusion_matrix"]),
        epochs=int(m["epochs"]),
        batch_size=int(m["batch_size"]),
        threads=int(m["threads"]),
        **_recorded(name, m, metrics_file),
    )


def default_device() -> torch.device:
    """CUDA if available, else CPU: the single place a device is chosen."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_model(name: str, device: str | torch.device | None = None) -> nn.Module:
    """A fresh instance of a registered model with its trained weights, in eval mode.

    Maps `(N, 1, 28, 28)` images in [0, 1] to `(N, 10)` logits. Parameters are frozen
    (`requires_grad=False`): input gradients still flow, but nothing accumulates in `.grad`.
    The weights file must match the hash its training record states, so the recorded
    accuracy belongs to these weights.
    """
    import torch

    info = model_info(name)
    device = default_device() if device is None else torch.device(device)
    return from_state(info.architecture, info.dataset, _recorded_weights(info, device), device)


def _recorded_weights(
    info: ModelInfo | TableModelInfo, device: torch.device
) -> dict[str, torch.Tensor]:
    """The state dict in `info.weights_file`, read once its hash matches the training record's,
    so the recorded measurements belong to these weights."""
    import torch

    if not info.weights_file.is_file():
        raise FileNotFoundError(
            f"{info.weights_file}: weights for {info.name} missing; train them with "
            f"`{info.train_command}`"
        )
    digest = sha256(info.weights_file)
    if digest != info.weights_sha256:
        raise ValueError(
            f"{info.weights_file}: sha256 {digest[:12]}... does not match the training record "
            f"{info.metrics_file.name} ({info.weights_sha256[:12]}...); retrain with "
            f"`{info.train_command}`"
        )
    return torch.load(info.weights_file, map_location=device, weights_only=True)


def from_state(
    architecture: str, dataset: str, state: dict[str, torch.Tensor], device: torch.device
) -> nn.Module:
    """Registry architecture `architecture` for `dataset`, with `state` loaded strictly (a
    `ValueError` names the keys and shapes that don't fit), frozen, moved and in eval mode."""
    import torch

    from .architectures import build_model

    model = build_model(
        architecture, len(CLASS_NAMES[dataset]), normalisation=NORMALISATION[dataset]
    )
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        problems = [f"missing {k} {expected[k]}" for k in expected if k not in got]
        problems += [f"unexpected {k} {got[k]}" for k in got if k not in expected]
        problems += [
            f"{k} has shape {got[k]}, expected {expected[k]}"
            for k in expected
            if k in got and got[k] != expected[k]
        ]
        raise ValueError(
            f"weights do not fit architecture {architecture!r}: " + "; ".join(problems[:6])
        )
    model.load_state_dict(
        {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items()}
    )
    model.requires_grad_(False)
    return model.to(device).eval()


# Table models: regression nets on a bundled table (the Tables page's offline example). Their
# inputs are rows of named features in raw units, not images, so they have their own entries.


@dataclass(frozen=True)
class _TableEntry:
    name: str
    table: str  # pretrained/data/<table>/<table>.csv
    target: str  # the CSV column the model predicts; every other column is an input
    hidden: int
    description: str


_TABLE_ENTRIES: dict[str, _TableEntry] = {
    e.name: e
    for e in (
        _TableEntry(
            "diabetes-mlp",
            "diabetes",
            "progression",
            8,
            "Regression net (10 -> 8 -> 8 -> 1, tanh) predicting diabetes progression one year "
            "on from ten baseline measurements in their own units. It standardises its inputs "
            "inside forward and returns (y, y_scaled).",
        ),
    )
}


@dataclass(frozen=True)
class TableModelInfo:
    """A registered table model and what its training run measured on the held-out rows."""

    name: str
    description: str
    data_file: Path
    features: tuple[str, ...]
    target: str
    outputs: tuple[str, ...]  # names of the forward's tuple entries
    hidden: int
    n_train: int
    n_test: int
    test_r2: float
    test_rmse: float
    linear_r2: float  # least squares on the same split, for comparison
    train_command: str
    train_seconds: float
    steps: int
    optimiser: str
    seed: int
    torch_version: str
    weights_file: Path
    weights_sha256: str
    metrics_file: Path
    card_file: Path


def list_table_models() -> list[str]:
    return list(_TABLE_ENTRIES)


def table_model_info(name: str) -> TableModelInfo:
    """Like `model_info`, for a table model."""
    if name not in _TABLE_ENTRIES:
        raise KeyError(f"unknown table model {name!r}; known: {', '.join(_TABLE_ENTRIES)}")
    e = _TABLE_ENTRIES[name]
    metrics_file, m = _record_of(name, f"run `python -m pretrained.tables train {name}`")
    return TableModelInfo(
        name=name,
        description=e.description,
        data_file=DATA_DIR / e.table / f"{e.table}.csv",
        features=tuple(m["features"]),
        target=e.target,
        outputs=tuple(m["outputs"]),
        hidden=e.hidden,
        n_test=int(m["n_test"]),
        test_r2=float(m["test_r2"]),
        test_rmse=float(m["test_rmse"]),
        linear_r2=float(m["linear_r2"]),
        steps=int(m["steps"]),
        **_recorded(name, m, metrics_file),
    )


def build_table_model(name: str, n_features: int) -> StandardisedRegressor:
    from .architectures import StandardisedRegressor

    return StandardisedRegressor(n_features, hidden=_TABLE_ENTRIES[name].hidden)


def load_table_model(name: str, device: str | torch.device | None = None) -> nn.Module:
    """A registered table model with its trained weights: eval mode, frozen parameters, the
    weights' hash checked against the training record (as `load_model` does)."""
    import torch

    info = table_model_info(name)
    device = default_device() if device is None else torch.device(device)
    model = build_table_model(name, len(info.features))
    model.load_state_dict(_recorded_weights(info, device))
    model.requires_grad_(False)
    return model.to(device).eval()
