"""`python -m workspace.bench` (issue 33): the metric bench over N images per class of a bundled
test set or an indexed workspace equals the library's `bench` on the same images; a killed run
resumes to the same table; torchrun with 2 processes equals 1 process; bad input gets a plain
message and exit code 2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import pretrained
from saliency import bench as B
from workspace import bench as cli

REPO = Path(__file__).resolve().parents[2]
METHODS = ("gradient", "input_x_gradient")
METRICS = ("sparseness", "deletion_auc", "road_morf", "max_sensitivity", "random_logit")
METRIC_OPTIONS = {
    "deletion_auc": {"steps": 8},
    "road_morf": {"percentages": [20, 50, 80], "noise": 0.2},
    "max_sensitivity": {"samples": 2},
}
ARGS = [
    "--model", "mnist-cnn", "--methods", ",".join(METHODS), "--metrics", ",".join(METRICS),
    "--metric-options", json.dumps(METRIC_OPTIONS), "--per-class", "2", "--quiet",
    "--threads", "1", "--n-boot", "200", "--seed", "3",
]  # fmt: skip


def run_cli(*args: str, torchrun: int | None = None) -> subprocess.CompletedProcess:
    head = [sys.executable, "-m"]
    if torchrun:
        head += ["torch.distributed.run", "--standalone", "--nproc-per-node", str(torchrun), "-m"]
    return subprocess.run(
        [*head, "workspace.bench", *args], cwd=REPO, capture_output=True, text=True,
        timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The CLI in one process, batches of 8: the table every other run is compared with."""
    out = tmp_path_factory.mktemp("ref")
    before = torch.get_num_threads()
    try:
        assert cli.main([*ARGS, "--batch-size", "8", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(before)
    return out


def same_table(a: Path, b: Path, *, exact: bool = True) -> None:
    ta, ma = B.load_table(a / "bench.npz")
    tb, mb = B.load_table(b / "bench.npz")
    assert (ta.methods, ta.controls, ta.metrics) == (tb.methods, tb.controls, tb.metrics)
    for name in ("indices", "labels", "targets"):
        np.testing.assert_array_equal(ma[name], mb[name])
    for key, v in ta.values.items():
        if exact:
            np.testing.assert_array_equal(v, tb.values[key], err_msg=str(key))
        else:  # float64 rounding
            np.testing.assert_allclose(v, tb.values[key], rtol=1e-12, atol=1e-15)
    if exact:
        assert ta.scores == tb.scores and ta.losses == tb.losses
    assert (a / "bench.csv").read_text().splitlines()[0] == (b / "bench.csv").read_text(
    ).splitlines()[0]  # fmt: skip


def test_the_cli_equals_the_librarys_bench_on_the_same_images(tmp_path, one_thread):
    """One batch: the same call as `bench`, cell for cell. The images are the first 2 of each
    class in the test set's order, each seeded by its dataset index."""
    out = tmp_path / "one-batch"
    assert cli.main([*ARGS, "--batch-size", "32", "--out", str(out)]) == 0
    table, meta = B.load_table(out / "bench.npz")
    ds = pretrained.load_dataset("mnist", "test")
    expected = np.sort(np.concatenate([np.flatnonzero(ds.labels == c)[:2] for c in range(10)]))
    np.testing.assert_array_equal(meta["indices"], expected)
    np.testing.assert_array_equal(meta["labels"], ds.labels[expected].numpy())
    assert meta["per_class_counts"] == [2] * 10 and meta["n_images"] == 20
    model = pretrained.load_model("mnist-cnn", device="cpu")
    x = ds.images[expected]
    lib = B.bench(
        model, x, methods=METHODS, metrics=METRICS, metric_options=METRIC_OPTIONS, seed=3,
        n_boot=200, indices=expected.tolist(),
    )  # fmt: skip
    np.testing.assert_array_equal(meta["targets"], model(x).argmax(1).numpy())
    assert table.scores == lib.scores and table.losses == lib.losses
    np.testing.assert_array_equal(table.agreement, lib.agreement)
    # The CSV and the JSON say the same.
    csv = (out / "bench.csv").read_text().splitlines()
    assert csv[0] == "row,kind,metric,mean,low,high,n,higher_is_better,rank"
    assert len(csv) == 1 + 5 * len(METRICS)
    s = lib.score("gradient", "road_morf")
    assert csv[1 + METRICS.index("road_morf")] == (
        f"gradient,method,road_morf,{s.mean:.6g},{s.low:.6g},{s.high:.6g},20,no,"
        f"{lib.ranks['road_morf']['gradient']}"
    )
    saved = json.loads((out / "bench.json").read_text())
    assert saved["model"]["sha256"] == pretrained.model_info("mnist-cnn").weights_sha256
    assert saved["losses"] == list(lib.losses) and saved["status"] == "complete"
    assert {"torch", "numpy", "python"} <= set(saved["versions"])


def test_batches_of_8_agree_with_one_batch_to_float32_rounding(reference, tmp_path, one_thread):
    """Batches change which images share the model's float32 passes (~1e-8), never the draws."""
    assert cli.main([*ARGS, "--batch-size", "32", "--out", str(tmp_path / "one")]) == 0
    a, _ = B.load_table(reference / "bench.npz")
    b, _ = B.load_table(tmp_path / "one" / "bench.npz")
    for key, v in a.values.items():
        np.testing.assert_allclose(v, b.values[key], rtol=1e-5, atol=1e-6, err_msg=str(key))


def test_a_killed_run_resumes_to_the_same_table(reference, tmp_path):
    out = tmp_path / "killed"
    args = [*ARGS, "--batch-size", "8", "--out", str(out)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "workspace.bench", *args], cwd=REPO,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((out / ".parts").glob("batch*.npz")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    written = len(list((out / ".parts").glob("batch*.npz")))
    assert 1 <= written < 3 and not (out / "bench.npz").exists()
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming: {written} of 3 batches done" in again.stderr
    meta = json.loads((out / "bench.json").read_text())
    assert meta["images_scored_this_run"] == 20 - 8 * written
    same_table(reference, out)
    # Other settings start over; --n-boot only re-summarises.
    assert cli.main([*args, "--n-boot", "100"]) == 0
    assert json.loads((out / "bench.json").read_text())["images_scored_this_run"] == 0
    assert B.load_table(out / "bench.npz")[0].n_boot == 100


def test_stopped_after_a_batch_then_resumed_and_settings_changed(reference, tmp_path, capsys):
    out = tmp_path / "stopped"
    args = [*ARGS, "--batch-size", "8", "--out", str(out)]
    assert cli.main([*args, "--stop-after-batches", "1"]) == 3
    assert len(list((out / ".parts").glob("batch*.npz"))) == 1
    assert cli.main(args) == 0
    same_table(reference, out)
    assert cli.main([*args, "--seed", "4"]) == 0
    assert "the settings changed since the last run: starting over" in capsys.readouterr().err
    assert json.loads((out / "bench.json").read_text())["images_scored_this_run"] == 20


def test_torchrun_with_two_processes_equals_one_process(reference, tmp_path):
    two = run_cli(*ARGS, "--batch-size", "8", "--out", str(tmp_path / "two"), torchrun=2)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "on 2 process(es)" in two.stderr
    assert json.loads((tmp_path / "two" / "bench.json").read_text())["world_size"] == 2
    same_table(reference, tmp_path / "two", exact=False)  # float64 rounding
    same_table(reference, tmp_path / "two")  # measured: bit for bit on one machine


def test_a_workspace_is_benched_on_its_own_model_and_images(tmp_path, one_thread):
    from workspaces import rgb_workspace

    from workspace import open_indexed, shared_model

    w = rgb_workspace(tmp_path, per_class=6)
    out = tmp_path / "B"
    metrics = ("sparseness", "road_lerf")
    code = cli.main([
        "--workspace", str(w), "--methods", "gradient,integrated_gradients", "--metrics",
        ",".join(metrics), "--metric-options", '{"road_lerf": {"percentages": [30, 70]}}',
        "--options", '{"integrated_gradients": {"steps": 8}}', "--per-class", "3",
        "--batch-size", "64", "--quiet", "--threads", "1", "--out", str(out),
    ])  # fmt: skip
    assert code == 0
    table, meta = B.load_table(out / "bench.npz")
    ws = open_indexed(w)
    chosen = np.sort(np.concatenate([np.flatnonzero(ws.labels == c)[:3] for c in range(5)]))
    np.testing.assert_array_equal(meta["indices"], chosen)
    assert meta["model"]["sha256"] == ws.model_sha256 and meta["per_class_counts"] == [3] * 5
    model = shared_model(ws.config, 5, ws.model_sha256)
    x = torch.stack([torch.from_numpy(ws.image(int(i))) for i in chosen])  # (15, 3, 64, 64)
    lib = B.bench(
        model, x, methods=("gradient", "integrated_gradients"), metrics=metrics,
        options={"integrated_gradients": {"steps": 8}},
        metric_options={"road_lerf": {"percentages": [30, 70]}}, indices=chosen.tolist(),
    )  # fmt: skip
    assert table.scores == lib.scores


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--methods", "gradient,sharpie"], "unknown method 'sharpie'; known methods: gradient"),
        (["--metrics", "road_morf,vibes"], "unknown metric 'vibes'; known metrics: sparseness"),
        (["--per-class", "0"], "--per-class must be at least 1 image per class, got 0"),
        (["--per-class", "5000"], "--per-class 5,000 x 10 classes is up to 50,000 images, more"),
        (["--batch-size", "0"], "--batch-size must be between 1 and 1024, got 0"),
        (["--model", "mnist-nope"], "unknown model 'mnist-nope'; known models: mnist-linear"),
        (["--data", "cifar"], "unknown data set 'cifar'; bundled test sets: mnist"),
        (["--metric-options", '{"road": {}}'], "--metric-options names 'road', which is not"),
        (["--methods", "grad_cam", "--model", "mnist-mlp"], "the method 'grad_cam' can't run"),
    ],
)
def test_bad_input_gets_a_plain_message_and_exit_code_2(args, message, tmp_path, capsys):
    base = ["--model", "mnist-cnn", "--per-class", "1", "--quiet", "--out", str(tmp_path / "B")]
    assert cli.main([*base, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"workspace.bench: {message}"), err
    assert "Traceback" not in err
    assert not (tmp_path / "B" / "bench.npz").exists()


def test_a_missing_model_or_workspace_from_the_shell(tmp_path):
    said = []
    for args in (["--model", "nope"], ["--workspace", str(tmp_path / "missing")],
                 ["--model", "mnist-cnn", "--metric-options", "{bad json"]):  # fmt: skip
        run = run_cli(*args, "--per-class", "1", "--out", str(tmp_path / "B"))
        assert run.returncode == 2, run.stderr
        assert "workspace.bench: " in run.stderr and "Traceback" not in run.stderr
        said.append(run.stderr)
    assert "unknown model 'nope'" in said[0]
    assert "is not an indexed workspace" in said[1]
    assert "argument --metric-options: not JSON" in said[2]


def test_an_unwritable_out_gets_a_plain_message(tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    for out in (tmp_path / "file", tmp_path / "file" / "B"):
        code = cli.main(["--model", "mnist-cnn", "--per-class", "1", "--quiet", "--out", str(out)])
        assert code == 2
        err = capsys.readouterr().err
        assert err.startswith("workspace.bench: "), err
        assert "Traceback" not in err and str(tmp_path / "file") in err


def test_the_page_shows_a_table_the_cli_made(tmp_path, monkeypatch, one_thread):
    """`bench_cache.adopt` saves a CLI table as the page's table for the same request: the
    page's images in the page's order, summarised as the page does; other settings refused."""
    from dashboard import bench_cache
    from dashboard.views import bench as bench_view

    monkeypatch.setenv("SALIENCY_CACHE_DIR", str(tmp_path / "cache"))
    metrics = ("sparseness", "deletion_auc")
    args = ["--model", "mnist-cnn", "--methods", ",".join(METHODS), "--metrics", ",".join(metrics),
            "--per-class", "1", "--batch-size", "10", "--quiet", "--threads", "1"]  # fmt: skip
    assert cli.main([*args, "--out", str(tmp_path / "B")]) == 0
    req = bench_cache.Request("mnist-cnn", "mnist", 1, METHODS, metrics)
    assert bench_cache.stored(req) == (None, None)
    assert bench_cache.adopt(tmp_path / "B") == bench_cache.path(req)
    result, note = bench_cache.stored(req)
    assert note is None and result is not None
    ds = pretrained.load_dataset("mnist", "test")
    order = bench_cache.chosen_images(ds.labels.numpy(), 10, 1)  # class by class, not sorted
    np.testing.assert_array_equal(result.indices, order)
    np.testing.assert_array_equal(result.labels, np.arange(10))
    model = pretrained.load_model("mnist-cnn", device="cpu")
    x = ds.images[order]
    lib = B.bench(model, x, methods=METHODS, metrics=metrics, seed=bench_cache.SEED,
                  n_boot=bench_cache.N_BOOT, indices=order.tolist())  # fmt: skip
    np.testing.assert_array_equal(result.targets, model(x).argmax(1).numpy())
    for key, v in lib.values.items():
        np.testing.assert_allclose(result.table.values[key], v, rtol=1e-6, atol=1e-9)
    for got, s in zip(result.table.scores, lib.scores, strict=True):
        assert (got.row, got.metric, got.n) == (s.row, s.metric, s.n)
        assert (got.mean, got.low, got.high) == pytest.approx((s.mean, s.low, s.high), rel=1e-6)
    assert result.table.losses == lib.losses
    assert len(bench_view.table_frame(result.table)) == 5  # 2 methods and 3 controls
    # A run the page wouldn't make is refused, saying what differs.
    assert cli.main([*args, "--seed", "1", "--out", str(tmp_path / "C")]) == 0
    with pytest.raises(ValueError, match="scored with seed 1; the page scores 0"):
        bench_cache.adopt(tmp_path / "C")


def test_the_dashboards_command_shows_cli_tables(tmp_path, monkeypatch, capsys, one_thread):
    """`python -m dashboard.bench_cache B C`: B shown (the page's table for B's request, and
    its address), C refused with the reason and exit 2."""
    from urllib.parse import parse_qs, urlsplit

    from dashboard import bench_cache

    monkeypatch.setenv("SALIENCY_CACHE_DIR", str(tmp_path / "cache"))
    metrics = ("sparseness",)
    args = ["--model", "mnist-cnn", "--methods", ",".join(METHODS), "--metrics", ",".join(metrics),
            "--per-class", "1", "--batch-size", "10", "--quiet", "--threads", "1"]  # fmt: skip
    assert cli.main([*args, "--out", str(tmp_path / "B")]) == 0
    assert cli.main([*args, "--n-boot", "50", "--seed", "2", "--out", str(tmp_path / "C")]) == 0
    capsys.readouterr()
    assert bench_cache.main([str(tmp_path / "B"), str(tmp_path / "C")]) == 2
    out, err = capsys.readouterr()
    req = bench_cache.Request("mnist-cnn", "mnist", 1, METHODS, metrics)
    assert bench_cache.stored(req)[0] is not None
    (line,) = out.splitlines()
    query = parse_qs(urlsplit(line.split(" shown at ", 1)[1]).query)
    assert query == {"model": ["mnist-cnn"], "dataset": ["mnist"], "b_methods": [",".join(METHODS)],
                     "b_metrics": ["sparseness"], "b_per_class": ["1"]}  # fmt: skip
    assert "C: not shown:" in err and "scored with seed 2" in err
