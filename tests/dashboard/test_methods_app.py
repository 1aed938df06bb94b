"""The field's methods in the dashboard (issue 32): Explore's picker lists every method of the
library's registry, grouped by family; a layer map names its layer (automatic, or the one
chosen) and shows the library's own map; a method that can't explain the model says why, and
the page goes on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_dashboard import run_app, texts

import pretrained
import saliency
import sandbox.user_models
from dashboard import cache, lru
from dashboard.views import explore


def test_the_picker_lists_every_method_grouped_by_family():
    order = list(explore.METHOD_LABELS)
    assert set(order) == set(saliency.METHOD_INFO)
    families = [saliency.method_info(m).family for m in order]
    assert families == sorted(families, key=saliency.FAMILIES.index)
    assert explore.METHOD_LABELS["grad_cam"] == "Grad-CAM · layer maps (CAM)"
    assert explore.METHOD_LABELS["gradient"] == "Vanilla gradient"  # the links' labels stay


@pytest.mark.parametrize("layer", ["", "2"])
def test_grad_cam_in_explore_is_the_librarys_at_the_named_layer(layer):
    lru.store("maps").clear()
    at = run_app(method="grad_cam", layer=layer) if layer else run_app(method="grad_cam")
    shown = texts(at)
    name = layer or "6"
    how = "chosen" if layer else "automatic"
    assert f"At layer {name} ({how}), upsampled to the image." in shown, shown[:2000]
    box = at.selectbox(key="layer")
    assert box.value == layer and "6" in box.options and "2" in box.options
    model = pretrained.load_model("mnist-cnn", device="cpu")
    x = pretrained.load_dataset("mnist", "test").images[:1]
    image = x[0].numpy()
    got = cache.class_maps("mnist-cnn", image, "grad_cam", "logit", True, None, layer)
    expected = saliency.class_maps(model, x, method="grad_cam", layer=name, absolute=True)[0, :, 0]
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-4, atol=1e-6)
    # and the map differs from the other layer's: the choice is honoured
    other = "2" if name == "6" else "6"
    theirs = saliency.class_maps(model, x, method="grad_cam", layer=other, absolute=True)[0, :, 0]
    assert not np.allclose(got, theirs.numpy(), atol=1e-3)


def test_a_layer_map_of_an_mlp_says_why_and_the_page_goes_on():
    at = run_app(model="mnist-mlp", method="grad_cam")
    warning = " ".join(w.value for w in at.warning)
    assert (
        "Grad-CAM can't explain" in warning
        and "no spatial layer: an MLP has no Grad-CAM" in warning
    )
    assert at.subheader and "says" in at.subheader[0].value  # the prediction is still there
    at.selectbox(key="method").set_value("gradient").run()
    assert not at.exception and "Grad-CAM can't" not in " ".join(w.value for w in at.warning)


@pytest.mark.parametrize("method", ["guided_backprop", "occlusion", "layer_cam"])
def test_other_families_show_the_librarys_every_class_maps(method):
    lru.store("maps").clear()
    at = run_app(method=method)
    assert not at.exception
    model = pretrained.load_model("mnist-cnn", device="cpu")
    x = pretrained.load_dataset("mnist", "test").images[:1]
    got = cache.class_maps("mnist-cnn", x[0].numpy(), method, "logit", True, None)
    with torch.no_grad() if method == "occlusion" else torch.enable_grad():
        expected = saliency.class_maps(model, x, method=method, absolute=True)[0, :, 0]
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-4, atol=1e-6)
    assert saliency.method_info(method).label in texts(at) or explore.METHOD_LABELS[
        method
    ] in texts(at)


def test_a_normalisation_in_front_of_an_mlp_is_not_a_layer_for_cam():
    mlp = pretrained.load_model("mnist-mlp", device="cpu")
    x = torch.rand(1, 1, 28, 28)
    first = saliency.layers(mlp, x)[0]
    assert first.spatial and not first.learned  # the input, normalised: no weights yet
    with pytest.raises(ValueError, match="no spatial layer: an MLP has no Grad-CAM"):
        saliency.find_layer(mlp, x)
    cnn = pretrained.load_model("mnist-cnn", device="cpu")
    assert saliency.find_layer(cnn, x).name == "6"


@pytest.mark.slow
def test_an_uploaded_models_layers_are_read_in_its_sandbox():
    """A layer map on an upload runs in its worker, like every other job: an ONNX or weights
    file keeps its modules; a TorchScript file's layers can't be hooked, and the page says so."""
    import hostile

    from sandbox import jobs, user_models

    cnn = pretrained.load_model("mnist-cnn", device="cpu")
    x = pretrained.load_dataset("mnist", "test").images[:1].numpy()
    facts = jobs.method_facts(cnn, x, method="grad_cam")
    assert facts == {"problem": "", "layer": "6", "layers": ["1", "2", "3", "4", "5", "6"]}
    if hostile.sandbox.unavailable():
        pytest.skip("no sandbox here")
    data = hostile.saved(cnn, torch.rand(2, 1, 28, 28), "trace")
    w, _ = user_models.accept_upload(data, dataset="mnist")
    try:
        said = w.call("method_facts", x, method="grad_cam")
    finally:
        w.stop()
    assert "TorchScript" in said["problem"] and said["layers"] == []
    program = sandbox.user_models.read_model(hostile.saved(cnn, torch.rand(2, 1, 28, 28), "export"))
    said = jobs.method_facts(program, x, method="grad_cam")
    assert (
        "a torch.export program keeps the model's operations but not its layers" in said["problem"]
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, architecture, methods",
    [
        ("mnist-cnn", "cnn", ("grad_cam", "score_cam", "guided_grad_cam", "occlusion", "lrp")),
        ("mnist-vit", "vit", ("attention_rollout", "gradient_rollout")),
    ],
)
def test_every_family_runs_in_an_uploads_locked_down_worker(name, architecture, methods):
    """Weights with an architecture's name keep the model's layers: in the sandboxed worker
    (locked down, so nothing may be imported there any more) each family's maps equal the
    library's on the original module."""
    import hostile

    from sandbox import safetensors_file, user_models

    if hostile.sandbox.unavailable():
        pytest.skip("no sandbox here")
    original = pretrained.load_model(name, device="cpu")
    data = safetensors_file.dumps(original.state_dict())
    w, _ = user_models.accept_upload(data, dataset="mnist", architecture=architecture)
    x = pretrained.load_dataset("mnist", "test").images[:2]
    try:
        for method in methods:
            if saliency.method_info(method).has_class:
                got = w.call("class_maps", x.numpy(), method=method, score="logit",
                             absolute=True, classes=[3, 7])  # fmt: skip
                expected = saliency.class_maps(original, x, [3, 7], method=method, absolute=True)
            else:  # one map whatever the class
                got = w.call("maps", x.numpy(), targets=np.array([3, 7]), method=method,
                             score="logit", absolute=True)  # fmt: skip
                expected = saliency.attribute(original, x, 3, method=method, absolute=True)
            np.testing.assert_allclose(got, expected.detach().numpy(), rtol=1e-4, atol=1e-6,
                                       err_msg=method)  # fmt: skip
    finally:
        w.stop()


