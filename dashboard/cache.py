"""Everything slow, computed once: models per process, maps and predictions in bounded caches.

Registry models are shared by every session (`st.cache_resource`) and never mutated: the
saliency functions leave a model's flags and parameters as they found them. Uploaded models
never run in this process: each lives in a sandboxed worker (`sandbox.worker`), and every
computation is a job of `sandbox.jobs`, run here or there by `run`. Computed arrays go
through `dashboard.lru.memo`, bounded in bytes by the server's budget (`dashboard.budget`), and
are handed out read-only: a long-running classroom server does not grow without limit.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import streamlit as st

import pretrained
import saliency
import workspace
from dashboard import first_answers, render, sources
from dashboard.lru import key_part, memo
from saliency import display
from saliency._atomic import write_atomically
from sandbox import kinds, worker
from sandbox.text import clean
from workspace import model_ref

# Session key: the names of the models this session uploaded (`state.remember_upload`).
USER_MODELS = "user_models"

# torch, the jobs and the uploads' module are imported where a model is loaded or run: until
# then, a first page drawn from `first_answers` doesn't wait seconds for torch's import.
if TYPE_CHECKING:
    import torch

    from sandbox.user_models import UserModelInfo

# Method options used everywhere in the app (named on screen): images live in [0, 1].
METHOD_OPTIONS = {
    "smoothgrad": {"n_samples": 50, "noise": 0.15, "noise_range": (0.0, 1.0), "seed": 0},
    "smoothgrad_sq": {"n_samples": 50, "noise": 0.15, "noise_range": (0.0, 1.0), "seed": 0},
    "vargrad": {"n_samples": 50, "noise": 0.15, "noise_range": (0.0, 1.0), "seed": 0},
    "integrated_gradients": {"steps": 50, "baseline": 0.0},
}


@st.cache_resource(show_spinner="Loading the model…", max_entries=32)
def _registry_model(name: str) -> torch.nn.Module:
    return pretrained.load_model(name)


# --- users' own models: each in its own sandboxed worker process (sandbox.worker) ---------

MAX_UPLOADS = 16  # accepted uploads kept per server; the least recently used is forgotten first
# Running workers over the whole server (uploads, workspace builds, Tables, every check):
# `SALIENCY_MAX_WORKERS` (default 4), held by `sandbox.worker`. Requests beyond it wait in
# line; an idle worker is stopped to make room, and restarted when it is used again.
MAX_LIVE_WORKERS = worker.max_workers()


@st.cache_resource(show_spinner=False)
def uploads() -> worker.Pool:
    """The server's accepted uploads. Uploads are content-addressed (`upload:<hash>`), so two
    sessions uploading the same file with the same settings share one worker; a session only
    lists the uploads it made or claimed with their secret token (see `state.models`)."""
    return worker.Pool(max_models=MAX_UPLOADS)  # live workers: `worker.max_workers()`


def uploads_allowed() -> bool:
    """False when the server was started with `--no-uploads` (SALIENCY_UPLOADS=off): no model,
    image or photo can be uploaded; drawing and the bundled models still work."""
    return os.environ.get("SALIENCY_UPLOADS", "on").lower() not in ("off", "0", "false", "no")


def display_name(name: str) -> str:
    """A model as people read it, as plain text: an upload by its file's name, with its short
    hash where this session has two of that name (one file checked with two settings); an
    ImageNet classifier by its title ("ResNet-18": its accuracy, or "random weights", follows
    it wherever it is named); other models by their name. The key (`upload:<hash>`) stays what
    links and caches use."""
    kind = kinds.parse(name).kind
    if kind == kinds.IMAGENET:
        return ref(name).info.title
    if kind != kinds.UPLOAD or name not in uploads():
        return name
    filename = uploads().get(name).info.filename or "your model"
    same = [
        other
        for other in st.session_state.get(USER_MODELS, [])
        if other != name and other in uploads() and uploads().get(other).info.filename == filename
    ]
    short = kinds.parse(name).name[:6]
    return clean(f"{filename} · {short}" if same else filename)


# --- a workspace's model: the operator's own file (python -m dashboard --workspace W) -------


@dataclass(frozen=True)
class WorkspaceModelInfo:
    """What the index measured: a workspace's model is named like its workspace (`ws:<name>`)."""

    name: str
    dataset: str
    description: str
    class_names: tuple[str, ...]
    weights_sha256: str
    test_accuracy: float  # on the workspace's own images, as indexed
    n_test: int


