"""The server's own CPU per click, by kind of click, in a real browser.

    python benchmarks/bench_clicks.py [--repeat 10] [--out artifacts/bench_clicks.json]
                                      [--repo PATH] [--loads 3] [--soak N] [--browser-cpus 1]
                                      [--press-ms 0]

One `python -m dashboard` server pinned to CPU 0 (`taskset -c 0`), Debian's Chromium pinned to
CPU 1 (`--browser-cpus`), the bundled default view (MNIST, mnist-cnn). First `--loads` page
loads, each in a new browser context (a new session, nothing cached), on the page's clock:
when the prediction's heading shows, when the first "Map: …" picture has loaded, when the
Explore panel has drawn, when the script was last idle; and the server CPU each took. Then
the server's CPU over 10 s with one page open and nobody clicking (`idle_ms_per_s`: its event
loop and threads; each click's figure below includes it for the click's ~0.5–1 s). Then,
for each kind of interaction, two warm-up clicks and `--repeat` timed ones, each measured as

- **server CPU**: utime + stime of the server process (all its threads) from
  `/proc/PID/stat`, read before the click and after the page is idle again: what sets how many
  people one server can serve;
- **in page**: from the first input event (the press of a click, the key press of a slider,
  the hover; caught on `window` before any handler of the page's) to the frame in which the new
  picture (the main map, or the overlay for alpha) has loaded, on the page's own clock
  (`performance.now()`, checked every animation frame): what the user waits for. Playwright's
  clicks release the button at once (`--press-ms 0`); a person holds it ~100 ms
  (`--press-ms 100`), which delays every click by that much (the panel acts on clicks);
- **click → idle** (as this benchmark measured before the panel): wall time in this process
  from Playwright's click until the map has changed and the script is idle with nothing stale
  (noisier: Playwright's own round trips, two shared cores).

Kinds that need the Explore panel (`dashboard/components/saliency_panel.py`: a click or a hover
on a class in its grid) are skipped on a tree without it, so `--repo` can measure an older
checkout with this same script. The switches are the panel's where it has them (the target
box, the colours, the method and the model: a choice in a <select> starts the in-page clock),
else the sidebar's. Printed (server CPU as the mean: its clock ticks are 10 ms;
the rest as medians and p95), and written as JSON. `--soak N` then makes N more clicks (class
and colour-map switches in the panel's own target box and colour map, alternating, over the
same 40 views) and prints the server's RSS every 100: with Streamlit's post-run
`gc.collect(2)` turned off (`runner.postScriptGC`), memory must stay flat once the caches hold
those views.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from load_test import CHROMIUM_ARGS

REPO = Path(__file__).resolve().parents[1]
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
ARGS = CHROMIUM_ARGS
IDLE_SECONDS = 10  # the server's CPU with the page open and nobody clicking, over this long
# The picture captioned "Map: …" (or another caption's, for the overlay): changed, loaded, and
# the script idle with nothing stale.
MAP_UPDATED_JS = """
([old, caption]) => {
  const cap = [...document.querySelectorAll('[data-testid="stImageCaption"]')]
    .find(c => c.innerText.trim().startsWith(caption));
  const img = cap && cap.closest('[data-testid="stImage"]').querySelector('img');
  const app = document.querySelector('[data-testid="stApp"]');
  return !!img && img.src !== old && img.complete && img.naturalWidth > 0
    && !!app && app.dataset.testScriptState === 'notRunning'
    && !document.querySelector('[data-stale="true"]');
}
"""
MAP_SRC_JS = """
(caption) => {
  const cap = [...document.querySelectorAll('[data-testid="stImageCaption"]')]
    .find(c => c.innerText.trim().startsWith(caption));
  const img = cap && cap.closest('[data-testid="stImage"]').querySelector('img');
  return img ? img.src : null;
}
"""


# In-page timing: `arm(old)` before an interaction; the first input event after it starts the
# clock, and the first animation frame in which the "Map: …" picture has another src and has
# loaded stops it. Read with `window.__bench`.
PROBE_JS = """
() => {
  if (window.__bench) return;
  const b = window.__bench = {armed: false, start: 0, done: 0, old: null, caption: 'Map: '};
  const mapImg = () => {
    const cap = [...document.querySelectorAll('[data-testid="stImageCaption"]')]
      .find(c => c.innerText.trim().startsWith(b.caption));
    return cap && cap.closest('[data-testid="stImage"]').querySelector('img');
  };
  const begin = () => { if (b.armed && !b.start) b.start = performance.now(); };
  // The first event of a click (the press), before any handler of the page's has run; of a
  // choice in a <select> (the panel's target box and colour maps), the choice itself.
  for (const ev of ['pointerdown', 'mousedown', 'click', 'keydown', 'mouseover', 'input']) {
    window.addEventListener(ev, begin, true);
  }
  const loop = () => {
    if (b.armed && b.start && !b.done) {
      const img = mapImg();
      if (img && img.src !== b.old && img.complete && img.naturalWidth > 0) {
        b.done = performance.now();
      }
    }
    requestAnimationFrame(loop);
  };
  loop();
}
"""
ARM_JS = """
([old, caption]) => Object.assign(window.__bench, {armed: true, start: 0, done: 0, old, caption})
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


