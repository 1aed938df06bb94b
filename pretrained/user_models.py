"""A user's own model for the bundled data sets: load it safely, check it, measure it.

    >>> model, info = load_user_model(data, dataset="mnist")  # kind detected from the file
    >>> info.name, info.kind, info.test_accuracy  # "upload:3f2a...", "torchscript", 0.98
    >>> model(x).shape  # (N, 1, 28, 28) -> (N, K)

Three kinds of file are accepted, and nothing else is ever unpickled:

- "torchscript": `torch.jit.save(torch.jit.script(model))`, read by `torch.jit.load` (a zip of
  TorchScript code and tensors, read by TorchScript's own restricted unpickler);
- "export": `torch.export.save(torch.export.export(model, (x,)))`, read by `torch.export.load`
  with every `torch.load` inside it forced to `weights_only=True` (its own fallback would
  otherwise unpickle arbitrary objects);
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
import threading
import time
import zipfile
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
from torch import nn

from .architectures import ARCHITECTURES, Normalize
from .data import CLASS_NAMES, DATASETS, load_dataset
from .evaluation import evaluate
from .registry import default_device, model_from_weights

__all__ = [
    "KINDS",
    "TIME_LIMIT",
    "Preprocessed",
    "UserModelError",
    "UserModelInfo",
    "check_model",
    "detect_kind",
    "load_user_model",
    "parse_class_names",
    "read_model",
]

KINDS = ("torchscript", "export", "state_dict")
TIME_LIMIT = 2.0  # seconds for one example's forward pass; slower models are refused
TEST_IMAGES: int | None = None  # test images to measure accuracy on (None: all 10,000)
MAX_CLASS_NAMES = 1000
_FORCE_WEIGHTS_ONLY = threading.Lock()


class UserModelError(ValueError):
    """A user-facing message: what is wrong with the uploaded model, in plain words."""


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
        what = {"torchscript": "TorchScript", "export": "torch.export program"}.get(
            self.kind, f"state dict for the {self.architecture!r} architecture"
        )
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
        for m in self.modules():  # eval mode without calling .eval() on the inner model
            m.training = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(x))

    def train(self, mode: bool = True) -> Preprocessed:
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
    unpickled). Raises UserModelError for anything else."""
    if len(data) == 0:
        raise UserModelError("The file is empty (0 bytes).")
    if not data.startswith(b"PK\x03\x04"):
        if data[:1] == b"\x80":  # a bare pickle (torch.save's legacy format): weights only
            return "state_dict"
        raise UserModelError(
            "This file is not a PyTorch model: expected a TorchScript file (torch.jit.save), a "
            "torch.export program (torch.export.save) or a state dict (torch.save)."
        )
    try:
        names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise UserModelError("The file is a damaged ZIP archive, not a readable model.") from None
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


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:300]


def read_model(
    data: bytes,
    *,
    kind: str = "auto",
    dataset: str = "mnist",
    architecture: str | None = None,
    normalisation: tuple[float, float] = (0.0, 1.0),
    device: str | torch.device | None = None,
) -> nn.Module:
    """The uploaded file as a model taking `(N, 1, 28, 28)` pixels in [0, 1], in eval mode,
    with frozen parameters. Not yet checked: see `check_model`.

    `normalisation` (mean, std) is applied before TorchScript and exported models; a state
    dict's registry architecture already normalises with the data set's statistics.
    """
    if dataset not in DATASETS:
        raise UserModelError(f"Unknown data set {dataset!r}; known: {', '.join(DATASETS)}.")
    detected = detect_kind(data)
    if kind == "auto":
        kind = detected
    elif kind not in KINDS:
        raise UserModelError(f"Unknown kind {kind!r}; known: {', '.join(KINDS)}.")
    elif kind != detected:
        raise UserModelError(f"You chose {kind}, but the file is a {detected} file.")
    device = default_device() if device is None else torch.device(device)
    mean, std = normalisation
    if not std > 0:
        raise UserModelError(f"The normalisation std must be positive, got {std}.")
    try:
        if kind == "torchscript":
            inner = torch.jit.load(io.BytesIO(data), map_location="cpu")
        elif kind == "export":
            with _weights_only_everywhere():
                inner = torch.export.load(io.BytesIO(data)).module()
        else:
            if architecture not in ARCHITECTURES:
                raise UserModelError(
                    f"A state dict needs an architecture: one of {', '.join(ARCHITECTURES)}."
                )
            return model_from_weights(
                data, architecture=architecture, dataset=dataset, device=device
            )
    except UserModelError:
        raise
    except Exception as err:  # noqa: BLE001
        if kind == "state_dict" and "weights only" in str(err).lower():
            raise UserModelError(
                "Refused: this file holds Python objects, not just tensors, and unpickling them "
                "could run code. Save only the weights: torch.save(model.state_dict(), path); or "
                "upload TorchScript (torch.jit.save) or a torch.export program."
            ) from None
        raise UserModelError(f"Could not read this {kind} file: {_first_line(err)}") from None
    model = Preprocessed(inner, mean, std)
    model.requires_grad_(False)
    return model.to(device)


