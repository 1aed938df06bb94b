"""ImageNet photos: torchvision's preprocessing and names, the offline path, and the Photos page,
which is Explore on the ImageNet workspace (issue 31): a workspace without images of its own,
the user's photo prepared as the weights' transforms do, torchvision's two classifiers, and
every method Explore has; its maps checked against independent autograd and the library."""

from __future__ import annotations

import io
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_report import assert_self_contained, deferred  # noqa: F401 - deferred is a fixture

import saliency
from dashboard import lru, sources
from dashboard.components import saliency_panel
from sandbox import kinds
from workspace import imagenet

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """A torch hub cache without weights, and no network: the offline machine, wherever run."""
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))

    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torchvision_weights_enum(), "get_state_dict", offline)
    yield tmp_path
    torch.hub.set_dir(old)


def torchvision_weights_enum():
    import torchvision

    return torchvision.models.WeightsEnum


def photo(h: int = 300, w: int = 400, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (h // 10 + 1, w // 10 + 1, 3), dtype=np.uint8)
    return Image.fromarray(np.kron(base, np.ones((10, 10, 1), np.uint8))[:h, :w])


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("name", list(imagenet.MODELS))
def test_preprocessing_is_the_weights_own_transforms(name):
    img = photo()
    x = imagenet.pixels(name, img)  # (3, 224, 224) in [0, 1]
    assert x.shape == (3, 224, 224) and 0 <= float(x.min()) and float(x.max()) <= 1
    model = imagenet.load(name, weights="random")
    expected = imagenet.MODELS[name].enum.transforms()(img)
    torch.testing.assert_close(model[0](x[None])[0], expected, atol=1e-6, rtol=0)


def test_the_workspaces_preparation_is_every_models_own():
    """The ImageNet workspace prepares a photo once for both of its models: their transforms
    agree, and a photo too long and thin to resize is refused with an ImageError."""
    from sandbox.images import ImageError

    prepare = imagenet.preparation()
    for name in imagenet.MODELS:
        for img in (photo(), photo(500, 260, seed=3)):
            np.testing.assert_array_equal(prepare(img), imagenet.pixels(name, img).numpy())
    with pytest.raises(ImageError):
        prepare(Image.new("RGB", (4000, 1)))
    weights = ("pretrained", "random")  # the keys a link may name, known without torchvision
    assert sources.PHOTO_MODEL_KEYS == {
        kinds.imagenet(n, w) for n in imagenet.MODELS for w in weights
    }


@pytest.mark.parametrize("name", list(imagenet.MODELS))
def test_categories_and_random_weights(name):
    names = imagenet.categories(name)
    assert len(names) == 1000 and names == tuple(imagenet.MODELS[name].enum.meta["categories"])
    a, b = imagenet.load(name, weights="random"), imagenet.load(name, weights="random")
    assert not a.training and not any(p.requires_grad for p in a.parameters())
    x = imagenet.pixels(name, photo())[None]
    with torch.no_grad():
        out = a(x)
        torch.testing.assert_close(out, b(x))  # seeded: the same random weights each time
    assert out.shape == (1, 1000)


def test_offline_says_how_to_get_the_weights(empty_hub):
    for download in (False, True):
        with pytest.raises(imagenet.WeightsUnavailable) as err:
            imagenet.load("resnet18", download=download)
        message = str(err.value)
        assert str(empty_hub / "checkpoints" / "resnet18-f37072fd.pth") in message
        assert "torchvision.models.resnet18(weights='DEFAULT')" in message
    assert "URLError" in message  # the download was tried, and why it failed is said
    assert not imagenet.weights_available("mobilenet_v3_small")


def test_weights_in_the_torch_cache_are_used(empty_hub):
    import torchvision

    net = torchvision.models.mobilenet_v3_small(weights=None)
    path = imagenet.weights_file("mobilenet_v3_small")
    path.parent.mkdir(parents=True)
    torch.save(net.state_dict(), path)
    assert imagenet.weights_available("mobilenet_v3_small")
    model = imagenet.load("mobilenet_v3_small", download=False)
    for (k, v), w in zip(net.state_dict().items(), model[1].state_dict().values(), strict=True):
        torch.testing.assert_close(v, w, msg=k)


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [w.value for w in at.warning]
    return "\n".join(parts + [s.value for s in at.subheader])


def panel_payload(at: AppTest) -> tuple[dict, dict]:
    (element,) = at.get("bidi_component")
    return saliency_panel.unpack(element.proto.bytes)


def photos_page() -> AppTest:
    """The navigation's Photos page: it opens Explore on the ImageNet workspace (later runs are
    Explore's, as the browser's address then is)."""
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page("page_files/photos.py").run()
    at.switch_page("page_files/explore.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def with_photo(at: AppTest, img: Image.Image) -> AppTest:
    at.file_uploader(key="ws_upload_file").set_value(("cat.png", png(img), "image/png")).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def mobilenet_on_a_photo(seed: int, method: str) -> AppTest:
    """Explore on the ImageNet workspace: its MobileNet with random weights, a photo, `method`."""
    at = photos_page()
    at.selectbox(key="model").set_value("imagenet:mobilenet_v3_small/random").run()
    at.checkbox(key="random_weights").check().run()
    with_photo(at, photo(seed=seed))
    at.selectbox(key="method").set_value(method).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_photos_is_explore_on_the_imagenet_workspace(empty_hub):
    """Offline: how to get the weights, nothing run until random ones are chosen; then the
    photo's prediction, and the panel's maps of the top classes, each the max over R, G, B of
    |∂ logit / ∂ pixel| by independent autograd; a bad file keeps the photo."""
    lru.store("maps").clear()
    at = photos_page()
    assert at.session_state["dataset"] == sources.PHOTOS == "photos:imagenet"
    assert at.session_state["model"] == "imagenet:resnet18/random"
    assert at.selectbox(key="model").options == [
        "ResNet-18 (random weights)",
        "MobileNetV3-Small (random weights)",
    ]
    assert "weights are not in the torch cache" in at.warning[0].value
    assert "torchvision.models.resnet18(weights='DEFAULT')" in at.warning[0].value
    assert not at.get("file_uploader")  # nothing to run yet; the rest of the app is fine
    at.button(key="weights_download").click().run()  # offline: the download fails, and says why
    assert any("Download failed:" in c.value and "URLError" in c.value for c in at.caption)
    at.selectbox(key="model").set_value("imagenet:mobilenet_v3_small/random").run()
    assert "MobileNetV3-Small weights are not in the torch cache" in at.warning[0].value
    at.selectbox(key="model").set_value("imagenet:resnet18/random").run()  # MobileNet: ~flat
    at.checkbox(key="random_weights").check().run()
    assert "No image yet" in at.info[0].value
    assert "short side resized to 256" in at.get("file_uploader")[0].label

    img = photo(seed=1)
    with_photo(at, img)
    model = imagenet.load("resnet18", weights="random")
    names = imagenet.categories("resnet18")
    x = imagenet.pixels("resnet18", img)
    with torch.no_grad():
        probs = model(x[None]).softmax(1)[0]
    top = probs.argsort(descending=True)[:10].tolist()
    assert f"says **{top[0]} · {names[top[0]]}** ({float(probs[top[0]]):.1%})" in texts(at)
    assert at.subheader[0].value.startswith("ResNet-18 says **")  # the card's title
    assert "model ResNet-18 (random weights)." in texts(at)
    data, arrays = panel_payload(at)
    assert data["classes"] == sorted(top) and data["target"] == top[0]
    assert arrays["maps"].shape == (10, 224, 224) and data["sign"] == "absolute"
    grads = {}
    for row, k in enumerate(data["classes"][:3]):
        xr = x[None].clone().requires_grad_()
        (grads[k],) = torch.autograd.grad(model(xr)[0, k], xr)
        want = grads[k][0].abs().amax(0)  # max |g| over R, G, B (Simonyan)
        torch.testing.assert_close(torch.from_numpy(arrays["maps"][row].copy()), want)
    at.radio(key="sign").set_value("signed").run()  # signed: the sum over the channels
    data, arrays = panel_payload(at)
    for row, k in enumerate(data["classes"][:3]):
        want = grads[k][0].sum(0)
        torch.testing.assert_close(torch.from_numpy(arrays["maps"][row].copy()), want)

    assert at.session_state["source"] == "upload"  # the link and the exports say so
    # A file that is not an image: a message, and the photo stays.
    at.file_uploader(key="ws_upload_file").set_value(("n.txt", b"not a photo", "text/plain"))
    at.run()
    assert not at.exception
    assert "n.txt: This file is not" in at.error[0].value
    assert f"says **{top[0]} · {names[top[0]]}**" in texts(at)

    # Back on MNIST, the chooser opens on its test images again.
    at.selectbox(key="dataset").set_value("mnist").run()
    assert not at.exception and at.session_state["source"] == "test"
    assert at.number_input(key="index").value == 0


def test_grad_cam_on_a_photo_is_the_librarys_at_the_named_layer(empty_hub):
    lru.store("maps").clear()
    img = photo(seed=2)
    at = photos_page()
    at.checkbox(key="random_weights").check().run()
    with_photo(at, img)
    at.selectbox(key="method").set_value("grad_cam").run()
    assert not at.exception, [e.value for e in at.exception]
    shown = texts(at)
    assert "**Showing** Grad-CAM · layer maps (CAM) of logit[" in shown, shown
    assert "At layer 1.layer4 (automatic), upsampled to the image." in shown
    box = at.selectbox(key="layer")
    assert box.value == "" and box.options[0] == "automatic: 1.layer4"
    assert "1.layer3" in box.options

    model = imagenet.load("resnet18", weights="random")
    x = imagenet.pixels("resnet18", img)[None]
    data, arrays = panel_payload(at)
    row = data["classes"].index(data["target"])
    cam = saliency.cam_map(model, x, data["target"], layer="1.layer4")
    assert cam.layer_map.shape == (1, 7, 7)
    got = arrays["maps"][row]
    np.testing.assert_allclose(got, cam.map[0].numpy(), rtol=1e-4, atol=1e-7 * cam.map.max())

    at.selectbox(key="layer").set_value("1.layer3").run()
    assert not at.exception, [e.value for e in at.exception]
    assert "At layer 1.layer3 (chosen), upsampled to the image." in texts(at)
    data, arrays = panel_payload(at)
    cam3 = saliency.cam_map(model, x, data["target"], layer="1.layer3")
    got3 = arrays["maps"][data["classes"].index(data["target"])]
    np.testing.assert_allclose(got3, cam3.map[0].numpy(), rtol=1e-4, atol=1e-7 * cam3.map.max())
    assert not np.allclose(got3, got, atol=1e-3 * got.max())  # the choice is honoured


def test_a_method_that_cant_explain_the_photo_model_says_why(empty_hub):
    at = mobilenet_on_a_photo(3, "lrp")
    model = imagenet.load("mobilenet_v3_small", weights="random")
    with pytest.raises(ValueError) as err:
        saliency.attribute(model, torch.rand(1, 3, 224, 224), 0, method="lrp")
    assert "lrp has no rule for Hardswish" in str(err.value)
    (warning,) = [w.value for w in at.warning if "can't explain" in w.value]
    assert warning.startswith("**LRP can't explain MobileNetV3-Small:**")
    assert "lrp has no rule for" in warning
    assert "says **" in at.subheader[0].value  # the prediction is still there


@pytest.mark.parametrize("page", ["mistakes", "dataset", "bench"])
def test_views_of_a_whole_data_set_say_the_photos_workspace_has_no_images(empty_hub, page):
    at = photos_page()
    at.switch_page(f"page_files/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["dataset"] == sources.PHOTOS
    assert "**Photos (ImageNet)** has no images of its own" in at.info[0].value


def test_an_expensive_method_on_a_photo_computes_the_classes_compared_only(empty_hub):
    """SmoothGrad's 50 passes per class on a 224 × 224 photo: the maps of the class explained
    and of the contrast's other class only (not the top 10), said in the grid's note."""
    from dashboard.views import explore_explained

    image = np.zeros((3, 224, 224), np.float32)
    assert explore_explained.few_maps("smoothgrad", image)
    assert not explore_explained.few_maps("gradient", image)
    assert not explore_explained.few_maps("smoothgrad", np.zeros((3, 64, 64), np.float32))
    probs = np.linspace(1, 2, 1000)
    assert explore_explained._maps_shown(probs, 7, 999, None, few=True) == ((7, 999), [7, 999])

    at = mobilenet_on_a_photo(4, "smoothgrad")
    data, arrays = panel_payload(at)
    assert data["classes"] == sorted({data["target"], data["contrast_versus"]})
    assert arrays["maps"].shape == (2, 224, 224) and (arrays["maps"] >= 0).all()
    assert data["grid_title"] == "The classes compared"
    assert "takes seconds of the server per class" in data["grid_note"]


def test_an_expensive_photo_map_waits_its_turn_or_is_refused_with_a_message(empty_hub, monkeypatch):
    """The page's own expensive maps on a large image take a turn of the server's queue, as
    the explore route's do: when the queue is full the page says so and keeps running."""
    from contextlib import contextmanager

    from dashboard.rate_limits import Refused
    from dashboard.views import explore

    asked = []

    class Full:
        @contextmanager
        def turn(self, method):
            asked.append(method)
            if method is not None:
                raise Refused("The server is busy with other maps: try again shortly.", 5, 503)
            yield

    monkeypatch.setattr(explore, "EXPENSIVE", Full())
    at = photos_page()
    at.checkbox(key="random_weights").check().run()
    with_photo(at, photo(seed=5))
    assert asked[-1] is None and at.get("bidi_component")  # the gradient: no turn needed
    at.selectbox(key="method").set_value("smoothgrad").run()
    assert not at.exception, [e.value for e in at.exception]
    assert asked[-1] == "smoothgrad"
    assert any("The server is busy with other maps" in w.value for w in at.warning)
    assert not at.get("bidi_component")  # no map drawn, and nothing else lost:
    assert at.subheader[0].value.startswith("ResNet-18 says **")


def test_the_report_of_a_photo_holds_its_model_and_maps(empty_hub, deferred):  # noqa: F811
    """Explore's "Download report" on the ImageNet workspace: the classifier's card (its title,
    random weights, no accuracy), the photo's settings and its maps, as for any model."""
    from saliency.report import read_report

    at = photos_page()
    at.checkbox(key="random_weights").check().run()
    with_photo(at, photo(seed=6))
    at.run()  # the panel's wait is 0 in tests: the server's own buttons are drawn
    buttons = {b.proto.label: b for b in at.get("download_button")}
    html = deferred[buttons["📄 Download report"].proto.deferred_file_id]().decode("utf-8")
    assert_self_contained(html)
    back = read_report(html)
    assert back["settings"]["settings"]["dataset"] == "photos:imagenet"
    assert back["settings"]["settings"]["model"] == "imagenet:resnet18/random"
    assert "ResNet-18 (random weights)" in html and "weights: random (no accuracy)" in html
    assert "weights sha256" not in html  # random weights: none to name
