"""Layer maps and occlusion against their floors and against pytorch-grad-cam, in one run.

    python benchmarks/bench_cam.py [--device cpu|cuda] [--threads 1] [--batch 8]

Ratios, each measured here in the same process (median of repeats):
  - Grad-CAM, one class, / the floor: one forward + one backward from the class score to the
    input (what any gradient map costs). Target <= 1.1.
  - Grad-CAM, all 10 classes, / Grad-CAM, one class. Target <= 1.5.
  - Occlusion on 28 x 28, window 4, stride 2 (169 copies per image): the floor's time for the
    same number of forward passes in the same batches / ours (throughput). Target >= 0.8.
  - pytorch-grad-cam's GradCAM (one class; ten classes as ten calls, its only way) on the
    same model and input, beside ours.
Models: torchvision resnet18 (random weights, 10 classes) on 3 x 112 x 112, and mnist-cnn.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import pretrained  # noqa: E402
import saliency  # noqa: E402
from saliency.perturbation import default_batch  # noqa: E402


def timed(fn, repeats: int, device: str) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def floor_forward_backward(model, x, k):
    xd = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(model(xd)[:, k].sum(), xd)
    return g


def pgc_grad_cam(model, layer_name):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    twin = copy.deepcopy(model).requires_grad_(True)
    cam = GradCAM(model=twin, target_layers=[dict(twin.named_modules())[layer_name]])

    def run(x, classes):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for k in classes:
                cam(input_tensor=x, targets=[ClassifierOutputTarget(k)] * len(x))

    return run


def bench_model(name, model, x, layer, repeats, device):
    model = model.to(device).eval()
    x = x.to(device)
    floor = timed(lambda: floor_forward_backward(model, x, 3), repeats, device)
    one = timed(lambda: saliency.attribute(model, x, 3, method="grad_cam", layer=layer), repeats,
                device)  # fmt: skip
    auto = timed(lambda: saliency.attribute(model, x, 3, method="grad_cam"), repeats, device)
    every = timed(lambda: saliency.class_maps(model, x, method="grad_cam", layer=layer), repeats,
                  device)  # fmt: skip
    ref = pgc_grad_cam(model, layer)
    ref_one = timed(lambda: ref(x, [3]), repeats, device)
    ref_all = timed(lambda: ref(x, range(10)), max(1, repeats // 3), device)
    ms = lambda t: f"{t * 1e3:8.1f} ms"  # noqa: E731
    print(f"\n{name}, batch {len(x)}, {tuple(x.shape[1:])}, layer {layer!r}, {device}")
    print(f"  floor: forward + backward to the input   {ms(floor)}")
    print(f"  Grad-CAM one class (layer given)         {ms(one)}   {one / floor:.2f}x floor")
    print(f"  Grad-CAM one class (layer=None)          {ms(auto)}   {auto / floor:.2f}x floor")
    print(f"  Grad-CAM all 10 classes                  {ms(every)}   {every / one:.2f}x one class")
    print(
        f"  pytorch-grad-cam one class               {ms(ref_one)}   {ref_one / floor:.2f}x floor"
    )
    print(f"  pytorch-grad-cam 10 classes (10 calls)   {ms(ref_all)}   {ref_all / ref_one:.2f}x "
          "its one class")  # fmt: skip


def bench_occlusion(model, x, repeats, device):
    from captum.attr import Occlusion

    model = model.to(device).eval()
    x = x.to(device)
    window, stride = 4, 2
    ours = timed(lambda: saliency.attribute(model, x, 3, method="occlusion", window=window,
                                            stride=stride), repeats, device)  # fmt: skip
    # The floor: the same number of forward passes over ready-made copies, in the same batches.
    p = 13 * 13
    copies = x.repeat_interleave(p, 0)  # (N * P, 1, 28, 28)
    batch = default_batch(x)  # the batches ours uses

    def floor(size):
        with torch.no_grad():
            model(x)
            for i in range(0, len(copies), size):
                model(copies[i : i + size])

    f = timed(lambda: floor(batch), repeats, device)
    whole = timed(lambda: floor(len(copies)), repeats, device)
    occ = Occlusion(model)
    captum = timed(lambda: occ.attribute(x, sliding_window_shapes=(1, window, window),
                                         strides=(1, stride, stride), target=3,
                                         perturbations_per_eval=p), max(1, repeats // 3),
                   device)  # fmt: skip
    print(f"\nOcclusion, mnist-cnn, batch {len(x)}, 28 x 28, window 4, stride 2 "
          f"({p} copies an image), {device}")  # fmt: skip
    print(f"  floor: {len(x) * p + len(x)} forwards, {batch} a batch  {f * 1e3:8.1f} ms")
    print(f"  floor, all copies in one batch    {whole * 1e3:8.1f} ms")
    print(f"  ours                           {ours * 1e3:8.1f} ms   throughput {f / ours:.2f}x "
          "the floor")  # fmt: skip
    print(f"  Captum Occlusion (169 a pass)  {captum * 1e3:8.1f} ms   {f / captum:.2f}x the floor")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(num_classes=10)
    bench_model("resnet18", resnet, torch.rand(args.batch, 3, 112, 112), "layer4", args.repeats,
                args.device)  # fmt: skip
    mnist = pretrained.load_model("mnist-cnn")
    digits = pretrained.load_dataset("mnist", "test")[: args.batch][0]
    bench_model("mnist-cnn", mnist, digits, "6", args.repeats, args.device)
    bench_occlusion(mnist, digits, args.repeats, args.device)


if __name__ == "__main__":
    main()
