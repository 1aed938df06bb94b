"""ONNX files, what every other framework exports, read as torch modules by `onnx2torch`.

    >>> looks_like_onnx(data)          # the bytes' outer protobuf fields: no onnx import
    >>> module, ops = read_onnx(data)  # only where the file may run: a sandboxed worker

An ONNX file is a protobuf `ModelProto`: a graph of standard operators (Conv, Gemm, Relu…)
and its weights. A server never parses one: `looks_like_onnx` reads only the outer fields'
tags and lengths, and `read_onnx` (parse, check, convert) runs inside the sandboxed worker,
whose fork server imports onnx and onnx2torch before the lockdown. What `read_onnx` refuses,
with the reason in plain words:

- more bytes than the gate's `MAX_MODEL_BYTES` (or the command line's lifted bound);
- a file protobuf can't parse, or that onnx's checker finds malformed;
- weights kept in other files ("external data"): reading them would open files by a path
  the file names;
- an operator of another domain than the standard one (custom operators are code this
  server doesn't have) or one onnx2torch has no converter for, named.

The converted module is an ordinary `torch.fx.GraphModule` of onnx2torch's modules, each
computing with torch's own operators, so saliency's gradients are real autograd through it.
Those operators are then held to the gate's allowlist, as every upload's are
(`converted_ops`): the module runs once on zeros of the input shape the file declares (batch
1), and every operator it calls is recorded at torch's dispatcher ("aten::convolution",
"aten::add.Tensor"…), the names the allowlist holds; one not on it refuses the file, by name.
The standard ONNX domain has no operator that reads a file, starts a process or connects, and
the code that runs is onnx2torch's, not the file's; the check makes sure no combination of
them reaches an operator the gate has not seen a real classifier call. What it records is that
run's: a branch of onnx2torch's code taken only for other inputs is not in it, so the sandbox
stays the second wall, as for every upload.

Newer exporters (torch 2.14's `torch.onnx.export` writes opset 20) use operator versions
onnx2torch doesn't know; such a model is first converted to opset `TARGET_OPSET` by onnx's
own version converter. Never imports streamlit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from .gate import MAX_MODEL_BYTES, UserModelError

__all__ = [
    "INSTALL",
    "TARGET_OPSET",
    "converted_ops",
    "input_shape",
    "looks_cut_short",
    "looks_like_onnx",
    "missing",
    "read_onnx",
]

INSTALL = (
    "ONNX files need the onnx and onnx2torch packages, which this Python lacks: "
    "pip install 'onnx==1.23.2' 'onnx2torch==1.5.15' (or pip install -e '.[onnx]')."
)
TARGET_OPSET = 17  # the newest opset whose every operator version onnx2torch 1.5 converts
STANDARD_DOMAINS = ("", "ai.onnx")
MAX_FIELDS = 100_000  # outer fields of a ModelProto the header check walks before giving up
# The run that lists a converted model's operators: a symbolic batch is 1, symbolic channels 3,
# any other symbolic size STAND_IN (a classifier's usual side); at most MAX_CHECK_VALUES
# values, a 4096-pixel RGB square (the largest the workspace form prepares).
STAND_IN = 224
MAX_CHECK_VALUES = 3 * 4096 * 4096

# ModelProto's fields, by number: their protobuf wire type (0 varint, 2 length-delimited).
_MODEL_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2, 26: 2}


def _varint(data: bytes | memoryview, at: int) -> tuple[int, int]:
    """The varint at `at` and where the next field starts; ValueError past the end."""
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def _layout(data: bytes) -> str | None:
    """ "onnx" when `data` is laid out as an ONNX ModelProto: every outer field one of its
    fields with its wire type, the last one ending at the file's end, an IR version and a
    graph among them; "cut" when it starts as one (an IR version first) but ends early; else
    None. Reads tags and lengths only: each graph, however big, is skipped in one step."""
    view = memoryview(data)
    at, seen = 0, set()
    try:
        for _ in range(MAX_FIELDS):
            if at == len(view):
                return "onnx" if {1, 7} <= seen else ("cut" if 1 in seen else None)
            tag, at = _varint(view, at)
            number, wire = tag >> 3, tag & 7
            if _MODEL_FIELDS.get(number) != wire:
                return None
            value, at = _varint(view, at)
            if wire == 2:
                at += value
                if at > len(view):
                    return "cut" if 1 in seen else None
            elif number == 1 and not 1 <= value <= 100:  # ir_version: 3 to 11 in 2026
                return None
            seen.add(number)
    except ValueError:  # a varint past the end
        return "cut" if 1 in seen else None
    return None


def looks_like_onnx(data: bytes) -> bool:
    """True when `data` is laid out as an ONNX model (`_layout`), without parsing it: how the
    server tells an ONNX file from anything else."""
    return _layout(data) == "onnx"


def looks_cut_short(data: bytes) -> bool:
    """True when `data` starts as an ONNX model but ends before its last field does."""
    return _layout(data) == "cut"


def missing() -> str | None:
    """None when onnx and onnx2torch import here, else what to install."""
    try:
        import onnx  # noqa: F401
        import onnx2torch  # noqa: F401
    except ImportError:
        return INSTALL
    return None


def _limit() -> tuple[int, bool]:
    """The gate's bound on a model's bytes here, and whether the command line lifted it."""
    from . import gate

    lifted = gate._LIFTED.get()
    return (MAX_MODEL_BYTES, False) if lifted is None else (lifted, True)


def _graphs(graph) -> Iterator[Any]:
    """`graph` and every subgraph in its nodes' attributes (If, Loop, Scan bodies)."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _graphs(attr.g)
            for sub in attr.graphs:
                yield from _graphs(sub)


