"""How fast are `saliency.gradients` and `saliency.jacobian`, relative to what is possible?

Every number is a ratio measured in this one run, so it means the same on another machine:
- floor (1 class): one forward plus one backward of the batch, nothing else;
- floor (10 classes): one forward plus ten backward passes reusing the graph;
- Captum: `captum.attr.Saliency` on the same inputs (for 10 classes, a loop over targets,
  which is how Captum computes several classes: one forward and backward per target).

Usage: python benchmarks/bench_saliency.py [--quick]
Runs on the pretrained MNIST MLP and CNN (real weights, real test images).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from captum.attr import Saliency

import pretrained
import saliency


def timed(fns: dict, *, min_time: float = 0.4, rounds: int = 7) -> dict[str, float]:
    """Median seconds per call of each function, measured in interleaved rounds.

    Each round times every function once (back to back), so a slow spell of the machine hits
    all of them alike; ratios are then medians over rounds of per-round ratios (see `ratio`).
    Returns {name: list of per-round seconds per call}.
    """
    reps = {}
    for name, fn in fns.items():
        fn()  # warm-up
        n = 1
        while True:
            start = time.perf_counter()
            for _ in range(n):
                fn()
            if time.perf_counter() - start > min_time / rounds or n > 10_000:
                break
            n *= 2
        reps[name] = n
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(reps[name]):
                fn()
            samples[name].append((time.perf_counter() - start) / reps[name])
    return samples


def ratio(samples: dict, a: str, b: str) -> float:
    """Median over rounds of time[a] / time[b]."""
    return statistics.median(x / y for x, y in zip(samples[a], samples[b], strict=True))


def floor_one(model, x, t):
    xd = x.detach().requires_grad_(True)
    out = model(xd)
    seed = torch.zeros_like(out)
    seed[torch.arange(len(t)), t] = 1
    return torch.autograd.grad(out, xd, grad_outputs=seed)[0]


def floor_all(model, x):
    xd = x.detach().requires_grad_(True)
    out = model(xd)
    grads = []
    for k in range(out.shape[1]):
        seed = torch.zeros_like(out)
        seed[:, k] = 1
        grads.append(torch.autograd.grad(out, xd, grad_outputs=seed, retain_graph=k < 9)[0])
    return grads


def floor_all_chunked(model, x, chunk=64):
    return [floor_all(model, x[i : i + chunk]) for i in range(0, len(x), chunk)]


def row(name: str, model, captum: Saliency, x: torch.Tensor, min_time: float) -> str:
    """One table row: every timing for one model and batch, in interleaved rounds."""
    b = len(x)
    with torch.no_grad():
        t = model(x).argmax(1)
    one = timed(
        {
            "floor": lambda: floor_one(model, x, t),
            "ours": lambda: saliency.gradients(model, x),
            "captum": lambda: captum.attribute(x, target=t, abs=True),
        },
        min_time=min_time,
    )
    # The 10-class floor: the faster of one chunk and chunks of 64 (what suits the model).
    chunked = timed(
        {"one": lambda: floor_all(model, x), "chunks": lambda: floor_all_chunked(model, x)},
        min_time=min_time,
    )
    best = (
        "one"
        if statistics.median(chunked["one"]) <= statistics.median(chunked["chunks"])
        else "chunks"
    )
    floor10 = floor_all if best == "one" else floor_all_chunked
    every = timed(
        {
            "floor": lambda: floor10(model, x),
            "ours": lambda: saliency.jacobian(model, x),
            "captum": lambda: [captum.attribute(x, target=k, abs=False) for k in range(10)],
        },
        min_time=min_time,
    )
    speed1 = b / statistics.median(one["ours"])
    speed10 = b / statistics.median(every["ours"])
    r1 = f"{ratio(one, 'floor', 'ours'):6.2f} {ratio(one, 'captum', 'ours'):7.2f}"
    r10 = f"{ratio(every, 'floor', 'ours'):6.2f} {ratio(every, 'captum', 'ours'):7.2f}"
    return (
        f"{name:10} {b:5d} | {speed1:13.0f} {r1} | {speed10:16.0f} {r10} "
        f"{ratio(every, 'ours', 'floor'):16.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (noisier)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore", module="captum")  # "did not already require gradients"
    min_time = 0.2 if args.quick else 0.6
    images = pretrained.load_dataset("mnist", "test").images
    cases = [("mnist-mlp", (1, 64, 1024)), ("mnist-cnn", (1, 64, 256))]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu\n")
    header = (
        f"{'model':10} {'batch':>5} | {'1 class img/s':>13} {'/floor':>6} {'/Captum':>7} | "
        f"{'10 classes img/s':>16} {'/floor':>6} {'/Captum':>7} {'vs fwd+10bwd time':>17}"
    )
    print(header)
    print("-" * len(header))
    for name, batches in cases:
        model = pretrained.load_model(name, device="cpu")
        captum = Saliency(model)
        for b in batches:
            print(row(name, model, captum, images[:b].clone(), min_time))
    print(
        "\n/floor: our speed as a fraction of the floor's (1.00 = as fast as the bare passes).\n"
        "/Captum: how many times faster than Captum's Saliency (10 classes: a loop of 10).\n"
        "vs fwd+10bwd time: our jacobian's time divided by one forward + ten backward passes."
    )


if __name__ == "__main__":
    main()
