"""Which map can I trust, over a data set: the metric bench on N images of every class.

    python -m workspace.bench --model mnist-cnn --methods gradient,integrated_gradients \\
        --per-class 20 --out B [--data fashion-mnist] [--metrics road_morf,road_lerf,...]
        [--controls random,edge,blurred] [--target predicted|label] [--seed 0]
        [--options '{"smoothgrad": {"n_samples": 20}}'] [--metric-options '{...}']
        [--batch-size 32] [--device cpu|cuda] [--threads N]
    python -m workspace.bench --workspace W ... (an indexed workspace: its model and images)
    torchrun --nproc-per-node 2 -m workspace.bench ... (the same, on N processes or nodes)

The images are the first N of each class, in the data set's order (a bundled test set, or the
rows of a workspace's predictions.csv). It writes:

- `B/bench.npz`: the table as `saliency.bench.save_table` stores it (`load_table` reads it
  back as a `Bench`): every image's value under every (method or control, metric), with each
  image's dataset index, label and target class;
- `B/bench.csv`: the table, one row per cell: mean, bootstrap interval, images, rank;
- `B/bench.json`: what was scored (model and weights' sha256, data, methods, metrics, controls,
  options, seed, N per class, images), the methods beaten by a control, and the versions.

**Resumable.** The selected images go in batches of `--batch-size`, numbered once for the
whole run; each finished batch's per-image values are written at once (atomically) to
`B/.parts/`. A re-run of the same command after a kill scores only the batches not written. A
hash of the model, the data and every setting that changes a value is kept beside them: a
run with other settings starts over. `--n-boot` and `--level` change only the summary, so a
re-run with other values re-summarises without scoring anything.

**Past one machine**, under `torchrun` (gloo on CPU, NCCL on CUDA; `workspace.index`'s
plumbing): the batches not yet written are dealt round-robin to the ranks. A batch holds the
same images whatever the number of processes, and image i's random draws come from seed +
its dataset index (`saliency.bench.score`'s `indices`), so N processes give one process's
values; rank 0 gathers every batch's rows and summarises once. Never imports streamlit.

The images' sources, the selection and the resumable, sharded batches are in
`workspace.bench_parts`; this module checks the settings, scores a batch and writes the table.
The dashboard's "Which map can I trust?" page shows such a table once `dashboard.bench_cache.adopt`
has saved it under the page's request (docs/bench.md).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sandbox.text import csv_text

from .bench_parts import (
    BenchError,
    Source,
    merge,
    registry_source,
    resume,
    select,
    settings_key,
    workspace_source,
    write_batch,
)
from .index import _atomic_write, _Dist, _exit_code, _gather, _Progress, _setup

__all__ = ["MAX_IMAGES", "BenchError", "main", "run", "select"]

FORMAT_VERSION = 1
MAX_IMAGES = 20_000  # images per run unless --max-images says more: hours of CPU already
MAX_BATCH = 1024


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    with contextlib.suppress(metadata.PackageNotFoundError):
        out["saliency-dashboard"] = metadata.version("saliency-dashboard")
    return out


def _check_settings(
    methods: Sequence[str],
    metrics: Sequence[str],
    controls: Sequence[str],
    per_class: int,
    batch_size: int,
    target: str,
    options: Any,
    metric_options: Any,
) -> None:
    """Refuse what can't run, before any model or image is read."""
    from saliency.bench import CONTROLS, METRICS
    from saliency.names import METHOD_INFO

    METHODS = tuple(METHOD_INFO)

    if not methods:
        raise BenchError("name at least one method: --methods gradient,integrated_gradients")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise BenchError(f"unknown method {unknown[0]!r}; known methods: {', '.join(METHODS)}")
    if len(set(methods)) != len(methods):
        raise BenchError("a method is named twice in --methods")
    bad = [k for k in metrics if k not in METRICS]
    if bad or not metrics:
        first = f"unknown metric {bad[0]!r}" if bad else "name at least one metric"
        raise BenchError(f"{first}; known metrics: {', '.join(METRICS)}")
    bad = [c for c in controls if c not in CONTROLS]
    if bad:
        raise BenchError(f"unknown control {bad[0]!r}; known controls: {', '.join(CONTROLS)}")
    if per_class < 1:
        raise BenchError(f"--per-class must be at least 1 image per class, got {per_class}")
    if not 1 <= batch_size <= MAX_BATCH:
        raise BenchError(f"--batch-size must be between 1 and {MAX_BATCH}, got {batch_size}")
    if target not in ("predicted", "label"):
        raise BenchError(f"--target must be 'predicted' or 'label', got {target!r}")
    for flag, given, names in (
        ("--options", options, METHODS),
        ("--metric-options", metric_options, METRICS),
    ):
        if not isinstance(given, dict) or not all(isinstance(v, dict) for v in given.values()):
            raise BenchError(
                f"{flag} must be a JSON object of objects, e.g. "
                '{"smoothgrad": {"n_samples": 10}}'
            )
        stray = [n for n in given if n not in names]
        if stray:
            raise BenchError(f"{flag} names {stray[0]!r}, which is not one of {', '.join(names)}")


