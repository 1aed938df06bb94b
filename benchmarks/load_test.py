"""Load test: N concurrent browser sessions clicking around one dashboard server.

    python benchmarks/load_test.py [--sessions 20] [--seconds 60] [--images 0] [--out PATH]

Starts one server (`python -m dashboard`, its own process group, killed at the end) and one
headless Chromium (Debian's /usr/bin/chromium; never `playwright install`), opens N browser
contexts and, for `--seconds`, has each one do random actions in the Explore view: switch the
target class (in the panel's own box), switch the model, Next, Random. Each action is timed
from the click to the moment the new map is on screen (the "Map: ..." image or the "Showing
..." line changed, the image has loaded, the script is idle, nothing stale). The server's RSS
(its process group) is sampled every 0.5 s. Errors: an exception box in a page, a JavaScript
error, a timeout.

`--images N` adds a second phase: one session visits N distinct (test image, model) pairs by
typing the image index, and the RSS is recorded after each, to show the bounded caches keep
memory flat. Results are printed and written to artifacts/load_test.json.

Chromium needs most of a core for a handful of pages, so on a two-core machine this is the
realism check (`--sessions 5 --think 3`); a class of 30 is measured with light clients that
speak Streamlit's websocket protocol (benchmarks/ws_client.py, same server, same actions).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import math
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from playwright.async_api import Page, async_playwright

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Chromium 156 loads its omnibox popup (a WebUI page, chrome://omnibox-popup.top-chrome) in
    # a renderer of its own for each new window: up to 3.5 s of CPU per new context here, on
    # the browser's one core, that no page of ours asks for and a user's open browser has
    # long since done.
    "--disable-features=WebUIOmniboxPopup,WebUIOmniboxFullPopup,PreloadTopChromeWebUI,WebUIOmniboxAimPopup",
    # Twenty pages in one browser: none of them may be throttled as a background tab.
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
]
VIEWPORT = {"width": 1280, "height": 1800}
ACTIONS = ("target", "model", "next", "random")
VERBOSE = bool(os.environ.get("LOAD_TEST_VERBOSE"))
POLL_MS = 50  # how often each page checks for the new map (rAF polling x20 pages costs CPU)

# The state the "done" check compares against: the map's src and caption, the "Showing" line.
SNAPSHOT_JS = """
() => {
  const cap = [...document.querySelectorAll('[data-testid="stImageCaption"]')]
    .find(c => c.innerText.trim().startsWith('Map: '));
  const img = cap && cap.closest('[data-testid="stImage"]').querySelector('img');
  const showing = [...document.querySelectorAll('[data-testid="stMarkdownContainer"]')]
    .map(m => m.innerText.trim()).find(t => t.startsWith('Showing'));
  return {src: img ? img.src : null, caption: cap ? cap.innerText.trim() : null,
          showing: showing || null};
}
"""
# Adapted from tests/browser/test_browser.py MAP_UPDATED_JS: done when something on the map changed
# (src, or the "Showing" line: a class whose map equals the previous one still counts), the
# image loaded, the script idle and nothing stale; or at once when an exception box appears.
MAP_UPDATED_JS = """
(old) => {
  if (document.querySelector('[data-testid="stException"]')) return 'exception';
  const cap = [...document.querySelectorAll('[data-testid="stImageCaption"]')]
    .find(c => c.innerText.trim().startsWith('Map: '));
  const img = cap && cap.closest('[data-testid="stImage"]').querySelector('img');
  const showing = [...document.querySelectorAll('[data-testid="stMarkdownContainer"]')]
    .map(m => m.innerText.trim()).find(t => t.startsWith('Showing'));
  const app = document.querySelector('[data-testid="stApp"]');
  const changed = !!img && (img.src !== old.src || (showing || null) !== old.showing
                            || cap.innerText.trim() !== old.caption);
  return changed && img.complete && img.naturalWidth > 0
    && !!app && app.dataset.testScriptState === 'notRunning'
    && !document.querySelector('[data-stale="true"]') ? 'ok' : false;
}
"""


# --- server and memory ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def snapshot_of_head() -> Path:
    """A copy of the last commit (`git archive`, read-only for the repo): a stable app to measure
    while others edit the working tree."""
    dest = Path(tempfile.mkdtemp(prefix="saliency-head-"))
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=REPO, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


SERVERS: list[subprocess.Popen] = []  # stopped at exit too, e.g. after SIGTERM from `timeout`


def start_server(log: Path, tree: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [
        "taskset", "-c", "0",  # the server on one core; this process and Chromium on the other
        sys.executable, "-m", "dashboard",
        "--server.headless", "true",
        "--server.port", str(port),
        "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",  # others edit the source meanwhile
    ]  # fmt: skip
    env = {**os.environ, "SALIENCY_CACHE_DIR": tempfile.mkdtemp(prefix="saliency-load-")}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    SERVERS.append(proc)
    url = f"http://localhost:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return proc, url
        except OSError:
            pass
        time.sleep(0.1)
    stop_server(proc)
    raise SystemExit("server not healthy after 90 s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(15)


def prioritise(nice: int) -> None:
    """Set the nice value of this process and of every process under it (the server, Chromium),
    all their threads, and of their scheduling autogroups: with `nice` < 0 (root only), they
    keep their cores on a machine others are using too, much as if the cores were their own.
    With kernel.sched_autogroup_enabled, each session (the server's start_new_session,
    Chromium's) competes as one group whatever its threads' nice, hence the autogroups. Call
    it again after starting processes; 0 does nothing."""
    if not nice:
        return
    for pid in [os.getpid(), *descendants(os.getpid())]:
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                os.setpriority(os.PRIO_PROCESS, int(tid), nice)
            with open(f"/proc/{pid}/autogroup", "w") as f:
                f.write(str(nice))
        except OSError:
            continue  # ended meanwhile, or no autogroups on this kernel


def proc_stats() -> Iterator[tuple[int, list[str]]]:
    """(pid, the fields of /proc/PID/stat after the command's name) of every live process; one
    that ends meanwhile is skipped. Field k of `man proc_pid_stat` is `fields[k - 3]`."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    yield int(entry), f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue


def descendants(root: int) -> list[int]:
    """Every live process below `root` (children, their children, …), at this moment."""
    children: dict[int, list[int]] = {}
    for pid, fields in proc_stats():
        children.setdefault(int(fields[1]), []).append(pid)  # field 4: ppid
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def group_cpu_s(pgid: int) -> float:
    """utime + stime, in seconds, of every live process in the server's process group (all
    their threads), plus what its leader's finished children used."""
    total = 0
    for pid, fields in proc_stats():
        if int(fields[2]) != pgid:  # field 5 of stat: process group
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
        if pid == pgid:
            total += int(fields[13]) + int(fields[14])  # cutime, cstime: reaped children
    return total / os.sysconf("SC_CLK_TCK")


def group_rss_mb(pgid: int) -> float:
    """Resident memory of every process in the server's process group (server + children), MB."""
    total_kb = 0
    for pid, fields in proc_stats():
        if int(fields[2]) != pgid:  # field 5 of stat: process group
            continue
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total_kb += int(line.split()[1])
        except OSError:
            continue  # the process ended meanwhile
    return total_kb / 1024


class RssSampler:
    def __init__(self, pgid: int, every: float = 0.5):
        self.pgid, self.every, self.samples = pgid, every, []  # (seconds since start, MB)
        self.start = time.monotonic()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.samples.append((time.monotonic() - self.start, group_rss_mb(self.pgid)))
            try:
                await asyncio.wait_for(stop.wait(), self.every)
            except TimeoutError:
                pass


# --- one session ------------------------------------------------------------------------------


class Session:
    def __init__(self, n: int, page: Page, url: str, timeout_ms: int, rng: random.Random):
        self.n, self.page, self.url, self.timeout_ms, self.rng = n, page, url, timeout_ms, rng
        self.latencies: dict[str, list[float]] = {a: [] for a in ACTIONS}
        self.errors: list[str] = []
        self.js_errors: list[str] = []
        page.on("pageerror", lambda e: self.js_errors.append(str(e)))

    async def snapshot(self) -> dict:
        return await self.page.evaluate(SNAPSHOT_JS)

    async def wait_map(self, old: dict) -> str:
        handle = await self.page.wait_for_function(
            MAP_UPDATED_JS, arg=old, polling=POLL_MS, timeout=self.timeout_ms
        )
        return await handle.json_value()

    async def open(self) -> float:
        start = time.perf_counter()
        await self.page.goto(self.url, timeout=self.timeout_ms)
        result = await self.wait_map({"src": None, "caption": None, "showing": None})
        if result == "exception":
            self.errors.append(f"session {self.n}: exception on first render: {await self.exc()}")
        return time.perf_counter() - start

    async def exc(self) -> str:
        texts = await self.page.get_by_test_id("stException").all_inner_texts()
        return " | ".join(t[:500] for t in texts)

    async def pick(self, label: str, avoid):
        """Open the sidebar selectbox `label`; return when ready to click an option != avoid."""
        box = self.page.get_by_test_id("stSidebar").get_by_role("combobox", name=label, exact=True)
        await box.click()
        options = self.page.get_by_role("option")
        await options.first.wait_for(timeout=self.timeout_ms)
        names = [t.strip() for t in await options.all_inner_texts()]
        selected = await options.evaluate_all(
            "os => os.map(o => o.getAttribute('aria-selected') === 'true')"
        )
        choices = [n for n, s in zip(names, selected, strict=True) if not s and not avoid(n)]
        return self.page.get_by_role("option", name=self.rng.choice(choices), exact=True)

    async def act(self, action: str) -> None:
        old = await self.snapshot()
        if action == "target":
            current = re.search(r"\[(.+?)\]", old["caption"] or "")
            shown = current.group(1) if current else None
            # A class, never the predicted/true entry: the one on screen could be the same map.
            # The panel's own target box (saliency/panel/panel.js `buildControls`).
            box = self.page.locator(".sal-panel").get_by_role(
                "combobox", name="Target class", exact=True
            )
            await box.wait_for(timeout=self.timeout_ms)
            options = await box.locator("option").evaluate_all(
                "os => os.map(o => [o.value, o.textContent, o.selected])"
            )
            others = [v for v, t, on in options if not on and t != shown and v.isdigit()]
            k = self.rng.choice(others)
            go = lambda: box.select_option(k, timeout=self.timeout_ms)  # noqa: E731
        else:
            if action == "model":
                target = await self.pick("Model", lambda n: False)
            else:
                name = "Next ▶" if action == "next" else "🎲 Random"
                target = self.page.get_by_role("button", name=name, exact=True)
            go = lambda: target.click(timeout=self.timeout_ms)  # noqa: E731
        start = time.perf_counter()
        await go()
        result = await self.wait_map(old)
        elapsed = (time.perf_counter() - start) * 1000
        if result == "exception":
            self.errors.append(f"session {self.n} {action}: exception: {await self.exc()}")
            await self.page.goto(self.url, timeout=self.timeout_ms)
        else:
            self.latencies[action].append(elapsed)

    async def loop(self, deadline: float, think: float = 0.0) -> None:
        while time.monotonic() < deadline:
            if think:  # a student looks at the map before the next click: ±50 % of `think`
                await asyncio.sleep(think * self.rng.uniform(0.5, 1.5))
                if time.monotonic() >= deadline:
                    break
            action = self.rng.choice(ACTIONS)
            if VERBOSE:
                print(f"  session {self.n}: {action}", flush=True)
            try:
                await self.act(action)
            except Exception as e:  # noqa: BLE001 - timeouts and the like: count, recover
                self.errors.append(f"session {self.n} {action}: {type(e).__name__}: {e!s:.300}")
                if time.monotonic() < deadline:
                    try:
                        await self.page.keyboard.press("Escape")
                        await self.page.goto(self.url, timeout=self.timeout_ms)
                        await self.wait_map({"src": None, "caption": None, "showing": None})
                    except Exception as e2:  # noqa: BLE001
                        self.errors.append(f"session {self.n} reload: {type(e2).__name__}")


# --- phases -----------------------------------------------------------------------------------


def summary(ms: list[float]) -> dict:
    if not ms:
        return {"n": 0}
    ranked = sorted(ms)
    return {
        "n": len(ranked),
        "p50_ms": round(statistics.median(ranked), 1),
        "p95_ms": round(ranked[math.ceil(0.95 * len(ranked)) - 1], 1),
        "max_ms": round(ranked[-1], 1),
    }


async def load_phase(browser, url: str, args, sampler: RssSampler) -> dict:
    rng = random.Random(args.seed)
    contexts = [await browser.new_context(viewport=VIEWPORT) for _ in range(args.sessions)]
    sessions = [
        Session(i, await c.new_page(), url, args.timeout * 1000, random.Random(rng.random()))
        for i, c in enumerate(contexts)
    ]
    prioritise(args.nice)  # the pages' renderer processes
    t0 = time.monotonic()
    opened = await asyncio.gather(*(s.open() for s in sessions), return_exceptions=True)
    open_s = [o for o in opened if isinstance(o, float)]
    open_errors = [
        f"open: {type(o).__name__}: {o!s:.300}" for o in opened if isinstance(o, BaseException)
    ]
    all_open = time.monotonic() - t0
    print(f"{len(open_s)}/{args.sessions} sessions rendered in {all_open:.1f} s", flush=True)
    rss_before_actions = group_rss_mb(sampler.pgid)
    load_before = os.getloadavg()
    cpu_before = group_cpu_s(sampler.pgid)
    deadline = time.monotonic() + args.seconds
    t1 = time.monotonic()
    await asyncio.gather(*(s.loop(deadline, args.think) for s in sessions))
    wall = time.monotonic() - t1
    server_cpu = group_cpu_s(sampler.pgid) - cpu_before
    load_after = os.getloadavg()
    exceptions_left = 0
    for s in sessions:
        exceptions_left += await s.page.get_by_test_id("stException").count()
    for c in contexts:
        await c.close()
    per_action = {a: [x for s in sessions for x in s.latencies[a]] for a in ACTIONS}
    overall = [x for v in per_action.values() for x in v]
    errors = open_errors + [e for s in sessions for e in s.errors]
    js_errors = [f"session {s.n}: {e[:300]}" for s in sessions for e in s.js_errors]
    return {
        "sessions": args.sessions,
        "seconds": args.seconds,
        "wall_seconds": round(wall, 1),
        "first_render_s": summary([x * 1000 for x in open_s])
        | {"all_sessions_s": round(all_open, 1)},
        "actions_completed": len(overall),
        "actions_per_second": round(len(overall) / wall, 2),
        "per_session_actions": [sum(len(v) for v in s.latencies.values()) for s in sessions],
        "errors": len(errors) + len(js_errors) + exceptions_left,
        "error_details": (errors + js_errors)[:30],
        "timeouts": sum("Timeout" in e for e in errors),
        "latency_ms": {a: summary(v) for a, v in per_action.items()}
        | {"overall": summary(overall)},
        "server_cpu_s": round(server_cpu, 2),
        "server_cpu_ms_per_action": round(1000 * server_cpu / max(1, len(overall)), 1),
        "rss_mb_before_actions": round(rss_before_actions, 1),
        "loadavg_before": load_before,
        "loadavg_after": load_after,
    }


async def images_phase(browser, url: str, n: int, timeout_ms: int, seed: int, pgid: int) -> dict:
    """One session, N distinct (image index, model) pairs typed in; RSS after each."""
    context = await browser.new_context(viewport=VIEWPORT)
    s = Session(-1, await context.new_page(), url, timeout_ms, random.Random(seed))
    await s.open()
    # The models on offer for the default data set.
    box = s.page.get_by_test_id("stSidebar").get_by_role("combobox", name="Model", exact=True)
    await box.click()
    await s.page.get_by_role("option").first.wait_for()
    options = s.page.get_by_role("option")
    models = [t.strip() for t in await options.all_inner_texts()]
    chosen = await options.evaluate_all("os => os.map(o => o.getAttribute('aria-selected'))")
    current = models[chosen.index("true")] if "true" in chosen else None
    await s.page.keyboard.press("Escape")
    rng = random.Random(seed)
    indices = rng.sample(range(10_000), n)
    rss, times, errors = [], [], []
    index_box = s.page.get_by_label("Test image index")
    t0 = time.monotonic()
    for i, k in enumerate(indices):
        try:
            want = models[(i * len(models)) // n]  # every model gets a share of the images
            if want != current:
                old = await s.snapshot()
                await box.click()
                await s.page.get_by_role("option", name=want, exact=True).click()
                await s.wait_map(old)
                current = want
            old = await s.snapshot()
            start = time.perf_counter()
            await index_box.fill(str(k))
            await index_box.press("Enter")
            if await s.wait_map(old) == "exception":
                errors.append(f"image {k}: {await s.exc()}")
            times.append((time.perf_counter() - start) * 1000)
        except Exception as e:  # noqa: BLE001
            errors.append(f"image {k}: {type(e).__name__}: {e!s:.200}")
        rss.append(round(group_rss_mb(pgid), 1))
        if (i + 1) % 25 == 0:
            print(f"  images phase: {i + 1}/{n}, RSS {rss[-1]:.0f} MB", flush=True)
    await context.close()
    quarter = max(1, n // 4)
    return {
        "images": n,
        "models": models,
        "wall_seconds": round(time.monotonic() - t0, 1),
        "latency_ms": summary(times),
        "errors": len(errors) + len(s.js_errors),
        "error_details": (errors + s.js_errors)[:20],
        "rss_mb_every_25": rss[24::25],
        "rss_mb_first_quarter_mean": round(statistics.mean(rss[:quarter]), 1),
        "rss_mb_last_quarter_mean": round(statistics.mean(rss[-quarter:]), 1),
        "rss_mb_max": max(rss),
    }


async def main_async(args) -> dict:
    log = REPO / "artifacts" / "load_test_server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    tree = snapshot_of_head() if args.tree == "HEAD" else Path(args.tree).resolve()
    proc, url = start_server(log, tree)
    prioritise(args.nice)
    sampler = RssSampler(proc.pid)
    stop = asyncio.Event()
    sampling = asyncio.create_task(sampler.run(stop))
    result: dict = {
        "url": url,
        "tree": str(tree),
        "machine": {"cpus": os.cpu_count(), "loadavg_1_5_15_at_start": os.getloadavg()},
        "nice": args.nice,
    }
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            prioritise(args.nice)
            try:
                if args.sessions > 0:
                    result |= await load_phase(browser, url, args, sampler)
                if args.images > 0:
                    result["images_phase"] = await images_phase(
                        browser, url, args.images, args.timeout * 1000, args.seed, proc.pid
                    )
            finally:
                await browser.close()
    finally:
        stop.set()
        await sampling
        rss_end = group_rss_mb(proc.pid)
        stop_server(proc)
    mb = [m for _, m in sampler.samples if m > 0]
    result["server_rss_mb"] = {
        "start": round(mb[0], 1) if mb else None,
        "peak": round(max(mb), 1) if mb else None,
        "end": round(rss_end, 1),
        "samples": len(mb),
    }
    result["machine"]["loadavg_1_5_15_at_end"] = os.getloadavg()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--images", type=int, default=0, help="2nd phase: N distinct images")
    parser.add_argument("--timeout", type=int, default=120, help="per action, seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--think", type=float, default=0.0, help="seconds a session waits between its clicks"
    )
    parser.add_argument(
        "--tree",
        default=str(REPO),
        help='app directory to serve; "HEAD": a copy of the last commit',
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="on a shared machine: the server's and Chromium's priority, e.g. -19 (root only)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "artifacts" / "load_test.json")
    args = parser.parse_args()
    os.sched_setaffinity(0, {1})  # Chromium and this process: CPU 1 (the server: CPU 0)
    atexit.register(lambda: [stop_server(p) for p in SERVERS])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = asyncio.run(main_async(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    short = {k: v for k, v in result.items() if k not in ("per_session_actions",)}
    print(json.dumps(short, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
