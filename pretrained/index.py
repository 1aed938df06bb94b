"""Index a workspace: every image's prediction, and each class's mean |∂logit_label/∂x|.

    python -m pretrained.index --model net.pt --data images/ --out W [--resize 256 --crop 224
        --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225] [--architecture resnet18] [--grey]
        [--batch-size 64] [--workers 2] [--threads N] [--predictions-only]
    python -m pretrained.index --config workspace.toml --out W
    torchrun --nproc-per-node 2 -m pretrained.index … (the same, on N processes or nodes)

It writes, beside its own working files:

- `W/predictions.csv`: one row per image, `path,label,predicted,p_predicted,p_label`
  (class indices; path as found under the data folder);
- `W/summary.npz`: `mean_abs_grad_by_class` `(K, C, H, W)` float64, the mean of
  |∂logit_label/∂x| over each class's own images (NaN for a class without images), `counts`
  `(K,)`, `confusion` `(K, K)` (row: true class), and for K ≤ 20 `mean_abs_grad_all`
  `(K, C, H, W)`, the mean of |∂logit_c/∂x| of every class over all images;
- `W/top5.npz`: `indices` and `probabilities` `(N, 5)` of each image's five best classes;
- `W/manifest.json`: what was indexed (content hashes of the model, of every image file and of
  the settings), what was skipped and why, and how long it took; `W/workspace.toml`, the
  settings.

**Resumable.** The images go in batches; a rank's batches go in chunks, each chunk's rows are
written as soon as it is done, and the float64 sums are checkpointed every
`--checkpoint-seconds`. An interrupted run continues from its last checkpoint; a finished one
is reused when the model, the data and the settings are unchanged.

**Past one machine**, under `torchrun` (gloo on CPU, NCCL on CUDA, picked from the device):
global batch b goes to rank b mod N, so no image is read twice and none is dropped whatever N
is, and every image is in the same batch as in a one-process run. Each rank keeps only its
own sums and rows; at the end the sums are all-reduced (float64, one tensor per output), the
rows and skipped files gathered to rank 0, which writes the merged files. Each image file is
hashed by the rank that reads it. Never imports streamlit.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import io
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import saliency

from . import gate
from .images import ImageError, decode_image
from .text import csv_text, output_key
from .workspace import (
    Item,
    Preprocessing,
    WorkspaceConfig,
    WorkspaceError,
    data_root,
    file_digest,
    list_items,
    load_model,
    read_bytes,
    read_image,
)

__all__ = ["ALL_CLASSES_UP_TO", "IndexResult", "index", "main"]

ALL_CLASSES_UP_TO = 20  # K at most this: also the mean over all images of every class
FORMAT_VERSION = 1
TOP = 5


# --- distributed plumbing (torchrun) -----------------------------------------------------------


@dataclass(frozen=True)
class _Dist:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup(device: str | None) -> _Dist:
    """One process, or a torchrun group (gloo on CPU, NCCL on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend)
    return _Dist(rank, world, dev)


def _all_reduce(t: torch.Tensor, d: _Dist) -> torch.Tensor:
    """The sum over ranks, on the CPU (NCCL reduces CUDA tensors, gloo CPU ones)."""
    if d.world == 1:
        return t.cpu()
    moved = t.to(d.device)
    torch.distributed.all_reduce(moved)
    return moved.cpu()


def _gather(obj: Any, d: _Dist) -> list[Any]:
    """Every rank's `obj` on rank 0 (in rank order); [obj] on one process; [] on others."""
    if d.world == 1:
        return [obj]
    out = [None] * d.world if d.main else None
    torch.distributed.gather_object(obj, out, dst=0)
    return out if d.main else []


def _broadcast(obj: Any, d: _Dist) -> Any:
    if d.world == 1:
        return obj
    box = [obj if d.main else None]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


