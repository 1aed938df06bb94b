"""safetensors files, read strictly: the header is checked whole before a byte of a tensor is.

    >>> entries = check(data)          # name -> Entry(dtype, shape, begin, end); or UserModelError
    >>> state = read(data)             # name -> tensor, each a copy
    >>> data = dumps(model.state_dict())

The format (what the Hugging Face hub serves): an 8-byte little-endian header length N, N bytes
of a JSON object `{name: {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...}`
with an optional `"__metadata__"` of strings, then the tensors' raw bytes, offsets counted
from the end of the header. It holds no code, but a hostile file can still lie: a header longer
than the file, offsets outside it or over each other, a shape of 10^12 elements over a few
bytes, a dtype nothing here computes with. `check` refuses each from the header alone, so
nothing is allocated for a tensor the file does not hold; the tensors together may declare at
most `gate.MAX_MODEL_BYTES` (or the bound `gate.max_model_bytes` lifts it to).

`looks_like` recognises the format by its first bytes, not by the file's name: byte 8, where
the JSON starts, is "{", which no ZIP archive (byte 8 is its compression method) or pickle
has there. Never imports streamlit; torch only in `read` and `dumps`.
"""

from __future__ import annotations

import json
import math
import struct
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import gate
from .gate import UserModelError

if TYPE_CHECKING:
    import torch

__all__ = ["DTYPES", "MAX_HEADER_BYTES", "Entry", "check", "dumps", "looks_like", "read"]

# The format allows a 100 MB header; a model's takes a few hundred kB (20,000 tensors, the
# gate's MAX_RECORDS, take about 3 MB). Bounding it lower bounds what parsing it may allocate.
MAX_HEADER_BYTES = 16 * 2**20
MAX_DIMS = 8
MAX_NAME = 1000  # characters of one tensor's name
# The dtypes model weights come in, by the format's names: (torch's name, bytes per element).
DTYPES: dict[str, tuple[str, int]] = {
    "F64": ("float64", 8),
    "F32": ("float32", 4),
    "F16": ("float16", 2),
    "BF16": ("bfloat16", 2),
    "I64": ("int64", 8),
    "I32": ("int32", 4),
    "I16": ("int16", 2),
    "I8": ("int8", 1),
    "U8": ("uint8", 1),
    "BOOL": ("bool", 1),
}
_NAMES = {torch_name: name for name, (torch_name, _) in DTYPES.items()}


@dataclass(frozen=True)
class Entry:
    """One tensor as the header declares it: `begin` and `end` are byte offsets in the file."""

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def looks_like(data: bytes) -> bool:
    """Whether `data` is laid out as a safetensors file (a header length, then JSON's "{")."""
    return len(data) >= 9 and data[8:9] == b"{"


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise UserModelError(f"This safetensors file names the tensor {_short(k)} twice.")
        out[k] = v
    return out


def _short(name: str) -> str:
    return repr(name if len(name) <= 80 else name[:77] + "…")


def check(data: bytes) -> dict[str, Entry]:
    """Every tensor the header declares, after checking all of it against the file: raises
    UserModelError saying what is wrong. Reads the header only."""
    if len(data) < 8:
        raise UserModelError(
            f"This file is {len(data)} bytes: too short for a safetensors file, whose first "
            "8 bytes give the length of its header."
        )
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER_BYTES:
        raise UserModelError(
            f"This safetensors file's header claims {n:,} bytes; a model's header takes a few "
            f"hundred kB, and at most {MAX_HEADER_BYTES // 2**20} MB is read."
        )
    if 8 + n > len(data):
        raise UserModelError(
            f"This safetensors file's header claims {n:,} bytes, but the file holds only "
            f"{len(data) - 8:,} after the header's length: it is cut short or was not written "
            "by safetensors."
        )
    try:
        header = json.loads(bytes(data[8 : 8 + n]).decode("utf-8"), object_pairs_hook=_unique)
    except UserModelError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        why = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise UserModelError(f"This safetensors file's header is not JSON ({why}).") from None
    if not isinstance(header, dict):
        raise UserModelError("This safetensors file's header is not a JSON object of tensors.")
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise UserModelError("This safetensors file's __metadata__ is not a mapping of strings.")
    if len(header) > gate.MAX_RECORDS:
        raise UserModelError(
            f"This safetensors file declares {len(header):,} tensors; a model file has at most "
            f"{gate.MAX_RECORDS:,}."
        )
    size = len(data) - 8 - n  # bytes of tensor data after the header
    entries = {name: _entry(name, spec, size) for name, spec in header.items()}
    _check_layout(entries)
    _check_total(sum(e.end - e.begin for e in entries.values()))
    base = 8 + n
    return {k: Entry(e.dtype, e.shape, e.begin + base, e.end + base) for k, e in entries.items()}