def run(
    out: str | Path,
    *,
    model: str | None = None,
    workspace: str | None = None,
    data: str | None = None,
    methods: Sequence[str] = ("gradient",),
    metrics: Sequence[str] | None = None,
    controls: Sequence[str] | None = None,
    per_class: int = 10,
    target: str = "predicted",
    seed: int = 0,
    n_boot: int = 1000,
    level: float = 0.95,
    blur_sigma: float = 2.0,
    options: dict | None = None,
    metric_options: dict | None = None,
    batch_size: int = 32,
    max_images: int = MAX_IMAGES,
    device: str | None = None,
    progress: bool = True,
    stop_after_batches: int | None = None,
    log: Any = None,
) -> dict:
    """Score the first `per_class` images of each class (see the module docstring) into `out`;
    returns bench.json's contents ({"status": "stopped"} after `stop_after_batches` batches
    of this rank, as a killed run would stop; for tests). Raises BenchError for bad input."""
    from saliency import bench as B

    say = log or (lambda text: print(text, file=sys.stderr, flush=True))
    metrics = tuple(metrics or B.METRICS)
    controls = tuple(B.CONTROLS if controls is None else controls)
    methods = tuple(methods)
    options, metric_options = options or {}, metric_options or {}
    _check_settings(methods, metrics, controls, per_class, batch_size, target, options,
                    metric_options)  # fmt: skip
    _check_run(model, workspace, data, n_boot, level)
    d = _setup(device)
    out = Path(out)
    src = _source(model, workspace, data, d.device)
    chosen = _chosen(src, per_class, max_images)
    _probe(src, methods, options, chosen[:1])  # on every rank, before any file: all refuse
    batches = [chosen[i : i + batch_size] for i in range(0, len(chosen), batch_size)]
    job = dict(methods=methods, metrics=metrics, controls=controls, target=target, seed=seed,
               blur_sigma=blur_sigma, options=options, metric_options=metric_options)  # fmt: skip
    settings = {"format": FORMAT_VERSION, **src.describe, "classes": list(src.classes),
                **{k: list(v) if isinstance(v, tuple) else v for k, v in job.items()},
                "per_class": per_class, "batch_size": batch_size}  # fmt: skip
    key = settings_key(settings)
    parts = out / ".parts"
    done = resume(parts, key, settings, len(batches), d, say)
    mine = [b for b in range(len(batches)) if b not in done][d.rank :: d.world]
    if d.main:
        say(_announce(len(chosen), per_class, src, _job_sizes(methods, controls, metrics), d,
                      len(done), len(batches)))  # fmt: skip
    bar = _Progress(sum(len(batches[b]) for b in range(len(batches)) if b not in done),
                    progress and d.main, d.world, "scoring")  # fmt: skip
    start, scored = time.perf_counter(), 0
    for j, b in enumerate(mine):
        if stop_after_batches is not None and j >= stop_after_batches:
            return {"status": "stopped"}
        _score_batch(src, parts, b, [int(i) for i in batches[b]], job)
        scored += len(batches[b])
        bar(scored)
    bar(scored, final=True)
    seconds = time.perf_counter() - start
    merged = merge(parts, len(batches), (len(methods) + len(controls), len(metrics)), d)
    timing = _gather((seconds, scored), d)
    if not d.main:
        _barrier(d)
        return {}
    meta = _write_table(B, out, merged, src, settings, key, job, n_boot, level, d, timing)
    _barrier(d)
    say(
        f"done: {meta['n_images']:,} images in {meta['seconds']:.1f} s, "
        f"{len(meta['losses'])} method-control losses -> {out}"
    )
    return meta


def _check_run(model, workspace, data, n_boot: int, level: float) -> None:
    if (model is None) == (workspace is None):
        raise BenchError("give --model NAME (a registry model) or --workspace FOLDER, not both")
    if workspace is not None and data is not None:
        raise BenchError("--data goes with --model; a workspace scores its own images")
    if not 0 < level < 1 or n_boot < 1:
        raise BenchError(f"--n-boot must be >= 1 and --level in (0, 1), got {n_boot}, {level}")


