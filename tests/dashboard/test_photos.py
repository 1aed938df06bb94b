"""ImageNet photos: torchvision's preprocessing and names, the offline path, maps, the page."""

from __future__ import annotations

import io
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

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


@pytest.mark.parametrize("method", ["gradient", "smoothgrad"])
def test_photo_map_is_max_abs_gradient_over_channels(method):
    from dashboard import cache

    name = "mobilenet_v3_small"
    x = imagenet.pixels(name, photo())
    model = imagenet.load(name, weights="random")
    with torch.no_grad():
        k = int(model(x[None]).argsort(1, descending=True)[0, 2])  # the third-ranked class
    got = cache.photo_map(kinds.imagenet(name, "random"), x.numpy(), k, method, "max")
    assert got.shape == (224, 224)
    if method == "gradient":  # independently: one class's logit, autograd, max |g| over RGB
        xr = x[None].clone().requires_grad_()
        (g,) = torch.autograd.grad(model(xr)[0, k], xr)
        torch.testing.assert_close(torch.from_numpy(got), g[0].abs().amax(0))
        summed = cache.photo_map(kinds.imagenet(name, "random"), x.numpy(), k, method, "sum")
        torch.testing.assert_close(torch.from_numpy(summed), g[0].sum(0))
    else:
        assert (got >= 0).all() and got.max() > 0


def test_photos_page_offline_random_weights_and_top5(empty_hub):
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page("page_files/photos.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert "weights are not in the torch cache" in at.warning[0].value
    assert "torchvision.models.resnet18(weights='DEFAULT')" in at.warning[0].value
    assert not at.get("file_uploader")  # nothing to run yet; the rest of the app is fine
    at.radio(key="ph_model").set_value("mobilenet_v3_small").run()
    assert "MobileNetV3-Small weights are not in the torch cache" in at.warning[0].value
    at.radio(key="ph_model").set_value("resnet18").run()  # random MobileNet outputs are ~flat
    at.checkbox(key="ph_random").check().run()
    assert "No photo yet" in at.info[0].value

    img = photo(seed=1)
    at.file_uploader(key="ph_file").set_value(("cat.png", png(img), "image/png")).run()
    assert not at.exception, [e.value for e in at.exception]
    model = imagenet.load("resnet18", weights="random")
    names = imagenet.categories("resnet18")
    with torch.no_grad():
        probs = model(imagenet.pixels("resnet18", img)[None]).softmax(1)[0]
    top5 = probs.argsort(descending=True)[:5].tolist()
    assert f"(random weights) says **{names[top5[0]]}**" in at.subheader[0].value
    assert at.radio(key="ph_class").options == [f"{names[k]} ({float(probs[k]):.1%})" for k in top5]
    captions = lambda: [i.caption for el in at.get("image") for i in el.proto.imgs]  # noqa: E731
    assert f"Map: {names[top5[0]]}" in captions()
    at.radio(key="ph_class").set_value(3).run()
    assert f"Map: {names[top5[3]]}" in captions()
    at.radio(key="ph_reduce").set_value("sum").run()
    page = "\n".join(m.value for m in at.markdown)
    assert "sum of g over R, G, B (signed)" in page and f"logit[{names[top5[3]]}]" in page
    assert "signed (diverging colours" in "\n".join(c.value for c in at.caption)

    # A file that is not an image: a message, and the photo stays.
    at.file_uploader(key="ph_file").set_value(("notes.txt", b"not a photo", "text/plain")).run()
    assert not at.exception
    assert "notes.txt: This file is not" in at.error[0].value
    assert f"Map: {names[top5[3]]}" in captions()
