"""One process or a torchrun group, and the working files of a resumable run: the plumbing
that `python -m workspace.index` and `python -m workspace.bench` share.

- `_setup` joins the group (gloo on CPU, NCCL on CUDA, picked from the device) and says which
  rank this is; `_all_reduce`, `_gather` and `_broadcast` are the three collectives a run needs
  (each a no-op on one process);
- `_atomic_write` writes a file whole or not at all, `_npz_bytes` / `_load_npz` the `.npz`
  working files (a damaged one reads as None, to be redone);
- `_Progress` is the `done / total images · rate · ETA` line on stderr.

Never imports streamlit or the dashboard.
"""

from __future__ import annotations

import datetime as dt
import io
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from saliency._atomic import write_atomically

# --- distributed plumbing (torchrun) -----------------------------------------------------------


@dataclass(frozen=True)
class _Dist:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup(device: str | None) -> _Dist:
    """One process, or a torchrun group (gloo on CPU, NCCL on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend)
    return _Dist(rank, world, dev)


def _all_reduce(t: torch.Tensor, d: _Dist) -> torch.Tensor:
    """The sum over ranks, on the CPU (NCCL reduces CUDA tensors, gloo CPU ones)."""
    if d.world == 1:
        return t.cpu()
    moved = t.to(d.device)
    torch.distributed.all_reduce(moved)
    return moved.cpu()


def _gather(obj: Any, d: _Dist) -> list[Any]:
    """Every rank's `obj` on rank 0 (in rank order); [obj] on one process; [] on others."""
    if d.world == 1:
        return [obj]
    out = [None] * d.world if d.main else None
    torch.distributed.gather_object(obj, out, dst=0)
    return out if d.main else []


def _broadcast(obj: Any, d: _Dist) -> Any:
    if d.world == 1:
        return obj
    box = [obj if d.main else None]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


# --- working files ------------------------------------------------------------------------------

_atomic_write = write_atomically  # (the name index, bench and their parts import)


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _load_npz(path: Path) -> dict[str, np.ndarray] | None:
    """A working file, or None when it is missing or damaged (then it is recomputed)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except Exception:  # noqa: BLE001 - a half-written or damaged file is simply redone
        return None


class _Progress:
    """`done / total images · rate · ETA` on one line of stderr, for rank 0."""

    def __init__(self, total: int, enabled: bool, world: int, verb: str = "indexing") -> None:
        self.total, self.enabled, self.world, self.verb = total, enabled, world, verb
        self.start = time.perf_counter()
        self.last = 0.0

    def __call__(self, done: int, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not final and now - self.last < 0.5:
            return
        self.last = now
        done = min(self.total, done * self.world)  # rank 0 sees its share
        rate = done / max(now - self.start, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else math.inf
        eta_text = str(dt.timedelta(seconds=round(eta))) if math.isfinite(eta) else "?"
        print(
            f"\r  {self.verb}: {done:,} / {self.total:,} images · {rate:,.0f} images/s · ETA "
            f"{eta_text}   ",
            end="\n" if final else "",
            file=sys.stderr,
            flush=True,
        )
