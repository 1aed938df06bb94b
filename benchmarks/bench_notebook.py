"""The notebook widget's two speed promises (issue 34), measured.

    python benchmarks/bench_notebook.py [--clicks 20] [--repeat 7] [--skip-browser]
        [--skip-kernel] [--screenshot PATH] [--out artifacts/bench_notebook.json]

1. **A class switch is drawn in under 50 ms, with no kernel message.** A real JupyterLab
   (started here, as tests/library/test_notebook_browser.py does) runs notebooks/explore.ipynb in
   Debian's Chromium; then `--clicks` clicks on classes of each panel's every-class grid (the
   MNIST CNN's 28 × 28 panel and ResNet-18's 224 × 224 one), alternating between classes.
   Each is timed on the page's own clock to the first animation frame after the new map's
   picture has decoded: from the press (`pointerdown`), from the `click` event, and the panel's
   click handler alone (it draws synchronously: paints, encodes the pictures as data URLs).
   The press focuses the cell, which already draws the class as a preview, so "from the
   press" holds two drawings; "from the click" is the switch itself. The browser's comm
   messages to the kernel are counted from the websocket during the clicks: 0 is the promise.

2. **A method switch costs the kernel no more than the library call plus 10 %.** In this
   process (the kernel's code, without a browser), for each model and method: the time of
   `w.method = m` (the widget's `_recompute`: prediction, class maps, contrast, channel
   reduction, payload packing) against the bare library call that gives the same maps,
   `saliency.class_maps(model, x, classes, method=m)`, and against that call plus
   `saliency.contrast` where the panel shows the kernel's contrast (what the panel shows:
   the budget is against both). `--repeat` runs of each, interleaved, on `--threads` torch
   threads; the least of each is compared (the machine is shared), the medians' ratio too.

The numbers are written as JSON to `--out`. The machine's cores are shared: run it alone.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "library")]

# Timestamps on the page's clock: the press (`pointerdown`), the click before the panel's
# handler (capture on window) and after it (bubble on window: the panel has drawn synchronously
# by then, its new pictures set as data URLs), and the first frame after the map has decoded.
ARM_JS = """
() => {
  const t = (window.__salT = {});
  const [first, last] = [{ once: true, capture: true }, { once: true }];
  window.addEventListener("pointerdown", (e) => { t.down = e.timeStamp; }, first);
  window.addEventListener("click", () => { t.click = performance.now(); }, first);
  window.addEventListener("click", () => { t.handled = performance.now(); }, last);
}
"""
WAIT_JS = """
async ([n, k]) => {
  const p = document.querySelectorAll('.sal-panel')[n].salPanel;
  while (p.chosen !== k) await new Promise((r) => requestAnimationFrame(r));
  await p.ui.map.img.decode();
  await new Promise((r) => requestAnimationFrame(r));
  const t = window.__salT;
  const now = performance.now();
  return { press: now - t.down, click: now - t.click, handler: t.handled - t.click };
}
"""


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def browser_part(clicks: int, screenshot: Path | None) -> dict:
    from browser_support import CHROMIUM, CHROMIUM_ARGS, VIEWPORT
    from playwright.sync_api import sync_playwright
    from test_notebook_browser import NOTEBOOK, jupyter_lab, kernel_messages, run_notebook

    out: dict = {}
    home = Path(tempfile.mkdtemp(prefix="bench_notebook_"))
    shutil.copy(NOTEBOOK, home / NOTEBOOK.name)
    with jupyter_lab(home, home / "jupyterlab.log") as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        sent = kernel_messages(page)
        t = time.perf_counter()
        run_notebook(page, url, NOTEBOOK.name, 2)
        out["notebook_run_s"] = round(time.perf_counter() - t, 2)
        if screenshot is not None:  # JupyterLab's window: the first cell and its widget
            page.evaluate(
                "() => window.jupyterapp.commands.execute('application:toggle-left-area')"
            )
            page.locator(".sal-panel .sal-cell").nth(5).scroll_into_view_if_needed()
            page.evaluate("() => document.querySelector('.jp-WindowedPanel-outer').scrollTo(0, 0)")
            bottom = page.locator(".sal-panel .sal-cell").first.bounding_box()
            height = min(bottom["y"] + bottom["height"] + 24, VIEWPORT["height"])
            page.wait_for_timeout(500)
            page.screenshot(path=str(screenshot), clip={"x": 0, "y": 0, "width": VIEWPORT["width"],
                                                        "height": height})  # fmt: skip
        for n, name in enumerate(("mnist-cnn 28x28", "resnet18 224x224")):
            grid = page.evaluate(
                f"() => document.querySelectorAll('.sal-panel')[{n}].salPanel.d.grid"
            )
            before, times = len(sent), {"press": [], "click": [], "handler": []}
            for i in range(clicks + 2):  # two warm-up clicks
                chosen = page.evaluate(
                    f"() => document.querySelectorAll('.sal-panel')[{n}].salPanel.chosen"
                )
                k = next(c for c in grid[i % len(grid) :] + grid if c != chosen)
                cell = page.locator(".sal-panel").nth(n).locator(f'.sal-cell[data-k="{k}"]')
                cell.scroll_into_view_if_needed()
                page.evaluate(ARM_JS)
                cell.click()
                took = page.evaluate(WAIT_JS, [n, k])
                for key, value in took.items():
                    if i >= 2:
                        times[key].append(value)
            page.wait_for_timeout(1000)  # time for any message to go
            out[name] = {"clicks": clicks, "kernel_messages": len(sent) - before}
            for key, values in times.items():  # from the press, from the click, the handler
                out[name][key] = {
                    "median_ms": round(statistics.median(values), 1),
                    "p95_ms": round(pct(values, 0.95), 1),
                    "max_ms": round(max(values), 1),
                }
        browser.close()
    shutil.rmtree(home, ignore_errors=True)
    return out


def _median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def kernel_part(repeat: int, threads: int) -> dict:
    import torch
    from PIL import Image
    from skimage import data as photos

    import pretrained
    import saliency
    from workspace import imagenet

    torch.set_num_threads(threads)
    test = pretrained.load_dataset("mnist", "test")
    weights = "pretrained" if imagenet.weights_available("resnet18") else "random"
    resnet = imagenet.load("resnet18", weights=weights, download=False)
    x224 = torch.stack([imagenet.pixels("resnet18", Image.fromarray(photos.chelsea()))])
    cases = [
        ("mnist-cnn", pretrained.load_model("mnist-cnn"), test.images[:1], test.classes,
         ("gradient", "grad_cam", "input_x_gradient", "smoothgrad", "integrated_gradients")),
        (f"resnet18 ({weights})", resnet, x224, imagenet.categories("resnet18"),
         ("gradient", "grad_cam", "input_x_gradient")),
    ]  # fmt: skip
    out: dict = {"threads": torch.get_num_threads()}
    for name, model, x, classes, methods in cases:
        w = saliency.widget(model, x, class_names=classes, methods=methods)
        for m in methods:
            w.method = m  # warm up: the first call of a method builds its hooks
            cl = list(w.view.classes)
            pred, runner = w.data.pred, w.data.runner_up

            def recompute(w=w):  # what `w.method = m` runs, from another method's view
                w._recompute({"name": "method", "old": "", "new": w.method})

            def bare(m=m, cl=cl, model=model, x=x):
                saliency.class_maps(model, x, cl, method=m)

            def bare_contrast(m=m, pred=pred, runner=runner, model=model, x=x):
                saliency.contrast(model, x, pred, runner, method=m)

            r, b, c = [], [], []
            for _ in range(repeat):  # interleaved: the machine's load hits all three alike
                r.append(_median_time(recompute, 1))
                b.append(_median_time(bare, 1))
                c.append(_median_time(bare_contrast, 1) if not w.data.sign_local else 0.0)
            rm, bm, cm = (min(v) for v in (r, b, c))  # the least disturbed of each
            out[f"{name} {m}"] = {
                "recompute_ms": round(rm * 1e3, 1),
                "class_maps_ms": round(bm * 1e3, 1),
                "contrast_ms": round(cm * 1e3, 1),
                "ratio_to_class_maps": round(rm / bm, 3),
                "ratio_to_class_maps_and_contrast": round(rm / (bm + cm), 3),
                "median_ratio_to_both": round(
                    statistics.median(r) / (statistics.median(b) + statistics.median(c)), 3
                ),
            }
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clicks", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--threads", type=int, default=1, help="torch's, in the kernel part")
    ap.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench_notebook.json")
    ap.add_argument("--screenshot", type=Path, default=None)
    ap.add_argument("--skip-browser", action="store_true")
    ap.add_argument("--skip-kernel", action="store_true")
    args = ap.parse_args(argv)
    result: dict = {}
    if not args.skip_browser:
        result["class_switch"] = browser_part(args.clicks, args.screenshot)
        for name, r in result["class_switch"].items():
            if isinstance(r, dict):
                print(f"class switch, {name} ({r['clicks']} clicks, kernel messages "
                      f"{r['kernel_messages']}):")  # fmt: skip
                for key, text in (("press", "press -> drawn"), ("click", "click -> drawn"),
                                  ("handler", "the panel's click handler")):  # fmt: skip
                    t = r[key]
                    print(f"  {text:>26}: median {t['median_ms']} ms, p95 {t['p95_ms']} "
                          f"ms (ratio to 50 ms: {t['p95_ms'] / 50:.2f})")  # fmt: skip
    if not args.skip_kernel:
        result["method_switch"] = kernel_part(args.repeat, args.threads)
        for name, r in result["method_switch"].items():
            if isinstance(r, dict):
                print(f"method switch, {name}: _recompute {r['recompute_ms']} ms, class_maps "
                      f"{r['class_maps_ms']} ms (+ contrast {r['contrast_ms']} ms): ratio "
                      f"{r['ratio_to_class_maps']} to class_maps, "
                      f"{r['ratio_to_class_maps_and_contrast']} to both (budget 1.10; medians "
                      f"{r['median_ratio_to_both']})")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
