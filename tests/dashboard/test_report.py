"""The one-file report (issue 34): `saliency.report` itself, and the "Download report" buttons
of Explore and of the Misclassifications gallery, for a registry model, a workspace and an
uploaded model.

Each report is parsed with `html.parser`: every picture decodes, and equals, pixel for pixel and
byte for byte, the picture `saliency.display` makes in the test from the view's maps and the
settings the report itself states; the maps are checked against `torch.autograd`; the settings
round-trip exactly; nothing refers outside the file; hostile names stay text."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import hostile
import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest

import pretrained
from dashboard import budget, cache, lru, render
from dashboard.views import explore, mistakes, mistakes_report
from saliency import display
from saliency.report import MAX_BYTES, Section, default_versions, read_report, report_html
from sandbox import user_models
from workspace import export_maps

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "dashboard" / "app.py")
HOSTILE = "<script>alert(1)</script>"
HOSTILE_ATTR = '"><img src=x onerror=alert(2)>'


def png(rgb: np.ndarray) -> bytes:
    return render.png_bytes(np.asarray(rgb, dtype=np.uint8))


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text of each <script> and <style>."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.raw: list[str] = []
        self._raw = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._raw = tag in ("script", "style")

    def handle_endtag(self, tag):
        self._raw = False

    def handle_data(self, data):
        if self._raw:
            self.raw.append(data)


def tags_of(html: str) -> Tags:
    t = Tags()
    t.feed(html)
    t.close()
    return t


def assert_self_contained(html: str) -> None:
    """No reference outside the file: every src a data: PNG, no href, no link, frame, object
    or form, no CSS url() or @import, one script only (the settings' JSON, never run)."""
    t = tags_of(html)
    names = [tag for tag, _ in t.tags]
    for banned in ("link", "iframe", "frame", "object", "embed", "form", "base", "a", "audio"):
        assert banned not in names, banned
    scripts = [a for tag, a in t.tags if tag == "script"]
    assert scripts == [{"type": "application/json", "id": "settings"}]
    for tag, attrs in t.tags:
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name)
            assert name not in ("href", "action", "srcset", "background", "poster"), (tag, name)
            if name == "src":
                assert value.startswith("data:image/png;base64,"), value[:40]
            elif tag != "meta":
                assert "http:" not in (value or "") and "https:" not in (value or "")
    style = "".join(t.raw)
    assert "url(" not in style and "@import" not in style and "http" not in style
    policy = [a["content"] for tag, a in t.tags if a.get("http-equiv") == "Content-Security-Policy"]
    assert policy and "default-src 'none'" in policy[0] and "script-src" not in policy[0]


def images_of(html: str) -> list[tuple[str, bytes]]:
    return [im for s in read_report(html)["sections"] for im in s["images"]]


# --- the library ----------------------------------------------------------------------------


def small_png(seed: int, size: int = 6) -> bytes:
    rng = np.random.default_rng(seed)
    return png(rng.integers(0, 256, (size, size, 3)))


def test_a_report_reads_back_its_sections_pictures_and_settings_exactly():
    settings = {
        "method": "gradient",
        "alpha": 0.55,
        "clip": 99.5,
        "range": [-0.000123456789, 1e-300],
        "nested": {"compare": ["a", "b"], "none": None, "yes": True},
        "unicode": "∂ logit / ∂x — é ✓",
        "closing": "</script><!-- & -->",
    }
    sections = [
        Section("First", images=[("one", small_png(1)), ("two", small_png(2))],
                probabilities=[("7", 0.987654321), ("1", 1e-9)], note="a note"),
        Section("Second", images=[("three", small_png(3, 40))]),
        Section("Text only", note="no pictures"),
    ]  # fmt: skip
    html = report_html(sections, title="T", settings=settings, model_name="m")
    back = read_report(html)
    assert back["settings"] == settings
    assert json.dumps(back["settings"]) == json.dumps(settings)  # floats bit for bit
    assert [s["heading"] for s in back["sections"]] == ["First", "Second", "Text only"]
    for got, want in zip(back["sections"], sections, strict=True):
        assert got["images"] == list(want.images)
        assert got["probabilities"] == (None if want.probabilities is None else
                                        list(want.probabilities))  # fmt: skip
        for _, data in got["images"]:
            assert pixels(data).shape[2] == 3
    assert_self_contained(html)


