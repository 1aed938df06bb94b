"""Weights, not code: a state dict or a safetensors file, for an architecture named by the user.

    >>> names = architecture_names()                     # registry, torchvision, timm if installed
    >>> net = model_from_weights(data, "resnet18")       # eval mode, frozen; K from the weights
    >>> net(x)                                           # (N, 3, H, W) -> (N, K)

The file is data: a safetensors file (`sandbox.safetensors_file`, its header checked before
a byte is read) or a `torch.save` state dict (its ZIP checked by `gate.check_archive`, then
`torch.load(weights_only=True)`). The code is ours or a package's: the registry's
architectures (`pretrained.architectures`), every torchvision classifier by its builder's name
(`torchvision.models.list_models(module=torchvision.models)`), and timm's models when timm is
installed ("timm/NAME" picks timm's where torchvision has the same name). The number of
classes is read from the weights' final layer: the keys whose shape changes with
`num_classes` are found by building the architecture twice on the meta device, which
allocates nothing. Weights that don't fit are refused from those shapes, before the model is
built, with the first missing, unexpected and wrongly shaped key, in words. Never imports streamlit.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from . import gate, safetensors_file
from .gate import UserModelError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "INSTALL_TIMM",
    "architecture_names",
    "fit",
    "mismatch",
    "model_from_weights",
    "num_classes_of",
    "read_weights",
    "source_of",
    "warm_up",
]

INSTALL_TIMM = "install timm (pip install timm) to use timm architectures"


def _timm():
    try:
        import timm
    except ImportError:
        return None
    return timm


def _torchvision_names() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def architecture_names(*, with_timm: bool = True) -> list[str]:
    """Every name `model_from_weights` builds: the registry's, torchvision's classifiers, then
    timm's (when installed and `with_timm`)."""
    from pretrained.architectures import ARCHITECTURES

    names = [*ARCHITECTURES, *_torchvision_names()]
    timm = _timm() if with_timm else None
    if timm is not None:
        names += [f"timm/{n}" if n in names else n for n in timm.list_models()]
    return names


def source_of(name: str) -> str:
    """ "registry", "torchvision" or "timm": who builds `name`. UserModelError when nobody
    does, saying what is known (and to install timm when it isn't)."""
    from pretrained.architectures import ARCHITECTURES

    if not isinstance(name, str) or not name.strip():
        raise UserModelError(_needs_architecture())
    if name in ARCHITECTURES:
        return "registry"
    if name in _torchvision_names():
        return "torchvision"
    timm = _timm()
    bare = name.removeprefix("timm/")
    if timm is None:
        raise UserModelError(
            f"Unknown architecture {name[:100]!r}: {_needs_architecture(short=True)} If it is a "
            f"timm model, {INSTALL_TIMM}."
        )
    if timm.is_model(bare):
        return "timm"
    raise UserModelError(
        f"Unknown architecture {name[:100]!r}: {_needs_architecture(short=True)} It is not one "
        "of timm's models either (timm.list_models())."
    )


def _needs_architecture(*, short: bool = False) -> str:
    from pretrained.architectures import ARCHITECTURES

    tv = _torchvision_names()
    known = (
        f"the registry's ({', '.join(ARCHITECTURES)}) or a torchvision classifier "
        f"({', '.join(n for n in tv if n in ('resnet18', 'resnet50', 'mobilenet_v3_small'))}, "
        f"… {len(tv)} in all)"
    )
    if short:
        return f"name one of {known}."
    timm = "" if _timm() is not None else f" ({INSTALL_TIMM})"
    return (
        f"Weights need the name of their architecture: {known}, or a timm model{timm}. "
        "The weights' last layer gives the number of classes."
    )


def _build(name: str, num_classes: int) -> nn.Module:
    source = source_of(name)
    if source == "registry":
        from pretrained.architectures import build_model

        return build_model(name, num_classes)
    if source == "torchvision":
        import torchvision

        return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    return _timm().create_model(
        name.removeprefix("timm/"), pretrained=False, num_classes=num_classes
    )


def _shapes(name: str, num_classes: int) -> dict[str, tuple[int, ...]]:
    """The shapes of architecture `name`'s state dict: built on the meta device (nothing
    allocated) where the builder allows it, on the CPU otherwise (torchvision's RegNets
    compute their widths with tensors, which the meta device can't read back)."""
    import torch

    try:
        with torch.device("meta"):
            net = _build(name, num_classes)
    except (NotImplementedError, RuntimeError):
        net = _build(name, num_classes)
    return {key: tuple(v.shape) for key, v in net.state_dict().items()}


def _class_dims(name: str) -> tuple[dict[str, tuple[int, ...]], list[tuple[str, int]]]:
    """The shapes for 10 classes, and the (key, dimension) pairs whose size is the number of
    classes: those that differ between 10 and 11 classes."""
    a, b = _shapes(name, 10), _shapes(name, 11)
    dims = [
        (key, d)
        for key in a
        if a[key] != b.get(key)
        for d, pair in enumerate(zip(a[key], b.get(key, ()), strict=False))
        if pair == (10, 11)
    ]
    return a, dims


