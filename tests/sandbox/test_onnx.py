"""ONNX uploads (issue 30): converted by onnx2torch inside the sandboxed worker, their outputs
and input gradients equal to the torch original's; files that would read other files, custom
or unconvertible operators and damaged files refused, by name and in plain words."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import warnings
from pathlib import Path

import hostile
import numpy as np
import pytest
import torch
from torch import nn

import pretrained
from sandbox import gate, onnx_models, user_models
from sandbox.user_models import UserModelError, accept_upload, detect_kind
from sandbox.worker import Worker

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnx2torch")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
N_TEST = 200  # MNIST test images an upload's accuracy is measured on here


@pytest.fixture(autouse=True)
def fewer_test_images(monkeypatch):
    monkeypatch.setattr(user_models, "TEST_IMAGES", N_TEST)


def exported(model: nn.Module, x: torch.Tensor, **options) -> bytes:
    """`model` as torch 2.14 exports ONNX without onnxscript: the TorchScript-based exporter
    (dynamo=False), opset 20 unless `opset_version` says, with a dynamic batch axis."""
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x,),
            buf,
            dynamo=False,
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
            **options,
        )
    return buf.getvalue()


def small_cnn(channels: int = 1, side: int = 28, classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(channels, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(7),
        nn.Flatten(),
        nn.Linear(8 * 49, classes),
    ).eval()


def gradient(model: nn.Module, x: torch.Tensor, targets: np.ndarray) -> np.ndarray:
    """d logit_target / dx of each example, by autograd on the torch original."""
    x = x.detach().clone().requires_grad_()
    scores = model(x)[torch.arange(len(x)), torch.as_tensor(targets)]
    (g,) = torch.autograd.grad(scores.sum(), x)
    return g.numpy()


def graph_model(nodes, inputs, outputs, weights=(), *, opset=17, domains=()) -> bytes:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(weights))
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    return helper.make_model(graph, opset_imports=opsets).SerializeToString()


def image_in(name: str = "x"):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 1, 28, 28])


def scores_out(name: str = "y"):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 10])


def refusal(data: bytes) -> str:
    """What the Your model page's check says of `data` (MNIST form), read in the sandbox."""
    with pytest.raises(UserModelError) as err:
        worker, _ = accept_upload(data, dataset="mnist", filename="m.onnx")
        worker.stop()
    return str(err.value)


# --- accepted: the outputs and gradients of the original -----------------------------------


@hostile.needs_sandbox
@pytest.mark.parametrize("opset", [17, None], ids=["opset17", "opset20"])
def test_an_onnx_cnn_is_accepted_and_equals_the_original(opset):
    original = small_cnn()
    data = exported(
        original, torch.rand(2, 1, 28, 28), **({"opset_version": opset} if opset else {})
    )
    assert detect_kind(data) == "onnx"
    worker, info = accept_upload(data, dataset="mnist", filename="cnn.onnx")
    try:
        test = pretrained.load_dataset("mnist", "test")
        x = test.images[:N_TEST]
        with torch.no_grad():
            expected = original(x)
        assert info.kind == "onnx" and info.n_test == N_TEST
        assert info.description == "Your upload cnn.onnx: ONNX model, trained for mnist."
        right = int((expected.argmax(1) == test.labels[:N_TEST]).sum())
        assert info.test_accuracy == right / N_TEST
        bn = original[1].weight.numel() + original[1].bias.numel()  # folded into the Conv
        assert info.n_params == sum(p.numel() for p in original.parameters()) - bn
        logits = worker.call("logits", x[:16].numpy())
        np.testing.assert_allclose(logits, expected[:16].numpy(), atol=1e-4, rtol=0)
        targets = np.arange(8) % 10
        maps = worker.call(
            "maps", x[:8].numpy(), targets=targets, method="gradient", score="logit",
            absolute=False,
        )  # fmt: skip
        reference = gradient(original, x[:8], targets)
        assert np.abs(reference).max() > 1e-3  # a gradient worth comparing
        np.testing.assert_allclose(maps, reference, atol=1e-4, rtol=0)
    finally:
        worker.stop()


