"""Every view × every kind of model (issue 29.1): a registry model, a command-line workspace's
model, an uploaded TorchScript file (scripted, and traced), an uploaded `torch.export`
program, and a torchvision classifier of the ImageNet workspace, which has no images (issue 31:
Explore explains a photo there; the views of a whole data set say there is none). Each view
opens a real image and shows what that model computed, and every map it asked for is checked
against an independent `torch.autograd` gradient of the same model on the same image.

The views' computations all pass through `dashboard.cache.run` (in this process for trusted
models, in the sandboxed worker for uploads): the test records them there, with the caches
emptied first, so nothing is read from an earlier answer."""

from __future__ import annotations

import io
from pathlib import Path

import hostile
import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest
from torch import nn

import pretrained
from dashboard import budget, cache, lru
from sandbox import user_models

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "dashboard" / "app.py")
needs_sandbox = hostile.needs_sandbox
VIEWS = ("explore", "mistakes", "dataset", "classroom")
KINDS = ("registry", "workspace", "torchscript", "traced", "export", "imagenet")


class SmallCNN(nn.Module):
    """A small MNIST CNN (random weights, fixed seed): what a user would upload."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(7)
        self.conv = nn.Conv2d(1, 4, 5, stride=2)
        self.head = nn.Linear(4 * 12 * 12, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.conv(x)).flatten(1))


def traced(module: nn.Module) -> bytes:
    """`torch.jit.trace`, the commonest way a TorchScript file is made (issue 30)."""
    buf = io.BytesIO()
    torch.jit.save(torch.jit.trace(module.eval(), torch.rand(2, 1, 28, 28)), buf)
    return buf.getvalue()


def exported(module: nn.Module) -> bytes:
    batch = torch.export.Dim("batch", min=1, max=4096)
    x = torch.rand(2, 1, 28, 28)
    ep = torch.export.export(module.eval(), (x,), dynamic_shapes=({0: batch},))
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A command-line workspace (tests/workspaces.py): 5 classes of 64 × 64 RGB pictures and a
    small net, as `python -m dashboard --workspace W` serves it."""
    import os

    from workspaces import rgb_workspace

    tmp = tmp_path_factory.mktemp("every-view")
    folder = rgb_workspace(tmp, per_class=8)
    before = os.environ.get("SALIENCY_WORKSPACES")
    os.environ["SALIENCY_WORKSPACES"] = str(folder)
    ep = torch.export.load(str(tmp / "tiny.pt2")).module()
    yield folder, lambda x: ep((x - 0.5) / 0.25)  # the workspace standardises inside
    if before is None:
        os.environ.pop("SALIENCY_WORKSPACES", None)
    else:
        os.environ["SALIENCY_WORKSPACES"] = before


@pytest.fixture(scope="module")
def uploads():
    """The two uploads, accepted once through the Your model page: name and secret key."""
    if hostile.sandbox.unavailable() is not None:
        return {}
    net = SmallCNN().eval()
    made = {}
    for kind, data in (
        ("torchscript", hostile.scripted(net)),
        ("traced", traced(net)),
        ("export", exported(net)),
    ):
        at = AppTest.from_file(APP, default_timeout=300)
        at.run()
        at.switch_page("page_files/your_model.py").run()
        at.file_uploader(key="um_file").set_value((f"{kind}.pt", data, "application/octet-stream"))
        at.button(key="um_submit").click().run()
        assert not at.exception, [e.value for e in at.exception]
        token = at.query_params["mine"]
        token = token[0] if isinstance(token, list) else token
        made[kind] = (at.session_state["um_accepted"], token)
    return made


@pytest.fixture(autouse=True)
def small_uploads(monkeypatch):
    monkeypatch.setattr(user_models, "TEST_IMAGES", 500)


