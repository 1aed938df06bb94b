"""The plumbing of `python -m workspace.bench`: where the images come from, which ones a run
scores, and the resumable, sharded batches (`workspace.index`'s torchrun plumbing).

- `registry_source` / `workspace_source`: the model and a reader of its images, from the zoo
  (a bundled test set) or from an indexed workspace;
- `select`: the first N images of each class;
- `resume`: which batches are written already (every rank says what it sees, rank 0 decides;
  other settings start over), `write_batch` one batch's per-image rows atomically, and `merge`
  every batch's rows on rank 0, in batch order.

Never imports streamlit or the dashboard.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .index import _atomic_write, _broadcast, _Dist, _gather, _load_npz, _npz_bytes

__all__ = ["BenchError", "Source", "merge", "registry_source", "resume", "select",
           "settings_key", "workspace_source", "write_batch"]  # fmt: skip


class BenchError(ValueError):
    """A problem with the command's input, said in plain words (exit code 2)."""


@dataclass
class Source:
    """The model and the images to score: `read(indices)` -> `((B, C, H, W)` in [0, 1] or
    None, the indices it could read, `[(index, reason)]` for those it couldn't) (a workspace's
    file may be gone)."""

    model: torch.nn.Module
    labels: np.ndarray  # (N_all,) every image's label, in dataset order
    classes: tuple[str, ...]
    describe: dict[str, Any]  # model and data, for bench.json and the settings hash
    read: Callable[[list[int]], tuple[torch.Tensor | None, list[int], list[tuple[int, str]]]]
    skipped: list[dict] = field(default_factory=list)


def registry_source(name: str, data: str | None, device: torch.device) -> Source:
    """A registry model and a bundled test set (its own by default)."""
    from pretrained import registry
    from pretrained.data import DATASETS, load_dataset

    try:
        info = registry.model_info(name)
    except (KeyError, FileNotFoundError) as err:
        raise BenchError(str(err).strip("'\"")) from None
    if info.dataset not in DATASETS:
        raise BenchError(f"{name} is not an image model: the bench scores image classifiers")
    data = data or info.dataset
    if data not in DATASETS:
        raise BenchError(f"unknown data set {data!r}; bundled test sets: {', '.join(DATASETS)}")
    try:
        model = registry.load_model(name, device=device)
    except (FileNotFoundError, ValueError) as err:
        raise BenchError(str(err)) from None
    ds = load_dataset(data, "test")

    def read(indices: list[int]):
        return ds.images[indices].to(device), list(indices), []

    return Source(
        model=model,
        labels=ds.labels.numpy(),
        classes=ds.classes,
        describe={
            "model": {"name": name, "sha256": info.weights_sha256},
            "data": {"name": data, "split": "test", "bundled": True, "n_listed": len(ds)},
        },
        read=read,
    )


def workspace_source(folder: str, device: torch.device) -> Source:
    """An indexed workspace's own model and images (an unreadable image is skipped, with why)."""
    from sandbox.images import ImageError
    from workspace import WorkspaceError, open_indexed, shared_model

    try:
        ws = open_indexed(folder)
        model = shared_model(ws.config, len(ws.classes), ws.model_sha256, device=str(device))
    except WorkspaceError as err:
        raise BenchError(str(err)) from None

    def read(indices: list[int]):
        arrays, ok, bad = [], [], []
        for i in indices:
            try:
                arrays.append(torch.from_numpy(ws.image(i)))
                ok.append(i)
            except (ImageError, OSError) as err:
                bad.append((i, str(err)))
        return (torch.stack(arrays).to(device) if arrays else None), ok, bad

    model_facts = {
        "path": ws.config.model,
        "sha256": ws.model_sha256,
        "kind": ws.config.kind,
        "architecture": ws.config.architecture,
    }
    data_facts = {
        "workspace": str(Path(folder).resolve()),
        "path": ws.config.data,
        "sha256": ws.manifest.get("data_sha256", ""),
        "n_listed": len(ws.labels),
    }
    return Source(model, ws.labels, ws.classes, {"model": model_facts, "data": data_facts}, read)


