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


def ranked_mistakes(
    predicted: np.ndarray,
    confidence: np.ndarray,
    labels: np.ndarray,
    *,
    true: int | None = None,
    predicted_as: int | None = None,
) -> np.ndarray:
    """Indices of misclassified examples, most confident mistakes first, from each example's
    predicted class and its probability (`confidence`), all `(N,)`. `true` / `predicted_as`
    restrict to one cell of the confusion matrix (or one row or column). Ties keep file order.
    """
    keep = predicted != labels
    if true is not None:
        keep &= labels == true
    if predicted_as is not None:
        keep &= predicted == predicted_as
    idx = np.flatnonzero(keep)
    return idx[np.argsort(-confidence[idx], kind="stable")]


def ranked_least_confident(
    predicted: np.ndarray, confidence: np.ndarray, labels: np.ndarray, n: int = 40
) -> np.ndarray:
    """Indices of the `n` correct predictions with the lowest winning probability."""
    idx = np.flatnonzero(predicted == labels)
    return idx[np.argsort(confidence[idx], kind="stable")][:n]


def ranked_disagreements(
    predicted_a: np.ndarray, confidence_a: np.ndarray, predicted_b: np.ndarray,
    confidence_b: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """Indices where two models predict different classes, the most confident clash first
    (ordered by the smaller of the two winning probabilities, highest first)."""
    idx = np.flatnonzero(predicted_a != predicted_b)
    both = np.minimum(confidence_a[idx], confidence_b[idx])
    return idx[np.argsort(-both, kind="stable")]


def _winners(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = probs.argmax(1)
    return pred, probs[np.arange(len(probs)), pred]


def mistakes(
    probs: np.ndarray, labels: np.ndarray, *, true: int | None = None, predicted: int | None = None
) -> np.ndarray:
    """`ranked_mistakes` from probabilities `(N, K)`."""
    return ranked_mistakes(*_winners(probs), labels, true=true, predicted_as=predicted)


def least_confident_correct(probs: np.ndarray, labels: np.ndarray, n: int = 40) -> np.ndarray:
    """`ranked_least_confident` from probabilities `(N, K)`."""
    return ranked_least_confident(*_winners(probs), labels, n)


def disagreements(probs_a: np.ndarray, probs_b: np.ndarray) -> np.ndarray:
    """`ranked_disagreements` from two models' probabilities `(N, K)`."""
    return ranked_disagreements(*_winners(probs_a), *_winners(probs_b))