@pytest.fixture
def recorded(monkeypatch, tmp_path):
    """Every computation the views ask of a model, with its answer, the caches emptied (and
    a disk cache of its own: the data-set averages must be computed, not read)."""
    monkeypatch.setenv("SALIENCY_CACHE_DIR", str(tmp_path))
    for share in budget.SHARES:
        lru.store(share).clear()
    calls = []
    real = cache.run

    def run(name, job, x, **kwargs):
        result = real(name, job, x, **kwargs)
        calls.append((name, job, np.array(x), dict(kwargs), result))
        return result

    monkeypatch.setattr(cache, "run", run)
    return calls


def autograd(f, x: np.ndarray, classes: list[int], versus: int | None = None) -> np.ndarray:
    """`(N, len(classes), C, H, W)` signed ∂f_k/∂x (or ∂(f_k − f_versus)/∂x), one class at a
    time with torch.autograd.grad: the independent reference."""
    out = []
    for k in classes:
        xt = torch.tensor(x, dtype=torch.float32, requires_grad=True)
        y = f(xt)
        score = y[:, k] - (y[:, versus] if versus is not None else 0)
        (g,) = torch.autograd.grad(score.sum(), xt)
        out.append(g.numpy())
    return np.stack(out, axis=1)


def check_maps(calls, f) -> int:
    """Compare every gradient map the views computed with autograd; returns how many."""
    checked = 0
    for _, job, x, kw, result in calls:
        if kw.get("method", "gradient") != "gradient" or kw.get("score", "logit") != "logit":
            continue
        if job == "class_maps":
            classes = kw.get("classes") or list(range(np.asarray(result).shape[1]))
            want = autograd(f, x, list(classes))
            if kw.get("absolute", True):
                want = np.abs(want)
            np.testing.assert_allclose(np.asarray(result), want, rtol=1e-4, atol=1e-6)
            checked += 1
        elif job == "contrast":
            want = autograd(f, x, [kw["target"]], versus=kw["versus"])[:, 0]
            np.testing.assert_allclose(np.asarray(result), want, rtol=1e-4, atol=1e-6)
            checked += 1
        elif job == "nudge":
            row, col = kw["pixel"][1:]
            want = autograd(f, x, [kw["target"]])[0, 0, 0, row, col]
            assert result["gradient"] == pytest.approx(float(want), rel=1e-4, abs=1e-7)
            checked += 1
    return checked


def photo() -> np.ndarray:
    """A 300 × 400 RGB picture of 10-pixel squares (seeded), as an uploaded photo's bytes."""
    from PIL import Image

    rng = np.random.default_rng(5)
    img = np.kron(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8), np.ones((10, 10, 1), "u1"))
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def photos_model() -> tuple[str, object]:
    """The ImageNet workspace's MobileNet (random weights offline) and the same model, loaded
    by torchvision's own path."""
    from dashboard import sources
    from sandbox import kinds
    from workspace import imagenet

    model = sources.photo_models()[1]
    name, weights = kinds.imagenet_parts(model)
    return model, imagenet.load(name, weights=weights, download=False)


def page_of(kind: str, view: str, workspace, uploads) -> tuple[AppTest, object, str]:
    params = {"dataset": "mnist", "index": "3"}
    if kind == "imagenet":
        model, f = photos_model()
        params = {"dataset": "photos:imagenet", "model": model, "random_weights": "true"}
    elif kind == "registry":
        params["model"] = "mnist-cnn"
        f = pretrained.load_model("mnist-cnn", "cpu")
    elif kind == "workspace":
        folder, f = workspace
        params.update(dataset=f"ws:{folder.name}", model=f"ws:{folder.name}", index="2")
    else:
        if kind not in uploads:
            pytest.skip("the sandbox is unavailable here")
        name, token = uploads[kind]
        params.update(model=name, mine=token)
        f = SmallCNN().eval()
    at = AppTest.from_file(APP, default_timeout=300)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    at.switch_page(f"page_files/{view}.py").run()
    if kind == "imagenet" and view == "explore":  # the user's photo: it has none of its own
        at.file_uploader(key="ws_upload_file").set_value(("p.png", photo(), "image/png")).run()
    return at, f, params["model"]


