"""Uploaded models run here: one sandboxed worker process per model, never in the server.

    >>> w = Worker(data, settings)          # nothing runs yet
    >>> facts = w.start()                   # load in the sandbox, gate, check one image
    >>> probs = w.call("probabilities", x)  # any job of `sandbox.jobs`, by name
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
import multiprocessing
import os
import secrets
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sandbox import compat_mp

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

# The wire format and its errors, the limits and slots, and the worker process's own code are
# modules of their own (issue 31): every name is re-exported here.
from sandbox.wire import (  # noqa: F401
    DTYPES,
    FLOATS,
    MAX_DEPTH,
    MAX_DIMS,
    MAX_HEADER,
    MAX_PAYLOAD,
    Expect,
    ModelCrashed,
    ModelError,
    ModelFailure,
    ModelOutOfMemory,
    ModelTimeout,
    ProtocolError,
    WorkersBusy,
    WrongAnswer,
    _depth,
    _from_wire,
    _read_exact,
    _shapes,
    _to_wire,
    _wait,
    _write_all,
    read_message,
    write_message,
)
from sandbox.worker_limits import (  # noqa: F401
    _ON_WAIT,
    DEFAULT_MAX_WORKERS,
    DEFAULT_WAIT_SECONDS,
    DEFAULT_WORKER_MEMORY_MB,
    SLOTS,
    Limits,
    Wait,
    _env_number,
    _Slots,
    live_workers,
    max_workers,
    on_wait,
    wait_seconds,
)
from sandbox.worker_main import (  # noqa: F401
    _die_with_parent,
    _memory_error,
    _quiet,
    _serve,
    _warm_up,
)

_PRELOAD = ["sandbox._forkserver"]


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
        from sandbox import gate

        self._kill()
        ctx = _context()
        limits = self.limits
        if limits.confine:
            import sandbox

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
        """Run `sandbox.jobs.JOBS[job](model, *args, **kwargs)` in the worker and return its
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
        from sandbox import jobs

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
                from sandbox.jobs import check_result

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
