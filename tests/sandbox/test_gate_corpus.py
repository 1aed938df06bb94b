"""The gate's allowlist comes from a corpus (issue 30): every torchvision classifier and the
registry's architectures, traced, scripted and exported (tools/build_allowlist.py writes
sandbox/allowlist.json). Here a sample of that corpus, made each of the three ways, must pass
the gate and compute in the sandboxed worker what the original module computes in this process;
and nothing on the committed list is an operator the gate denies.
"""

from __future__ import annotations

import json

import hostile
import numpy as np
import pytest
import torch
import torchvision

from sandbox import gate, worker

SAMPLE = ["resnet18", "mobilenet_v3_small", "efficientnet_b0", "squeezenet1_0"]
SAMPLE += ["shufflenet_v2_x0_5", "regnet_y_400mf"]
FORMS = ("trace", "script", "export")
K = 10  # classes: a small head keeps the files small


def listing() -> dict:
    return json.loads(gate.ALLOWLIST_FILE.read_text(encoding="utf-8"))


def test_the_allowlist_was_built_on_the_installed_torch_and_the_whole_corpus():
    built = listing()
    again = "torch changed: rebuild the list with python tools/build_allowlist.py"
    local = (torch.__version__, torchvision.__version__)
    assert [v.split("+")[0] for v in (built["torch"], built["torchvision"])] == [
        v.split("+")[0] for v in local
    ], again
    shipped = torchvision.models.list_models(module=torchvision.models)
    assert sorted(built["corpus"]["torchvision"]) == sorted(shipped)
    assert set(SAMPLE) <= set(shipped)


def test_nothing_on_the_list_is_an_operator_the_gate_denies():
    ops = listing()["operators"]
    assert "aten::_convolution" in ops  # what every traced CNN calls
    assert [op for op in ops if gate.denied(op)] == []
    for op in ("aten::from_file", "aten::save", "prim::SetAttr", "prim::PythonOp", "aten::set_"):
        assert gate.denied(op) and op not in gate.ALLOWED_OPS
    assert gate.denied("myns::evil") == "a custom operator"
    assert gate.denied("aten::append:attribute")


@hostile.needs_sandbox
@pytest.mark.parametrize("name", SAMPLE)
def test_a_torchvision_classifier_made_three_ways_is_accepted_and_computes_the_same(name):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torchvision.models.get_model(name, weights=None, num_classes=K).eval()
        x = torch.rand(3, 3, 64, 64)
    accepted_and_the_same(name, model, x)


@hostile.needs_sandbox
@pytest.mark.parametrize("name, size", [("deit_tiny_patch16_224", 224), ("resnet18d", 64)])
def test_a_timm_classifier_made_three_ways_is_accepted_and_computes_the_same(name, size):
    timm = pytest.importorskip("timm", reason="timm is optional")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = timm.create_model(name, pretrained=False, num_classes=K).eval()
        x = torch.rand(3, 3, size, size)
    accepted_and_the_same(name, model, x)


def accepted_and_the_same(name: str, model: torch.nn.Module, x: torch.Tensor) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the worker computes, so the sums run in the same order
    try:
        with torch.no_grad():
            expected = model(x).numpy()
    finally:
        torch.set_num_threads(threads)
    limits = worker.Limits(job_seconds=30.0, load_seconds=120.0, memory_bytes=2**30, threads=1)
    settings = {"kind": "auto", "preprocessing": {"channels": 3}}
    for form in FORMS:
        data = hostile.saved(model, torch.rand(2, 3, x.shape[-1], x.shape[-1]), form)
        gate.check_archive(data)
        w = worker.Worker(data, settings, example=x[:1].numpy(), n_classes=K, limits=limits)
        try:
            facts = w.start()  # the gate runs in the sandbox, on the program as it was read
            assert facts["ops"] and all(
                gate.base_name(op) in gate.ALLOWED_OPS for op in facts["ops"]
            )
            got = w.call("logits", x.numpy())
        finally:
            w.stop()
        assert got.shape == (3, K)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5, err_msg=f"{name} {form}")
