"""Indexing a workspace (issue 10): real images in folders, real models, one process or two
under torchrun, interrupted and resumed, bad input skipped and listed."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from workspaces import colour_images, train_tiny

import pretrained
import saliency
from workspace import (
    Preprocessing,
    WorkspaceConfig,
    WorkspaceError,
    list_items,
    load_model,
    read_image,
)
from workspace import index as index_module
from workspace.index import index

REPO = Path(__file__).resolve().parents[2]
N_SUBSET = 600  # the MNIST subset the gradient checks and torchrun run on


def scripted(model: nn.Module) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(model.eval()), buf)
    return buf.getvalue()


def export_mnist(folder: Path, n: int | None = None) -> Path:
    """The bundled MNIST test images as a PNG ImageFolder (class folders "0" … "9")."""
    ds = pretrained.load_dataset("mnist", "test")
    n = len(ds) if n is None else n
    pixels = (ds.images[:n, 0].numpy() * 255).round().astype(np.uint8)
    for i in range(n):
        d = folder / ds.classes[int(ds.labels[i])]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels[i]).save(d / f"{i:05d}.png", compress_level=1)
    return folder


def image_number(path: str) -> int:
    return int(Path(path).stem)


def read_predictions(out: Path) -> list[dict]:
    with open(out / "predictions.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def mnist():
    return pretrained.load_dataset("mnist", "test")


@pytest.fixture(scope="module")
def cnn_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "mnist-cnn.pt"
    path.write_bytes(scripted(pretrained.load_model("mnist-cnn", device="cpu")))
    return path


@pytest.fixture(scope="module")
def mnist_folder(tmp_path_factory) -> Path:
    return export_mnist(tmp_path_factory.mktemp("mnist-png"))


@pytest.fixture(scope="module")
def mnist_subset(tmp_path_factory) -> Path:
    return export_mnist(tmp_path_factory.mktemp("mnist-subset"), N_SUBSET)


def grey(config_model: Path, data: Path) -> WorkspaceConfig:
    """MNIST's ten classes (a small subset may lack a folder: that is then listed, not fatal)."""
    return WorkspaceConfig(
        model=str(config_model),
        data=str(data),
        classes=tuple(str(k) for k in range(10)),
        preprocessing=Preprocessing(channels=1),
    )


# --- MNIST as a folder of PNGs: the same answers as the bundled path -----------------------------
def test_a_png_folder_of_the_bundled_test_set_gives_the_bundled_predictions(
    mnist, mnist_folder, cnn_file, tmp_path
):
    result = index(
        grey(cnn_file, mnist_folder), tmp_path / "W", predictions_only=True, progress=False
    )
    rows = read_predictions(tmp_path / "W")
    assert len(rows) == len(mnist) == result.manifest["n_images"] == 10_000
    model = pretrained.load_model("mnist-cnn", device="cpu")
    with torch.no_grad():
        expected = torch.cat([model(x).argmax(1) for x, _ in mnist.batches(1000)])
    got = {image_number(r["path"]): int(r["predicted"]) for r in rows}
    assert all(got[i] == int(expected[i]) for i in range(len(mnist)))
    labels = {image_number(r["path"]): int(r["label"]) for r in rows}
    assert all(labels[i] == int(mnist.labels[i]) for i in range(len(mnist)))
    card = pretrained.model_info("mnist-cnn")
    assert result.manifest["accuracy"] == pytest.approx(card.test_accuracy, abs=1e-9)
    summary = np.load(tmp_path / "W" / "summary.npz")
    np.testing.assert_array_equal(summary["confusion"], np.array(card.confusion_matrix))
    assert set(json.loads((tmp_path / "W" / "manifest.json").read_text())["outputs"]) >= {
        "predictions",
        "summary",
    }


def test_the_class_means_equal_the_librarys_own_summary(mnist, mnist_subset, cnn_file, tmp_path):
    index(grey(cnn_file, mnist_subset), tmp_path / "W", progress=False, batch_size=50)
    s = np.load(tmp_path / "W" / "summary.npz")
    model = pretrained.load_model("mnist-cnn", device="cpu")
    reference = saliency.sensitivity_summary(model, [mnist[:N_SUBSET]])
    assert s["mean_abs_grad_by_class"].dtype == np.float64
    assert s["mean_abs_grad_by_class"].shape == (10, 1, 28, 28)
    np.testing.assert_allclose(
        s["mean_abs_grad_by_class"], reference.own_class.numpy(), rtol=1e-6, atol=1e-9
    )
    np.testing.assert_allclose(
        s["mean_abs_grad_all"], reference.all_examples.numpy(), rtol=1e-6, atol=1e-9
    )
    np.testing.assert_array_equal(s["counts"], reference.counts.numpy())
    top = np.load(tmp_path / "W" / "top5.npz")
    assert (
        top["indices"].shape == (N_SUBSET, 5) and (np.diff(top["probabilities"], axis=1) <= 0).all()
    )


