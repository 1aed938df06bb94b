"""One rank's part of `python -m workspace.index`: the images of its batches read in parallel,
the model checked and warmed on a real batch, and the loop that adds each batch to the float64
sums and writes each chunk's rows as soon as it is done (`chunkNNNNNN.npz`), checkpointing the
sums (`state.npz`) every so often, so that an interrupted run resumes where it stopped.

`_Run` is what a run indexes, how and on which rank; `workspace.index` plans it, resumes,
runs this loop and merges the ranks. Never imports streamlit.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import saliency
from sandbox.images import ImageError, decode_image
from workspace import (
    Item,
    Preprocessing,
    WorkspaceConfig,
    WorkspaceError,
    read_bytes,
    read_image,
)

from .ranks import _atomic_write, _Dist, _load_npz, _npz_bytes, _Progress

TOP = 5  # each image's best classes kept in top5.npz


# --- what a run indexes -------------------------------------------------------------------------


@dataclass
class _Run:
    """What one run indexes, how, on which rank, and the key that says whether a run in the
    same folder did (or began) the same work."""

    config: WorkspaceConfig
    out: Path
    d: _Dist
    items: list[Item]
    classes: Sequence[str]
    problems: list[dict]
    root: Path
    model_bytes: bytes
    model_sha: str
    key: dict[str, str]
    predictions_only: bool
    all_classes: bool
    say: Callable[[str], Any]

    @property
    def k(self) -> int:
        return len(self.classes)

    @property
    def pre(self) -> Preprocessing:
        return self.config.preprocessing

    @property
    def manifest_path(self) -> Path:
        return self.out / "manifest.json"

    @property
    def parts(self) -> Path:
        return self.out / ".parts" / f"world{self.d.world}-rank{self.d.rank}"


# --- reading images in parallel -----------------------------------------------------------------


class _Images(torch.utils.data.Dataset):
    """The images of some global batches: `(x or None, label, index, error)` per image."""

    def __init__(
        self, root: Path, items: list[Item], indices: list[int], pre: Preprocessing, shape
    ) -> None:
        self.root, self.items, self.indices, self.pre, self.shape = (
            root,
            items,
            indices,
            pre,
            shape,
        )

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        index = self.indices[i]
        item = self.items[index]
        digest = ""
        try:
            data = read_bytes(self.root, item)
            digest = hashlib.sha256(data).hexdigest()  # of the very bytes decoded
            x = self.pre(decode_image(data, max_bytes=len(data) + 1))
            if tuple(x.shape) != tuple(self.shape):
                raise ImageError(
                    f"its size {x.shape[2]} × {x.shape[1]} differs from the data set's "
                    f"{self.shape[2]} × {self.shape[1]}: index with --resize and --crop"
                )
            return torch.from_numpy(x), item.label, index, digest, ""
        except (ImageError, OSError) as err:
            return None, item.label, index, digest, str(err)


def _collate(batch):
    """One batch: the images stacked; labels and indices as plain lists (small values travel
    from a loader worker inline, while every tensor costs a shared-memory handle)."""
    good = [b for b in batch if b[0] is not None]
    x = torch.stack([b[0] for b in good]) if good else None
    labels = [b[1] for b in good]
    indices = [b[2] for b in good]
    digests = {b[2]: b[3] for b in batch if b[3]}
    bad = [(b[2], b[4]) for b in batch if b[0] is None]
    return x, labels, indices, digests, bad


def _first_shape(root: Path, items: list[Item], pre: Preprocessing) -> tuple[int, int, int]:
    for item in items[:1000]:
        try:
            return tuple(read_image(root, item, pre).shape)
        except (ImageError, OSError):
            continue
    raise WorkspaceError("none of the first 1,000 images could be read")


def _readable(root: Path, items: list[Item], pre: Preprocessing, shape) -> list[np.ndarray]:
    out = []
    for item in items:
        try:
            a = read_image(root, item, pre)
        except (ImageError, OSError):
            continue
        if tuple(a.shape) == tuple(shape):
            out.append(a)
    return out


def _check_outputs(model, x: torch.Tensor, k: int) -> None:
    """Refuse a model whose output on a real batch is not `(B, K)` finite scores."""
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as err:  # noqa: BLE001 - the model's own failure, reported plainly
        from sandbox.model_files import error_line

        raise WorkspaceError(
            f"the model fails on a batch of shape {tuple(x.shape)}: {error_line(err)}"
        ) from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise WorkspaceError(
            f"the model returns {shape} for a batch of {x.shape[0]}; expected ({x.shape[0]}, K)"
        )
    if out.shape[1] != k:
        raise WorkspaceError(
            f"the model returns {out.shape[1]} scores per image, but the data has {k} classes"
        )


# --- this rank's batches ------------------------------------------------------------------------


def _warm_up(run: _Run, model, shape, batch_size: int) -> None:
    """The model on a batch of real images before the clock starts, the way the loop will call
    it: it must return (B, K) scores, and its first calls (which import and compile what the
    graph and autograd need, and let TorchScript specialise for this batch) are not timed."""
    probe = [run.items[i] for i in range(min(len(run.items), batch_size))]
    warm = [torch.from_numpy(a) for a in _readable(run.root, probe, run.pre, shape)]
    if not warm:
        raise WorkspaceError(f"none of the first {len(probe)} images could be read")
    warm_x = torch.stack(warm).to(run.d.device)
    _check_outputs(model, warm_x, run.k)
    for _ in range(2):
        if run.predictions_only:
            with torch.no_grad():
                model(warm_x)
        elif run.all_classes:
            saliency.jacobian(model, warm_x)
        else:
            saliency.gradients(model, warm_x, 0, return_outputs=True)


@dataclass
class _Sums:
    """This rank's float64 sums and the chunks they hold. The gradient sums live on the device
    (a 1000-class summary of 224 x 224 RGB maps is 1.2 GB)."""

    done: set[int]
    abs_sums: torch.Tensor
    all_sums: torch.Tensor | None
    counts: torch.Tensor
    confusion: torch.Tensor

    @classmethod
    def resumed(cls, run: _Run, shape, resume: bool) -> _Sums:
        """From the last checkpoint when resuming (and it fits), else zeros."""
        k, dev = run.k, run.d.device
        dims = 0 if run.predictions_only else math.prod(shape)
        state = _load_npz(run.parts / "state.npz") if resume else None
        if state is not None and state["abs_sums"].shape == (k, dims):
            return cls(
                set(int(i) for i in state["chunks_done"]),
                torch.from_numpy(state["abs_sums"]).to(dev),
                torch.from_numpy(state["all_sums"]).to(dev) if run.all_classes else None,
                torch.from_numpy(state["counts"]),
                torch.from_numpy(state["confusion"]),
            )
        return cls(
            set(),
            torch.zeros(k, dims, dtype=torch.float64, device=dev),
            torch.zeros(k, dims, dtype=torch.float64, device=dev) if run.all_classes else None,
            torch.zeros(k, dtype=torch.float64),
            torch.zeros(k, k, dtype=torch.float64),
        )

    def checkpoint(self, path: Path) -> None:
        _checkpoint(path, self.done, self.abs_sums, self.all_sums, self.counts, self.confusion)


def _checkpoint(path, done, abs_sums, all_sums, counts, confusion) -> None:
    arrays = {
        "chunks_done": np.array(sorted(done), np.int64),
        "abs_sums": abs_sums.cpu().numpy(),
        "counts": counts.numpy(),
        "confusion": confusion.numpy(),
    }
    if all_sums is not None:
        arrays["all_sums"] = all_sums.cpu().numpy()
    _atomic_write(path, _npz_bytes(**arrays))


class _ChunkRows:
    """One chunk's per-image rows, skipped files and file digests, as `chunkNNNNNN.npz`."""

    def __init__(self, k: int) -> None:
        self.top = min(TOP, k)
        self.rows: dict[str, list] = {k_: [] for k_ in ("index", "pred", "p_pred", "p_label")}
        self.top_i: list[torch.Tensor] = []
        self.top_p: list[torch.Tensor] = []
        self.skipped: list[tuple[int, str]] = []
        self.digests: dict[int, str] = {}

    def add(self, idx, labels, probs, pred) -> None:
        p_top, i_top = probs.topk(self.top, dim=1)
        self.rows["index"].append(idx)
        self.rows["pred"].append(pred)
        self.rows["p_pred"].append(probs.gather(1, pred[:, None])[:, 0])
        self.rows["p_label"].append(probs.gather(1, labels[:, None])[:, 0])
        self.top_i.append(i_top.int())
        self.top_p.append(p_top)

    def npz(self) -> bytes:
        cat = lambda parts_, dtype: torch.cat(parts_).numpy() if parts_ else np.zeros(0, dtype)  # noqa: E731
        top_i, top_p, top = self.top_i, self.top_p, self.top
        return _npz_bytes(
            index=cat(self.rows["index"], np.int64),
            pred=cat(self.rows["pred"], np.int64),
            p_pred=cat(self.rows["p_pred"], np.float32),
            p_label=cat(self.rows["p_label"], np.float32),
            top_i=torch.cat(top_i).numpy() if top_i else np.zeros((0, top), np.int32),
            top_p=torch.cat(top_p).numpy() if top_p else np.zeros((0, top), np.float32),
            skipped_index=np.array([s[0] for s in self.skipped], np.int64),
            skipped_reason=np.array([s[1] for s in self.skipped], dtype=str),
            digest_index=np.array(list(self.digests), np.int64),
            digest=np.array(list(self.digests.values()), dtype=str),
        )