def _entry(name: str, spec: Any, size: int) -> Entry:
    what = f"This safetensors file's tensor {_short(name)}"
    if len(name) > MAX_NAME:
        raise UserModelError(f"{what} has a name of {len(name):,} characters.")
    if not isinstance(spec, dict) or set(spec) - {"dtype", "shape", "data_offsets"}:
        raise UserModelError(f"{what} is not described by dtype, shape and data_offsets.")
    dtype, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
    if dtype not in DTYPES:
        raise UserModelError(
            f"{what} has dtype {str(dtype)[:20]!r}, which is not a dtype of model weights read "
            f"here ({', '.join(DTYPES)})."
        )
    if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(map(_whole, shape)):
        raise UserModelError(
            f"{what} has shape {str(shape)[:80]}: expected a list of at most {MAX_DIMS} whole "
            "numbers."
        )
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_whole, offsets))):
        raise UserModelError(
            f"{what} has data offsets {str(offsets)[:80]}: expected [begin, end], two whole "
            "numbers."
        )
    begin, end = offsets
    if not begin <= end <= size:
        raise UserModelError(
            f"{what} lies at bytes [{begin:,}, {end:,}), outside the {size:,} bytes of tensor "
            "data the file holds."
        )
    need = math.prod(shape) * DTYPES[dtype][1]
    if need != end - begin:
        raise UserModelError(
            f"{what} declares shape {tuple(shape)} of {dtype}, which is {need:,} bytes, but its "
            f"offsets hold {end - begin:,}."
        )
    return Entry(dtype, tuple(shape), begin, end)


def _check_layout(entries: dict[str, Entry]) -> None:
    """No two tensors share a byte (the format writes them one after the other)."""
    spans = sorted((e.begin, e.end, name) for name, e in entries.items() if e.end > e.begin)
    for (_, end_a, a), (begin_b, _, b) in zip(spans, spans[1:], strict=False):
        if begin_b < end_a:
            raise UserModelError(
                f"This safetensors file's tensors {_short(a)} and {_short(b)} overlap in the "
                "file: each tensor's bytes must be its own."
            )


def _check_total(total: int) -> None:
    limit, where = gate.model_bound()  # the command-line index's bound, else the server's
    if total > limit:
        raise UserModelError(
            f"The safetensors file's tensors add up to {total:,} bytes, more than "
            f"{limit // 2**20:,} MB, {where}."
        )


def read(data: bytes, *, copy: bool = True) -> dict[str, torch.Tensor]:
    """The file's tensors by name, each its own copy (after `check`, which raises
    UserModelError). Bytes are read as little-endian, as the format writes them.

    `copy=False` returns views of `data`'s own bytes instead, read-only by contract (a bytes
    object must not change): for loading a model, whose `load_state_dict` copies each tensor
    anyway, with one copy of the weights fewer in memory."""
    import torch

    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the buffer is not writable": never written
        for name, e in check(data).items():
            dtype = getattr(torch, DTYPES[e.dtype][0])
            if e.end == e.begin:
                out[name] = torch.empty(e.shape, dtype=dtype)
                continue
            count = (e.end - e.begin) // DTYPES[e.dtype][1]
            view = torch.frombuffer(data, dtype=dtype, count=count, offset=e.begin)
            out[name] = view.reshape(e.shape).clone() if copy else view.reshape(e.shape)
    return out


def dumps(state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """`state` as a safetensors file, which `safetensors.torch.load` reads (tensors in name
    order; `safetensors.torch.save` orders them by dtype first, which readers don't mind)."""
    import torch

    header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    blobs, at = [], 0
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        if str(t.dtype).removeprefix("torch.") not in _NAMES:
            raise ValueError(f"{name}: dtype {t.dtype} has no safetensors name here")
        blob = t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {
            "dtype": _NAMES[str(t.dtype).removeprefix("torch.")],
            "shape": list(t.shape),
            "data_offsets": [at, at + len(blob)],
        }
        blobs.append(blob)
        at += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)
