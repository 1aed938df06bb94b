"""A workspace from an upload: a model file and a ZIP of an ImageFolder, indexed in memory.

    >>> images = read_zip_images(zip_bytes, Preprocessing(resize=64, crop=64))
    >>> worker, built = build(model_bytes, images, filename="net.pt", progress=print)

This is `python -m workspace.index` for a server's visitor, who has no folder on the server:

- **The ZIP is data, and hostile until checked.** Its directory is read first: an absolute path,
  a `..`, a link or an encrypted entry refuses the whole file; declared sizes are bounded (each
  image, the sum, and the inflation ratio of a large entry, so a ZIP bomb is refused before
  anything is inflated); nothing is written to disk. Each image's size is read from its header
  before a pixel is decoded: one far larger than the preparation keeps is skipped (a JPEG much
  larger than the resize is decoded at a fraction of its size instead, so its prepared pixels
  differ slightly from the CLI's, which decodes it whole), and the pixels decoded for the ZIP are
  bounded (`ZIP_DECODE_PIXELS`), so a few kB of flat 40 MP PNGs can't buy minutes of CPU.
  Images are prepared like the CLI's; the stacked array is bounded too.
- **The model is code**: it runs only in a sandboxed worker (`sandbox.worker`), checked
  like any upload (gate, one example, (N, K) finite scores), then fed the images in chunks of
  about a second, each under the worker's deadline. One forward and one backward pass per
  image give its prediction and |∂logit_label/∂x|; for K ≤ 20 a second job gives the mean of
  every class over all images, as the CLI does. Sums are float64, per class.

The result (`Built`) holds what the index's files hold: predictions, top-5, confusion, the
class means; `predictions_csv()` gives the same `predictions.csv`. Never imports streamlit.
"""

from __future__ import annotations

import hashlib
import io
import stat
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np

from sandbox import kinds
from sandbox.gate import UserModelError
from sandbox.images import ImageError, decode_image
from sandbox.text import output_key
from workspace import IMAGE_SUFFIXES, MAX_CLASSES, Preprocessing, WorkspaceError

__all__ = ["Built", "ZipImages", "build", "read_zip_images"]

MAX_ZIP_BYTES = 200 * 2**20  # the upload itself
MAX_INFLATED = 1 * 2**30  # all entries together, as declared
MAX_IMAGE = 20 * 2**20  # one image file, as declared
MAX_RATIO = 100  # inflated / compressed, for entries over 1 MB (images barely compress)
MAX_FILES = 20_000
MAX_PIXELS = 512 * 2**20  # bytes of the stacked float32 images
MAX_SUMS = 512 * 2**20  # bytes of the float64 per-class sums
ALL_CLASSES_UP_TO = 20
# Pixels decoded for one ZIP, all its images together, each counted at the size it is decoded
# at (read from its header first). Decoding and preparing runs at about 50-80 MP per second of a
# core here, so this is about 10 s of CPU at most, where the per-image limits alone allowed 40
# MP per file, 20,000 files: an hour. An honest ZIP fits: 10,000 ImageNet-sized JPEGs (500 ×
# 375) resized to 64 px are decoded at half size, 470 MP; the stacked result (MAX_PIXELS) is
# the tighter bound for most.
ZIP_DECODE_PIXELS = 512 * 2**20
# One image may be decoded at up to OVERSIZE times the pixels the preparation keeps (its resize
# or crop, squared), or ENTRY_FLOOR, whichever is more: a 6,300² flat PNG for a 64-px resize is
# skipped from its header. A JPEG is counted at the scale it is decoded at (see below).
OVERSIZE = 64
ENTRY_FLOOR = 16_000_000  # a phone camera's photo


@dataclass
class ZipImages:
    """The images of an uploaded ImageFolder, prepared: `x` `(N, C, H, W)` float32 in [0, 1]."""

    paths: list[str]
    labels: np.ndarray
    classes: tuple[str, ...]
    x: np.ndarray
    preprocessing: Preprocessing
    problems: list[dict] = field(default_factory=list)
    sha256: str = ""


def _refuse(text: str) -> None:
    raise WorkspaceError(f"Refused: {text}")


