"""What the views look at: a labelled image set and a model's predictions on it, in one shape
for the bundled test sets (MNIST, Fashion-MNIST), for indexed workspaces (any model on any
image folder, `python -m workspace.index`) and for the workspace without images of its own,
ImageNet's (`photos:imagenet`: a user's photos, explained by torchvision's classifiers).

A view asks `source(key)` for its `workspace.opened.Workspace`: the images (`image(i)` is
`(C, H, W)` in [0, 1], any size, 1 or 3 channels; `classes` has K names, 2 to 1000), its models
(`models()`), and `cache.predictions(model, key)` for what a model said about each image. It
never asks which kind of workspace it has, except to offer what only one kind can do (drawing a
digit; comparing several models on one set).

Workspaces come two ways:

- named on the command line (`python -m dashboard --workspace W`, which sets
  SALIENCY_WORKSPACES), keyed `ws:<folder name>`, for every session. Their model is the
  operator's own file, read in this process behind the gate (`workspace.load_model`),
  as the index read it;
- uploaded on the Your model page (a model and a ZIP of an ImageFolder), keyed
  `ws:upload-<hash>`, for the session that uploaded it (and whoever has its model's secret
  key). Indexed in memory (`workspace.folder_upload`); the model runs in its sandboxed worker.
"""

from __future__ import annotations

import functools
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

import pretrained
from dashboard import budget, lru
from sandbox import kinds
from workspace import WorkspaceError, open_indexed
from workspace.folder_upload import Built
from workspace.opened import Predictions, Workspace

__all__ = ["Predictions", "Workspace"]  # the views' types, re-exported (`workspace.opened`)

# Session key: the uploaded workspaces this session may open (`remember`).
MY_WORKSPACES = "my_workspaces"
MAX_UPLOADED = 4  # uploaded workspaces kept by a server (their images are in memory)
PHOTOS = kinds.photos("imagenet")  # the ImageNet workspace: no images, the user's photos
TITLES = {"mnist": "MNIST digits", "fashion-mnist": "Fashion-MNIST", PHOTOS: "Photos (ImageNet)"}


def workspace_folders() -> dict[str, Path]:
    """`ws:<name>` -> folder, for every folder in SALIENCY_WORKSPACES (os.pathsep-separated),
    read on every call (a name used twice gets a numbered suffix)."""
    out: dict[str, Path] = {}
    for text in os.environ.get("SALIENCY_WORKSPACES", "").split(os.pathsep):
        if not text.strip():
            continue
        folder = Path(text).expanduser().resolve()
        key, n = kinds.workspace(folder.name), 2
        while key in out and out[key] != folder:
            key, n = kinds.workspace(f"{folder.name}-{n}"), n + 1
        out[key] = folder
    return out


def keys() -> list[str]:
    """Every source the sidebar offers: the server's workspaces first (when it was started on
    them), then this session's uploaded ones, then the bundled test sets, then the ImageNet
    workspace (a user's photos)."""
    return list(workspace_folders()) + mine() + list(pretrained.DATASETS) + [PHOTOS]


def public_keys() -> list[str]:
    """The sources every visitor of this server sees: its workspaces, the bundled test sets
    and the ImageNet workspace (no session's uploads; needs no session)."""
    return list(workspace_folders()) + list(pretrained.DATASETS) + [PHOTOS]


def title(key: str) -> str:
    kind, name = kinds.parse(key)
    if kind == kinds.UPLOADED:
        src = uploaded().get(key)
        return f"Your images: {src.title}" if src else key
    return TITLES.get(key) or f"Workspace {name}"


def registry_models(dataset: str | None) -> list[str]:
    """The registry's models of `dataset` (all, for None) that have weights and a training
    record: one registered but not yet trained is left out, so one missing file cannot break
    every page."""
    ready = []
    for name in pretrained.list_models(dataset):
        try:
            pretrained.model_info(name)
        except FileNotFoundError:
            continue
        ready.append(name)
    return ready


@st.cache_resource(show_spinner="Loading the test set…", max_entries=4)
def _bundled(name: str) -> Workspace:
    images, labels = pretrained.data.load_arrays(name, "test")  # (N, 1, 28, 28), (N,)
    return Workspace(
        key=name,
        title=title(name),
        classes=pretrained.CLASS_NAMES[name],
        labels=labels,
        shape=tuple(images.shape[1:]),
        description="grey (1 channel), 28 × 28, pixels in [0, 1]",
        read=lambda i: images[i],
        models=functools.partial(registry_models, name),
    )