def _tensors(model) -> Iterator[Any]:
    """Every TensorProto of the model: initializers, sparse ones, and constants held in
    attributes of any node, in any graph or local function."""
    graphs = list(_graphs(model.graph))
    for info in model.training_info:
        graphs += list(_graphs(info.initialization)) + list(_graphs(info.algorithm))
    nodes = [n for g in graphs for n in g.node] + [n for f in model.functions for n in f.node]
    for g in graphs:
        yield from g.initializer
        for sparse in g.sparse_initializer:
            yield from (sparse.values, sparse.indices)
    for node in nodes:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("sparse_tensor"):
                yield from (attr.sparse_tensor.values, attr.sparse_tensor.indices)
            for sparse in attr.sparse_tensors:
                yield from (sparse.values, sparse.indices)


def _refuse_external_data(model) -> None:
    from onnx import TensorProto

    for tensor in _tensors(model):
        if tensor.data_location == TensorProto.EXTERNAL or len(tensor.external_data):
            where = next((e.value for e in tensor.external_data if e.key == "location"), "")
            named = f" ({where[:80]!r})" if where else ""
            raise UserModelError(
                f"Refused: this ONNX file keeps its weights in another file{named}, and this "
                "server reads only the file you send, never one it names. Save the model as one "
                "file: onnx.save(onnx.load('m.onnx'), 'one.onnx', save_as_external_data=False) "
                "(for models under 2 GB)."
            )


def _operators(model) -> list[tuple[str, str]]:
    """(domain, operator) of every node, in every graph and local function."""
    nodes = [n for g in _graphs(model.graph) for n in g.node]
    nodes += [n for f in model.functions for n in f.node]
    return [(n.domain, n.op_type) for n in nodes]


def _named(ops: list[str]) -> str:
    more = f" and {len(ops) - 5} more" if len(ops) > 5 else ""
    return ", ".join(ops[:5]) + more


def _refuse_unknown_operators(model) -> None:
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY

    ops = _operators(model)
    custom = sorted({f"{op} (domain {domain[:60]!r})" for domain, op in ops
                     if domain not in STANDARD_DOMAINS})  # fmt: skip
    if custom:
        raise UserModelError(
            f"Refused: this model uses the custom ONNX operator {_named(custom)}, which can't "
            "be converted: only the standard ONNX operators can."
        )
    known = {d.operation_type for d in _CONVERTER_REGISTRY}
    unknown = sorted({op[:60] for _, op in ops if op not in known})
    if unknown:
        which = "operator" if len(unknown) == 1 else "operators"
        raise UserModelError(
            f"This model uses the ONNX {which} {_named(unknown)}, which can't be converted to "
            "PyTorch here (onnx2torch has no converter for it). Export the model without it, "
            "or as a torch.export program if it is a PyTorch model."
        )


