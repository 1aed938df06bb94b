"""safetensors weights plus an architecture's name (issue 30): read strictly, refused from the
header when hostile, and accepted exactly (sandboxed outputs equal the original module's)."""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile
from pathlib import Path

import hostile
import numpy as np
import pytest
import torch
import torchvision
from browser_support import proc_status, reset_peak
from workspaces import colour_images

import pretrained
from sandbox import gate, named_weights, safetensors_file, user_models
from sandbox.gate import UserModelError
from sandbox.worker import Worker
from workspace import Preprocessing
from workspace.folder_upload import build, read_zip_images

PRE = {"channels": 3, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "resize": 64, "crop": 64}


@pytest.fixture(scope="module")
def resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=10).eval()


@pytest.fixture(scope="module")
def resnet_file(resnet) -> bytes:
    return safetensors_file.dumps(resnet.state_dict())


def header_file(header: dict | bytes, body: bytes = b"", length: int | None = None) -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + body


# --- the reader ---------------------------------------------------------------------------------


def test_every_dtype_reads_back_exactly_and_the_layout_is_the_formats():
    state = {
        "f32": torch.randn(3, 4),
        "f64": torch.randn(2, dtype=torch.float64),
        "f16": torch.randn(5).half(),
        "bf16": torch.randn(2, 3).bfloat16(),
        "i64": torch.arange(7),
        "i32": torch.arange(3, dtype=torch.int32),
        "i16": torch.arange(3, dtype=torch.int16),
        "i8": torch.tensor([-3, 4], dtype=torch.int8),
        "u8": torch.tensor([255, 0], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "empty": torch.empty(0, 3),
        "scalar": torch.tensor(2.5),
    }
    data = safetensors_file.dumps(state, metadata={"format": "pt"})
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    assert header["__metadata__"] == {"format": "pt"} and header["bf16"]["dtype"] == "BF16"
    assert len(data) == 8 + n + sum(t.numel() * t.element_size() for t in state.values())
    got = safetensors_file.read(data)
    assert set(got) == set(state)
    for name, t in state.items():
        assert got[name].dtype == t.dtype and torch.equal(got[name], t), name
    views = safetensors_file.read(data, copy=False)  # what a model is loaded from
    assert all(torch.equal(views[k], got[k]) for k in state)
    got["f32"] += 1  # each tensor is a copy: the file's bytes are unchanged
    assert torch.equal(safetensors_file.read(data)["f32"], state["f32"])


def test_the_reference_writer_and_reader_agree_when_installed():
    ref = pytest.importorskip("safetensors.torch")
    state = {"w": torch.randn(4, 3), "b": torch.arange(4), "h": torch.randn(2).bfloat16()}
    got = safetensors_file.read(ref.save(state))
    assert all(torch.equal(got[k], state[k]) for k in state)
    back = ref.load(safetensors_file.dumps(state))
    assert all(torch.equal(back[k], state[k]) for k in state)


# --- hostile files: refused from the header, nothing allocated ----------------------------------

F32 = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
HOSTILE = {
    "header longer than the file": (
        header_file({"w": F32}, bytes(16), length=10**6),
        "header claims 1,000,000 bytes, but the file holds only",
    ),
    "header beyond the bound": (
        header_file(b"{}", length=2**40),
        "header claims 1,099,511,627,776 bytes; a model's header takes a few hundred kB",
    ),
    "offsets outside the file": (
        header_file({"w": {**F32, "shape": [2**20, 2**20], "data_offsets": [0, 2**42]}}, bytes(16)),
        "lies at bytes [0, 4,398,046,511,104), outside the 16 bytes of tensor data",
    ),
    "a giant shape over a few bytes": (
        header_file({"w": {**F32, "shape": [10**6, 10**6]}}, bytes(16)),
        "declares shape (1000000, 1000000) of F32, which is 4,000,000,000,000 bytes, but its "
        "offsets hold 16",
    ),
    "overlapping tensors": (
        header_file(
            {"a": F32, "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}, bytes(24)
        ),
        "tensors 'a' and 'b' overlap in the file",
    ),
    "a dtype weights don't come in": (
        header_file({"w": {**F32, "dtype": "F8_E4M3", "shape": [16]}}, bytes(16)),
        "has dtype 'F8_E4M3', which is not a dtype of model weights read here",
    ),
    "a header that is not JSON": (
        header_file(b"{not json at all}", bytes(16)),
        "header is not JSON",
    ),
    "JSON nested a million deep": (header_file(b"{" + b"[" * 10**6), "header is not JSON"),
    "a name twice": (
        header_file(
            b'{"w": ' + json.dumps(F32).encode() + b', "w": ' + json.dumps(F32).encode() + b"}",
            bytes(16),
        ),  # fmt: skip
        "names the tensor 'w' twice",
    ),
    "a negative shape": (
        header_file({"w": {**F32, "shape": [-4, -4]}}, bytes(16)),
        "has shape [-4, -4]: expected a list of at most 8 whole numbers",
    ),
    "offsets backwards": (
        header_file({"w": {**F32, "data_offsets": [16, 0]}}, bytes(16)),
        "lies at bytes [16, 0), outside",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_safetensors_are_refused_from_the_header_without_allocating(case):
    data, message = HOSTILE[case]
    pid = os.getpid()
    reset_peak(pid)
    before = proc_status(pid, "VmHWM")
    for read in (user_models.detect_kind, safetensors_file.read, named_weights.read_weights):
        with pytest.raises(UserModelError) as err:
            read(data)
        assert message in str(err.value), str(err.value)
    grown = proc_status(pid, "VmHWM") - before
    assert grown < 16 * 2**20 + len(data), f"{case}: the peak grew {grown / 2**20:.1f} MB"


def test_the_tensors_total_is_held_to_the_gates_bound():
    data = safetensors_file.dumps({"w": torch.zeros(1024)})  # 4 KB of tensors
    with gate.max_model_bytes(2048):
        with pytest.raises(UserModelError, match="add up to 4,096 bytes, more than 0 MB"):
            safetensors_file.check(data)
    assert safetensors_file.check(data)["w"].shape == (1024,)  # the server's 250 MB


def test_a_safetensors_file_is_recognised_by_its_header_not_its_name(resnet_file):
    assert user_models.detect_kind(resnet_file) == "safetensors"
    zipped = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, zipped)
    assert user_models.detect_kind(zipped.getvalue()) == "state_dict"  # byte 8 of a ZIP isn't {
    assert zipfile.is_zipfile(io.BytesIO(zipped.getvalue()))


# --- architectures by name ----------------------------------------------------------------------


def test_the_names_are_the_registrys_and_every_torchvision_classifier():
    names = named_weights.architecture_names()
    tv = torchvision.models.list_models(module=torchvision.models)
    assert set(pretrained.ARCHITECTURES) | set(tv) <= set(names) and len(tv) >= 80


def test_the_number_of_classes_comes_from_the_weights_last_layer():
    for name, k in (("resnet18", 7), ("squeezenet1_1", 3), ("regnet_y_400mf", 12), ("cnn", 4)):
        if name == "cnn":
            state = pretrained.build_model("cnn", k).state_dict()
        else:
            state = torchvision.models.get_model(name, num_classes=k).state_dict()
        assert named_weights.num_classes_of(name, state) == k, name


def test_wrong_architecture_names_the_first_mismatched_keys(resnet_file):
    with pytest.raises(UserModelError) as err:
        named_weights.model_from_weights(resnet_file, "resnet34")
    assert str(err.value).startswith(
        "These weights do not fit the architecture 'resnet34': resnet34 has a weight "
        "'layer1.2.conv1.weight' that the file lacks (and 95 more)."
    )
    with pytest.raises(UserModelError) as err:
        named_weights.model_from_weights(resnet_file, "resnet50")
    assert "'layer1.0.conv1.weight' is 64 × 64 × 3 × 3 in the file but 64 × 64 × 1 × 1" in str(
        err.value
    )
    mlp = safetensors_file.dumps(pretrained.build_model("mlp").state_dict())
    with pytest.raises(UserModelError) as err:
        user_models.read_model(mlp, dataset="mnist", architecture="cnn")
    assert (
        "cnn has a weight '1.weight' that the file lacks (and 5 more); the file has a weight "
        "'2.bias' that cnn lacks (and 1 more); '4.weight' is 10 × 256 in the file but 64 × 32 × "
        "3 × 3 in cnn (and 1 more)"
    ) in str(err.value)


def test_an_unknown_name_says_what_is_known_and_to_install_timm(resnet_file):
    if named_weights._timm() is not None:
        pytest.skip("timm is installed here")
    with pytest.raises(UserModelError) as err:
        named_weights.model_from_weights(resnet_file, "vit_small_patch16_224")
    assert "install timm (pip install timm) to use timm architectures" in str(err.value)
    assert "resnet18" in str(err.value) and "cnn" in str(err.value)
    with pytest.raises(UserModelError, match="Weights need the name of their architecture"):
        named_weights.model_from_weights(resnet_file, None)


def test_a_timm_vit_from_safetensors_equals_the_module():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5).eval()
    net = named_weights.model_from_weights(
        safetensors_file.dumps(vit.state_dict()), "vit_tiny_patch16_224"
    )
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(net(x), vit(x), atol=1e-5, rtol=0)


# --- accepted exactly: in the sandbox, on the bundled data, on a ZIP, on the command line -------


@hostile.needs_sandbox
def test_a_torchvision_resnet18_from_safetensors_in_the_sandbox_equals_the_module(
    resnet, resnet_file
):
    x = torch.rand(4, 3, 64, 64)
    settings = {"kind": "auto", "architecture": "resnet18", "preprocessing": PRE}
    worker = Worker(resnet_file, settings, example=x[:1].numpy(), n_classes=10)
    try:
        facts = worker.start()
        assert facts["n_params"] == sum(p.numel() for p in resnet.parameters())
        assert facts["ops"] == []  # weights: no program of the user's to gate
        got = worker.call("logits", x.numpy())
        with torch.no_grad():
            want = resnet((x - 0.5) / 0.25)
        np.testing.assert_allclose(got, want.numpy(), atol=1e-5, rtol=0)
    finally:
        worker.stop()
    wrong = Worker(resnet_file, {**settings, "architecture": "resnet34"}, example=x[:1].numpy(),
                   n_classes=10)  # fmt: skip
    with pytest.raises(UserModelError, match="'layer1.2.conv1.weight' that the file lacks"):
        wrong.start()
    assert not wrong.alive


@hostile.needs_sandbox
def test_mnist_cnn_weights_as_safetensors_are_accepted_and_their_maps_are_autograds(monkeypatch):
    monkeypatch.setattr(user_models, "TEST_IMAGES", 200)
    original = pretrained.load_model("mnist-cnn", device="cpu")
    data = safetensors_file.dumps(original.state_dict())
    worker, info = user_models.accept_upload(
        data, dataset="mnist", architecture="cnn", filename="cnn.bin"
    )
    try:
        assert info.kind == "safetensors" and info.architecture == "cnn"
        test = pretrained.load_dataset("mnist", "test")
        x = test.images[:200]
        with torch.no_grad():
            right = (original(x).argmax(1) == test.labels[:200]).float().mean().item()
        assert info.test_accuracy == pytest.approx(right, abs=1e-9)
        x = x[:3].clone().requires_grad_()
        maps = worker.call("class_maps", x.detach().numpy(), method="gradient", score="logit",
                           absolute=False)  # fmt: skip
        jac = torch.autograd.functional.jacobian(lambda t: original(t).sum(0), x)  # (K, 3, …)
        np.testing.assert_allclose(maps, jac.transpose(0, 1).numpy(), atol=1e-5, rtol=1e-4)
    finally:
        worker.stop()
    with pytest.raises(UserModelError, match="resnet18 goes in the form for your own images"):
        user_models.accept_upload(data, dataset="mnist", architecture="resnet18")


@hostile.needs_sandbox
def test_a_zip_workspace_takes_a_safetensors_resnet18(tmp_path):
    folder = colour_images(tmp_path / "pics", per_class=2)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in sorted(folder.rglob("*.png")):
            z.write(p, f"pics/{p.relative_to(folder)}")
    images = read_zip_images(buf.getvalue(), Preprocessing(**{**PRE, "mean": (0.5,) * 3,
                                                              "std": (0.25,) * 3}))  # fmt: skip
    torch.manual_seed(1)
    net = torchvision.models.resnet18(weights=None, num_classes=5).eval()
    worker, built = build(safetensors_file.dumps(net.state_dict()), images, architecture="resnet18")
    try:
        with torch.no_grad():
            logits = net((torch.from_numpy(images.x) - 0.5) / 0.25)
        assert (built.predicted == logits.argmax(1).numpy()).all()
        probs = torch.softmax(logits.double(), 1).numpy()
        np.testing.assert_allclose(built.p_predicted, probs.max(1), atol=1e-5)
    finally:
        worker.stop()


def test_the_command_line_indexes_with_a_safetensors_resnet18(tmp_path):
    from workspace.index import main

    folder = colour_images(tmp_path / "pics", per_class=2)
    torch.manual_seed(2)
    net = torchvision.models.resnet18(weights=None, num_classes=5).eval()
    model = tmp_path / "resnet18.safetensors"
    model.write_bytes(safetensors_file.dumps(net.state_dict()))
    args = ["--model", str(model), "--data", str(folder), "--out", str(tmp_path / "W"),
            "--resize", "64", "--crop", "64", "--rgb", "--quiet", "--predictions-only"]  # fmt: skip
    assert main([*args, "--architecture", "resnet18"]) == 0
    rows = (tmp_path / "W" / "predictions.csv").read_text().splitlines()[1:]
    pre = Preprocessing(resize=64, crop=64, channels=3)
    from workspace import Item, read_image

    for row in rows:
        path, label, predicted = row.split(",")[:3]
        x = torch.from_numpy(read_image(folder, Item(path, int(label)), pre))[None]
        with torch.no_grad():
            assert int(predicted) == net(x).argmax(1).item(), path
    assert main([*args, "--architecture", "resnet34", "--out", str(tmp_path / "W2")]) == 2


# --- the Your model page ------------------------------------------------------------------------


@hostile.needs_sandbox
def test_the_page_takes_safetensors_on_both_forms(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(user_models, "TEST_IMAGES", 200)
    app = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")
    at = AppTest.from_file(app, default_timeout=180)
    at.run()
    at.switch_page("page_files/your_model.py").run()
    assert "resnet18" in at.selectbox(key="ws_arch").options
    # The bundled data sets' form: a registry architecture, a file named anything.
    cnn = safetensors_file.dumps(pretrained.load_model("mnist-cnn").state_dict())
    at.file_uploader(key="um_file").set_value(("cnn.bin", cnn, "application/octet-stream"))
    at.selectbox(key="um_arch").select("cnn")
    at.button(key="um_submit").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.success[0].value.startswith("Accepted **cnn.bin** (safetensors)")
    # Your own images: a torchvision architecture, picked by name; the wrong one is refused.
    folder = colour_images(tmp_path / "pics", per_class=2)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in sorted(folder.rglob("*.png")):
            z.write(p, f"pics/{p.relative_to(folder)}")
    torch.manual_seed(3)
    weights = safetensors_file.dumps(torchvision.models.resnet18(num_classes=5).state_dict())
    at.file_uploader(key="ws_model_file").set_value(("r18.safetensors", weights, "x"))
    at.file_uploader(key="ws_zip").set_value(("pics.zip", buf.getvalue(), "application/zip"))
    at.number_input(key="ws_resize").set_value(64)
    at.number_input(key="ws_crop").set_value(64)
    at.selectbox(key="ws_arch").select("resnet34")
    at.button(key="ws_submit").click().run()
    assert not at.exception
    assert "'layer1.2.conv1.weight' that the file lacks" in at.error[0].value
    at.selectbox(key="ws_arch").select("resnet18")
    at.button(key="ws_submit").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    page = "\n".join(m.value for m in at.markdown) + "\n".join(s.value for s in at.success)
    assert "Indexed **10 images** of 5 classes (3 × 64 × 64)" in page
