"""One handle for every model a view explains: its key, its card (`info`) and `run(job, x)`.

A trusted model (a bundled one, a server workspace's own file, a torchvision ImageNet
classifier) runs in this process; an uploaded one runs in its sandboxed worker. Either way a
view asks the same thing, `ref.run("class_maps", x, method=…)`, and reads the same `ref.info`
(`name`, `class_names`, `weights_sha256`, …), as torchvision's `Weights.meta` is a model's
card. Which kind a key names is read once, where the handle is made
(`dashboard.cache.ref`, with `sandbox.kinds.parse`).

    >>> import numpy as np, torch
    >>> ref = in_process("two", {"class_names": ("a", "b")}, lambda: torch.nn.Flatten())
    >>> ref.run("logits", np.ones((1, 2), np.float32)).tolist(), ref.trusted
    ([[1.0, 1.0]], True)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch and the jobs load where a model is first run
    from torch import nn

    from sandbox.worker import Pool


@dataclass(frozen=True)
class ModelRef:
    key: str
    card: Callable[[], Any]  # its `info`, read when asked (an upload's from its pool)
    run: Callable[..., Any]  # run(job, x, *, timeout=None, **options): `sandbox.jobs`
    load: Callable[[], nn.Module] | None = None  # None: it never runs in this process
    stored: bool = False  # its first answers and test predictions may be stored with the code

    @property
    def info(self) -> Any:
        """The model's card: a registry `ModelInfo`, an upload's, a workspace's index, …"""
        return self.card()

    @property
    def trusted(self) -> bool:
        return self.load is not None

    def module(self) -> nn.Module:
        """The model object, for a trusted model (shared: never mutate it)."""
        if self.load is None:
            raise TypeError(f"{self.key} runs in its sandboxed worker: use run, not module")
        return self.load()


def in_process(key: str, info: Any, load: Callable[[], nn.Module], *, stored=False) -> ModelRef:
    """A trusted model: `run` is `sandbox.jobs.run` on `load()` here (`timeout` is for a
    worker's deadline and does not apply)."""

    def run(job: str, x: Any, *, timeout: float | None = None, **options: Any) -> Any:
        from sandbox import jobs

        return jobs.run(job, load(), x, **options)

    return ModelRef(key, lambda: info, run, load, stored)


def sandboxed(key: str, pool: Pool) -> ModelRef:
    """An uploaded model, accepted into `pool`: every job runs in its worker, which raises
    `worker.ModelFailure` (with a message for the page) when the model hangs, hoards memory or
    crashes; `timeout` is the seconds a long job may take. Its card is read from the pool when
    asked (KeyError saying so once the pool has let it go)."""

    def run(job: str, x: Any, *, timeout: float | None = None, **options: Any) -> Any:
        return pool.call(key, job, x, timeout=timeout, **options)

    return ModelRef(key, lambda: pool.get(key).info, run)