def _workspace_model(key: str, sha256: str) -> torch.nn.Module:
    """Read as the index read it (behind the gate), once per process (`python -m dashboard`'s
    warm-up reads it before the first visitor comes); refused when the file changed since."""
    src = sources.source(key)
    device = str(pretrained.default_device())
    return workspace.shared_model(src.indexed.config, len(src.classes), sha256, device)


def _workspace_info(key: str) -> WorkspaceModelInfo:
    ws = sources.source(key).indexed
    return WorkspaceModelInfo(
        name=key,
        dataset=key,
        description=f"{Path(ws.config.model).name}, indexed on {len(ws.paths):,} images",
        class_names=ws.classes,
        weights_sha256=ws.model_sha256,
        test_accuracy=ws.accuracy,
        n_test=len(ws.paths),
    )


def ref(name: str) -> model_ref.ModelRef:
    """The handle of model `name`, whatever its kind (the one place in the dashboard that reads
    a model key's kind): a registry model or a workspace's runs here, shared by every session
    and never mutated; an upload runs in its sandboxed worker; an ImageNet classifier (the
    ImageNet workspace's) is torchvision's."""
    kind, rest = kinds.parse(name)
    if kind == kinds.UPLOAD:
        return model_ref.sandboxed(name, uploads())
    if kind == kinds.WORKSPACE:
        info = _workspace_info(name)
        return model_ref.in_process(
            name, info, functools.partial(_workspace_model, name, info.weights_sha256)
        )
    if kind == kinds.IMAGENET:
        from workspace import imagenet

        arch, weights = kinds.imagenet_parts(name)
        load = functools.partial(imagenet_model, arch, weights)
        return model_ref.in_process(name, imagenet.card(arch, weights, name, sources.PHOTOS), load)
    load = functools.partial(_registry_model, name)
    return model_ref.in_process(name, pretrained.model_info(name), load, stored=True)


def model(name: str) -> torch.nn.Module:
    """`ref(name).module()`: the model object of a trusted model. Uploaded models have no
    object in this process: their computations go through `run`."""
    return ref(name).module()


def model_info(name: str) -> pretrained.ModelInfo | UserModelInfo | WorkspaceModelInfo:
    """The registry's model card, what was measured when an upload was accepted, or what the
    index of a workspace measured."""
    return ref(name).info


