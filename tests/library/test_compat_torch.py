"""saliency.compat_torch: torch is the version requirements.txt pins and every private part the
library and the gate reach for is where they expect it, with the signatures they call (a torch
upgrade fails here, loudly); the export-schema patch is idempotent and answers as typing does.
(The engine entry's results and errors equal torch.autograd.grad's:
tests/library/test_saliency.py.)"""

from __future__ import annotations

import importlib
import inspect
import typing

import torch
from pins import pinned

from saliency import compat_torch


def test_torch_is_the_pinned_version_and_every_reach_is_there():
    assert torch.__version__.split("+")[0] == pinned("torch"), (
        "torch is not the version requirements.txt pins: check every reach of "
        "saliency/compat_torch.py (REACHES) against the new version, then pin it"
    )
    missing = [f"{m}.{a}" for m, a in compat_torch.REACHES
               if not hasattr(importlib.import_module(m), a)]  # fmt: skip
    assert not missing, f"torch moved what saliency/compat_torch.py reaches for: {missing}"
    assert compat_torch.engine_run_backward is not None and compat_torch.vmap is not None
    assert list(inspect.signature(compat_torch.vmap).parameters) == [
        "func", "in_dims", "out_dims", "allow_none_pass_through"]  # fmt: skip


def test_the_script_readers_see_a_scripted_modules_methods_and_hooks():
    class Net(torch.nn.Module):
        def forward(self, x):
            return self.twice(x) + 1

        @torch.jit.export
        def twice(self, x):
            return x * 2

    scripted = torch.jit.script(Net())
    assert compat_torch.script_type(scripted).endswith("Net")
    methods = compat_torch.script_methods(scripted)
    assert {"forward", "twice"} <= set(methods)
    kinds = {n.kind() for n in compat_torch.inline_graph(methods["forward"]).nodes()}
    assert "aten::mul" in kinds and "prim::CallMethod" not in kinds  # twice, inlined
    assert [name for name, hooks in compat_torch.script_hooks(scripted)] == [
        "hook::forward_pre_hook", "hook::forward_hook"]  # fmt: skip


def test_the_export_schema_patch_is_idempotent_and_answers_as_typing():
    from torch._export.serde import serialize

    compat_torch.cache_export_schema_hints()
    shim = serialize.typing
    compat_torch.cache_export_schema_hints()
    assert serialize.typing is shim and shim._schema_hints is not None
    from torch._export.serde import schema

    assert shim.get_type_hints(schema.Graph) == typing.get_type_hints(schema.Graph)
