"""Every reach into torch's private parts, in one place (issue 31), each checked against the
version `requirements.txt` pins by tests/library/test_compat_torch.py, which fails loudly when an
upgrade moves one (`REACHES` lists them). Only torch is imported here.

- `engine_run_backward`, `vmap`: the autograd engine's own entry, behind
  `torch.autograd.grad`. `torch.autograd.grad` checks the seeds it is given in Python before it
  calls the engine; the library's seeds are made from the scores (`zeros_like`), so they are
  right by construction, and the check costs ~12 us a call (a tenth of a small net's backward
  at batch 1) and, on a process's first call, imports sympy (~0.5 s, through torch.fx's
  symbolic shapes) for the first visitor's page. None where torch (< 2.3) lacks them: callers
  then use `torch.autograd.grad`.
- `TorchDispatchMode`: the dispatcher's hook (every operator a module runs, beneath Python).
- `inline_graph`, `script_type`, `script_methods`, `script_hooks`, `OP_OVERLOADS`,
  `HIGHER_ORDER`: what the gate reads of a TorchScript module's or an exported program's code.
- `cache_export_schema_hints`: the one patch: `torch.export.load` resolves its schema's type
  hints once per class.
"""

from __future__ import annotations

import types
import typing
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

try:
    from torch._vmap_internals import _vmap as vmap
    from torch.autograd.graph import _engine_run_backward as engine_run_backward
except ImportError:  # pragma: no cover - older torch
    engine_run_backward = None
    vmap = None

__all__ = [
    "HIGHER_ORDER",
    "OP_OVERLOADS",
    "REACHES",
    "TorchDispatchMode",
    "cache_export_schema_hints",
    "engine_run_backward",
    "inline_graph",
    "script_hooks",
    "script_methods",
    "script_type",
    "vmap",
]

# (module, attribute): what this module reaches for.
REACHES = (
    ("torch.autograd.graph", "_engine_run_backward"),
    ("torch._vmap_internals", "_vmap"),
    ("torch.utils._python_dispatch", "TorchDispatchMode"),
    ("torch._C", "_jit_pass_inline"),
    ("torch._ops", "OpOverload"),
    ("torch._ops", "OpOverloadPacket"),
    ("torch._ops", "HigherOrderOperator"),
    ("torch._export.serde.serialize", "typing"),
)
OP_OVERLOADS = (torch._ops.OpOverload, torch._ops.OpOverloadPacket)  # an exported graph's ops
HIGHER_ORDER = torch._ops.HigherOrderOperator  # cond, map, … in an exported graph


def inline_graph(fn: Any) -> Any:
    """A copy of a TorchScript function's or method's graph with every call inlined."""
    graph = fn.graph.copy()
    torch._C._jit_pass_inline(graph)
    return graph


def script_type(module: torch.nn.Module) -> str:
    """The qualified name of a scripted (sub)module's TorchScript type."""
    return module._c._type().qualified_name()


def script_methods(module: torch.nn.Module) -> dict[str, Any]:
    """A scripted (sub)module's methods by name, each with its `graph`."""
    c = module._c
    return {name: c._get_method(name) for name in c._method_names()}


def script_hooks(module: torch.nn.Module) -> tuple[tuple[str, list], ...]:
    """A scripted (sub)module's forward pre-hooks and forward hooks (run from C++ around a
    call of the module, outside its methods), each list named."""
    c = module._c
    return (
        ("hook::forward_pre_hook", c._get_forward_pre_hooks()),
        ("hook::forward_hook", c._get_forward_hooks()),
    )


def cache_export_schema_hints() -> None:
    """Make `torch.export.load` resolve its schema's type hints once per class.

    Its deserialiser calls `typing.get_type_hints` on a schema dataclass for every serialized
    object, 10,000 times for a resnet50: half the CPU of reading the program. The schema's
    classes never change, so their hints are kept after the first call. The worker reads every
    exported upload; its fork server calls this once. Idempotent; a torch without that module
    is left as it is."""
    try:
        from torch._export.serde import serialize
    except ImportError:
        return
    if getattr(serialize.typing, "_schema_hints", None) is not None:
        return
    hints: dict = {}

    def get_type_hints(obj, globalns=None, localns=None, include_extras=False):
        key = (obj, id(globalns), id(localns), include_extras)
        if key not in hints:
            hints[key] = typing.get_type_hints(obj, globalns, localns, include_extras)
        return hints[key]

    shim = types.ModuleType("typing")
    shim.__dict__.update(typing.__dict__)
    shim.get_type_hints = get_type_hints
    shim._schema_hints = hints
    serialize.typing = shim