@hostile.needs_sandbox
def test_an_onnx_resnet18_on_your_own_images_equals_the_original():
    """torchvision's resnet18 (random weights, 3 x 64 x 64), exported as torch 2.14 does by
    default (opset 20, every zero bias shared behind an Identity), read in the sandbox as a
    workspace upload reads it."""
    import torchvision

    torch.manual_seed(0)
    original = torchvision.models.resnet18(num_classes=10).eval()
    data = exported(original, torch.rand(2, 3, 64, 64))
    pre = {"channels": 3, "mean": [0.0], "std": [1.0]}
    x = torch.rand(5, 3, 64, 64)
    worker = Worker(
        data, {"kind": "auto", "preprocessing": pre}, example=x[:1].numpy(), n_classes=10
    )
    try:
        facts = worker.start()
        assert facts["shape"] == [1, 10]
        # What the converted module calls, as the dispatcher names it: all on the allowlist.
        assert {"aten::convolution", "aten::addmm", "aten::mean.dim"} <= set(facts["ops"])
        assert all(gate.base_name(op) in gate.ALLOWED_OPS for op in facts["ops"]), facts["ops"]
        with torch.no_grad():
            expected = original(x).numpy()
        np.testing.assert_allclose(worker.call("logits", x.numpy()), expected, atol=1e-4, rtol=0)
        targets = np.array([0, 3, 5, 7, 9])
        maps = worker.call(
            "maps", x.numpy(), targets=targets, method="gradient", score="logit", absolute=False
        )
        reference = gradient(original, x, targets)
        assert maps.shape == (5, 3, 64, 64) and np.abs(reference).max() > 1e-3
        np.testing.assert_allclose(maps, reference, atol=1e-4, rtol=0)
    finally:
        worker.stop()


@hostile.needs_sandbox
def test_the_server_process_never_imports_onnx(tmp_path):
    """Detecting the kind, starting the worker and asking it for scores: onnx and onnx2torch
    are imported by the worker's fork server, never by the server's own process."""
    path = tmp_path / "cnn.onnx"
    path.write_bytes(exported(small_cnn(), torch.rand(2, 1, 28, 28)))
    script = f"""
import json, sys
from sandbox import user_models
user_models.TEST_IMAGES = 20
data = open({str(path)!r}, "rb").read()
worker, info = user_models.accept_upload(data, dataset="mnist")
worker.stop()
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("onnx", "onnx2torch"))
print(json.dumps({{"kind": info.kind, "n_test": info.n_test, "loaded": loaded}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    said = json.loads(out.stdout.strip().splitlines()[-1])
    assert said == {"kind": "onnx", "n_test": 20, "loaded": []}


# --- the converted module's operators, held to the gate's allowlist -------------------------


@pytest.mark.parametrize("opset", [17, None], ids=["opset17", "opset20"])
def test_the_operators_listed_are_the_converted_modules_all_on_the_allowlist(opset):
    data = exported(
        small_cnn(), torch.rand(2, 1, 28, 28), **({"opset_version": opset} if opset else {})
    )
    _, ops = onnx_models.read_onnx(data)
    # BatchNorm folded into the Conv; Gemm as addmm of the transposed weights; Flatten a view.
    assert ops == {"aten::convolution", "aten::relu", "aten::max_pool2d_with_indices",
                   "aten::avg_pool2d", "aten::view", "aten::t", "aten::addmm"}  # fmt: skip
    assert all(gate.base_name(op) in gate.ALLOWED_OPS for op in ops)


def test_an_operator_off_the_allowlist_refuses_the_converted_model(monkeypatch):
    data = exported(small_cnn(), torch.rand(2, 1, 28, 28))
    monkeypatch.setattr(gate, "ALLOWED_OPS", gate.ALLOWED_OPS - {"aten::relu"})
    with pytest.raises(UserModelError) as err:
        onnx_models.read_onnx(data)
    assert str(err.value) == (
        "Refused: this model calls aten::relu, which is not on this server's list of pure tensor "
        "operators. This ONNX model's operators call it once onnx2torch converts them."
    )
    module, ops = onnx_models.read_onnx(data, check=False)  # listed, not checked
    assert "aten::relu" in ops and module(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_a_shufflenet_needs_lift_fresh_which_the_onnx_corpus_added():
    """onnx2torch's Shape returns a tensor's sizes as `torch.tensor(...)`, which the dispatcher
    sees as aten::lift_fresh (an alias of its input: `lift_fresh(x) is x`): no traced, scripted
    or exported model calls it, so the corpus's ONNX form put it on the list."""
    import torchvision

    torch.manual_seed(0)
    original = torchvision.models.shufflenet_v2_x0_5(num_classes=10).eval()
    _, ops = onnx_models.read_onnx(exported(original, torch.rand(2, 3, 64, 64)))
    assert "aten::lift_fresh" in ops and "aten::lift_fresh" in gate.ALLOWED_OPS
    made = json.loads(gate.ALLOWLIST_FILE.read_text())["made"]["onnx"]
    assert (
        made["made"] >= 20
        and "aten::lift_fresh" in json.loads(gate.ALLOWLIST_FILE.read_text())["operators"]
    )
    x = torch.zeros(1, 3, 8, 8)
    assert torch.ops.aten.lift_fresh(x) is x