@st.cache_resource(show_spinner="Opening the workspace…", max_entries=16)
def _workspace(key: str, folder: Path, mtime: float) -> Workspace:
    ws = open_indexed(folder)
    decoded = lru.store("images")  # shared by every session, bounded in bytes

    def read(i: int) -> np.ndarray:
        image = decoded.get((key, mtime, i))
        if image is None:
            image = lru.frozen(ws.image(i))
            decoded.put((key, mtime, i), image, image.nbytes)
        return image

    skipped = len(ws.skipped)
    return Workspace(
        key=key,
        title=title(key),
        classes=ws.classes,
        labels=ws.labels,
        shape=ws.shape,
        description=ws.config.preprocessing.describe(),
        read=read,
        models=lambda: [key],  # the model it was indexed with, named like it
        paths=ws.paths,
        indexed=ws,
        predictions=Predictions(
            ws.predicted, ws.p_predicted, ws.p_label, ws.top_classes, ws.top_probabilities
        ),
        summary=ws.summary,
        prepare=ws.config.preprocessing,
        model=key,
        again=f"python -m workspace.index --config {folder / 'workspace.toml'} --out {folder}",
        notes=(f"{skipped:,} files were skipped when indexing.",) if skipped else (),
        problems=tuple(ws.skipped),
    )


@st.cache_resource(show_spinner="Opening the ImageNet workspace…", max_entries=1)
def _photos() -> Workspace:
    from workspace import imagenet  # torchvision takes seconds to import: only this needs it

    prepare = imagenet.preparation()
    return Workspace(
        key=PHOTOS,
        title=title(PHOTOS),
        classes=imagenet.categories(prepare.name),
        labels=np.zeros(0, np.int64),
        shape=(3, 224, 224),
        description=prepare.describe(),
        read=_no_images,
        models=photo_models,
        paths=(),
        prepare=prepare,
    )


def _no_images(i: int) -> np.ndarray:
    raise IndexError(f"{title(PHOTOS)} has no images of its own (asked for #{i})")


# Every key `photo_models` may give, known without importing torchvision.
PHOTO_MODEL_KEYS = frozenset(
    kinds.imagenet(name, weights)
    for name in ("resnet18", "mobilenet_v3_small")
    for weights in ("pretrained", "random")
)


def photo_models() -> list[str]:
    """The ImageNet workspace's models: each of torchvision's, with its ImageNet weights where
    they are in the torch cache, else random ones (which a view offers only when its visitor
    opts in: their card says how to get the weights, `imagenet.Card.missing`)."""
    from workspace import imagenet

    return [
        kinds.imagenet(name, "pretrained" if imagenet.weights_available(name) else "random")
        for name in imagenet.MODELS
    ]


def has_one_model(key: str) -> bool:
    """A workspace (a server's or an uploaded one), which comes with its one model; a bundled
    test set is explained by every registry model of its data set. The router asks this
    rather than reading the key's kind itself."""
    return kinds.is_workspace(key)


def source(key: str) -> Workspace:
    """The bundled test set `key`, the indexed workspace `ws:<name>` (reopened when its index
    is rewritten), an uploaded one, or the ImageNet workspace (`PHOTOS`). Raises
    WorkspaceError when its folder is not (or no longer) a finished index, or not one of this
    server's workspaces."""
    kind = kinds.parse(key).kind
    if kind == kinds.BUNDLED:
        return _bundled(key)
    if kind == kinds.PHOTOS:
        if key != PHOTOS:
            raise WorkspaceError(f"{key} is not one of this server's workspaces")
        return _photos()
    if kind == kinds.UPLOADED:
        src = uploaded().get(key)
        if src is None:
            raise WorkspaceError(
                f"{key} is gone from this server (it keeps the last {MAX_UPLOADED} uploaded "
                "workspaces, until it restarts): upload it again on the Your model page"
            )
        return src
    folder = workspace_folders().get(key)
    if folder is None:
        raise WorkspaceError(f"{key} is not one of this server's workspaces")
    manifest = folder / "manifest.json"
    return _workspace(key, folder, manifest.stat().st_mtime if manifest.is_file() else 0.0)


# --- workspaces uploaded on the Your model page ------------------------------------------------


