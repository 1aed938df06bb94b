"""Uploaded models run here: one sandboxed worker process per model, never in the server.

    >>> w = Worker(data, settings)          # nothing runs yet
    >>> facts = w.start()                   # load in the sandbox, gate, check one image
    >>> probs = w.call("probabilities", x)  # any job of `pretrained.jobs`, by name
    >>> w.stop()

How a worker starts:

1. It is forked from a *fork server* (`multiprocessing`'s "forkserver"), a clean process that
   has imported torch, Captum and this project once and never touches an upload. A worker
   therefore starts in a fraction of a second and shares those pages with its siblings.
2. It sets a parent-death signal (SIGKILL), lowers its priority, limits its threads, and
   receives the model file's bytes over its socket (it never opens the file: it has none).
3. It sets rlimits (`sandbox.limit_resources`: memory on top of what torch already maps, CPU
   seconds, no file may grow, no core) and installs the seccomp filter
   (`sandbox.lock_down`): from here on it can't open a file, start a process or use the
   network.
4. Only then does it read the model (`user_models.read_model`, where `gate.check_archive` and,
   for programs, `gate.check_program` refuse what isn't a pure tensor program) and run it on
   one image. Then it serves jobs until the server closes the socket.

The server's side (`Worker.call`) holds a deadline on every request: a worker that doesn't
answer in time is killed (SIGKILL) and restarted on the next request. Before each job the
worker also lowers its own RLIMIT_CPU to "used so far + the job's budget", so a job spinning
on every core is stopped by the kernel. An allocation past the memory limit fails inside the
model, the worker reports it and exits (dropping whatever the model hoarded), and the next
request starts a fresh one. Whatever a worker does, the server only ever reads JSON and raw
arrays of a few plain dtypes from it (`read_message`): never a pickle. Every request knows the
shape of its answer (`jobs.answer_shape`, `jobs.answer_bytes`), and a reply whose header
announces anything else is refused before a byte of its arrays is read.

The server runs at most `max_workers()` worker processes (SALIENCY_MAX_WORKERS, default 4),
whatever they are for: uploads, workspace builds, table models and the checks of each. A
worker that starts beyond that stops the least recently used idle one, or waits its turn in
line (`on_wait` lets a page show the wait) for at most SALIENCY_WORKER_WAIT_S seconds.

`Pool` keeps the accepted uploads of a server (their bytes, settings and facts), stopping the
least recently used workers beyond `max_live`. Never imports streamlit.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import math
import multiprocessing
import os
import resource
import secrets
import select
import signal
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pretrained import compat_mp

__all__ = [
    "Limits",
    "ModelCrashed",
    "ModelError",
    "ModelFailure",
    "ModelOutOfMemory",
    "ModelTimeout",
    "Pool",
    "ProtocolError",
    "Worker",
    "read_message",
    "write_message",
]

MAX_HEADER = 256 * 2**10  # bytes of JSON in one message
MAX_DEPTH = 32  # nesting of lists and dicts in one message's JSON
MAX_PAYLOAD = 2 * 2**30  # bytes of arrays in one message, when nothing tighter is known
DTYPES = frozenset({"float16", "float32", "float64", "int8", "uint8", "int32", "int64", "bool"})
FLOATS = frozenset({"float16", "float32", "float64"})
MAX_DIMS = 8


# --- errors -----------------------------------------------------------------------------------


class ModelFailure(RuntimeError):
    """An uploaded model failed in its worker. The message is for people; the server is fine."""


class ModelError(ModelFailure):
    """The model raised an error on this input (its worker is still running)."""


class ModelTimeout(ModelFailure):
    """The model didn't answer in time: its worker was killed."""


class ModelOutOfMemory(ModelFailure):
    """The model needed more memory than its worker may use: the worker was stopped."""


class ModelCrashed(ModelFailure):
    """The worker died (a crash, or a limit the kernel enforced)."""


class ProtocolError(ModelCrashed):
    """The worker sent something that isn't a well-formed message: it was killed."""


class WrongAnswer(ModelError, ProtocolError):
    """The worker announced an answer of another shape or size than its job answers: refused
    from the message's header, before its arrays were read, and the worker was killed."""


class WorkersBusy(ModelFailure):
    """Every worker this server may run was busy for longer than a request may wait."""


# --- wire format: a JSON header and raw arrays, never a pickle -----------------------------------