def _fold_identity_initializers(model) -> None:
    """Point every use of `Identity(initializer)` at the initializer itself. torch's exporter
    shares equal weights that way (every zero bias of a freshly built network is one tensor),
    and onnx2torch reads a convolution's weights only from an initializer."""
    graph = model.graph
    names = {t.name for t in graph.initializer}
    outputs = {v.name for v in graph.output}
    alias: dict[str, str] = {}
    for node in graph.node:
        if node.op_type == "Identity" and node.domain in STANDARD_DOMAINS and node.input:
            source = alias.get(node.input[0], node.input[0])
            if source in names and node.output[0] not in outputs:
                alias[node.output[0]] = source
    if not alias:
        return
    kept = [n for n in graph.node if not (n.op_type == "Identity" and n.output[0] in alias)]
    for node in kept:
        for i, name in enumerate(node.input):
            if name in alias:
                node.input[i] = alias[name]
    del graph.node[:]
    graph.node.extend(kept)


def _opset(model) -> int:
    return max((o.version for o in model.opset_import if o.domain in STANDARD_DOMAINS), default=0)


def _needs_older_opset(model) -> bool:
    """True when onnx2torch has no converter for the version of some operator at this opset."""
    from onnx2torch.node_converters import get_converter

    version = _opset(model)
    for domain, op in set(_operators(model)):
        try:
            get_converter(operation_type=op, version=version, domain=domain)
        except NotImplementedError:
            return True
    return False


@contextlib.contextmanager
def _naming_the_operator() -> Iterator[list[str]]:
    """onnx2torch's `convert` looks up each node's converter, then calls it: the operator
    last looked up is the one whose conversion failed, whatever the converter raised."""
    from onnx2torch import converter

    seen: list[str] = []
    original = converter.get_converter

    def get_converter(**kwargs):
        seen.append(kwargs.get("operation_type", "?"))
        return original(**kwargs)

    converter.get_converter = get_converter
    try:
        yield seen
    finally:
        converter.get_converter = original


def input_shape(model) -> tuple[int, ...]:
    """The shape of the graph's one input as the file declares it, symbolic sizes replaced
    (batch 1, channels 3, others `STAND_IN`): what `converted_ops` runs the model on.
    UserModelError for a model of several inputs, or one with no shape or too many values."""
    weights = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in weights]
    if len(inputs) != 1:
        names = ", ".join(repr(v.name[:40]) for v in inputs[:5])
        raise UserModelError(
            f"This ONNX model takes {len(inputs)} inputs ({names or 'none'}); an image "
            "classifier here takes one, the images (N, C, H, W)."
        )
    kind = inputs[0].type
    if not kind.HasField("tensor_type") or not kind.tensor_type.HasField("shape"):
        raise UserModelError(
            "This ONNX model's input declares no shape, so it can't be checked here. Export it "
            "with an example input of your images' shape (torch.onnx.export does)."
        )
    dims = kind.tensor_type.shape.dim
    shape = tuple(
        d.dim_value
        if d.HasField("dim_value") and d.dim_value > 0
        else {0: 1, 1: 3}.get(i, STAND_IN)
        for i, d in enumerate(dims)
    )
    values = 1
    for size in shape:
        values *= size
    if values > MAX_CHECK_VALUES:
        raise UserModelError(
            f"This ONNX model's input {tuple(shape)} has {values:,} values, more than the "
            f"{MAX_CHECK_VALUES:,} of a 4096-pixel RGB image, the most this server runs it on."
        )
    return shape


def _out_of_memory(err: BaseException) -> bool:
    text = str(err).lower()
    return isinstance(err, MemoryError) or "allocate memory" in text or "out of memory" in text


