"""The model-randomisation sanity check (Adebayo et al. 2018, "Sanity checks for saliency maps").

Cascading randomisation re-initialises a network's layers one at a time, from the output layer
down, and recomputes the map after each step. A map that explains the model must change as the
model is destroyed; one that stays the same is showing the input (edges, strokes), not what the
network learned. Every step works on a deep copy: the caller's model is never touched, which
keeps a model shared between sessions safe.

    >>> steps = sanity_check(model, x[:10], method="gradient")   # original, then one per layer
    >>> [(s.name, float(s.spearman.mean())) for s in steps]

"Layers" are the modules that hold parameters of their own, ordered by when `forward` first
reads one of their parameters (one forward pass on one example, watched by a dispatch mode,
so eager modules, TorchScript and `torch.export` programs are ordered the same way), and
taken from the output back to the input: the order `__init__` registered them in does not
matter. A module called twice counts at its first use; a module whose parameters are shared
with a layer randomised before it has nothing new to randomise and is skipped; a module that
never runs is skipped too. `layer_order` says which, and why.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ._methods import METHOD_INFO, attribute
from ._validate import Target, check_input, check_inputs, eval_mode, predict
from .compat_torch import TorchDispatchMode
from .metrics import spearman, ssim_many

FALLBACK_INITS = ("normal", "kaiming_uniform")


@dataclass(frozen=True)
class LayerOrder:
    """Parameterised modules of a model, as one forward pass used them.

    `layers`: module paths in the order forward first read one of their parameters (input
    first). `never_ran`: modules whose parameters forward never read (skipped by the cascade).
    `shared`: (module, module it shares a parameter with), for parameters held by several.
    """

    layers: tuple[str, ...]
    never_ran: tuple[str, ...]
    shared: tuple[tuple[str, str], ...]


class _FirstUse(TorchDispatchMode):
    """Records, in order, the storages of the tensors every operator reads."""

    def __init__(self) -> None:
        super().__init__()
        self.storages: dict[int, int] = {}  # storage pointer -> index of first operator

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for arg in (*args, *kwargs.values()):
            for t in arg if isinstance(arg, list | tuple) else (arg,):
                if isinstance(t, torch.Tensor) and t.device.type != "meta":
                    self.storages.setdefault(t.untyped_storage().data_ptr(), len(self.storages))
        return func(*args, **kwargs)


def _own_parameters(model: nn.Module) -> list[tuple[str, nn.Module, list[torch.Tensor]]]:
    found = []
    for name, m in model.named_modules():
        params = list(m.parameters(recurse=False))
        if params:
            found.append((name, m, params))
    return found


def layer_order(model: nn.Module, x: torch.Tensor) -> LayerOrder:
    """The order `forward` uses `model`'s parameterised modules on `x[:1]` (see `LayerOrder`)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    check_input(x)
    modules = _own_parameters(model)
    watch = _FirstUse()
    with eval_mode(model), torch.no_grad(), watch:
        model(x[:1])
    first: dict[str, int] = {}
    owner_of: dict[int, str] = {}
    shared = []
    for name, _, params in modules:
        for p in params:
            ptr = p.untyped_storage().data_ptr()
            if ptr in owner_of and owner_of[ptr] != name:
                shared.append((name, owner_of[ptr]))
            owner_of.setdefault(ptr, name)
            if ptr in watch.storages:
                first[name] = min(first.get(name, len(watch.storages)), watch.storages[ptr])
    ran = sorted(first, key=first.get)
    never = tuple(name for name, _, _ in modules if name not in first)
    return LayerOrder(tuple(ran), never, tuple(dict.fromkeys(shared)))


def _label(name: str, module: nn.Module) -> str:
    kind = getattr(module, "original_name", None) or type(module).__name__
    return f"{name or '(model)'} ({kind})"


def _reinitialise(module: nn.Module, seed: int, fallback_init: str, fallback_std: float) -> str:
    """Re-initialise `module`'s own parameters on the CPU, from a seeded CPU generator, and say
    how. The caller's CPU and CUDA random streams are left exactly as they were: the global CPU
    generator is seeded and restored inside `fork_rng`, and no CUDA generator is ever used."""
    device = next(module.parameters(recurse=False)).device
    if device.type != "cpu":
        module.to("cpu")
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.random.default_generator.manual_seed(seed)  # CPU only: never torch.manual_seed
        if callable(getattr(module, "reset_parameters", None)):
            module.reset_parameters()  # the layer's own initialisation (Kaiming for Linear/Conv)
            how = "its own reset_parameters"
        else:
            for p in module.parameters(recurse=False):
                if fallback_init == "normal" or p.ndim < 2:
                    p.normal_(0.0, fallback_std)
                else:
                    nn.init.kaiming_uniform_(p, a=5**0.5)
            how = (
                f"N(0, {fallback_std:g}²) (no reset_parameters)"
                if fallback_init == "normal"
                else f"Kaiming uniform, biases N(0, {fallback_std:g}²) (no reset_parameters)"
            )
    if device.type != "cpu":
        module.to(device)
    return how


@dataclass(frozen=True)
class RandomisedStep:
    """One cumulative step of the cascade: its name, the model copy, how the layer was
    re-initialised, and a note (e.g. a shared parameter)."""

    name: str
    model: nn.Module
    init: str
    note: str = ""


