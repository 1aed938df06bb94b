"""What a model's worker may use (`Limits`, one worker's) and how many workers a server runs
(`max_workers()`: the slots every `sandbox.worker.Worker` takes before its process starts,
waiting in line with `on_wait` showing the wait). `sandbox.worker` re-exports every name.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sandbox.wire import WorkersBusy


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
        self.holders: dict[int, Any] = {}  # id -> worker; strong: a slot outlives no one
        self.line: list[object] = []

    def alive(self) -> list[Any]:
        with self.cond:
            return list(self.holders.values())

    def acquire(self, w: Any) -> None:
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

    def release(self, w: Any) -> None:
        with self.cond:
            if self.holders.pop(id(w), None) is not None:
                self.cond.notify_all()


SLOTS = _Slots()


def live_workers() -> list[Any]:
    """Every worker of this server that holds a process (or is starting one)."""
    return SLOTS.alive()