def test_attention_rollout_on_the_bundled_vit_in_explore():
    """A class-less map (rollout) fills every class's place with its one map, equal to the
    library's; the page says the maps are all the same."""
    lru.store("maps").clear()
    at = run_app(model="mnist-vit", method="attention_rollout")
    assert "Attention rollout" in texts(at) and "nearly the same" in texts(at)
    vit = pretrained.load_model("mnist-vit", device="cpu")
    x = pretrained.load_dataset("mnist", "test").images[:1]
    got = cache.class_maps("mnist-vit", x[0].numpy(), "attention_rollout", "logit", True, None)
    expected = saliency.attribute(vit, x, 0, method="attention_rollout", absolute=True)[0, 0]
    assert got.shape == (10, 28, 28)
    for k in range(10):
        np.testing.assert_allclose(got[k], expected.detach().numpy(), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(
    "model, method, said",
    [
        ("mnist-vit", "lrp", "lrp has no rule for"),
        ("mnist-linear", "guided_backprop", "ReLU"),
    ],
)
def test_a_refusal_found_only_when_the_map_is_asked_for_is_said_too(model, method, said):
    """LRP and guided backprop learn what they can't explain only when they run: the page
    says the library's reason instead of a traceback, and switching back works."""
    at = run_app(model=model, method=method)
    warning = " ".join(w.value for w in at.warning)
    assert f"can't explain {model}" in warning and said in warning, warning
    at.selectbox(key="method").set_value("gradient").run()
    assert not at.exception and "can't explain" not in " ".join(w.value for w in at.warning)


def test_an_empty_layer_map_says_why():
    """Grad-CAM of test image 0 at mnist-cnn's layer 2 is zero everywhere (every weighted
    activation negative): the page says so instead of a black square."""
    at = run_app(method="grad_cam", layer="2")
    model = pretrained.load_model("mnist-cnn", device="cpu")
    x = pretrained.load_dataset("mnist", "test").images[:1]
    zero = not saliency.attribute(model, x, 7, method="grad_cam", layer="2").any()
    infos = " ".join(i.value for i in at.info)
    assert ("This map is zero everywhere" in infos) == bool(zero)
    assert zero  # measured: what makes this test say something


def test_a_workspace_with_weights_gets_layer_maps_in_process(tmp_path):
    """A CLI workspace whose model is weights with an architecture's name (a safetensors
    resnet18) keeps its layers: the automatic layer is its layer4, and the view's maps equal
    the library's on the module."""
    import torchvision

    from sandbox import jobs, safetensors_file
    from workspace import Preprocessing, WorkspaceConfig, load_model

    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=5).eval()
    (tmp_path / "m.safetensors").write_bytes(safetensors_file.dumps(net.state_dict()))
    weights, pre = str(tmp_path / "m.safetensors"), Preprocessing(channels=3)
    config = WorkspaceConfig(weights, str(tmp_path), architecture="resnet18", preprocessing=pre)
    model = load_model(config, 5)
    x = torch.rand(1, 3, 64, 64)
    facts = jobs.method_facts(model, x.numpy(), method="grad_cam")
    assert facts["problem"] == "" and facts["layer"].endswith("layer4"), facts
    got = jobs.class_maps(model, x.numpy(), method="grad_cam", score="logit", absolute=True)
    expected = saliency.class_maps(net, x, method="grad_cam", layer="layer4", absolute=True)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-4, atol=1e-6)


def test_a_compared_model_the_method_cant_explain_is_left_out_and_said():
    at = run_app(method="grad_cam", compare="mnist-mlp,mnist-cnn-bn")
    captions = " ".join(c.value for c in at.caption)
    assert (
        "Grad-CAM can't explain mnist-mlp" in captions and "left out of the comparison" in captions
    )
    shown = [i.caption for el in at.get("image") for i in el.proto.imgs]
    assert any(c.startswith("mnist-cnn-bn (") for c in shown), shown
    assert not any(c.startswith("mnist-mlp (") for c in shown)