def test_every_given_string_stays_text():
    evil = HOSTILE + HOSTILE_ATTR + "\u202eevil\u0000"
    html = report_html(
        [Section(evil, images=[(evil, small_png(0))], probabilities=[(evil, 0.5)], note=evil)],
        title=evil,
        settings={"name": evil, evil: 1},
        model_name=evil,
        model_card=f"# {evil}\n\n| a | {evil} |",
        model_sha256=evil,
        versions={evil: evil},
    )
    assert HOSTILE not in html and "<img src=x" not in html and "\u202e" not in html
    assert_self_contained(html)
    t = tags_of(html)
    assert [tag for tag, _ in t.tags].count("img") == 1  # the one picture given
    back = read_report(html)
    shown = HOSTILE + HOSTILE_ATTR + "evil"  # controls and bidi overrides dropped, rest as is
    assert back["sections"][0]["heading"] == shown
    assert back["sections"][0]["images"][0][0] == shown
    assert back["sections"][0]["probabilities"] == [(shown, 0.5)]
    assert back["settings"] == {"name": evil, evil: 1}  # the settings are data: kept exactly


def test_only_png_pictures_are_taken():
    with pytest.raises(ValueError, match="PNG"):
        report_html([Section("x", images=[("gif", b"GIF89a...")])], title="t", settings={},
                    model_name="m")  # fmt: skip


def test_a_report_is_bounded_and_says_what_it_left_out():
    sections = [Section(f"#{i}", images=[("a", small_png(i, 64)), ("b", small_png(i, 8))])
                for i in range(30)]  # fmt: skip
    html = report_html(sections, title="t", settings={}, model_name="m", max_images=10)
    back = read_report(html)
    assert [s["heading"] for s in back["sections"]] == [f"#{i}" for i in range(5)]
    assert "25 more not included" in html
    one = len(png(np.zeros((64, 64, 3), np.uint8)))
    bound = 60_000
    html = report_html(sections, title="t", settings={}, model_name="m", max_bytes=bound,
                       omitted=70)  # fmt: skip
    n = len(read_report(html)["sections"])
    assert len(html.encode()) <= bound and 0 < n < 30 and one < bound
    assert f"{30 - n + 70:,} more not included" in html
    card = "x" * 10 * MAX_BYTES  # a card (and any text) is cut, not carried whole
    assert len(report_html([], title="t", settings={}, model_name="m", model_card=card)) < 200_000


