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


def timed(fn, *, min_time: float = 0.4, repeats: int = 5) -> float:
    """Median seconds per call over `repeats` rounds of at least `min_time` each (after warm-up)."""
    fn()
    n = 1
    while True:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - start > min_time / repeats or n > 10_000:
            break
        n *= 2
    rounds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        rounds.append((time.perf_counter() - start) / n)
    return statistics.median(rounds)


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
    """One table row: every timing for one model and batch, measured back to back."""
    b = len(x)
    with torch.no_grad():
        t = model(x).argmax(1)

    def tm(fn) -> float:
        return timed(fn, min_time=min_time)

    t_floor1 = tm(lambda: floor_one(model, x, t))
    t_ours1 = tm(lambda: saliency.gradients(model, x))
    t_cap1 = tm(lambda: captum.attribute(x, target=t, abs=True))
    # The 10-class floor: the faster of one chunk and chunks of 64 (what suits the model).
    t_floor10 = min(tm(lambda: floor_all(model, x)), tm(lambda: floor_all_chunked(model, x)))
    t_ours10 = tm(lambda: saliency.jacobian(model, x))
    t_cap10 = tm(lambda: [captum.attribute(x, target=k, abs=False) for k in range(10)])
    return (
        f"{name:10} {b:5d} | {b / t_ours1:13.0f} {t_floor1 / t_ours1:6.2f} "
        f"{t_cap1 / t_ours1:7.2f} | {b / t_ours10:16.0f} {t_floor10 / t_ours10:6.2f} "
        f"{t_cap10 / t_ours10:7.2f} {t_ours10 / t_floor10:16.2f}x"
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