def select(labels: np.ndarray, per_class: int, k: int) -> np.ndarray:
    """The first `per_class` indices of each class, in dataset order (fewer where a class has
    fewer images), sorted: the images a run scores."""
    picked = [np.flatnonzero(labels == c)[:per_class] for c in range(k)]
    return np.sort(np.concatenate(picked)).astype(np.int64) if picked else np.zeros(0, np.int64)


def settings_key(settings: dict) -> str:
    """A hash of everything that changes a value: working files under another key are redone."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def _batch_file(parts: Path, b: int) -> Path:
    return parts / f"batch{b:06d}.npz"


def resume(
    parts: Path, key: str, settings: dict, n_batches: int, d: _Dist, say: Callable[[str], None]
) -> set[int]:
    """The batches written already, the same set on every rank. Rank 0 keeps `parts` when its
    settings' key is `key` and empties it otherwise; a folder it can't write is a BenchError on
    every rank (said once, so no rank waits for the others forever)."""
    problem = None
    if d.main:
        try:
            problem = _prepare(parts, key, settings, say)
        except OSError as err:
            problem = f"can't write the bench to {parts.parent}: {err.strerror or err}"
    problem = _broadcast(problem, d)  # also: the others look only after rank 0 has cleared
    if problem:
        raise BenchError(problem)
    seen = [b for b in range(n_batches) if _batch_file(parts, b).is_file()]
    everyone = _gather(seen, d)  # every rank must call it
    done = sorted(set().union(*everyone)) if d.main else None
    return set(_broadcast(done, d))


def _prepare(parts: Path, key: str, settings: dict, say: Callable[[str], None]) -> str | None:
    if parts.parent.exists() and not parts.parent.is_dir():
        return f"--out {parts.parent} is a file, not a folder"
    old = None
    with contextlib.suppress(OSError, ValueError):
        old = json.loads((parts / "settings.json").read_text()).get("key")
    if old != key and parts.exists():
        if old is not None:
            say(f"{parts.parent}: the settings changed since the last run: starting over")
        shutil.rmtree(parts)
    _atomic_write(parts / "settings.json", json.dumps({"key": key, **settings}).encode())
    return None


def write_batch(
    parts: Path,
    b: int,
    values: np.ndarray,
    indices: list[int],
    targets: np.ndarray,
    bad: list[tuple[int, str]],
) -> None:
    """Batch `b`'s rows: `values` (rows, metrics, images) float64, the images' dataset indices
    and target classes, and the images that couldn't be read with why; written atomically."""
    data = _npz_bytes(
        values=values,
        indices=np.array(indices, np.int64),
        targets=targets,
        skipped_index=np.array([i for i, _ in bad], np.int64),
        skipped_reason=np.array([why for _, why in bad], dtype=str),
    )
    _atomic_write(_batch_file(parts, b), data)


def merge(parts: Path, n_batches: int, shape: tuple[int, int], d: _Dist) -> dict | None:
    """Every batch's rows on rank 0 (each rank sends those it can read), concatenated in batch
    order: `values` (rows, metrics, N), `indices`, `targets`, `skipped` [{index, reason}];
    None on the other ranks. Raises BenchError (on rank 0) for a batch missing or damaged."""
    own = {}
    for b in range(n_batches):
        part = _load_npz(_batch_file(parts, b))
        if part is not None:
            own[b] = part
    gathered = _gather(own, d)
    if not d.main:
        return None
    got = {b: p for g in gathered for b, p in g.items()}
    missing = [b for b in range(n_batches) if b not in got]
    if missing:
        raise BenchError(f"batch {missing[0]} in {parts} is missing or damaged: run again")
    arrays = [got[b] for b in range(n_batches)]
    values = np.concatenate([a["values"] for a in arrays], axis=2)  # (R, M, N)
    if values.shape[:2] != shape:
        raise BenchError(f"the working files in {parts} don't fit these settings: run again")
    skipped = [
        {"index": int(i), "reason": str(why)}
        for a in arrays
        for i, why in zip(a["skipped_index"], a["skipped_reason"], strict=True)
    ]
    return {
        "values": values,
        "indices": np.concatenate([a["indices"] for a in arrays]).astype(np.int64),
        "targets": np.concatenate([a["targets"] for a in arrays]).astype(np.int64),
        "skipped": skipped,
    }