def check_model(
    model: nn.Module, x: torch.Tensor, *, n_classes: int, time_limit: float = TIME_LIMIT
) -> float:
    """Run one example `x` `(1, 1, 28, 28)`; return the seconds it took.

    Raises UserModelError when the model fails on it (first line of its error), returns
    anything but a `(1, n_classes)` tensor, returns NaN or inf, or takes more than
    `time_limit` seconds (measured, then refused: nothing is interrupted).
    """
    start = time.perf_counter()
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as err:  # noqa: BLE001 - any failure of user code is reported, not raised
        raise UserModelError(
            f"The model failed on one {tuple(x.shape)} image: {_first_line(err)}"
        ) from None
    seconds = time.perf_counter() - start
    if not isinstance(out, torch.Tensor):
        raise UserModelError(
            f"The model returned a {type(out).__name__}, expected a tensor of shape "
            f"(1, {n_classes})."
        )
    if out.ndim != 2 or out.shape[0] != 1:
        raise UserModelError(
            f"The model returned shape {tuple(out.shape)} for one image; expected (1, K) "
            f"scores, K = {n_classes}."
        )
    if out.shape[1] != n_classes:
        raise UserModelError(
            f"The model returns {out.shape[1]} scores but there are {n_classes} class names."
        )
    if not torch.isfinite(out).all():
        raise UserModelError("The model's output contains NaN or inf for a test image.")
    if seconds > time_limit:
        raise UserModelError(
            f"The model is too slow: {seconds:.1f} s for one image (the limit is "
            f"{time_limit:g} s), so the maps would take minutes."
        )
    return seconds


def _digest(data: bytes, settings: dict) -> str:
    h = hashlib.sha256(data)
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()


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
) -> tuple[nn.Module, UserModelInfo]:
    """Read, check and measure an uploaded model; `(model, info)` if it is usable.

    Class names default to the data set's; the model must return one score per class name,
    and there must be as many as the data set has classes (its labels are what accuracy is
    measured against). Raises UserModelError saying what is wrong otherwise.
    """
    data = bytes(data)
    kind = detect_kind(data) if kind == "auto" else kind
    model = read_model(
        data,
        kind=kind,
        dataset=dataset,
        architecture=architecture,
        normalisation=normalisation,
        device=device,
    )
    names = tuple(class_names) if class_names else CLASS_NAMES[dataset]
    if len(names) != len(CLASS_NAMES[dataset]):
        raise UserModelError(
            f"{len(names)} class names given, but {dataset} has {len(CLASS_NAMES[dataset])} "
            "classes: a model for this data set must score each of them."
        )
    test = load_dataset(dataset, "test")
    device_ = next(iter(model.parameters()), torch.empty(0)).device
    limit = TIME_LIMIT if time_limit is None else time_limit
    x = test.images[:1].to(device_)  # (1, 1, 28, 28): the first test image
    seconds = check_model(model, x, n_classes=len(names), time_limit=limit)
    n_test = len(test) if TEST_IMAGES is None else min(TEST_IMAGES, len(test))
    if n_test < len(test):
        test = replace(test, images=test.images[:n_test], labels=test.labels[:n_test])
    try:
        accuracy = evaluate(model, test).accuracy
    except Exception as err:  # noqa: BLE001 - e.g. a model that only accepts batches of one
        hint = (
            " (export it with a dynamic batch size: torch.export.export(model, (x,), "
            'dynamic_shapes=({0: torch.export.Dim("batch")},)))'
            if kind == "export"
            else ""
        )
        raise UserModelError(
            f"The model works on one image but failed on a batch of test images: "
            f"{_first_line(err)}{hint}"
        ) from None
    settings = {
        "dataset": dataset,
        "kind": kind,
        "architecture": architecture if kind == "state_dict" else None,
        "normalisation": list(normalisation) if kind != "state_dict" else None,
        "class_names": list(names),
    }
    info = UserModelInfo(
        name=f"upload:{_digest(data, settings)[:12]}",
        dataset=dataset,
        kind=kind,
        architecture=settings["architecture"],
        class_names=names,
        normalisation=tuple(normalisation),
        filename=filename,
        weights_sha256=hashlib.sha256(data).hexdigest(),
        n_params=sum(p.numel() for p in model.parameters()),
        test_accuracy=float(accuracy),
        n_test=n_test,
        seconds_per_example=seconds,
    )
    return model, info