def run(name: str, job: str, x: np.ndarray, **kwargs) -> Any:
    """`ref(name).run(job, x, **kwargs)`, a job of `sandbox.jobs`: in this process for a
    trusted model, in the upload's sandboxed worker for an uploaded one (which raises
    `worker.ModelFailure`, with a message for the page, when the model hangs, hoards memory or
    crashes). A bundled model's answer stored in `first_answers` (the default view's) is read,
    not computed."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    timeout = kwargs.pop("timeout", None)  # seconds an upload's worker may take (a long job)
    handle = ref(name)
    if handle.stored and first_answers.may_hold(job, x.shape):
        # the default view's answers, stored with the code
        stored = first_answers.get(name, handle.info.weights_sha256, job, x, kwargs)
        if stored is not None:
            return stored
    return handle.run(job, x, timeout=timeout, **kwargs)


@st.cache_resource(show_spinner="Loading the test set…")
def dataset(name: str) -> pretrained.Dataset:
    return pretrained.load_dataset(name, "test")


def predictions(name: str, key: str) -> sources.Predictions:
    """What model `name` says about every image of source `key`: computed once for a bundled
    test set (`test_set_probabilities`), read from the index for a workspace."""
    src = sources.source(key)
    if src.predictions is not None and name == src.model:
        return src.predictions
    return _bundled_predictions(name, key)


@memo("maps")
def _bundled_predictions(name: str, key: str) -> sources.Predictions:
    labels = sources.source(key).labels
    return sources.Predictions.from_probabilities(test_set_probabilities(name, key), labels)


def _one(image: np.ndarray) -> np.ndarray:
    """A batch of one: `(1, C, H, W)` float32 from `(C, H, W)`, or from `(H, W)` grey."""
    image = np.asarray(image, dtype=np.float32)
    return np.ascontiguousarray(image[None] if image.ndim == 3 else image[None, None])


def _reduce(m: np.ndarray, absolute: bool) -> np.ndarray:
    """`(C, H, W)` -> `(H, W)`: max |g| over the channels for absolute maps (Simonyan et
    al.), the signed sum for signed ones; one channel is kept."""
    if m.shape[0] == 1:
        return m[0]
    return display.reduce_channels(m, "max" if absolute else "sum")


_COMPUTING: dict[tuple, threading.Lock] = {}
_COMPUTING_LOCK = threading.Lock()


def one_at_a_time(cached: Callable) -> Callable:
    """`cached` (a `memo` function) computes each set of arguments once even when two
    threads ask at the same moment (a page's rerun and the explore route, or a class of
    students on one image): the second waits for the first, then reads the cache."""

    @functools.wraps(cached)
    def call(*args, **kwargs):
        key = (cached.__name__, *map(key_part, args), *sorted(kwargs.items()))
        with _COMPUTING_LOCK:
            lock = _COMPUTING.setdefault(key, threading.Lock())
        try:
            with lock:
                return cached(*args, **kwargs)
        finally:
            with _COMPUTING_LOCK:
                if not lock.locked():
                    _COMPUTING.pop(key, None)

    return call


@memo("maps")
def probabilities(name: str, image: np.ndarray) -> np.ndarray:
    """(K,) softmax probabilities of one image `(C, H, W)` (or `(H, W)` grey)."""
    return run(name, "probabilities", _one(image))[0]


@memo("maps")
def test_set_probabilities(name: str, dataset_name: str) -> np.ndarray:
    """(10000, K) float32 probabilities of every bundled test image: read from the copy
    stored beside a bundled model's weights (`pretrained.test_predictions`), otherwise
    computed once per model in chunks of 1000 (each under the worker's deadline for an
    upload), with a progress bar and the time left on the page."""
    if ref(name).stored:
        from pretrained import test_predictions

        stored = test_predictions.stored(name, dataset_name)
        if stored is not None:
            return stored
    images = dataset(dataset_name).images.numpy()
    shown = render.plain(display_name(name))
    with page_progress(f"Classifying the {len(images):,} test images with {shown}…") as step:
        chunks = []
        for i in range(0, len(images), 1000):
            chunks.append(run(name, "probabilities", images[i : i + 1000]))
            step(i + len(chunks[-1]), len(images))
    return np.concatenate(chunks)


@contextmanager
def page_progress(text: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar with the rate and the time left, `step(done, total)`, on a page's run;
    a no-op elsewhere (the explore route's thread). The bar goes when the work is done."""
    from dashboard.compat_streamlit import in_script_run

    if not in_script_run():
        yield lambda done, total: None
        return
    bar = st.progress(0.0, text=text)
    start = time.perf_counter()

    def step(done: int, total: int) -> None:
        bar.progress(min(done / total, 1.0), text=f"{text} {render.counted(done, total, start)}")

    try:
        yield step
    finally:
        bar.empty()


@one_at_a_time
@memo("maps")
def class_maps(
    name: str,
    image: np.ndarray,
    method: str,
    score: str,
    absolute: bool,
    classes: tuple[int, ...] | None = None,
    layer: str = "",
) -> np.ndarray:
    """`(len(classes), H, W)` maps of one image (every class when `classes` is None: `(K, H,
    W)`), channels reduced by `_reduce` (gradient: one `jacobian` call). `layer`: a layer
    map's layer, by its dotted name ("" for the automatic one)."""
    from saliency import method_info

    options = dict(METHOD_OPTIONS.get(method, {}))
    if layer:
        options["layer"] = layer
    if not method_info(method).has_class:  # one map, whatever the class (attention rollout)
        one = run(name, "maps", _one(image), targets=np.zeros(1, np.int64), method=method,
                  score=score, absolute=absolute, **options)[0]  # fmt: skip
        k = len(classes) if classes is not None else len(model_info(name).class_names)
        return np.repeat(_reduce(one, absolute)[None], k, axis=0)
    if classes is not None:
        options["classes"] = [int(c) for c in classes]
    maps = run(
        name, "class_maps", _one(image), method=method, score=score, absolute=absolute, **options
    )[0]  # (k, C, H, W)
    return np.stack([_reduce(m, absolute) for m in maps])