def converted_ops(module, shape: tuple[int, ...]) -> set[str]:
    """Every operator `module` calls when run once on zeros of `shape`, as torch's dispatcher
    names them ("aten::convolution", "aten::add.Tensor"): beneath Python, after torch's own
    composite operators are broken up, so nothing a module computes escapes it. Compare them
    with `gate.check_ops`. UserModelError when the run fails."""
    import torch

    from saliency.compat_torch import TorchDispatchMode

    class Recorder(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: set[str] = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.add(func.name())
            return func(*args, **(kwargs or {}))

    x = torch.zeros(shape)  # made outside the recorder: the model's operators only
    recorder = Recorder()
    try:
        with recorder, torch.no_grad():
            module(x)
    except Exception as err:  # noqa: BLE001 - onnx2torch's modules raise their own kinds
        if _out_of_memory(err):
            raise
        raise UserModelError(
            f"This ONNX model does not run on an input of the shape it declares, {shape} (a "
            f"symbolic batch as 1): {_first_line(err)}"
        ) from None
    return recorder.ops


def _first_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return (lines[0] if lines else type(err).__name__)[:300]


def read_onnx(data: bytes, *, check: bool = True) -> tuple[Any, set[str]]:
    """The ONNX file `data` as a torch module in eval mode with frozen parameters, and the
    torch operators it calls (`converted_ops`), each on the gate's allowlist (`check=False`
    lists them without checking: tools/build_allowlist.py). Raises UserModelError saying why
    not. Parses and runs a file a user sent: call it only in a sandboxed worker, or on your
    own files."""
    limit, lifted = _limit()
    if len(data) > limit:
        where = (
            "the most this index reads for one model (--max-model-mb)"
            if lifted
            else "the most this server reads for one model. On your own machine, python -m "
            "workspace.index reads models of any size"
        )
        raise UserModelError(
            f"The ONNX file has {len(data) / 2**20:,.1f} MB, more than {limit / 2**20:,.0f} MB, "
            f"{where}."
        )
    if missing():
        raise UserModelError(INSTALL)
    import onnx
    import onnx2torch
    from google.protobuf.message import DecodeError

    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError):
        raise UserModelError(
            "This is not a readable ONNX file: its protobuf is damaged or cut short."
        ) from None
    _refuse_external_data(model)
    _refuse_unknown_operators(model)  # before the checker, which knows no custom domain
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError, RuntimeError) as err:
        raise UserModelError(
            f"This ONNX file is malformed (cut short, or not written by an exporter): "
            f"{_first_line(err)}"
        ) from None
    _fold_identity_initializers(model)
    if _opset(model) > TARGET_OPSET and _needs_older_opset(model):
        from onnx import version_converter

        try:
            model = version_converter.convert_version(model, TARGET_OPSET)
        except Exception as err:  # noqa: BLE001 - onnx's converter raises its own kinds
            raise UserModelError(
                f"This ONNX file's opset {_opset(model)} is newer than onnx2torch converts, and "
                f"onnx could not convert it to opset {TARGET_OPSET}: {_first_line(err)}. "
                f"Export it with opset_version={TARGET_OPSET}."
            ) from None
        _fold_identity_initializers(model)
    shape = input_shape(model)
    with _naming_the_operator() as seen:
        try:
            module = onnx2torch.convert(model)
        except Exception as err:  # noqa: BLE001 - a converter's failure names no operator
            op = seen[-1] if seen else "?"
            raise UserModelError(
                f"This model uses the ONNX operator {op}, which can't be converted: "
                f"{_first_line(err)}"
            ) from None
    del model
    module.eval()
    module.requires_grad_(False)
    ops = converted_ops(module, shape)
    if check:
        from . import gate

        try:
            gate.check_ops(ops)
        except UserModelError as err:
            raise UserModelError(
                f"{err} This ONNX model's operators call it once onnx2torch converts them."
            ) from None
    return module, ops


def warm_up() -> None:
    """Read and run a tiny ONNX model once, so that every module reading one needs (onnx's
    checker, shape inference and version converter, onnx2torch's converters) is imported
    before a worker's lockdown, which forbids opening files. For the workers' fork server;
    nothing happens when onnx or onnx2torch is not installed."""
    if missing():
        return
    import numpy as np
    import torch
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = {
        "w": rng.random((2, 1, 3, 3), dtype=np.float32),
        "b": np.zeros(2, np.float32),
        "w2": rng.random((3, 2), dtype=np.float32),
        "b2": np.zeros(3, np.float32),
    }
    nodes = [  # as torch 2.14 exports: opset 20, a shared bias behind an Identity
        helper.make_node("Identity", ["b"], ["b_"]),
        helper.make_node("Conv", ["x", "w", "b_"], ["c"]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Identity", ["r"], ["r_"]),
        helper.make_node("Add", ["r", "r_"], ["a"]),
        helper.make_node("GlobalAveragePool", ["a"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "w2", "b2"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "warm_up",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(a, name) for name, a in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    module, _ = read_onnx(model.SerializeToString())
    with torch.no_grad():
        module(torch.rand(2, 1, 4, 4))
    # Many of onnx2torch's modules ask this on every call; it imports torch.onnx's exporter.
    torch.onnx.is_in_onnx_export()