@dataclass(frozen=True)
class Expect:
    """What a reply may carry, known from its request before the reply arrives: `shapes`, the
    exact shapes of the floating-point arrays of a job that answers arrays (None: any), and
    `max_bytes` of arrays in all. A reply that reports an error carries no array."""

    max_bytes: int = MAX_PAYLOAD
    shapes: tuple[tuple[int, ...], ...] | None = None

    def problem(self, specs: list[tuple[np.dtype, tuple[int, ...]]]) -> str | None:
        """Why arrays of these (dtype, shape) are not this answer, or None."""
        if self.shapes is not None and specs:
            got = tuple(shape for _, shape in specs)
            if got != self.shapes:
                return f"shape {_shapes(got)} instead of {_shapes(self.shapes)}"
            if any(d.name not in FLOATS for d, _ in specs):
                names = ", ".join(sorted({d.name for d, _ in specs}))
                return f"an array of {names} instead of an array of floats"
        total = sum(math.prod(shape) * dtype.itemsize for dtype, shape in specs)
        if total > self.max_bytes:
            return f"an answer of {total:,} bytes where this job answers at most {self.max_bytes:,}"
        return None


def _shapes(shapes: tuple[tuple[int, ...], ...]) -> str:
    return str(shapes[0]) if len(shapes) == 1 else ", ".join(map(str, shapes))