# --- past one machine: torchrun with two processes equals one process ----------------------------
def run_cli(
    *args: str, torchrun: int | None = None, timeout: int = 600, **env
) -> subprocess.CompletedProcess:
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", str(torchrun), "-m", "workspace.index", *args]  # fmt: skip
    else:
        cmd = [sys.executable, "-m", "workspace.index", *args]
    return subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
    )  # fmt: skip


def test_torchrun_with_two_processes_equals_one_process(mnist_subset, cnn_file, tmp_path):
    common = ["--model", str(cnn_file), "--data", str(mnist_subset), "--grey", "--quiet",
              "--threads", "1", "--batch-size", "32"]  # fmt: skip
    one = run_cli(*common, "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr[-3000:]
    two = run_cli(*common, "--out", str(tmp_path / "two"), torchrun=2)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "on 2 process(es)" in two.stderr
    # Same predictions, row for row; every image exactly once.
    assert (tmp_path / "one" / "predictions.csv").read_bytes() == (
        tmp_path / "two" / "predictions.csv"
    ).read_bytes()
    rows = read_predictions(tmp_path / "two")
    assert sorted(image_number(r["path"]) for r in rows) == list(range(N_SUBSET))
    a, b = np.load(tmp_path / "one" / "summary.npz"), np.load(tmp_path / "two" / "summary.npz")
    for key in a.files:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-12, atol=1e-15)  # float64 rounding
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["status"] == "complete"


def test_shards_cover_every_batch_once_when_the_count_does_not_divide(tmp_path, cnn_file):
    folder = export_mnist(tmp_path / "odd", 103)  # 103 images, batches of 10, 3 ranks
    run = run_cli("--model", str(cnn_file), "--data", str(folder), "--grey", "--quiet",
                  "--batch-size", "10", "--predictions-only", "--out", str(tmp_path / "W"),
                  torchrun=3)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    rows = read_predictions(tmp_path / "W")
    assert sorted(image_number(r["path"]) for r in rows) == list(range(103))


