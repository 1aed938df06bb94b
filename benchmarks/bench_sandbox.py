"""What the sandbox costs: an uploaded model's jobs in its worker vs the same jobs in-process.

    python benchmarks/bench_sandbox.py [--rounds 30]

The bundled CNN, scripted (what a user uploads), is accepted through `accept_upload` and then
asked for what the Explore view needs per click: the probabilities of one image, and the
maps of all ten classes (one Jacobian). Each job runs alternately in this process
(`sandbox.jobs.run`) and in the worker (`Worker.call`), in interleaved rounds; the table gives
median wall milliseconds, the ratio worker / in-process, and the *server's own* CPU per call
(this process's CPU time: with a worker, the model's arithmetic is billed to the worker, and the
server pays only for the round trip). Also measured: starting a worker from the fork server
(what a restart after a failure costs) and a round trip with an empty job.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch

import pretrained
from sandbox import jobs, user_models, worker


def scripted(model: torch.nn.Module) -> bytes:
    import io

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(model), buf)
    return buf.getvalue()


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()
    limits = worker.Limits()
    torch.set_num_threads(limits.threads)  # the same threads on both sides
    model = pretrained.load_model("mnist-cnn", device="cpu")
    x = pretrained.load_dataset("mnist", "test").images[:1].numpy()

    start = time.perf_counter()
    w, info = user_models.accept_upload(scripted(model), dataset="mnist", limits=limits)
    accept_s = time.perf_counter() - start
    local = user_models.read_model(scripted(model), dataset="mnist", device="cpu")

    cases = {
        "probabilities, 1 image": ("probabilities", {}),
        "all 10 class maps, 1 image": (
            "class_maps",
            dict(method="gradient", score="logit", absolute=True),
        ),
        "SmoothGrad maps (50 samples)": (
            "class_maps",
            dict(method="smoothgrad", score="logit", absolute=True, n_samples=50, noise=0.15),
        ),
    }
    print(
        f"accept_upload (fork server warm-up + load + check + 10,000 test images): "
        f"{accept_s:.1f} s; worker threads: {limits.threads}\n"
    )
    print(f"{'job':30s} {'in-process':>11s} {'worker':>9s} {'ratio':>6s} {'server CPU/call':>16s}")
    for label, (job, kwargs) in cases.items():
        for _ in range(3):  # warm-up both sides
            jobs.run(job, local, x, **kwargs)
            w.call(job, x, **kwargs)
        here, there, cpu = [], [], []
        in_process = lambda job=job, kw=kwargs: jobs.run(job, local, x, **kw)  # noqa: E731
        in_worker = lambda job=job, kw=kwargs: w.call(job, x, **kw)  # noqa: E731
        for _ in range(args.rounds):
            here.append(timed(in_process)[0])
            wall, c = timed(in_worker)
            there.append(wall)
            cpu.append(c)
        a, b = statistics.median(here) * 1e3, statistics.median(there) * 1e3
        c = statistics.median(cpu) * 1e3
        print(f"{label:30s} {a:9.2f} ms {b:7.2f} ms {b / a:6.2f} {c:13.2f} ms")

    tiny = np.zeros((1, 1, 28, 28), np.float32)
    trips = [timed(lambda: w.call("check", tiny, n_classes=10))[0] for _ in range(args.rounds)]
    print(f"\nround trip with a one-image check: {statistics.median(trips) * 1e3:.2f} ms")
    restarts = []
    for _ in range(5):
        w.stop()
        restarts.append(timed(lambda: w.call("probabilities", x))[0])
    print(
        f"restart (fork, sandbox, load, check) + first call: "
        f"{statistics.median(restarts) * 1e3:.0f} ms median of 5"
    )
    w.stop()


if __name__ == "__main__":
    main()
