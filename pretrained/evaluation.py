"""Accuracy, per-class accuracy and the confusion matrix of a model on a data set."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .data import Dataset


@dataclass(frozen=True)
class Evaluation:
    """Counts from one pass over a data set.

    `confusion[i][j]` counts examples of true class i predicted as class j (10 x 10).
    """

    confusion: tuple[tuple[int, ...], ...]

    @property
    def n(self) -> int:
        return sum(sum(row) for row in self.confusion)

    @property
    def correct(self) -> int:
        return sum(row[i] for i, row in enumerate(self.confusion))

    @property
    def accuracy(self) -> float:
        return self.correct / self.n

    @property
    def per_class_accuracy(self) -> tuple[float, ...]:
        return tuple(row[i] / max(sum(row), 1) for i, row in enumerate(self.confusion))


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, *, batch_size: int = 1000) -> Evaluation:
    """Evaluate `model` (put in eval mode for the pass, then restored) on every example.

    Runs in float32 on the model's device, in batches of `batch_size`.
    """
    device = next(model.parameters()).device
    k = len(dataset.classes)
    confusion = torch.zeros(k, k, dtype=torch.int64)
    was_training = model.training
    model.eval()
    try:
        for x, y in dataset.batches(batch_size):
            pred = model(x.to(device)).argmax(dim=1).cpu()  # (B,)
            confusion += torch.bincount(y * k + pred, minlength=k * k).view(k, k)
    finally:
        model.train(was_training)
    return Evaluation(confusion=tuple(tuple(int(c) for c in row) for row in confusion.tolist()))


# --- galleries over a model's test-set predictions (numpy in, indices out) --------------------


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, k: int = 10) -> np.ndarray:
    """(k, k) int64 counts: row = true class, column = predicted class."""
    labels = np.asarray(labels, dtype=np.int64)
    predicted = np.asarray(predicted, dtype=np.int64)
    return np.bincount(labels * k + predicted, minlength=k * k).reshape(k, k)


def mistakes(
    probs: np.ndarray, labels: np.ndarray, *, true: int | None = None, predicted: int | None = None
) -> np.ndarray:
    """Indices of misclassified examples, most confident mistakes first.

    `probs` (N, K), `labels` (N,). `true` / `predicted` restrict to one cell of the confusion
    matrix (or one row or column). Ties keep file order.
    """
    pred = probs.argmax(1)
    keep = pred != labels
    if true is not None:
        keep &= labels == true
    if predicted is not None:
        keep &= pred == predicted
    idx = np.flatnonzero(keep)
    return idx[np.argsort(-probs[idx, pred[idx]], kind="stable")]


def least_confident_correct(probs: np.ndarray, labels: np.ndarray, n: int = 40) -> np.ndarray:
    """Indices of the `n` correct predictions with the lowest winning probability."""
    pred = probs.argmax(1)
    idx = np.flatnonzero(pred == labels)
    return idx[np.argsort(probs[idx, pred[idx]], kind="stable")][:n]


def disagreements(probs_a: np.ndarray, probs_b: np.ndarray) -> np.ndarray:
    """Indices where two models predict different classes, the most confident clash first
    (ordered by the smaller of the two winning probabilities, highest first)."""
    pa, pb = probs_a.argmax(1), probs_b.argmax(1)
    idx = np.flatnonzero(pa != pb)
    both = np.minimum(probs_a[idx, pa[idx]], probs_b[idx, pb[idx]])
    return idx[np.argsort(-both, kind="stable")]
