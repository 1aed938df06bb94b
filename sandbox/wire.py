"""The pipe between the server and a model's worker (`sandbox.worker`): a JSON header and
raw arrays of a few plain dtypes, never a pickle, with its bounds (`MAX_HEADER`, `MAX_DEPTH`,
`MAX_PAYLOAD`, `MAX_DIMS`, `DTYPES`), what a reply may carry (`Expect`), and the errors a
worker's answer raises in the server (`ModelFailure` and its kinds). `sandbox.worker`
re-exports every name. Never imports streamlit.
"""

from __future__ import annotations

import json
import math
import os
import select
import struct
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

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
