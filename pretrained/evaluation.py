"""Accuracy, per-class accuracy and the confusion matrix of a model on a data set."""

from __future__ import annotations

from dataclasses import dataclass

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
