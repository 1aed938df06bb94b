"""A class of 30 against one server: the live class's costs, as server CPU time.

    python benchmarks/bench_live.py [--students 30] [--seconds 20] [--out artifacts/bench_live.json]

One `python -m dashboard` server pinned to CPU 0 (`taskset -c 0`, its own SQLite store in a
temporary cache folder), Debian's Chromium pinned to CPU 1. Three measurements:

1. **Polling**: N student pages (one Chromium, N contexts) join a room and wait. Each page
   asks the server's status route (`dashboard/serve.py`) every 2 s whether a round opened.
   The server's CPU over 20 s of pure waiting, divided by the number of polls made, is the
   cost of one poll (the figure that sets how many waiting phones one server carries).
2. **A round**: the teacher's page opens a map round; the N students answer within
   `--seconds` (each at a random moment: a 28 × 28 painting written to the store, as the
   page does when a stroke ends; the pages keep polling meanwhile). For each answer, the time
   until the teacher's page shows a count that includes it (the count refreshes every 0.5 s).
   Errors: an exception on any page, a failed write, a count that never arrives.
3. **The reveal**: the teacher clicks Reveal; the server-side cost of the reveal itself
   (`live_class.map_result` on N paintings plus the model's map) is timed in this process
   over 20 repetitions, and the click → revealed page wall time is recorded.

Printed and written as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from load_test import CHROMIUM_ARGS  # noqa: E402

IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
ARGS = CHROMIUM_ARGS


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


def start_server(cache: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "SALIENCY_CACHE_DIR": str(cache)}
    env.pop("SALIENCY_CLASS_DB", None)
    proc = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, "-m", "dashboard", "--server.headless", "true",
         "--server.port", str(port), "--browser.gatherUsageStats", "false"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read()
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("the server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--wait", type=float, default=20.0, help="seconds of pure polling")
    parser.add_argument("--out", type=Path, default=REPO / "artifacts" / "bench_live.json")
    args = parser.parse_args()
    os.sched_setaffinity(0, {1})  # this process and Chromium: core 1; the server: core 0
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=180_000)  # 30 pages load on one shared core

    from dashboard import live_class
    from dashboard.live_store import LiveStore

    tmp = Path(tempfile.mkdtemp(prefix="bench-live-"))
    proc, url = start_server(tmp / "cache")
    store = LiveStore(f"sqlite:///{tmp / 'cache' / 'live-class.sqlite3'}")
    out: dict = {"students": args.students}
    errors: list[str] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            teacher = browser.new_page(viewport={"width": 1300, "height": 1400})
            teacher.set_default_timeout(180_000)
            teacher.goto(f"{url}/live")
            teacher.wait_for_selector(IDLE)
            teacher.get_by_role("button", name="Start a class").click()
            teacher.wait_for_function("() => location.search.includes('room=')", timeout=180_000)
            teacher.wait_for_selector(IDLE)
            from urllib.parse import parse_qs, urlparse

            code = parse_qs(urlparse(teacher.url).query)["room"][0]
            # The teacher's browser's own token, from its cookie (never in the address).
            for _ in range(600):
                jar = {c["name"]: c["value"] for c in teacher.context.cookies()}
                if (key := jar.get(f"saliency_teacher_{code}")) is not None:
                    break
                time.sleep(0.1)
            # Students join (their tokens from the store, as the Join button would make) and
            # open their waiting pages.
            tokens = [store.join(code, f"student {i:02d}") for i in range(args.students)]
            pages = []
            for t in tokens:
                context = browser.new_context(viewport={"width": 390, "height": 900})
                page = context.new_page()
                page.set_default_timeout(180_000)
                page.goto(f"{url}/live?room={code}&me={t}")
                pages.append(page)
            for page in pages:
                expect(page.get_by_text("Waiting for your teacher")).to_be_visible()
            teacher.close()  # its count refresh would mix into the polling figure
            time.sleep(3)
            # 1. Polling: server CPU while N pages wait.
            c0, t0 = cpu_seconds(proc.pid), time.monotonic()
            time.sleep(args.wait)
            c1, t1 = cpu_seconds(proc.pid), time.monotonic()
            polls = args.students * (t1 - t0) / 2.0
            out["poll_ms_server_cpu"] = 1000 * (c1 - c0) / polls
            out["polls"] = round(polls)
            # 2. A round: the teacher's page opens it; students answer within --seconds.
            teacher = browser.new_page(viewport={"width": 1300, "height": 1400})
            teacher.set_default_timeout(180_000)
            teacher.goto(f"{url}/api/live/teacher?room={code}&key={key}")  # the teacher link
            teacher.wait_for_selector(IDLE)
            teacher.get_by_role("button", name="Open the round").click()
            expect(teacher.get_by_text("Answers so far")).to_be_visible()
            teacher.wait_for_selector(IDLE)
            number = store.current_round(code).number
            for page in pages:  # every student page notices by itself
                expect(page.get_by_text("Round 1: Paint", exact=False)).to_be_visible()
            rng = random.Random(0)
            moments = sorted(rng.uniform(0, args.seconds) for _ in tokens)
            sent: list[float] = []
            c0 = cpu_seconds(proc.pid)

            def answer_all():
                start = time.monotonic()
                paint_rng = np.random.default_rng(0)
                for t, at in zip(tokens, moments, strict=True):
                    time.sleep(max(0.0, start + at - time.monotonic()))
                    try:
                        p = (paint_rng.random((28, 28)) > 0.85).astype(float)
                        store.answer(code, t, number, painting=p)
                        sent.append(time.monotonic())
                    except Exception as err:  # noqa: BLE001 - counted as an error
                        errors.append(f"answer: {err}")

            writer = threading.Thread(target=answer_all)
            writer.start()
            seen: dict[int, float] = {}
            count = teacher.locator(".live-watch .live-count-value")  # the watcher's count
            deadline = time.monotonic() + args.seconds + 30
            while len(seen) < args.students and time.monotonic() < deadline:
                try:
                    n = int(count.inner_text(timeout=5000))
                except Exception:  # noqa: BLE001 - mid-update: read again
                    n = len(seen)
                now = time.monotonic()
                for k in range(n):
                    seen.setdefault(k, now)
                time.sleep(0.05)
            writer.join()
            lags = [seen[k] - sent[k] for k in range(len(sent)) if k in seen]
            if len(seen) < args.students:
                errors.append(f"the teacher's count reached {len(seen)} of {args.students}")
            out["round_server_cpu_s"] = cpu_seconds(proc.pid) - c0
            out["answer_to_count_s"] = {
                "p50": statistics.median(lags),
                "p95": float(np.percentile(lags, 95)),
                "max": max(lags),
            }
            # 3. The reveal.
            start = time.monotonic()
            teacher.get_by_role("button", name="Reveal").click()
            expect(teacher.get_by_text("The class's Spearman")).to_be_visible()
            teacher.wait_for_selector(IDLE)
            out["reveal_click_to_page_s"] = time.monotonic() - start
            for page in pages[:3]:
                expect(page.get_by_text("Your ρ · your overlap")).to_be_visible()
            for page in [teacher, *pages]:
                if page.get_by_test_id("stException").count():
                    errors.append("an exception on a page")
            browser.close()
        answers = store.answers(code, key, number)
        import pretrained

        model = pretrained.load_model("mnist-cnn", device="cpu")
        x, _ = pretrained.load_dataset("mnist", "test")[:1]
        import saliency

        times = []
        for _ in range(20):
            t = time.perf_counter()
            m = saliency.gradients(model, x, target=7)[0, 0].numpy()
            live_class.map_result(m, answers, {"target": 7})
            times.append(time.perf_counter() - t)
        out["reveal_compute_ms"] = 1000 * statistics.median(times)
        out["server_rss_mb"] = rss_mb(proc.pid)
    finally:
        os.killpg(proc.pid, 9)
    out["errors"] = errors
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