class _Uploaded:
    """The server's uploaded workspaces, at most MAX_UPLOADED and at most the budget's
    "workspaces" share in bytes (their images, sums and predictions), the least recently
    added forgotten first."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: OrderedDict[str, tuple[Workspace, int]] = OrderedDict()
        self.max_bytes = budget.share("workspaces")

    @property
    def bytes(self) -> int:
        with self.lock:
            return sum(size for _, size in self.entries.values())

    def get(self, key: str) -> Workspace | None:
        with self.lock:
            entry = self.entries.get(key)
            return entry[0] if entry else None

    def add(self, src: Workspace, size: int) -> None:
        """Keep `src` (holding `size` bytes), forgetting the oldest while over the bounds;
        raises WorkspaceError when it alone is over the byte bound."""
        if size > self.max_bytes:
            raise WorkspaceError(_too_big(size, self.max_bytes))
        with self.lock:
            self.entries[src.key] = (src, size)
            self.entries.move_to_end(src.key)
            total = sum(s for _, s in self.entries.values())
            while len(self.entries) > MAX_UPLOADED or total > self.max_bytes:
                total -= self.entries.popitem(last=False)[1][1]

    def for_model(self, model: str) -> str | None:
        with self.lock:
            return next((k for k, (s, _) in self.entries.items() if s.model == model), None)


def _too_big(size: int, limit: int) -> str:
    return (
        f"these images hold {size / 2**20:,.0f} MB once prepared, and this server keeps at "
        f"most {limit / 2**20:,.0f} MB of uploaded workspaces (SALIENCY_MEMORY_MB): send "
        "fewer or smaller images"
    )


@st.cache_resource(show_spinner=False)
def uploaded() -> _Uploaded:
    return _Uploaded()


def uploaded_key(model_name: str) -> str:
    """`ws:upload-<hash>` for the workspace whose model is `upload:<hash>`."""
    return kinds.uploaded(model_name)


def add_uploaded(built: Built, filename: str) -> str:
    """Keep an uploaded workspace for this server (its model already in the upload pool) and
    for this session; returns its key. Raises WorkspaceError when it alone holds more than
    the budget's share for uploaded workspaces. `filename` is the ZIP's: the data set is its
    images, whichever model indexed them."""
    imgs = built.images
    x = imgs.x
    x.setflags(write=False)
    key = uploaded_key(built.name)
    summary = dict(built.summary)
    src = (
        Workspace(
            key=key,
            title=f"{filename or 'your images'}, {len(imgs.paths):,} images",
            classes=imgs.classes,
            labels=imgs.labels,
            shape=tuple(x.shape[1:]),
            description=imgs.preprocessing.describe(),
            read=lambda i: x[i],
            paths=tuple(imgs.paths),
            predictions=Predictions(
                built.predicted, built.p_predicted, built.p_label, built.top_classes,
                built.top_probabilities,
            ),
            summary=lambda: summary,
            prepare=imgs.preprocessing,
            model=built.name,  # its uploader's: no visitor's model (`models`)
            notes=(
                (f"Files of the ZIP skipped: {len(imgs.problems):,} (Your model lists them).",)
                if imgs.problems
                else ()
            ),
            problems=tuple(imgs.problems),
        )
    )  # fmt: skip
    uploaded().add(src, lru.nbytes((x, summary, src.predictions, src.paths, src.labels)))
    remember(key)
    return key


_BUILDING = threading.BoundedSemaphore(1)


@contextmanager
def one_build(waiting: Callable[[], Any] | None = None) -> Iterator[None]:
    """One uploaded ZIP decoded and built at a time in this server: each holds up to its
    prepared images and sums while it is built, so several at once would multiply that.
    Others wait, calling `waiting()` first."""
    if not _BUILDING.acquire(blocking=False):
        if waiting:
            waiting()
        _BUILDING.acquire()
    try:
        yield
    finally:
        _BUILDING.release()


def remember(key: str) -> None:
    """This session may open uploaded workspace `key` (a reload with its model's secret key
    gets it back: `state._claim`)."""
    mine_ = st.session_state.setdefault(MY_WORKSPACES, [])
    if key not in mine_:
        mine_.append(key)


def mine() -> list[str]:
    """This session's uploaded workspaces still on the server."""
    store = uploaded()
    try:
        keys_ = st.session_state.get(MY_WORKSPACES, [])
    except Exception:  # noqa: BLE001 - no session (a script outside Streamlit)
        return []
    return [k for k in keys_ if store.get(k) is not None]
