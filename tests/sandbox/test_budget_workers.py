"""The workers' share of the memory budget (issue 28, items 2, 3 and 7).

- An upload's accuracy is measured chunk by chunk, and each chunk's answer is refused from its
  header unless it is (chunk, K): a 35 kB model that answers (1, 10) on one image and
  (n, 524,288) on batches took the server up 1,053 MB on 256 test images and past 20 GB on
  10,000 (main @197c942); here it is refused, and the server grows by less than 100 MB.
- A worker's reply is checked against what its job answers before any byte of its arrays is
  read: a header announcing 2 GiB set aside 2,048 MB before; a reply nested 700 deep escaped as
  RecursionError.
- One pool of at most `SALIENCY_MAX_WORKERS` worker processes for every upload, check,
  workspace build and table model: six concurrent checks on a server that already holds four
  uploads ran 9-10 workers before.
"""

from __future__ import annotations

import io
import json
import math
import multiprocessing.forkserver
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import warnings

import hostile
import numpy as np
import pytest
import torch
from torch import nn

import pretrained
from sandbox import jobs, user_models, worker
from sandbox.gate import UserModelError
from sandbox.worker import Limits

pytestmark = hostile.needs_sandbox

N_TEST = 500  # test images the accuracy is measured on here (the app uses all 10,000)
LIMITS = dict(job_seconds=20.0, load_seconds=60.0, memory_bytes=1024 * 2**20, threads=1)
MB = 2**20


@pytest.fixture(autouse=True)
def fewer_test_images(monkeypatch):
    monkeypatch.setattr(user_models, "TEST_IMAGES", N_TEST)


def limits(**changes) -> Limits:
    return Limits(**{**LIMITS, **changes})


def accept(data: bytes, **kwargs):
    kwargs.setdefault("limits", limits())
    return user_models.accept_upload(data, dataset="mnist", **kwargs)


def example() -> np.ndarray:
    return pretrained.load_dataset("mnist", "test").images[:1].numpy()


def status_bytes(key: str, pid: int | str = "self") -> int:
    """A line of /proc/PID/status (VmRSS, VmHWM…) in bytes; 0 when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def reset_peak() -> int:
    """Reset this process's VmHWM to its VmRSS (Linux: clear_refs 5); the RSS now."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return status_bytes("VmRSS")


# --- the models -----------------------------------------------------------------------------


class HugeBatches(nn.Module):
    """A fine MNIST classifier on one image, (n, 524,288) scores on a batch: passes the
    one-image check, then answers 2 MB per image while the accuracy is measured."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(784, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.linear(x.flatten(1))
        if x.shape[0] > 1:
            return out.repeat(1, 52429)[:, :524288]
        return out


class Heavy(nn.Module):
    """Legal, but each image goes through 128 copies of itself: about 0.4 MB per image in
    the worker, 100 MB for a chunk of 256."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.linear = nn.Linear(784, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wide = x.expand(-1, 128, -1, -1).contiguous()  # (N, 128, 28, 28)
        return self.linear(wide.mean(1).flatten(1))


def linear(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))


def scripted(model: nn.Module) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(model), buf)
    return buf.getvalue()


def accuracy_here(model: nn.Module) -> float:
    test = pretrained.load_dataset("mnist", "test")
    with torch.no_grad():
        predicted = model(test.images[:N_TEST]).argmax(1)
    return float((predicted == test.labels[:N_TEST]).double().mean())


# --- 2: a model answering huge batches, through accept_upload, in a fresh server process -----

_SERVER = """
import json, sys
from sandbox import user_models
data = open(sys.argv[1], "rb").read()
user_models._test_set("mnist")  # the bundled test set, as a warm server holds it
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
before = status("VmRSS")
try:
    user_models.accept_upload(data, dataset="mnist")
    error = None
except user_models.UserModelError as err:
    error = str(err)
print(json.dumps({"error": error, "growth": status("VmHWM") - before}))
"""