def _entries(z: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The ZIP's files, once its directory has been checked (nothing inflated yet)."""
    infos = z.infolist()
    files = [i for i in infos if not i.is_dir()]
    if len(files) > MAX_FILES:
        _refuse(f"the ZIP holds {len(files):,} files; at most {MAX_FILES:,}.")
    total = 0
    for info in infos:
        name = info.filename
        parts = PurePosixPath(name).parts
        if name.startswith(("/", "\\")) or "\\" in name or ".." in parts or ":" in name:
            _refuse(f"the ZIP has an unsafe path ({name[:80]!r}): paths must stay inside it.")
        if stat.S_ISLNK(info.external_attr >> 16):
            _refuse(f"the ZIP holds a link ({name[:80]!r}); only plain files are read.")
        if info.flag_bits & 0x1:
            _refuse("the ZIP is encrypted.")
        if info.is_dir():
            continue
        total += info.file_size
        if info.file_size > 2**20 and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            _refuse(
                f"{name[:80]!r} would inflate {info.file_size / max(info.compress_size, 1):,.0f} "
                "times (a ZIP bomb?); images barely compress."
            )
    if total > MAX_INFLATED:
        _refuse(
            f"the ZIP would inflate to {total / 2**30:.1f} GB; at most {MAX_INFLATED >> 30} GB."
        )
    return files


def _layout(names: list[str]) -> tuple[int, list[str]]:
    """How many leading folders to drop (a ZIP of the folder itself has one more level), and
    the sorted class names (the folders at the class level)."""
    parts = [PurePosixPath(n).parts for n in names]
    depth = 0
    while True:
        tops = {p[depth] for p in parts if len(p) > depth + 1}
        if len(tops) == 1 and all(len(p) > depth + 2 for p in parts):
            depth += 1  # one common folder around everything
            continue
        return depth, sorted(tops)


def read_zip_images(
    data: bytes,
    pre: Preprocessing,
    *,
    progress: Callable[[int, int], object] | None = None,
    max_bytes: int = MAX_PIXELS,
) -> ZipImages:
    """Check, inflate and prepare an uploaded ZIP of an ImageFolder (one folder per class).
    Files that are not images, can't be decoded, or come out another size than the first
    image are skipped and listed in `problems`. The prepared float32 images may hold at most
    `max_bytes` (a server passes its budget's share), refused from the first image's size.
    Raises WorkspaceError saying why not."""
    if len(data) > MAX_ZIP_BYTES:
        _refuse(f"the ZIP is {len(data) / 2**20:.0f} MB; at most {MAX_ZIP_BYTES >> 20} MB.")
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError) as err:
        raise WorkspaceError(f"This is not a readable ZIP file ({err}).") from None
    with z:
        classes, chosen, problems = _choose(z)
        arrays, paths, labels = _prepare(z, chosen, pre, problems, progress, max_bytes)
    if not arrays:
        raise WorkspaceError("No image in the ZIP could be read: " + _first_problems(problems))
    return ZipImages(
        paths=paths,
        labels=np.asarray(labels, dtype=np.int64),
        classes=tuple(classes),
        x=np.stack(arrays),
        preprocessing=pre,
        problems=problems,
        sha256=hashlib.sha256(data).hexdigest(),
    )


def _choose(z: zipfile.ZipFile) -> tuple[list[str], list[tuple], list[dict]]:
    """The class names, the images to read `(path, label, info)` in class then path order, and
    the files skipped (not in a class folder, not an image, too large, an empty class)."""
    files = [
        i
        for i in _entries(z)
        if not any(p.startswith(".") or p == "__MACOSX" for p in PurePosixPath(i.filename).parts)
    ]
    pictures = [
        i.filename for i in files if PurePosixPath(i.filename).suffix.lower() in IMAGE_SUFFIXES
    ]
    depth, classes = _layout(pictures)
    if not 2 <= len(classes) <= MAX_CLASSES:
        raise WorkspaceError(
            f"The ZIP must hold one folder per class (2 to {MAX_CLASSES}); found "
            f"{len(classes)}: {', '.join(classes[:5]) or 'none'}."
        )
    index = {c: k for k, c in enumerate(classes)}
    problems, chosen = [], []
    for info in files:
        parts = PurePosixPath(info.filename).parts[depth:]
        rel = "/".join(parts)
        if len(parts) < 2 or parts[0] not in index:
            problems.append({"path": info.filename, "reason": "not inside a class folder"})
        elif PurePosixPath(rel).suffix.lower() not in IMAGE_SUFFIXES:
            problems.append({"path": rel, "reason": "not an image file"})
        elif info.file_size > MAX_IMAGE:
            problems.append({"path": rel, "reason": f"over {MAX_IMAGE >> 20} MB"})
        else:
            chosen.append((rel, index[parts[0]], info))
    chosen.sort(key=lambda t: (t[1], t[0]))
    for name in classes:
        if not any(k == index[name] for _, k, _ in chosen):
            problems.append({"path": name, "reason": f"the class folder {name!r} is empty"})
    return classes, chosen, problems


