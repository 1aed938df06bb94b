"""Reading a model file: what kind it is, and the model in it, through the gate.

The reading half of `sandbox.user_models` (which checks, measures and accepts uploads and
re-exports these names): the sandboxed worker (`sandbox.worker`) and a workspace's model
(`workspace`) read files with it. It imports neither of them, nor `user_models`.

Three kinds of file are accepted (and ONNX and safetensors), and nothing else is ever
unpickled: read `sandbox.user_models`'s docstring for each. Every problem a user can cause
raises `UserModelError` with a message meant for them. Never imports streamlit.
"""

from __future__ import annotations

import io
import json
import os
import re
import threading
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pretrained import registry
from pretrained.architectures import ARCHITECTURES, Normalize, build_model, pick_output
from pretrained.data import CLASS_NAMES, DATASETS
from pretrained.registry import default_device

from . import gate as gate_module
from . import named_weights, onnx_models, safetensors_file
from .gate import UserModelError
from .text import output_key

__all__ = [
    "KINDS",
    "WEIGHTS",
    "Preprocessed",
    "TableProgram",
    "UserModelError",
    "detect_kind",
    "error_line",
    "parse_class_names",
    "read_model",
    "read_model_with_ops",
    "read_table_model",
    "shape_hint",
]

KINDS = ("torchscript", "export", "state_dict", "onnx", "safetensors")
WEIGHTS = ("state_dict", "safetensors")  # weights for an architecture named with them: no code
MAX_CLASS_NAMES = 1000
_FORCE_WEIGHTS_ONLY = threading.Lock()


class Preprocessed(nn.Module):
    """`model(normalize(x))`: the normalisation a user's model expects, as its first layer.

    Shapes: `(N, 1, 28, 28)` in [0, 1] -> whatever `model` returns. A model loaded from a
    `torch.export` program refuses `.train()`/`.eval()`, so this wrapper keeps it permanently in
    eval mode and switches only itself.
    """

    def __init__(self, model: nn.Module, mean: float = 0.0, std: float = 1.0) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.model = model
        self.output: str | int | None = None  # which entry of a tuple or dict: `pick_output`
        for m in self.modules():  # eval mode without calling .eval() on the inner model
            m.training = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pick_output(self.model(self.normalize(x)), self.output)

    def train(self, mode: bool = True) -> Preprocessed:
        self.training = mode  # the inner model stays in eval mode: it was trained elsewhere
        return self