@needs_sandbox
@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("view", VIEWS)
def test_every_view_shows_each_kind_of_models_own_maps(view, kind, workspace, uploads, recorded):
    at, f, model = page_of(kind, view, workspace, uploads)
    if view == "dataset" and kind not in ("workspace", "imagenet"):
        at.selectbox(key="sens_n").set_value(1_000).run()
        at.button(key="sens_compute_a").click().run()
    if view == "classroom" and kind in ("workspace", "imagenet"):
        # The lessons are written for 28 × 28 digits: the page says so, and offers nothing else.
        assert "written for the bundled models" in " ".join(i.value for i in at.info)
        return
    if kind == "imagenet" and view != "explore":
        assert not at.exception, [e.value for e in at.exception]
        assert "has no images of its own" in " ".join(i.value for i in at.info)
        return
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    mine = [c for c in recorded if c[0] == model]
    if view == "dataset" and kind == "workspace":
        # read from the index (tests/dashboard/test_workspace_app.py checks it against autograd)
        return
    if view == "dataset":
        summary = [c for c in mine if c[1] == "summary"]
        assert summary, "the sensitivity was not computed by this model"
        _, _, x, kw, result = summary[0]
        labels = kw["labels"]
        own = np.abs(autograd(f, x, list(range(10))))  # (N, K, 1, 28, 28)
        want = np.zeros((10, 1, 28, 28))
        for i, k in enumerate(labels):
            want[k] += own[i, k]
        np.testing.assert_allclose(_own_class_sums(result), want, rtol=1e-4, atol=1e-5)
        return
    assert check_maps(mine, f) >= 1, f"{view} computed no gradient map with {model}"


def _own_class_sums(result: dict) -> np.ndarray:
    """`(K, C, H, W)` sums of |∂logit_c/∂x| over class c's own images, from the summary job's
    `abs_sums` `(K classes of images, K logits, C, H, W)`."""
    a = np.asarray(result["abs_sums"])
    return np.stack([a[k, k] for k in range(a.shape[0])])


@needs_sandbox
@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_of_model_is_one_handle(kind, workspace, uploads):
    """One model handle (issue 31): `cache.ref` reads the key's kind once; the handle's card
    names the model's classes, and `run` answers a job (here for a trusted model, in the
    sandboxed worker for an upload) with the model's own autograd gradients."""
    from dashboard import sources

    _, f, model = page_of(kind, "explore", workspace, uploads)
    ref = cache.ref(model)
    assert ref.key == model and ref.trusted == (kind in ("registry", "workspace", "imagenet"))
    assert ref.stored == (kind == "registry")  # only a bundled model's answers ship with it
    k = len(ref.info.class_names)
    assert k == {"workspace": 5, "imagenet": 1000}.get(kind, 10)
    if kind == "imagenet":  # a photo, prepared as the workspace prepares it
        from PIL import Image

        src = sources.source(sources.PHOTOS)
        assert src.models() == sources.photo_models() and model in src.models()
        x = src.prepare(Image.open(io.BytesIO(photo())))[None]
        classes = [0, 281, 999]
    else:
        dataset = model if kind == "workspace" else "mnist"
        x = np.asarray(sources.source(dataset).image(2), np.float32)[None]
        classes = list(range(k))
    options = {"classes": classes} if kind == "imagenet" else {}
    got = ref.run("class_maps", x, method="gradient", score="logit", absolute=False, **options)
    np.testing.assert_allclose(got, autograd(f, x, classes), rtol=1e-4, atol=1e-5)
    if ref.trusted:
        assert ref.module() is cache.model(model)
    else:
        with pytest.raises(TypeError, match="sandboxed worker"):
            ref.module()
