"""Which layer a layer-map (CAM) method reads, and reading it during one forward pass.

The automatic choice is the last module whose output keeps a spatial grid, (N, C, h, w) with
h, w > 1, among the modules that run once: for a torchvision ResNet that is `layer4` (whose
output is `layer4[-1]`'s, the layer pytorch-grad-cam's examples use), for a plain conv net its
last convolution, ReLU or pooling before the flattening.

Hooks are how the activations are read, as in pytorch-grad-cam and Captum. They are removed on
the way out, even on an error, and each one acts only for the thread that registered it: a
model cached for every session of a server may be running another request at the same time,
and that forward must not see this one's hooks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from ._validate import OutputSelector, all_finite, eval_mode, forward_scores

LayerSpec = nn.Module | str | None


@dataclass(frozen=True)
class Layer:
    """A module of the model and what its output looked like on one example.

    `name` is its dotted name in `model.named_modules()` ("layer4", "features.12");
    `shape` is its output's shape for `x[:1]`; `calls` is how often it ran in one forward;
    `learned`: whether its output depends on learned weights (it holds parameters, or a module
    with parameters ran before it). A normalisation in front of an MLP makes a spatial grid of
    the input itself: a layer map there is no layer map.
    """

    name: str
    module: nn.Module
    shape: tuple[int, ...]
    calls: int = 1
    learned: bool = True

    @property
    def spatial(self) -> bool:
        return _is_grid(self.shape)


def _is_grid(shape: tuple[int, ...]) -> bool:
    return len(shape) == 4 and shape[2] > 1 and shape[3] > 1


def _check_module(model: Callable, method: str = "this method") -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"{method} reads a layer of the model, so the model must be a torch.nn.Module, "
            f"got {type(model).__name__}"
        )
    if any(isinstance(m, torch.jit.ScriptModule) for m in model.modules()):
        raise TypeError(
            f"{method} reads a layer through forward hooks, which a TorchScript module does "
            "not run; use the model's Python module (its weights with the architecture's "
            "name, or an ONNX file, keep its layers), or a pixel-gradient method"
        )
    from torch.fx import GraphModule

    for m in model.modules():
        calls = (
            [n for n in m.graph.nodes if n.op == "call_module"]
            if isinstance(m, GraphModule)
            else None
        )
        if calls is not None and all(str(n.target) == "_guards_fn" for n in calls):
            raise TypeError(
                f"{method} reads a layer through forward hooks, and a torch.export program "
                "keeps the model's operations but not its layers; use the model's Python "
                "module (its weights with the architecture's name, or an ONNX file, keep its "
                "layers), or a pixel-gradient method"
            )
    return model


@contextmanager
def _hooks(pairs: list[tuple[nn.Module, Callable]]) -> Iterator[None]:
    """Forward hooks that act only in this thread, removed on the way out."""
    owner = threading.get_ident()

    def guarded(hook: Callable) -> Callable:
        def run(module, args, out):
            if threading.get_ident() == owner:
                return hook(module, args, out)
            return None

        return run

    handles = [m.register_forward_hook(guarded(h)) for m, h in pairs]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def layers(model: nn.Module, x: torch.Tensor, *, output: OutputSelector = None) -> list[Layer]:
    """Every submodule that produced a tensor for `x[:1]`, in the order their outputs were
    produced (a container after its children), with its output's shape and how often it ran.

    One forward pass without gradients, in eval mode. Use `.spatial` to keep the ones a CAM
    method can read.
    """
    _check_module(model, "finding a layer")
    names = {m: name for name, m in model.named_modules() if m is not model}
    seen: dict[nn.Module, list] = {}  # module -> [shape of its first output, calls, learned]
    weights_ran = [False]  # has a module with parameters of its own produced an output yet?

    def record(module, args, out):
        if not isinstance(out, torch.Tensor):
            return
        learned = weights_ran[0] or any(True for _ in module.parameters())
        if any(True for _ in module.parameters(recurse=False)):
            weights_ran[0] = True
        if module in seen:
            seen[module][1] += 1
        else:
            seen[module] = [tuple(out.shape), 1, learned]

    with eval_mode(model), torch.no_grad(), _hooks([(m, record) for m in names]):
        forward_scores(model, x[:1], score="logit", output=output)
    return [
        Layer(names[m], m, shape, calls, learned) for m, (shape, calls, learned) in seen.items()
    ]


def find_layer(model: nn.Module, x: torch.Tensor, *, output: OutputSelector = None) -> Layer:
    """The layer `layer=None` picks: the last module that runs once and whose output is a
    spatial grid (N, C, h, w) with h, w > 1 made by learned weights (`Layer.learned`: not the
    input normalised, in front of an MLP), found by one forward pass on `x[:1]`.

    Raises ValueError "no spatial layer: an MLP has no Grad-CAM" when there is none.

    Example:
        >>> saliency.find_layer(resnet18, x).name
        'layer4'
    """
    found = [layer for layer in layers(model, x, output=output) if layer.spatial and layer.learned]
    once = [layer for layer in found if layer.calls == 1]
    if not once:
        extra = (
            f" (the spatial ones, {', '.join(l.name for l in found)}, each run more than once)"
            if found
            else ""
        )
        raise ValueError(
            "no spatial layer: an MLP has no Grad-CAM; layer maps need a module whose output "
            f"is an image-like grid (N, C, h, w) with h, w > 1{extra}"
        )
    return once[-1]


def resolve_layer(
    model: nn.Module, x: torch.Tensor, layer: LayerSpec, *, output: OutputSelector = None
) -> tuple[str, nn.Module]:
    """(dotted name, module) for `layer`: None (the automatic choice), a dotted name, or a
    submodule of `model`. A name that doesn't exist is refused with the candidates listed."""
    _check_module(model, "a layer map")
    if layer is None:
        found = find_layer(model, x, output=output)
        return found.name, found.module
    if isinstance(layer, str):
        module = dict(model.named_modules()).get(layer) if layer else None
        if module is None or module is model:
            names = [l.name for l in layers(model, x, output=output) if l.spatial and l.calls == 1]
            listed = ", ".join(names) if names else "none: the model has no spatial layer"
            raise ValueError(f"the model has no layer named {layer!r}; candidates: {listed}")
        return layer, module
    if isinstance(layer, nn.Module):
        for name, m in model.named_modules():
            if m is layer and m is not model:
                return name, m
        raise ValueError(
            f"the layer given ({type(layer).__name__}) is not a submodule of the model"
        )
    raise TypeError(f"layer must be None, a dotted name or a module, got {type(layer).__name__}")


