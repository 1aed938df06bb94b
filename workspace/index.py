"""Index a workspace: every image's prediction, and each class's mean |∂logit_label/∂x|.

    python -m workspace.index --model net.pt --data images/ --out W [--resize 256 --crop 224
        --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225] [--architecture resnet18] [--grey]
        [--batch-size 64] [--workers 2] [--threads N] [--predictions-only]
    python -m workspace.index --config workspace.toml --out W
    torchrun --nproc-per-node 2 -m workspace.index … (the same, on N processes or nodes)

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

The steps: `_plan` (settings, listing, the resume key), `_up_to_date` / `_clear_parts` / `_Sums`
(what is done), `index_batches._Loop` (this rank's batches), `_merge` (the ranks merged, the
final files); the torchrun plumbing and working files are `ranks.py`.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sandbox import gate
from sandbox.text import csv_text, output_key
from workspace import (
    Item,
    Preprocessing,
    WorkspaceConfig,
    WorkspaceError,
    data_root,
    file_digest,
    list_items,
    load_model,
)

from .index_batches import _first_shape, _Loop, _Run, _Sums, _warm_up
from .ranks import (
    _all_reduce,
    _atomic_write,
    _broadcast,
    _Dist,
    _gather,
    _load_npz,
    _npz_bytes,
    _Progress,
    _setup,
)

__all__ = ["ALL_CLASSES_UP_TO", "IndexResult", "index", "main"]

ALL_CLASSES_UP_TO = 20  # K at most this: also the mean over all images of every class
FORMAT_VERSION = 1


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
    run = _plan(config, Path(out), device, predictions_only, all_classes, say)
    old = _old_manifest(run)
    if _up_to_date(run, old):
        return IndexResult(run.out, old, reused=True)
    resume = _clear_parts(run, old)
    model = load_model(config, run.k, device=run.d.device, data=run.model_bytes)
    shape = _first_shape(run.root, run.items, run.pre)
    n_batches = math.ceil(len(run.items) / batch_size)
    mine = [b for b in range(n_batches) if b % run.d.world == run.d.rank]
    chunks = [mine[i : i + chunk_batches] for i in range(0, len(mine), chunk_batches)]
    sums = _Sums.resumed(run, shape, resume)
    manifest = _start_manifest(run, shape, len(sums.done)) if run.d.main else None

    bar = _Progress(len(run.items), progress and run.d.main, run.d.world)
    images_before = sum(
        min(batch_size, len(run.items) - b * batch_size) for i in sums.done for b in chunks[i]
    )
    _warm_up(run, model, shape, batch_size)
    start = time.perf_counter()
    todo = [ci for ci in range(len(chunks)) if ci not in sums.done]
    stopped = stop_after_chunks is not None and any(ci >= stop_after_chunks for ci in todo)
    if stop_after_chunks is not None:
        todo = [ci for ci in todo if ci < stop_after_chunks]
    loop = _Loop(run, model, shape, sums, bar, images_before)
    loop.index_chunks(chunks, todo, batch_size, workers, checkpoint_seconds)
    if stopped:
        return IndexResult(run.out, {"status": "stopped"})
    bar(len(run.items) // run.d.world + 1, final=True)
    seconds = time.perf_counter() - start
    read_now = loop.images_done - images_before  # this run's images (a resumed run: the rest)
    return _merge(run, sums, len(chunks), shape, manifest, (seconds, read_now))


# --- plan: the settings, the listing, the resume key --------------------------------------------


def _plan(config, out: Path, device, predictions_only: bool, all_classes, say) -> _Run:
    """This rank, the listing, the model's bytes and the key of the work (model, settings and
    file list hashed)."""
    d = _setup(device)
    items, classes, problems = list_items(config)
    k = len(classes)
    if all_classes is None:
        all_classes = k <= ALL_CLASSES_UP_TO
    all_classes = all_classes and not predictions_only
    root = data_root(config)
    model_bytes = Path(config.model).read_bytes() if Path(config.model).is_file() else None
    if model_bytes is None:
        raise WorkspaceError(f"the model file {config.model} does not exist")
    model_sha = hashlib.sha256(model_bytes).hexdigest()
    settings_sha = _settings_hash(config, classes, (predictions_only, all_classes))
    listing_sha = hashlib.sha256(
        json.dumps([(i.path, i.label) for i in items]).encode()
    ).hexdigest()
    key = {"model": model_sha, "settings": settings_sha, "listing": listing_sha}
    return _Run(config, out, d, items, classes, problems, root, model_bytes, model_sha, key,
                predictions_only, all_classes, say)  # fmt: skip


# --- resume: what is done already ---------------------------------------------------------------


def _old_manifest(run: _Run) -> dict | None:
    old = None
    if run.manifest_path.is_file():
        with contextlib.suppress(OSError, ValueError):
            old = json.loads(run.manifest_path.read_text())
    return old


def _up_to_date(run: _Run, old: dict | None) -> bool:
    """A finished index of the same model, settings and file list, and the same contents too?"""
    if not (old and old.get("status") == "complete" and old.get("key", {}) == run.key):
        return False
    data_sha = _data_hash_check(run.root, run.items, run.d)
    if data_sha != old.get("data_sha256"):
        return False
    if run.d.main:
        run.say(f"{run.out}: up to date (same model, data and settings); nothing to do.")
    return True


def _clear_parts(run: _Run, old: dict | None) -> bool:
    """Whether this run resumes an unfinished one of the same work; if not, rank 0 clears the
    working files while the others wait."""
    resume = bool(old) and old.get("key") == run.key and old.get("status") == "running"
    if run.d.main and not resume and (run.out / ".parts").exists():
        import shutil

        shutil.rmtree(run.out / ".parts")
    if run.d.world > 1:
        torch.distributed.barrier()
    return resume


def _start_manifest(run: _Run, shape, n_done: int) -> dict:
    """Rank 0: the manifest of a running index, the settings as `workspace.toml`, one line."""
    config, pre = run.config, run.pre
    manifest = {
        "format": FORMAT_VERSION,
        "status": "running",
        "key": run.key,
        "model": {"path": str(config.model), "sha256": run.model_sha, "kind": config.kind,
                  "architecture": config.architecture},
        "data": {"path": str(config.data), "n_listed": len(run.items)},
        "classes": list(run.classes),
        "preprocessing": {**config.to_dict()["preprocessing"], "describe": pre.describe()},
        "input_shape": list(shape),
        "world_size": run.d.world,
    }  # fmt: skip
    _atomic_write(run.manifest_path, json.dumps(manifest, indent=2).encode())
    (run.out / "workspace.toml").write_text(config.to_toml())
    run.say(
        f"indexing {len(run.items):,} images of {run.k} classes ({pre.describe()}) with "
        f"{config.model} on {run.d.world} process(es), {run.d.device}"
        + (f"; resuming after {n_done} chunks" if n_done else "")
    )
    return manifest


# --- write: merge the ranks, the final files ----------------------------------------------------


def _merge(run: _Run, sums: _Sums, n_chunks: int, shape, manifest, timing) -> IndexResult:
    """Sums all-reduced, rows and skipped files gathered to rank 0, which writes the outputs
    and the finished manifest; `timing` is this rank's (seconds, images read this run)."""
    d, out = run.d, run.out
    abs_sums = _all_reduce(sums.abs_sums, d)
    counts = _all_reduce(sums.counts, d)
    confusion = _all_reduce(sums.confusion, d)
    all_sums = _all_reduce(sums.all_sums, d) if sums.all_sums is not None else None
    own_rows = [_load_npz(run.parts / f"chunk{ci:06d}.npz") for ci in range(n_chunks)]
    if any(r is None for r in own_rows):
        raise WorkspaceError(f"a working file in {run.parts} is missing or damaged: index again")
    gathered = _gather(own_rows, d)
    timing = _gather(timing, d)
    if not d.main:
        if d.world > 1:
            torch.distributed.barrier()
        return IndexResult(out, {})
    rows = [r for rank_rows in gathered for r in rank_rows]
    result = _write_outputs(
        out, run.items, run.classes, rows, abs_sums, all_sums, counts, confusion, tuple(shape),
        run.predictions_only,
    )  # fmt: skip
    skipped, digests = [], {}
    for r in rows:
        for i, why in zip(r["skipped_index"], r["skipped_reason"], strict=True):
            skipped.append({"path": run.items[int(i)].path, "reason": str(why)})
        digests.update(zip(r["digest_index"].tolist(), r["digest"].tolist(), strict=True))
    n_done = int(counts.sum())
    manifest.update(
        status="complete",
        data_sha256=_combine_digests(run.items, digests),
        n_images=n_done,
        skipped=run.problems + skipped,
        accuracy=float(np.trace(confusion.numpy()) / max(n_done, 1)),
        seconds=max(t for t, _ in timing),
        images_read_this_run=sum(n for _, n in timing),
        images_per_second=sum(n for _, n in timing) / max(max(t for t, _ in timing), 1e-9),
        finished=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        outputs=result,
        predictions_only=run.predictions_only,
    )
    _atomic_write(run.manifest_path, json.dumps(manifest, indent=2).encode())
    if d.world > 1:
        torch.distributed.barrier()
    run.say(
        f"done: {n_done:,} images in {manifest['seconds']:.1f} s "
        f"({manifest['images_per_second']:,.0f} images/s), accuracy {manifest['accuracy']:.2%}, "
        f"{len(manifest['skipped'])} skipped -> {out}"
    )
    return IndexResult(out, manifest)


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
        prog="python -m workspace.index",
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


def _exit_code(
    prog: str, errors: type[Exception], work: Callable[[], int], max_model_mb: int | None
) -> int:
    """`work()`'s exit code for `python -m workspace.index` and `workspace.bench`: 2, the
    sentence on stderr, for one of the `errors` that explains itself; the process group of a
    torchrun launch is torn down however it ends, so no rank waits for one that has quit.
    `work` reads models under the user's own machine's bound (`--max-model-mb`, else its
    memory), not a server's."""
    max_bytes = max_model_mb * 2**20 if max_model_mb else _memory_bytes()
    try:
        with gate.max_model_bytes(max_bytes):
            return work()
    except errors as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 2
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    def work() -> int:
        result = index(
            config_from_args(args),
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
        return 0 if result.manifest.get("status") in ("complete", None) or result.reused else 3

    return _exit_code("workspace.index", WorkspaceError, work, args.max_model_mb)


if __name__ == "__main__":
    sys.exit(main())
