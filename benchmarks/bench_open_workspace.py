"""Opening a 10,000-image workspace in the dashboard, after indexing, in a real browser.

    python benchmarks/bench_open_workspace.py [--images 10000]

The bundled MNIST test images are written as a PNG ImageFolder and indexed (the default
outputs: predictions, top-5, own-class and all-class means) with a TorchScript copy of
`mnist-cnn`. Then `python -m dashboard --workspace W` starts, pinned to CPU 0, and Chromium
(CPU 1) opens each view cold, one after the other. Each line is the wall time from asking for
the page until Streamlit's script is idle with the view's text on screen, and the server's own
CPU time (utime + stime) for it; "shell" is the part of it until Streamlit's front end is up
(its own JavaScript, the same for any Streamlit page). `open_indexed` alone, in a fresh
process, is timed too: it is what the first visitor waits for beyond the page itself.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from pathlib import Path

import torch

import pretrained

sys.path.insert(0, str(Path(__file__).parent))
from bench_index import export  # noqa: E402
from load_test import CHROMIUM_ARGS  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
ARGS = CHROMIUM_ARGS


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=10_000)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-open-"))
    export(tmp / "data", args.images)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(pretrained.load_model("mnist-cnn", device="cpu")), buf)
    (tmp / "cnn.pt").write_bytes(buf.getvalue())
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "workspace.index", "--model", str(tmp / "cnn.pt"), "--data",
         str(tmp / "data"), "--grey", "--out", str(tmp / "W"), "--quiet"],
        cwd=REPO, check=True,
    )  # fmt: skip
    print(f"indexed {args.images:,} PNGs in {time.perf_counter() - start:.1f} s")
    opened = subprocess.run(
        [sys.executable, "-c", "import time, sys; from workspace import open_indexed; "
         "t = time.perf_counter(); w = open_indexed(sys.argv[1]); "
         "print(f'{time.perf_counter() - t:.3f} {len(w.paths)}')", str(tmp / "W")],
        cwd=REPO, check=True, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    print(f"open_indexed: {float(opened[0]) * 1000:.0f} ms for {int(opened[1]):,} rows")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "SALIENCY_CACHE_DIR": str(tmp / "cache")}
    server = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, "-m", "dashboard", "--workspace", str(tmp / "W"),
         "--server.headless", "true", "--server.port", str(port),
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=REPO, env=env, stdout=(tmp / "server.log").open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://localhost:{port}"
    try:
        for _ in range(1200):
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                time.sleep(0.05)
        time.sleep(5)  # the warm-up thread (torch's first backward) finishes
        os.sched_setaffinity(0, {1})
        from playwright.sync_api import expect, sync_playwright

        views = [
            ("Explore (first visit)", "", "says"),
            ("Misclassifications", "mistakes", "Click an off-diagonal cell"),
            ("Data-set sensitivity", "dataset", "Computed by the index on"),
            ("Explore (again)", "", "says"),
        ]
        print(f"\n{'view':26s} {'shell s':>8s} {'wall s':>7s} {'server CPU s':>13s}")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            for label, path, text in views:
                before = cpu_seconds(server.pid)
                t = time.perf_counter()
                page.goto(f"{url}/{path}")
                page.wait_for_selector('[data-testid="stApp"]', timeout=180_000)
                shell = time.perf_counter() - t  # Streamlit's own front end, loaded and started
                expect(page.get_by_text(text).first).to_be_visible(timeout=180_000)
                page.wait_for_selector(IDLE, timeout=180_000)
                wall = time.perf_counter() - t
                cpu = cpu_seconds(server.pid) - before
                print(f"{label:26s} {shell:8.2f} {wall:7.2f} {cpu:13.2f}")
            browser.close()
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