def test_a_model_answering_huge_batches_is_refused_from_its_first_chunks_header(tmp_path):
    """All 10,000 test images, default settings, as the Your model page runs it: before, the
    server kept every chunk's answer (1,053 MB on 256 images; killed by the kernel at 10,000
    on a 24 GB machine). Now the first batch's reply is refused from its header."""
    path = tmp_path / "huge.pt"
    path.write_bytes(scripted(HugeBatches()))
    assert len(path.read_bytes()) < 40_000
    out = subprocess.run(
        [sys.executable, "-c", _SERVER, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["error"] is not None
    assert re.search(r"returned shape \((\d+), 524288\) instead of \(\1, 10\)", got["error"])
    assert got["error"].startswith("The model works on one image but failed on a batch")
    assert got["growth"] < 100 * MB, f"the server grew by {got['growth'] / MB:.0f} MB"


def test_the_chunks_of_an_accuracy_run_are_capped_whatever_the_model_says(monkeypatch):
    """A model that answers its one-image check in no time still gets at most MAX_CHUNK
    images per request (before: up to 1,000, set by the model's own time)."""
    sizes = []
    original = worker.Worker.call

    def spy(self, job, *args, **kwargs):
        if job == "logits":  # (the check's batch of two is another job)
            sizes.append(len(args[0]))
        return original(self, job, *args, **kwargs)

    monkeypatch.setattr(worker.Worker, "call", spy)
    w, info = accept(scripted(linear(1)))
    w.stop()
    assert max(sizes) <= user_models.MAX_CHUNK == 256
    assert sum(sizes) == N_TEST == info.n_test


# --- 7: the reader refuses a header before it allocates ---------------------------------------


def _frame(header: dict | bytes) -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<I", len(text)) + text


_ANSWER = worker.Expect(max_bytes=8 * 16 * 10, shapes=((16, 10),))  # logits of 16 images


@pytest.mark.parametrize(
    ("raw", "error", "message"),
    [
        (  # 2 GiB announced, nothing sent: 2,048 MB were set aside before
            _frame(
                {
                    "body": {"ok": True, "result": {"__array__": 0}},
                    "arrays": [["float32", [2**29 - 1]]],
                }
            ),
            worker.WrongAnswer,
            r"shape \(536870911,\) instead of \(16, 10\)",
        ),
        (  # the model: the right rows, 524,288 scores each
            _frame(
                {
                    "body": {"ok": True, "result": {"__array__": 0}},
                    "arrays": [["float32", [16, 524288]]],
                }
            ),
            worker.WrongAnswer,
            r"shape \(16, 524288\) instead of \(16, 10\)",
        ),
        (  # the right shape, but integers
            _frame(
                {"body": {"ok": True, "result": {"__array__": 0}}, "arrays": [["int64", [16, 10]]]}
            ),
            worker.WrongAnswer,
            "an array of int64 instead of an array of floats",
        ),
        (  # nested 700 deep: escaped as RecursionError before
            _frame(b'{"body": ' + b"[" * 700 + b"1" + b"]" * 700 + b', "arrays": []}'),
            worker.ProtocolError,
            "nested more than 32 deep",
        ),
        (  # deeper than Python's stack: the JSON decoder's own RecursionError
            _frame(b'{"body": ' + b"[" * 100_000 + b"]" * 100_000 + b', "arrays": []}'),
            worker.ProtocolError,
            "malformed message header",
        ),
        (
            _frame(b"[" * 700 + b"]" * 700),
            worker.ProtocolError,
            "malformed message header",
        ),
        (
            struct.pack("<I", worker.MAX_HEADER + 1),
            worker.ProtocolError,
            "header of 262,145 bytes",
        ),
    ],
)
def test_a_reply_that_is_not_the_jobs_answer_is_refused_before_anything_is_allocated(
    raw, error, message
):
    server, fake_worker = socket.socketpair()
    with server, fake_worker:
        fake_worker.sendall(raw)  # a header, then nothing: the reader must not wait for more
        before = reset_peak()
        with pytest.raises(error, match=message):
            worker.read_message(server.fileno(), time.monotonic() + 5, _ANSWER)
        assert status_bytes("VmHWM") - before < 16 * MB


def test_an_error_reply_and_the_right_answer_pass_the_same_check():
    for message in (
        {"ok": False, "kind": "error", "error": "boom"},
        {"ok": True, "result": np.ones((16, 10), np.float32)},
    ):
        r, w = os.pipe()
        worker.write_message(w, message)
        os.close(w)
        got = worker.read_message(r, time.monotonic() + 5, _ANSWER)
        os.close(r)
        assert got.keys() == message.keys()


def _wire_specs(result) -> list[tuple[np.dtype, tuple[int, ...]]]:
    arrays: list[np.ndarray] = []
    worker._to_wire(result, arrays)
    return [(a.dtype, a.shape) for a in arrays]


def test_every_jobs_real_answer_fits_what_the_server_expects_of_it():
    """The bound must never refuse an honest answer: each job, run here, against
    `answer_shape` and `answer_bytes` (what `Worker.call` lets a reply announce)."""
    net = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 26 * 26, 10)
    ).eval()
    x = example().repeat(3, 0)  # (3, 1, 28, 28)
    table = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).eval()
    rows = np.random.default_rng(0).random((6, 5), dtype=np.float32)
    cases = [
        ("logits", net, x, {}),
        ("probabilities", net, x, {}),
        ("check", net, x[:1], {"n_classes": 10}),
        ("class_maps", net, x, {"method": "gradient", "score": "logit", "absolute": True}),
        (
            "class_maps",
            net,
            x,
            {"method": "gradient", "score": "logit", "absolute": True, "classes": [3, 7]},
        ),
        (
            "class_maps",
            net,
            x,
            {
                "method": "smoothgrad",
                "score": "logit",
                "absolute": True,
                "classes": [1],
                "n_samples": 2,
            },
        ),
        ("contrast", net, x, {"target": 1, "versus": 2, "method": "gradient", "score": "logit"}),
        (
            "maps",
            net,
            x,
            {
                "targets": np.array([0, 4, 9]),
                "method": "gradient",
                "score": "logit",
                "absolute": True,
            },
        ),  # fmt: skip
        ("ig_delta", net, x, {"target": 1, "score": "logit", "steps": 4}),
        ("summary", net, x, {"labels": np.array([0, 1, 2]), "num_classes": 10}),
        ("own_class", net, x, {"labels": np.array([0, 1, 2])}),
        ("nudge", net, x[:1], {"pixel": (0, 14, 14), "deltas": (-0.5, 0.0, 0.5), "target": 3}),
        ("autograd_vs_fd", net, x[:1], {"target": 3}),
        ("sanity", net, x[:2], {"target": 3}),
        ("faithfulness", net, x[:1], {"target": 3, "start": "blurred"}),
        ("table_outputs", table, rows[:1], {}),
        ("table_jacobian", table, rows, {"output": None, "column": 1}),
        ("table_jacobian", table, rows, {"output": None, "column": 1, "score": "probability"}),
        ("table_classify", table, rows, {"output": None, "labels": np.array([0, 1, 2, 0, 1, 2])}),
        (
            "table_differences",
            table,
            rows,
            {"output": None, "column": 1, "steps": np.full(5, 1e-3)},
        ),
        ("table_check", table, rows, {"output": None, "column": 1, "steps": np.full(5, 1e-3)}),
        (
            "table_nudge",
            table,
            rows[:1],
            {"output": None, "column": 1, "feature": 2, "deltas": np.array([-0.1, 0.1])},
        ),
    ]
    for job, model, inputs, kwargs in cases:
        result = jobs.run(job, model, inputs, **kwargs)
        shape = jobs.answer_shape(job, inputs.shape, 10, kwargs)
        expect = worker.Expect(
            max_bytes=jobs.answer_bytes(job, inputs.shape, 10, kwargs),
            shapes=None if shape is None else (shape,),
        )
        specs = _wire_specs({"ok": True, "result": result})
        assert expect.problem(specs) is None, (job, kwargs, specs)
        assert jobs.check_result(job, result, inputs.shape, 10, kwargs) is None, job
        # and a tight bound: one element more in any array is refused for array answers
        if shape is not None:
            assert expect.problem([(np.dtype("float32"), (shape[0], math.prod(shape[1:]) + 1))])