def layer_forward(
    model: nn.Module,
    x: torch.Tensor,
    module: nn.Module,
    name: str,
    *,
    score: str,
    output: OutputSelector,
    grad: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward pass that reads the layer's activations: (A, scores, raw outputs).

    A is `(N, C, h, w)`. With `grad`, the pass runs without recording a graph up to the layer
    and with one from it (A is a leaf that requires grad), so a backward from the scores stops
    at the layer: its cost is that of the head, not of the network. The model must be in eval
    mode already (the caller holds `eval_mode`).
    """
    state: dict = {}

    def hook(mod, args, out):
        if "a" in state:
            raise ValueError(
                f"layer {name!r} runs more than once in one forward pass: hooks would mix the "
                "two uses; choose a module that runs once (saliency.layers(model, x) lists "
                "each module's calls)"
            )
        if not isinstance(out, torch.Tensor) or not _is_grid(tuple(out.shape)):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"layer {name!r} gives {shape}, not a spatial grid (N, C, h, w) with h, w > 1; "
                "layer maps need a convolutional layer's output"
            )
        if not all_finite(out):
            raise ValueError(
                f"the activations of layer {name!r} are not finite (NaN or inf) for this input"
            )
        a = out.detach()
        if grad:
            torch.set_grad_enabled(True)  # undone when the caller's no_grad block exits
            a = a.requires_grad_()
        state["a"] = a
        # A copy downstream: a module after the layer may work in place (ResNet's `out +=`),
        # which a leaf that requires grad refuses; the leaf itself keeps the layer's values.
        return a.clone() if grad else None

    with _hooks([(module, hook)]), torch.no_grad():
        out, scores = forward_scores(model, x, score=score, output=output)
    if "a" not in state:
        raise ValueError(f"layer {name!r} did not run in the model's forward pass")
    a = state["a"]
    if grad and not scores.requires_grad:
        raise ValueError(f"the model's scores do not depend on layer {name!r}")
    return a, scores, out.detach()