# --- resumable, and reused when nothing changed --------------------------------------------------
def test_a_run_killed_halfway_resumes_and_gives_the_same_results(mnist_subset, cnn_file, tmp_path):
    args = ["--model", str(cnn_file), "--data", str(mnist_subset), "--grey", "--quiet",
            "--batch-size", "20", "--chunk-batches", "2", "--checkpoint-seconds", "0"]  # fmt: skip
    reference = run_cli(*args, "--out", str(tmp_path / "ref"))
    assert reference.returncode == 0, reference.stderr[-2000:]
    out = tmp_path / "W"
    proc = subprocess.Popen(
        [sys.executable, "-m", "workspace.index", *args, "--out", str(out)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    parts = out / ".parts" / "world1-rank0"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(parts.glob("chunk*.npz"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert json.loads((out / "manifest.json").read_text())["status"] == "running"
    assert not (out / "predictions.csv").exists()
    again = run_cli(*args, "--out", str(out))
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming after" in again.stderr
    assert (out / "predictions.csv").read_bytes() == (
        tmp_path / "ref" / "predictions.csv"
    ).read_bytes()
    a, b = np.load(out / "summary.npz"), np.load(tmp_path / "ref" / "summary.npz")
    for key in a.files:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-12)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["images_read_this_run"] < N_SUBSET


def test_a_finished_index_is_reused_until_an_image_changes(tmp_path, cnn_file):
    folder = export_mnist(tmp_path / "data", 60)
    config = grey(cnn_file, folder)
    first = index(config, tmp_path / "W", progress=False)
    assert not first.reused
    stamp = (tmp_path / "W" / "summary.npz").stat().st_mtime_ns
    again = index(config, tmp_path / "W", progress=False)
    assert again.reused and (tmp_path / "W" / "summary.npz").stat().st_mtime_ns == stamp
    one = next((folder / "3").iterdir())
    Image.fromarray(np.full((28, 28), 255, np.uint8)).save(one)  # same name, new content
    third = index(config, tmp_path / "W", progress=False)
    assert not third.reused and third.manifest["data_sha256"] != first.manifest["data_sha256"]


# --- another shape: RGB 64 x 64, five classes, a model trained here ------------------------------
def test_rgb_64x64_with_five_classes_and_a_model_trained_here(tmp_path):
    folder = colour_images(tmp_path / "data", 24)
    pre = Preprocessing(resize=64, crop=64, channels=3, mean=(0.5, 0.5, 0.5), std=(0.25,) * 3)
    config = WorkspaceConfig(model=str(tmp_path / "tiny.pt2"), data=str(folder), preprocessing=pre)
    items, classes, problems = list_items(config)
    assert classes == tuple(f"class-{k}" for k in range(5)) and not problems
    x = torch.stack([torch.from_numpy(read_image(folder, it, pre)) for it in items])
    y = torch.tensor([it.label for it in items])
    assert x.shape == (120, 3, 64, 64)
    train_tiny(x, y, tmp_path / "tiny.pt2")

    result = index(config, tmp_path / "W", progress=False, batch_size=16)
    assert result.manifest["input_shape"] == [3, 64, 64]
    assert result.manifest["accuracy"] > 0.9
    model = load_model(config, 5)
    with torch.no_grad():
        expected = model(x).argmax(1)
    rows = read_predictions(tmp_path / "W")
    by_path = {it.path: i for i, it in enumerate(items)}
    assert all(int(r["predicted"]) == int(expected[by_path[r["path"]]]) for r in rows)
    # An independent reference for the class means: a loop over images, one gradient each.
    s = np.load(tmp_path / "W" / "summary.npz")
    reference = np.zeros((5, 3, 64, 64))
    for i in range(len(items)):
        g = saliency.gradients(model, x[i : i + 1], int(y[i]))[0].double().numpy()
        reference[int(y[i])] += g / 24
    np.testing.assert_allclose(s["mean_abs_grad_by_class"], reference, rtol=1e-5, atol=1e-10)
    assert "mean_abs_grad_all" in s.files  # K = 5 <= 20


def test_a_torchvision_resnet18_with_1000_classes_from_a_csv(tmp_path):
    import torchvision

    folder = colour_images(tmp_path / "data", 8)
    files = sorted(folder.rglob("*.png"))
    labels = [7, 999, 0, 512, 3] * 8
    (tmp_path / "data.csv").write_text(
        "path,label\n"
        + "".join(f"{f.relative_to(tmp_path)},{k}\n" for f, k in zip(files, labels, strict=True))
    )
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=1000).eval()
    torch.save(net.state_dict(), tmp_path / "resnet18.pt")
    names = tuple(f"category {k}" for k in range(1000))
    pre = Preprocessing(resize=64, crop=64, channels=3)
    config = WorkspaceConfig(
        model=str(tmp_path / "resnet18.pt"), data=str(tmp_path / "data.csv"), kind="state_dict",
        architecture="resnet18", classes=names, preprocessing=pre,
    )  # fmt: skip
    result = index(config, tmp_path / "W", progress=False, batch_size=8)
    s = np.load(tmp_path / "W" / "summary.npz")
    assert s["mean_abs_grad_by_class"].shape == (1000, 3, 64, 64)
    assert "mean_abs_grad_all" not in s.files  # K > 20: own class only
    assert s["counts"].sum() == 40 and s["counts"][999] == 8
    assert np.isnan(s["mean_abs_grad_by_class"][1]).all()  # a class without images
    x = torch.stack(
        [torch.from_numpy(read_image(tmp_path, it, pre)) for it in list_items(config)[0]]
    )
    with torch.no_grad():
        expected = net(x).argmax(1)
    rows = read_predictions(tmp_path / "W")
    assert [int(r["predicted"]) for r in rows] == expected.tolist()
    assert result.manifest["n_images"] == 40
    # Class 999's mean map against an independent loop over its own eight images.
    own = [i for i, k in enumerate(labels) if k == 999]
    reference = sum(saliency.gradients(net, x[i : i + 1], 999)[0].double() for i in own) / 8
    np.testing.assert_allclose(s["mean_abs_grad_by_class"][999], reference.numpy(), rtol=1e-5)


# --- bad input: a message, and nothing already computed is lost ----------------------------------
def test_broken_files_and_folders_are_skipped_and_listed(tmp_path, cnn_file):
    folder = export_mnist(tmp_path / "data", 40)
    (folder / "3" / "truncated.png").write_bytes(
        (folder / "3" / next(iter(os.listdir(folder / "3")))).read_bytes()[:60]
    )
    (folder / "4" / "notes.txt").write_text("not an image")
    (folder / "5" / "fake.png").write_bytes(b"GIF89a not really")
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(folder / "6" / "wrong-size.png")
    (folder / "empty-class").mkdir()
    config = grey(cnn_file, folder).with_(
        classes=tuple(str(k) for k in range(10)) + ("empty-class",)
    )
    cnn10 = cnn_file  # the CNN has 10 outputs: 11 classes must be refused …
    with pytest.raises(
        WorkspaceError, match="returns 10 scores per image, but the data has 11 classes"
    ):
        index(config, tmp_path / "W", progress=False)
    shutil.rmtree(folder / "empty-class")
    (folder / "2" / "x").mkdir()  # a nested folder, not a class
    result = index(grey(cnn10, folder), tmp_path / "W", progress=False)
    reasons = {Path(s["path"]).name: s["reason"] for s in result.manifest["skipped"]}
    assert "corrupt or truncated" in reasons["truncated.png"]
    assert reasons["notes.txt"] == "not an image file"
    assert "not a PNG" in reasons["fake.png"] or "not" in reasons["fake.png"]
    assert "differs from the data set's 28 × 28" in reasons["wrong-size.png"]
    assert result.manifest["n_images"] == 40


def test_bad_settings_get_clear_messages(tmp_path, cnn_file):
    folder = export_mnist(tmp_path / "data", 20)
    with pytest.raises(WorkspaceError, match="does not exist"):
        index(grey(cnn_file, tmp_path / "nowhere"), tmp_path / "W", progress=False)
    with pytest.raises(WorkspaceError, match="model file .* does not exist"):
        index(grey(tmp_path / "none.pt", folder), tmp_path / "W", progress=False)
    rgb = WorkspaceConfig(model=str(cnn_file), data=str(folder))  # 3 channels into a grey CNN
    with pytest.raises(
        WorkspaceError, match=r"the model fails on a batch of shape \(\d+, 3, 28, 28\)"
    ):
        index(rgb, tmp_path / "W", progress=False)
    (tmp_path / "labels.csv").write_text(
        "path,label\n" + "data/1/00002.png,1\ndata/2/00001.png,12\n"
    )
    items, names, problems = list_items(
        WorkspaceConfig(model="m", data=str(tmp_path / "labels.csv"), classes=tuple("0123456789"))
    )
    assert len(items) == 1 and "label '12' is not in the class list" in problems[0]["reason"]
    with pytest.raises(WorkspaceError, match="std must be positive"):
        Preprocessing(std=(0.0,))
    with pytest.raises(WorkspaceError, match="mean has 2 values for 3 channel"):
        Preprocessing(mean=(0.1, 0.2))
    cli = run_cli(
        "--model", str(cnn_file), "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "W")
    )
    assert cli.returncode == 2 and "workspace.index: the data path" in cli.stderr


def test_a_hostile_program_is_refused_by_the_gate(tmp_path):
    import hostile

    folder = export_mnist(tmp_path / "data", 10)
    (tmp_path / "writer.pt").write_bytes(hostile.writer(str(tmp_path / "written")))
    with pytest.raises(WorkspaceError, match="aten::from_file, which reads and writes files"):
        index(grey(tmp_path / "writer.pt", folder), tmp_path / "W", progress=False)
    assert not (tmp_path / "written").exists()


def test_the_workspace_toml_round_trips_and_drives_the_cli(tmp_path, cnn_file):
    folder = export_mnist(tmp_path / "data", 30)
    pre = Preprocessing(resize=28, crop=28, channels=1, mean=(0.1307,), std=(0.3081,))
    config = WorkspaceConfig(
        model=str(cnn_file), data=str(folder), classes=tuple("0123456789"), preprocessing=pre
    )
    (tmp_path / "ws.toml").write_text(config.to_toml())
    assert WorkspaceConfig.from_toml(tmp_path / "ws.toml") == config
    run = run_cli(
        "--config",
        str(tmp_path / "ws.toml"),
        "--out",
        str(tmp_path / "W"),
        "--quiet",
        "--predictions-only",
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert WorkspaceConfig.from_toml(tmp_path / "W" / "workspace.toml") == config
    assert (
        "centre crop 28 × 28"
        in json.loads((tmp_path / "W" / "manifest.json").read_text())["preprocessing"]["describe"]
    )


def test_the_module_has_its_documented_outputs():
    assert index_module.ALL_CLASSES_UP_TO == 20