def _to_wire(obj: Any, arrays: list[np.ndarray]) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.name not in DTYPES:
            raise TypeError(f"arrays of dtype {obj.dtype} can't be sent")
        arrays.append(np.ascontiguousarray(obj))
        return {"__array__": len(arrays) - 1}
    if hasattr(obj, "detach") and hasattr(obj, "numpy"):  # a torch tensor
        return _to_wire(obj.detach().cpu().numpy(), arrays)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {str(k): _to_wire(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_to_wire(v, arrays) for v in obj]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if isinstance(obj, bytes):
        return _to_wire(np.frombuffer(obj, dtype=np.uint8), arrays)
    raise TypeError(f"a {type(obj).__name__} can't be sent to or from a worker")


def _from_wire(obj: Any, arrays: list[np.ndarray]) -> Any:
    if isinstance(obj, dict):
        if len(obj) == 1 and "__array__" in obj:
            i = obj["__array__"]
            if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < len(arrays):
                raise ProtocolError("a message refers to an array it doesn't carry")
            return arrays[i]
        return {k: _from_wire(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_from_wire(v, arrays) for v in obj]
    return obj


def _depth(obj: Any) -> int:
    """How deeply lists and dicts nest in `obj`, without recursion (a hostile message may nest
    deeper than Python's stack allows)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        value, d = stack.pop()
        if isinstance(value, dict | list):
            deepest = max(deepest, d)
            if deepest > MAX_DEPTH:
                return deepest
            stack.extend((v, d + 1) for v in (value.values() if isinstance(value, dict) else value))
    return deepest


def write_message(fd: int, obj: Any, deadline: float | None = None) -> None:
    """Send `obj` (JSON-able values and numpy arrays, nested in dicts and lists)."""
    arrays: list[np.ndarray] = []
    body = _to_wire(obj, arrays)
    header = json.dumps(
        {"body": body, "arrays": [[a.dtype.name, list(a.shape)] for a in arrays]}
    ).encode()
    if len(header) > MAX_HEADER:
        raise ValueError(f"message header of {len(header)} bytes is too large")
    _write_all(fd, struct.pack("<I", len(header)) + header, deadline)
    for a in arrays:
        if a.nbytes:
            _write_all(fd, memoryview(a.reshape(-1)).cast("B"), deadline)


def read_message(fd: int, deadline: float | None = None, expect: Expect | None = None) -> Any:
    """Read one message, trusting nothing in it: JSON of at most `MAX_HEADER` bytes nested at
    most `MAX_DEPTH` deep, arrays of `DTYPES` whose announced shapes are checked against
    `expect` (what the request can be answered with) before a byte of them is read or any
    memory is set aside for them. Raises EOFError at end of stream, TimeoutError past
    `deadline` (a `time.monotonic()` value), WrongAnswer for arrays that are not the job's
    answer and ProtocolError for anything malformed."""
    (n,) = struct.unpack("<I", _read_exact(fd, 4, deadline))
    if n > MAX_HEADER:
        raise ProtocolError(f"a message header of {n:,} bytes (at most {MAX_HEADER:,})")
    raw = bytes(_read_exact(fd, n, deadline))
    try:
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise TypeError
        if _depth(header) > MAX_DEPTH:
            raise ProtocolError(f"a message header nested more than {MAX_DEPTH} deep")
        specs = header["arrays"]
        body = header["body"]
        if not isinstance(specs, list):
            raise TypeError
        shapes = []
        for spec in specs:
            dtype, shape = spec
            if dtype not in DTYPES or not isinstance(shape, list) or len(shape) > MAX_DIMS:
                raise TypeError
            if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
                raise TypeError
            shapes.append((np.dtype(dtype), tuple(shape)))
    except ProtocolError:
        raise
    except (ValueError, TypeError, KeyError, RecursionError, MemoryError):
        raise ProtocolError("a malformed message header") from None
    problem = (expect or Expect()).problem(shapes)
    if problem:
        raise WrongAnswer(problem)
    sizes = [math.prod(shape) * dtype.itemsize for dtype, shape in shapes]
    if sum(sizes) > MAX_PAYLOAD:
        raise ProtocolError(f"a message of {sum(sizes):,} bytes of arrays (most: {MAX_PAYLOAD:,})")
    arrays = [
        np.frombuffer(_read_exact(fd, size, deadline), dtype=dtype).reshape(shape)
        if size
        else np.zeros(shape, dtype)
        for (dtype, shape), size in zip(shapes, sizes, strict=True)
    ]
    return _from_wire(body, arrays)


def _wait(fd: int, for_write: bool, deadline: float | None) -> None:
    if deadline is None:
        return
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    r, w, _ = select.select([] if for_write else [fd], [fd] if for_write else [], [], left)
    if not (r or w):
        raise TimeoutError


def _read_exact(fd: int, n: int, deadline: float | None) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        _wait(fd, False, deadline)
        try:
            chunk = os.readv(fd, [view[got : got + (1 << 20)]])
        except BlockingIOError:  # a non-blocking descriptor with nothing to read yet
            continue
        if chunk == 0:
            raise EOFError
        got += chunk
    return buf


def _write_all(fd: int, data: bytes | memoryview, deadline: float | None) -> None:
    view = memoryview(data)
    while view:
        _wait(fd, True, deadline)
        try:
            sent = os.write(fd, view[: 1 << 20])
        except BlockingIOError:
            continue
        view = view[sent:]


# --- limits -----------------------------------------------------------------------------------


def _env_number(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


# 1 GB, not 2: four workers of 2 GB were 8 GB, the whole of a classroom laptop. Every bundled
# architecture and the hostile-model tests run within 1 GB, and so do a scripted resnet18's
# workspace build and gradient maps at 224 × 224 (763 MB resident at the peak, about 400 MB of
# it shared). Its SmoothGrad and Integrated Gradients at 50 samples need more than 2 GB anyway.
DEFAULT_WORKER_MEMORY_MB = 1024


@dataclass(frozen=True)
class Limits:
    """What one worker may use. Defaults can be set with environment variables:
    SALIENCY_WORKER_MEMORY_MB, SALIENCY_WORKER_THREADS, SALIENCY_WORKER_TIMEOUT_S.

    `memory_bytes` is address space (RLIMIT_AS) on top of what the worker has mapped when the
    model arrives (torch, its thread pools, the file's bytes), so it bounds the model's own
    allocations and its resident memory above that base. The base is mostly pages shared with
    the fork server (about 400 of a worker's 500 MB resident), private ones about 35 MB. So
    `max_workers()` workers hold at most about N × (memory_bytes + 35 MB) beyond the fork
    server's own 0.5 GB: 4.3 GB with the defaults, 4 × 1 GB."""

    memory_bytes: int = field(
        default_factory=lambda: int(
            _env_number("SALIENCY_WORKER_MEMORY_MB", DEFAULT_WORKER_MEMORY_MB) * 2**20
        )
    )
    threads: int = field(
        default_factory=lambda: int(
            _env_number("SALIENCY_WORKER_THREADS", max(1, (os.cpu_count() or 2) // 2))
        )
    )
    job_seconds: float = field(
        default_factory=lambda: _env_number("SALIENCY_WORKER_TIMEOUT_S", 30.0)
    )  # wall time for one request
    load_seconds: float = 60.0  # wall time to start, read the model and run one image
    cpu_seconds_total: int = 24 * 3600  # a worker's whole life; it is restarted after that
    nice: int = 5  # the server's own threads come first
    confine: bool = True  # seccomp; False only for weights of the registry's own code
    gate: bool = True  # the operator allowlist; switched off only by tests of the sandbox


# --- one pool of worker processes for the whole server --------------------------------------------

DEFAULT_MAX_WORKERS = 4
DEFAULT_WAIT_SECONDS = 180.0


def max_workers() -> int:
    """How many worker processes this server may run at once, over every upload, workspace
    build, table model and check: `SALIENCY_MAX_WORKERS` (read on every call), at least 1."""
    return max(1, int(_env_number("SALIENCY_MAX_WORKERS", DEFAULT_MAX_WORKERS)))


def wait_seconds() -> float:
    """How long a request waits for a free worker before it is refused:
    `SALIENCY_WORKER_WAIT_S` (read on every call)."""
    return max(0.0, _env_number("SALIENCY_WORKER_WAIT_S", DEFAULT_WAIT_SECONDS))


@dataclass(frozen=True)
class Wait:
    """Where a request waiting for a worker stands, for the page to show."""

    ahead: int  # requests that will get a worker first
    busy: int  # workers running a request (or kept for a check) now
    limit: int  # `max_workers()`

    def __str__(self) -> str:
        people = "1 request" if self.ahead == 1 else f"{self.ahead} requests"
        ahead = f"{people} ahead of you" if self.ahead else "you are next"
        return f"Waiting for a free model worker (this server runs {self.limit}): {ahead}…"


_ON_WAIT: contextvars.ContextVar[Callable[[Wait], Any] | None] = contextvars.ContextVar(
    "on_wait", default=None
)


@contextlib.contextmanager
def on_wait(callback: Callable[[Wait], Any]) -> Iterator[None]:
    """Call `callback(Wait)` in this thread while a worker it asks for has to wait for a free
    one (the page shows it), each time the request's place in the queue changes."""
    token = _ON_WAIT.set(callback)
    try:
        yield
    finally:
        _ON_WAIT.reset(token)


class _Slots:
    """The server's worker processes, at most `max_workers()` alive at once. A worker takes a
    slot before its process starts and gives it back when the process is gone. When none is
    free, the first request in line stops the least recently used idle worker (one that is
    neither answering a request nor kept for a check in progress); otherwise requests wait in
    line, first come first served, for at most `wait_seconds()`."""

    POLL = 0.2  # seconds between looks for an idle worker (a worker turns idle silently)

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.holders: dict[int, Worker] = {}  # id -> worker; strong: a slot outlives no one
        self.line: list[object] = []

    def alive(self) -> list[Worker]:
        with self.cond:
            return list(self.holders.values())

    def acquire(self, w: Worker) -> None:
        """Take a slot for `w`, waiting in line; WorkersBusy after `wait_seconds()`."""
        ticket = object()
        patience = wait_seconds()
        deadline = time.monotonic() + patience
        callback = _ON_WAIT.get()
        shown: Wait | None = None
        with self.cond:
            self.line.append(ticket)
        try:
            while True:
                with self.cond:
                    if id(w) in self.holders:
                        return
                    ahead, limit = self.line.index(ticket), max_workers()
                    if ahead == 0 and len(self.holders) < limit:
                        self.holders[id(w)] = w
                        return
                    idle = sorted(
                        (h for h in self.holders.values() if not h.busy),
                        key=lambda h: h.last_used,
                    )
                    busy = len(self.holders) - len(idle)
                # Outside the lock: stopping a worker gives its slot back, which takes it.
                if ahead == 0 and any(h.stop_if_idle() for h in idle):
                    continue
                now = Wait(ahead, busy, limit)
                if callback is not None and now != shown:
                    shown = now
                    callback(now)
                left = deadline - time.monotonic()
                if left <= 0:
                    workers = "1 model worker" if limit == 1 else f"{limit} model workers"
                    raise WorkersBusy(
                        f"This server runs at most {workers} at once, and all were busy for "
                        f"{patience:g} s ({ahead + 1} waiting). Try again in a minute."
                    )
                with self.cond:
                    self.cond.wait(min(self.POLL, left))
        finally:
            with self.cond:
                self.line.remove(ticket)
                self.cond.notify_all()

    def release(self, w: Worker) -> None:
        with self.cond:
            if self.holders.pop(id(w), None) is not None:
                self.cond.notify_all()


SLOTS = _Slots()


def live_workers() -> list[Worker]:
    """Every worker of this server that holds a process (or is starting one)."""
    return SLOTS.alive()


# --- the worker process -------------------------------------------------------------------------

_PRELOAD = ["pretrained._forkserver"]


def _die_with_parent() -> None:
    """SIGKILL this process when its parent (the fork server) dies."""
    import ctypes

    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the signal was set
        os._exit(0)


def _warm_up(threads: int) -> None:
    """What imports lazily or maps files on first use and can't run in the fork server (it
    starts threads), done before the lockdown: the thread pools, the first backward pass and
    each saliency method."""
    import torch

    import saliency
    from pretrained import jobs

    torch.set_num_threads(threads)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(392, 3)
    ).eval()
    x = np.random.default_rng(0).random((2, 1, 16, 16), dtype=np.float32)  # SSIM needs 11 x 11
    for method in saliency.METHODS:
        opts = {"n_samples": 2} if method not in ("gradient", "integrated_gradients") else {}
        if method == "integrated_gradients":
            opts = {"steps": 2}
        jobs.class_maps(net, x, method=method, score="logit", absolute=True, **opts)
    for method, info in saliency.METHOD_INFO.items():  # the others: a backward of each kind
        if method in saliency.METHODS or info.needs == "transformer":
            continue
        jobs.class_maps(net, x, method=method, score="logit", absolute=True, classes=[0])
    from pretrained.architectures import VisionTransformer

    vit = VisionTransformer(3, image_size=16, patch_size=8, dim=8, depth=1, num_heads=2,
                            mlp_dim=8).eval()  # fmt: skip
    for method in saliency.methods("transformer"):
        jobs.maps(vit, x, targets=np.zeros(2, np.int64), method=method, score="logit",
                  absolute=True)  # fmt: skip
    jobs.summary(net, x, labels=np.array([0, 1]), num_classes=3)
    jobs.autograd_vs_fd(net, x[:1], target=0)
    jobs.sanity(net, x[:1], target=0)
    jobs.faithfulness(net, x[:1], target=0, start="blurred")


def _memory_error(err: BaseException) -> bool:
    text = str(err).lower()
    return (
        isinstance(err, MemoryError) or "can't allocate memory" in text or ("out of memory" in text)
    )


def _quiet() -> None:
    """stdin, stdout and stderr to /dev/null: what a model prints must not reach the server's
    terminal or log file (SALIENCY_WORKER_STDERR=1 keeps stderr, for debugging)."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1) if os.environ.get("SALIENCY_WORKER_STDERR") == "1" else (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def _serve(conn: Any, limits: Limits) -> None:
    """The worker's main: set up, lock down, load, then answer jobs until EOF."""
    _die_with_parent()
    _quiet()
    fd = conn.fileno()
    with contextlib.suppress(OSError):
        os.nice(limits.nice)
    _warm_up(limits.threads)
    request = read_message(fd)
    from pretrained import gate, jobs, model_files, sandbox, workspace  # noqa: F401
    from pretrained.model_files import error_line

    # Keep only the socket to the server (and /dev/null on 0-2): not the fork server's pipes,
    # not multiprocessing's resource tracker, nothing a warm-up left open.
    os.closerange(3, fd)
    os.closerange(fd + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    sandbox.limit_resources(memory_bytes=limits.memory_bytes, cpu_seconds=limits.cpu_seconds_total)
    if limits.confine:
        sandbox.lock_down()
    try:
        model, ops = model_files.read_model_with_ops(
            bytes(request["data"]), device="cpu", gate=limits.gate, **request["settings"]
        )
        facts = {"ops": sorted(ops), "n_params": sum(p.numel() for p in model.parameters())}
        write_message(fd, {"ok": True, "result": facts})
    except gate.UserModelError as err:
        write_message(fd, {"ok": False, "kind": "refused", "error": str(err)})
        os._exit(0)
    except Exception as err:  # noqa: BLE001 - the model's own failure, reported to the server
        kind = "memory" if _memory_error(err) else "error"
        write_message(fd, {"ok": False, "kind": kind, "error": error_line(err)})
        os._exit(0)
    del request
    while True:
        try:
            request = read_message(fd)
        except EOFError:
            os._exit(0)
        used = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
        budget = math.ceil(used + float(request.get("cpu_seconds", limits.job_seconds)))
        hard = resource.getrlimit(resource.RLIMIT_CPU)[1]  # a few seconds above the total
        resource.setrlimit(resource.RLIMIT_CPU, (min(budget, limits.cpu_seconds_total), hard))
        try:
            result = jobs.run(
                request["job"], model, *request.get("args", []), **request.get("kwargs", {})
            )
            reply = {"ok": True, "result": result}
        except Exception as err:  # noqa: BLE001 - the model's own failure, reported
            if _memory_error(err):
                write_message(fd, {"ok": False, "kind": "memory", "error": error_line(err)})
                os._exit(0)  # drop whatever the model hoarded
            reply = {"ok": False, "kind": "error", "error": error_line(err)}
        try:
            write_message(fd, reply)
        except (TypeError, ValueError) as err:  # a result the wire format can't carry
            write_message(fd, {"ok": False, "kind": "error", "error": error_line(err)})


# The fork server: one per server process, started on first use.
_CONTEXT: Any = None
_CONTEXT_LOCK = threading.Lock()
_PROCESS_NAME = "saliency-model-worker"


compat_mp.skip_parent_main(_PROCESS_NAME)  # a worker doesn't run the dashboard first


def _context() -> Any:
    global _CONTEXT
    with _CONTEXT_LOCK:
        if _CONTEXT is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(_PRELOAD)
            _CONTEXT = ctx
        return _CONTEXT


def _plain(text: Any, limit: int = 600) -> str:
    """A worker's error text (the model's own words, so untrusted): one line, bounded. A page
    that shows it escapes Markdown (`dashboard.render.plain`)."""
    return " ".join(str(text).split())[:limit]


_WHAT = {  # what a job is, in the time-out message: "The model did not … within 30 s"
    "check": "run on one image",
    "logits": "classify a batch of images",
    "probabilities": "classify the image",
    "class_maps": "compute the maps",
    "contrast": "compute the contrast map",
    "summary": "compute the mean sensitivity of a batch of images",
}


def _describe_exit(code: int | None) -> ModelFailure:
    if code is not None and code < 0:
        sig = -code
        if sig == signal.SIGXCPU:
            return ModelTimeout(
                "The model used more CPU time than one request may, so its worker was stopped."
            )
        if sig == signal.SIGXFSZ:
            return ModelCrashed("The model tried to write a file, so its worker was stopped.")
        if sig == signal.SIGKILL:
            return ModelCrashed(
                "The model's worker was killed (most likely by the system, out of memory)."
            )
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else sig
        return ModelCrashed(f"The model's worker crashed ({name}).")
    return ModelCrashed(f"The model's worker stopped unexpectedly (exit code {code}).")


class Worker:
    """One uploaded model in its own sandboxed process; thread-safe, one request at a time.

    `settings` are `user_models.read_model`'s keyword arguments (kind, dataset, architecture,
    normalisation); `example` is one input `(1, C, H, W)` for the check at start, and
    `n_classes` the number of scores the model must return. `check_job` is the job that check
    runs (a table model's, `table_outputs`, describes its outputs instead).
    """

    def __init__(
        self,
        data: bytes,
        settings: dict,
        *,
        example: np.ndarray,
        n_classes: int,
        limits: Limits | None = None,
        check_job: str = "check",
    ) -> None:
        self.data = bytes(data)
        self.check_job = check_job
        self.settings = dict(settings)
        self.example = np.ascontiguousarray(example, dtype=np.float32)
        self.n_classes = int(n_classes)
        self.limits = limits or Limits()
        self.process: Any = None
        self.conn: Any = None
        self.lock = threading.Lock()
        self.starts = 0
        self.failures = 0  # consecutive failures (deaths or time-outs); reset by a success
        self.last_used = 0.0
        self.facts: dict | None = None
        self.kept = 0  # checks in progress that need this worker between its requests

    @property
    def busy(self) -> bool:
        """Answering a request, or kept for a check in progress: not to be stopped for room."""
        return self.kept > 0 or self.lock.locked()

    @contextlib.contextmanager
    def keep(self) -> Iterator[Worker]:
        """Keep this worker running between requests (a check sends many in a row): the pool
        does not stop it to make room for another while this lasts."""
        with self.lock:
            self.kept += 1
        try:
            yield self
        finally:
            with self.lock:
                self.kept -= 1

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def rss(self) -> int:
        """Resident memory of the worker process in bytes (0 when not running)."""
        pid = self.pid
        if pid is None:
            return 0
        try:
            with open(f"/proc/{pid}/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return 0

    def start(self) -> dict:
        """Start the worker, load the model in the sandbox, check it on the example.

        Returns the check's facts (`shape`, `finite`, `seconds`, `ops`, `n_params`). Raises
        `gate.UserModelError` when the model is refused, a `ModelFailure` when it fails.
        """
        with self.lock:
            return self._start()

    def _start(self) -> dict:
        from pretrained import gate

        self._kill()
        ctx = _context()
        limits = self.limits
        if limits.confine:
            from pretrained import sandbox

            why = sandbox.unavailable()
            if why:
                raise gate.UserModelError(
                    f"This server can't run uploaded programs safely: {why}. The bundled models "
                    "still work."
                )
        SLOTS.acquire(self)  # waits for a free worker: this server runs max_workers() at most
        try:
            parent_conn, child_conn = ctx.Pipe(duplex=True)
        except BaseException:
            SLOTS.release(self)
            raise
        try:
            process = ctx.Process(
                target=_serve, args=(child_conn, limits), daemon=True, name=_PROCESS_NAME
            )
            process.start()
        except BaseException:
            SLOTS.release(self)
            parent_conn.close()
            raise
        finally:
            child_conn.close()
        os.set_blocking(parent_conn.fileno(), False)  # reads and writes wait in select()
        self.process, self.conn = process, parent_conn
        self.starts += 1
        request = {"data": self.data, "settings": self.settings}
        reply = self._exchange(request, limits.load_seconds, what="load", expect=Expect(0))
        if not reply.get("ok"):
            self._kill()
            kind, error = reply.get("kind"), _plain(reply.get("error", ""))
            if kind == "refused":
                raise gate.UserModelError(error)
            if kind == "memory":
                raise ModelOutOfMemory(
                    f"The model needs more than the {limits.memory_bytes // 2**20} MB this server "
                    f"gives one model ({error})."
                )
            raise ModelError(f"The model could not be read: {error}")
        if not isinstance(reply.get("result"), dict):
            self._kill()
            raise ProtocolError("The model's worker sent a malformed reply to loading.")
        facts = dict(reply["result"])
        try:
            facts.update(self._call(self.check_job, self.example, n_classes=self.n_classes))
        except ModelError as err:
            why = str(err).removeprefix("The model failed: ")
            shape = tuple(self.example.shape)
            what = "row" if self.check_job == "table_outputs" else "image"
            raise ModelError(f"The model failed on one {shape} {what}: {why}") from None
        self.facts = facts
        return facts

    def _exchange(self, request: dict, seconds: float, *, what: str, expect: Expect) -> dict:
        """Send one request and read its reply (refused from its header unless it is what
        `expect` allows); on any failure the worker is killed and a ModelFailure says why."""
        fd = self.conn.fileno()
        deadline = time.monotonic() + seconds
        try:
            write_message(fd, request, deadline)
            reply = read_message(fd, deadline, expect)
            if not isinstance(reply, dict):
                raise ProtocolError("a reply that is not a message")
            return reply
        except WrongAnswer as err:
            self._kill()
            self._failed()
            raise WrongAnswer(f"The model returned {err}, so its worker was stopped.") from None
        except TimeoutError:
            self._kill()
            self._failed()
            raise ModelTimeout(
                f"The model did not {what} within {seconds:g} s, so its worker was stopped."
            ) from None
        except ProtocolError as err:
            self._kill()
            self._failed()
            raise ProtocolError(f"The model's worker sent a malformed reply ({err}).") from None
        except (EOFError, OSError):
            code = self._reap()
            self._failed()
            raise _describe_exit(code) from None

    def call(self, job: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """Run `pretrained.jobs.JOBS[job](model, *args, **kwargs)` in the worker and return its
        result; starts (or restarts) the worker first when needed. `timeout` (seconds of wall
        and CPU time) defaults to `limits.job_seconds`."""
        with self.lock:
            if not self.alive:
                self._start()
            return self._call(job, *args, timeout=timeout, **kwargs)

    def _call(self, job: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        seconds = self.limits.job_seconds if timeout is None else float(timeout)
        self.last_used = time.monotonic()
        request = {
            "job": job,
            "args": list(args),
            "kwargs": kwargs,
            "cpu_seconds": seconds * max(1, self.limits.threads),
        }
        from pretrained import jobs  # torch: only where an upload runs

        x_shape = np.shape(args[0]) if args else (0,)
        shape = jobs.answer_shape(job, x_shape, self.n_classes, kwargs)
        expect = Expect(
            max_bytes=jobs.answer_bytes(job, x_shape, self.n_classes, kwargs),
            shapes=None if shape is None else (shape,),
        )
        reply = self._exchange(
            request, seconds, what=_WHAT.get(job, f"finish {job}"), expect=expect
        )
        if reply.get("ok"):
            result = reply.get("result")
            problem = jobs.check_result(job, result, x_shape, self.n_classes, kwargs)
            if problem:  # no arrays where the job answers one: the worker still runs
                raise ModelError(f"The model returned {problem}.")
            if job != self.check_job:  # a restart's own check doesn't clear a model's failures
                self.failures = 0
            return result
        error = _plain(reply.get("error", ""))
        if reply.get("kind") == "memory":
            self._reap()
            self._failed()
            raise ModelOutOfMemory(
                f"The model needed more than the {self.limits.memory_bytes // 2**20} MB this "
                f"server gives one model, so its worker was stopped ({error})."
            )
        raise ModelError(f"The model failed: {error}")

    def _failed(self) -> None:
        self.failures += 1

    def _reap(self, timeout: float = 5.0) -> int | None:
        """Wait for a worker that is exiting; kill it if it doesn't. Its exit code."""
        if self.process is None:
            return None
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        code = self.process.exitcode
        self._close()
        return code

    def _kill(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self._close()

    def _close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(OSError):
                self.conn.close()
        self.conn = None
        if self.process is not None and not self.process.is_alive():
            with contextlib.suppress(ValueError):
                self.process.close()
            self.process = None
        if self.process is None:
            SLOTS.release(self)

    def stop(self) -> None:
        """Stop the worker (it starts again on the next `call`); waits for a request in flight."""
        with self.lock:
            self._kill()

    def stop_if_idle(self) -> bool:
        """Stop the worker unless a request is in flight or a check keeps it; whether it is
        now stopped."""
        if not self.lock.acquire(blocking=False):
            return False
        try:
            if self.kept:
                return False
            self._kill()
            return True
        finally:
            self.lock.release()


# --- the server's uploads -----------------------------------------------------------------------


@dataclass
class Upload:
    """An accepted upload: its file, how to read it, what was measured, and its worker."""

    name: str
    worker: Worker
    info: Any  # user_models.UserModelInfo
    token: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    disabled: str | None = None


class Pool:
    """The accepted uploads of one server, with at most `max_live` running workers (None:
    `max_workers()`, which bounds every worker of the server together, these included).

    Entries are content-addressed (`upload:<hash>`), bounded by `max_models` and `max_bytes`
    (the least recently used is forgotten first); each has a secret `token` that its uploader
    keeps (in their URL) to get it back after a reload. A model whose worker fails
    `max_failures` times in a row is disabled, with the reason.
    """

    def __init__(
        self,
        *,
        max_models: int = 32,
        max_live: int | None = None,
        max_bytes: int = 512 * 2**20,
        max_failures: int = 3,
    ) -> None:
        self.max_models = max_models
        self.max_live = max_live
        self.max_bytes = max_bytes
        self.max_failures = max_failures
        self.entries: OrderedDict[str, Upload] = OrderedDict()
        self.lock = threading.Lock()
        self.evicted: dict[str, str] = {}  # name -> why, for a clear message afterwards

    def add(self, upload: Upload) -> Upload:
        """Keep an accepted upload (its worker running); returns the kept entry (an earlier
        identical upload is reused, so two sessions uploading one file share a worker).
        Workers are stopped outside the pool's lock: stopping waits for a request in flight,
        and every page asks the pool which uploads exist."""
        to_stop: list[Worker] = []
        with self.lock:
            if upload.name in self.entries:
                kept = self.entries[upload.name]
                self.entries.move_to_end(upload.name)
                if kept.worker is not upload.worker:
                    to_stop.append(upload.worker)
            else:
                kept = upload
                self.entries[upload.name] = upload
                self.evicted.pop(upload.name, None)
                while len(self.entries) > self.max_models or (
                    len(self.entries) > 1
                    and sum(len(u.worker.data) for u in self.entries.values()) > self.max_bytes
                ):
                    name, old = self.entries.popitem(last=False)
                    to_stop.append(old.worker)
                    self.evicted[name] = (
                        f"this server keeps the last {self.max_models} uploaded models, and "
                        "more were uploaded since"
                    )
        for w in to_stop:
            w.stop()
        self._limit_live(keep=kept.name)
        return kept

    def _limit_live(self, keep: str | None = None) -> None:
        """Stop the least recently used idle workers beyond `max_live` (they restart, in a
        fraction of a second, when next used). A busy worker is left to finish."""
        with self.lock:
            live = [u.worker for u in self.entries.values() if u.worker.alive and u.name != keep]
        live.sort(key=lambda w: w.last_used)
        limit = max_workers() if self.max_live is None else self.max_live
        excess = len(live) + (1 if keep else 0) - limit
        for w in live:
            if excess <= 0:
                break
            if w.stop_if_idle():
                excess -= 1

    def __contains__(self, name: object) -> bool:
        with self.lock:
            return name in self.entries

    def get(self, name: str) -> Upload:
        with self.lock:
            if name not in self.entries:
                why = self.evicted.get(name, "it is not loaded on this server")
                raise KeyError(f"{name} is gone: {why}. Upload it again on the Your model page.")
            self.entries.move_to_end(name)
            return self.entries[name]

    def claim(self, token: str) -> str | None:
        """The name of the upload whose secret token this is, if it is still here."""
        with self.lock:
            for name, u in self.entries.items():
                if secrets.compare_digest(u.token, token):
                    return name
        return None

    def call(self, name: str, job: str, *args: Any, **kwargs: Any) -> Any:
        """Run a job on upload `name` in its worker (started if needed, and the least recently
        used others stopped beyond `max_live`). Every ModelFailure names the model."""
        upload = self.get(name)
        label = f"{name} ({upload.info.filename})" if getattr(upload.info, "filename", "") else name
        if upload.disabled:
            raise ModelCrashed(f"{label}: {upload.disabled}")
        self._limit_live(keep=name)
        try:
            result = upload.worker.call(job, *args, **kwargs)
            if args and isinstance(args[0], np.ndarray):
                from pretrained.jobs import check_result

                k = len(getattr(upload.info, "class_names", ()) or ())
                problem = check_result(job, result, args[0].shape, k, kwargs)
                if problem:
                    raise ModelError(f"The model returned {problem}.")
            return result
        except ModelFailure as err:
            answered = isinstance(err, ModelError) and not isinstance(err, WrongAnswer)
            if not answered and upload.worker.failures >= self.max_failures:
                upload.disabled = (
                    f"{err} It failed {upload.worker.failures} times in a row, so this server "
                    "stopped using it; fix it and upload it again."
                )
            raise type(err)(f"{label}: {err}") from None

    def workers(self) -> list[Worker]:
        with self.lock:
            return [u.worker for u in self.entries.values()]

    def close(self) -> None:
        for w in self.workers():
            w.stop()
