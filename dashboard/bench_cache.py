"""The metric bench of the "Which map can I trust?" page and the Classroom's lesson on it.

A bench scores methods and three controls on the metrics of `saliency.bench`, over N images
of each class of a data set: the per-image values are a job (`sandbox.jobs.bench_scores`),
run a batch at a time by `cache.run` (in this process for a registry or workspace model, in the
upload's sandboxed worker for an uploaded one), and the table (means, bootstrap intervals,
ranks, agreement) is summarised here from them with `saliency.bench.summarise`.

A bench is a minute or more of a core, so:
- its table is saved on disk (`saliency.bench.save_table`) for every visitor, keyed by the
  model's weights, the data set and the settings; an uploaded data set's only in memory;
- one bench runs on this server at a time: a second, different one is refused with the first's
  progress (`Busy`), and the same one waits for it and reads what it saved (`single_flight`);
- its images are bounded (`MAX_IMAGES`) before anything is computed.

Never imports pretrained's sandbox directly: uploads go through `cache.run`.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import saliency
from dashboard import cache, lru, sources, state
from dashboard.lru import memo
from saliency import bench
from sandbox import kinds, worker

DEFAULT_METHODS = state.BENCH_METHODS  # what a bench offers first
PER_CLASS = state.BENCH_PER_CLASS
MAX_IMAGES = 200  # images one bench scores, whatever the classes × per class
BATCH = 10  # images a job scores: a progress step, and SmoothGrad's noise is drawn per batch
N_BOOT = 1000
SEED = 0
_VERSION = 1  # bump when a table's meaning or layout changes


class Busy(Exception):
    """Another bench is running on this server: `str()` says whose progress, in words."""


@dataclass(frozen=True)
class Request:
    """One bench: `model` on data set `dataset`, `per_class` images of each class, the
    `methods` and `metrics` (in the order shown)."""

    model: str
    dataset: str
    per_class: int
    methods: tuple[str, ...]
    metrics: tuple[str, ...]

    def digest(self) -> str:
        text = json.dumps([self.methods, self.metrics, self.per_class, N_BOOT, SEED, BATCH])
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Result:
    """A bench's table and where its images come from: `indices` into the data set, their
    `labels` and the `targets` scored (each image's predicted class); `refused` maps a method
    the model can't be explained by to the library's reason; `seconds` of computing."""

    table: bench.Bench
    indices: np.ndarray
    labels: np.ndarray
    targets: np.ndarray
    refused: dict[str, str]
    seconds: float
    computed: str  # when, UTC


def chosen_images(labels: np.ndarray, n_classes: int, per_class: int) -> np.ndarray:
    """The first `per_class` images of each class in data-set order, class by class (a class
    with fewer gives what it has), at most `MAX_IMAGES` in all: the classes in order until
    the budget is spent."""
    picked: list[np.ndarray] = []
    total = 0
    for c in range(n_classes):
        mine = np.flatnonzero(labels == c)[:per_class]
        if total + len(mine) > MAX_IMAGES:
            break
        picked.append(mine)
        total += len(mine)
    return np.concatenate(picked).astype(np.int64) if picked else np.zeros(0, np.int64)


def path(req: Request) -> Path | None:
    """Where the table is saved: None for an uploaded data set (kept in memory only)."""
    if kinds.parse(req.dataset).kind == kinds.UPLOADED:
        return None
    sha = cache.model_info(req.model).weights_sha256[:12]
    stem = req.model.replace(":", "-")
    data = req.dataset.replace(":", "-")
    name = f"{stem}-{sha}-{data}-{req.per_class}pc-{req.digest()}-v{_VERSION}.npz"
    return cache.cache_dir() / "bench" / name


def _from_file(file: Path) -> Result | None:
    table, meta = bench.load_table(file)
    return Result(
        table, meta["indices"], meta["labels"], meta["targets"], dict(meta.get("refused", {})),
        float(meta.get("seconds", 0.0)), str(meta.get("computed", "")),
    )  # fmt: skip


def stored(req: Request) -> tuple[Result | None, str | None]:
    """`(result, None)` from disk or memory, `(None, None)` when none, `(None, note)` when the
    saved file is damaged (then treated as missing: computing again replaces it)."""
    file = path(req)
    if file is None:
        return _recalled(req), None
    if not file.is_file():
        return None, None
    try:
        return _read(str(file), file.stat().st_mtime), None
    except (ValueError, OSError, KeyError) as err:
        return None, f"the saved bench was unreadable ({err}) and is ignored"


@memo("maps")
def _read(file: str, mtime: float) -> Result:
    return _from_file(Path(file))


_running: dict[str, str] = {}  # "progress" -> the running bench's words
_ONE = threading.Lock()  # one bench at a time on this server


def _remember(req: Request, result: Result) -> None:
    """An uploaded data set's table, in the server's byte-bounded cache (not on disk)."""
    lru.store("maps").put(("bench", req), result, lru.nbytes(result))


def _recalled(req: Request) -> Result | None:
    return lru.store("maps").get(("bench", req), None)


def _usable(req: Request, shape: tuple[int, ...]) -> tuple[list[str], dict[str, str]]:
    """The methods the model can be explained by (a layer map needs a spatial layer), and the
    library's reason for each it can't."""
    usable, refused = [], {}
    for method in req.methods:
        problem = cache.method_facts(req.model, shape, method)["problem"]
        if problem:
            refused[method] = problem
        else:
            usable.append(method)
    return usable, refused


def _scores(
    req: Request, x: np.ndarray, targets: np.ndarray, indices: np.ndarray, methods: list[str],
    controls: Sequence[str],
) -> dict[tuple[str, str], np.ndarray]:  # fmt: skip
    reply = cache.run(
        req.model, "bench_scores", x, targets=targets, indices=indices, methods=methods,
        metrics=list(req.metrics), controls=list(controls), seed=SEED,
        options={m: cache.METHOD_OPTIONS.get(m, {}) for m in methods}, timeout=600,
    )  # fmt: skip
    return {tuple(k.split("\t", 1)): np.asarray(v, np.float64) for k, v in reply.items()}


def compute(
    req: Request,
    progress: Callable[[int, int], None] | None = None,
    waiting: Callable[[], None] | None = None,
) -> Result:
    """Score `req` a batch of images at a time (the first usable method with the controls,
    then each other method alone: a method the model refuses is left out with its reason) and
    save the table. Raises `Busy` when another bench runs; ValueError when no method applies."""
    src = sources.source(req.dataset)
    indices = chosen_images(src.labels, len(src.classes), req.per_class)
    if len(indices) == 0:
        raise ValueError("this data set has no labelled images to score")
    file = path(req)
    flight = cache.single_flight(str(file), waiting) if file else _nothing()
    with flight:
        done, _ = stored(req)
        if done is not None:
            return done
        if not _ONE.acquire(blocking=False):
            raise Busy(_running.get("progress", "Another bench is running on this server."))
        try:
            result = _compute(req, src, indices, progress)
        finally:
            _running.pop("progress", None)
            _ONE.release()
        if file is None:
            _remember(req, result)
        else:
            _save(file, result, req)
        return result


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _compute(req: Request, src, indices: np.ndarray, progress) -> Result:
    start = time.perf_counter()
    usable, refused = _usable(req, src.shape)
    if not usable:
        raise ValueError("the model can't be explained by any of the chosen methods")
    x_all = np.stack([src.image(int(i)) for i in indices]).astype(np.float32)
    targets = _predicted(req.model, x_all)
    values: dict[tuple[str, str], np.ndarray] = {}
    groups = [(usable[0], list(bench.CONTROLS))] + [(m, []) for m in usable[1:]]
    steps, step = len(groups) * -(-len(indices) // BATCH), 0
    for method, controls in groups:
        parts: list[dict] = []
        for lo in range(0, len(indices), BATCH):
            sl = slice(lo, lo + BATCH)
            _running["progress"] = (
                f"Another bench is running on this server ({step} of {steps} steps done): "
                "one runs at a time. Try again when it has finished."
            )
            try:
                parts.append(_scores(req, x_all[sl], targets[sl], indices[sl], [method], controls))
            except (ValueError, worker.ModelError) as err:  # refused when it ran
                refused[method] = str(err).partition("The model failed: ")[2] or str(err)
                parts = []
                step += -(-(len(indices) - lo) // BATCH)
                break
            step += 1
            if progress:
                progress(step, steps)
        for key in parts[0] if parts else ():
            values[key] = np.concatenate([p[key] for p in parts])
    methods = tuple(m for m in usable if m not in refused)
    if not methods:
        raise ValueError("the model can't be explained by any of the chosen methods: " + "; ".join(
            f"{saliency.method_info(m).label}: {why}" for m, why in refused.items()))  # fmt: skip
    controls = bench.CONTROLS if usable[0] in methods else ("random", "edge")
    values = {k: v for k, v in values.items() if k[0] in methods or k[0] in controls}
    table = bench.summarise(values, methods=methods, controls=controls, metrics=req.metrics,
                            n_boot=N_BOOT, seed=SEED)  # fmt: skip
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    seconds = time.perf_counter() - start
    return Result(table, indices, src.labels[indices], targets, refused, seconds, now)


def _predicted(model: str, x: np.ndarray) -> np.ndarray:
    out = [cache.run(model, "logits", x[lo : lo + 100]) for lo in range(0, len(x), 100)]
    return np.concatenate(out).argmax(1).astype(np.int64)


def _save(file: Path, result: Result, req: Request) -> None:
    meta = {
        "model": req.model,
        "weights_sha256": cache.model_info(req.model).weights_sha256,
        "dataset": req.dataset,
        "per_class": req.per_class,
        "refused": result.refused,
        "seconds": result.seconds,
        "computed": result.computed,
        "saliency": saliency.__version__ if hasattr(saliency, "__version__") else "",
    }
    file.parent.mkdir(parents=True, exist_ok=True)
    bench.save_table(result.table, file, meta, indices=result.indices, labels=result.labels,
                     targets=result.targets)  # fmt: skip


# --- a table made by `python -m workspace.bench` -----------------------------------------------


def adopt(folder: str | Path) -> Path:
    """Save the table a `python -m workspace.bench --model M --out FOLDER` run wrote as the
    page's table for the same request, so that the page shows it instead of offering to compute
    it; returns where. The run must have scored what the page scores: a registry model on a
    bundled test set, at most `MAX_IMAGES` images, the three controls, the predicted class,
    seed `SEED`, the page's method options (`--options`, e.g. SmoothGrad's 50 samples) and the
    metrics' defaults. Its images are put in the page's order and summarised as the page
    summarises. Raises ValueError saying what differs."""
    file = Path(folder) / "bench.npz"
    table, meta = bench.load_table(file)  # ValueError for a file that is not a table
    data = meta.get("data", {}).get("name")
    name = meta.get("model", {}).get("name")
    if not name or not data:
        raise ValueError(f"{file}: the page shows a registry model's bench on a bundled test set")
    options = {m: cache.METHOD_OPTIONS[m] for m in table.methods if m in cache.METHOD_OPTIONS}
    page = {"controls": list(bench.CONTROLS), "target": "predicted", "seed": SEED,
            "metric_options": {}, "options": json.loads(json.dumps(options))}  # fmt: skip
    for key, want in page.items():
        if meta.get(key) != want:
            raise ValueError(
                f"{file}: scored with {key} {meta.get(key)!r}; the page scores {want!r}"
            )
    sha = cache.model_info(name).weights_sha256
    if meta["model"].get("sha256") != sha:
        raise ValueError(f"{file}: scored with other weights than this server's {name}")
    req = Request(name, data, int(meta["per_class"]), table.methods, table.metrics)
    src = sources.source(data)
    order = chosen_images(src.labels, len(src.classes), req.per_class)
    where = {int(i): j for j, i in enumerate(meta["indices"])}
    if sorted(where) != sorted(int(i) for i in order):
        raise ValueError(f"{file}: its images are not the page's {len(order)} images")
    pos = np.array([where[int(i)] for i in order], np.int64)
    values = {key: v[pos] for key, v in table.values.items()}
    summary = bench.summarise(values, methods=table.methods, controls=table.controls,
                              metrics=table.metrics, n_boot=N_BOOT, seed=SEED)  # fmt: skip
    result = Result(summary, order, meta["labels"][pos], meta["targets"][pos], {},
                    float(meta.get("seconds", 0.0)), str(meta.get("finished", "")))  # fmt: skip
    target = path(req)
    _save(target, result, req)
    return target


def page_query(req: Request) -> str:
    """The page's address for `req`, after the server's root: `bench?model=…&b_methods=…`."""
    from urllib.parse import urlencode

    return "bench?" + urlencode(
        {"model": req.model, "dataset": req.dataset, "b_methods": ",".join(req.methods),
         "b_metrics": ",".join(req.metrics), "b_per_class": req.per_class},
        safe=",",
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m dashboard.bench_cache FOLDER [FOLDER …]`: show each table a `python -m
    workspace.bench` run wrote on the Which map can I trust? page (`adopt`), and print the
    page's address. Exit 2, saying why, for a table the page can't show."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m dashboard.bench_cache", description=main.__doc__)
    ap.add_argument("folders", nargs="+", help="the --out folders of python -m workspace.bench")
    status = 0
    for folder in ap.parse_args(argv).folders:
        try:
            table, meta = bench.load_table(Path(folder) / "bench.npz")
            per_class = int(meta.get("per_class", 0))
            if per_class not in PER_CLASS:
                raise ValueError(
                    f"{folder}: {per_class} images per class; the page offers "
                    f"{', '.join(map(str, PER_CLASS))}"
                )
            adopt(folder)
        except (OSError, ValueError, KeyError) as err:
            print(f"{folder}: not shown: {err}", file=sys.stderr)
            status = 2
            continue
        name, data = meta["model"]["name"], meta["data"]["name"]
        req = Request(name, data, per_class, table.methods, table.metrics)
        print(f"{folder}: shown at {page_query(req)}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
