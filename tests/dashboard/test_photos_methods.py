"""The Photos page with the field's methods (issue 32): Explore's methods and labels, a layer map
at its automatic layer, named on screen (resnet18's layer4), or at a layer chosen in the Layer
picker; the map is the library's; a method that can't explain the model says the library's
reason. Random weights, offline, as `test_photos.py`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_photos import empty_hub, photo, png  # noqa: F401 - empty_hub is a fixture

import saliency
from dashboard import cache, lru
from dashboard.views import explore, photos
from sandbox import kinds
from workspace import imagenet

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [w.value for w in at.warning]
    parts += [img.caption for el in at.get("image") for img in el.proto.imgs]
    return "\n".join(parts)


def photos_page(img) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page("page_files/photos.py").run()
    at.checkbox(key="ph_random").check().run()
    at.file_uploader(key="ph_file").set_value(("cat.png", png(img), "image/png")).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_the_methods_are_explores_less_what_photos_cant_run_as_labelled():
    assert photos.METHOD_LABELS["grad_cam"] == explore.METHOD_LABELS["grad_cam"]
    assert photos.METHOD_LABELS["lrp"] == explore.METHOD_LABELS["lrp"]
    assert photos.METHOD_LABELS["smoothgrad"] == "SmoothGrad (10 noisy copies, σ = 0.15)"
    families = {saliency.method_info(m).family for m in photos.METHOD_LABELS}
    assert families == set(saliency.FAMILIES) - {"transformer"}
    shown = list(photos.METHOD_LABELS)
    assert shown == [m for m in explore.METHOD_LABELS if m in shown]  # in Explore's order


def test_grad_cam_on_a_photo_is_the_librarys_at_the_named_layer(empty_hub):  # noqa: F811
    lru.store("maps").clear()
    img = photo(seed=2)
    at = photos_page(img)
    at.selectbox(key="ph_method").set_value("grad_cam").run()
    assert not at.exception, [e.value for e in at.exception]
    shown = texts(at)
    assert "**Showing** Grad-CAM · layer maps (CAM) of logit[" in shown, shown
    assert "At layer 1.layer4 (automatic), upsampled to the photo." in shown
    box = at.selectbox(key="ph_layer")
    assert box.value == "" and box.options[0] == "automatic: 1.layer4"
    assert "1.layer3" in box.options and "1.layer4" in box.options
    assert at.radio(key="ph_reduce").disabled  # one map for the whole photo

    model = imagenet.load("resnet18", weights="random")
    x = imagenet.pixels("resnet18", img)
    with torch.no_grad():
        top1 = int(model(x[None]).argmax())
    assert f"Map: {imagenet.categories('resnet18')[top1]}" in shown
    # What the page computed (the cache was emptied first), against the library's cam_map.
    key = kinds.imagenet("resnet18", "random")
    got = cache.photo_map(key, x.numpy(), top1, "grad_cam", "mean", "")
    cam = saliency.cam_map(model, x[None], top1, layer="1.layer4")
    assert cam.layer == "1.layer4" and cam.layer_map.shape == (1, 7, 7)
    np.testing.assert_allclose(got, cam.map[0].numpy(), rtol=1e-4, atol=1e-7 * cam.map.max())
    assert got.shape == (224, 224) and got.max() > 0

    at.selectbox(key="ph_layer").set_value("1.layer3").run()
    assert not at.exception, [e.value for e in at.exception]
    assert "At layer 1.layer3 (chosen), upsampled to the photo." in texts(at)
    got3 = cache.photo_map(key, x.numpy(), top1, "grad_cam", "mean", "1.layer3")
    cam3 = saliency.cam_map(model, x[None], top1, layer="1.layer3")
    assert cam3.layer_map.shape == (1, 14, 14)
    np.testing.assert_allclose(got3, cam3.map[0].numpy(), rtol=1e-4, atol=1e-7 * cam3.map.max())
    assert not np.allclose(got3, got, atol=1e-3 * got.max())  # the choice is honoured


def test_a_method_that_cant_explain_the_photo_model_says_why(empty_hub):  # noqa: F811
    at = photos_page(photo(seed=3))
    at.radio(key="ph_model").set_value("mobilenet_v3_small").run()
    at.checkbox(key="ph_random").check().run()
    at.selectbox(key="ph_method").set_value("lrp").run()
    assert not at.exception, [e.value for e in at.exception]
    model = imagenet.load("mobilenet_v3_small", weights="random")
    with pytest.raises(ValueError) as err:
        saliency.attribute(model, torch.rand(1, 3, 224, 224), 0, method="lrp")
    assert "lrp has no rule for Hardswish" in str(err.value)
    (warning,) = [w.value for w in at.warning if "can't explain" in w.value]
    assert warning.startswith("**LRP can't explain MobileNetV3-Small:** lrp has no rule for")
    assert "says **" in at.subheader[0].value  # the prediction is still there
    at.selectbox(key="ph_method").set_value("guided_backprop").run()
    assert not at.exception and not any("can't explain" in w.value for w in at.warning)
    shown = texts(at)
    assert "**Showing** Guided Backprop · pixel gradients of logit[" in shown
    assert "(channels: max |g| over R, G, B (Simonyan))" in shown
