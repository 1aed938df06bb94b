"""The server's own CPU per click, by kind of click, in a real browser.

    python benchmarks/bench_clicks.py [--repeat 10] [--out artifacts/bench_clicks.json]

One `python -m dashboard` server pinned to CPU 0 (`taskset -c 0`), Debian's Chromium pinned to
CPU 1, the bundled default view (MNIST, mnist-cnn). For each kind of interaction: two warm-up
clicks, then `--repeat` timed ones, each measured as

- **server CPU**: utime + stime of the server process (all its threads) from
  `/proc/PID/stat`, read before the click and after the page is idle again: what sets how many
  people one server can serve;
- **click → map**: wall time from the click until the main map's new image has loaded and the
  script is idle (noisier: two shared cores).

Printed as medians (and p95 for the wall time), and written as JSON. `--soak N` then makes N
more clicks (class and colour-map switches, alternating, over the same 40 views) and prints the
server's RSS every 100: with Streamlit's post-run `gc.collect(2)` turned off
(`runner.postScriptGC`), memory must stay flat once the caches hold those views.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
        "--disable-background-networking", "--disable-component-update"]  # fmt: skip
MAP_UPDATED_JS = """
(old) => {
  const cap = [...document.querySelectorAll('[data-testid="stImageCaption"]')]
    .find(c => c.innerText.trim().startsWith('Map: '));
  const img = cap && cap.closest('[data-testid="stImage"]').querySelector('img');
  const app = document.querySelector('[data-testid="stApp"]');
  return !!img && img.src !== old && img.complete && img.naturalWidth > 0
    && !!app && app.dataset.testScriptState === 'notRunning'
    && !document.querySelector('[data-stale="true"]');
}
"""
MAP_SRC_JS = """
() => {
  const cap = [...document.querySelectorAll('[data-testid="stImageCaption"]')]
    .find(c => c.innerText.trim().startsWith('Map: '));
  const img = cap && cap.closest('[data-testid="stImage"]').querySelector('img');
  return img ? img.src : null;
}
"""


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def start_server(tmp: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "SALIENCY_CACHE_DIR": str(tmp / "cache")}
    proc = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, "-m", "dashboard", "--server.headless", "true",
         "--server.port", str(port), "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=REPO, env=env, stdout=(tmp / "server.log").open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://localhost:{port}"
    for _ in range(1200):
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return proc, url
        except OSError:
            time.sleep(0.05)
    raise RuntimeError((tmp / "server.log").read_text()[-2000:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--soak", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "artifacts" / "bench_clicks.json"))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-clicks-"))
    server, url = start_server(tmp)
    os.sched_setaffinity(0, {1})
    from playwright.sync_api import sync_playwright

    def select(page, label: str, name: str, exact: bool = True):
        page.get_by_test_id("stSidebar").get_by_role("combobox", name=label, exact=True).click()
        page.get_by_role("option", name=name, exact=exact).click()

    def radio(page, group: str, name: str):
        page.get_by_test_id("stRadio").filter(has_text=group).get_by_text(name, exact=True).click()

    # Each kind: a function of the click number that makes one click changing the map.
    kinds = {
        "target class": lambda page, i: select(page, "Target class", str(i % 10)),
        "colour map": lambda page, i: select(
            page, "Colour map", ("viridis", "magma", "inferno", "hot")[i % 4]
        ),
        "colour scale (per map / shared)": lambda page, i: radio(
            page, "Colour scale", ("shared", "per map")[i % 2]
        ),
        "absolute / signed": lambda page, i: radio(page, "Values", ("signed", "absolute")[i % 2]),
        "method (cached)": lambda page, i: select(
            page, "Method", ("Gradient × Input", "Vanilla gradient")[i % 2]
        ),
        "next image": lambda page, i: page.get_by_role("button", name="Next ▶").click(),
        "model (cached)": lambda page, i: select(
            page, "Model", ("mnist-mlp (", "mnist-cnn (")[i % 2], exact=False
        ),
    }
    results = {}
    try:
        time.sleep(5)  # the warm-up thread
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 2600})
            page.goto(url)
            page.get_by_role("heading").filter(has_text="says").first.wait_for(timeout=180_000)
            page.wait_for_selector(IDLE, timeout=180_000)
            print(f"{'interaction':34s} {'server CPU ms':>14s} {'click→map ms':>13s} {'p95':>6s}")
            for label, click in kinds.items():
                cpu, wall = [], []
                for i in range(args.repeat + 2):
                    old = page.evaluate(MAP_SRC_JS)
                    before = cpu_seconds(server.pid)
                    t = time.perf_counter()
                    click(page, i)
                    page.wait_for_function(MAP_UPDATED_JS, arg=old, polling="raf",
                                           timeout=180_000)  # fmt: skip
                    w = time.perf_counter() - t
                    time.sleep(0.3)  # let the server finish what follows the run (GC, …)
                    if i >= 2:
                        cpu.append((cpu_seconds(server.pid) - before) * 1000)
                        wall.append(w * 1000)
                results[label] = {
                    "server_cpu_ms_median": round(statistics.median(cpu), 1),
                    "click_to_map_ms_median": round(statistics.median(wall), 1),
                    "click_to_map_ms_p95": round(sorted(wall)[int(0.95 * (len(wall) - 1))], 1),
                    "n": len(cpu),
                }
                r = results[label]
                print(
                    f"{label:34s} {r['server_cpu_ms_median']:14.0f} "
                    f"{r['click_to_map_ms_median']:13.0f} {r['click_to_map_ms_p95']:6.0f}"
                )
            if args.soak:
                # Absolute maps (so the sequential colour map is the one on screen), and
                # values outside the cycles, so that every click changes the map.
                values = page.get_by_test_id("stRadio").filter(has_text="Values")
                if not values.get_by_role("radio", name="absolute").is_checked():
                    old = page.evaluate(MAP_SRC_JS)
                    radio(page, "Values", "absolute")
                    page.wait_for_function(MAP_UPDATED_JS, arg=old, polling="raf",
                                           timeout=180_000)  # fmt: skip
                starts = (("Colour map", "gray"), ("Target class", "the predicted class"))
                for label, name in starts:
                    old = page.evaluate(MAP_SRC_JS)
                    select(page, label, name)
                    page.wait_for_function(MAP_UPDATED_JS, arg=old, polling="raf",
                                           timeout=180_000)  # fmt: skip
                print(f"\n{'clicks':>7s} {'server RSS MB':>14s}")
                results["soak_rss_mb"] = []
                for i in range(args.soak + 1):
                    if i % 100 == 0:
                        rss = rss_mb(server.pid)
                        results["soak_rss_mb"].append([i, rss])
                        print(f"{i:7d} {rss:14.0f}", flush=True)
                    if i == args.soak:
                        break
                    old = page.evaluate(MAP_SRC_JS)
                    # The same few views over and over: the caches fill within the first
                    # hundred clicks, so any later growth would be a leak.
                    (kinds["target class"] if i % 2 else kinds["colour map"])(page, i // 2)
                    page.wait_for_function(MAP_UPDATED_JS, arg=old, polling="raf",
                                           timeout=180_000)  # fmt: skip
            browser.close()
    finally:
        server.terminate()
        server.wait(10)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