# --- 29.1: class_maps for chosen classes on an uploaded model --------------------------------


def test_class_maps_for_chosen_classes_on_an_uploaded_model():
    """The Misclassifications detail and the Live reveal ask for two classes or one: the
    worker's check compared that with all K ("(1, 2, 1, 8, 8) instead of (1, 10, 1, 8, 8)")."""
    model = linear(3)
    pool = worker.Pool()
    w, info = accept(scripted(model))
    u = pool.add(worker.Upload(info.name, w, info))
    x = example()
    opts = {"method": "gradient", "score": "logit", "absolute": True}
    try:
        two = pool.call(u.name, "class_maps", x, classes=[3, 7], **opts)
        one = pool.call(u.name, "class_maps", x, classes=[5], **opts)
        every = pool.call(u.name, "class_maps", x, **opts)
    finally:
        pool.close()
    assert two.shape == (1, 2, 1, 28, 28)
    assert one.shape == (1, 1, 1, 28, 28)
    assert every.shape == (1, 10, 1, 28, 28)
    here = jobs.class_maps(model.eval(), x, **opts)  # (1, 10, 1, 28, 28), in this process
    np.testing.assert_allclose(two, here[:, [3, 7]], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(one, here[:, [5]], rtol=1e-5, atol=1e-7)


# --- 3: one pool of at most N workers -------------------------------------------------------


def _forkserver_pid() -> int | None:
    return getattr(multiprocessing.forkserver._forkserver, "_forkserver_pid", None)


def worker_processes() -> list[int]:
    """Live (not zombie) children of the workers' fork server: every worker of this process."""
    parent = _forkserver_pid()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[1]) == parent:
            found.append(int(entry.name))
    return found


