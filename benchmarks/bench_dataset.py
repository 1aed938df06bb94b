"""Whole-test-set costs behind the Misclassifications and Data-set sensitivity views.

For each registered model, on all 10,000 bundled test images:
- predictions: the time of one no-grad pass (what the Misclassifications view caches);
- all-class mean |J|: the time of `saliency.sensitivity_summary` (every class's mean |J| and
  signed mean, grouped by label), and its ratio to the floor measured in the same run: one
  forward plus ten backward passes over the same chunks, keeping nothing.

Usage: python benchmarks/bench_dataset.py [--models NAME ...] [--n 10000]
"""

from __future__ import annotations

import argparse
import time

import torch

import pretrained
import saliency

CHUNK = 128  # jacobian's default for conv nets; the floor uses the same chunks


def floor(model: torch.nn.Module, images: torch.Tensor) -> None:
    for i in range(0, len(images), CHUNK):
        xd = images[i : i + CHUNK].detach().requires_grad_(True)
        out = model(xd)
        for k in range(out.shape[1]):
            seed = torch.zeros_like(out)
            seed[:, k] = 1
            torch.autograd.grad(out, xd, grad_outputs=seed, retain_graph=k < out.shape[1] - 1)


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def row(name: str, n: int) -> str:
    model = pretrained.load_model(name, device="cpu")
    ds = pretrained.load_dataset(pretrained.model_info(name).dataset)
    x, y = ds.images[:n], ds.labels[:n]
    with torch.no_grad():
        t_pred = seconds(lambda: [model(x[i : i + 1000]) for i in range(0, len(x), 1000)])
    batches = [(x[i : i + 256], y[i : i + 256]) for i in range(0, len(x), 256)]
    t_sum = seconds(lambda: saliency.sensitivity_summary(model, batches))
    t_floor = seconds(lambda: floor(model, x))
    return f"{name:22} {t_pred:9.2f} | {t_sum:10.1f} {t_floor:8.1f} {t_sum / t_floor:6.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=pretrained.list_models())
    parser.add_argument("--n", type=int, default=10_000)
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.n:,} test images\n")
    print(f"{'model':22} {'predict s':>9} | {'mean |J| s':>10} {'floor s':>8} {'ratio':>6}")
    for name in args.models:
        print(row(name, args.n), flush=True)
    print("\nratio: sensitivity_summary time / (one forward + ten backward passes) time.")


if __name__ == "__main__":
    main()
