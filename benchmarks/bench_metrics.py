"""The metric bench against a per-image loop and against Quantus 0.6.0, in one run.

    python benchmarks/bench_metrics.py [--device cpu|cuda] [--threads 1] [--n 16] [--size 28]

Per-image seconds and ratios, each measured here in the same process on the same model,
images and maps (Quantus's users report ROAD at ~6 s an image, Quantus#332):
  - ROAD (MoRF, 50 percentages, noisy linear imputation): `saliency.bench.road` on the whole
    batch; the same function called once per image; Quantus's ROAD on the batch.
  - Max-Sensitivity (10 samples, radius 0.2) and Random Logit, ours and Quantus's, with the
    library's gradient as the explanation in both and the maps handed to both (Quantus's
    a_batch, our maps=).
  - The floors: the model passes each metric cannot avoid (ROAD's 50 forwards an image, the
    explanation calls of Max-Sensitivity and Random Logit), timed alone.
  - Sparseness and Complexity, ours and Quantus's.
`--size 56` upsamples MNIST (bigger imputation systems, as images grow).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import pretrained  # noqa: E402
import saliency  # noqa: E402
from saliency import bench as B  # noqa: E402


def seconds(fn, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--no-quantus", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    dev, n = args.device, args.n
    model = pretrained.load_model("mnist-cnn", device=dev)
    x = pretrained.load_dataset("mnist", "test").images[:n].to(dev)
    if args.size != 28:  # the CNN pools to a fixed grid only at 28: adapt with a resize in front
        size = args.size
        inner = model
        model = torch.nn.Sequential(torch.nn.Upsample(size=(28, 28), mode="bilinear"), inner).eval()
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear")
    with torch.no_grad():
        y = model(x).argmax(1)
    a = saliency.attribute(model, x, y, method="gradient", absolute=True)
    print(f"device {dev}, {args.threads} thread(s), {n} images of {tuple(x.shape[1:])}")

    rows = []
    batched = seconds(lambda: B.road(model, x, y, a), dev) / n
    loop = (
        seconds(
            lambda: [B.road(model, x[i : i + 1], y[i : i + 1], a[i : i + 1]) for i in range(n)], dev
        )
        / n
    )
    rows.append(("ROAD MoRF, batched", batched))
    rows.append(("ROAD MoRF, one image at a time", loop))
    # Quantus is handed the maps (a_batch); ours are too, so neither recomputes them.
    ms = seconds(lambda: B.max_sensitivity(model, x, y, samples=10, maps=a), dev) / n
    rl = seconds(lambda: B.random_logit(model, x, y, maps=a), dev) / n
    sp = seconds(lambda: (B.sparseness(a), B.complexity(a)), dev) / n
    rows += [
        ("Max-Sensitivity (10 samples)", ms),
        ("Random Logit", rl),
        ("Sparseness+Complexity", sp),
    ]
    # The floors no metric code can go under: the model's own passes that each metric needs.
    with torch.no_grad():
        pct = 50  # ROAD's default percentages: 50 forward passes an image
        xs = x.repeat(pct, 1, 1, 1)
        per = 50 if dev == "cpu" else 256  # in ROAD's passes (road_curve's batch_size None)
        road_fwd = seconds(lambda: [model(xs[i : i + per]) for i in range(0, len(xs), per)], dev)
        target_fwd = seconds(lambda: model(x), dev)
    explain_one = seconds(
        lambda: saliency.attribute(model, x, y, method="gradient", absolute=True), dev
    )
    rows += [
        ("floor: ROAD's 50 forward passes", road_fwd / n),
        ("floor: one explanation call", explain_one / n),
        ("floor: Random Logit (forward + 1 call)", (target_fwd + explain_one) / n),
        ("floor: Max-Sensitivity (10 calls)", 10 * explain_one / n),
    ]
    ratios = [f"ROAD loop / batched: {loop / batched:.1f}x"]
    if not args.no_quantus:
        import quantus

        xs, ys, As = x.cpu().numpy(), y.cpu().numpy(), a.cpu().numpy()
        kw = {"disable_warnings": True, "display_progressbar": False}

        def explain(model, inputs, targets, **_):
            t = torch.as_tensor(np.asarray(targets), device=dev)
            xi = torch.as_tensor(np.asarray(inputs), device=dev)
            return saliency.attribute(model, xi, t, method="gradient", absolute=True).cpu().numpy()

        call = {"model": model, "x_batch": xs, "y_batch": ys, "a_batch": As, "device": dev}
        q_road = seconds(lambda: quantus.ROAD(**kw)(**call), dev) / n
        q_ms = (
            seconds(
                lambda: quantus.MaxSensitivity(nr_samples=10, **kw)(**call, explain_func=explain),
                dev,
            )
            / n
        )
        q_rl = (
            seconds(
                lambda: quantus.RandomLogit(num_classes=10, **kw)(**call, explain_func=explain), dev
            )
            / n
        )
        q_sp = (
            seconds(
                lambda: (quantus.Sparseness(**kw)(**call), quantus.Complexity(**kw)(**call)), dev
            )
            / n
        )
        rows += [
            ("Quantus ROAD", q_road),
            ("Quantus Max-Sensitivity (10 samples)", q_ms),
            ("Quantus Random Logit", q_rl),
            ("Quantus Sparseness+Complexity", q_sp),
        ]
        ratios += [
            f"Quantus ROAD / ours batched: {q_road / batched:.1f}x",
            f"Quantus Max-Sensitivity / ours: {q_ms / ms:.1f}x",
            f"Quantus Random Logit / ours: {q_rl / rl:.1f}x",
            f"Quantus Sparseness+Complexity / ours: {q_sp / sp:.1f}x",
        ]
    for name, s in rows:
        print(f"  {name:40s} {s * 1000:9.2f} ms per image")
    print("\n".join(ratios))


if __name__ == "__main__":
    main()