def cascade(
    model: nn.Module,
    x: torch.Tensor,
    *,
    seed: int = 0,
    fallback_init: str = "normal",
    fallback_std: float = 0.05,
) -> Iterator[RandomisedStep]:
    """Yield one `RandomisedStep` per layer, the top 1, 2, … layers re-initialised.

    Layers come from `layer_order(model, x)`, output first. Each yielded model is an
    independent deep copy in eval mode, so keeping one does not alter the next; `model` itself
    is never modified. A layer is re-initialised by its own `reset_parameters` (Kaiming for
    Linear and Conv) under a seeded CPU generator; a layer without one (inside TorchScript or
    an exported program) gets `fallback_init`: "normal", N(0, `fallback_std`²) for every
    parameter (the default), or "kaiming_uniform", what `nn.Linear` and `nn.Conv2d` use for
    their weights, with N(0, `fallback_std`²) for one-dimensional parameters. The caller's
    CPU and CUDA random number generators are left as they were.
    """
    if fallback_init not in FALLBACK_INITS:
        raise ValueError(f"fallback_init must be one of {FALLBACK_INITS}, got {fallback_init!r}")
    if not fallback_std > 0:
        raise ValueError(f"fallback_std must be positive, got {fallback_std}")
    order = layer_order(model, x)
    work = copy.deepcopy(model)
    modules = {name: (m, params) for name, m, params in _own_parameters(work)}
    done: dict[int, str] = {}  # parameter storages randomised so far -> by which layer
    for i, name in enumerate(reversed(order.layers)):
        module, params = modules[name]
        ptrs = [p.untyped_storage().data_ptr() for p in params]
        if all(ptr in done for ptr in ptrs):
            continue  # every parameter is shared with a layer randomised already
        note = ""
        earlier = sorted({done[ptr] for ptr in ptrs if ptr in done})
        if earlier:
            note = f"shares parameters with {', '.join(earlier)}"
        how = _reinitialise(module, seed + i, fallback_init, fallback_std)
        for ptr in ptrs:
            done.setdefault(ptr, name)
        step = copy.deepcopy(work)
        for m in step.modules():  # eval mode (an exported program refuses .eval())
            m.training = False
        yield RandomisedStep(_label(name, module), step, how, note)


def cascading_randomisation(
    model: nn.Module,
    x: torch.Tensor,
    *,
    seed: int = 0,
    fallback_init: str = "normal",
    fallback_std: float = 0.05,
) -> Iterator[tuple[str, nn.Module]]:
    """`(step name, model copy)` for each step of `cascade` (which also says how each layer
    was re-initialised). The step name is `"<module path> (<Type>)"`."""
    for step in cascade(
        model, x, seed=seed, fallback_init=fallback_init, fallback_std=fallback_std
    ):
        yield step.name, step.model


@dataclass(frozen=True)
class SanityStep:
    """One step of the check: `map` shaped like x (|attribution| of the method); `spearman`,
    `ssim`: `(N,)` float64, each example's map against the original model's map (1.0 for the
    original itself); `init` and `note` say how the step's layer was re-initialised."""

    name: str
    map: torch.Tensor
    spearman: torch.Tensor
    ssim: torch.Tensor
    init: str = ""
    note: str = ""


def _scaled(m: np.ndarray) -> np.ndarray:
    """A non-negative (H, W) map divided by its maximum, so maps of any size compare in [0, 1]."""
    top = m.max()
    return m / top if top > 0 else m


def sanity_check(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    *,
    method: str = "gradient",
    score: str = "logit",
    seed: int = 0,
    fallback_init: str = "normal",
    fallback_std: float = 0.05,
    **method_options,
) -> list[SanityStep]:
    """Maps of `x` by `method` under cascading randomisation, each compared with the original.

    `x` is an image batch `(N, C, H, W)`; `target` None means the class the *original* model
    predicts, kept fixed for every step. `method` is any of `attribute`'s ("gradient",
    "smoothgrad", "integrated_gradients", "input_x_gradient", …; `method_options` go to it,
    with SmoothGrad's noise seeded the same at every step). Returns the original step first,
    then one step per layer (see `cascade`). Maps are absolute values; they are compared by
    Spearman rank correlation and by SSIM (channels reduced by max, each map divided by its
    maximum, data range 1), one value per example. `model` and `x` are left unchanged, and so
    are the caller's random number generators.

    Adebayo et al.'s point is the contrast between methods: Gradient and SmoothGrad maps decay
    as the layers are destroyed, while Integrated Gradients and Input × Gradient, which multiply
    by the input, keep showing the digit.
    """
    check_inputs(x, score)
    if method not in METHOD_INFO:
        raise ValueError(f"method must be one of {', '.join(METHOD_INFO)}; got {method!r}")
    if x.ndim != 4:
        raise ValueError(f"x must be an image batch (N, C, H, W), got shape {tuple(x.shape)}")
    _, _, t = predict(model, x, target, score=score, output=None)

    def explain(m: nn.Module) -> torch.Tensor:
        with torch.random.fork_rng(devices=[]):  # SmoothGrad's seeded noise stays local
            return attribute(m, x, t, method=method, score=score, absolute=True, **method_options)

    original = explain(model)
    a = original.amax(1).double().cpu().numpy()  # (N, H, W)

    def step(name: str, m: torch.Tensor, init: str = "", note: str = "") -> SanityStep:
        b = m.amax(1).double().cpu().numpy()
        rho = [spearman(a[n], b[n]) for n in range(len(a))]
        sim = ssim_many(np.stack([_scaled(m) for m in a]), np.stack([_scaled(m) for m in b]),
                        data_range=1.0)  # fmt: skip
        as_tensor = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
        return SanityStep(name, m, as_tensor(rho), as_tensor(sim), init, note)

    order = layer_order(model, x)
    skipped = f"never ran, skipped: {', '.join(order.never_ran)}" if order.never_ran else ""
    steps = [step("original", original, note=skipped)]
    for s in cascade(model, x, seed=seed, fallback_init=fallback_init, fallback_std=fallback_std):
        steps.append(step(s.name, explain(s.model), s.init, s.note))
    return steps
