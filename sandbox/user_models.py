"""A user's own model for the bundled data sets: load it safely, check it, measure it.

    >>> worker, info = accept_upload(data, dataset="mnist")  # a server: in a sandboxed worker
    >>> worker.call("probabilities", x)                       # (N, 1, 28, 28) -> (N, K)
    >>> model, info = load_user_model(data, dataset="mnist")  # your own file, in this process
    >>> info.name, info.kind, info.test_accuracy  # "upload:3f2a...", "torchscript", 0.98

A model file is a program. `accept_upload` is what a server uses for a file it did not write:
the gate (`sandbox.gate`) checks the archive, and the file is read, checked and run only
inside a sandboxed worker process (`sandbox.worker`), which the program's operators are
checked in too before it runs once. `load_user_model` and `read_model` run in the calling
process, for files you trust as much as your own code; they apply the same gate.

Three kinds of file are accepted, and nothing else is ever unpickled:

- "torchscript": `torch.jit.save(torch.jit.script(model))`, read by `torch.jit.load` (a zip of
  TorchScript code and tensors, read by TorchScript's own restricted unpickler);
- "export": `torch.export.save(torch.export.export(model, (x,)))`, read by `torch.export.load`
  with every `torch.load` inside it forced to `weights_only=True` (its own fallback would
  otherwise unpickle arbitrary objects);
- "safetensors": weights in a safetensors file (recognised by its header, which is checked
  whole before a byte is read: `sandbox.safetensors_file`) for a registry architecture; on
  your own images, state dicts and safetensors files may name a torchvision or timm
  architecture too (`sandbox.named_weights`), whose code the sandbox imports before it
  locks down;
- "state_dict": weights for a registry architecture, through `model_files.model_from_weights`
  (`weights_only=True`).

The model takes the project's images, `(N, 1, 28, 28)` greyscale in [0, 1]; an optional
`(mean, std)` normalisation is applied before it, as a layer, so saliency stays with respect to
pixels. Every problem a user can cause raises `UserModelError` with a message meant for them.
Never imports streamlit.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from pretrained.data import CLASS_NAMES, DATASETS, load_dataset
from pretrained.evaluation import evaluate

from . import kinds
from .gate import UserModelError
from .model_files import (  # the reading half, re-exported: the names users know
    DYNAMIC_EXPORT,
    KINDS,
    WEIGHTS,
    Preprocessed,
    _check_registry_architecture,
    _resolve_kind,
    detect_kind,
    error_line,
    parse_class_names,
    read_model,
    read_model_with_ops,
    read_table_model,
    shape_hint,
)
from .text import output_key

__all__ = [
    "KINDS",
    "TIME_LIMIT",
    "WEIGHTS",
    "Preprocessed",
    "UserModelError",
    "UserModelInfo",
    "accept_upload",
    "check_model",
    "detect_kind",
    "error_line",
    "load_user_model",
    "parse_class_names",
    "read_model",
    "read_model_with_ops",
    "read_table_model",
    "shape_hint",
]

TIME_LIMIT = 2.0  # seconds for one example's forward pass; slower models are refused
TEST_IMAGES: int | None = None  # test images to measure accuracy on (None: all 10,000)
MAX_CHUNK = 256  # test images per request while measuring an upload's accuracy


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
            "for python -m workspace.index)."
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
        name=kinds.upload(_digest(data, settings)[:12]),
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


def _count_right(worker, images, labels, seconds: float, progress) -> int:
    """How many of `images` the worker's model gets right, measured in chunks."""
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
    return right


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

    Returns `(worker, info)`: a started `sandbox.worker.Worker` that holds the model in
    its sandbox, and what was measured. In this process only the archive is inspected
    (`gate.check_archive`, which also refuses ZIP bombs before anything is inflated). The
    worker reads the file, checks its operators against the allowlist, runs one image; then
    the bundled test set goes through it in chunks, each under the worker's deadline, with
    `progress(done, total)` after each. Raises UserModelError with the reason otherwise (a
    model that hangs, hoards memory or crashes included); the worker is stopped then.
    """
    import sandbox

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
        right = _count_right(worker, images, labels, seconds, progress)
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
