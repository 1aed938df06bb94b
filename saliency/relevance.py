"""Layer-wise relevance propagation (LRP, Bach et al. 2015), computed by Zennit.

The class's logit is handed back layer by layer, each layer by its rule, until it reaches the
pixels; the rules are Zennit's (`zennit.rules`), not written here. Two composites:

- "epsilon_plus" (the default; Montavon et al. 2019's recommendation, without a special rule
  for the input layer): z+ (alpha 1, beta 0) for convolutions, epsilon for linear layers;
- "epsilon": the epsilon rule for every convolution and linear layer (with a small epsilon
  this is close to Input x Gradient).

Everywhere else, as Zennit's composites do: activations pass relevance unchanged, pooling by
average is normalised, max pooling sends it to the maximum, BatchNorm after a convolution or
linear layer in an `nn.Sequential` is merged into it first (a torchvision ResNet's blocks are
canonised by Zennit's `ResNetCanonizer`, so the residual sums share relevance). A leaf module
of the caller's own with no parameters (the registry models' `Normalize`) passes relevance
unchanged, so the map sums to the logit up to what biases and epsilon absorb.

Zennit hooks the model and swaps its parameters for modified ones during the backward pass, so
it runs on a private deep copy: a model cached for every session of a server and running
another request at the same time never sees the modified weights (the price is one copy of
the model's parameters for the duration of the call).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ._validate import (
    OutputSelector,
    Target,
    check_input,
    eval_mode,
    registry_method,
    resolve_target,
    select_output,
)

COMPOSITES = ("epsilon_plus", "epsilon")

# Leaf layers Zennit's composites handle (by rule, by canonizer or as plain gradients that are
# right for LRP: max pooling's winner takes all, reshapes and eval-mode dropout are identities).
_KNOWN = (
    nn.modules.conv._ConvNd,
    nn.Linear,
    nn.modules.batchnorm._BatchNorm,
    nn.ReLU,
    nn.LeakyReLU,
    nn.ELU,
    nn.Tanh,
    nn.Sigmoid,
    nn.Softplus,
    nn.GELU,
    nn.SiLU,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.Flatten,
    nn.Unflatten,
    nn.Dropout,
    nn.Identity,
)


class _Selected(nn.Module):
    """The model with its scores picked out of a tuple or dict output (`output`)."""

    def __init__(self, model: nn.Module, output: OutputSelector) -> None:
        super().__init__()
        self.model = model
        self.output = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return select_output(self.model(x), self.output)


def _check_model(model: nn.Module) -> list[type]:
    """The caller's own parameter-free leaf types (passed through), or a ValueError naming the
    first layer LRP has no rule for."""
    for name, m in model.named_modules():
        if isinstance(m, nn.MultiheadAttention) or hasattr(m, "fused_attn"):
            raise ValueError(
                f"lrp has no rule for attention (layer '{name}'): for a transformer use "
                "attention_rollout or gradient_rollout"
            )
    own: list[type] = []
    for name, m in model.named_modules():
        leaf = next(m.children(), None) is None
        if not leaf:
            if any(True for _ in m.parameters(recurse=False)):
                raise ValueError(
                    f"lrp has no rule for {type(m).__name__} (layer '{name}'), which computes "
                    "with its own parameters; it needs a network of convolutions, linear "
                    "layers, BatchNorm, pooling and activations"
                )
            continue
        if isinstance(m, _KNOWN):
            continue
        if any(True for _ in m.parameters()) or type(m).__module__.startswith("torch."):
            raise ValueError(
                f"lrp has no rule for {type(m).__name__} (layer '{name}'); it needs a network "
                "of convolutions, linear layers, BatchNorm, pooling and activations"
            )
        own.append(type(m))
    return own


def _composite(name: str, epsilon: float, passed: list[type], canonizers: list):
    from zennit.composites import LayerMapComposite, layer_map_base
    from zennit.rules import Epsilon, Pass, ZPlus
    from zennit.types import Convolution

    conv = ZPlus() if name == "epsilon_plus" else Epsilon(epsilon=epsilon)
    layer_map = [(tuple(passed), Pass())] if passed else []
    layer_map += layer_map_base() + [(Convolution, conv), (nn.Linear, Epsilon(epsilon=epsilon))]
    return LayerMapComposite(layer_map=layer_map, canonizers=canonizers)


def _canonizers(model: nn.Module) -> list:
    if any(type(m).__module__ == "torchvision.models.resnet" for m in model.modules()):
        from zennit.torchvision import ResNetCanonizer  # merges BatchNorm too

        return [ResNetCanonizer()]
    from zennit.canonizers import SequentialMergeBatchNorm

    return [SequentialMergeBatchNorm()]


def lrp(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    *,
    composite: str = "epsilon_plus",
    epsilon: float = 1e-6,
    score: str = "logit",
    output: OutputSelector = None,
) -> torch.Tensor:
    """Relevance of each input value for one class's logit per example, shaped like `x`.

    Signed: positive relevance speaks for the class. `composite`: "epsilon_plus" (z+ on
    convolutions, epsilon on linear layers) or "epsilon" (epsilon everywhere); `epsilon` is
    the epsilon rule's stabiliser. `target` and `output` are as in `gradients`. LRP explains
    the logit, so `score` must be "logit". A model with attention, or any other layer Zennit
    has no rule for, raises a ValueError naming the layer. Needs the `zennit` package.

    Example:
        >>> r = lrp(load_model("mnist-cnn"), images[:8], target=3)   # (8, 1, 28, 28)
    """
    check_input(x)
    if composite not in COMPOSITES:
        raise ValueError(f"composite must be one of {', '.join(COMPOSITES)}; got {composite!r}")
    if score != "logit":
        raise ValueError(f"lrp explains the logit; score={score!r} is not defined for it")
    if not float(epsilon) > 0:
        raise ValueError(f"epsilon must be positive, got {epsilon}")
    if not isinstance(model, nn.Module):
        raise ValueError("lrp needs the model as an nn.Module (its layers carry the rules)")
    passed = _check_model(model)
    try:
        from zennit.attribution import Gradient
    except ImportError:
        raise ImportError("lrp needs Zennit: pip install zennit==0.5.1") from None

    private = _Selected(copy.deepcopy(model), output)

    def seed(out: torch.Tensor) -> torch.Tensor:  # (N, K): each example's target logit
        out = out.detach()
        if out.dim() != 2 or not torch.isfinite(out).all():
            raise ValueError("lrp needs finite (N, K) logits from the model")
        t = resolve_target(target, out)
        return torch.zeros_like(out).scatter_(1, t[:, None], out.gather(1, t[:, None]))

    rules = _composite(composite, epsilon, passed, _canonizers(private))
    with eval_mode(private), Gradient(model=private, composite=rules) as attributor:
        _, relevance = attributor(x.detach(), seed)  # detach: Zennit sets requires_grad
    return relevance.detach()


lrp_method = registry_method(lrp)