class TableProgram(nn.Module):
    """A table model read from a file, as it is: rows `(N, D)` in, whatever it returns out.
    Kept in eval mode by setting the flags (an exported program refuses `.eval()`)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        for m in self.modules():
            m.training = False

    def forward(self, x: torch.Tensor) -> Any:
        return self.model(x)

    def train(self, mode: bool = True) -> TableProgram:
        self.training = mode  # the inner model stays in eval mode: it was trained elsewhere
        return self


def parse_class_names(text: str | bytes | None) -> tuple[str, ...] | None:
    """Class names from a text file: one per line, or a JSON list of strings. None if empty."""
    if text is None:
        return None
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise UserModelError("The class-names file is not UTF-8 text.") from None
    text = text.strip()
    if not text:
        return None
    if text.startswith("["):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as err:
            raise UserModelError(f"The class names look like JSON but are not: {err}.") from None
        if not isinstance(names, list) or not all(isinstance(n, (str, int)) for n in names):
            raise UserModelError("The JSON class names must be a list of strings.")
        names = [str(n) for n in names]
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) > MAX_CLASS_NAMES:
        raise UserModelError(f"Too many class names: {len(names)} (at most {MAX_CLASS_NAMES}).")
    return tuple(n[:100] for n in names)


def detect_kind(data: bytes) -> str:
    """ "torchscript", "export" or "state_dict", from the archive's file names (nothing is
    unpickled or inflated: `gate.check_archive` runs first); "onnx" from the outer fields of an
    ONNX protobuf (nothing is parsed: `onnx_models.looks_like_onnx`). Raises UserModelError for
    anything else. "safetensors" from its header, checked whole (`safetensors_file.check`)."""
    if safetensors_file.looks_like(data):
        safetensors_file.check(data)
        return "safetensors"
    if not data.startswith(b"PK") and onnx_models.looks_like_onnx(data):
        return "onnx"
    if not data.startswith(b"PK") and onnx_models.looks_cut_short(data):
        raise UserModelError(
            "This looks like an ONNX file cut short: its last part runs past the end of the "
            "file. Send the whole file."
        )
    gate_module.check_archive(data)
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    inner = {n.split("/", 1)[1] if "/" in n else n for n in names}
    if "models/model.json" in inner or "serialized_exported_program.json" in inner:
        return "export"
    if "constants.pkl" in inner or any(n.startswith("code/") for n in inner):
        return "torchscript"
    if "data.pkl" in inner:
        return "state_dict"
    raise UserModelError(
        "This ZIP archive is not a PyTorch model file (no TorchScript code, exported program or "
        "torch.save data in it)."
    )


@contextmanager
def _weights_only_everywhere():
    """Force `weights_only=True` on every `torch.load` inside (torch.export.load falls back to
    a full unpickler otherwise). Process-wide while it lasts, so only ever stricter."""
    with _FORCE_WEIGHTS_ONLY:
        old = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
        os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
        try:
            yield
        finally:
            if old is None:
                del os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"]
            else:
                os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = old


def load_program(data: bytes, kind: str) -> tuple[Any, nn.Module]:
    """A "torchscript" file, else a torch.export one, read as it is: the program (what the
    gate's operator check reads) and the module that runs it. Raises whatever torch raises;
    an exported program's `torch.load`s are weights-only."""
    if kind == "torchscript":
        program = torch.jit.load(io.BytesIO(data), map_location="cpu")
        return program, program
    with _weights_only_everywhere():
        program = torch.export.load(io.BytesIO(data))
    return program, program.module()


DYNAMIC_EXPORT = (
    'torch.export.save(torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("'
    'batch")},)), "m.pt2")'
)


def error_line(err: BaseException) -> str:
    """The line of an error that says what went wrong: for TorchScript, the last "…Error: …"
    line of its interpreter traceback, not its boilerplate first line; and a word on the
    sandbox when that is what refused."""
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    if lines and lines[0].startswith("The following operation failed in the TorchScript"):
        errors = [ln for ln in lines if ln.split(":", 1)[0].endswith(("Error", "Exception"))]
        if errors:
            lines = [errors[-1].split(":", 1)[1].strip() or errors[-1]]
    text = lines[0] if lines else type(err).__name__
    if "Operation not permitted" in text:
        text += " (the sandbox lets a model compute, not open files, start programs or connect)"
    return text[:400] + shape_hint(text)


_CHANNELS = (
    re.compile(r"size\(\)\[1\] == (\d+)"),  # torch.export's guard on the channel dimension
    re.compile(
        r"expected input(?:\[[^\]]*\])? to have (\d+) channels"
    ),  # a first convolution's check
)
_SIDE = re.compile(r"size\(\)\[([23])\] == (\d+)")  # torch.export's guard on height or width


def shape_hint(text: str) -> str:
    """What to change when torch's words say the images have the wrong shape: the Your model
    page's choice and the command line's flag, since either may have made them."""
    for pattern in _CHANNELS:
        if match := pattern.search(text):
            n = int(match.group(1))
            if n == 1:
                return (
                    ". This model takes 1 colour channel: choose Colours: grey (or --grey "
                    "for python -m workspace.index)."
                )
            if n == 3:
                return (
                    ". This model takes 3 colour channels: choose Colours: RGB (or --rgb "
                    "for python -m workspace.index)."
                )
            return f". This model takes {n} colour channels; images here have 1 or 3."
    if match := _SIDE.search(text):
        side = "high" if match.group(1) == "2" else "wide"
        n = int(match.group(2))
        return (
            f". This model takes images {n} pixels {side}: set Resize and Centre crop to {n} "
            f"(or --resize {n} --crop {n} for python -m workspace.index)."
        )
    return ""


def _resolve_kind(data: bytes, kind: str) -> str:
    detected = detect_kind(data)
    if kind == "auto":
        return detected
    if kind not in KINDS:
        raise UserModelError(f"Unknown kind {kind!r}; known: {', '.join(KINDS)}.")
    if kind != detected:
        raise UserModelError(f"You chose {kind}, but the file is a {detected} file.")
    return kind


def read_model_with_ops(
    data: bytes, *, output: str | int | None = None, table: bool = False, **settings
) -> tuple[nn.Module, set[str]]:
    """`_read_model_with_ops` (below), whose image model takes its scores from entry
    `output` of what the program returns (`architectures.pick_output`: by position, field
    name or dict key; None: the tensor itself, or the one entry that can be scores)."""
    model, ops = _read_model_with_ops(data, table=table, **settings)
    if not table and hasattr(model, "output"):
        model.output = output_key(output)
    elif output_key(output) is not None and not table:
        raise UserModelError("Output applies to a program that returns a tuple or dict; "
                             "these weights' architecture returns one tensor.")  # fmt: skip
    return model, ops


def _read_model_with_ops(
    data: bytes,
    *,
    kind: str = "auto",
    dataset: str = "mnist",
    architecture: str | None = None,
    normalisation: tuple[float, float] = (0.0, 1.0),
    preprocessing: dict | None = None,
    device: str | torch.device | None = None,
    gate: bool = True,
    table: bool = False,
) -> tuple[nn.Module, set[str]]:
    """`read_model`, and the operators the program calls (empty for a state dict, whose code
    is the registry's own). `gate=False` skips the operator allowlist: only the sandbox's own
    tests do that. `preprocessing` (a workspace's `Preprocessing` as a dict: channels, mean and
    std per channel) replaces `dataset` and `normalisation` for a program trained on images
    of any shape (a workspace uploaded on the Your model page). `table=True` reads a table
    model instead (`read_table_model`)."""
    if preprocessing is not None:
        if _resolve_kind(data, kind) in WEIGHTS:
            return _read_workspace_weights(data, architecture, preprocessing, device), set()
        return _read_workspace_program(data, kind, preprocessing, device, gate)
    if table:
        return read_table_model(data, kind=kind, device=device, gate=gate)
    if dataset not in DATASETS:
        raise UserModelError(f"Unknown data set {dataset!r}; known: {', '.join(DATASETS)}.")
    kind = _resolve_kind(data, kind)
    device = default_device() if device is None else torch.device(device)
    mean, std = normalisation
    if not std > 0:
        raise UserModelError(f"The normalisation std must be positive, got {std}.")
    _check_registry_architecture(kind, architecture)
    if kind == "safetensors":
        return _registry_weights(data, architecture, dataset, device), set()
    try:
        if kind in ("torchscript", "export"):
            program, inner = load_program(data, kind)
        elif kind == "onnx":
            inner, ops = onnx_models.read_onnx(data)
            model = Preprocessed(inner, mean, std)
            return model.to(device), ops
        else:
            model = model_from_weights(
                data, architecture=architecture, dataset=dataset, device=device
            )
            return model, set()
    except UserModelError:
        raise
    except Exception as err:  # noqa: BLE001
        if kind == "state_dict" and "weights only" in str(err).lower():
            raise UserModelError(
                "Refused: this file holds Python objects, not just tensors, and unpickling them "
                "could run code. Save only the weights: torch.save(model.state_dict(), path); or "
                "upload TorchScript (torch.jit.save) or a torch.export program."
            ) from None
        raise UserModelError(f"Could not read this {kind} file: {error_line(err)}") from None
    ops = gate_module.program_ops(program)
    if gate:
        gate_module.check_ops(ops)
    model = Preprocessed(inner, mean, std)
    model.requires_grad_(False)
    return model.to(device), ops


def model_from_weights(
    source: str | os.PathLike | bytes | io.IOBase,
    *,
    architecture: str,
    dataset: str,
    device: str | torch.device | None = None,
) -> nn.Module:
    """A registry architecture with weights from elsewhere (e.g. a user's upload).

    `source` is a path, the file's bytes, or a binary file object holding a state dict saved
    with `torch.save(model.state_dict())` from `build_model(architecture)`; its ZIP directory
    is checked first (`gate.check_archive`: no compressed tensors, a bounded total, so a ZIP
    bomb is refused before anything is inflated), then it is read with `weights_only=True`.
    The data set fixes class names and normalisation. Returns the model like `registry.load_model`
    does: eval mode, frozen parameters. Raises `ValueError` saying which keys or shapes do not
    match.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; known datasets: {', '.join(DATASETS)}")
    device = default_device() if device is None else torch.device(device)
    if isinstance(source, str | os.PathLike):
        data = Path(source).read_bytes()
    elif isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        data = source.read()
    gate_module.check_archive(data)
    try:
        state = torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    except Exception as err:  # noqa: BLE001 - unpickling errors come in many types
        raise ValueError(f"not a readable PyTorch weights file: {err}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError("expected a state dict (a mapping of names to tensors)")
    return registry.from_state(architecture, dataset, state, device)


def _check_registry_architecture(kind: str, architecture: str | None) -> None:
    """Weights for the bundled data sets' 28 × 28 grey images need a registry architecture."""
    if kind not in WEIGHTS or architecture in ARCHITECTURES:
        return
    what = "A state dict" if kind == "state_dict" else "A safetensors file"
    if architecture:
        named_weights.source_of(architecture)  # an unknown name: says what is known
        raise UserModelError(
            f"{what} for MNIST or Fashion-MNIST needs one of the registry's architectures "
            f"({', '.join(ARCHITECTURES)}), which take 28 × 28 grey images; "
            f"{architecture[:100]} goes in the form for your own images, with a ZIP of them."
        )
    raise UserModelError(f"{what} needs an architecture: one of {', '.join(ARCHITECTURES)}.")


def _registry_weights(data, architecture, dataset, device) -> nn.Module:
    """A safetensors file's weights in a registry architecture, normalised as `dataset` is."""
    from pretrained.data import NORMALISATION

    state = safetensors_file.read(data)
    net = build_model(architecture, len(CLASS_NAMES[dataset]), normalisation=NORMALISATION[dataset])
    named_weights.fit(net, state, architecture)
    net.requires_grad_(False)
    return net.to(default_device() if device is None else torch.device(device)).eval()


def _read_workspace_weights(data, architecture, preprocessing, device) -> nn.Module:
    """A state dict's or safetensors file's weights in a named architecture (registry,
    torchvision, timm), for images prepared as `preprocessing` says; code is never read from
    the file."""
    from pretrained.architectures import Prepared

    from .preparation import Preprocessing, WorkspaceError

    try:
        pre = Preprocessing(**preprocessing)
    except (TypeError, WorkspaceError) as err:
        raise UserModelError(f"Bad preprocessing settings: {err}") from None
    net = named_weights.model_from_weights(data, architecture)
    device = default_device() if device is None else torch.device(device)
    return Prepared(net, pre).to(device)


def _read_workspace_program(data, kind, preprocessing, device, gate) -> tuple[nn.Module, set]:
    from pretrained.architectures import Prepared

    from .preparation import Preprocessing, WorkspaceError

    try:
        pre = Preprocessing(**preprocessing)
    except (TypeError, WorkspaceError) as err:
        raise UserModelError(f"Bad preprocessing settings: {err}") from None
    inner, ops = _read_program(data, kind, gate, "For your own images")
    device = default_device() if device is None else torch.device(device)
    return Prepared(inner, pre).to(device), ops


def _read_program(data: bytes, kind: str, gate: bool, what: str) -> tuple[nn.Module, set]:
    """A TorchScript or torch.export file as a module, and its operators (checked against
    the allowlist when `gate`). A state dict is refused: it needs the model's Python code,
    which is never imported from an upload. `what` starts that refusal."""
    kind = _resolve_kind(data, kind)
    if kind in WEIGHTS:
        raise UserModelError(
            f"{what}, upload the model as TorchScript (torch.jit.save(torch.jit.script(model), "
            "'m.pt')) or a torch.export program: a state dict needs the architecture's code, "
            "which the sandbox does not import."
        )
    if kind == "onnx":
        return onnx_models.read_onnx(data)
    try:
        program, inner = load_program(data, kind)
    except Exception as err:  # noqa: BLE001
        raise UserModelError(f"Could not read this {kind} file: {error_line(err)}") from None
    ops = gate_module.program_ops(program)
    if gate:
        gate_module.check_ops(ops)
    return inner, ops


def read_table_model(
    data: bytes, *, kind: str = "auto", device: str | torch.device | None = None, gate: bool = True
) -> tuple[nn.Module, set[str]]:
    """A table model (rows `(N, D)` in, a tensor, tuple or dict out) from a TorchScript or
    torch.export file, taken as it is: no preprocessing is added (a model that standardises
    does it in its own forward). Eval mode, frozen parameters; and its operators."""
    if not zipfile.is_zipfile(io.BytesIO(data)) and not onnx_models.looks_like_onnx(data):
        raise UserModelError(
            "This is not a TorchScript, torch.export or ONNX file: a pickle "
            "or a legacy torch.save file is never unpickled here. Save the model with "
            "torch.export.save(torch.export.export(model, (x,)), 'm.pt2') or "
            "torch.jit.save(torch.jit.script(model), 'm.pt')."
        )
    inner, ops = _read_program(data, kind, gate, "For a table")
    for p in inner.parameters():  # a ScriptModule has no requires_grad_()
        p.requires_grad_(False)
    device = default_device() if device is None else torch.device(device)
    return TableProgram(inner).to(device), ops


def read_model(
    data: bytes,
    *,
    kind: str = "auto",
    dataset: str = "mnist",
    architecture: str | None = None,
    normalisation: tuple[float, float] = (0.0, 1.0),
    device: str | torch.device | None = None,
    output: str | int | None = None,
) -> nn.Module:
    """The file as a model taking `(N, 1, 28, 28)` pixels in [0, 1], in eval mode, with frozen
    parameters, read in *this* process. Not yet checked: see `check_model`.

    The gate applies: the archive is checked before it is read, and a program's operators
    before it runs (`sandbox.gate`). Reading a TorchScript file runs its `__setstate__`,
    so a server reads uploads with `accept_upload` (in a sandbox), not with this.
    `normalisation` (mean, std) is applied before TorchScript and exported models; a state
    dict's registry architecture already normalises with the data set's statistics.
    """
    return read_model_with_ops(
        data,
        kind=kind,
        dataset=dataset,
        architecture=architecture,
        normalisation=normalisation,
        device=device,
        output=output,
    )[0]
