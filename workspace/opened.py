"""A workspace as every view opens it: its classes, the input its models take, how a picture
becomes that input, its labelled images or none, and its models.

Four kinds are made in `dashboard.sources`, and every view reads them alike: a bundled test set
(MNIST, Fashion-MNIST: every registry model of that data set explains it), a server's indexed
workspace (`python -m workspace.index`: its one model, its index's predictions), a workspace
uploaded as a model with a ZIP (its model is its uploader's), and the ImageNet workspace, which
has no images (`has_images` is false: a user's photo is explained by torchvision's
classifiers). Each model is one `model_ref.ModelRef` (`dashboard.cache.ref(key)`).

    >>> import numpy as np
    >>> ws = Workspace(key="toy", title="Toy", classes=("a", "b"), labels=np.array([0, 1]),
    ...                shape=(1, 2, 2), description="grey", read=lambda i: np.zeros((1, 2, 2)),
    ...                models=lambda: ["toy-net"])
    >>> len(ws), ws.has_images, ws.bundled, ws.models(), ws.name(1)
    (2, True, True, ['toy-net'], 'Test image #1')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from workspace import Indexed, find_path


@dataclass(frozen=True)
class Predictions:
    """A model's answers on a workspace's images: `predicted`, `p_predicted`, `p_label` `(N,)`
    and the top classes `(N, T)` with their probabilities, highest first."""

    predicted: np.ndarray
    p_predicted: np.ndarray
    p_label: np.ndarray
    top_classes: np.ndarray
    top_probabilities: np.ndarray

    @classmethod
    def from_probabilities(cls, probs: np.ndarray, labels: np.ndarray) -> Predictions:
        top = np.argsort(-probs, axis=1, kind="stable")[:, :5]
        rows = np.arange(len(probs))
        return cls(
            predicted=top[:, 0],
            p_predicted=probs[rows, top[:, 0]],
            p_label=probs[rows, labels],
            top_classes=top,
            top_probabilities=np.take_along_axis(probs, top, axis=1),
        )


@dataclass(frozen=True)
class Workspace:
    """Classes, input shape, preparation, data (`len(ws)` images, `ws.image(i)` `(C, H, W)`
    float32 in [0, 1]) or none, and models (`models()`: the keys every visitor may use with it;
    a session's own uploads are added by the dashboard)."""

    key: str
    title: str
    classes: tuple[str, ...]
    labels: np.ndarray  # (N,) int64; N = 0: no images of its own
    shape: tuple[int, int, int]
    description: str  # what the model sees, in words
    read: Callable[[int], np.ndarray]
    models: Callable[[], list[str]] = list
    paths: tuple[str, ...] | None = None  # its images' paths (None: a bundled test set)
    indexed: Indexed | None = None  # a server workspace's index
    predictions: Predictions | None = None  # its one model's, from its index
    summary: Callable[[], dict] | None = None  # the index's summary arrays
    prepare: Callable[[Any], np.ndarray] | None = None  # a picture -> the models' input
    model: str | None = None  # a workspace's one model (indexed with it)
    again: str = ""  # how to index it again, with gradients
    notes: tuple[str, ...] = ()  # files skipped when indexing, etc.
    problems: tuple[dict, ...] = ()

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def bundled(self) -> bool:
        """A bundled test set, which every registry model of its data set explains (a
        workspace comes with its one model, the ImageNet workspace with torchvision's)."""
        return self.paths is None

    @property
    def has_images(self) -> bool:
        """False for a workspace without images of its own (the ImageNet one): Explore explains
        the user's photo there, and the views of a whole data set have nothing to show."""
        return len(self.labels) > 0

    def image(self, i: int) -> np.ndarray:
        """Image i, `(C, H, W)` float32 in [0, 1]: a copy, so a caller can't spoil the cache."""
        return self.read(int(i)).copy()

    def name(self, i: int) -> str:
        return f"Test image #{i}" if self.paths is None else self.paths[i]

    def find(self, path: str) -> int | None:
        """The index of the image at `path` (as under the data folder), or None."""
        return None if self.paths is None else find_path(self.paths, path)
