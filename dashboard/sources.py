"""What the views look at: a labelled image set and a model's predictions on it, in one shape
for the bundled test sets (MNIST, Fashion-MNIST) and for indexed workspaces (any model on any
image folder, `python -m pretrained.index`).

A view asks `source(key)` for the images (`image(i)` is `(C, H, W)` in [0, 1], any size, 1 or
3 channels; `classes` has K names, 2 to 1000) and `predictions(model, key)` for what the model
said about each of them. It never asks which kind of source it has, except to offer what only
one kind can do (drawing a digit; comparing several models on one set).

Workspaces are named on the command line (`python -m dashboard --workspace W`, which sets
SALIENCY_WORKSPACES) and keyed `ws:<folder name>`. Their model is the operator's own file, read
in this process behind the gate (`pretrained.workspace.load_model`), as the index read it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st

import pretrained
from pretrained.workspace import Indexed, WorkspaceError, open_indexed

WORKSPACE_PREFIX = "ws:"
TITLES = {"mnist": "MNIST digits", "fashion-mnist": "Fashion-MNIST"}


def is_workspace(key: str) -> bool:
    return isinstance(key, str) and key.startswith(WORKSPACE_PREFIX)


def workspace_folders() -> dict[str, Path]:
    """`ws:<name>` -> folder, for every folder in SALIENCY_WORKSPACES (os.pathsep-separated),
    read on every call (a name used twice gets a numbered suffix)."""
    out: dict[str, Path] = {}
    for text in os.environ.get("SALIENCY_WORKSPACES", "").split(os.pathsep):
        if not text.strip():
            continue
        folder = Path(text).expanduser().resolve()
        key, n = WORKSPACE_PREFIX + folder.name, 2
        while key in out and out[key] != folder:
            key, n = f"{WORKSPACE_PREFIX}{folder.name}-{n}", n + 1
        out[key] = folder
    return out


def keys() -> list[str]:
    """Every source the sidebar offers: the workspaces first (when the server was started on
    them), then the bundled test sets."""
    return list(workspace_folders()) + list(pretrained.DATASETS)


def title(key: str) -> str:
    return TITLES.get(key) or f"Workspace {key.removeprefix(WORKSPACE_PREFIX)}"


@dataclass(frozen=True)
class Source:
    """A labelled image set: `len(source)` images, `source.image(i)` `(C, H, W)` float32."""

    key: str
    title: str
    classes: tuple[str, ...]
    labels: np.ndarray  # (N,) int64
    shape: tuple[int, int, int]
    description: str  # what the model sees, in words
    read: Callable[[int], np.ndarray]
    paths: tuple[str, ...] | None = None  # a workspace's image paths (None: bundled)
    indexed: Indexed | None = None
    notes: tuple[str, ...] = ()  # files skipped when indexing, etc.

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> np.ndarray:
        """Image i, `(C, H, W)` float32 in [0, 1]: a copy, so a caller can't spoil the cache."""
        return self.read(int(i)).copy()

    def name(self, i: int) -> str:
        return f"Test image #{i}" if self.paths is None else self.paths[i]

    def find(self, path: str) -> int | None:
        return None if self.indexed is None else self.indexed.find(path)


@dataclass(frozen=True)
class Predictions:
    """A model's answers on a source: `predicted`, `p_predicted`, `p_label` `(N,)` and the top
    classes `(N, T)` with their probabilities, highest first."""

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


@st.cache_resource(show_spinner="Loading the test set…", max_entries=4)
def _bundled(name: str) -> Source:
    ds = pretrained.load_dataset(name, "test")
    images = ds.images.numpy()  # (N, 1, 28, 28)
    return Source(
        key=name,
        title=title(name),
        classes=tuple(ds.classes),
        labels=ds.labels.numpy().astype(np.int64),
        shape=tuple(images.shape[1:]),
        description="grey (1 channel), 28 × 28, pixels in [0, 1]",
        read=lambda i: images[i],
    )


@st.cache_resource(show_spinner="Opening the workspace…", max_entries=16)
def _workspace(key: str, folder: Path, mtime: float) -> Source:
    ws = open_indexed(folder)

    @functools.lru_cache(maxsize=256)  # shared by every session: decoded once
    def read(i: int) -> np.ndarray:
        return ws.image(i)

    skipped = len(ws.skipped)
    return Source(
        key=key,
        title=title(key),
        classes=ws.classes,
        labels=ws.labels,
        shape=ws.shape,
        description=ws.config.preprocessing.describe(),
        read=read,
        paths=ws.paths,
        indexed=ws,
        notes=(f"{skipped:,} files were skipped when indexing.",) if skipped else (),
    )


def source(key: str) -> Source:
    """The bundled test set `key`, or the indexed workspace `ws:<name>`: reopened when its
    index is rewritten. Raises WorkspaceError when its folder is not (or no longer) a finished
    index, or not one of this server's workspaces."""
    if not is_workspace(key):
        return _bundled(key)
    folder = workspace_folders().get(key)
    if folder is None:
        raise WorkspaceError(f"{key} is not one of this server's workspaces")
    manifest = folder / "manifest.json"
    return _workspace(key, folder, manifest.stat().st_mtime if manifest.is_file() else 0.0)
