"""Trust (issue 15), in the dashboard: hostile uploads get messages and the app keeps running;
no small file takes the server down; caches heal; links can't reach others' uploads."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
import pytest
import tomllib
import torch
from PIL import Image

pytest.importorskip("streamlit")
import hostile  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

import pretrained  # noqa: E402
from sandbox import user_models
from sandbox.images import ImageError, encode_image  # noqa: E402
from workspace import imagenet

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "dashboard" / "app.py")
needs_sandbox = hostile.needs_sandbox


@pytest.fixture(autouse=True)
def quick_uploads(monkeypatch):
    monkeypatch.setattr(user_models, "TEST_IMAGES", 500)
    monkeypatch.setenv("SALIENCY_WORKER_TIMEOUT_S", "3")


def run_app(**params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def upload_model(at: AppTest, name: str, data: bytes) -> AppTest:
    at.switch_page("page_files/your_model.py").run()
    at.file_uploader(key="um_file").set_value((name, data, "application/octet-stream"))
    at.button(key="um_submit").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def model_names(at: AppTest) -> list[str]:
    """The sidebar's model menu, without the accuracies its labels show (an upload is shown by
    its file's name, issue 29.9)."""
    return [o.split(" (")[0] for o in at.selectbox(key="model").options]


def linear_model(seed: int) -> bytes:
    torch.manual_seed(seed)
    return hostile.scripted(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)))


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# --- hostile models on the page --------------------------------------------------------------


@needs_sandbox
@pytest.mark.parametrize(
    "build, message",
    [
        (lambda p: hostile.writer(p), "aten::from_file, which reads and writes files"),
        (lambda p: hostile.hoarder(), "aten::append, which adds to the model's own attributes"),
        (lambda p: hostile.forever_loop(), "did not run on one image within 3 s"),
        (lambda p: hostile.batch_loop(), "failed on a batch of test images"),
        (lambda p: hostile.deflate_bomb(256), "is compressed"),
    ],
    ids=["writer", "hoarder", "forever", "batch-loop", "bomb"],
)
def test_hostile_uploads_get_a_message_and_nothing_else(tmp_path, build, message):
    target = tmp_path / "written"
    at = upload_model(run_app(), "evil.pt", build(str(target)))
    assert at.error and message in at.error[0].value, [e.value for e in at.error]
    assert at.error[0].value.startswith("evil.pt: ")
    assert not target.exists()
    assert all(not m.startswith("upload:") for m in model_names(at))


@needs_sandbox
def test_a_model_that_hangs_later_gets_a_message_and_a_fresh_worker():
    at = upload_model(run_app(), "trap.pt", hostile.trap())
    name = at.session_state["um_accepted"]
    at.switch_page("page_files/explore.py").run()
    at.selectbox(key="model").set_value(name).run()
    assert not at.exception and not at.error
    at.session_state["image"] = encode_image(np.ones((28, 28), np.float32))
    at.radio(key="source").set_value("draw").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.error and "did not classify the image within 3 s" in at.error[0].value
    assert "The rest of the dashboard is unaffected" in at.error[0].value
    at.radio(key="source").set_value("test").run()  # its worker is started again
    assert not at.exception and not at.error
    assert at.selectbox(key="model").value == name


# --- links: others' uploads stay out of reach; one's own come back ----------------------------


@needs_sandbox
def test_an_upload_is_reachable_only_with_its_secret_key():
    owner = upload_model(run_app(), "mine.pt", linear_model(1))
    name = owner.session_state["um_accepted"]
    token = owner.query_params["mine"]
    token = token[0] if isinstance(token, list) else token
    assert "mine.pt" in model_names(owner)

    stranger = run_app(model=name, compare=name)
    assert stranger.selectbox(key="model").value == "mnist-cnn"
    assert "mine.pt" not in model_names(stranger)
    assert any("model=upload:" in w.value for w in stranger.warning)

    reloaded = run_app(model=name, mine=token)  # the owner's reload keeps the URL
    assert reloaded.selectbox(key="model").value == name

    lost = run_app(mine="AAAAAAAAAAAAAAAA")
    assert any("no longer on this server" in w.value for w in lost.warning)


@needs_sandbox
def test_an_evicted_upload_says_so_and_the_view_falls_back():
    from dashboard import cache

    pool = cache.uploads()
    old = pool.max_models
    pool.max_models = 1
    try:
        at = upload_model(run_app(), "first.pt", linear_model(2))
        first = at.session_state["um_accepted"]
        upload_model(at, "second.pt", linear_model(3))  # the page after it says so, once
        notes = "\n".join(w.value for w in at.warning)
        assert f"Your model **{first}** is gone" in notes and "last 1 uploaded models" in notes
        assert "first.pt" not in model_names(at)
        at.switch_page("page_files/explore.py").run()
        assert not at.exception and not at.warning
        assert "second.pt" in model_names(at)
    finally:
        pool.max_models = old


