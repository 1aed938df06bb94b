"""Models whose forward returns a tuple, a named tuple or a dict (issue 30): the scores are one
entry: the first (N, K) float tensor (torchvision's scripted GoogLeNet returns
GoogLeNetOutputs(logits, None, None)), or the one the user names (`output`, `--output`).
Every view then sees the scores' tensor: the sandboxed answers and maps equal the module's."""

from __future__ import annotations

from collections import namedtuple
from typing import NamedTuple

import hostile
import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import pretrained
from pretrained.architectures import pick_output
from sandbox import user_models, worker
from sandbox.gate import UserModelError
from sandbox.text import output_key

Pair = namedtuple("Pair", "features logits")


def test_pick_output_takes_the_first_entry_that_can_be_scores():
    logits, features = torch.randn(2, 10), torch.randn(2, 128, 4)
    assert pick_output(logits) is logits
    assert pick_output((logits, None, None)) is logits
    assert pick_output([features, logits]) is logits  # 3-D features can't be scores
    assert pick_output({"aux": torch.ones(2, dtype=torch.long), "out": logits}) is logits
    assert pick_output(Pair(features, logits)) is logits


def test_pick_output_by_position_name_or_key_and_its_refusals():
    a, b = torch.randn(2, 128), torch.randn(2, 10)
    assert pick_output((a, b)) is a  # the first, as the Tables page takes it
    assert pick_output((a, b), 1) is b
    assert pick_output(Pair(a, b), "logits") is b and pick_output(Pair(a, b), 1) is b
    assert pick_output({"emb": a, "logits": b}, "logits") is b
    with pytest.raises(TypeError, match="has no output 'scores'; it has emb: "):
        pick_output({"emb": a, "logits": b}, "scores")
    with pytest.raises(TypeError, match="has no output 5"):
        pick_output((a, b), 5)
    with pytest.raises(TypeError, match=r"output 0 of the model's tuple is not \(N, K\) scores"):
        pick_output((torch.ones(2, 3, 3), b), 0)
    with pytest.raises(TypeError, match=r"\(0: NoneType; 1: \(2, 3\) int64\) and none of"):
        pick_output((None, torch.ones(2, 3, dtype=torch.long)))
    with pytest.raises(TypeError, match="returned a str, not a tensor"):
        pick_output("logits")
    assert [output_key(t) for t in ("", " 1 ", "logits", None, 2)] == [None, 1, "logits", None, 2]


class Scores(NamedTuple):
    embedding: torch.Tensor
    logits: torch.Tensor


class TwoHeads(nn.Module):
    """mnist-cnn's logits after its 128-wide embedding: returns both, as many models do."""

    def __init__(self) -> None:
        super().__init__()
        cnn = pretrained.load_model("mnist-cnn", device="cpu")
        self.body, self.head = cnn[:-1], cnn[-1]

    def forward(self, x: torch.Tensor) -> Scores:
        e = self.body(x)
        return Scores(e, self.head(e))


@pytest.fixture(scope="module")
def two_heads():
    torch.manual_seed(0)
    model = TwoHeads().eval()
    return model, hostile.saved(model, torch.zeros(2, 1, 28, 28), "script")


@hostile.needs_sandbox
def test_an_upload_returning_two_heads_asks_which_then_answers_with_it(two_heads):
    model, data = two_heads
    with pytest.raises(UserModelError, match="returns 128 scores but there are 10 class names. If"):
        user_models.accept_upload(data, dataset="mnist")
    w, info = user_models.accept_upload(data, dataset="mnist", output="logits")
    try:
        assert info.test_accuracy == pretrained.model_info("mnist-cnn").test_accuracy
        x = pretrained.load_dataset("mnist", "test").images[:4]
        maps = w.call("class_maps", x.numpy(), method="gradient", score="logit", absolute=False)
    finally:
        w.stop()
    xg = x.clone().requires_grad_(True)
    logits = model(xg).logits
    expected = torch.stack(
        [torch.autograd.grad(logits[:, k].sum(), xg, retain_graph=True)[0] for k in range(10)], 1
    )
    np.testing.assert_allclose(maps, expected.numpy(), rtol=1e-4, atol=1e-6)
    # The same file at another output is another model.
    w2, info2 = user_models.accept_upload(data, dataset="mnist", output="1")
    w2.stop()
    assert info2.name != info.name


def test_a_users_own_file_in_this_process_takes_output_too(two_heads):
    model, data = two_heads
    net, info = user_models.load_user_model(data, dataset="mnist", output=1)
    x = pretrained.load_dataset("mnist", "test").images[:3]
    with torch.no_grad():
        np.testing.assert_allclose(net(x).numpy(), model(x).logits.numpy(), atol=1e-6)
    assert info.test_accuracy == pretrained.model_info("mnist-cnn").test_accuracy


@hostile.needs_sandbox
def test_a_scripted_googlenet_is_accepted_as_it_is():
    """torchvision's GoogLeNet, scripted, returns GoogLeNetOutputs even in eval mode: it was
    refused ("expected (4, K)"). Its only (N, K) entry is the logits."""
    torch.manual_seed(0)
    model = torchvision.models.googlenet(weights=None, num_classes=5, aux_logits=False,
                                         init_weights=True).eval()  # fmt: skip
    x = torch.rand(2, 3, 64, 64)
    data = hostile.saved(model, x, "script")
    with torch.no_grad():
        expected = model(x)
    limits = worker.Limits(job_seconds=30.0, load_seconds=120.0, memory_bytes=2**30, threads=1)
    w = worker.Worker(data, {"kind": "auto", "preprocessing": {"channels": 3}},
                      example=x[:1].numpy(), n_classes=5, limits=limits)  # fmt: skip
    try:
        w.start()
        got = w.call("logits", x.numpy())
    finally:
        w.stop()
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)


def test_a_workspace_names_its_output_in_its_settings_and_on_the_command_line(two_heads, tmp_path):
    from workspace import Preprocessing, WorkspaceConfig, load_model
    from workspace.index import _parser, config_from_args

    model, data = two_heads
    (tmp_path / "m.pt").write_bytes(data)
    m, out = str(tmp_path / "m.pt"), str(tmp_path / "w")
    argv = ["--model", m, "--data", str(tmp_path), "--out", out, "--grey", "--output", "1"]
    args = _parser().parse_args(argv)
    config = config_from_args(args)
    assert config.output == 1 and "output = 1" in config.to_toml()
    assert WorkspaceConfig.from_dict(config.to_dict()).output == 1
    net = load_model(config, 10)
    x = pretrained.load_dataset("mnist", "test").images[:3]
    with torch.no_grad():
        np.testing.assert_allclose(net(x).numpy(), model(x).logits.numpy(), atol=1e-6)
    unnamed = WorkspaceConfig(model=str(tmp_path / "m.pt"), data=str(tmp_path),
                              preprocessing=Preprocessing(channels=1))  # fmt: skip
    assert load_model(unnamed, 10)(x).shape == (3, 128)  # the first (N, K) entry: features
