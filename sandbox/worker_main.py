"""The worker process's own code (`_serve`, its main, and what it runs before the lockdown):
forked from the fork server (`sandbox.worker`, `sandbox._forkserver`), it reads the model
and answers jobs over the wire (`sandbox.wire`). `sandbox.worker` re-exports it.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import signal
from typing import Any

import numpy as np

from sandbox.wire import read_message, write_message
from sandbox.worker_limits import Limits


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
    from sandbox import jobs

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
    import sandbox
    from sandbox import gate, jobs, model_files, preparation  # noqa: F401
    from sandbox.model_files import error_line

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
