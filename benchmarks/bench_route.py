"""The explore route's server time per uncached answer, in this process, on one thread.

    python benchmarks/bench_route.py [--images 24] [--first [--captum]]

`dashboard.views.explore_route._route_payload` (the route's answer, without its cache of
answers) for a view the page has just drawn, switched as the Explore panel's pickers switch it:
a model switch (mnist-cnn → mnist-mlp, fashion-mnist-cnn → fashion-mnist-mlp) and a method
switch (gradient → input_x_gradient) on a new test image each time, so nothing but the page's
own view is cached; then the same view asked again with its maps kept (`explained` answered
from its store): what the route costs beside the maps. Medians over `--images` images, in ms,
after one warm-up per model and method. `--first` prints the first answers in a new process
instead (each model's load, Captum's import): what a server's first switch costs; with
`--captum`, Captum imported first, as `python -m dashboard`'s warm-up does.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("SALIENCY_EXPLORE_URL", "/api/explore/panel")  # the route's (routable)

PAIRS = [("mnist", "mnist-cnn", "mnist-mlp"), ("fashion-mnist", "fashion-mnist-cnn",
         "fashion-mnist-mlp")]  # fmt: skip


def query(dataset: str, model: str, index: int, method: str = "gradient") -> dict[str, str]:
    return {"dataset": dataset, "model": model, "index": str(index), "method": method}


def ms(q: dict[str, str]) -> float:
    from dashboard.views import explore_route

    start = time.perf_counter()
    explore_route._route_payload(q)
    return (time.perf_counter() - start) * 1e3


def firsts() -> dict[str, float]:
    """The first answers of a process that has run mnist-cnn's gradient once (as `python -m
    dashboard`'s warm-up does, less its other imports)."""
    out = {"mnist-cnn gradient (the first answer)": ms(query("mnist", "mnist-cnn", 1))}
    for i, model in enumerate(("mnist-mlp", "mnist-linear", "mnist-cnn-bn", "mnist-vit")):
        out[f"{model} first"] = ms(query("mnist", model, 10 + i))
        out[f"{model} second"] = ms(query("mnist", model, 20 + i))
    out["input_x_gradient first"] = ms(query("mnist", "mnist-cnn", 30, "input_x_gradient"))
    out["input_x_gradient second"] = ms(query("mnist", "mnist-cnn", 31, "input_x_gradient"))
    return out


def switches(images: int) -> dict[str, float]:
    for dataset, a, b in PAIRS:  # each model's load and each method's first run
        ms(query(dataset, a, 1)), ms(query(dataset, b, 1))
        ms(query(dataset, a, 1, "input_x_gradient"))
    rows: dict[str, list[float]] = {}
    for n in range(images):
        i = 1000 + n
        for dataset, a, b in PAIRS:
            ms(query(dataset, a, i))  # the page's view
            rows.setdefault(f"model {dataset}", []).append(ms(query(dataset, b, i)))
            rows.setdefault(f"method {dataset}", []).append(
                ms(query(dataset, a, i, "input_x_gradient"))
            )
        rows.setdefault("maps kept (the route's own cost)", []).append(
            ms(query("mnist", "mnist-mlp", i))
        )
    return {k: statistics.median(v) for k, v in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--first", action="store_true")
    parser.add_argument("--captum", action="store_true")
    args = parser.parse_args()
    import logging

    import torch

    torch.set_num_threads(1)
    logging.disable(logging.WARNING)  # Streamlit's "no runtime" warnings, outside a server
    if args.captum:
        import captum.attr  # noqa: F401
    found = firsts() if args.first else switches(args.images)
    for name, value in found.items():
        print(f"{name:>40}: {value:7.2f} ms")


if __name__ == "__main__":
    main()
