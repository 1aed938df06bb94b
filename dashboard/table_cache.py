"""The Tables page's slow parts, kept per process and bounded: tables read from their bytes,
table models (the bundled example in this process, uploads each in a sandboxed worker) and
the Jacobians computed on them.

An uploaded table model is code: like an uploaded image model it only ever runs in its
worker (`sandbox.worker`, seccomp, memory and time limits), through `run`.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import streamlit as st

from dashboard import lru
from dashboard.lru import BytesLRU
from sandbox import kinds, worker
from sandbox.user_models import checked_worker, judge_table_check
from workspace import model_ref, tables

EXAMPLE = "diabetes-mlp"
# Table models remembered, with their workers (the least recently used is stopped). Their
# workers count in the server's limit on every worker (`worker.max_workers()`): one idle here
# is stopped to make room for another model, and restarts when it is used again.
MAX_WORKERS = 4


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


@st.cache_resource(show_spinner=False)
def example():
    """The bundled model and its table, read once per process."""
    return tables.example(EXAMPLE)


def example_csv() -> bytes:
    return tables.registry.table_model_info(EXAMPLE).data_file.read_bytes()


@st.cache_resource(show_spinner=False)
def example_program() -> bytes:
    """The example's model as a torch.export program (what an upload looks like); made when
    first downloaded (exporting takes seconds)."""
    return tables.example_program(EXAMPLE)


def read_table(digest: str, data: bytes) -> tables.Table:
    """`tables.read_csv`, once per file content (`digest`), kept by its bytes with the results
    (the budget's "tables" share); raises its TableError."""
    store = results()
    table = store.get(("table", digest))
    if table is None:
        # One CSV parsed at a time: each holds its text and columns while it is read.
        with st.spinner("Reading the table…"), _READING:
            table = store.get(("table", digest))  # read meanwhile by another session?
            if table is None:
                table = tables.read_csv(data)
                store.put(("table", digest), table, lru.nbytes(table))
    return table


_READING = threading.Lock()


class _Workers:
    """Sandboxed workers of uploaded table models, by (model digest, number of features):
    the check when a worker starts runs one row of the chosen width."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.live: OrderedDict[tuple[str, int], worker.Worker] = OrderedDict()

    def get(self, data: bytes, kind: str, example: np.ndarray) -> worker.Worker:
        key = (sha(data), example.shape[1])
        with self.lock:
            if key in self.live:
                self.live.move_to_end(key)
                return self.live[key]
        w = worker.Worker(
            data,
            {"kind": kind, "table": True},
            example=example[:1],
            n_classes=1,
            check_job="table_outputs",
        )
        with checked_worker(w, kind, n_classes=1, judge=judge_table_check):
            pass
        with self.lock:
            self.live[key] = w
            while len(self.live) > MAX_WORKERS:
                _, old = self.live.popitem(last=False)
                old.stop()
        return w


@st.cache_resource(show_spinner=False)
def workers() -> _Workers:
    return _Workers()


@dataclass(frozen=True)
class UploadedTableModel:
    """What is known of an uploaded table model (its handle's `info`)."""

    name: str  # kinds.table(digest)
    kind: str  # the file's format: torchscript, export, onnx…
    n_features: int


def handle(model: bytes | None, kind: str, rows: np.ndarray) -> model_ref.ModelRef:
    """The bundled example's handle (`model` None: in this process) or an uploaded model's (in
    its worker, started and checked on the first of `rows` first; a failure there is a
    UserModelError saying why)."""
    if model is None:
        info = tables.registry.table_model_info(EXAMPLE)
        return model_ref.in_process(EXAMPLE, info, lambda: example()[0])
    note = st.empty()  # where a wait for a free worker is shown, while it lasts

    @contextmanager
    def shown() -> Iterator[None]:
        waited = []
        try:
            with worker.on_wait(lambda wait: waited.append(note.info(str(wait)))):
                yield
        finally:
            if waited:
                note.empty()

    with shown():
        w = workers().get(model, kind, np.asarray(rows[:1], np.float32))

    def run(job: str, x: np.ndarray, *, timeout: float | None = None, **kw: Any) -> Any:
        with shown():  # a worker stopped to make room for another model restarts here
            return w.call(job, np.asarray(x, np.float32), timeout=timeout, **kw)

    name = kinds.table(sha(model))
    info = UploadedTableModel(name, kind, rows.shape[1])
    return model_ref.ModelRef(name, lambda: info, run)


def results() -> BytesLRU:
    """Tables read and results computed, by key, bounded by their bytes over every session
    (the budget's "tables" share)."""
    return lru.store("tables")


def remembered(key: tuple, compute: Callable[[], Any], size: Callable[[Any], int]) -> Any:
    """`compute()` once per key (per process), kept while the byte budget allows."""
    store = results()
    value = store.get(key)
    if value is None:
        value = compute()
        store.put(key, value, size(value))
    return value
