"""From a server's spawn to its first complete page, as a ratio to a bare Streamlit page's.

    python benchmarks/bench_cold_start.py [--runs 5] [--repo PATH]
                                          [--out artifacts/bench_cold_start.json]

Alternating, `--runs` times each:

- **bare**: a one-line Streamlit page (a title and a sentence) under `streamlit run`: Streamlit's
  own start and front end, the floor under any Streamlit app's first page;
- **dashboard**: `python -m dashboard` (what the README starts) and its default view, complete:
  the prediction's heading, the Explore panel drawn and the script idle, nothing stale.

Each server is spawned fresh and pinned to CPU 0 (`taskset -c 0`), Chromium to CPU 1; each
page is a new browser context (nothing cached), opened as soon as the server answers its
health check. Timed in this process from the spawn: health, then the complete page; and the
server's CPU (utime + stime) until then. The machine's speed drifts (two shared cores): the
runs alternate, and the ratio of the medians is the figure to compare.
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

from bench_clicks import cpu_seconds
from load_test import CHROMIUM_ARGS

REPO = Path(__file__).resolve().parents[1]
BARE = """import streamlit as st

st.title("A bare page")
st.write("Streamlit's own start and front end, and nothing else.")
"""
BARE_DONE_JS = """
() => {
  const app = document.querySelector('[data-testid="stApp"]');
  return [...document.querySelectorAll('p')].some(p => p.innerText.includes('nothing else'))
    && !!app && app.dataset.testScriptState === 'notRunning';
}
"""
# The default view complete, as tests/browser/test_browser.py's wait_complete sees it.
DASHBOARD_DONE_JS = """
() => {
  const app = document.querySelector('[data-testid="stApp"]');
  const says = [...document.querySelectorAll('h3')].some(h => h.innerText.includes('says'));
  const p = document.querySelector('.sal-panel');
  return says && document.documentElement.dataset.salPanel === 'ok' && !!p && !!p.salPanel
    && p.salPanel.ready && !document.querySelector('.st-key-explore_fallback')
    && !!app && app.dataset.testScriptState === 'notRunning'
    && !document.querySelector('[data-stale="true"]');
}
"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cold_start(browser, kind: str, repo: Path, tmp: Path) -> dict:
    """Spawn a server of `kind`, open its page at once, and time it until complete."""
    port = _port()
    opts = ["--server.headless", "true", "--server.port", str(port),
            "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]  # fmt: skip
    if kind == "bare":
        script = tmp / "bare.py"
        script.write_text(BARE)
        cmd = [sys.executable, "-m", "streamlit", "run", str(script), *opts]
    else:
        cmd = [sys.executable, "-m", "dashboard", *opts]
    env = {**os.environ, "SALIENCY_CACHE_DIR": tempfile.mkdtemp(dir=tmp)}
    log = (tmp / f"{kind}.log").open("wb")
    spawned = time.perf_counter()
    proc = subprocess.Popen(
        ["taskset", "-c", "0", *cmd], cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://localhost:{port}"
    try:
        while True:
            if proc.poll() is not None or time.perf_counter() - spawned > 120:
                raise RuntimeError(f"{kind}: no server\n{(tmp / f'{kind}.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                time.sleep(0.02)
        healthy = time.perf_counter()
        context = browser.new_context(viewport={"width": 1400, "height": 2600})
        page = context.new_page()
        page.goto(url)
        done_js = BARE_DONE_JS if kind == "bare" else DASHBOARD_DONE_JS
        page.wait_for_function(done_js, polling="raf", timeout=120_000)
        done = time.perf_counter()
        cpu = cpu_seconds(proc.pid)
        context.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    return {
        "health_ms": round((healthy - spawned) * 1000, 1),
        "complete_ms": round((done - spawned) * 1000, 1),
        "server_cpu_ms": round(cpu * 1000, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--repo", default=str(REPO), help="the tree to serve (default: this one)")
    ap.add_argument("--out", default=str(REPO / "artifacts" / "bench_cold_start.json"))
    args = ap.parse_args()
    os.sched_setaffinity(0, {1})  # this process and Chromium; the servers get CPU 0
    from playwright.sync_api import sync_playwright

    runs: dict[str, list[dict]] = {"bare": [], "dashboard": []}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS
        )
        cold_start(browser, "bare", Path(args.repo), Path(tmp))  # Chromium's own first start
        for _ in range(args.runs):
            for kind in runs:
                runs[kind].append(cold_start(browser, kind, Path(args.repo), Path(tmp)))
                print(kind, runs[kind][-1], flush=True)
        browser.close()
    median = {
        kind: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for kind, rs in runs.items()
    }
    ratio = median["dashboard"]["complete_ms"] / median["bare"]["complete_ms"]
    print(f"\nmedians of {args.runs} alternating cold starts (spawn → complete page):")
    for kind, m in median.items():
        print(f"  {kind:9} health {m['health_ms']:6.0f} ms  complete {m['complete_ms']:6.0f} ms"
              f"  server CPU {m['server_cpu_ms']:5.0f} ms")  # fmt: skip
    print(f"dashboard / bare page: {ratio:.2f}×")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"runs": runs, "median": median, "ratio": ratio}, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
