"""Which layer a layer-map (CAM) method reads, and reading it during one forward pass.

A layer map reads a grid: an image-like one, (N, C, h, w) with h, w > 1, or the patch tokens
of a vision transformer, (N, T, D) where the T tokens are a few prefix tokens (class, register,
distillation) and then the h * w patches, row by row. Those are read as pytorch-grad-cam's
documented `reshape_transform` for ViTs reads them: the prefix dropped and the patches
reshaped to (N, D, h, w). The prefix is the model's `num_prefix_tokens` (timm, `mnist-vit`) or
torchvision's class token (`transformer._prefix_tokens`); the patch grid follows from the input
size and the patch embedding (the first convolution whose stride equals its kernel), or, in a
transformer without one, from the token count and the input's aspect ratio
(`transformer._grid`); with no known prefix it is what the patch grid leaves over.

The automatic choice, among the modules that run once and after weights have run:
- a transformer's patch tokens where the class score still reads them: the last token grid
  made before the last attention layer runs, the last block's first norm (`blocks.11.norm1`,
  torchvision's `ln_1`), pytorch-grad-cam's recipe. Not the last block: its output's patch
  tokens never reach a class-token head (the final norm works token by token and the head
  reads token 0 alone), so their gradient, and Grad-CAM there, is zero. A token model without
  attention layers (MLP-Mixer) gets its last token grid;
- otherwise the last image-like grid: for a torchvision ResNet that is `layer4` (whose output
  is `layer4[-1]`'s, the layer pytorch-grad-cam's examples use), for a plain conv net its last
  convolution, ReLU or pooling before the flattening.

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
from .transformer import _attention_modules, _grid, _prefix_tokens

LayerSpec = nn.Module | str | None


@dataclass(frozen=True)
class Layer:
    """A module of the model and what its output looked like on one example.

    `name` is its dotted name in `model.named_modules()` ("layer4", "features.12");
    `shape` is its output's shape for `x[:1]`; `calls` is how often it ran in one forward;
    `learned`: whether its output depends on learned weights (it holds parameters, or a module
    with parameters ran before it). A normalisation in front of an MLP makes a spatial grid of
    the input itself: a layer map there is no layer map. `tokens`: (prefix, h, w) when the
    output is a transformer's token grid (N, prefix + h * w, D), else None.
    """

    name: str
    module: nn.Module
    shape: tuple[int, ...]
    calls: int = 1
    learned: bool = True
    tokens: tuple[int, int, int] | None = None

    @property
    def spatial(self) -> bool:
        """Whether a layer map can read it: an image-like grid or a token grid."""
        return _is_grid(self.shape) or self.tokens is not None

    @property
    def grid(self) -> tuple[int, int] | None:
        """(h, w) of the map read here, or None for a layer without a grid."""
        if self.tokens is not None:
            return self.tokens[1], self.tokens[2]
        return (self.shape[2], self.shape[3]) if _is_grid(self.shape) else None

    @property
    def label(self) -> str:
        """The name with what is read there: "blocks.3.norm1 (patch tokens, 4 × 4)"."""
        if self.tokens is None:
            return self.name
        return f"{self.name} (patch tokens, {self.tokens[1]} × {self.tokens[2]})"


def _is_grid(shape: tuple[int, ...]) -> bool:
    return len(shape) == 4 and shape[2] > 1 and shape[3] > 1


TokenLayout = Callable[[tuple[int, ...]], "tuple[int, int, int] | None"]


def _token_layout(model: nn.Module, height: int, width: int) -> TokenLayout:
    """For inputs of this size, a function from an output's shape to (prefix, h, w) when it
    is a token grid (N, prefix + h * w, D) with h, w > 1, else None."""
    known = _prefix_tokens(model)[0]
    patches = _patch_grid(model, height, width)
    transformer = bool(_attention_modules(model))

    def layout(shape: tuple[int, ...]) -> tuple[int, int, int] | None:
        if len(shape) != 3:
            return None
        t = shape[1]
        if patches is not None:
            h, w = patches
            if known is not None and t - known == h * w:
                found = (known, h, w)
            elif t == h * w or (known is None and 0 < t - h * w <= 8):
                found = (t - h * w, h, w)  # before the prefix is added, or an unknown one
            else:
                return None
        elif transformer:
            try:
                found = _grid(t, known, height, width)
            except ValueError:
                return None
        else:
            return None
        return found if found[1] > 1 and found[2] > 1 else None

    return layout


def _patch_grid(model: nn.Module, height: int, width: int) -> tuple[int, int] | None:
    """The grid of the patch embedding, the first convolution whose stride equals its kernel
    (> 1): timm's `patch_embed.proj`, torchvision's `conv_proj`, `mnist-vit`'s `patch_embed`."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.stride == m.kernel_size and max(m.stride) > 1:
            if not isinstance(m.padding, tuple):
                return None  # "same"/"valid" padding: not a patch embedding
            size = []
            for n, k, s, p, d in zip((height, width), m.kernel_size, m.stride, m.padding,
                                     m.dilation, strict=True):  # fmt: skip
                size.append((n + 2 * p - d * (k - 1) - 1) // s + 1)
            return size[0], size[1]
    return None


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
    method can read (image-like grids and, in a transformer, token grids: `.tokens`).
    """
    return _survey(model, x, output)[0]


def _survey(
    model: nn.Module, x: torch.Tensor, output: OutputSelector
) -> tuple[list[Layer], int | None]:
    """`layers`, and how many of them had produced an output when the last attention layer
    started (None without attention layers)."""
    _check_module(model, "finding a layer")
    names = {m: name for name, m in model.named_modules() if m is not model}
    seen: dict[nn.Module, list] = {}  # module -> [shape of its first output, calls, learned]
    weights_ran = [False]  # has a module with parameters of its own produced an output yet?
    cut: list[int | None] = [None]
    attention = _attention_modules(model)
    owner = threading.get_ident()

    def starting(module, args):
        if threading.get_ident() == owner:
            cut[0] = len(seen)

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

    starts = [m.register_forward_pre_hook(starting) for m in attention]
    try:
        with eval_mode(model), torch.no_grad(), _hooks([(m, record) for m in names]):
            forward_scores(model, x[:1], score="logit", output=output)
    finally:
        for h in starts:
            h.remove()
    layout = _token_layout(model, x.shape[-2], x.shape[-1]) if x.ndim == 4 else lambda s: None
    found = [
        Layer(names[m], m, shape, calls, learned, layout(shape))
        for m, (shape, calls, learned) in seen.items()
    ]
    return found, cut[0]


def find_layer(model: nn.Module, x: torch.Tensor, *, output: OutputSelector = None) -> Layer:
    """The layer `layer=None` picks, found by one forward pass on `x[:1]`, among the modules
    that run once and whose output is made by learned weights (`Layer.learned`: not the input
    normalised, in front of an MLP):

    - in a transformer, the last token grid made before the last attention layer runs: the
      last block's first norm, whose patch tokens the class token still reads (the last
      block's own output reaches a class-token head only through token 0);
    - otherwise the last spatial grid (N, C, h, w) with h, w > 1.

    Raises ValueError "no spatial layer: an MLP has no Grad-CAM" when there is none.

    Example:
        >>> saliency.find_layer(resnet18, x).name
        'layer4'
        >>> saliency.find_layer(timm_vit, x).label
        'blocks.11.norm1 (patch tokens, 14 × 14)'
    """
    every, cut = _survey(model, x, output)
    tokens = [
        layer
        for layer in every[:cut]
        if layer.tokens is not None and layer.learned and layer.calls == 1
    ]
    if tokens:
        return tokens[-1]
    found = [layer for layer in every if layer.spatial and layer.learned]
    once = [layer for layer in found if layer.calls == 1]
    if not once:
        extra = (
            f" (the spatial ones, {', '.join(l.name for l in found)}, each run more than once)"
            if found
            else ""
        )
        raise ValueError(
            "no spatial layer: an MLP has no Grad-CAM; layer maps need a module whose output "
            f"is an image-like grid (N, C, h, w) with h, w > 1, or a vision transformer's "
            f"patch tokens{extra}"
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
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
    """One forward pass that reads the layer's activations: (A, scores, raw outputs, whether
    the layer is a token grid).

    A is `(N, C, h, w)`; a token grid's patches come as `(N, D, h, w)`, its prefix tokens
    dropped (pytorch-grad-cam's `reshape_transform` for ViTs). With `grad`, the pass runs
    without recording a graph up to the layer and with one from it (A is a leaf that requires
    grad), so a backward from the scores stops at the layer: its cost is that of the head, not
    of the network. A token grid's prefix tokens go on as constants: dS/dA is the same
    partial derivative either way. The model must be in eval mode already (the caller holds
    `eval_mode`).
    """
    state: dict = {}
    layout: list[TokenLayout] = []  # made on the first 3-D output: most layers never need it

    def tokens_of(shape: tuple[int, ...]) -> tuple[int, int, int] | None:
        if len(shape) != 3 or x.ndim != 4:
            return None
        if not layout:
            layout.append(_token_layout(model, x.shape[-2], x.shape[-1]))
        return layout[0](shape)

    def hook(mod, args, out):
        if "a" in state:
            raise ValueError(
                f"layer {name!r} runs more than once in one forward pass: hooks would mix the "
                "two uses; choose a module that runs once (saliency.layers(model, x) lists "
                "each module's calls)"
            )
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
        tokens = tokens_of(shape) if shape is not None else None
        if shape is None or not (_is_grid(shape) or tokens is not None):
            shown = shape if shape is not None else type(out).__name__
            raise ValueError(
                f"layer {name!r} gives {shown}, not a spatial grid (N, C, h, w) with h, w > 1; "
                "layer maps need a convolutional layer's output or a vision transformer's "
                "patch tokens"
            )
        if not all_finite(out):
            raise ValueError(
                f"the activations of layer {name!r} are not finite (NaN or inf) for this input"
            )
        if tokens is not None:
            prefix, h, w = tokens
            n, _, d = shape
            a = out.detach()[:, prefix:].reshape(n, h, w, d).permute(0, 3, 1, 2)  # (N, D, h, w)
            a = a.contiguous()
            state["tokens"] = tokens
        else:
            a = out.detach()
        if grad:
            torch.set_grad_enabled(True)  # undone when the caller's no_grad block exits
            a = a.requires_grad_()
        state["a"] = a
        if not grad:
            return None
        if tokens is not None:  # the tokens again, the patches from the leaf
            patches = a.permute(0, 2, 3, 1).reshape(n, h * w, d)  # (N, h * w, D)
            return torch.cat([out.detach()[:, :prefix], patches], 1)
        # A copy downstream: a module after the layer may work in place (ResNet's `out +=`),
        # which a leaf that requires grad refuses; the leaf itself keeps the layer's values.
        return a.clone()

    with _hooks([(module, hook)]), torch.no_grad():
        out, scores = forward_scores(model, x, score=score, output=output)
    if "a" not in state:
        raise ValueError(f"layer {name!r} did not run in the model's forward pass")
    a = state["a"]
    if grad and not scores.requires_grad:
        raise ValueError(f"the model's scores do not depend on layer {name!r}")
    return a, scores, out.detach(), "tokens" in state


def check_tokens_read(
    model: nn.Module, x: torch.Tensor, module: nn.Module, name: str, output: OutputSelector
) -> None:
    """Called when the scores' gradient is zero at every patch token of a token grid: refuses
    the layer when that is the model's structure (the grid comes after the last attention
    layer, so a class-token head never reads its patches) and not this input's or a blank
    head's. One more forward pass on `x[:1]`, on this rare path only."""
    every, cut = _survey(model, x, output)
    order = [layer.module for layer in every]
    if cut is not None and module in order and order.index(module) >= cut:
        raise ValueError(
            f"the model's scores do not depend on the patch tokens of layer {name!r}: a "
            "class-token head reads only the class token after the last attention layer; "
            "choose a layer before it (the automatic choice is the last block's first norm)"
        )
