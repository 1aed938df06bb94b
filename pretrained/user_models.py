"""A user's own model for the bundled data sets: load it safely, check it, measure it.

    >>> worker, info = accept_upload(data, dataset="mnist")  # a server: in a sandboxed worker
    >>> worker.call("probabilities", x)                       # (N, 1, 28, 28) -> (N, K)
    >>> model, info = load_user_model(data, dataset="mnist")  # your own file, in this process
    >>> info.name, info.kind, info.test_accuracy  # "upload:3f2a...", "torchscript", 0.98

A model file is a program. `accept_upload` is what a server uses for a file it did not write:
the gate (`pretrained.gate`) checks the archive, and the file is read, checked and run only
inside a sandboxed worker process (`pretrained.worker`), which the program's operators are
checked in too before it runs once. `load_user_model` and `read_model` run in the calling
process, for files you trust as much as your own code; they apply the same gate.

Three kinds of file are accepted, and nothing else is ever unpickled:

- "torchscript": `torch.jit.save(torch.jit.script(model))`, read by `torch.jit.load` (a zip of
  TorchScript code and tensors, read by TorchScript's own restricted unpickler);
- "export": `torch.export.save(torch.export.export(model, (x,)))`, read by `torch.export.load`
  with every `torch.load` inside it forced to `weights_only=True` (its own fallback would
  otherwise unpickle arbitrary objects);
- "safetensors": weights in a safetensors file (recognised by its header, which is checked
  whole before a byte is read: `pretrained.safetensors_file`) for a registry architecture; on
  your own images, state dicts and safetensors files may name a torchvision or timm
  architecture too (`pretrained.named_weights`), whose code the sandbox imports before it
  locks down;
- "state_dict": weights for a registry architecture, through `registry.model_from_weights`
  (`weights_only=True`).

The model takes the project's images, `(N, 1, 28, 28)` greyscale in [0, 1]; an optional
`(mean, std)` normalisation is applied before it, as a layer, so saliency stays with respect to
pixels. Every problem a user can cause raises `UserModelError` with a message meant for them.
Never imports streamlit.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import threading
import zipfile
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from . import gate as gate_module
from . import named_weights, onnx_models, safetensors_file
from .architectures import ARCHITECTURES, Normalize, build_model, pick_output
from .data import CLASS_NAMES, DATASETS, load_dataset
from .evaluation import evaluate
from .gate import UserModelError
from .registry import default_device, model_from_weights
from .text import output_key

__all__ = [
    "KINDS",
    "TIME_LIMIT",
    "Preprocessed",
    "UserModelError",
    "UserModelInfo",
    "accept_upload",
    "check_model",
    "detect_kind",
    "load_user_model",
    "parse_class_names",
    "read_model",
    "read_model_with_ops",
]

KINDS = ("torchscript", "export", "state_dict", "onnx", "safetensors")
WEIGHTS = ("state_dict", "safetensors")  # weights for an architecture named with them: no code
TIME_LIMIT = 2.0  # seconds for one example's forward pass; slower models are refused
TEST_IMAGES: int | None = None  # test images to measure accuracy on (None: all 10,000)
MAX_CLASS_NAMES = 1000
MAX_CHUNK = 256  # test images per request while measuring an upload's accuracy
_FORCE_WEIGHTS_ONLY = threading.Lock()


@dataclass(frozen=True)
class UserModelInfo:
    """What is known about an accepted user model (the registry's `ModelInfo`, for uploads).

    `name` is "upload:" + the first 12 hex digits of the sha256 of the file and the settings,
    so the same file with the same settings is the same model. `test_accuracy` is measured on
    the bundled test set when the model is accepted.
    """

    name: str
    dataset: str
    kind: str
    architecture: str | None
    class_names: tuple[str, ...]
    normalisation: tuple[float, float]
    filename: str
    weights_sha256: str  # of the uploaded file
    n_params: int
    test_accuracy: float
    n_test: int  # test images the accuracy was measured on
    seconds_per_example: float

    @property
    def description(self) -> str:
        what = {
            "torchscript": "TorchScript",
            "export": "torch.export program",
            "onnx": "ONNX model",
            "safetensors": f"safetensors weights for the {self.architecture!r} architecture",
        }.get(self.kind, f"state dict for the {self.architecture!r} architecture")
        return f"Your upload {self.filename or '(unnamed)'}: {what}, trained for {self.dataset}."


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
                    "for python -m pretrained.index)."
                )
            if n == 3:
                return (
                    ". This model takes 3 colour channels: choose Colours: RGB (or --rgb "
                    "for python -m pretrained.index)."
                )
            return f". This model takes {n} colour channels; images here have 1 or 3."
    if match := _SIDE.search(text):
        side = "high" if match.group(1) == "2" else "wide"
        n = int(match.group(2))
        return (
            f". This model takes images {n} pixels {side}: set Resize and Centre crop to {n} "
            f"(or --resize {n} --crop {n} for python -m pretrained.index)."
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
        if kind == "torchscript":
            program = torch.jit.load(io.BytesIO(data), map_location="cpu")
            inner = program
        elif kind == "export":
            with _weights_only_everywhere():
                program = torch.export.load(io.BytesIO(data))
            inner = program.module()
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
    from .data import NORMALISATION

    state = safetensors_file.read(data)
    net = build_model(architecture, len(CLASS_NAMES[dataset]), normalisation=NORMALISATION[dataset])
    named_weights.fit(net, state, architecture)
    net.requires_grad_(False)
    return net.to(default_device() if device is None else torch.device(device)).eval()


def _read_workspace_weights(data, architecture, preprocessing, device) -> nn.Module:
    """A state dict's or safetensors file's weights in a named architecture (registry,
    torchvision, timm), for images prepared as `preprocessing` says; code is never read from
    the file."""
    from .architectures import Prepared
    from .workspace import Preprocessing, WorkspaceError

    try:
        pre = Preprocessing(**preprocessing)
    except (TypeError, WorkspaceError) as err:
        raise UserModelError(f"Bad preprocessing settings: {err}") from None
    net = named_weights.model_from_weights(data, architecture)
    device = default_device() if device is None else torch.device(device)
    return Prepared(net, pre).to(device)


def _read_workspace_program(data, kind, preprocessing, device, gate) -> tuple[nn.Module, set]:
    from .architectures import Prepared
    from .workspace import Preprocessing, WorkspaceError

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
        if kind == "torchscript":
            program = torch.jit.load(io.BytesIO(data), map_location="cpu")
            inner = program
        else:
            with _weights_only_everywhere():
                program = torch.export.load(io.BytesIO(data))
            inner = program.module()
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
    before it runs (`pretrained.gate`). Reading a TorchScript file runs its `__setstate__`,
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


@contextmanager
def checked_worker(
    worker, kind: str, *, n_classes: int, time_limit: float | None = None, judge=None
):
    """Start `worker` (the model is read and run on one example in its sandbox), judge that
    check (`judge(facts)`, by default `judge_check` for an image classifier), and yield the
    seconds one example took. Whatever fails, at the start or in the body (a refusal, a
    malformed reply, a model that hangs, hoards memory or crashes), stops the worker and
    raises UserModelError saying why."""
    from .worker import ModelFailure

    try:
        with worker.keep():  # not stopped to make room for another model while this lasts
            facts = worker.start()
            limit = TIME_LIMIT if time_limit is None else time_limit
            try:
                if judge is not None:
                    seconds = judge(facts)
                else:
                    seconds = judge_check(facts, n_classes=n_classes, time_limit=limit)
                    two = np.concatenate([worker.example, worker.example])
                    judge_batch(worker.call("batch_check", two))
            except (KeyError, TypeError, ValueError) as err:  # facts come from the sandbox
                if isinstance(err, UserModelError):
                    raise
                raise UserModelError("The model's worker sent a malformed reply.") from None
            yield seconds
    except UserModelError:
        worker.stop()
        raise
    except ModelFailure as err:
        worker.stop()
        if worker.facts is None:
            raise UserModelError(str(err)) from None
        raise _batch_failure(err, kind) from None


def judge_check(facts: dict, *, n_classes: int, time_limit: float = TIME_LIMIT) -> float:
    """Refuse a model from what one example gave (`jobs.check`'s facts); its seconds if fine."""
    if facts.get("type") != "Tensor":
        raise UserModelError(
            f"The model returned a {facts.get('type')}, expected a tensor of shape "
            f"(1, {n_classes})."
        )
    shape = tuple(facts["shape"])
    if len(shape) != 2 or shape[0] != 1:
        raise UserModelError(
            f"The model returned shape {shape} for one image; expected (1, K) "
            f"scores, K = {n_classes}."
        )
    if shape[1] != n_classes:
        raise UserModelError(
            f"The model returns {shape[1]} scores but there are {n_classes} class names. If it "
            "returns a tuple or dict, name the entry that holds the scores in Output (--output "
            "for python -m pretrained.index)."
        )
    if not facts["finite"]:
        raise UserModelError("The model's output contains NaN or inf for a test image.")
    seconds = float(facts["seconds"])
    if seconds > time_limit:
        raise UserModelError(
            f"The model is too slow: {seconds:.1f} s for one image (the limit is "
            f"{time_limit:g} s), so the maps would take minutes."
        )
    return seconds


def judge_batch(answer: dict) -> None:
    """Refuse a model that ran on one image but not on a batch (`jobs.batch_check`)."""
    if answer.get("error"):
        raise UserModelError(
            "The model runs on one image but not on a batch of two "
            f"({error_line(RuntimeError(answer['error'])).rstrip('.')}). Its batch size was "
            "fixed when it was saved: torch.jit.trace records the traced batch's shapes as "
            "constants, and torch.export without dynamic_shapes fixes the batch. Save it with "
            f"a dynamic batch: {DYNAMIC_EXPORT}."
        )


def judge_table_check(facts: dict) -> float:
    """Refuse a table model from what one row gave (`jobs.table_outputs`'s facts): it must
    return a tensor, or a tuple or dict holding at least one float tensor of (1, K) values."""
    outputs = [o for o in facts["outputs"] if o["floating"] and len(o["shape"]) in (1, 2)]
    if not outputs:
        raise UserModelError(
            f"The model returned a {facts.get('type')} with no float tensor of one row's "
            "outputs in it ((1,) or (1, K)): there is nothing to differentiate."
        )
    return float(facts["seconds"])


def check_model(
    model: nn.Module, x: torch.Tensor, *, n_classes: int, time_limit: float = TIME_LIMIT
) -> float:
    """Run one example `x` `(1, 1, 28, 28)` in this process; return the seconds it took.

    Raises UserModelError when the model fails on it (first line of its error), returns
    anything but a `(1, n_classes)` tensor, returns NaN or inf, or takes more than
    `time_limit` seconds (measured, then refused: nothing is interrupted here; the sandboxed
    worker of `accept_upload` does interrupt).
    """
    from .jobs import batch_check, check

    try:
        facts = check(model, x, n_classes=n_classes)
    except Exception as err:  # noqa: BLE001 - any failure of user code is reported, not raised
        raise UserModelError(
            f"The model failed on one {tuple(x.shape)} image: {error_line(err)}"
        ) from None
    seconds = judge_check(facts, n_classes=n_classes, time_limit=time_limit)
    judge_batch(batch_check(model, torch.cat([x, x])))
    return seconds


def _digest(data: bytes, settings: dict) -> str:
    h = hashlib.sha256(data)
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()


def _class_names(dataset: str, class_names: Sequence[str] | None) -> tuple[str, ...]:
    if dataset not in DATASETS:
        raise UserModelError(f"Unknown data set {dataset!r}; known: {', '.join(DATASETS)}.")
    names = tuple(class_names) if class_names else CLASS_NAMES[dataset]
    if len(names) != len(CLASS_NAMES[dataset]):
        raise UserModelError(
            f"{len(names)} class names given, but {dataset} has {len(CLASS_NAMES[dataset])} "
            "classes: a model for this data set must score each of them."
        )
    return names


def _batch_failure(err: BaseException, kind: str) -> UserModelError:
    from .worker import WrongAnswer

    hint = (
        f" (save it with a dynamic batch size: {DYNAMIC_EXPORT})"
        if kind in ("export", "torchscript") and not isinstance(err, WrongAnswer)
        else ""
    )
    return UserModelError(
        f"The model works on one image but failed on a batch of test images: "
        f"{error_line(err)}{hint}"
    )


def _info(
    data: bytes,
    *,
    dataset: str,
    kind: str,
    architecture: str | None,
    normalisation: tuple[float, float],
    names: tuple[str, ...],
    filename: str,
    n_params: int,
    accuracy: float,
    n_test: int,
    seconds: float,
    output: str | int | None = None,
) -> UserModelInfo:
    settings = {
        "dataset": dataset,
        "kind": kind,
        "architecture": architecture if kind in WEIGHTS else None,
        "normalisation": list(normalisation) if kind not in WEIGHTS else None,
        "class_names": list(names),
    }
    if output_key(output) is not None:  # the same file read at another output: another model
        settings["output"] = output_key(output)
    return UserModelInfo(
        name=f"upload:{_digest(data, settings)[:12]}",
        dataset=dataset,
        kind=kind,
        architecture=settings["architecture"],
        class_names=names,
        normalisation=tuple(normalisation),
        filename=filename,
        weights_sha256=hashlib.sha256(data).hexdigest(),
        n_params=int(n_params),
        test_accuracy=float(accuracy),
        n_test=n_test,
        seconds_per_example=seconds,
    )


def _test_set(dataset: str):
    test = load_dataset(dataset, "test")
    n_test = len(test) if TEST_IMAGES is None else min(TEST_IMAGES, len(test))
    if n_test < len(test):
        test = replace(test, images=test.images[:n_test], labels=test.labels[:n_test])
    return test


def load_user_model(
    data: bytes,
    *,
    dataset: str,
    kind: str = "auto",
    architecture: str | None = None,
    normalisation: tuple[float, float] = (0.0, 1.0),
    class_names: Sequence[str] | None = None,
    filename: str = "",
    time_limit: float | None = None,
    device: str | torch.device | None = None,
    output: str | int | None = None,
) -> tuple[nn.Module, UserModelInfo]:
    """Read, check and measure a model file *in this process*; `(model, info)` if usable.

    For your own files (the gate still applies). A server uses `accept_upload`, which does
    the same inside a sandboxed worker. Class names default to the data set's; the model must
    return one score per class name, and there must be as many as the data set has classes
    (its labels are what accuracy is measured against). Raises UserModelError saying what is
    wrong otherwise.
    """
    data = bytes(data)
    names = _class_names(dataset, class_names)
    kind = _resolve_kind(data, kind)
    model = read_model(
        data,
        kind=kind,
        dataset=dataset,
        architecture=architecture,
        normalisation=normalisation,
        device=device,
        output=output,
    )
    test = _test_set(dataset)
    device_ = next(iter(model.parameters()), torch.empty(0)).device
    limit = TIME_LIMIT if time_limit is None else time_limit
    x = test.images[:1].to(device_)  # (1, 1, 28, 28): the first test image
    seconds = check_model(model, x, n_classes=len(names), time_limit=limit)
    try:
        accuracy = evaluate(model, test).accuracy
    except Exception as err:  # noqa: BLE001 - e.g. a model that only accepts batches of one
        raise _batch_failure(err, kind) from None
    info = _info(
        data,
        dataset=dataset,
        kind=kind,
        architecture=architecture,
        normalisation=normalisation,
        names=names,
        filename=filename,
        n_params=sum(p.numel() for p in model.parameters()),
        accuracy=accuracy,
        n_test=len(test),
        seconds=seconds,
        output=output,
    )
    return model, info


def accept_upload(
    data: bytes,
    *,
    dataset: str,
    kind: str = "auto",
    architecture: str | None = None,
    normalisation: tuple[float, float] = (0.0, 1.0),
    class_names: Sequence[str] | None = None,
    filename: str = "",
    time_limit: float | None = None,
    limits=None,
    progress=None,
    output: str | int | None = None,
):
    """Check and measure an uploaded file without running any of it in this process.

    Returns `(worker, info)`: a started `pretrained.worker.Worker` that holds the model in
    its sandbox, and what was measured. In this process only the archive is inspected
    (`gate.check_archive`, which also refuses ZIP bombs before anything is inflated). The
    worker reads the file, checks its operators against the allowlist, runs one image; then
    the bundled test set goes through it in chunks, each under the worker's deadline, with
    `progress(done, total)` after each. Raises UserModelError with the reason otherwise (a
    model that hangs, hoards memory or crashes included); the worker is stopped then.
    """
    from . import sandbox
    from .worker import Limits, Worker

    data = bytes(data)
    names = _class_names(dataset, class_names)
    kind = _resolve_kind(data, kind)
    _check_registry_architecture(kind, architecture)
    mean, std = normalisation
    if not std > 0:
        raise UserModelError(f"The normalisation std must be positive, got {std}.")
    limits = limits or Limits()
    if sandbox.unavailable() and kind in WEIGHTS:
        # Weights only, for the registry's own code: no program of the user's runs.
        from dataclasses import replace as _replace

        limits = _replace(limits, confine=False)
    test = _test_set(dataset)
    settings = {
        "kind": kind,
        "dataset": dataset,
        "architecture": architecture,
        "normalisation": [float(mean), float(std)],
    }
    if output_key(output) is not None:  # which entry of a tuple or dict holds the scores
        settings["output"] = output_key(output)
    worker = Worker(
        data, settings, example=test.images[:1].numpy(), n_classes=len(names), limits=limits
    )
    images, labels = test.images.numpy(), test.labels.numpy()
    with checked_worker(worker, kind, n_classes=len(names), time_limit=time_limit) as seconds:
        # Chunks of about a second each, so progress moves and a deadline means something;
        # at most MAX_CHUNK images, whatever the model's own time says. Each chunk's answer
        # is refused from its header unless it is (chunk, K) (`Worker.call`), and only its
        # count of right answers is kept.
        chunk = int(min(MAX_CHUNK, max(16, 1.0 / max(seconds, 1e-4))))
        right = 0
        for i in range(0, len(images), chunk):
            logits = worker.call("logits", images[i : i + chunk])  # (chunk, K)
            right += int((logits.argmax(1) == labels[i : i + chunk]).sum())
            if progress:
                progress(min(i + chunk, len(images)), len(images))
    accuracy = right / len(test)
    info = _info(
        data,
        dataset=dataset,
        kind=kind,
        architecture=architecture,
        normalisation=normalisation,
        names=names,
        filename=filename,
        n_params=(worker.facts or {}).get("n_params", 0),
        accuracy=accuracy,
        n_test=len(test),
        seconds=seconds,
        output=output,
    )
    return worker, info
