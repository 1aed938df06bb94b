"""A hostile student against a real dashboard server: every hostile model of issue 15, uploaded
through Chromium, with the server's memory sampled all along.

    python benchmarks/hostile_uploads.py [--timeout 5] [--out artifacts/hostile_uploads.json]

Starts `python -m dashboard` (its own process group; SALIENCY_WORKER_TIMEOUT_S=--timeout) and
Debian's headless Chromium (never `playwright install`). Each case opens a fresh browser
context (a new student), uploads its file on the Your model page and waits for the page's
verdict. The trap case is a working classifier that loops forever on an almost white image: it
is accepted, then opened in Explore on such an image. A sampler reads every 50 ms the RSS of the
server process and of its descendants (the fork server and the model workers). Printed at the
end: each case's message and seconds, whether any file was written, the server's baseline and
peak RSS, the workers' peak, and the processes still busy after the last case.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the hostile model files of the test suite

import hostile  # noqa: E402
from load_test import CHROMIUM_ARGS, descendants  # noqa: E402
from playwright.sync_api import expect, sync_playwright  # noqa: E402

import pretrained  # noqa: E402
from sandbox.images import encode_image  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = CHROMIUM_ARGS
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return 0


def _cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


class Sampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.server_peak = 0
        self.workers_peak = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.server_peak = max(self.server_peak, _rss(self.pid))
            workers = sum(_rss(p) for p in descendants(self.pid))
            self.workers_peak = max(self.workers_peak, workers)
            time.sleep(0.05)


def start_server(timeout: float, log: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "SALIENCY_WORKER_TIMEOUT_S": str(timeout),
        "SALIENCY_CACHE_DIR": tempfile.mkdtemp(prefix="saliency-cache-"),
    }
    cmd = [sys.executable, "-m", "dashboard", "--server.headless", "true", "--server.port",
           str(port), "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://localhost:{port}"
    for _ in range(1800):
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return proc, url
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the server did not start:\n{log.read_text()[-2000:]}")


def verdict(page, seconds: float) -> str:
    """The page's error or success text once the check is over."""
    alert = page.locator(
        '[data-testid="stAlertContentError"], [data-testid="stAlertContentSuccess"]'
    )
    expect(alert.first).to_be_visible(timeout=seconds * 1000)
    page.wait_for_selector(IDLE, timeout=seconds * 1000)
    if page.get_by_test_id("stException").count():
        return "EXCEPTION: " + page.get_by_test_id("stException").first.inner_text()[:300]
    return alert.first.inner_text().strip()


def upload(page, url: str, name: str, data: bytes, seconds: float) -> tuple[str, float]:
    page.goto(f"{url}/your-model")
    expect(page.get_by_role("button", name="Check and add")).to_be_visible(timeout=120_000)
    page.wait_for_selector(IDLE, timeout=120_000)
    page.get_by_test_id("stFileUploaderDropzoneInput").first.set_input_files(
        files=[{"name": name, "mimeType": "application/octet-stream", "buffer": data}]
    )
    start = time.perf_counter()
    page.get_by_role("button", name="Check and add").click()
    text = verdict(page, seconds)
    return text, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--timeout", type=float, default=5.0, help="the workers' per-request limit")
    ap.add_argument("--out", type=Path, default=REPO / "artifacts" / "hostile_uploads.json")
    args = ap.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="hostile-"))
    written, secret = scratch / "written-by-model", scratch / "secret"
    secret.write_bytes(b"a secret file the model must never see")

    cnn = pretrained.load_model("mnist-cnn", device="cpu")
    cases = [
        ("writer", hostile.writer(str(written))),
        ("reader", hostile.reader(str(secret))),
        ("forever loop", hostile.forever_loop()),
        ("loops on a batch", hostile.batch_loop()),
        ("memory hoarder", hostile.hoarder()),
        ("deflate bomb (1 GB)", hostile.deflate_bomb(1024)),
        ("legitimate CNN", hostile.scripted(cnn)),
        ("trap (accepted, then hangs)", hostile.trap()),
    ]
    proc, url = start_server(args.timeout, args.out.with_suffix(".server.log"))
    results = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            warm = browser.new_page()
            warm.goto(url)
            warm.wait_for_selector(IDLE, timeout=120_000)
            warm.close()
            time.sleep(1)
            baseline = _rss(proc.pid)
            sampler = Sampler(proc.pid)
            sampler.start()
            for name, data in cases:
                context = browser.new_context(viewport={"width": 1280, "height": 2000})
                page = context.new_page()
                text, seconds = upload(page, url, f"{name.split()[0]}.pt", data, 120)
                row = {"case": name, "bytes": len(data), "seconds": round(seconds, 2)}
                if name.startswith("trap") and text.startswith("Accepted"):
                    page.get_by_role("button", name="Open it in Explore").click()
                    heading = page.get_by_role("heading", name="Explore", exact=True)
                    expect(heading).to_be_visible(timeout=120_000)
                    page.wait_for_selector(IDLE, timeout=120_000)
                    white = encode_image(np.ones((28, 28), np.float32))
                    start = time.perf_counter()
                    parts = urllib.parse.urlsplit(page.url)
                    query = urllib.parse.parse_qsl(parts.query) + [
                        ("source", "draw"),
                        ("image", white),
                    ]
                    page.goto(parts._replace(query=urllib.parse.urlencode(query)).geturl())
                    alert = page.locator('[data-testid="stAlertContentError"]')
                    try:
                        expect(alert.first).to_be_visible(timeout=120_000)
                    except AssertionError:
                        page.screenshot(path=str(args.out.with_suffix(".trap.png")))
                        raise
                    text = "accepted; then in Explore: " + alert.first.inner_text().strip()
                    row["seconds"] = round(time.perf_counter() - start, 2)
                row["message"] = text
                row["server_alive"] = proc.poll() is None
                results.append(row)
                print(f"{name:28s} {row['seconds']:6.1f} s  {text[:150]}", flush=True)
                context.close()
            time.sleep(args.timeout + 1)
            busy_before = {p: _cpu_seconds(p) for p in descendants(proc.pid)}
            time.sleep(2)
            busy = [p for p, t in busy_before.items() if _cpu_seconds(p) - t > 1.0]
            sampler.stopped.set()
            sampler.join()
            browser.close()
    finally:
        peak_now = _rss(proc.pid)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
    summary = {
        "cases": results,
        "file_written": written.exists(),
        "server_rss_baseline_mb": round(baseline / 2**20),
        "server_rss_peak_mb": round(sampler.server_peak / 2**20),
        "server_rss_end_mb": round(peak_now / 2**20),
        "workers_rss_peak_mb": round(sampler.workers_peak / 2**20),
        "processes_still_busy": len(busy),
        "worker_timeout_s": args.timeout,
    }
    args.out.write_text(json.dumps(summary, indent=2))
    print(
        f"\nfile written by a model: {summary['file_written']}\n"
        f"server RSS: baseline {summary['server_rss_baseline_mb']} MB, peak "
        f"{summary['server_rss_peak_mb']} MB, end {summary['server_rss_end_mb']} MB\n"
        f"workers (fork server + models) peak RSS: {summary['workers_rss_peak_mb']} MB\n"
        f"processes still busy afterwards: {summary['processes_still_busy']}\n"
        f"written to {args.out}"
    )


if __name__ == "__main__":
    main()