def start_server(tmp: Path, repo: Path = REPO) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "SALIENCY_CACHE_DIR": str(tmp / "cache")}
    proc = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, "-m", "dashboard", "--server.headless", "true",
         "--server.port", str(port), "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=repo, env=env, stdout=(tmp / "server.log").open("wb"), stderr=subprocess.STDOUT,
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


def p95(values: list[float]) -> float:
    return sorted(values)[int(0.95 * (len(values) - 1))]


def map_src(page, caption: str = "Map: ") -> str | None:
    return page.evaluate(MAP_SRC_JS, caption)


def wait_map(page, old: str | None, caption: str = "Map: ") -> None:
    page.wait_for_function(MAP_UPDATED_JS, arg=[old, caption], polling="raf", timeout=180_000)


# First loads, on the page's clock (ms since navigation started): the prediction's heading,
# the first "Map: …" picture loaded and visible (the server's or the panel's), the panel drawn,
# and the last time the script went idle (the panel's one "alive" rerun included).
FIRST_LOAD_JS = """
(() => {
  const t = window.__load = {};
  const now = () => Math.round(performance.now());
  let state = null;
  const poll = () => {
    const app = document.querySelector('[data-testid="stApp"]');
    const s = app && app.dataset.testScriptState;
    if (s !== state && s === 'notRunning') t.idle = now();
    state = s;
    const says = [...document.querySelectorAll('h3')].some(h => h.innerText.includes('says'));
    if (!t.heading && says) t.heading = now();
    const cap = [...document.querySelectorAll('[data-testid="stImageCaption"]')]
      .find(c => c.innerText.trim().startsWith('Map: ') && c.offsetParent);
    const img = cap && cap.closest('[data-testid="stImage"]').querySelector('img');
    if (!t.map && img && img.complete && img.naturalWidth > 0) t.map = now();
    if (!t.panel && document.documentElement.dataset.salPanel === 'ok') t.panel = now();
    requestAnimationFrame(poll);
  };
  requestAnimationFrame(poll);
})();
"""