@one_at_a_time
@memo("maps")
def contrast_map(
    name: str, image: np.ndarray, target: int, versus: int, method: str, score: str,
    layer: str = "",
) -> np.ndarray:  # fmt: skip
    """`(H, W)` signed map of score_target - score_versus (channels summed)."""
    options = {**METHOD_OPTIONS.get(method, {}), **({"layer": layer} if layer else {})}
    m = run(
        name,
        "contrast",
        _one(image),
        target=int(target),
        versus=int(versus),
        method=method,
        score=score,
        **options,
    )
    return _reduce(m[0], absolute=False)


@memo("maps")
def method_facts(name: str, shape: tuple[int, ...], method: str, layer: str = "") -> dict:
    """`jobs.method_facts` of model `name` on an input of `shape` (C, H, W): whether `method`
    applies, and a layer map's layer and choices. Once per model, shape and method (a
    forward pass with hooks; in the upload's worker for an upload)."""
    from saliency import method_info

    if not method_info(method).layer:
        return {"problem": "", "layer": "", "layers": []}
    return run(name, "method_facts", np.zeros((1, *shape), np.float32), method=method,
               layer=layer)  # fmt: skip


@memo("maps")
def integrated_gradients_delta(name: str, image: np.ndarray, target: int, score: str) -> float:
    """Completeness delta of IG for one image and class: sum(map) - (f(x) - f(baseline))."""
    delta = run(
        name,
        "ig_delta",
        _one(image),
        target=int(target),
        score=score,
        **METHOD_OPTIONS["integrated_gradients"],
    )
    return float(delta[0])


# --- data-set sensitivity, cached on disk so a second visit (and other users) get it at once ---


def cache_dir() -> Path:
    """$SALIENCY_CACHE_DIR, else ~/.cache/saliency-dashboard (read on every call)."""
    return Path(
        os.environ.get("SALIENCY_CACHE_DIR") or Path.home() / ".cache" / "saliency-dashboard"
    )


@st.cache_resource(show_spinner=False)
def live_store():
    """The live class's store: SALIENCY_CLASS_DB (Postgres) or SQLite in the cache folder."""
    from dashboard.live_store import LiveStore

    return LiveStore.open(cache_dir())


_SUMMARY_VERSION = 1  # bump when the summary's meaning or layout changes


def summary_path(model_name: str, dataset_name: str, n: int) -> Path:
    """Keyed by model name and weights hash, data set, number of test images, and format."""
    sha = model_info(model_name).weights_sha256[:12]
    stem = model_name.replace(":", "-")  # uploads are named "upload:<hash>"
    name = f"{stem}-{sha}-{dataset_name}-test{n}-logit-v{_SUMMARY_VERSION}.npz"
    return cache_dir() / "sensitivity" / name


_SUMMARY_KEYS = ("abs_sums", "signed_sums", "counts")


@memo("maps")
def _read_summary(path: str, mtime: float) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in _SUMMARY_KEYS}


def _summary_problem(arrays: dict[str, np.ndarray], k: int, shape: tuple, n: int) -> str | None:
    """Why a stored summary can't be this model's on `n` images of `shape`, or None."""
    want = {"abs_sums": (k, k, *shape), "signed_sums": (k, k, *shape), "counts": (k,)}
    for key, expected in want.items():
        if arrays[key].shape != expected:
            return f"{key} has shape {arrays[key].shape}, expected {expected}"
    if not all(np.issubdtype(a.dtype, np.number) for a in arrays.values()):
        return "it holds arrays that are not numbers"
    if int(arrays["counts"].sum()) != n:
        return f"its counts add up to {int(arrays['counts'].sum())}, not {n}"
    if not np.isfinite(arrays["abs_sums"]).all():
        return "it holds NaN or inf"
    return None


