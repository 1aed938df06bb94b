"""Imported once by the workers' fork server (see `sandbox.worker`): everything a worker
needs, imported and exercised here so that each forked worker starts in a fraction of a second.

Only what starts no thread runs here (TorchScript, torch.export and ONNX readers, the
architectures weights may name, forward passes on one thread): a process with threads is not
safe to fork. The gradient methods, whose first backward starts autograd's threads, are warmed
up in each worker after the fork.
"""

import importlib
import io
import warnings

import captum.attr  # noqa: F401 - the methods other than the gradient import it lazily
import torch

import pretrained
import saliency
import sandbox  # noqa: F401 - the lockdown itself
from sandbox import (  # noqa: F401
    gate,
    jobs,
    named_weights,
    onnx_models,
    preparation,
    user_models,
)

# The two packages import their modules on first use (so that a first page needs no torch); a
# locked-down worker can't open a file any more, so every public name is resolved here.
for _package in (saliency, pretrained):
    for _name in _package.__all__:
        getattr(_package, _name)

gate.cache_export_schema_hints()  # halves the CPU of reading an exported upload
torch.set_num_threads(1)  # forward passes inline, no OpenMP pool before the fork
_net = torch.nn.Sequential(
    torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(392, 3)
).eval()
_x = torch.rand(2, 1, 16, 16)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    _buf = io.BytesIO()
    torch.jit.save(torch.jit.script(_net), _buf)
    gate.program_ops(torch.jit.load(io.BytesIO(_buf.getvalue())))
    _buf = io.BytesIO()
    torch.export.save(torch.export.export(_net, (_x,)), _buf)
    gate.program_ops(torch.export.load(io.BytesIO(_buf.getvalue())))
    with torch.no_grad():
        torch.export.load(io.BytesIO(_buf.getvalue())).module()(_x)
    # A dynamic batch size, as the Your model page asks for: its symbolic shapes import
    # sympy's modules, which a locked-down worker could not open later.
    _batch = torch.export.Dim("batch", min=1, max=4096)
    _buf = io.BytesIO()
    torch.export.save(torch.export.export(_net, (_x,), dynamic_shapes=({0: _batch},)), _buf)
    with torch.no_grad():
        torch.export.load(io.BytesIO(_buf.getvalue())).module()(torch.rand(3, 1, 16, 16))
    onnx_models.warm_up()  # onnx and onnx2torch, when installed: imported before any lockdown
    named_weights.warm_up()  # torchvision, and timm when installed: weights name their code
# Every method's module, and what LRP imports on first use (Zennit's rules, composites and
# canonizers): a locked-down worker could not open them later.
for _info in saliency.METHOD_INFO.values():
    for _where in (_info.function, _info.all_classes):
        if _where:
            importlib.import_module("saliency." + _where.split(":")[0])
importlib.import_module("saliency.bench")  # the metric bench's job (`jobs.bench_scores`)
for _module in ("attribution", "canonizers", "composites", "rules", "torchvision", "types"):
    importlib.import_module("zennit." + _module)
del _net, _x, _buf, _batch, _package, _name, _info, _where, _module
