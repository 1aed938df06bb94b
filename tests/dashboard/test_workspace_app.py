"""The dashboard on workspaces (issue 10), driven through AppTest: an RGB 64 x 64 model with
five classes trained here, and a torchvision resnet18 with 1000 classes, through Explore,
Misclassifications and Data-set sensitivity; values checked against the models themselves."""

from __future__ import annotations

import csv
import io
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("streamlit")
import hostile  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402
from workspaces import resnet_workspace, rgb_workspace  # noqa: E402

from dashboard import cache  # noqa: E402
from dashboard.__main__ import streamlit_args  # noqa: E402
from workspace import (  # noqa: E402
    WorkspaceError,
    load_model,
    open_indexed,
    shared_model,
)
from workspace.folder_upload import build, read_zip_images  # noqa: E402

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("workspaces")
    made = {"rgb": rgb_workspace(tmp), "resnet": resnet_workspace(tmp, per_class=10)}
    before = os.environ.get("SALIENCY_WORKSPACES")
    os.environ["SALIENCY_WORKSPACES"] = os.pathsep.join(str(p) for p in made.values())
    yield made
    if before is None:
        os.environ.pop("SALIENCY_WORKSPACES", None)
    else:
        os.environ["SALIENCY_WORKSPACES"] = before


def run_app(**params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [s.value for s in at.subheader]
    parts += [c.value for c in at.caption] + [w.value for w in at.warning]
    parts += [i.value for i in at.info] + [e.value for e in at.error]
    parts += [s.value for s in at.success]
    parts += [img.caption for el in at.get("image") for img in el.proto.imgs]
    return "\n".join(str(p) for p in parts)


def image_captions(at: AppTest) -> list[str]:
    return [img.caption for el in at.get("image") for img in el.proto.imgs]


def model_and_image(folder: Path, i: int) -> tuple[torch.nn.Module, torch.Tensor]:
    ws = open_indexed(folder)
    return load_model(ws.config, len(ws.classes)), torch.from_numpy(ws.image(i))[None]


def test_the_first_workspace_opens_by_default_with_its_own_model(folders):
    at = run_app()
    assert at.selectbox(key="dataset").value == "ws:W-rgb"
    assert at.selectbox(key="model").value == "ws:W-rgb"
    assert "MNIST digits" in at.selectbox(key="dataset").options  # the bundled sets stay
    model, x = model_and_image(folders["rgb"], 0)
    with torch.no_grad():
        p = model(x).softmax(1)[0]
    pred = int(p.argmax())
    page = texts(at)
    assert f"ws:W-rgb says **{pred} · class-{pred}** ({float(p[pred]):.1%})" in page
    assert "What the model sees (64 × 64, RGB)" in page
    assert "Three colour channels, one map: max |g| over the channels." in page
    assert "#### Every class" in page
    grid = [c for c in image_captions(at) if c.startswith(tuple(f"{k} · class-" for k in range(5)))]
    assert len(grid) == 5  # K = 5: every class's map
    # Switching to a bundled set brings its models back.
    at.selectbox(key="dataset").set_value("mnist").run()
    assert at.selectbox(key="model").value == "mnist-cnn"
    assert not at.exception


def test_maps_are_the_models_own_gradients_with_channels_reduced(folders):
    """The arrays the views draw, against torch.autograd on the workspace's model."""
    model, x = model_and_image(folders["rgb"], 7)
    image = x[0].numpy()
    x = x.clone().requires_grad_(True)
    logits = model(x)[0]
    g2 = torch.autograd.grad(logits[2], x, retain_graph=True)[0][0].numpy()
    g4 = torch.autograd.grad(logits[4], x)[0][0].numpy()
    maps = cache.class_maps("ws:W-rgb", image, "gradient", "logit", True, (2, 4))
    np.testing.assert_allclose(maps[0], np.abs(g2).max(0), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(maps[1], np.abs(g4).max(0), rtol=1e-5, atol=1e-8)
    every = cache.class_maps("ws:W-rgb", image, "gradient", "logit", True)
    assert every.shape == (5, 64, 64)
    np.testing.assert_allclose(every[4], maps[1], rtol=1e-6)
    diff = cache.contrast_map("ws:W-rgb", image, 2, 4, "gradient", "logit")
    np.testing.assert_allclose(diff, (g2 - g4).sum(0), rtol=1e-4, atol=1e-7)


def test_explore_navigation_and_open_by_path(folders):
    at = run_app(dataset="ws:W-rgb", model="ws:W-rgb")
    ws = open_indexed(folders["rgb"])
    at.selectbox(key="true_class").select("3").run()
    at.button(key="next").click().run()
    first_three = int(np.flatnonzero(ws.labels == 3)[0])
    assert at.number_input(key="index").value == first_three
    path = ws.paths[50]
    at.text_input(key="open_path").input(path).run()
    assert at.number_input(key="index").value == 50
    assert f"for #50 {path}" in texts(at)
    at.text_input(key="open_path").input("no/such.png").run()
    assert "No image 'no/such.png' in this workspace." in texts(at)
    assert at.number_input(key="index").value == 50  # nothing lost
    assert "draw" not in at.radio(key="source").options  # drawing makes 28 x 28 digits only
    # Another data set: the path and its message were this workspace's, and go.
    at.selectbox(key="dataset").set_value("ws:W-resnet").run()
    assert at.text_input(key="open_path").value == ""
    assert "No image" not in texts(at)


def test_misclassifications_and_sensitivity_on_rgb(folders):
    at = run_app(dataset="ws:W-rgb", model="ws:W-rgb")
    at.switch_page("page_files/mistakes.py").run()
    assert not at.exception, [e.value for e in at.exception]
    ws = open_indexed(folders["rgb"])
    right = int((ws.predicted == ws.labels).sum())
    assert f"accuracy **{right / len(ws.labels):.2%}**" in texts(at)
    assert at.get("arrow_vega_lite_chart") or at.get("vega_lite_chart")  # the K x K grid
    at.radio(key="mis_kind").set_value("unsure").run()
    assert f"{right:,} images are right, the least confident answers first" in texts(at)
    assert "disagree" not in at.radio(key="mis_kind").options  # one model in a workspace
    at.switch_page("page_files/dataset.py").run()
    assert not at.exception, [e.value for e in at.exception]
    page = texts(at)
    assert "Computed by the index on 120 images" in page
    assert "max over the three colour channels" in page
    assert {f"{k} · class-{k}" for k in range(5)} <= set(image_captions(at))
    assert "**Each class, over all images**" in page  # K <= 20


def test_resnet18_with_1000_classes_through_every_view(folders):
    at = run_app(dataset="ws:W-resnet", model="ws:W-resnet")
    page = texts(at)
    assert "#### The top 10 classes" in page
    assert "The 10 most probable of 1,000 classes." in page
    assert "What the model sees (64 × 64, RGB)" in page
    # Class pickers hold every class (Streamlit's selectbox searches them by name).
    assert len(at.selectbox(key="target").options) == 2 + 1000
    at.selectbox(key="target").set_value("999").run()
    assert not at.exception
    assert "|∂ logit[999 · category 999] / ∂x|" in texts(at)
    grid = [c for c in image_captions(at) if " · category " in c]
    assert any(c.startswith("999 · category 999") for c in grid)  # the target is always drawn

    at.switch_page("page_files/mistakes.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert "**The most confused pairs**" in texts(at)
    ws = open_indexed(folders["resnet"])
    wrong = (ws.predicted != ws.labels) & (ws.labels == 999)
    common = int(np.bincount(ws.predicted[wrong], minlength=1000).argmax())
    at.selectbox(key="mis_true").set_value(999).run()
    at.selectbox(key="mis_pred").set_value(common).run()
    expected = int((wrong & (ws.predicted == common)).sum())
    assert f"{expected:,} images are 999 · category 999 taken for {common}" in texts(at)

    at.switch_page("page_files/dataset.py").run()
    assert not at.exception, [e.value for e in at.exception]
    page = texts(at)
    assert "Computed by the index on 50 images" in page
    chosen = at.multiselect(key="sens_classes_ws:W-resnet").value
    assert {0, 3, 7, 512, 999} <= set(chosen)  # the classes with images come first
    assert "category 1: no images of this class" not in page or 1 in chosen


def test_a_gallery_of_many_mistakes_is_paginated(folders):
    at = run_app(dataset="ws:W-resnet", model="ws:W-resnet")
    at.switch_page("page_files/mistakes.py").run()
    at.radio(key="mis_kind").set_value("all").run()
    ws = open_indexed(folders["resnet"])
    n_wrong = int((ws.predicted != ws.labels).sum())
    assert n_wrong == 50  # random weights: every image wrong, more than a page of 40
    assert "50 images are misclassified, the most confident mistakes first; 1 to 40 shown." in (
        texts(at)
    )
    assert len(at.selectbox(key="mis_index").options) == 40
    at.number_input(key="mis_page").set_value(2).run()
    assert "; 41 to 50 shown." in texts(at)
    options = at.selectbox(key="mis_index").options
    assert len(options) == 10
    order = np.argsort(-ws.p_predicted, kind="stable")  # the most confident mistakes first
    assert options[0].startswith(f"#{order[40]} {ws.paths[order[40]]}:")


def test_files_changed_after_indexing_get_messages_and_the_app_keeps_running(folders, tmp_path):
    copy = tmp_path / "W-broken"
    shutil.copytree(folders["rgb"], copy)
    ws = open_indexed(copy)
    # Point the copy at its own data and model, then damage them.
    data = tmp_path / "data"
    shutil.copytree(ws.config.data, data)
    model = tmp_path / "tiny.pt2"
    shutil.copy(ws.config.model, model)
    toml = (copy / "workspace.toml").read_text()
    toml = toml.replace(ws.config.data, str(data)).replace(ws.config.model, str(model))
    (copy / "workspace.toml").write_text(toml)
    (data / ws.paths[0]).write_bytes(b"not a picture")
    before = os.environ["SALIENCY_WORKSPACES"]
    os.environ["SALIENCY_WORKSPACES"] = str(copy) + os.pathsep + before
    try:
        at = run_app(dataset="ws:W-broken", model="ws:W-broken")
        assert f"{ws.paths[0]} can't be read now" in texts(at)
        at.number_input(key="index").set_value(1).run()
        assert not at.exception and "ws:W-broken says" in texts(at)
        model.write_bytes(model.read_bytes()[:-10] + b"0123456789")
        shared_model.cache_clear()
        at = run_app(dataset="ws:W-broken", model="ws:W-broken", index="9")
        assert "changed since the workspace was indexed" in texts(at)
    finally:
        os.environ["SALIENCY_WORKSPACES"] = before


def test_the_command_line_checks_its_workspaces(folders, tmp_path, monkeypatch):
    monkeypatch.delenv("SALIENCY_WORKSPACES", raising=False)
    args = streamlit_args(["--workspace", str(folders["rgb"]), "--server.port", "8600"])
    assert args == [
        "--server.address", "localhost", "--runner.postScriptGC", "false",
        "--server.showEmailPrompt", "false", "--server.maxUploadSize", "256",
        "--server.maxWidgetStateSize", "2", "--server.fileWatcherType", "none",
        "--server.port", "8600",
    ]  # fmt: skip
    assert os.environ["SALIENCY_WORKSPACES"] == str(folders["rgb"].resolve())
    with pytest.raises(SystemExit, match="is not an indexed workspace"):
        streamlit_args(["--workspace", str(tmp_path)])
    half = tmp_path / "half"
    shutil.copytree(folders["rgb"], half)
    manifest = (half / "manifest.json").read_text().replace('"complete"', '"running"')
    (half / "manifest.json").write_text(manifest)
    with pytest.raises(SystemExit, match="unfinished"):
        streamlit_args([f"--workspace={half}"])


def test_predictions_file_is_what_the_views_read(folders):
    """The views' predictions are the index's rows, in order (no recomputation)."""
    ws = open_indexed(folders["resnet"])
    with open(folders["resnet"] / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["path"] for r in rows] == list(ws.paths)
    assert [int(r["predicted"]) for r in rows] == ws.predicted.tolist()
    assert (ws.top_classes[:, 0] == ws.predicted).all()


# --- a model and a ZIP of an ImageFolder, uploaded on the Your model page -----------------------


def zipped(folder: Path, top: str = "my-images", extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in sorted(folder.rglob("*.png")):
            z.write(p, f"{top}/{p.relative_to(folder)}")
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return buf.getvalue()


def upload_folder(at: AppTest, model: tuple[str, bytes], images: tuple[str, bytes], **choices):
    at.file_uploader(key="ws_model_file").set_value((*model, "application/octet-stream"))
    at.file_uploader(key="ws_zip").set_value((*images, "application/zip"))
    for key, value in choices.items():
        widget = at.text_input(key=key) if key in ("ws_mean", "ws_std") else None
        if widget is not None:
            widget.input(value)
        else:
            at.number_input(key=key).set_value(value)
    at.button(key="ws_submit").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@hostile.needs_sandbox
def test_a_zipped_folder_and_a_model_become_a_workspace_like_the_cli_index(folders):
    ws = open_indexed(folders["rgb"])
    data_folder = Path(ws.config.data)
    model = ("tiny.pt2", Path(ws.config.model).read_bytes())
    at = run_app(dataset="mnist", model="mnist-cnn")
    at.switch_page("page_files/your_model.py").run()
    at = upload_folder(
        at, model, ("pictures.zip", zipped(data_folder, extra={"notes.txt": b"hello"})),
        ws_resize=64, ws_crop=64, ws_mean="0.5", ws_std="0.25",
    )  # fmt: skip
    page = texts(at)
    assert "Indexed **120 images** of 5 classes (3 × 64 × 64)" in page, page[-2000:]
    assert "accuracy 100.00%" in page
    assert "1 file of the ZIP was skipped" in page  # notes.txt: not an image
    key = next(k for k in at.selectbox(key="dataset").options if k.startswith("Your images"))
    assert key.startswith("Your images: pictures.zip, 120 images")  # named after its images
    at.button(key="ws_explore").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="dataset").value.startswith("ws:upload-")
    model_name = at.selectbox(key="model").value
    assert model_name.startswith("upload:")
    # Image #0 of the upload is class-0/000.png; the sandboxed model's answer on the page is
    # the CLI index's for the same file.
    expected = int(ws.predicted[ws.find("class-0/000.png")])
    assert f"says **{expected} · class-{expected}**" in texts(at)
    assert "for #0 class-0/000.png" in texts(at)
    at.switch_page("page_files/mistakes.py").run()
    assert not at.exception and "accuracy **100.00%**" in texts(at)
    at.switch_page("page_files/dataset.py").run()
    assert not at.exception and "Computed by the index on 120 images" in texts(at)


@hostile.needs_sandbox
def test_the_upload_index_equals_the_cli_index(folders):
    ws = open_indexed(folders["rgb"])
    images = read_zip_images(zipped(Path(ws.config.data)), ws.config.preprocessing)
    worker, built = build(Path(ws.config.model).read_bytes(), images)
    try:
        order = [ws.find(p) for p in images.paths]
        assert (built.predicted == ws.predicted[order]).all()
        np.testing.assert_allclose(built.p_predicted, ws.p_predicted[order], rtol=1e-5)
        cli = ws.summary()
        for name in ("mean_abs_grad_by_class", "mean_abs_grad_all", "counts", "confusion"):
            np.testing.assert_allclose(built.summary[name], cli[name], rtol=1e-6, atol=1e-12)
    finally:
        worker.stop()


def test_hostile_zips_are_refused_before_anything_is_inflated(folders):
    pre = open_indexed(folders["rgb"]).config.preprocessing
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a/x.png", b"x")
        z.writestr("../../etc/evil.png", b"x")
    with pytest.raises(WorkspaceError, match="unsafe path"):
        read_zip_images(buf.getvalue(), pre)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("a/bomb.png", b"\0" * (64 * 2**20))  # 64 MB of zeros: ~64 KB compressed
        z.writestr("b/x.png", b"x")
    with pytest.raises(WorkspaceError, match="ZIP bomb"):
        read_zip_images(buf.getvalue(), pre)
    with pytest.raises(WorkspaceError, match="not a readable ZIP"):
        read_zip_images(b"PK\x03\x04 not really", pre)
    one_class = zipped(Path(open_indexed(folders["rgb"]).config.data) / "class-0", top="x")
    with pytest.raises(WorkspaceError, match="one folder per class"):
        read_zip_images(one_class, pre)


def test_a_bad_zip_on_the_page_gets_a_message_and_loses_nothing(folders):
    ws = open_indexed(folders["rgb"])
    at = run_app(dataset="mnist", model="mnist-cnn")
    at.switch_page("page_files/your_model.py").run()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("../evil/x.png", b"x")
    at = upload_folder(
        at, ("tiny.pt2", Path(ws.config.model).read_bytes()), ("a.zip", buf.getvalue())
    )
    assert "Refused: the ZIP has an unsafe path" in texts(at)
    bundled = ["MNIST digits", "Fashion-MNIST", "Photos (ImageNet)"]
    assert at.selectbox(key="dataset").options[-3:] == bundled  # no uploaded workspace