# --- small helpers ------------------------------------------------------------------------------


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _load_npz(path: Path) -> dict[str, np.ndarray] | None:
    """A working file, or None when it is missing or damaged (then it is recomputed)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except Exception:  # noqa: BLE001 - a half-written or damaged file is simply redone
        return None


class _Progress:
    """`done / total images · rate · ETA` on one line of stderr, for rank 0."""

    def __init__(self, total: int, enabled: bool, world: int, verb: str = "indexing") -> None:
        self.total, self.enabled, self.world, self.verb = total, enabled, world, verb
        self.start = time.perf_counter()
        self.last = 0.0

    def __call__(self, done: int, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not final and now - self.last < 0.5:
            return
        self.last = now
        done = min(self.total, done * self.world)  # rank 0 sees its share
        rate = done / max(now - self.start, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else math.inf
        eta_text = str(dt.timedelta(seconds=round(eta))) if math.isfinite(eta) else "?"
        print(
            f"\r  {self.verb}: {done:,} / {self.total:,} images · {rate:,.0f} images/s · ETA "
            f"{eta_text}   ",
            end="\n" if final else "",
            file=sys.stderr,
            flush=True,
        )


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


# --- the index ----------------------------------------------------------------------------------


@dataclass
class IndexResult:
    """What `index` did: the manifest it wrote (or reused) and where."""

    out: Path
    manifest: dict
    reused: bool = False


def _settings_hash(config: WorkspaceConfig, classes: Sequence[str], outputs: Any) -> str:
    d = config.to_dict()
    d.pop("model"), d.pop("data")
    d["classes"] = list(classes)
    d["outputs"] = outputs
    d["format"] = FORMAT_VERSION
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


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
        from .model_files import error_line

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


def index(
    config: WorkspaceConfig,
    out: str | os.PathLike,
    *,
    batch_size: int = 64,
    workers: int = 0,
    chunk_batches: int = 16,
    checkpoint_seconds: float = 30.0,
    predictions_only: bool = False,
    all_classes: bool | None = None,
    device: str | None = None,
    threads: int | None = None,
    progress: bool = True,
    stop_after_chunks: int | None = None,
    log: Callable[[str], Any] | None = None,
) -> IndexResult:
    """Index `config`'s data with its model into folder `out` (see the module docstring).

    `all_classes`: also the mean over all images of every class (K backward passes a batch
    instead of one); None means when K <= 20. `predictions_only`: no gradients at all.
    `stop_after_chunks` stops this rank after that many chunks, as an interrupted run would
    (for tests). Raises WorkspaceError for a problem with the model, the data or the settings.
    """
    say = log or (lambda text: print(text, file=sys.stderr, flush=True))
    if threads:
        torch.set_num_threads(threads)
    d = _setup(device)
    out = Path(out)
    items, classes, problems = list_items(config)
    k = len(classes)
    if all_classes is None:
        all_classes = k <= ALL_CLASSES_UP_TO
    all_classes = all_classes and not predictions_only
    root = data_root(config)
    pre = config.preprocessing
    model_bytes = Path(config.model).read_bytes() if Path(config.model).is_file() else None
    if model_bytes is None:
        raise WorkspaceError(f"the model file {config.model} does not exist")
    model_sha = hashlib.sha256(model_bytes).hexdigest()
    settings_sha = _settings_hash(config, classes, (predictions_only, all_classes))
    listing_sha = hashlib.sha256(
        json.dumps([(i.path, i.label) for i in items]).encode()
    ).hexdigest()
    key = {"model": model_sha, "settings": settings_sha, "listing": listing_sha}

    manifest_path = out / "manifest.json"
    old = None
    if manifest_path.is_file():
        with contextlib.suppress(OSError, ValueError):
            old = json.loads(manifest_path.read_text())
    if old and old.get("status") == "complete" and old.get("key", {}) == key:
        # The same model, settings and file list: the same contents too?
        data_sha = _data_hash_check(root, items, d)
        if data_sha == old.get("data_sha256"):
            if d.main:
                say(f"{out}: up to date (same model, data and settings); nothing to do.")
            return IndexResult(out, old, reused=True)

    parts = out / ".parts" / f"world{d.world}-rank{d.rank}"
    state_path = parts / "state.npz"
    resume = bool(old) and old.get("key") == key and old.get("status") == "running"
    if d.main and not resume and (out / ".parts").exists():
        import shutil

        shutil.rmtree(out / ".parts")
    if d.world > 1:
        torch.distributed.barrier()

    model = load_model(config, k, device=d.device, data=model_bytes)
    shape = _first_shape(root, items, pre)
    c, h, w = shape
    n_batches = math.ceil(len(items) / batch_size)
    mine = [b for b in range(n_batches) if b % d.world == d.rank]
    chunks = [mine[i : i + chunk_batches] for i in range(0, len(mine), chunk_batches)]

    # Sums and what is done: from the last checkpoint when resuming.
    # Sums live on the device (a 1000-class summary of 224 x 224 RGB maps is 1.2 GB).
    dims = 0 if predictions_only else c * h * w
    state = _load_npz(state_path) if resume else None
    if state is not None and state["abs_sums"].shape == (k, dims):
        done_chunks = set(int(i) for i in state["chunks_done"])
        abs_sums = torch.from_numpy(state["abs_sums"]).to(d.device)
        all_sums = torch.from_numpy(state["all_sums"]).to(d.device) if all_classes else None
        counts = torch.from_numpy(state["counts"])
        confusion = torch.from_numpy(state["confusion"])
    else:
        done_chunks = set()
        abs_sums = torch.zeros(k, dims, dtype=torch.float64, device=d.device)
        all_sums = (
            torch.zeros(k, dims, dtype=torch.float64, device=d.device) if all_classes else None
        )
        counts = torch.zeros(k, dtype=torch.float64)
        confusion = torch.zeros(k, k, dtype=torch.float64)
    if d.main:
        manifest = {
            "format": FORMAT_VERSION,
            "status": "running",
            "key": key,
            "model": {"path": str(config.model), "sha256": model_sha, "kind": config.kind,
                      "architecture": config.architecture},
            "data": {"path": str(config.data), "n_listed": len(items)},
            "classes": list(classes),
            "preprocessing": {**config.to_dict()["preprocessing"], "describe": pre.describe()},
            "input_shape": [c, h, w],
            "world_size": d.world,
        }  # fmt: skip
        _atomic_write(manifest_path, json.dumps(manifest, indent=2).encode())
        (out / "workspace.toml").write_text(config.to_toml())
        say(
            f"indexing {len(items):,} images of {k} classes ({pre.describe()}) with "
            f"{config.model} on {d.world} process(es), {d.device}"
            + (f"; resuming after {len(done_chunks)} chunks" if done_chunks else "")
        )

    bar = _Progress(len(items), progress and d.main, d.world)
    images_done = sum(
        min(batch_size, len(items) - b * batch_size) for i in done_chunks for b in chunks[i]
    )
    images_before = images_done
    # The model on a batch of real images before the clock starts, the way the loop will call
    # it: it must return (B, K) scores, and its first calls (which import and compile what the
    # graph and autograd need, and let TorchScript specialise for this batch) are not timed.
    probe = [items[i] for i in range(min(len(items), batch_size))]
    warm = [torch.from_numpy(a) for a in _readable(root, probe, pre, shape)]
    if not warm:
        raise WorkspaceError(f"none of the first {len(probe)} images could be read")
    warm_x = torch.stack(warm).to(d.device)
    _check_outputs(model, warm_x, k)
    for _ in range(2):
        if predictions_only:
            with torch.no_grad():
                model(warm_x)
        elif all_classes:
            saliency.jacobian(model, warm_x)
        else:
            saliency.gradients(model, warm_x, 0, return_outputs=True)
    last_checkpoint = time.perf_counter()
    start = time.perf_counter()
    todo = [ci for ci in range(len(chunks)) if ci not in done_chunks]
    stopped = stop_after_chunks is not None and any(ci >= stop_after_chunks for ci in todo)
    if stop_after_chunks is not None:
        todo = [ci for ci in todo if ci < stop_after_chunks]
    # One loader for the whole run (its worker processes start once), batch by global batch.
    batches = [
        list(range(b * batch_size, min((b + 1) * batch_size, len(items))))
        for ci in todo
        for b in chunks[ci]
    ]
    loader = torch.utils.data.DataLoader(
        _Images(root, items, list(range(len(items))), pre, shape),
        batch_sampler=batches,
        num_workers=workers,
        collate_fn=_collate,
    )
    batch_iter = iter(loader)
    for ci in todo:
        rows: dict[str, list] = {k_: [] for k_ in ("index", "pred", "p_pred", "p_label")}
        top_i, top_p, skipped, digests = [], [], [], {}
        for _ in chunks[ci]:
            x, labels, idx, digest, bad = next(batch_iter)
            labels = torch.tensor(labels, dtype=torch.long)
            idx = torch.tensor(idx, dtype=torch.long)
            digests.update(digest)
            skipped += bad
            images_done += len(labels) + len(bad)
            if x is None:
                continue
            x = x.to(d.device)
            y = labels.to(d.device)
            if predictions_only:
                with torch.no_grad():
                    logits = model(x)
            elif all_classes:
                J = saliency.jacobian(model, x)  # (B, K, C, H, W)
                g = J.abs().reshape(x.shape[0], k, -1).double()  # (B, K, D)
                all_sums += g.sum(0)
                abs_sums.index_add_(0, y, g[torch.arange(len(y), device=g.device), y])
                with torch.no_grad():
                    logits = model(x)
            else:
                grad, logits = saliency.gradients(model, x, y, return_outputs=True)
                abs_sums.index_add_(0, y, grad.reshape(len(y), -1).double())
            probs = logits.float().softmax(1).cpu()
            pred = probs.argmax(1)
            ones = torch.ones(len(labels), dtype=torch.float64)
            counts.index_add_(0, labels, ones)
            confusion.index_put_((labels, pred), ones, accumulate=True)
            p_top, i_top = probs.topk(min(TOP, k), dim=1)
            rows["index"].append(idx)
            rows["pred"].append(pred)
            rows["p_pred"].append(probs.gather(1, pred[:, None])[:, 0])
            rows["p_label"].append(probs.gather(1, labels[:, None])[:, 0])
            top_i.append(i_top.int())
            top_p.append(p_top)
            bar(images_done)
        cat = lambda parts_, dtype: torch.cat(parts_).numpy() if parts_ else np.zeros(0, dtype)  # noqa: E731
        _atomic_write(
            parts / f"chunk{ci:06d}.npz",
            _npz_bytes(
                index=cat(rows["index"], np.int64),
                pred=cat(rows["pred"], np.int64),
                p_pred=cat(rows["p_pred"], np.float32),
                p_label=cat(rows["p_label"], np.float32),
                top_i=torch.cat(top_i).numpy() if top_i else np.zeros((0, min(TOP, k)), np.int32),
                top_p=torch.cat(top_p).numpy() if top_p else np.zeros((0, min(TOP, k)), np.float32),
                skipped_index=np.array([s[0] for s in skipped], np.int64),
                skipped_reason=np.array([s[1] for s in skipped], dtype=str),
                digest_index=np.array(list(digests), np.int64),
                digest=np.array(list(digests.values()), dtype=str),
            ),
        )
        done_chunks.add(ci)
        if time.perf_counter() - last_checkpoint > checkpoint_seconds:
            _checkpoint(state_path, done_chunks, abs_sums, all_sums, counts, confusion)
            last_checkpoint = time.perf_counter()
    _checkpoint(state_path, done_chunks, abs_sums, all_sums, counts, confusion)
    if stopped:
        return IndexResult(out, {"status": "stopped"})
    bar(len(items) // d.world + 1, final=True)
    seconds = time.perf_counter() - start
    read_now = images_done - images_before  # images this run read (a resumed run: the rest)

    # Merge: sums all-reduced, rows and skipped files gathered to rank 0.
    abs_sums = _all_reduce(abs_sums, d)
    counts = _all_reduce(counts, d)
    confusion = _all_reduce(confusion, d)
    if all_sums is not None:
        all_sums = _all_reduce(all_sums, d)
    own_rows = [_load_npz(parts / f"chunk{ci:06d}.npz") for ci in range(len(chunks))]
    if any(r is None for r in own_rows):
        raise WorkspaceError(f"a working file in {parts} is missing or damaged: index again")
    gathered = _gather(own_rows, d)
    timing = _gather((seconds, read_now), d)
    if not d.main:
        if d.world > 1:
            torch.distributed.barrier()
        return IndexResult(out, {})
    rows = [r for rank_rows in gathered for r in rank_rows]
    result = _write_outputs(
        out, items, classes, rows, abs_sums, all_sums, counts, confusion, (c, h, w),
        predictions_only,
    )  # fmt: skip
    skipped, digests = [], {}
    for r in rows:
        for i, why in zip(r["skipped_index"], r["skipped_reason"], strict=True):
            skipped.append({"path": items[int(i)].path, "reason": str(why)})
        digests.update(zip(r["digest_index"].tolist(), r["digest"].tolist(), strict=True))
    data_sha = _combine_digests(items, digests)
    n_done = int(counts.sum())
    manifest.update(
        status="complete",
        data_sha256=data_sha,
        n_images=n_done,
        skipped=problems + skipped,
        accuracy=float(np.trace(confusion.numpy()) / max(n_done, 1)),
        seconds=max(t for t, _ in timing),
        images_read_this_run=sum(n for _, n in timing),
        images_per_second=sum(n for _, n in timing) / max(max(t for t, _ in timing), 1e-9),
        finished=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        outputs=result,
        predictions_only=predictions_only,
    )
    _atomic_write(manifest_path, json.dumps(manifest, indent=2).encode())
    if d.world > 1:
        torch.distributed.barrier()
    say(
        f"done: {n_done:,} images in {manifest['seconds']:.1f} s "
        f"({manifest['images_per_second']:,.0f} images/s), accuracy {manifest['accuracy']:.2%}, "
        f"{len(manifest['skipped'])} skipped -> {out}"
    )
    return IndexResult(out, manifest)


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


def _combine_digests(items: list[Item], digests: dict[int, str]) -> str:
    h = hashlib.sha256()
    for i, item in enumerate(items):
        h.update(f"{item.path}\t{item.label}\t{digests.get(i, 'unreadable')}\n".encode())
    return h.hexdigest()


def _data_hash_check(root: Path, items: list[Item], d: _Dist) -> str:
    """The combined content hash of every image file (each rank hashes its share)."""
    mine = {}
    for i in range(d.rank, len(items), d.world):
        with contextlib.suppress(OSError):
            mine[i] = file_digest(root / items[i].path)
    parts = _gather(mine, d)
    combined = (
        _combine_digests(items, {k: v for p in parts for k, v in p.items()}) if d.main else ""
    )
    return _broadcast(combined, d)


def _write_outputs(
    out, items, classes, rows, abs_sums, all_sums, counts, confusion, shape, predictions_only
) -> dict:
    k = len(classes)
    index = np.concatenate([r["index"] for r in rows]) if rows else np.zeros(0, np.int64)
    order = np.argsort(index, kind="stable")
    cols = {
        name: np.concatenate([r[name] for r in rows])[order]
        for name in ("pred", "p_pred", "p_label")
    }
    top_i = np.concatenate([r["top_i"] for r in rows])[order]
    top_p = np.concatenate([r["top_p"] for r in rows])[order]
    index = index[order]
    rows = [["path", "label", "predicted", "p_predicted", "p_label"]]
    for j, i in enumerate(index):
        item = items[int(i)]
        rows.append(
            [item.path, item.label, int(cols["pred"][j]), f"{float(cols['p_pred'][j]):.6g}",
             f"{float(cols['p_label'][j]):.6g}"]
        )  # fmt: skip
    # A path that starts like a formula gets an apostrophe (taken off when it is read back).
    _atomic_write(out / "predictions.csv", csv_text(rows).encode())
    _atomic_write(out / "top5.npz", _npz_bytes(index=index, indices=top_i, probabilities=top_p))
    summary = {"counts": counts.numpy(), "confusion": confusion.numpy().astype(np.int64)}
    if not predictions_only:
        per = counts.reshape(-1, 1)
        mean = (abs_sums / per.where(per > 0, torch.nan)).reshape(k, *shape)
        summary["mean_abs_grad_by_class"] = mean.numpy()
        if all_sums is not None:
            summary["mean_abs_grad_all"] = (all_sums / counts.sum()).reshape(k, *shape).numpy()
    _atomic_write(out / "summary.npz", _npz_bytes(**summary))
    return {
        "predictions": "predictions.csv",
        "summary": "summary.npz",
        "top5": "top5.npz",
        "summary_arrays": sorted(summary),
    }


# --- the command line ---------------------------------------------------------------------------


def _numbers(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas, got {text!r}"
        ) from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pretrained.index",
        description="Index a workspace: predictions and each class's mean |d logit / dx|.",
    )
    p.add_argument("--config", help="a workspace TOML file (the flags below override it)")
    p.add_argument(
        "--model",
        help="torch.export program, TorchScript, ONNX, state dict or .safetensors weights",
    )
    p.add_argument("--data", help="an ImageFolder tree or a CSV of path,label")
    p.add_argument("--out", required=True, help="the workspace folder to write")
    p.add_argument(
        "--kind", choices=("auto", "torchscript", "export", "state_dict", "onnx", "safetensors")
    )
    p.add_argument(
        "--architecture",
        "--arch",
        dest="architecture",
        help="for weights (a state dict or .safetensors file): a torchvision classifier "
        "(resnet18, …), a timm model (when timm is installed) or the registry's (cnn, …)",
    )
    p.add_argument("--classes", help="a text file of class names, one per line, in index order")
    p.add_argument(
        "--output",
        help="for a model returning a tuple, named tuple or dict: the entry that holds the "
        "class scores, by position (0) or name (logits); by default the only (N, K) entry",
    )
    p.add_argument("--resize", type=int, help="resize the shorter side to this many pixels")
    p.add_argument("--crop", type=int, help="centre crop to this many pixels square")
    colour = p.add_mutually_exclusive_group()
    colour.add_argument("--grey", action="store_const", const=1, dest="channels")
    colour.add_argument("--rgb", action="store_const", const=3, dest="channels")
    p.add_argument("--mean", type=_numbers, help="per channel, e.g. 0.485,0.456,0.406")
    p.add_argument("--std", type=_numbers, help="per channel, e.g. 0.229,0.224,0.225")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--chunk-batches", type=int, default=16, help="batches per resumable chunk")
    p.add_argument("--checkpoint-seconds", type=float, default=30.0)
    p.add_argument("--threads", type=int, help="torch threads per process")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: CUDA when there is one)")
    p.add_argument("--predictions-only", action="store_true", help="skip the gradient sums")
    p.add_argument(
        "--own-class-only",
        action="store_true",
        help="for K <= 20 too: skip the mean of every class over all images (K backward passes)",
    )
    p.add_argument(
        "--max-model-mb",
        type=int,
        help="the largest model this reads, in MB (default: this machine's memory; a server "
        f"reads {gate.MAX_MODEL_BYTES // 2**20} MB at most)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--stop-after-chunks", type=int, help=argparse.SUPPRESS)  # tests: interrupt
    return p


def config_from_args(args: argparse.Namespace) -> WorkspaceConfig:
    config = WorkspaceConfig.from_toml(args.config) if args.config else None
    if config is None:
        if not args.model or not args.data:
            raise WorkspaceError("give --model and --data, or --config")
        config = WorkspaceConfig(model=args.model, data=args.data)
    changes: dict[str, Any] = {}
    for name in ("model", "data", "kind", "architecture"):
        if getattr(args, name, None):
            changes[name] = getattr(args, name)
    if getattr(args, "output", None):
        changes["output"] = output_key(args.output)
    if args.classes:
        try:
            names = [ln.strip() for ln in Path(args.classes).read_text().splitlines() if ln.strip()]
        except OSError as err:
            raise WorkspaceError(f"can't read {args.classes}: {err.strerror}") from None
        changes["classes"] = tuple(names)
    pre = config.preprocessing
    pre_changes = {
        name: getattr(args, name)
        for name in ("resize", "crop", "channels", "mean", "std")
        if getattr(args, name) is not None
    }
    if pre_changes:
        merged = {**{f: getattr(pre, f) for f in ("resize", "crop", "channels", "mean", "std")},
                  **pre_changes}  # fmt: skip
        changes["preprocessing"] = Preprocessing(**merged)
    return config.with_(**changes)


def _memory_bytes() -> int:
    """This machine's physical memory: the command line's only bound on a model's size."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 2**62


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    max_bytes = args.max_model_mb * 2**20 if args.max_model_mb else _memory_bytes()
    try:
        config = config_from_args(args)
        with gate.max_model_bytes(max_bytes):  # the user's own machine: no server's bound
            result = index(
                config,
                args.out,
                batch_size=args.batch_size,
                workers=args.workers,
                chunk_batches=args.chunk_batches,
                checkpoint_seconds=args.checkpoint_seconds,
                predictions_only=args.predictions_only,
                all_classes=False if args.own_class_only else None,
                device=args.device,
                threads=args.threads,
                progress=not args.quiet,
                stop_after_chunks=args.stop_after_chunks,
            )
    except WorkspaceError as err:
        print(f"pretrained.index: {err}", file=sys.stderr)
        return 2
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0 if result.manifest.get("status") in ("complete", None) or result.reused else 3


if __name__ == "__main__":
    sys.exit(main())