def _job_sizes(methods, controls, metrics) -> str:
    return f"{len(methods)} method(s) and {len(controls)} control(s) x {len(metrics)} metric(s)"


def _announce(n: int, per_class: int, src: Source, sizes: str, d: _Dist, done: int,
              n_batches: int) -> str:  # fmt: skip
    return (
        f"bench: {n:,} images ({per_class} per class, {len(src.classes)} classes), {sizes}, "
        f"on {d.world} process(es), {d.device}"
        + (f"; resuming: {done} of {n_batches} batches done" if done else "")
    )


def _source(model: str | None, workspace: str | None, data: str | None, device) -> Source:
    if model is not None:
        return registry_source(model, data, device)
    return workspace_source(workspace, device)


def _barrier(d: _Dist) -> None:
    if d.world > 1:
        torch.distributed.barrier()


def _chosen(src: Source, per_class: int, max_images: int) -> np.ndarray:
    """The images to score; a run too big is refused before anything is scored (the count is
    known from the labels)."""
    k = len(src.classes)
    if per_class * k > max_images:
        raise BenchError(
            f"--per-class {per_class:,} x {k} classes is up to {per_class * k:,} images, more "
            f"than this run allows ({max_images:,}); every image costs every method's maps and "
            "every metric's passes: ask for fewer, or pass --max-images to mean it"
        )
    chosen = select(src.labels, per_class, k)
    if not len(chosen):
        raise BenchError("the data has no images to score")
    return chosen


def _score_batch(src: Source, parts: Path, b: int, idx: list[int], job: dict) -> None:
    """Score batch `b` (images `idx`) and write its rows."""
    from saliency import bench as B

    rows = job["methods"] + job["controls"]
    x, ok, bad = src.read(idx)
    values = np.zeros((len(rows), len(job["metrics"]), len(ok)), np.float64)
    t = np.zeros(len(ok), np.int64)
    if x is not None:
        with torch.no_grad():
            logits = src.model(x)
        if job["target"] == "predicted":
            t_ = logits.argmax(1)
        else:
            t_ = torch.as_tensor(src.labels[ok], device=logits.device)
        cells = _score(B, src.model, x, t_, job, ok)
        for r, row in enumerate(rows):
            for m, metric in enumerate(job["metrics"]):
                values[r, m] = cells[row, metric]
        t = t_.cpu().numpy().astype(np.int64)
    write_batch(parts, b, values, ok, t, bad)


def _write_table(B, out: Path, merged: dict, src: Source, settings: dict, key: str, job: dict,
                 n_boot: int, level: float, d: _Dist, timing: list) -> dict:  # fmt: skip
    """Rank 0: summarise the merged rows once and write bench.npz, bench.csv and bench.json."""
    indices, values = merged["indices"], merged["values"]
    if not len(indices):
        raise BenchError("none of the selected images could be read")
    rows = job["methods"] + job["controls"]
    metrics = job["metrics"]
    cells = {(r, m): values[i, j] for i, r in enumerate(rows) for j, m in enumerate(metrics)}
    table = B.summarise(cells, methods=job["methods"], controls=job["controls"], metrics=metrics,
                        n_boot=n_boot, level=level, seed=job["seed"])  # fmt: skip
    labels = src.labels[indices].astype(np.int64)
    meta = {
        "status": "complete",
        "key": key,
        **settings,
        "n_boot": n_boot,
        "level": level,
        "n_images": int(len(indices)),
        "per_class_counts": np.bincount(labels, minlength=len(src.classes)).tolist(),
        "skipped": merged["skipped"],
        "world_size": d.world,
        "device": str(d.device),
        "seconds": max(s for s, _ in timing),
        "images_scored_this_run": sum(n for _, n in timing),
        "losses": list(table.losses),
        "agreement_note": table.agreement_note,
        "versions": _versions(),
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "outputs": {"table": "bench.npz", "csv": "bench.csv", "meta": "bench.json"},
    }
    B.save_table(table, out / "bench.npz", meta, indices=indices, labels=labels,
                 targets=merged["targets"])  # fmt: skip
    _atomic_write(out / "bench.csv", _table_csv(table).encode())
    _atomic_write(out / "bench.json", json.dumps(meta, indent=2).encode())
    return meta


def _score(B, model, x, t, job: dict, indices: list[int]):
    try:
        kw = {k: v for k, v in job.items() if k != "target"}  # t is the target, chosen already
        return B.score(model, x, t, indices=indices, **kw)
    except (ValueError, TypeError) as err:
        raise BenchError(f"scoring failed: {err}") from None