def test_compare_is_deduplicated_and_capped():
    at = run_app(compare=",".join(["mnist-mlp"] * 2000))
    assert at.multiselect(key="compare").value == ["mnist-mlp"]
    four = "mnist-mlp,mnist-linear,mnist-cnn-bn,mnist-mlp,mnist-linear"
    at = run_app(model="mnist-cnn-bn", compare="mnist-cnn," + four)
    assert any("at most 3 models" in w.value for w in at.warning)
    assert at.multiselect(key="compare").value == []


def test_uploads_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("SALIENCY_UPLOADS", "off")
    at = run_app()
    at.switch_page("page_files/your_model.py").run()
    assert not at.exception and "turned off on this server" in at.info[0].value
    assert not at.get("file_uploader")
    at.switch_page("page_files/explore.py").run()
    at.radio(key="source").set_value("upload").run()
    assert not at.get("file_uploader") and "turned off" in at.info[0].value


# --- no small file takes the server down -------------------------------------------------------


@pytest.mark.parametrize("w, h", [(1, 40_000), (40_000, 1), (1, 100_000), (1, 39_999_999)])
def test_extreme_aspect_ratios_are_refused_before_any_resize(w, h):
    with pytest.raises(ImageError, match="aspect ratio"):
        imagenet.resized_size(w, h, 256)


def test_the_resize_bound_keeps_torchvision_exact_for_ordinary_photos():
    rng = np.random.default_rng(0)
    for size in [(400, 300), (300, 1000), (2500, 250)]:
        img = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
        t = imagenet.MODELS["resnet18"].enum.transforms()
        expected = t(img) * torch.tensor(t.std).view(3, 1, 1) + torch.tensor(t.mean).view(3, 1, 1)
        torch.testing.assert_close(imagenet.pixels("resnet18", img), expected, atol=1e-5, rtol=0)


def test_photos_page_refuses_a_strip_and_keeps_the_photo_before(tmp_path, monkeypatch):
    """A strip whose resize would be huge is refused before it is kept; the photo before stays.
    (A session keeps a photo prepared, 3 × 224 × 224, so a kept one never fails later.)"""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # no weights: random
    at = run_app()
    at.switch_page("page_files/photos.py").run()
    at.switch_page("page_files/explore.py").run()
    at.checkbox(key="random_weights").check().run()
    strip = Image.new("L", (1, 40_000), 255)
    at.file_uploader(key="ws_upload_file").set_value(("strip.png", png(strip), "image/png")).run()
    assert not at.exception, [e.value for e in at.exception]
    assert "strip.png: This photo is 1 × 40000 pixels" in at.error[0].value
    assert "photos:imagenet" not in at.session_state["ws_uploads"]
    square = Image.new("RGB", (300, 300), (200, 40, 40))
    at.file_uploader(key="ws_upload_file").set_value(("red.png", png(square), "image/png")).run()
    kept = at.session_state["ws_uploads"]["photos:imagenet"]
    assert kept.shape == (3, 224, 224) and np.allclose(kept[0], 200 / 255)
    at.file_uploader(key="ws_upload_file").set_value(("strip.png", png(strip), "image/png")).run()
    assert "strip.png: This photo is 1 × 40000 pixels" in at.error[0].value
    assert at.session_state["ws_uploads"]["photos:imagenet"] is kept


# --- caches that heal --------------------------------------------------------------------------


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SALIENCY_CACHE_DIR", str(tmp_path))
    return tmp_path