def _prepare(z: zipfile.ZipFile, chosen, pre: Preprocessing, problems: list[dict], progress,
             max_bytes: int) -> tuple[list[np.ndarray], list[str], list[int]]:  # fmt: skip
    """The chosen images decoded and prepared, within the ZIP's decode budget; those that can't
    be, or come out another size than the first, go to `problems`."""
    arrays, paths, labels, shape = [], [], [], None
    budget = _DecodeBudget(pre)
    for n, (rel, label, info) in enumerate(chosen):
        try:
            a = _decode(z, info, rel, pre, budget)
        except _TooLarge as err:
            problems.append({"path": rel, "reason": str(err)})
            continue
        except (ImageError, zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
            if isinstance(err, WorkspaceError):  # the whole ZIP is over its budget
                raise
            problems.append({"path": rel, "reason": f"can't be read: {err}"})
            continue
        if shape is None:
            shape = a.shape
            budget.first(a.shape)
            if len(chosen) * a.nbytes > max_bytes:
                _refuse(
                    f"{len(chosen):,} images of {a.shape[1]} × {a.shape[2]} need "
                    f"{len(chosen) * a.nbytes / 2**20:,.0f} MB prepared; this server keeps "
                    f"at most {max_bytes >> 20} MB: resize them smaller, send fewer, or "
                    "index them on your own machine with python -m workspace.index."
                )
        if a.shape != shape:
            problems.append(
                {"path": rel, "reason": f"{a.shape[2]} × {a.shape[1]}, not "
                 f"{shape[2]} × {shape[1]} like the first image: add a resize and crop"}
            )  # fmt: skip
            continue
        arrays.append(a)
        paths.append(rel)
        labels.append(label)
        if progress and (n + 1) % 50 == 0:
            progress(n + 1, len(chosen))
    return arrays, paths, labels


def _decode(z: zipfile.ZipFile, info, rel: str, pre: Preprocessing, budget) -> np.ndarray:
    raw = z.read(info)  # at most the declared size (checked against the CRC)
    return pre(
        decode_image(
            raw, max_bytes=MAX_IMAGE,
            # A JPEG at least 4 times the resize is decoded at 1/2-1/8 scale in
            # the DCT, still at least twice the resize. A crop alone keeps the
            # scale: without a resize, every image is decoded at its size.
            shrink_above=0 if pre.resize else None,
            shrink_to=2 * (pre.resize or 1),
            check=lambda size, rel=rel: budget.spend(size, rel),
        )
    )  # fmt: skip


class _TooLarge(ImageError):
    """One image far larger than the preparation keeps: skipped, from its header."""


class _DecodeBudget:
    """The pixels one ZIP may have decoded (`ZIP_DECODE_PIXELS`), and the most one image may
    have, relative to what the preparation keeps (`OVERSIZE`, `ENTRY_FLOOR`)."""

    def __init__(self, pre: Preprocessing) -> None:
        self.spent = 0
        self.side = pre.resize or pre.crop or 0  # 0: the first image's size decides
        self.most = self._most()

    def _most(self) -> int | None:
        return max(ENTRY_FLOOR, OVERSIZE * self.side**2) if self.side else None

    def first(self, shape: tuple[int, ...]) -> None:
        """The first prepared image's `(C, H, W)`: with no resize or crop, what all must be."""
        if not self.side:
            self.side = min(shape[1:])
            self.most = self._most()

    def spend(self, size: tuple[int, int], rel: str) -> None:
        """Called with the size an image will be decoded at, before it is decoded."""
        w, h = size
        if self.most is not None and w * h > self.most:
            raise _TooLarge(
                f"{w} × {h} = {w * h:,} pixels, far more than the {self.side} px images this "
                f"workspace prepares need (at most {self.most:,} pixels each here): shrink it"
            )
        if self.spent + w * h > ZIP_DECODE_PIXELS:
            _refuse(
                f"the ZIP's images add up to more than {ZIP_DECODE_PIXELS / 1e6:,.0f} million "
                f"pixels to decode ({rel[:80]!r} would make it {(self.spent + w * h) / 1e6:,.0f} "
                "million), the most this server decodes for one upload: resize the pictures "
                "smaller, or send fewer."
            )
        self.spent += w * h


def _first_problems(problems: list[dict], n: int = 3) -> str:
    return "; ".join(f"{p['path']}: {p['reason']}" for p in problems[:n]) or "it holds none."


@dataclass
class Built:
    """What indexing an uploaded workspace found: the index's outputs, in memory."""

    name: str  # "upload:<hash>" of the model, the images and the settings
    images: ZipImages
    predicted: np.ndarray
    p_predicted: np.ndarray
    p_label: np.ndarray
    top_classes: np.ndarray
    top_probabilities: np.ndarray
    summary: dict[str, np.ndarray]
    seconds_per_image: float
    n_params: int
    kind: str

    @property
    def accuracy(self) -> float:
        return float((self.predicted == self.images.labels).mean())

    def predictions_csv(self) -> str:
        """`predictions.csv` as `python -m workspace.index` writes it."""
        lines = ["path,label,predicted,p_predicted,p_label"]
        for i, path in enumerate(self.images.paths):
            quoted = '"' + path.replace('"', '""') + '"' if "," in path or '"' in path else path
            lines.append(
                f"{quoted},{self.images.labels[i]},{self.predicted[i]},"
                f"{float(self.p_predicted[i]):.6g},{float(self.p_label[i]):.6g}"
            )
        return "\n".join(lines) + "\n"


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64) - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def build(
    model: bytes,
    images: ZipImages,
    *,
    kind: str = "auto",
    architecture: str | None = None,
    filename: str = "",
    limits=None,
    time_limit: float | None = None,
    progress: Callable[[int, int], object] | None = None,
    max_sums: int = MAX_SUMS,
    output: str | int | None = None,
):
    """Check the model in a sandboxed worker on these images, then index them there. Returns
    `(worker, Built)`; the worker keeps running (the views use it). The float64 maps it keeps
    (each class's mean, and for K <= ALL_CLASSES_UP_TO every class's over all images) may hold
    at most `max_sums` bytes. `architecture` names the architecture of weights (a state dict
    or a safetensors file: registry, torchvision or timm). Raises UserModelError saying why not
    (the worker is stopped then)."""
    from sandbox.user_models import checked_worker
    from sandbox.worker import Limits, Worker

    x = images.x
    k = len(images.classes)
    per_class = k * int(np.prod(x.shape[1:])) * 8
    if per_class * (2 if k <= ALL_CLASSES_UP_TO else 1) > max_sums:
        raise UserModelError(
            f"{k:,} classes × {x.shape[1]} × {x.shape[2]} × {x.shape[3]} pixels is too big to "
            "summarise on this server: resize the images smaller, or index the folder on your "
            "own machine with python -m workspace.index."
        )
    settings = _settings(kind, images.preprocessing, architecture, output)
    digest = hashlib.sha256(model + images.sha256.encode() + repr(settings).encode()).hexdigest()
    worker = Worker(model, settings, example=x[:1], n_classes=k, limits=limits or Limits())
    with checked_worker(worker, kind, n_classes=k, time_limit=time_limit) as seconds:
        # A forward and a backward pass cost about three forwards: chunks of about a second.
        chunk = int(min(256, max(1, 0.3 / max(seconds, 1e-4))))
        total = len(x) * (2 if k <= ALL_CLASSES_UP_TO else 1)
        logits, sums = _own_class(worker, images, chunk, total, progress)
        every = None
        if k <= ALL_CLASSES_UP_TO:
            every = _every_class(worker, x, k, chunk, total, progress)
    summary = _summary(images, logits, sums, every)
    return worker, Built(
        name=kinds.upload(digest[:12]),
        images=images,
        **summary,
        seconds_per_image=seconds,
        n_params=int((worker.facts or {}).get("n_params", 0)),
        kind=kind,
    )