def _expected(name: str, state: dict[str, torch.Tensor]) -> tuple[int, dict]:
    """How many classes weights `state` score (from the final layer of architecture `name`),
    and the shapes `name` has for that many. UserModelError when the weights don't fit."""
    shapes, dims = _class_dims(name)
    found = {
        (key, int(state[key].shape[d])) for key, d in dims if key in state and d < state[key].ndim
    }
    counts = {k for _, k in found}
    if len(counts) > 1:
        said = "; ".join(f"{key} says {k}" for key, k in sorted(found))
        raise UserModelError(f"These weights disagree on the number of classes ({said}).")
    k = counts.pop() if counts else 10
    for key, d in dims:
        shapes[key] = shapes[key][:d] + (k,) + shapes[key][d + 1 :]
    problem = mismatch(shapes, state, name)
    if problem:
        raise UserModelError(problem)
    return k, shapes


def num_classes_of(name: str, state: dict[str, torch.Tensor]) -> int:
    """How many classes weights `state` score, from the final layer of architecture `name`.
    UserModelError when the weights don't fit `name` (see `mismatch`)."""
    return _expected(name, state)[0]


def mismatch(expected: dict[str, tuple[int, ...]], state: dict, name: str) -> str | None:
    """Why weights `state` don't fit shapes `expected` (architecture `name`): the first missing,
    the first unexpected and the first wrongly shaped key, in words; None when they fit."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shaped = [k for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    problems = []
    if missing:
        more = f" (and {len(missing) - 1:,} more)" if len(missing) > 1 else ""
        problems.append(f"{name} has a weight {missing[0]!r} that the file lacks{more}")
    if unexpected:
        more = f" (and {len(unexpected) - 1:,} more)" if len(unexpected) > 1 else ""
        problems.append(f"the file has a weight {unexpected[0][:200]!r} that {name} lacks{more}")
    if shaped:
        k = shaped[0]
        more = f" (and {len(shaped) - 1:,} more)" if len(shaped) > 1 else ""
        problems.append(
            f"{k!r} is {_dims(state[k].shape)} in the file but {_dims(expected[k])} in {name}{more}"
        )
    if not problems:
        return None
    return (
        f"These weights do not fit the architecture {name[:100]!r}: "
        + "; ".join(problems)
        + ". Check the architecture's name (and its variant, e.g. resnet18 or resnet34)."
    )


def fit(net: nn.Module, state: dict[str, torch.Tensor], name: str) -> None:
    """Load `state` into `net` strictly, or raise UserModelError saying why not (`mismatch`)."""
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    problem = mismatch(expected, state, name)
    if problem:
        raise UserModelError(problem)
    try:
        net.load_state_dict(state)  # copies, converting each dtype to the model's own
    except RuntimeError as err:
        raise UserModelError(f"These weights do not load into {name[:100]}: {err}") from None


def _dims(shape) -> str:
    return " × ".join(map(str, shape)) if len(shape) else "a single number"


def read_weights(data: bytes) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file or a `torch.save` state dict, read as data only. A
    safetensors file's are views of `data`'s bytes: to be copied (into a model), not written."""
    import torch

    if safetensors_file.looks_like(data):
        return safetensors_file.read(data, copy=False)  # only ever copied into a model
    gate.check_archive(data)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - unpickling errors come in many types
        if "weights only" in str(err).lower():
            raise UserModelError(
                "Refused: this file holds Python objects, not just tensors, and unpickling them "
                "could run code. Save only the weights: torch.save(model.state_dict(), path) or "
                "safetensors.torch.save_file(model.state_dict(), path)."
            ) from None
        raise UserModelError(f"This is not a readable state dict: {str(err)[:200]}") from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise UserModelError("The file does not hold a state dict (names mapped to tensors).")
    return state


def model_from_weights(
    data: bytes, architecture: str | None, *, num_classes: int | None = None
) -> nn.Module:
    """Architecture `architecture` with the file's weights: eval mode, frozen, on the CPU.
    The number of classes is read from the weights' final layer (and must be `num_classes`
    when that is given). Raises UserModelError saying what
    is wrong (an unknown name, timm missing, a file refused, weights that don't fit)."""
    if not architecture:
        raise UserModelError(_needs_architecture())
    source_of(architecture)  # an unknown name is refused before the file is read
    state = read_weights(data)
    try:
        k = _expected(architecture, state)[0]  # refused from shapes alone, before it is built
    except UserModelError as err:
        timm = _timm()
        if source_of(architecture) == "torchvision" and timm and timm.is_model(architecture):
            raise UserModelError(
                f"{err} If these are timm's weights, name it timm/{architecture}."
            ) from None
        raise
    if num_classes is not None and k != num_classes:
        raise UserModelError(
            f"These weights score {k:,} classes (their last layer), not {num_classes:,}."
        )
    net = _build(architecture, k)
    fit(net, state, architecture)
    del state
    net.requires_grad_(False)
    return net.eval()


def warm_up() -> None:
    """Import and run once what building a named architecture needs, in a process about to
    lock itself down (the workers' fork server, whose sandboxed children can't open a module
    file): torchvision's models, timm's when it is installed. Starts no thread."""
    import torch
    import torchvision.models  # noqa: F401 - every classifier's module, and torchvision.ops

    with torch.no_grad():
        _shapes("resnet18", 10)  # the meta device's path
        net = _build("squeezenet1_1", 3).eval()  # the CPU's: initialisers, a forward pass
        net(torch.rand(1, 3, 32, 32))
        timm = _timm()
        if timm is not None:
            _shapes("timm/resnet18", 10)
            _shapes("vit_tiny_patch16_224", 10)