class Sampler:
    """Counts the worker processes and adds up their RSS every 20 ms while it runs."""

    def __init__(self) -> None:
        self.most = 0
        self.most_rss = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            pids = worker_processes()
            self.most = max(self.most, len(pids))
            self.most_rss = max(self.most_rss, sum(status_bytes("VmRSS", p) for p in pids))
            time.sleep(0.02)

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def _concurrent_checks(models: list[nn.Module]) -> tuple[list, list[list[worker.Wait]]]:
    results: list = [None] * len(models)
    waits: list[list[worker.Wait]] = [[] for _ in models]
    files = [scripted(m) for m in models]

    def check(i: int) -> None:
        with worker.on_wait(waits[i].append):
            try:
                results[i] = accept(files[i])
            except Exception as err:  # noqa: BLE001 - reported by the test
                results[i] = err

    threads = [threading.Thread(target=check, args=(i,)) for i in range(len(models))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, waits


@pytest.mark.parametrize("n", [4, 2])
def test_six_concurrent_checks_never_run_more_than_n_workers(monkeypatch, n):
    """Before: six checks ran six workers, and on a server already holding four uploads, 9-10.
    Here the server holds N idle uploads first; every check still finds a worker in turn, and
    each measures its own model's accuracy."""
    monkeypatch.setenv("SALIENCY_MAX_WORKERS", str(n))
    pool = worker.Pool(max_live=8)  # the pool's own bound out of the way: the server's holds
    held = []
    for seed in range(n):
        w, info = accept(scripted(linear(100 + seed)))
        held.append(pool.add(worker.Upload(info.name, w, info)))
    assert len(worker_processes()) == n
    models = [Heavy(seed) for seed in range(6)]
    try:
        with Sampler() as sampled:
            results, waits = _concurrent_checks(models)
            # the uploads held before still answer (restarted in turn)
            for u in held:
                assert pool.call(u.name, "probabilities", example()).shape == (1, 10)
        assert sampled.most <= n, f"{sampled.most} workers ran at once (at most {n})"
        assert sampled.most == n
        for model, result in zip(models, results, strict=True):
            assert not isinstance(result, Exception), result
            w, info = result
            assert info.test_accuracy == pytest.approx(accuracy_here(model), abs=1 / N_TEST)
            w.stop()
        waited = [w for w in waits if w]
        assert len(waited) >= 1  # the limit was met: someone waited in line
        assert all(str(w[0]).startswith("Waiting for a free model worker") for w in waited)
        assert all(w[0].limit == n for w in waited)
        # the workers' memory: at most N of them, each within its limit above its base
        base = status_bytes("VmRSS", _forkserver_pid())
        assert sampled.most_rss <= n * (LIMITS["memory_bytes"] + base)
        print(f"N={n}: peak {sampled.most} workers, {sampled.most_rss / MB:.0f} MB RSS in all")
    finally:
        pool.close()


def test_an_idle_worker_is_stopped_to_make_room_and_restarts_when_used(monkeypatch):
    monkeypatch.setenv("SALIENCY_MAX_WORKERS", "1")
    pool = worker.Pool(max_live=8)
    try:
        a = pool.add(worker.Upload(*_accepted(linear(1))))
        b = pool.add(worker.Upload(*_accepted(linear(2))))
        assert not a.worker.alive and b.worker.alive  # a was idle: stopped for b's check
        assert pool.call(a.name, "probabilities", example()).shape == (1, 10)
        assert a.worker.alive and not b.worker.alive
        assert worker_processes() == [a.worker.pid]
    finally:
        pool.close()


def _accepted(model: nn.Module) -> tuple[str, worker.Worker, object]:
    w, info = accept(scripted(model))
    return info.name, w, info


def test_a_request_that_finds_every_worker_busy_waits_its_turn_then_runs(monkeypatch):
    monkeypatch.setenv("SALIENCY_MAX_WORKERS", "1")
    _, busy, _ = _accepted(linear(1))
    seen: list[worker.Wait] = []
    release = threading.Event()

    def check_in_progress() -> None:  # holds the only worker for 1.5 s
        with busy.keep():
            release.wait(30)

    holder = threading.Thread(target=check_in_progress)
    holder.start()
    while not busy.kept:
        time.sleep(0.01)
    threading.Timer(1.5, release.set).start()
    try:
        with worker.on_wait(seen.append):
            w, _ = accept(scripted(linear(2)))
        holder.join()
        assert [str(s) for s in seen] == [
            "Waiting for a free model worker (this server runs 1): you are next…"
        ]
        assert (seen[0].ahead, seen[0].busy) == (0, 1)
        assert w.alive and not busy.alive  # the kept one was stopped once idle, not before
        w.stop()
    finally:
        release.set()
        busy.stop()


def test_a_bounded_wait_ends_with_a_plain_message(monkeypatch):
    monkeypatch.setenv("SALIENCY_MAX_WORKERS", "1")
    monkeypatch.setenv("SALIENCY_WORKER_WAIT_S", "1")
    _, busy, _ = _accepted(linear(1))
    try:
        with busy.keep(), pytest.raises(UserModelError) as refused:
            accept(scripted(linear(2)))
        assert str(refused.value) == (
            "This server runs at most 1 model worker at once, and all were busy for 1 s "
            "(1 waiting). Try again in a minute."
        )
        assert worker_processes() == [busy.pid]
    finally:
        busy.stop()
    assert worker.live_workers() == []


def test_the_defaults_fit_a_classroom_laptop(monkeypatch):
    monkeypatch.delenv("SALIENCY_MAX_WORKERS", raising=False)
    monkeypatch.delenv("SALIENCY_WORKER_MEMORY_MB", raising=False)
    assert worker.max_workers() == 4
    assert Limits().memory_bytes == 1024 * MB
    monkeypatch.setenv("SALIENCY_MAX_WORKERS", "2")
    assert worker.max_workers() == 2


@pytest.fixture(autouse=True)
def one_server_of_workers():
    """Each test starts with no worker running (earlier modules may leave theirs, as a server
    does), and leaves none behind."""
    for w in worker.live_workers():
        w.stop()
    yield
    left = worker.live_workers()
    for w in left:
        w.stop()
    assert not left, f"{len(left)} workers were left running"