def _settings(kind: str, pre: Preprocessing, architecture, output) -> dict:
    """The worker's settings: the model's kind, the preparation, and where they apply the
    architecture of weights and the scores' entry in a tuple or dict output."""
    settings = {
        "kind": kind,
        "preprocessing": {"channels": pre.channels, "mean": list(pre.mean), "std": list(pre.std),
                          "resize": pre.resize, "crop": pre.crop},
    }  # fmt: skip
    if architecture:  # weights (a state dict, safetensors) for a registry or torchvision name
        settings["architecture"] = architecture
    if output_key(output) is not None:  # the scores' entry in a tuple or dict output
        settings["output"] = output_key(output)
    return settings


def _own_class(worker, images: ZipImages, chunk: int, total: int, progress):
    """Every image's logits `(N, K)` and the float64 sums of |∂logit_label/∂x| per class."""
    x, labels, k = images.x, images.labels, len(images.classes)
    n = len(x)
    logits = np.empty((n, k), np.float32)
    sums = np.zeros((k, *x.shape[1:]), np.float64)
    for i in range(0, n, chunk):
        part = worker.call("own_class", x[i : i + chunk], labels=labels[i : i + chunk])
        b = min(chunk, n - i)
        got_l = np.asarray(part.get("logits"), np.float32)
        got_m = np.asarray(part.get("maps"), np.float64)
        if got_l.shape != (b, k) or got_m.shape != (b, *x.shape[1:]):
            raise UserModelError(
                f"The model's worker returned shapes {got_l.shape} and {got_m.shape}."
            )
        if not (np.isfinite(got_l).all() and np.isfinite(got_m).all()):
            raise UserModelError("The model gave NaN or infinite scores for some images.")
        logits[i : i + b] = got_l
        np.add.at(sums, labels[i : i + b], got_m)
        if progress:
            progress(i + b, total)
    return logits, sums


