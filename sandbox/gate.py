"""The gate: what an uploaded model file is allowed to be, checked before any of it runs.

An uploaded model is a program. TorchScript and `torch.export` files are graphs of operators,
and some operators reach the file system (`aten::from_file` maps any file into a tensor, and
writes it back when `shared=True`). Loading "weights only" does not help: the program is the
problem. Two checks, in this order:

1. `check_archive(data)`, on the raw bytes, before anything reads them as a model. The file
   must be a ZIP archive as `torch.save`, `torch.jit.save` and `torch.export.save` write them:
   - every record that holds tensors or pickles is *stored* (not compressed). Only TorchScript's
     source records (`code/…`, which `torch.jit.save` deflates) may be compressed, up to
     `MAX_COMPRESSED_RECORD` bytes each once inflated;
   - all records together declare at most `MAX_MODEL_BYTES` uncompressed (250 MB: a
     model's tensors are stored, so that is about the file's size), and there are at most
     `MAX_RECORDS` of them. So a deflate bomb is refused from its directory, before a single
     byte is inflated. The command-line index, on the user's own machine, lifts the bound to
     that machine's memory (`max_model_bytes`).
   torch.save's pre-1.6 ("legacy") format is refused: its storages are allocated at their
   declared size before any data is read.
2. `check_program(module)`, on the loaded program (TorchScript: every method of every
   submodule, inlined, every sub-block; `torch.export`: every node of the graph and of its
   sub-graphs). Every operator must be on `ALLOWED_OPS`, an allowlist of pure tensor operators
   measured on a corpus of real classifiers (every torchvision classifier and the registry's
   architectures, each traced, scripted and exported: `allowlist.json`, built by
   tools/build_allowlist.py), plus hand-picked ones a hand-written classifier is likely to use.
   Anything else is refused with the operator's name and, when known, what it does: file,
   process, network and custom operators, and anything that can't be classified. A TorchScript
   model that grows its own attributes on each call (a list or dict attribute appended to,
   directly or through containers it holds such as `self.holder[0].append(x)`, or `self.x = …`
   in forward) is refused too: it keeps memory between calls. So is one with forward hooks or
   pre-hooks, which TorchScript runs around every call of a module, outside its methods.

Reading a TorchScript file runs its `__setstate__` methods, so the server never loads an
uploaded program itself: `sandbox.worker` loads it inside the sandbox and applies
`check_program` there, before the model's forward runs once. The gate is the first wall; the
sandbox (`sandbox`) is the second, for whatever the gate misses.

Never imports streamlit.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import json
import re
import struct
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where a program is read: the checks of files need no torch
    import torch

__all__ = [
    "ALLOWED_OPS",
    "MAX_COMPRESSED_RECORD",
    "MAX_MODEL_BYTES",
    "MAX_RECORDS",
    "UserModelError",
    "base_name",
    "check_archive",
    "check_ops",
    "check_program",
    "denied",
    "max_model_bytes",
    "model_bound",
    "program_ops",
]

MAX_MODEL_BYTES = 250 * 2**20  # all records of one archive, uncompressed, on a server
MAX_COMPRESSED_RECORD = 4 * 2**20  # one deflated TorchScript source record, inflated
MAX_RECORDS = 20_000


class UserModelError(ValueError):
    """A user-facing message: what is wrong with the uploaded model, in plain words."""


# The bound `check_archive` applies in this context, when not the server's MAX_MODEL_BYTES.
_LIFTED: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "max_model_bytes", default=None
)


@contextlib.contextmanager
def max_model_bytes(limit: int) -> Iterator[None]:
    """Within this block (this thread's context), `check_archive` allows archives declaring up
    to `limit` bytes instead of MAX_MODEL_BYTES. For the command-line index on the user's own
    machine, whose only limit is its memory; a server never lifts it."""
    token = _LIFTED.set(int(limit))
    try:
        yield
    finally:
        _LIFTED.reset(token)


def model_bound() -> tuple[int, str]:
    """The bound on one model's bytes in this context, and the words a refusal names it by:
    the command line's (`max_model_bytes`), else the server's `MAX_MODEL_BYTES`."""
    lifted = _LIFTED.get()
    if lifted is None:
        return MAX_MODEL_BYTES, (
            "the most this server reads for one model. On your own machine, "
            "python -m workspace.index reads models of any size"
        )
    return lifted, "the most this index reads for one model (--max-model-mb)"


# --- 1. the container --------------------------------------------------------------------------


def _declared_records(data: bytes) -> int:
    """The record count from the ZIP's end-of-central-directory record, read before Python's
    zipfile builds an object per record."""
    tail = data[-(22 + 65535) :]
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        raise UserModelError("The file is a damaged ZIP archive, not a readable model.")
    (total,) = struct.unpack("<H", tail[at + 10 : at + 12])
    if total == 0xFFFF:  # ZIP64: the real count is in the ZIP64 end record
        loc = tail.rfind(b"PK\x06\x07", 0, at)
        if loc >= 0:
            (offset,) = struct.unpack("<Q", tail[loc + 8 : loc + 16])
            if offset + 56 <= len(data) and data[offset : offset + 4] == b"PK\x06\x06":
                (total,) = struct.unpack("<Q", data[offset + 32 : offset + 40])
    return total


def _is_source_record(name: str) -> bool:
    """TorchScript's Python-like source and its debug tables: the records torch.jit.save
    deflates. Everything else (tensors, pickles, JSON of exported programs) must be stored."""
    inner = name.split("/", 1)[1] if "/" in name else name
    return inner.startswith("code/")


def check_archive(data: bytes) -> None:
    """Refuse, from the ZIP directory alone, any file that could inflate or overlap its way to
    more than `MAX_MODEL_BYTES` (or the bound `max_model_bytes` set). Raises UserModelError;
    returns None for an acceptable file."""
    limit, where = model_bound()
    if len(data) == 0:
        raise UserModelError("The file is empty (0 bytes).")
    if data[:1] == b"\x80":
        raise UserModelError(
            "This file is in torch.save's legacy format (PyTorch before 1.6), whose tensors are "
            "allocated at whatever size the file claims before they are read. Save it again "
            "with a current PyTorch: torch.save(model.state_dict(), path)."
        )
    if not data.startswith(b"PK\x03\x04"):
        raise UserModelError(
            "This file is not a PyTorch model: expected a TorchScript file (torch.jit.save), a "
            "torch.export program (torch.export.save), a state dict (torch.save) or an ONNX file."
        )
    n = _declared_records(data)
    if n > MAX_RECORDS:
        raise UserModelError(
            f"The archive has {n:,} records; a model file has at most {MAX_RECORDS:,}."
        )
    try:
        infos = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, struct.error):
        raise UserModelError("The file is a damaged ZIP archive, not a readable model.") from None
    total = 0
    names = set()
    for info in infos:
        if info.filename in names:
            raise UserModelError(f"The archive holds {info.filename!r} twice.")
        names.add(info.filename)
        if info.header_offset + info.compress_size > len(data):
            raise UserModelError(
                f"The archive's record {info.filename!r} runs past the end of the file."
            )
        total += info.file_size
        if info.compress_type == zipfile.ZIP_STORED:
            if info.compress_size != info.file_size:
                raise UserModelError(
                    f"The archive's record {info.filename!r} claims {info.file_size:,} bytes "
                    f"but stores {info.compress_size:,}."
                )
        elif info.compress_type == zipfile.ZIP_DEFLATED and _is_source_record(info.filename):
            if info.file_size > MAX_COMPRESSED_RECORD:
                raise UserModelError(
                    f"The archive's compressed record {info.filename!r} would inflate to "
                    f"{info.file_size:,} bytes (at most {MAX_COMPRESSED_RECORD:,})."
                )
        else:
            raise UserModelError(
                f"Refused: the archive's record {info.filename!r} is compressed. torch.save, "
                "torch.jit.save and torch.export.save store tensors uncompressed; a compressed "
                "tensor record is how a small file inflates to gigabytes (a ZIP bomb)."
            )
        if total > limit:
            raise UserModelError(
                f"The archive's records add up to more than {limit // 2**20:,} MB "
                f"uncompressed, {where}."
            )


# --- 2. the program ----------------------------------------------------------------------------

# Pure tensor operators, by "namespace::name" (overloads such as ".Tensor" are stripped), picked
# by hand: the arithmetic, activation, normalisation, pooling, shape and reduction operators a
# hand-written classifier is likely to use, beyond what the corpus (allowlist.json, below)
# measured. Each computes tensors from
# tensors: none reads or writes files, starts processes, talks to the network, loads libraries
# or calls back into Python.
_ATEN = """
abs absolute acos acosh adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d
adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d add add_ addcdiv addcmul addmm
alias all alpha_dropout amax amin aminmax any arange argmax argmin argsort asin asinh atan atan2
atanh avg_pool1d avg_pool2d avg_pool3d baddbmm batch_norm bernoulli bernoulli_ bitwise_and
bitwise_not bitwise_or bitwise_xor bmm broadcast_tensors broadcast_to bucketize cat ceil celu
channel_shuffle chunk clamp clamp_ clamp_max clamp_min clip clone constant_pad_nd contiguous
conv1d conv2d conv3d conv_transpose1d conv_transpose2d conv_transpose3d convolution copy copy_
cos cosh cosine_similarity cumprod cumsum deg2rad detach diag diagonal diff dist div div_ dot
dropout dropout_ einsum elu elu_ embedding empty empty_like eq erf erfc exp exp2 expand
expand_as expm1 eye feature_alpha_dropout feature_dropout fill fill_ flatten flip floor
floor_divide fmax fmin fmod frac full full_like gather ge gelu glu group_norm gt hardshrink
hardsigmoid hardsigmoid_ hardswish hardswish_ hardtanh hardtanh_ index index_select
instance_norm is_floating_point isfinite isinf isnan kthvalue layer_norm le leaky_relu
leaky_relu_ lerp lift_fresh_copy linalg_vector_norm linear linspace log log10 log1p log2
log_sigmoid log_softmax logaddexp logical_and logical_not logical_or logical_xor logit logsumexp
lt masked_fill masked_fill_ matmul max max_pool1d max_pool1d_with_indices max_pool2d
max_pool2d_with_indices max_pool3d maximum mean median min minimum mish mish_ mm movedim mul
mul_ mv nan_to_num narrow native_batch_norm native_dropout native_group_norm native_layer_norm
ne neg new_empty new_full new_ones new_zeros nll_loss nonzero norm normal_ numel one_hot ones
ones_like pad permute pixel_shuffle pixel_unshuffle pow prelu prod rad2deg rand rand_like
randn randn_like reciprocal reflection_pad1d reflection_pad2d relu relu6 relu_ remainder
repeat repeat_interleave replication_pad1d replication_pad2d reshape reshape_as round rrelu
rsqrt rsub scalar_tensor scaled_dot_product_attention select select_scatter selu selu_ sigmoid
sigmoid_ sign silu silu_ sin sinh slice slice_scatter softmax softplus softshrink sort split
split_with_sizes sqrt square squeeze stack std sub sub_ sum sym_numel sym_size sym_storage_offset
sym_stride t take tan tanh tanh_ tensor_split threshold threshold_ topk transpose tril triu
true_divide trunc type_as unbind unflatten unfold uniform_ unsafe_split unsqueeze upsample_bicubic2d
upsample_bilinear2d upsample_nearest1d upsample_nearest2d upsample_nearest3d var var_mean view
view_as where zero_ zeros zeros_like _native_multi_head_attention _softmax _log_softmax
_to_copy _unsafe_view _adaptive_avg_pool2d _assert_async _assert_scalar _assert_tensor_metadata
sym_constrain_range sym_constrain_range_for_size _functional_assert_async _local_scalar_dense
_native_batch_norm_legit _native_batch_norm_legit_no_training _native_batch_norm_legit_functional
_upsample_bilinear2d_aa _upsample_nearest_exact2d upsample_nearest2d_backward
"""
# TorchScript's own scalar, list, string and control-flow operators: values, not effects.
_SCRIPT = """
aten::Bool aten::Float aten::Int aten::ScalarImplicit aten::__and__ aten::__contains__
aten::__derive_index aten::__getitem__ aten::__is__ aten::__isnot__ aten::__not__ aten::__or__
aten::__range_length aten::__xor__ aten::add aten::append aten::ceil aten::copy aten::device
aten::dim aten::div aten::eq aten::extend aten::floor aten::floordiv aten::format aten::ge
aten::gt aten::is_autocast_enabled aten::is_autocast_cpu_enabled aten::is_grad_enabled
aten::is_scripting aten::item aten::items aten::keys aten::le aten::len aten::list aten::lt
aten::mul aten::ne aten::neg aten::pow aten::remainder aten::size aten::str aten::sub
aten::sqrt aten::stride aten::tensor aten::to aten::type_as aten::values aten::warn aten::dict
aten::_set_item aten::insert aten::__interpolate aten::__upsample aten::__upsample_bilinear
aten::_infer_size aten::_shape_as_tensor aten::percentFormat aten::join aten::mean
prim::Constant prim::GetAttr prim::If prim::Loop prim::ListConstruct prim::ListUnpack
prim::TupleConstruct prim::TupleUnpack prim::TupleIndex prim::DictConstruct prim::Uninitialized
prim::RaiseException prim::unchecked_cast prim::isinstance prim::device prim::dtype prim::layout
prim::is_cuda prim::is_cpu prim::is_nested prim::is_quantized prim::is_sparse prim::requires_grad
prim::type prim::min prim::max prim::abs prim::NumToTensor prim::shape prim::data prim::grad
prim::Print prim::AutogradAdd prim::AutogradZero prim::BailOut prim::Guard prim::profile
prim::TypeCheck prim::unchecked_unwrap_optional prim::CreateObject prim::name prim::dtype
prim::EnumValue prim::EnumName prim::StringIndex prim::ConstantChunk prim::ListIndex
"""
# torch.export graphs call a few Python builtins on symbolic sizes (e.g. `operator.mul`).
_PYTHON = """
_operator.add _operator.sub _operator.mul _operator.truediv _operator.floordiv _operator.mod
_operator.neg _operator.pow _operator.eq _operator.ne _operator.lt _operator.le _operator.gt
_operator.ge _operator.and_ _operator.or_ _operator.not_ _operator.getitem math.ceil math.floor
math.sqrt math.trunc torch.sym_float torch.sym_int torch.sym_max torch.sym_min torch.sym_not
torch.sym_sqrt torch.sym_ite builtins.getattr torch._sym_sqrt
higher_order::cond higher_order::while_loop higher_order::map_impl
"""


# What refused operators do, for the message (anything else is "not a pure tensor operator").
_WHY = {
    "aten::from_file": "reads and writes files",
    "aten::save": "writes files",
    "aten::load": "reads files",
    "aten::_load_for_mobile": "reads files",
    "aten::set_": "points a tensor at other memory",
    "aten::as_strided": "reads memory outside a tensor's own view",
    "aten::as_strided_": "reads memory outside a tensor's own view",
    "aten::_pin_memory": "changes how memory is mapped",
    "prim::PythonOp": "calls Python code",
    "prim::CallFunction": "calls a function that can't be inspected",
    "prim::CallMethod": "calls a method that can't be inspected",
    "prim::SetAttr": "changes the model's own attributes on every call, keeping memory",
    "prim::Enter": "enters a context manager",
    "prim::Exit": "exits a context manager",
    "prim::fork": "starts work on other threads",
    "aten::wait": "waits for work on other threads",
    "prim::rpc_async": "calls other machines over the network",
    "aten::_set_item:attribute": "adds to the model's own attributes on every call, keeping memory",
    "aten::append:attribute": "adds to the model's own attributes on every call, keeping memory",
    "aten::extend:attribute": "adds to the model's own attributes on every call, keeping memory",
    "aten::insert:attribute": "adds to the model's own attributes on every call, keeping memory",
    "aten::add_:attribute": "adds to the model's own attributes on every call, keeping memory",
    "hook::forward_pre_hook": "runs before every call, outside the model's methods",
    "hook::forward_hook": "runs after every call, outside the model's methods",
}
_GROWS_CONTAINER = ("aten::append", "aten::extend", "aten::insert", "aten::_set_item")
_KNOWN_NAMESPACES = ("aten", "prim", "_operator", "math", "torch", "builtins", "higher_order")


def base_name(op: str) -> str:
    """ "aten::add.Tensor" -> "aten::add" (overloads share their operator's nature)."""
    ns, _, name = op.partition("::")
    return f"{ns}::{name.split('.', 1)[0]}" if name else op


_base = base_name

# Names that no corpus may add, whatever model calls them: file, process, network, thread,
# Python, storage and memory-layout operators (the known ones are in `_WHY`).
_DENIED_WORDS = re.compile(
    r"(?<!pro)file|save|load|fork|wait|rpc|python|callfunction|callmethod|setattr|enter|exit|^set_|"
    r"as_strided|pin_memory|record_stream|storage(?!_offset)|data_ptr|from_blob|mmap|share_memory|"
    r"_nccl|distributed|c10d|profiler|manual_seed|seed|get_rng_state|set_rng_state|hook|"
    r"^_?print|__setattr|__delattr|global",
    re.IGNORECASE,
)


def denied(op: str) -> str | None:
    """Why `op` can never be on the allowlist (None when nothing rules it out): what the gate
    says about it, growing a kept container, a hook, an unknown namespace (a custom class or
    library), or a name that reaches outside the tensors. `tools/build_allowlist.py` adds
    nothing this refuses."""
    base = base_name(op)
    why = _WHY.get(op) or _WHY.get(base)
    if why:
        return why
    if op.endswith(":attribute") or op.startswith("hook::"):
        return "keeps state between calls"
    if base.split("::")[0].split(".")[0] not in _KNOWN_NAMESPACES:
        return "a custom operator"
    if _DENIED_WORDS.search(base.partition("::")[2] or base):
        return "reaches outside the tensors it is given"
    return None


# What a corpus of real classifiers calls, made traced, scripted and exported (every
# torchvision classifier and the registry's architectures): measured by
# tools/build_allowlist.py, which says how the list is kept current when torch is upgraded.
ALLOWLIST_FILE = Path(__file__).with_name("allowlist.json")


def _corpus_ops() -> list[str]:
    ops = json.loads(ALLOWLIST_FILE.read_text(encoding="utf-8"))["operators"]
    return [op for op in ops if denied(op) is None]  # a hand-edited file adds nothing impure


ALLOWED_OPS: frozenset[str] = frozenset(
    [f"aten::{op}" for op in _ATEN.split()] + _SCRIPT.split() + _PYTHON.split() + _corpus_ops()
)


# Value types that can hold (or be) a list or dict a module keeps between calls.
_HOLDERS = ("ListType", "DictType", "TupleType", "ClassType", "OptionalType", "UnionType",
            "AnyType", "InterfaceType")  # fmt: skip


# Operators whose result is a new list or dict (a shallow copy): e.g. torchvision's Swin does
# `shift_size = self.shift_size.copy(); shift_size[0] = 0`, which keeps nothing between calls.
_COPIES = ("aten::copy", "aten::list", "aten::slice")


def _fresh(node) -> bool:
    """A shallow copy of a container whose items hold nothing (ints, floats, tensors): all of
    it is new, so growing it grows nothing the module keeps. A copy of a list of lists is not
    fresh: its items are the kept lists themselves."""
    if node.kind() not in _COPIES:
        return False
    outs = list(node.outputs())
    if len(outs) != 1:
        return False
    t = outs[0].type()
    if t.kind() == "ListType":
        return t.getElementType().kind() not in _HOLDERS
    if t.kind() == "DictType":
        return t.getValueType().kind() not in _HOLDERS
    return False


def _kept(graph) -> set[int]:
    """The values of an inlined graph that are, or may hold, a container the module keeps: what
    `prim::GetAttr` reads, and every container-typed value computed from one (an item of it,
    its `values()`, a list built around it, a branch's or a loop's result), to a fixed point.
    So `self.holder[0].append(x)` is growth as much as `self.keep.append(x)`."""
    kept: set[int] = set()

    def holds(v) -> bool:
        return v.type().kind() in _HOLDERS

    def mark(v) -> bool:
        if v.unique() in kept:
            return False
        kept.add(v.unique())
        return True

    def visit(block) -> bool:
        changed = False
        for node in block.nodes():
            subs = list(node.blocks())
            for sub in subs:
                changed |= visit(sub)
            ins, outs = list(node.inputs()), list(node.outputs())
            if node.kind() == "prim::GetAttr":
                changed |= any(mark(v) for v in outs if holds(v))
            elif node.kind() == "prim::Loop" and subs:
                body = subs[0]  # inputs: (iteration, *carried); outputs: (condition, *carried)
                carry = zip(ins[2:], list(body.inputs())[1:], list(body.outputs())[1:], outs,
                            strict=True)  # fmt: skip
                for carried, param, result, out in carry:
                    if carried.unique() in kept or result.unique() in kept:
                        changed |= mark(param) | mark(out)
            elif subs:  # prim::If and the like: a result is kept if any branch's is
                for i, out in enumerate(outs):
                    if any(list(b.outputs())[i].unique() in kept for b in subs):
                        changed |= mark(out)
            elif any(v.unique() in kept for v in ins) and not _fresh(node):
                changed |= any(mark(v) for v in outs if holds(v))
        return changed

    while visit(graph):
        pass
    return kept


def _graph_ops(graph) -> Iterator[str]:
    """The operators of an inlined graph, growing a kept container named "…:attribute"."""
    kept = _kept(graph)

    def visit(block) -> Iterator[str]:
        for node in block.nodes():
            kind = node.kind()
            ins = list(node.inputs())
            grows = kind in _GROWS_CONTAINER or (
                kind == "aten::add_" and ins and ins[0].type().kind() == "ListType"
            )  # `kept += [x]` on a list held in a container is aten::add_.t
            if grows and ins and ins[0].unique() in kept:
                kind = f"{kind}:attribute"  # growing a list/dict the module keeps
            yield kind
            for sub in node.blocks():
                yield from visit(sub)

    yield from visit(graph)


def _script_ops(module: torch.jit.ScriptModule) -> Iterator[str]:
    """Every method of every submodule (not only forward), each read once: a method another
    method calls is read inlined into its caller (where what it is handed is known), and every
    method nobody calls is read on its own. Submodules of one TorchScript type share their
    methods, so a type is read once however many instances it has."""
    from saliency import compat_torch as ct

    methods = {}  # (type, method name) -> method
    for sub in module.modules():
        kind = ct.script_type(sub)
        for name, method in ct.script_methods(sub).items():
            methods.setdefault((kind, name), method)
        # Hooks run around a call of the module, from C++, outside its methods: refused, and
        # their code is read like the methods' for the record.
        for what, hooks in ct.script_hooks(sub):
            for hook in hooks:
                yield what
                yield from _graph_ops(ct.inline_graph(hook))
    called = set()

    def calls(block) -> None:
        for node in block.nodes():
            kind = node.inputsAt(0).type() if node.kind() == "prim::CallMethod" else None
            if kind is not None and kind.kind() == "ClassType":  # not an interface: known code
                called.add((kind.qualified_name(), node.s("name")))
            for sub in node.blocks():
                calls(sub)

    for method in methods.values():
        calls(method.graph)
    for key, method in methods.items():
        if key not in called:
            yield from _graph_ops(ct.inline_graph(method))


def _fx_ops(gm: torch.fx.GraphModule) -> Iterator[str]:
    import torch

    from saliency.compat_torch import HIGHER_ORDER, OP_OVERLOADS

    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output", "get_attr"):
            continue
        if node.op != "call_function":  # call_module / call_method: not in an exported graph
            yield f"fx::{node.op}"
            continue
        target = node.target
        if isinstance(target, OP_OVERLOADS):
            yield target.name() if callable(getattr(target, "name", None)) else str(target)
        elif isinstance(target, HIGHER_ORDER):
            yield f"higher_order::{target.name()}"
        else:
            yield f"{getattr(target, '__module__', '?')}.{getattr(target, '__name__', target)}"
    for _, child in gm.named_children():
        if isinstance(child, torch.fx.GraphModule):
            yield from _fx_ops(child)


def cache_export_schema_hints() -> None:
    """`torch.export.load` resolves its schema's type hints once per class: the patch is
    `saliency.compat_torch.cache_export_schema_hints` (the workers' fork server applies it)."""
    from saliency.compat_torch import cache_export_schema_hints as patch

    patch()


def program_ops(module) -> set[str]:
    """Every operator a loaded TorchScript module or exported program (or its `.module()`)
    can call, as "namespace::name[.overload]" strings (growing an attribute container is
    reported as e.g. "aten::append:attribute")."""
    import torch

    if isinstance(module, torch.jit.ScriptModule):
        return set(_script_ops(module))
    if isinstance(module, torch.export.ExportedProgram):
        return set(_fx_ops(module.graph_module))
    if isinstance(module, torch.fx.GraphModule):
        return set(_fx_ops(module))
    raise TypeError(f"expected a TorchScript module or an exported program, got {type(module)}")


def check_ops(ops: Iterable[str]) -> None:
    """Refuse the first operator (in sorted order) that is not on the allowlist."""
    refused = sorted({op for op in ops if _base(op) not in ALLOWED_OPS})
    if not refused:
        return
    known = [op for op in refused if _base(op) in _WHY or op in _WHY]
    hooks = [op for op in refused if op.startswith("hook::")]  # named first: what runs them
    op = (hooks or known or refused)[0]
    why = _WHY.get(op) or _WHY.get(_base(op))
    name = op.removesuffix(":attribute")
    if op.startswith("hook::"):
        hook = name.removeprefix("hook::").replace("_", " ")
        raise UserModelError(
            f"Refused: this model has a TorchScript {hook}, code that {why}. Remove the hook "
            "(handle.remove()) and save the model again: put what it did into forward."
        )
    if why:
        what = f"which {why}"
    elif _base(op).split("::")[0].split(".")[0] not in _KNOWN_NAMESPACES:
        what = "a custom operator that this server can't inspect"
    else:
        what = "which is not on this server's list of pure tensor operators"
    others = [o for o in refused if o != op]
    more = f" ({len(others)} more refused: {', '.join(others[:3])})" if others else ""
    raise UserModelError(f"Refused: this model calls {name}, {what}.{more}")


def check_program(module) -> set[str]:
    """`check_ops(program_ops(module))`; returns the operators for the record."""
    ops = program_ops(module)
    check_ops(ops)
    return ops