def test_the_run_that_lists_the_operators_has_the_declared_shape():
    w = numpy_helper.from_array(np.ones((10, 3), np.float32), "w")
    pool = helper.make_node("GlobalAveragePool", ["x"], ["p"])
    flat = helper.make_node("Flatten", ["p"], ["f"])
    gemm = helper.make_node("Gemm", ["f", "w"], ["y"], transB=1)
    sizes = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "c", "h", 64])
    model = onnx.load_from_string(graph_model([pool, flat, gemm], [sizes], [scores_out()], [w]))
    assert onnx_models.input_shape(model) == (1, 3, onnx_models.STAND_IN, 64)
    huge = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8192, 8192])
    with pytest.raises(UserModelError, match=r"input \(1, 3, 8192, 8192\) has 201,326,592 "):
        onnx_models.read_onnx(graph_model([pool, flat, gemm], [huge], [scores_out()], [w]))
    two = [image_in("x"), image_in("x2")]
    with pytest.raises(UserModelError, match=r"takes 2 inputs \('x', 'x2'\); an image"):
        onnx_models.read_onnx(graph_model([pool, flat, gemm], two, [scores_out()], [w]))
    # A model that can't run on its own declared shape: said so, with the shape.
    wrong = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 5, 8, 8])
    with pytest.raises(UserModelError, match=r"does not run on an input of the shape it "
                       r"declares, \(1, 5, 8, 8\)"):  # fmt: skip
        onnx_models.read_onnx(graph_model([pool, flat, gemm], [wrong], [scores_out()], [w]))


# --- refused, in plain words -----------------------------------------------------------------