def _every_class(worker, x: np.ndarray, k: int, chunk: int, total: int, progress) -> np.ndarray:
    """The float64 sum over all images of every class's |∂logit_c/∂x| `(K, C, H, W)`."""
    n = len(x)
    every = np.zeros((k, *x.shape[1:]), np.float64)
    size = k * int(np.prod(x.shape[1:])) * 4
    step = int(max(1, min(chunk, (32 * 2**20) // size)))
    for i in range(0, n, step):
        b = min(step, n - i)
        maps = worker.call(
            "class_maps", x[i : i + b], method="gradient", score="logit", absolute=True
        )
        maps = np.asarray(maps, np.float64)
        if maps.shape != (b, k, *x.shape[1:]):
            raise UserModelError(f"The model's worker returned shape {maps.shape}.")
        every += maps.sum(0)
        if progress:
            progress(n + i + b, total)
    return every


def _summary(images: ZipImages, logits: np.ndarray, sums: np.ndarray, every) -> dict:
    """`Built`'s predictions, top-5 and summary arrays from the logits and the sums."""
    labels, k, n = images.labels, len(images.classes), len(logits)
    probs = _softmax(logits)
    top = np.argsort(-probs, axis=1, kind="stable")[:, : min(5, k)]
    rows = np.arange(n)
    counts = np.bincount(labels, minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / np.where(counts > 0, counts, np.nan).reshape(-1, *[1] * (sums.ndim - 1))
    summary = {
        "mean_abs_grad_by_class": means,
        "counts": counts,
        "confusion": np.bincount(labels * k + top[:, 0], minlength=k * k).reshape(k, k),
    }
    if every is not None:
        summary["mean_abs_grad_all"] = every / n
    return {
        "predicted": top[:, 0],
        "p_predicted": probs[rows, top[:, 0]].astype(np.float32),
        "p_label": probs[rows, labels].astype(np.float32),
        "top_classes": top,
        "top_probabilities": np.take_along_axis(probs, top, 1).astype(np.float32),
        "summary": summary,
    }