def test_versions_name_the_libraries_without_importing_them():
    v = default_versions()
    assert {"python", "numpy", "torch", "torchvision", "saliency-dashboard"} <= set(v)
    assert v["numpy"] == np.__version__ and v["torch"].split("+")[0] in torch.__version__
    code = ("import sys, saliency.report as r; r.report_html([], title='t', settings={}, "
            "model_name='m'); print(sorted({'torch', 'streamlit', 'pretrained', 'dashboard'}"
            " & set(sys.modules)))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- the dashboard's buttons ----------------------------------------------------------------


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A command-line workspace of 64 × 64 RGB pictures and its small net (tests/workspaces)."""
    from workspaces import rgb_workspace

    tmp = tmp_path_factory.mktemp("report")
    folder = rgb_workspace(tmp, per_class=6)
    mp = pytest.MonkeyPatch()
    mp.setenv("SALIENCY_WORKSPACES", str(folder))
    ep = torch.export.load(str(tmp / "tiny.pt2")).module()
    yield folder, lambda x: ep((x - 0.5) / 0.25)
    mp.undo()


@pytest.fixture(scope="module")
def upload():
    """A small CNN uploaded as TorchScript under a hostile file name: (name, key, model)."""
    if hostile.sandbox.unavailable() is not None:
        return None
    from test_every_view import SmallCNN

    net = SmallCNN().eval()
    with torch.no_grad():  # bytes of its own: uploads are content-addressed, and another
        next(net.parameters()).add_(1e-3)  # module's SmallCNN upload would carry its name
    old = user_models.TEST_IMAGES
    user_models.TEST_IMAGES = 500
    try:
        at = AppTest.from_file(APP, default_timeout=300)
        at.run()
        at.switch_page("page_files/your_model.py").run()
        name = f"{HOSTILE}.pt"
        data = hostile.scripted(net)
        at.file_uploader(key="um_file").set_value((name, data, "application/octet-stream"))
        at.button(key="um_submit").click().run()
        assert not at.exception, [e.value for e in at.exception]
        token = at.query_params["mine"]
        return at.session_state["um_accepted"], token[0] if isinstance(token, list) else token, net
    finally:
        user_models.TEST_IMAGES = old


@pytest.fixture
def deferred(monkeypatch):
    """The callables of the runs' deferred downloads, by file id (AppTest keeps only ids)."""
    made = {}
    real = MediaFileManager.add_deferred

    def add(self, data_callable, *args, **kwargs):
        file_id = real(self, data_callable, *args, **kwargs)
        made[file_id] = data_callable
        return file_id

    monkeypatch.setattr(MediaFileManager, "add_deferred", add)
    for share in budget.SHARES:
        lru.store(share).clear()
    return made


def app_for(kind: str, request) -> tuple[AppTest, dict, object]:
    """The app on a model of `kind`, and that model as a function of pixels for autograd
    (the workspace and the upload are made when first asked for)."""
    if kind == "registry":
        params = {"dataset": "mnist", "model": "mnist-cnn", "index": "3"}
        f = pretrained.load_model("mnist-cnn", "cpu")
    elif kind == "workspace":
        folder, f = request.getfixturevalue("workspace")
        params = {"dataset": f"ws:{folder.name}", "model": f"ws:{folder.name}", "index": "2"}
    else:
        upload = request.getfixturevalue("upload")
        if upload is None:
            pytest.skip("the sandbox is unavailable here")
        name, token, f = upload
        params = {"dataset": "mnist", "model": name, "mine": token, "index": "3"}
    at = AppTest.from_file(APP, default_timeout=300)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at, params, f


def gradient_maps(f, image: np.ndarray, classes: list[int]) -> np.ndarray:
    """`(len(classes), H, W)` |∂ logit_k / ∂x|, max over colour channels: by torch.autograd,
    one class at a time."""
    out = []
    for k in classes:
        x = torch.tensor(image[None], dtype=torch.float32, requires_grad=True)
        (g,) = torch.autograd.grad(f(x)[0, k], x)
        out.append(g[0].abs().amax(0).numpy())
    return np.stack(out)


def image_of(params: dict, index: int) -> tuple[np.ndarray, int]:
    from dashboard import sources

    src = sources.source(params["dataset"])
    return src.image(index), int(src.labels[index])


@pytest.mark.parametrize("kind", ["registry", "workspace", "upload"])
def test_explores_report_holds_the_views_pictures_settings_and_model(kind, request, deferred):
    at, params, f = app_for(kind, request)
    at.run()  # the panel's wait is 0 in tests: the server's own buttons are drawn
    buttons = {b.proto.label: b for b in at.get("download_button")}
    assert "📄 Download report" in buttons, list(buttons)
    html = deferred[buttons["📄 Download report"].proto.deferred_file_id]().decode("utf-8")
    assert_self_contained(html)
    back = read_report(html)

    # The settings: the JSON export's, round-tripped exactly.
    view = dict(at.session_state["view"])
    settings = back["settings"]
    assert settings["settings"]["model"] == params["model"]
    assert "mine" not in settings["settings"]
    assert "mine" not in params or params["mine"] not in html  # the upload's key is a secret
    assert {k: settings["settings"][k] for k in explore.EXPLAINED_KEYS} == {
        k: view[k] for k in explore.EXPLAINED_KEYS
    }

    # The view's maps, as it computed them, are the model's gradients.
    index = int(params["index"])
    image, true = image_of(params, index)
    ex = explore.explained(view, image, true)
    assert settings["target"] == ex.target and settings["display_range"] == [ex.lo, ex.hi]
    classes = [ex.target, *ex.grid_classes]
    np.testing.assert_allclose(np.stack([ex.maps[k] for k in classes]),
                               gradient_maps(f, image, classes), rtol=1e-4, atol=1e-6)  # fmt: skip

    # Every picture is saliency.display's, from the settings the report states.
    s = settings["settings"]
    assert (s["sign"], s["scale"]) == ("absolute", "map")  # the defaults: per map, |g|
    lo, hi = display.display_range(ex.main, percentile=float(s["clip"]))
    assert (lo, hi) == (ex.lo, ex.hi)
    big = render.scale_for(image.shape)
    want = [
        display.upscale(display.to_rgb(image), big),
        display.render(ex.main, lo=lo, hi=hi, cmap=s["cmap"], scale=big),
        display.render(
            ex.main, lo=lo, hi=hi, cmap=s["cmap"], image=image, alpha=float(s["alpha"]), scale=big
        ),  # fmt: skip
    ]
    first = back["sections"][0]
    assert len(first["images"]) == 4
    for (caption, data), rgb in zip(first["images"], want, strict=False):
        assert np.array_equal(pixels(data), rgb), caption
        assert data == png(rgb), caption  # the PNG the view offers ("Map as PNG"), bytewise
    bar = pixels(first["images"][3][1])
    strip, _ = display.colorbar(lo, hi, s["cmap"], length=240, thickness=14)
    assert np.array_equal(bar[:14, 20:260], strip)  # the colour bar, then its numbers
    probs = cache.probabilities(params["model"], image)
    assert [p for _, p in first["probabilities"]] == [float(probs[k]) for k in range(len(probs))]
    assert settings["probabilities"] == [round(float(p), 6) for p in probs]

    # The contrast and every class's map, each on the view's scale.
    c_lo, c_hi = display.display_range(ex.diff, signed=True, percentile=float(s["clip"]))
    contrast = display.render(ex.diff, lo=c_lo, hi=c_hi, cmap=s["cmap_signed"], scale=big)
    assert np.array_equal(pixels(back["sections"][1]["images"][0][1]), contrast)
    small = render.scale_for(image.shape, 140)
    grid = back["sections"][2]["images"]
    assert len(grid) == len(ex.grid_classes)
    for (caption, data), k in zip(grid, ex.grid_classes, strict=True):
        k_lo, k_hi = display.display_range(ex.maps[k], percentile=float(s["clip"]))
        rgb = display.render(ex.maps[k], lo=k_lo, hi=k_hi, cmap=s["cmap"], image=image,
                             alpha=float(s["alpha"]), scale=small)  # fmt: skip
        assert np.array_equal(pixels(data), rgb) and caption.startswith(str(k))

    # The model: its card, its weights' sha256, the versions.
    info = cache.model_info(params["model"])
    assert info.weights_sha256 in html and len(info.weights_sha256) == 64
    if kind == "registry":
        assert "Per-class test accuracy" in html and "mnist-cnn" in html
    if kind == "upload":
        assert HOSTILE not in html and "&lt;script&gt;alert(1)&lt;/script&gt;.pt" in html
    for library in ("torch", "torchvision", "numpy", "saliency-dashboard", "python"):
        assert f"<td>{library}</td>" in html


@pytest.mark.parametrize("kind", ["registry", "workspace", "upload"])
def test_the_gallerys_report_holds_every_image_of_its_filter(kind, request, deferred,
                                                             monkeypatch):  # fmt: skip
    monkeypatch.setattr(mistakes_report, "REPORT_IMAGES", 12)  # fewer maps to compute, and a cut
    at, params, f = app_for(kind, request)
    at.switch_page("page_files/mistakes.py").run()
    if kind == "workspace":  # its small net makes no mistake: its least confident answers
        at.radio(key="mis_kind").set_value("unsure").run()
    assert "mis_report" not in at.session_state  # nothing made before the click
    at.button(key="mis_report_go").click().run()
    assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
    (button,) = [b for b in at.get("download_button") if b.proto.id.endswith("mis_report_html")]
    assert button.proto.label.startswith("📄 Download report (.html, ")
    html = mistakes.held_exports().get(at.session_state["mis_report"]["token"])["html"].decode()
    assert_self_contained(html)
    back = read_report(html)
    settings = back["settings"]

    # Exactly the gallery's images, in its order (its selector lists its first page).
    from dashboard import sources

    src = sources.source(params["dataset"])
    preds = cache.predictions(params["model"], params["dataset"])
    rule = ("unsure" if at.session_state["mis_kind"] == "unsure" else
            f"true={at.session_state['mis_true']},pred={at.session_state['mis_pred']}")  # fmt: skip
    indices = export_maps.select(rule, src.labels, preds.predicted, preds.p_predicted,
                                 len(src.classes))  # fmt: skip
    options = at.selectbox(key="mis_index").options
    shown = [int(o.split(":")[0].lstrip("#").split()[0]) for o in options]
    assert shown == indices[: len(shown)].tolist()
    n = min(len(indices), mistakes_report.REPORT_IMAGES)
    assert settings["images"] == indices[:n].tolist() and settings["selected"] == len(indices)
    assert len(back["sections"]) == n > 0
    if len(indices) > n:
        assert f"{len(indices) - n:,} more not included" in html

    # Each image with the maps `detail` shows: saliency.display's pictures of the gradients.
    for section, index in list(zip(back["sections"], indices, strict=False))[:3]:
        image, true = image_of(params, int(index))
        pred = int(preds.predicted[index])
        assert section["heading"].startswith(src.name(int(index)))
        versus = true if pred != true else int(preds.top_classes[index, 1])
        classes = sorted({true, pred})
        maps = dict(zip(classes, cache.class_maps(params["model"], image, "gradient", "logit",
                                                  True, tuple(classes)), strict=True))  # fmt: skip
        own = np.stack([maps[k] for k in classes])
        np.testing.assert_allclose(own, gradient_maps(f, image, classes), rtol=1e-4, atol=1e-6)
        clip, alpha = settings["maps"]["clip"], settings["maps"]["alpha"]
        lo, hi = display.display_range([maps[true], maps[pred]], percentile=clip)
        scale = render.scale_for(image.shape, 196)
        want = [display.upscale(display.to_rgb(image), scale)] + [
            display.render(maps[k], lo=lo, hi=hi, cmap=settings["maps"]["cmap"], image=image,
                           alpha=alpha, scale=scale)
            for k in (true, pred)
        ]  # fmt: skip
        diff = cache.contrast_map(params["model"], image, pred, versus, "gradient", "logit")
        c_lo, c_hi = display.display_range(diff, signed=True, percentile=clip)
        want.append(display.render(diff, lo=c_lo, hi=c_hi, cmap=settings["contrast"]["cmap"],
                                   scale=scale))  # fmt: skip
        assert len(section["images"]) == 6
        for (caption, data), rgb in zip(section["images"], want, strict=False):
            assert np.array_equal(pixels(data), rgb), caption
        assert section["probabilities"] == [
            (section["probabilities"][0][0], float(preds.p_label[index])),
            (section["probabilities"][1][0], float(preds.p_predicted[index])),
        ]
    info = cache.model_info(params["model"])
    assert info.weights_sha256 in html