@hostile.needs_sandbox
def test_an_onnx_file_with_external_data_is_refused(tmp_path):
    model = onnx.load_from_string(exported(small_cnn(), torch.rand(2, 1, 28, 28)))
    onnx.save_model(
        model,
        str(tmp_path / "m.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    data = (tmp_path / "m.onnx").read_bytes()
    assert detect_kind(data) == "onnx"
    said = refusal(data)
    assert said.startswith(
        "Refused: this ONNX file keeps its weights in another file ('weights.bin')"
    )
    assert "save_as_external_data=False" in said


@hostile.needs_sandbox
def test_an_onnx_operator_that_cant_be_converted_is_named():
    w = numpy_helper.from_array(np.ones((10, 784), np.float32), "w")
    flat = helper.make_node("Flatten", ["x"], ["f"])
    gemm = helper.make_node("Gemm", ["f", "w"], ["s"], transB=1)
    # Hardmax is a standard operator onnx2torch has no converter for.
    data = graph_model([flat, gemm, helper.make_node("Hardmax", ["s"], ["y"])],
                       [image_in()], [scores_out()], [w])  # fmt: skip
    assert refusal(data).startswith(
        "This model uses the ONNX operator Hardmax, which can't be converted to PyTorch here"
    )
    # An operator of a custom domain: code this server doesn't have.
    evil = helper.make_node("ReadFile", ["s"], ["y"], domain="com.example")
    data = graph_model([flat, gemm, evil], [image_in()], [scores_out()], [w],
                       domains=["com.example"])  # fmt: skip
    assert refusal(data).startswith(
        "Refused: this model uses the custom ONNX operator ReadFile (domain 'com.example'), "
        "which can't be converted"
    )
    # A converter that fails on this use of its operator: named too (a Conv whose weights
    # are computed, not stored, which onnx2torch can't convert).
    conv = helper.make_node("Conv", ["x", "x2"], ["c"])
    square = helper.make_node("Mul", ["x", "x"], ["x2"])
    data = graph_model([square, conv], [image_in()], [scores_out("c")])
    assert refusal(data).startswith("This model uses the ONNX operator Conv, which can't be")


@hostile.needs_sandbox
def test_damaged_onnx_files_are_refused_with_a_clear_message():
    data = exported(small_cnn(), torch.rand(2, 1, 28, 28))
    # Cut short: seen from its outer fields alone, in the server.
    with pytest.raises(UserModelError, match="This looks like an ONNX file cut short"):
        detect_kind(data[: len(data) // 2])
    # Whole outer fields around a damaged graph: protobuf refuses it in the worker.
    rng = np.random.default_rng(1)
    graph = bytes(rng.integers(0, 256, 4000, dtype=np.uint8))
    damaged = b"\x08\x08\x3a" + bytes([0x80 | (len(graph) & 0x7F), len(graph) >> 7]) + graph
    assert detect_kind(damaged) == "onnx"
    said = refusal(damaged)
    assert said.startswith(("This is not a readable ONNX file", "This ONNX file is malformed"))
    # Bytes of no format at all.
    with pytest.raises(UserModelError, match=r"not a PyTorch model: .* or an ONNX file"):
        detect_kind(bytes(rng.integers(0, 256, 1000, dtype=np.uint8)))


def test_an_onnx_file_over_the_servers_limit_is_refused_before_it_is_parsed(monkeypatch):
    monkeypatch.setattr(onnx_models, "MAX_MODEL_BYTES", 2**20)
    with pytest.raises(UserModelError, match=r"The ONNX file has 1.5 MB, more than 1 MB, the most "
                       r"this server reads.*python -m workspace.index"):  # fmt: skip
        onnx_models.read_onnx(b"\x08\x08" + bytes(3 * 2**19))


def test_without_onnx2torch_the_message_says_what_to_install(monkeypatch):
    data = exported(small_cnn(), torch.rand(2, 1, 28, 28))
    monkeypatch.setitem(sys.modules, "onnx2torch", None)  # an import of it fails
    with pytest.raises(UserModelError) as err:
        user_models.read_model(data, dataset="mnist")
    assert str(err.value) == onnx_models.INSTALL
    assert "pip install 'onnx==" in str(err.value)


@hostile.needs_sandbox
def test_the_your_model_page_accepts_an_onnx_file():
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    original = pretrained.load_model("mnist-cnn")
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=180)
    at.run()
    at.switch_page("page_files/your_model.py").run()
    data = exported(original, torch.rand(2, 1, 28, 28))
    at.file_uploader(key="um_file").set_value(("mnist-cnn.onnx", data, "application/octet-stream"))
    at.button(key="um_submit").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, at.error[0].value
    with torch.no_grad():
        right = original(pretrained.load_dataset("mnist", "test").images[:N_TEST]).argmax(1)
    labels = pretrained.load_dataset("mnist", "test").labels[:N_TEST]
    accuracy = float((right == labels).float().mean())
    assert at.success[0].value.startswith(
        f"Accepted **mnist-cnn.onnx** (onnx): {accuracy:.2%} on {N_TEST} mnist test images"
    )
    assert any(o.startswith("mnist-cnn.onnx (") for o in at.selectbox(key="model").options)


def test_the_command_line_index_reads_an_onnx_model(tmp_path):
    from PIL import Image

    from workspace import index

    original = small_cnn(channels=3, classes=2)
    (tmp_path / "m.onnx").write_bytes(exported(original, torch.rand(2, 3, 28, 28)))
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (6, 28, 28, 3), dtype=np.uint8)
    for i, image in enumerate(pixels):
        folder = tmp_path / "data" / "ab"[i % 2]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i}.png")
    argv = ["--model", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "data"), "--rgb"]
    assert index.main([*argv, "--out", str(tmp_path / "W"), "--quiet"]) == 0
    lines = (tmp_path / "W" / "predictions.csv").read_text().splitlines()[1:]
    said = {ln.split(",")[0]: float(ln.split(",")[3]) for ln in lines}  # p_predicted
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        p = original(x).softmax(1).max(1).values
    expected = {f"{'ab'[i % 2]}/{i}.png": float(p[i]) for i in range(6)}
    assert said.keys() == expected.keys()
    for path, value in expected.items():
        assert abs(said[path] - value) < 1e-4, path