def stored_summary(
    model_name: str, dataset_name: str, n: int
) -> tuple[saliency.SensitivitySummary | None, str | None]:
    """`(summary, None)` from the disk cache, `(None, None)` when there is none, and
    `(None, note)` when the file is damaged, empty or of the wrong shape: it is then treated
    as missing (computing again replaces it), and the note says what was wrong with it."""
    path = summary_path(model_name, dataset_name, n)
    if not path.is_file():
        return None, None
    try:
        arrays = _read_summary(str(path), path.stat().st_mtime)
    except Exception as err:  # noqa: BLE001 - BadZipFile, EOFError, ValueError, OSError, …
        return None, f"the saved result was unreadable ({type(err).__name__}) and is ignored"
    import torch

    ds = dataset(dataset_name)
    problem = _summary_problem(arrays, len(ds.classes), tuple(ds.images.shape[1:]), n)
    if problem:
        return None, f"the saved result does not fit ({problem}) and is ignored"
    # a copy: the cached arrays are read-only and shared
    summary = {k: torch.from_numpy(v.copy()) for k, v in arrays.items()}
    return saliency.SensitivitySummary(**summary), None


_FLIGHTS: dict[str, threading.Lock] = {}
_FLIGHTS_LOCK = threading.Lock()


@contextmanager
def single_flight(key: str, waiting: Callable[[], Any] | None = None) -> Iterator[None]:
    """One computation per key at a time in this server (and, through a lock file, across
    servers sharing the cache folder): the others wait, calling `waiting()` first, and then
    find the result on disk."""
    with _FLIGHTS_LOCK:
        lock = _FLIGHTS.setdefault(key, threading.Lock())
    if not lock.acquire(blocking=False):
        if waiting:
            waiting()
        lock.acquire()
    try:
        import filelock  # (~20 ms: not on a first page's path)

        lock_file = Path(key).with_suffix(".lock")
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(lock_file):  # servers sharing the folder (any OS)
            yield
    finally:
        lock.release()


def save_atomically(path: Path, **arrays: np.ndarray) -> None:
    """Write an .npz atomically (`saliency._atomic`): readers see the old file or the whole
    new one, never half of one."""
    write_atomically(path, lambda f: np.savez(f, **arrays))


def compute_summary(
    model_name: str, dataset_name: str, n: int, progress=None, waiting=None
) -> saliency.SensitivitySummary:
    """One pass over the first `n` test images, in chunks of 256 (each a job: in this process,
    or in the upload's worker under its deadline), saved atomically to the disk cache.

    Single-flight: when another session is already computing the same entry, this waits for
    it (calling `waiting()`) and returns what it saved."""
    path = summary_path(model_name, dataset_name, n)
    with single_flight(str(path), waiting):
        done, _ = stored_summary(model_name, dataset_name, n)
        if done is not None:
            return done
        ds = dataset(dataset_name)
        k = len(ds.classes)
        sums: dict[str, np.ndarray] = {}
        for i in range(0, n, 256):
            x, y = ds[i : min(i + 256, n)]
            part = run(model_name, "summary", x.numpy(), labels=y.numpy(), num_classes=k)
            shapes = ((k, k, *x.shape[1:]), (k, k, *x.shape[1:]), (k,))
            for key, shape in zip(_SUMMARY_KEYS, shapes, strict=True):
                value = np.asarray(part[key], dtype=np.float64)  # from a worker: check it
                if value.shape != shape:
                    raise worker.ModelFailure(
                        f"The model's worker returned {key} of shape {value.shape}, not {shape}."
                    )
                sums[key] = sums[key] + value if key in sums else value
            if progress:
                progress(min(i + 256, n), n)
        save_atomically(path, **sums)
    import torch

    return saliency.SensitivitySummary(**{k: torch.from_numpy(v) for k, v in sums.items()})


# --- the ImageNet workspace's models: torchvision's ---------------------------------------


@st.cache_resource(show_spinner="Loading the ImageNet model…", max_entries=4)
def imagenet_model(name: str, weights: str) -> torch.nn.Module:
    """Raises `imagenet.WeightsUnavailable` (not cached) when pretrained weights are missing."""
    # Imported here: torchvision takes seconds to import, and only the ImageNet workspace needs it.
    from workspace import imagenet

    return imagenet.load(name, weights=weights, download=False)