def first_loads(browser, url: str, pid: int, n: int) -> dict:
    """`n` page loads, each a new session in a new context, after one unmeasured load. A new
    context shares no cache with the others: each load is a first visit, Streamlit's own
    scripts downloaded and compiled again."""
    runs = []
    for i in range(n + 1):
        context = browser.new_context(viewport={"width": 1400, "height": 2600})
        context.add_init_script(FIRST_LOAD_JS)
        page = context.new_page()
        before = cpu_seconds(pid)
        page.goto(url)
        wait_map(page, None)
        time.sleep(1.5)  # what follows the first run (the panel's "alive" rerun, GC, …)
        page.wait_for_selector(IDLE, timeout=180_000)
        times = page.evaluate("window.__load")
        if i:
            runs.append({**times, "server_cpu": (cpu_seconds(pid) - before) * 1000})
        context.close()
    keys = ("heading", "map", "panel", "idle", "server_cpu")
    return {
        f"{k}_ms": round(statistics.median(r[k] for r in runs), 1)
        for k in keys
        if all(k in r for r in runs)
    } | {"runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--soak", type=int, default=0)
    ap.add_argument("--loads", type=int, default=3, help="first page loads to time")
    ap.add_argument("--repo", default=str(REPO), help="the tree to serve (default: this one)")
    ap.add_argument(
        "--browser-cpus",
        default="1",
        help="CPUs for Chromium (and this script): 1 (default) keeps it off the server's CPU "
        "0; 0,1 lets it use both, as a laptop's browser would (the server stays on CPU 0)",
    )
    ap.add_argument(
        "--press-ms",
        type=float,
        default=0,
        help="how long each mouse click holds the button down: 0 (Playwright's default) "
        "releases at once; a person holds it ~80-120 ms",
    )
    ap.add_argument("--out", default=str(REPO / "artifacts" / "bench_clicks.json"))
    args = ap.parse_args()
    press = args.press_ms
    tmp = Path(tempfile.mkdtemp(prefix="bench-clicks-"))
    server, url = start_server(tmp, Path(args.repo))
    os.sched_setaffinity(0, {int(c) for c in args.browser_cpus.split(",")})  # Chromium's too
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    def select(page, label: str, name: str, exact: bool = True):
        box = page.get_by_test_id("stSidebar").get_by_role("combobox", name=label, exact=True)
        box.click()
        option = page.get_by_role("option", name=name, exact=exact)
        option.wait_for()
        return lambda: option.click(delay=press)

    # The panel's own switches (the target box and the colours: saliency/panel/panel.js
    # `buildControls`); on a tree whose sidebar still has them, the sidebar's.
    def own(page, role: str, label: str):
        mine = page.locator(".sal-panel").get_by_role(role, name=label, exact=True)
        if mine.count():
            return mine
        return page.get_by_test_id("stSidebar").get_by_role(role, name=label, exact=True)

    def choose(page, label: str, name: str):
        box = own(page, "combobox", label)
        if box.evaluate("e => e.tagName") != "SELECT":
            return select(page, label, name)
        return lambda: box.select_option(name)

    # The panel's method and model pickers (saliency/panel/streamlit.js `pickers`, by value);
    # on a tree without them, the sidebar's boxes (by the option's text).
    def picker(page, label: str, value: str, text: str):
        mine = page.locator(".sal-panel").get_by_role("combobox", name=label, exact=True)
        if mine.count():
            return lambda: mine.select_option(value)
        return select(page, label, text, exact=not text.endswith("("))

    def target(page, i: int):  # a class other than the one shown
        box = own(page, "combobox", "Target class")
        name = str(i % 10) if box.input_value() != str(i % 10) else str((i + 1) % 10)
        return choose(page, "Target class", name)

    def radio(page, group: str, name: str):  # `name`: the option's value ("map", "signed")
        choices = page.locator(".sal-panel").get_by_role("radiogroup", name=group, exact=True)
        if not choices.count():  # the sidebar's
            choices = page.get_by_test_id("stRadio").filter(has_text=group)
        # "map" says "per map" in the sidebar, and in the panel since 78baecf ("map" before).
        shown = re.compile(rf"^(per )?{re.escape(name)}$")
        return lambda: choices.get_by_text(shown).click(delay=press)

    def slider(page, label: str, key: str):
        thumb = own(page, "slider", label)
        thumb.focus()
        return lambda: thumb.press(key)

    def chosen(page) -> int:
        return int(page.locator(".sal-cell.sal-selected").get_attribute("data-k"))

    def cell(page, i: int):  # a click with no mouse move before it, so no hover preview
        k = (chosen(page) + 1) % 10
        return lambda: page.locator(f'.sal-cell[data-k="{k}"]').dispatch_event("click")

    def hover(page, i: int):
        page.locator(".sal-grid").dispatch_event("mouseleave")  # the chosen class again
        k = (chosen(page) + 1 + i % 9) % 10
        return lambda: page.locator(f'.sal-cell[data-k="{k}"] canvas').dispatch_event("mouseover")

    methods = (("input_x_gradient", "Gradient × Input"), ("gradient", "Vanilla gradient"))
    # Each kind: a function of the click number that gets ready and returns the one action
    # (a click, a key, a hover) that changes the map; None for kinds this tree doesn't have.
    kinds = {
        "target class (box)": target,
        "target class (panel click)": cell,
        "hover a class (panel preview)": hover,
        "colour map": lambda page, i: choose(
            page, "Colour map", ("viridis", "magma", "inferno", "hot")[i % 4]
        ),
        "overlay alpha": lambda page, i: slider(
            page, "Overlay alpha", ("ArrowLeft", "ArrowRight")[i % 2]
        ),
        "clip percentile": lambda page, i: slider(
            page, "Clip at percentile", ("ArrowLeft", "ArrowRight")[i % 2]
        ),
        "colour scale (per map / shared)": lambda page, i: radio(
            page, "Colour scale", ("shared", "map")[i % 2]
        ),
        "absolute / signed": lambda page, i: radio(page, "Values", ("signed", "absolute")[i % 2]),
        "method (cached)": lambda page, i: picker(page, "Method", *methods[i % 2]),
        "next image": lambda page, i: (
            lambda: page.get_by_role("button", name="Next ▶").click(delay=press)
        ),
        "model (cached)": lambda page, i: picker(
            page, "Model", *(("mnist-mlp", "mnist-mlp ("), ("mnist-cnn", "mnist-cnn ("))[i % 2]
        ),
    }
    results = {}
    try:
        time.sleep(5)  # the warm-up thread
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            if args.loads:
                results["first_load"] = first = first_loads(browser, url, server.pid, args.loads)
                print("first load, medians (ms since navigation; server CPU):",
                      {k: v for k, v in first.items() if k != "runs"})  # fmt: skip
            page = browser.new_page(viewport={"width": 1400, "height": 2600})
            page.goto(url)
            page.get_by_role("heading").filter(has_text="says").first.wait_for(timeout=180_000)
            page.wait_for_selector(IDLE, timeout=180_000)
            wait_map(page, None)
            page.evaluate(PROBE_JS)
            try:  # a tree with the panel: drawn by now, or soon (its first draw follows the run)
                page.wait_for_selector(".sal-cell", timeout=15_000)
                panel = True
            except PlaywrightTimeout:
                panel = False
            time.sleep(2)  # the panel's first draw and what follows it
            before = cpu_seconds(server.pid)
            time.sleep(IDLE_SECONDS)
            results["idle_ms_per_s"] = idle = (
                (cpu_seconds(server.pid) - before) * 1e3 / IDLE_SECONDS
            )
            print(f"server idle with this page open: {idle:.1f} ms of CPU per second (part of"
                  " each click's figure below, for the ~0.5–1 s it lasts)")  # fmt: skip
            print(
                "server CPU: the mean (its clock ticks are 10 ms); in page, click → idle: "
                "the median and p95"
            )
            print(f"{'interaction':34s} {'server CPU ms':>14s} {'in page ms':>11s} {'p95':>6s}"
                  f" {'click→idle ms':>14s} {'p95':>6s}")  # fmt: skip
            for label, ready in kinds.items():
                if "panel" in label and not panel:
                    continue
                cpu, wall, inpage = [], [], []
                for i in range(args.repeat + 2):
                    page.wait_for_selector(IDLE, timeout=180_000)
                    act = ready(page, i)
                    caption = "Overlay (" if label == "overlay alpha" else "Map: "
                    old = map_src(page, caption)
                    page.evaluate(ARM_JS, [old, caption])
                    before = cpu_seconds(server.pid)
                    t = time.perf_counter()
                    act()
                    wait_map(page, old, caption)
                    w = time.perf_counter() - t
                    time.sleep(0.3)  # let the server finish what follows the run (GC, …)
                    page.wait_for_selector(IDLE, timeout=180_000)
                    b = page.evaluate("window.__bench")
                    if i >= 2:
                        cpu.append((cpu_seconds(server.pid) - before) * 1000)
                        wall.append(w * 1000)
                        inpage.append(b["done"] - b["start"])
                results[label] = {
                    "server_cpu_ms_mean": round(statistics.mean(cpu), 1),
                    "server_cpu_ms_median": round(statistics.median(cpu), 1),
                    "in_page_ms_median": round(statistics.median(inpage), 1),
                    "in_page_ms_p95": round(p95(inpage), 1),
                    "click_to_idle_ms_median": round(statistics.median(wall), 1),
                    "click_to_idle_ms_p95": round(p95(wall), 1),
                    "n": len(cpu),
                }
                r = results[label]
                print(
                    f"{label:34s} {r['server_cpu_ms_mean']:14.0f} "
                    f"{r['in_page_ms_median']:11.0f} {r['in_page_ms_p95']:6.0f} "
                    f"{r['click_to_idle_ms_median']:14.0f} {r['click_to_idle_ms_p95']:6.0f}",
                    flush=True,
                )
            if args.soak:
                # Absolute maps (so the sequential colour map is the one on screen), and
                # values outside the cycles, so that every click changes the map.
                values = page.locator(".sal-panel").get_by_role("radiogroup", name="Values")
                if not values.get_by_role("radio", name="absolute").is_checked():
                    old = map_src(page)
                    radio(page, "Values", "absolute")()
                    wait_map(page, old)
                starts = (("Colour map", "gray"), ("Target class", "the predicted class"))
                for label, name in starts:
                    old = map_src(page)
                    choose(page, label, name)()
                    wait_map(page, old)
                print(f"\n{'clicks':>7s} {'server RSS MB':>14s}")
                results["soak_rss_mb"] = []
                for i in range(args.soak + 1):
                    if i % 100 == 0:
                        rss = rss_mb(server.pid)
                        results["soak_rss_mb"].append([i, rss])
                        print(f"{i:7d} {rss:14.0f}", flush=True)
                    if i == args.soak:
                        break
                    old = map_src(page)
                    # The same few views over and over: the caches fill within the first
                    # hundred clicks, so any later growth would be a leak.
                    (target if i % 2 else kinds["colour map"])(page, i // 2)()
                    wait_map(page, old)
            browser.close()
    finally:
        server.terminate()
        server.wait(10)
    results["machine"] = {"cpus": os.cpu_count(), "loadavg_1_5_15": os.getloadavg()}
    results["press_ms"] = press
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