class _Loop:
    """This rank's chunks, batch by batch: the sums grow, each chunk's rows are written as soon
    as it is done, and the sums are checkpointed every `checkpoint_seconds`."""

    def __init__(self, run: _Run, model, shape, sums: _Sums, bar: _Progress, done: int) -> None:
        self.run, self.model, self.shape, self.sums, self.bar = run, model, shape, sums, bar
        self.images_done = done

    def index_chunks(self, chunks, todo, batch_size: int, workers: int, checkpoint_seconds):
        run, sums = self.run, self.sums
        state_path = run.parts / "state.npz"
        last_checkpoint = time.perf_counter()
        # One loader for the whole run (its worker processes start once), batch by global batch.
        n = len(run.items)
        batches = [
            list(range(b * batch_size, min((b + 1) * batch_size, n)))
            for ci in todo
            for b in chunks[ci]
        ]
        loader = torch.utils.data.DataLoader(
            _Images(run.root, run.items, list(range(n)), run.pre, self.shape),
            batch_sampler=batches,
            num_workers=workers,
            collate_fn=_collate,
        )
        batch_iter = iter(loader)
        for ci in todo:
            rows = _ChunkRows(run.k)
            for _ in chunks[ci]:
                self.batch(rows, *next(batch_iter))
            _atomic_write(run.parts / f"chunk{ci:06d}.npz", rows.npz())
            sums.done.add(ci)
            if time.perf_counter() - last_checkpoint > checkpoint_seconds:
                sums.checkpoint(state_path)
                last_checkpoint = time.perf_counter()
        sums.checkpoint(state_path)

    def batch(self, rows: _ChunkRows, x, labels, idx, digest, bad) -> None:
        """One batch into the sums and the chunk's rows."""
        run, sums, model, k = self.run, self.sums, self.model, self.run.k
        labels = torch.tensor(labels, dtype=torch.long)
        idx = torch.tensor(idx, dtype=torch.long)
        rows.digests.update(digest)
        rows.skipped += bad
        self.images_done += len(labels) + len(bad)
        if x is None:
            return
        x = x.to(run.d.device)
        y = labels.to(run.d.device)
        if run.predictions_only:
            with torch.no_grad():
                logits = model(x)
        elif run.all_classes:
            J = saliency.jacobian(model, x)  # (B, K, C, H, W)
            g = J.abs().reshape(x.shape[0], k, -1).double()  # (B, K, D)
            sums.all_sums += g.sum(0)
            sums.abs_sums.index_add_(0, y, g[torch.arange(len(y), device=g.device), y])
            with torch.no_grad():
                logits = model(x)
        else:
            grad, logits = saliency.gradients(model, x, y, return_outputs=True)
            sums.abs_sums.index_add_(0, y, grad.reshape(len(y), -1).double())
        probs = logits.float().softmax(1).cpu()
        pred = probs.argmax(1)
        ones = torch.ones(len(labels), dtype=torch.float64)
        sums.counts.index_add_(0, labels, ones)
        sums.confusion.index_put_((labels, pred), ones, accumulate=True)
        rows.add(idx, labels, probs, pred)
        self.bar(self.images_done)
