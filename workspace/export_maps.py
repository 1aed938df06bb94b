"""A bulk export of saliency maps: the images a filter selects, as one `.npz` (and a ZIP of PNGs).

    python -m workspace.export_maps WORKSPACE_DIR --filter wrong --out maps.npz --pngs maps.zip
    python -m workspace.export_maps mnist-cnn --filter true=4,pred=9 --out maps.npz

The `.npz` (read with `np.load`, no pickle) holds, one row per selected image in the filter's
order:

- `maps` float32 `(N, H, W)`: channels reduced as the dashboard shows them (max |g| over the
  colour channels for absolute maps, their signed sum for signed ones); `(N, C, H, W)` with
  `per_channel`;
- `indices` (rows of the test set or workspace), `labels`, `predicted`, `p_predicted` and
  `target` (the class each map explains), and for a workspace `paths` (under its data folder);
- `meta`, a JSON string: model, weights sha256, method and its options, score, absolute, the
  target rule, class names, this library's version (`json.loads(str(f["meta"]))`).

The PNGs are what the dashboard draws (`saliency.display`: inferno over the image at alpha 0.5,
each map on its own scale clipped at the 99th percentile; signed maps in RdBu_r), at the image's
own size, named `RANK_imgINDEX_trueT_predP_targetK.png`; the ZIP also holds the `.npz`.

Maps are computed a batch at a time and streamed into the files: memory holds one batch beyond
the output being written (nothing beyond one batch when it goes to a file). Before anything is
computed, the export is refused past `max_images` images or `max_bytes` bytes of output.

A model is given as a `run(job, x, **kwargs)` callable, the `sandbox.jobs` interface: `runner(
model)` for a model in this process, the dashboard's `cache.run` bound to a name for a model in
its sandboxed worker. Never imports streamlit or the dashboard.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from pretrained.evaluation import ranked_least_confident, ranked_mistakes
from saliency import display
from saliency.names import METHODS, SCORES
from sandbox import kinds

from .zip_stream import _copy, _npy_entry, _opened, _size, _write_array

__all__ = [
    "ExportError",
    "Written",
    "estimate_bytes",
    "export",
    "main",
    "runner",
    "select",
]

MAX_IMAGES = 100_000  # one export on the command line (--max-images lifts it)
MAX_BYTES = 2 * 2**30  # of output, .npz and .zip together (--max-mb lifts it)
BATCH = 64  # images a job: one batch's images and maps are all an export holds besides output
TARGETS = ("predicted", "true")
FILTERS = "wrong, unsure, all, class=K, true=K,pred=J"
# The noise methods' sigma is a fraction of [0, 1], the images' range (as on the dashboard).
NOISE_METHODS = ("smoothgrad", "smoothgrad_sq", "vargrad")
_ENTRY_OVERHEAD = 1024  # bytes a ZIP entry adds besides its data: headers, .npy header
_PNG_OVERHEAD = 1024  # a PNG's headers beyond its rows (filter bytes, chunks, zlib blocks)


class ExportError(ValueError):
    """A refusal, worded for the person who asked (a filter, a size, a file that can't be read)."""


Runner = Callable[..., Any]  # run(job, x, **kwargs) -> what sandbox.jobs.JOBS[job] answers


def runner(model: Any) -> Runner:
    """`run(job, x, **kwargs)` for a model in this process (`sandbox.jobs.run`)."""
    from sandbox import jobs

    return lambda job, x, **kwargs: jobs.run(job, model, x, **kwargs)


def select(rule: str, labels: np.ndarray, predicted: np.ndarray, p_predicted: np.ndarray,
           k: int) -> np.ndarray:  # fmt: skip
    """The indices a filter selects, in the Misclassifications gallery's order:

    - "wrong": every mistake, the most confident first (the gallery's "every mistake");
    - "unsure": every right answer, the least confident first ("least confident correct");
    - "all": every image, in file order; "class=K": the images of true class K, in file order;
    - "true=K,pred=J": class K taken for J, the most confident first (a cell of the confusion
      matrix; K = J gives class K's right answers, the most confident first).
    """
    text = rule.strip().lower().replace(" ", "")
    if text == "wrong":
        return ranked_mistakes(predicted, p_predicted, labels)
    if text == "unsure":
        return ranked_least_confident(predicted, p_predicted, labels, n=len(labels))
    if text == "all":
        return np.arange(len(labels))
    parts = dict(part.partition("=")[::2] for part in text.split(","))
    if set(parts) == {"class"}:
        return np.flatnonzero(labels == _class(parts["class"], k, rule))
    if set(parts) == {"true", "pred"}:
        true, pred = _class(parts["true"], k, rule), _class(parts["pred"], k, rule)
        if true != pred:
            return ranked_mistakes(predicted, p_predicted, labels, true=true, predicted_as=pred)
        idx = np.flatnonzero((labels == true) & (predicted == pred))
        return idx[np.argsort(-p_predicted[idx], kind="stable")]
    raise ExportError(f"unknown filter {rule!r}: use one of {FILTERS}")


def _class(text: str, k: int, rule: str) -> int:
    try:
        c = int(text)
    except ValueError:
        raise ExportError(f"in the filter {rule!r}, {text!r} is not a class number") from None
    if not 0 <= c < k:
        raise ExportError(f"in the filter {rule!r}, class {c} is out of range: 0 to {k - 1}")
    return c


def map_shape(image_shape: Sequence[int], *, per_channel: bool = False) -> tuple[int, ...]:
    """One map's shape for an image `(C, H, W)`: `(H, W)`, or `(C, H, W)` per channel."""
    c, h, w = (int(d) for d in image_shape)
    return (c, h, w) if per_channel else (h, w)


def _meta_text(meta: dict) -> str:
    return json.dumps(meta, sort_keys=True, ensure_ascii=False)


def _small_arrays(indices, labels, predicted, p_predicted, targets, paths, meta) -> dict:
    arrays = {
        "indices": np.asarray(indices, dtype=np.int64),
        "labels": np.asarray(labels, dtype=np.int64),
        "predicted": np.asarray(predicted, dtype=np.int64),
        "p_predicted": np.asarray(p_predicted, dtype=np.float32),
        "target": np.asarray(targets, dtype=np.int64),
    }
    if paths is not None:
        arrays["paths"] = np.array(list(paths), dtype=str) if len(paths) else np.zeros(0, "<U1")
    arrays["meta"] = np.array(_meta_text(meta))
    return arrays


def estimate_bytes(
    n: int,
    image_shape: Sequence[int],
    *,
    per_channel: bool = False,
    path_chars: int = 0,
    meta_chars: int = 4096,
    pngs: bool = False,
) -> int:
    """At most how many bytes an export of `n` images writes: the `.npz` (stored, not
    deflated: its size is known before it is computed), plus, with `pngs`, a ZIP of
    uncompressed-size PNGs and the `.npz` again. `path_chars`: the longest path's length."""
    h, w = (int(d) for d in image_shape[-2:])
    maps = 4 * n * math.prod(map_shape(image_shape, per_channel=per_channel))
    rows = n * (8 + 8 + 8 + 4 + 8 + 4 * path_chars)  # indices … target, paths (UTF-32)
    npz = maps + rows + 4 * meta_chars + 8 * _ENTRY_OVERHEAD
    if not pngs:
        return npz
    png = h * (3 * w + 1) + _PNG_OVERHEAD + 2 * _ENTRY_OVERHEAD  # rows + filter byte each
    return npz + n * png + npz + _ENTRY_OVERHEAD


@dataclass(frozen=True)
class Written:
    """What an export wrote: `n` maps of `shape`, and each file's size in bytes."""

    n: int
    shape: tuple[int, ...]
    npz_bytes: int
    zip_bytes: int | None


def _reduce(maps: np.ndarray, absolute: bool) -> np.ndarray:
    """`(N, C, H, W)` -> `(N, H, W)`, as the dashboard reduces a map it shows."""
    if maps.shape[1] == 1:
        return maps[:, 0]
    return display.reduce_channels(maps, "max" if absolute else "sum", channel_axis=1)


def png(m: np.ndarray, image: np.ndarray, *, absolute: bool) -> np.ndarray:
    """`(H, W)` map -> uint8 RGB `(H, W, 3)` as the dashboard draws it: an absolute map in
    inferno over the image at alpha 0.5, a signed one in RdBu_r, each on its own scale
    clipped at the 99th percentile."""
    lo, hi = display.display_range(m, signed=not absolute, percentile=99.0)
    if absolute:
        return display.render(m, lo=lo, hi=hi, cmap="inferno", image=image, alpha=0.5)
    return display.render(m, lo=lo, hi=hi, cmap="RdBu_r")


def _png_bytes(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("saliency-dashboard")
    except metadata.PackageNotFoundError:
        return "unknown"


def export(
    run: Runner,
    image: Callable[[int], np.ndarray],
    indices: Sequence[int] | np.ndarray,
    *,
    labels: np.ndarray,
    predicted: np.ndarray,
    p_predicted: np.ndarray,
    image_shape: Sequence[int],
    npz: str | os.PathLike | IO[bytes],
    pngs: str | os.PathLike | IO[bytes] | None = None,
    paths: Sequence[str] | None = None,
    meta: dict | None = None,
    method: str = "gradient",
    target: str = "predicted",
    score: str = "logit",
    absolute: bool = True,
    per_channel: bool = False,
    options: dict | None = None,
    batch_size: int = BATCH,
    max_images: int = MAX_IMAGES,
    max_bytes: int = MAX_BYTES,
    progress: Callable[[int, int], Any] | None = None,
) -> Written:
    """Write the maps of the images `indices` (rows of `labels`, `predicted`, `p_predicted`,
    `paths`; `image(i)` reads row i as `(C, H, W)` float32 of `image_shape`) to `npz`, and
    with `pngs` a ZIP of one PNG per map plus that `.npz`. Files or binary file objects.

    Each map explains `target`: "predicted" (each image's predicted class) or "true" (its
    label), by `method` with `score` (`sandbox.jobs.maps`, one job per `batch_size`
    images). `meta` (model, weights sha256, class names, …) goes into the `.npz`'s JSON with
    the settings. `progress(done, n)` after each batch. Raises ExportError before computing
    anything when the filter is empty or the export is over `max_images` or `max_bytes`.
    """
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    n = len(indices)
    _check_request(indices, len(labels), method, score, target, max_images)
    image_shape = tuple(int(d) for d in image_shape)
    options = dict(options or {})
    if method in NOISE_METHODS:
        options.setdefault("noise_range", (0.0, 1.0))
    meta = {
        **(meta or {}),
        "method": method,
        "options": options,
        "score": score,
        "absolute": bool(absolute),
        "target": target,
        "per_channel": bool(per_channel),
        "map_shape": list(map_shape(image_shape, per_channel=per_channel)),
        "n": n,
        "version": _version(),
    }
    chosen_paths = None if paths is None else [paths[i] for i in indices]
    targets = (labels if target == "true" else predicted)[indices]
    small = _small_arrays(indices, labels[indices], predicted[indices], p_predicted[indices],
                          targets, chosen_paths, meta)  # fmt: skip
    _check_size(n, image_shape, per_channel, chosen_paths, small, pngs is not None, max_bytes)
    job = _Job(run, image, indices, targets, labels, predicted, paths, image_shape, method,
               score, absolute, per_channel, options, batch_size, progress)  # fmt: skip
    return _write_files(job, small, npz, pngs)


def _check_request(indices: np.ndarray, rows: int, method, score, target, max_images) -> None:
    """Refuse an unknown method, score or target, an empty filter, an index out of range and
    more than `max_images` images."""
    n = len(indices)
    if method not in METHODS:
        raise ExportError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    if score not in SCORES:
        raise ExportError(f"unknown score {score!r}: use one of {', '.join(SCORES)}")
    if target not in TARGETS:
        raise ExportError(f"unknown target {target!r}: use one of {', '.join(TARGETS)}")
    if n == 0:
        raise ExportError("the filter selects no image: there is nothing to export")
    if n and (indices.min() < 0 or indices.max() >= rows):
        raise ExportError(f"an index is out of range: there are {rows:,} images")
    if n > max_images:
        raise ExportError(
            f"the filter selects {n:,} images; one export takes at most {max_images:,}: "
            "choose a narrower filter"
        )


def _check_size(n, image_shape, per_channel, chosen_paths, small, pngs: bool, max_bytes) -> None:
    """Refuse an export whose files could be over `max_bytes`, before computing anything."""
    need = estimate_bytes(
        n,
        image_shape,
        per_channel=per_channel,
        path_chars=max((len(p) for p in chosen_paths), default=0) if chosen_paths else 0,
        meta_chars=len(small["meta"].item()),
        pngs=pngs,
    )
    if need > max_bytes:
        raise ExportError(
            f"{n:,} maps of {'×'.join(map(str, image_shape))} images make up to "
            f"{need / 2**20:,.1f} MB; one export writes at most {max_bytes / 2**20:,.0f} MB: "
            "choose a narrower filter" + (", or leave out the PNGs" if pngs else "")
        )


@dataclass(frozen=True)
class _Job:
    """An export's maps to compute: the images' rows and each one's target, and how."""

    run: Runner
    image: Callable[[int], np.ndarray]
    indices: np.ndarray
    targets: np.ndarray
    labels: np.ndarray
    predicted: np.ndarray
    paths: Sequence[str] | None
    image_shape: tuple[int, ...]
    method: str
    score: str
    absolute: bool
    per_channel: bool
    options: dict
    batch_size: int
    progress: Callable[[int, int], Any] | None


def _write_files(job: _Job, small: dict, npz, pngs) -> Written:
    """The `.npz` (the small arrays, then the maps streamed a batch at a time) and with `pngs`
    the ZIP of PNGs, which gets a copy of the `.npz` last."""
    n, shape = len(job.indices), map_shape(job.image_shape, per_channel=job.per_channel)
    with contextlib.ExitStack() as stack:
        npz_file = stack.enter_context(_opened(npz))
        zf = stack.enter_context(zipfile.ZipFile(npz_file, "w", zipfile.ZIP_STORED))
        zip_file = png_zip = None
        if pngs is not None:
            zip_file = stack.enter_context(_opened(pngs))
            png_zip = stack.enter_context(zipfile.ZipFile(zip_file, "w", zipfile.ZIP_STORED))
        for name, array in small.items():
            _write_array(zf, name, array)
        with _npy_entry(zf, "maps", np.dtype("<f4"), (n, *shape)) as write:
            _write_maps(job, write, png_zip)
        zf.close()
        npz_bytes = _size(npz_file)
        zip_bytes = None
        if png_zip is not None:
            with png_zip.open("maps.npz", "w", force_zip64=npz_bytes > 2**30) as f:
                _copy(npz_file, f)
            png_zip.close()
            zip_bytes = _size(zip_file)
    return Written(n=n, shape=(n, *shape), npz_bytes=npz_bytes, zip_bytes=zip_bytes)


def _write_maps(job: _Job, write: Callable[[np.ndarray], None], png_zip) -> None:
    """Every batch's maps through `write` (and its PNGs into `png_zip`), in the rows' order."""
    indices, targets, labels, predicted = job.indices, job.targets, job.labels, job.predicted
    n = len(indices)
    for start in range(0, n, job.batch_size):
        rows_ = indices[start : start + job.batch_size]
        x = _batch(job.image, rows_, job.image_shape, job.paths)  # (B, C, H, W)
        signed = job.run("maps", x, targets=targets[start : start + len(rows_)],
                         method=job.method, score=job.score, absolute=job.absolute,
                         **job.options)  # fmt: skip
        signed = np.asarray(signed)
        if signed.shape != x.shape or not np.issubdtype(signed.dtype, np.floating):
            raise ExportError(f"the model returned maps of shape {signed.shape}, "
                              f"not {x.shape}")  # fmt: skip
        reduced = _reduce(signed, job.absolute)  # (B, H, W)
        write(signed if job.per_channel else reduced)
        if png_zip is not None:
            for j, i in enumerate(rows_):
                name = (f"{start + j:05d}_img{i}_true{labels[i]}_pred{predicted[i]}"
                        f"_target{targets[start + j]}.png")  # fmt: skip
                rgb = png(reduced[j], x[j], absolute=job.absolute)
                png_zip.writestr(name, _png_bytes(rgb))
        if job.progress:
            job.progress(start + len(rows_), n)


def _batch(image, rows: np.ndarray, image_shape: tuple[int, ...], paths) -> np.ndarray:
    from sandbox.images import ImageError

    out = np.empty((len(rows), *image_shape), dtype=np.float32)
    for j, i in enumerate(rows):
        what = f"image #{i}" if paths is None else paths[i]
        try:
            x = np.asarray(image(int(i)), dtype=np.float32)
        except (ImageError, OSError, ValueError) as err:
            raise ExportError(f"can't read {what}: {err}") from None
        if x.shape != image_shape:
            raise ExportError(f"{what} is {x.shape}, not {image_shape} like the others")
        out[j] = x
    return out


# --- the command line ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m workspace.export_maps",
        description="Export the saliency maps of the images a filter selects, as one .npz "
        "(and a ZIP of PNGs), from an indexed workspace or a registry model on its test set.",
    )
    p.add_argument("source", help="an indexed workspace folder, or a registry model (mnist-cnn)")
    p.add_argument("--filter", default="wrong", help=f"which images: {FILTERS} (default wrong)")
    p.add_argument("--method", default="gradient", choices=METHODS)
    p.add_argument("--score", default="logit", choices=SCORES)
    p.add_argument("--target", default="predicted", choices=TARGETS,
                   help="the class each map explains (default: the predicted one)")  # fmt: skip
    p.add_argument("--signed", action="store_true", help="signed maps (default: absolute)")
    p.add_argument("--per-channel", action="store_true",
                   help="maps (N, C, H, W): colour channels kept, not reduced")  # fmt: skip
    p.add_argument("--out", required=True, help="the .npz to write")
    p.add_argument("--pngs", help="also a .zip of one PNG per map, with the .npz")
    p.add_argument("--batch-size", type=int, default=BATCH)
    p.add_argument("--max-images", type=int, default=MAX_IMAGES)
    p.add_argument("--max-mb", type=float, default=MAX_BYTES / 2**20)
    p.add_argument("--device", default=None, help="cpu, cuda, … (default: the best there is)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    return p


@dataclass(frozen=True)
class _Source:
    model: Any
    image: Callable[[int], np.ndarray]
    image_shape: tuple[int, ...]
    labels: np.ndarray
    predicted: np.ndarray
    p_predicted: np.ndarray
    paths: tuple[str, ...] | None
    meta: dict


def _open_source(text: str, device: str | None) -> _Source:
    from pretrained import registry
    from workspace import WorkspaceError, open_indexed, shared_model

    folder = Path(text).expanduser()
    if folder.is_dir():
        try:
            ws = open_indexed(folder)
            model = shared_model(ws.config, len(ws.classes), ws.model_sha256, device or "cpu")
        except WorkspaceError as err:
            raise ExportError(str(err)) from None
        return _Source(
            model=model, image=ws.image, image_shape=ws.shape, labels=ws.labels,
            predicted=ws.predicted, p_predicted=ws.p_predicted, paths=ws.paths,
            meta={"model": kinds.workspace(ws.name), "model_file": str(ws.config.model),
                  "weights_sha256": ws.model_sha256, "classes": list(ws.classes),
                  "source": str(folder.resolve())},
        )  # fmt: skip
    if text not in registry.list_models():
        raise ExportError(
            f"{text!r} is neither an indexed workspace folder nor a registry model (known: "
            f"{', '.join(registry.list_models())})"
        )
    from pretrained.data import load_arrays

    info = registry.model_info(text)
    model = registry.load_model(text, device) if device else registry.load_model(text)
    images, labels = load_arrays(info.dataset, "test")
    run = runner(model)
    probs = np.concatenate(
        [run("probabilities", images[i : i + 1000]) for i in range(0, len(images), 1000)]
    )
    predicted = probs.argmax(1)
    return _Source(
        model=model, image=lambda i: images[i], image_shape=tuple(images.shape[1:]),
        labels=labels, predicted=predicted, p_predicted=probs[np.arange(len(probs)), predicted],
        paths=None,
        meta={"model": text, "weights_sha256": info.weights_sha256,
              "classes": list(info.class_names), "source": f"{info.dataset} test set"},
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.suffix != ".npz":
        parser.error(f"--out must name a .npz file, not {args.out!r}")
    if args.pngs is not None and Path(args.pngs).suffix != ".zip":
        parser.error(f"--pngs must name a .zip file, not {args.pngs!r}")
    if args.batch_size < 1 or args.max_images < 1 or not args.max_mb > 0:
        parser.error("--batch-size, --max-images and --max-mb must be positive")
    for path in filter(None, (out, args.pngs and Path(args.pngs))):
        if not path.resolve().parent.is_dir():
            parser.error(f"the folder of {str(path)!r} does not exist")
    try:
        src = _open_source(args.source, args.device)
        indices = select(args.filter, src.labels, src.predicted, src.p_predicted,
                         len(src.meta["classes"]))  # fmt: skip
        show = None if args.quiet else _progress_line
        written = _export_atomically(src, indices, args, show)
    except ExportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(
        f"{written.n:,} maps {written.shape} of {args.source} ({args.filter}) -> {out} "
        f"({written.npz_bytes / 2**20:,.1f} MB)"
        + (f" and {args.pngs} ({written.zip_bytes / 2**20:,.1f} MB)" if args.pngs else "")
    )
    return 0


def _export_atomically(src: _Source, indices: np.ndarray, args, progress) -> Written:
    """Write beside the outputs, then move them into place: a failed export leaves no half
    file under the names asked for."""
    targets = [Path(args.out)] + ([Path(args.pngs)] if args.pngs else [])
    temps = []
    try:
        for path in targets:
            fd, tmp = tempfile.mkstemp(dir=path.resolve().parent, prefix=f".{path.name}.")
            os.close(fd)
            temps.append(tmp)
        written = export(
            runner(src.model), src.image, indices, labels=src.labels, predicted=src.predicted,
            p_predicted=src.p_predicted, image_shape=src.image_shape, paths=src.paths,
            meta=src.meta, npz=temps[0], pngs=temps[1] if args.pngs else None,
            method=args.method, target=args.target, score=args.score,
            absolute=not args.signed, per_channel=args.per_channel, batch_size=args.batch_size,
            max_images=args.max_images, max_bytes=int(args.max_mb * 2**20), progress=progress,
        )  # fmt: skip
        mode = os.umask(0)  # mkstemp's files are private; the outputs get the usual mode
        os.umask(mode)
        for tmp, path in zip(temps, targets, strict=True):
            os.chmod(tmp, 0o666 & ~mode)
            os.replace(tmp, path)
        return written
    finally:
        for tmp in temps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _progress_line(done: int, n: int) -> None:
    end = "\n" if done >= n else ""
    print(f"\r{done:,} / {n:,} maps", end=end, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
