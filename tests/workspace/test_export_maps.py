"""The bulk export of maps (workspace/export_maps.py, issue 29's "also expected"): the maps
equal an independent torch.autograd gradient of the same model, the rows are the gallery's
filter in its order, the command line writes the file and refuses bad arguments with a
sentence, memory holds one batch beyond the output, and the Misclassifications gallery offers
the download for a registry model, a command-line workspace and an uploaded model."""

from __future__ import annotations

import io
import json
import tracemalloc
import zipfile
from pathlib import Path

import hostile
import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

import pretrained
import workspace
from dashboard import budget, lru
from dashboard.render import Style, picture
from dashboard.views import mistakes
from sandbox import user_models
from workspace import export_maps
from workspace.export_maps import ExportError, export, main, runner, select

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")


def autograd_maps(f, x: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """`(N, C, H, W)` signed ∂f_target/∂x, image by image with torch.autograd.grad: the
    independent reference (no saliency, no jobs)."""
    out = []
    for xi, t in zip(x, targets, strict=True):
        xt = torch.tensor(xi[None], dtype=torch.float32, requires_grad=True)
        (g,) = torch.autograd.grad(f(xt)[0, int(t)], xt)
        out.append(g[0].numpy())
    return np.stack(out)


def reduced(g: np.ndarray) -> np.ndarray:
    """max |g| over the colour channels (one channel: |g|), as the page shows a map."""
    return np.abs(g).max(axis=1)


@pytest.fixture(scope="module")
def mnist():
    images, labels = pretrained.data.load_arrays("mnist", "test")
    model = pretrained.load_model("mnist-cnn", "cpu")
    with torch.no_grad():
        probs = torch.cat([model(torch.from_numpy(images[i : i + 2000])).softmax(1)
                           for i in range(0, 10_000, 2000)]).numpy()  # fmt: skip
    return model, images, labels, probs


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A command-line workspace (tests/workspaces.py): 5 classes of 64 × 64 RGB pictures and a
    small net, saved as a torch.export program."""
    from workspaces import rgb_workspace

    tmp = tmp_path_factory.mktemp("export")
    folder = rgb_workspace(tmp, per_class=8)
    ep = torch.export.load(str(tmp / "tiny.pt2")).module()
    return folder, (lambda x: ep((x - 0.5) / 0.25))  # the workspace standardises inside


def test_registry_export_equals_autograd_for_predicted_and_true_class(mnist):
    model, images, labels, probs = mnist
    predicted = probs.argmax(1)
    p_pred = probs[np.arange(10_000), predicted]
    chosen = select("wrong", labels, predicted, p_pred, 10)[:12]
    for target, want_t in (("predicted", predicted[chosen]), ("true", labels[chosen])):
        buf = io.BytesIO()
        written = export(
            runner(model), lambda i: images[i], chosen, labels=labels, predicted=predicted,
            p_predicted=p_pred, image_shape=(1, 28, 28), npz=buf, target=target,
            meta={"model": "mnist-cnn", "classes": list("0123456789")}, batch_size=5,
        )  # fmt: skip
        f = np.load(io.BytesIO(buf.getvalue()), allow_pickle=False)
        assert f["maps"].dtype == np.float32 and f["maps"].shape == (12, 28, 28)
        assert written.npz_bytes == len(buf.getvalue())
        np.testing.assert_array_equal(f["indices"], chosen)
        np.testing.assert_array_equal(f["target"], want_t)
        np.testing.assert_array_equal(f["labels"], labels[chosen])
        np.testing.assert_array_equal(f["predicted"], predicted[chosen])
        np.testing.assert_allclose(f["p_predicted"], p_pred[chosen])
        want = reduced(autograd_maps(model, images[chosen], want_t))
        np.testing.assert_allclose(f["maps"], want, rtol=1e-4, atol=1e-7)
        meta = json.loads(str(f["meta"]))
        assert meta["target"] == target and meta["method"] == "gradient" and meta["absolute"]
        assert meta["model"] == "mnist-cnn" and meta["n"] == 12 and meta["version"] == "0.1.0"
    # The mistakes' two maps differ: the target rule is really applied.
    assert not np.allclose(want, reduced(autograd_maps(model, images[chosen], predicted[chosen])))


def test_filters_select_the_gallerys_images_in_its_order(mnist):
    _, _, labels, probs = mnist
    pred = probs.argmax(1)
    p = probs[np.arange(10_000), pred]
    for t, j in [(9, 4), (7, 2), (4, 9)]:
        loop = sorted((i for i in range(10_000) if labels[i] == t and pred[i] == j),
                      key=lambda i: -p[i])  # fmt: skip
        assert select(f"true={t},pred={j}", labels, pred, p, 10).tolist() == loop
    wrong = select("wrong", labels, pred, p, 10)
    assert wrong.tolist() == pretrained.ranked_mistakes(pred, p, labels).tolist()
    assert len(wrong) == int((pred != labels).sum())
    unsure = select("unsure", labels, pred, p, 10)
    assert unsure.tolist() == pretrained.ranked_least_confident(pred, p, labels, 10_000).tolist()
    assert select("class=3", labels, pred, p, 10).tolist() == np.flatnonzero(labels == 3).tolist()
    assert len(select("all", labels, pred, p, 10)) == 10_000
    right3 = select("true=3,pred=3", labels, pred, p, 10)
    assert set(right3.tolist()) == set(np.flatnonzero((labels == 3) & (pred == 3)).tolist())
    for bad, message in [("wrongs", "unknown filter 'wrongs'"), ("class=10", "out of range"),
                         ("true=x,pred=1", "'x' is not a class number")]:  # fmt: skip
        with pytest.raises(ExportError, match=message):
            select(bad, labels, pred, p, 10)


def test_workspace_cli_writes_maps_equal_to_autograd_and_pngs_as_the_page_draws(ws, tmp_path):
    folder, f = ws
    out, zipped = tmp_path / "maps.npz", tmp_path / "maps.zip"
    code = main([str(folder), "--filter", "all", "--out", str(out), "--pngs", str(zipped),
                 "--batch-size", "7", "--quiet"])  # fmt: skip
    assert code == 0
    w = workspace.open_indexed(folder)
    with np.load(out, allow_pickle=False) as npz:
        maps, idx, paths = npz["maps"], npz["indices"], npz["paths"]
        np.testing.assert_array_equal(npz["target"], w.predicted)
        meta = json.loads(str(npz["meta"]))
    assert maps.shape == (40, 64, 64) and idx.tolist() == list(range(40))
    assert paths.tolist() == list(w.paths)
    assert meta["weights_sha256"] == w.model_sha256 and meta["classes"] == list(w.classes)
    x = np.stack([w.image(i) for i in range(40)])  # (40, 3, 64, 64)
    np.testing.assert_allclose(maps, reduced(autograd_maps(f, x, w.predicted)),
                               rtol=1e-4, atol=1e-7)  # fmt: skip
    with zipfile.ZipFile(zipped) as z:
        names = z.namelist()
        assert len(names) == 41 and names[-1] == "maps.npz"
        assert z.read("maps.npz") == out.read_bytes()
        first = np.asarray(Image.open(io.BytesIO(z.read(names[0]))))
    assert (
        names[0] == f"00000_img0_true{w.labels[0]}_pred{w.predicted[0]}_target{w.predicted[0]}.png"
    )
    # What the Misclassifications page draws for a map: inferno over the image, alpha 0.5.
    style = Style(signed=False, cmap="inferno", alpha=0.5, clip=99.0, shared=False)
    lo, hi = style.range([maps[0]])
    np.testing.assert_array_equal(first, picture(maps[0], lo, hi, style, image=x[0], scale=1))
    # Per channel: the colour channels kept, each |∂/∂x| of the true class.
    out3 = tmp_path / "rgb.npz"
    assert main([str(folder), "--filter", "class=2", "--target", "true", "--per-channel",
                 "--out", str(out3), "--quiet"]) == 0  # fmt: skip
    with np.load(out3) as npz:
        rows = np.flatnonzero(w.labels == 2)
        assert npz["maps"].shape == (len(rows), 3, 64, 64)
        want = np.abs(autograd_maps(f, x[rows], w.labels[rows]))
        np.testing.assert_allclose(npz["maps"], want, rtol=1e-4, atol=1e-7)


def test_the_command_line_refuses_bad_arguments_with_a_sentence(ws, tmp_path, capsys):
    folder, _ = ws
    out = tmp_path / "m.npz"
    cases = [
        ([str(folder), "--filter", "nonsense"], 1, "unknown filter 'nonsense': use one of wrong"),
        ([str(folder), "--filter", "class=5"], 1, "class 5 is out of range: 0 to 4"),
        ([str(tmp_path / "nowhere")], 1, "is neither an indexed workspace folder nor a registry"),
        ([str(folder), "--filter", "all", "--max-images", "5"], 1,
         "selects 40 images; one export takes at most 5"),
        ([str(folder), "--filter", "all", "--max-mb", "0.1"], 1, "one export writes at most 0 MB"),
        ([str(folder), "--method", "magic"], 2, "invalid choice: 'magic'"),
    ]  # fmt: skip
    for args, want_code, message in cases:
        with pytest.raises(SystemExit) if want_code == 2 else _nothing() as raised:
            code = main([*args, "--out", str(out), "--quiet"])
        code = raised.value.code if want_code == 2 else code
        err = capsys.readouterr().err
        assert code == want_code and message in err, (args, code, err)
        assert not out.exists() and not list(tmp_path.glob(".m.npz.*"))
    with pytest.raises(SystemExit) as raised:
        main([str(folder), "--out", str(tmp_path / "m.txt")])
    assert raised.value.code == 2
    assert "--out must name a .npz file, not" in capsys.readouterr().err


def test_the_command_line_exports_a_registry_models_test_set(mnist, tmp_path, capsys):
    model, images, labels, probs = mnist
    out = tmp_path / "cnn.npz"
    assert main(["mnist-cnn", "--filter", "true=4,pred=9", "--out", str(out), "--quiet"]) == 0
    assert f"-> {out}" in capsys.readouterr().out
    pred = probs.argmax(1)
    want_idx = pretrained.ranked_mistakes(pred, probs.max(1), labels, true=4, predicted_as=9)
    with np.load(out, allow_pickle=False) as npz:
        assert npz["indices"].tolist() == want_idx.tolist() and len(want_idx) > 0
        assert "paths" not in npz.files
        want = reduced(autograd_maps(model, images[want_idx], pred[want_idx]))
        np.testing.assert_allclose(npz["maps"], want, rtol=1e-4, atol=1e-7)
        meta = json.loads(str(npz["meta"]))
    assert meta["weights_sha256"] == pretrained.model_info("mnist-cnn").weights_sha256


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_memory_holds_one_batch_beyond_the_output():
    """3,000 maps of 28 × 28 (9.4 MB) streamed to a file: the export's own allocations peak
    at a few batches (64 maps: 0.2 MB each), not at all the maps; into memory, at the output
    plus a few batches. numpy's allocations are what tracemalloc sees (the runner is numpy)."""
    n = 3000
    images = np.random.default_rng(0).random((n, 1, 28, 28), dtype=np.float32)
    labels = np.arange(n) % 10

    def run(job, x, *, targets, **_):
        assert job == "maps"
        return x * (1 + targets[:, None, None, None]).astype(np.float32)

    kw = dict(labels=labels, predicted=labels, p_predicted=np.ones(n, np.float32),
              image_shape=(1, 28, 28), batch_size=64)  # fmt: skip
    maps_bytes = n * 28 * 28 * 4
    tracemalloc.start()
    export(run, lambda i: images[i], np.arange(n), npz=_Counting(), **kw)
    _, peak_file = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    buf = io.BytesIO()
    tracemalloc.start()
    written = export(run, lambda i: images[i], np.arange(n), npz=buf, **kw)
    _, peak_memory = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    batch = 64 * 28 * 28 * 4
    assert written.npz_bytes > maps_bytes
    assert peak_file < 8 * batch, f"{peak_file / 2**20:.2f} MB held for a file"
    assert peak_memory < written.npz_bytes * 1.2 + 8 * batch
    # The estimate a page shows before computing is an upper bound, and a close one.
    need = export_maps.estimate_bytes(n, (1, 28, 28))
    assert written.npz_bytes <= need < written.npz_bytes + 64 * 1024


class _Counting(io.RawIOBase):
    """A seekable sink that keeps nothing (what a file on disk is to this process's heap)."""

    def __init__(self):
        self.pos = self.end = 0

    def writable(self):
        return True

    def seekable(self):
        return True

    def write(self, b):
        self.pos += len(memoryview(b).cast("B"))
        self.end = max(self.end, self.pos)
        return len(memoryview(b).cast("B"))

    def tell(self):
        return self.pos

    def seek(self, pos, whence=0):
        self.pos = {0: pos, 1: self.pos + pos, 2: self.end + pos}[whence]
        return self.pos

    def read(self, n=-1):
        raise io.UnsupportedOperation("a sink")


# --- the Misclassifications gallery, every kind of model ------------------------------------


@pytest.fixture(scope="module")
def upload():
    """A small CNN uploaded as a torch.export program through the Your model page."""
    if hostile.sandbox.unavailable() is not None:
        return None
    from test_every_view import SmallCNN, exported

    old = user_models.TEST_IMAGES
    user_models.TEST_IMAGES = 500
    try:
        at = AppTest.from_file(APP, default_timeout=300)
        at.run()
        at.switch_page("page_files/your_model.py").run()
        data = exported(SmallCNN().eval())
        at.file_uploader(key="um_file").set_value(("small.pt2", data, "application/octet-stream"))
        at.button(key="um_submit").click().run()
        assert not at.exception, [e.value for e in at.exception]
        token = at.query_params["mine"]
        return at.session_state["um_accepted"], token[0] if isinstance(token, list) else token
    finally:
        user_models.TEST_IMAGES = old


@pytest.mark.parametrize("kind", ["registry", "workspace", "upload"])
def test_the_gallery_offers_its_filters_maps_as_an_npz(kind, ws, mnist, upload, monkeypatch):
    for share in budget.SHARES:
        lru.store(share).clear()
    params = {"dataset": "mnist", "model": "mnist-cnn"}
    images, labels = mnist[1], mnist[2]
    f = mnist[0]
    if kind == "workspace":
        folder, f = ws
        monkeypatch.setenv("SALIENCY_WORKSPACES", str(folder))
        params = {"dataset": f"ws:{folder.name}", "model": f"ws:{folder.name}"}
        w = workspace.open_indexed(folder)
        images = np.stack([w.image(i) for i in range(len(w.paths))])
        labels = w.labels
    elif kind == "upload":
        if upload is None:
            pytest.skip("the sandbox is unavailable here")
        from test_every_view import SmallCNN

        params = {"dataset": "mnist", "model": upload[0], "mine": upload[1]}
        f = SmallCNN().eval()
    at = AppTest.from_file(APP, default_timeout=300)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    at.switch_page("page_files/mistakes.py").run()
    if kind == "workspace":  # its small net makes no mistake: its least confident answers
        at.radio(key="mis_kind").set_value("unsure").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.download_button  # nothing computed before the click
    at.button(key="mis_export_go").click().run()
    assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
    (button,) = at.download_button
    assert button.label.startswith("Download these maps (.npz, ")
    mine = at.session_state["mis_export"]
    data = mistakes.held_exports().get(mine["token"])["npz"]
    assert len(data) == mine["npz"]
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        idx, maps, pred = npz["indices"], npz["maps"], npz["predicted"]
        meta = json.loads(str(npz["meta"]))
    # Exactly the gallery's filter, in its order: all its images, not only the page shown.
    ranked = {"registry": (mnist[3].argmax(1), mnist[3].max(1))}
    if kind == "workspace":
        ranked["workspace"] = (w.predicted, w.p_predicted)
    every_pred, every_p = ranked.get(kind, (None, None))
    if at.session_state["mis_kind"] == "cell":
        t, j = at.session_state["mis_true"], at.session_state["mis_pred"]
        assert np.all(labels[idx] == t) and np.all(pred == j) and t != j
        assert meta["filter"] == {"kind": "cell", "true": t, "pred": j}
        if every_pred is not None:
            gallery = pretrained.ranked_mistakes(
                every_pred, every_p, labels, true=t, predicted_as=j
            )
            assert idx.tolist() == gallery.tolist()
    else:
        assert np.all(labels[idx] == pred) and meta["filter"] == {"kind": "unsure"}
        gallery = pretrained.ranked_least_confident(every_pred, every_p, labels, len(labels))
        assert idx.tolist() == gallery.tolist() and len(idx) == len(labels)
    options = at.selectbox(key="mis_index").options
    assert [int(o.split(":")[0].lstrip("#").split()[0]) for o in options] == idx[:40].tolist()
    n = len(idx)
    assert f"{n:,} image{'s' if n != 1 else ''} " in " ".join(c.value for c in at.caption)
    assert maps.shape[0] == n and n > 0
    want = reduced(autograd_maps(f, images[idx[:8]], pred[:8]))
    np.testing.assert_allclose(maps[:8], want, rtol=1e-4, atol=1e-6)