def _damage(path: Path, how: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if how == "truncated":
        path.write_bytes(b"PK\x03\x04" + bytes(50))
    elif how == "empty":
        path.write_bytes(b"")
    else:  # a valid file with the wrong shapes
        np.savez(path, abs_sums=np.zeros((3, 3)), signed_sums=np.zeros((3, 3)), counts=np.ones(3))


@pytest.mark.parametrize("how", ["truncated", "empty", "shapes"])
def test_a_damaged_cache_file_is_treated_as_missing_and_replaced(cache_dir, how):
    from dashboard import cache

    path = cache.summary_path("mnist-linear", "mnist", 100)
    _damage(path, how)
    summary, note = cache.stored_summary("mnist-linear", "mnist", 100)
    assert summary is None and note and "is ignored" in note
    fresh = cache.compute_summary("mnist-linear", "mnist", 100)
    again, note = cache.stored_summary("mnist-linear", "mnist", 100)
    assert note is None
    torch.testing.assert_close(again.abs_sums, fresh.abs_sums)
    assert int(again.counts.sum()) == 100


def test_the_dataset_page_says_the_file_was_damaged_and_offers_to_recompute(cache_dir):
    from dashboard import cache

    _damage(cache.summary_path("mnist-cnn", "mnist", 1_000), "truncated")
    at = run_app()
    at.switch_page("page_files/dataset.py").run()
    at.selectbox(key="sens_n").set_value(1_000).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("unreadable (BadZipFile)" in w.value for w in at.warning)
    assert at.button(key="sens_compute_a")


def test_thirty_identical_requests_compute_once(cache_dir, monkeypatch):
    from dashboard import cache

    calls = []
    real_run = cache.run

    def counting_run(name, job, x, **kwargs):
        if job == "summary":
            calls.append(len(x))
        return real_run(name, job, x, **kwargs)

    monkeypatch.setattr(cache, "run", counting_run)
    results, errors = [], []

    def request():
        try:
            results.append(cache.compute_summary("mnist-linear", "mnist", 600))
        except Exception as err:  # noqa: BLE001 - collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=request) for _ in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert calls == [256, 256, 88]  # one pass over 600 images, not thirty
    for r in results[1:]:
        torch.testing.assert_close(r.abs_sums, results[0].abs_sums)
    folder = cache.summary_path("mnist-linear", "mnist", 600).parent
    assert [p.name for p in folder.iterdir() if ".tmp" in p.name] == []


# --- exposure ----------------------------------------------------------------------------------


def test_the_server_listens_on_localhost_unless_told_to_serve_a_class(monkeypatch):
    from dashboard.__main__ import streamlit_args

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "localhost"
    gc = ["--runner.postScriptGC", "false", "--server.showEmailPrompt", "false",
          "--server.maxUploadSize", "256", "--server.maxWidgetStateSize", "2",
          "--server.fileWatcherType", "none"]  # fmt: skip
    # the same bounds as config.toml, also when it isn't read (started from another folder)
    assert config["server"]["maxUploadSize"] == 256 and config["server"]["maxWidgetStateSize"] == 2
    assert streamlit_args([]) == ["--server.address", "localhost", *gc]
    assert streamlit_args(["--class"]) == ["--server.address", "0.0.0.0", *gc]
    monkeypatch.setenv("SALIENCY_UPLOADS", "on")  # restored after the test, whatever it sets
    args = streamlit_args(["--class", "--no-uploads", "--server.port", "8600"])
    assert args == ["--server.address", "0.0.0.0", *gc, "--server.port", "8600"]
    import os

    assert os.environ["SALIENCY_UPLOADS"] == "off"


def test_the_readme_command_starts_with_nobody_at_the_terminal(tmp_path):
    """`python -m dashboard` as scripts/dashboard.sh runs it (not headless, from the repo), with
    stdin closed: no first-run prompt stops it, it serves the pages on localhost, and the Live
    class's status route answers."""
    import json
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "HOME": str(tmp_path), "BROWSER": "true",  # no credentials, no browser
           "SALIENCY_CACHE_DIR": str(tmp_path / "cache")}  # fmt: skip
    log = tmp_path / "server.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dashboard", "--server.port", str(port)],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://localhost:{port}"
    try:
        for _ in range(180):
            assert proc.poll() is None, log.read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read() == b"ok":
                        break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"not healthy after 90 s:\n{log.read_text()[-2000:]}")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{url}/api/live/status?room=NOPE", timeout=5)
        assert err.value.code == 404
        assert json.loads(err.value.read()) == {"error": "no such class"}
        assert "Email:" not in log.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_library_errors_from_untrusted_text_are_shown_as_plain_text():
    from dashboard.render import plain

    assert plain("a [link](http://x) **b** $x$ <b> state_dict _em_") == (
        "a \\[link\\](http://x) \\*\\*b\\*\\* \\$x\\$ \\<b\\> state_dict \\_em\\_"
    )


def test_registry_models_are_unaffected_by_the_sandbox():
    # Bundled models still run in the server process, on the CUDA device when there is one.
    from dashboard import cache

    model = cache.model("mnist-cnn")
    assert next(model.parameters()).device == pretrained.default_device()
    with pytest.raises(TypeError, match="sandboxed worker"):
        cache.model("upload:0123456789ab")