def _probe(src: Source, methods, options, indices) -> None:
    """Each method once on one image before the clock starts: a method the model can't have
    (Grad-CAM on an MLP) or a bad option is refused in plain words, not after an hour."""
    from saliency import attribute

    x, ok, _ = src.read([int(i) for i in indices])
    if x is None:
        return
    for name in methods:
        try:
            attribute(src.model, x, 0, method=name, absolute=True, **options.get(name, {}))
        except (ValueError, TypeError, NotImplementedError) as err:
            raise BenchError(f"the method {name!r} can't run on this model: {err}") from None


def _table_csv(table) -> str:
    """The table, one row per cell, in the order methods then controls."""
    head = ["row", "kind", "metric", "mean", "low", "high", "n", "higher_is_better", "rank"]
    out = [head]
    for r in table.rows():
        out.append(
            [
                r["row"],
                "control" if r["control"] else "method",
                r["metric"],
                *(f"{r[c]:.6g}" if math.isfinite(r[c]) else "" for c in ("mean", "low", "high")),
                r["n"],
                "yes" if r["higher_is_better"] else "no",
                "" if r["rank"] is None else r["rank"],
            ]
        )
    return csv_text(out)


# --- the command line ---------------------------------------------------------------------------


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not JSON ({err}): {text[:80]!r}") from None
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own: exit 2, usage and the message
        self.print_usage(sys.stderr)
        self.exit(2, f"workspace.bench: {message}\n")


def _parser() -> argparse.ArgumentParser:
    from saliency.bench import CONTROLS, METRICS

    p = _Parser(
        prog="python -m workspace.bench",
        description="Score attribution methods and controls on N images per class.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="a registry model, e.g. mnist-cnn (docs/models.md)")
    src.add_argument("--workspace", help="a folder written by python -m workspace.index")
    p.add_argument("--data", help="with --model: a bundled test set (default: the model's own)")
    p.add_argument(
        "--methods",
        type=_names,
        default=("gradient",),
        help="comma-separated saliency.attribute names",
    )
    p.add_argument(
        "--metrics",
        type=_names,
        default=METRICS,
        help=f"comma-separated, among {','.join(METRICS)} (default: all)",
    )
    p.add_argument(
        "--controls",
        type=_names,
        default=CONTROLS,
        help=f"comma-separated, among {','.join(CONTROLS)} (default: all)",
    )
    p.add_argument("--per-class", type=int, required=True, help="images per class")
    p.add_argument("--out", required=True, help="the folder to write")
    p.add_argument("--target", default="predicted", help="predicted (default) or label")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--level", type=float, default=0.95, help="the intervals' level")
    p.add_argument("--blur-sigma", type=float, default=2.0, help="the blurred control's sigma")
    p.add_argument(
        "--options",
        type=_json_object,
        default={},
        help='method options as JSON: {"smoothgrad": {"n_samples": 20}}',
    )
    p.add_argument(
        "--metric-options",
        type=_json_object,
        default={},
        help='metric options as JSON: {"road_morf": {"noise": 0.0}}',
    )
    p.add_argument("--batch-size", type=int, default=32, help="images per resumable batch")
    p.add_argument(
        "--max-images",
        type=int,
        default=MAX_IMAGES,
        help=f"refuse a run of more images than this (default {MAX_IMAGES:,})",
    )
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: CUDA when there is one)")
    p.add_argument("--threads", type=int, help="torch threads per process")
    p.add_argument("--max-model-mb", type=int, help="the largest workspace model this reads")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--stop-after-batches", type=int, help=argparse.SUPPRESS)  # tests: a kill
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    def work() -> int:
        meta = run(
            args.out,
            model=args.model,
            workspace=args.workspace,
            data=args.data,
            methods=args.methods,
            metrics=args.metrics,
            controls=args.controls,
            per_class=args.per_class,
            target=args.target,
            seed=args.seed,
            n_boot=args.n_boot,
            level=args.level,
            blur_sigma=args.blur_sigma,
            options=args.options,
            metric_options=args.metric_options,
            batch_size=args.batch_size,
            max_images=args.max_images,
            device=args.device,
            progress=not args.quiet,
            stop_after_batches=args.stop_after_batches,
        )
        return 3 if meta.get("status") == "stopped" else 0

    return _exit_code("workspace.bench", BenchError, work, args.max_model_mb)


if __name__ == "__main__":
    sys.exit(main())
