"""The network architectures, untrained.

Every model takes images in [0, 1] shaped `(N, 1, 28, 28)` and returns logits `(N, 10)`.
Normalisation by the data set's mean and std is the model's first layer, so gradients
(saliency) are with respect to raw pixel values, and callers never preprocess.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

ARCHITECTURES: dict[str, str] = {
    "linear": "Logistic regression: Flatten -> Linear(784, 10).",
    "mlp": "Two-layer fully connected net: Linear(784, 256) -> ReLU -> Linear(256, 10).",
    "cnn": (
        "Small CNN: Conv(32, 3x3) -> ReLU -> MaxPool -> Conv(64, 3x3) -> ReLU -> MaxPool -> "
        "Linear(3136, 128) -> ReLU -> Dropout -> Linear(128, 10)."
    ),
    "cnn-bn": (
        "The small CNN with BatchNorm after each convolution (its output depends on the batch "
        "in train mode, so eval mode matters)."
    ),
    "vit": (
        "Small vision transformer: 7x7 patches (16 tokens) and a CLS token, width 64, "
        "4 pre-norm blocks of 4-head self-attention and a GELU MLP (128), LayerNorm, "
        "Linear(64, 10) on the CLS token."
    ),
}


class Normalize(nn.Module):
    """`(x - mean) / std` with scalar statistics, as a layer: `(N, C, H, W)` -> same shape.

    The statistics are non-persistent buffers: they follow the model's device and dtype but
    are not part of the state dict, so a state dict holds only learned parameters.
    """

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        if std <= 0:
            raise ValueError(f"std must be positive, got {std}")
        self.register_buffer("mean", torch.tensor(float(mean)), persistent=False)
        self.register_buffer("std", torch.tensor(float(std)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.item():.4f}, std={self.std.item():.4f}"


class Standardize(nn.Module):
    """`(x - mean[c]) / std[c]` per channel, as a model's first layer: `(N, C, H, W)`."""

    def __init__(self, mean: Iterable[float], std: Iterable[float]) -> None:
        super().__init__()
        mean, std = list(mean), list(std)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _entries(out) -> list[tuple[str | int, object]]:
    if isinstance(out, dict):
        return list(out.items())
    fields = getattr(out, "_fields", None)  # a named tuple (torchvision's GoogLeNetOutputs)
    if fields is not None:
        return list(zip(fields, out, strict=True))
    return list(enumerate(out))


def _scores(value) -> bool:
    return isinstance(value, torch.Tensor) and value.is_floating_point() and value.dim() == 2


def _described(key, value) -> str:
    if isinstance(value, torch.Tensor):
        return f"{key}: {tuple(value.shape)} {str(value.dtype).removeprefix('torch.')}"
    return f"{key}: {type(value).__name__}"


def pick_output(out, key: str | int | None = None) -> torch.Tensor:
    """The scores `(N, K)` in what a model returned: the tensor itself, or one entry of a
    tuple, list, named tuple or dict. `key` None takes the first entry that is a 2-D float
    tensor (torchvision's GoogLeNetOutputs in eval mode: logits, None, None), as the Tables
    page does; another is chosen by `key` (position, field name or dict key). None that can
    be scores raises a TypeError listing the entries. Called on every forward pass: it only
    looks, never copies."""
    if isinstance(out, torch.Tensor):
        return out
    if not isinstance(out, (tuple, list, dict)):
        raise TypeError(f"the model returned a {type(out).__name__}, not a tensor")
    entries = _entries(out)
    kind = type(out).__name__
    listed = "; ".join(_described(k, v) for k, v in entries[:8])
    if key is not None:
        if isinstance(key, int) and not isinstance(out, dict):  # by position, named or not
            chosen = [entries[key]] if 0 <= key < len(entries) else []
        else:
            chosen = [(k, v) for k, v in entries if k == key]
        if not chosen:
            raise TypeError(f"the model's {kind} has no output {key!r}; it has {listed}")
        k, v = chosen[0]
        if not _scores(v):
            raise TypeError(f"output {key!r} of the model's {kind} is not (N, K) scores "
                            f"({_described(k, v)})")  # fmt: skip
        return v
    found = [v for _, v in entries if _scores(v)]
    if found:
        return found[0]
    raise TypeError(
        f"the model returns a {kind} ({listed}) and none of its entries is an (N, K) float "
        "tensor of class scores: name the entry that holds them in Output (--output for "
        "python -m workspace.index), by position or name"
    )


class Prepared(nn.Module):
    """`model(standardize(x))` for a workspace's model (`pre`: its `workspace.Preprocessing`,
    per-channel `mean` and `std`), frozen and in eval mode (an exported program refuses
    `.eval()`, so the flags are set directly and only this wrapper switches)."""

    def __init__(self, model: nn.Module, pre, output: str | int | None = None) -> None:
        super().__init__()
        identity = set(pre.mean) == {0.0} and set(pre.std) == {1.0}
        self.standardize = nn.Identity() if identity else Standardize(pre.mean, pre.std)
        self.model = model
        self.output = output  # which entry of a tuple or dict output: `pick_output`
        for m in self.modules():
            m.training = False
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pick_output(self.model(self.standardize(x)), self.output)

    def train(self, mode: bool = True) -> Prepared:
        self.training = mode
        return self


def _linear(num_classes: int) -> list[nn.Module]:
    return [nn.Flatten(), nn.Linear(28 * 28, num_classes)]


def _mlp(num_classes: int, hidden: int = 256) -> list[nn.Module]:
    return [
        nn.Flatten(),
        nn.Linear(28 * 28, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    ]


def _cnn(num_classes: int, batch_norm: bool = False) -> list[nn.Module]:
    def block(c_in: int, c_out: int) -> list[nn.Module]:
        # A conv followed by BatchNorm needs no bias: BatchNorm's shift replaces it.
        layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batch_norm)]
        if batch_norm:
            layers.append(nn.BatchNorm2d(c_out))
        return [*layers, nn.ReLU(), nn.MaxPool2d(2)]

    return [
        *block(1, 32),  # (N, 32, 14, 14)
        *block(32, 64),  # (N, 64, 7, 7)
        nn.Flatten(),  # (N, 3136)
        nn.Linear(64 * 7 * 7, 128),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Linear(128, num_classes),  # (N, 10)
    ]


class Attention(nn.Module):
    """Multi-head self-attention, `(N, T, D)` -> same shape, laid out as timm's ViT does.

    With `fused_attn` (the default, and what training uses) the softmax weights stay inside
    `scaled_dot_product_attention`; with it False they are computed explicitly and pass
    through `attn_drop` (an identity), where a forward hook can read them `(N, heads, T, T)`
    and take their gradient: what attention rollout does, on this model and timm's alike.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.fused_attn = True
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attn_drop = nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape[0], x.shape[1], x.shape[2]  # (TorchScript can't unpack a shape)
        qkv = self.qkv(x).reshape(n, t, 3, self.num_heads, d // self.num_heads)
        qkv = qkv.permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # each (N, heads, T, D / heads)
        if self.fused_attn:
            x = nn.functional.scaled_dot_product_attention(q, k, v)
        else:
            attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(-1)  # (N, heads, T, T)
            x = self.attn_drop(attn) @ v
        return self.proj(x.transpose(1, 2).reshape(n, t, d))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """A small ViT for `(N, C, H, W)` images -> `(N, num_classes)` logits.

    The patch embedding is a strided convolution (`patch_embed`), a learned CLS token is
    prepended (`num_prefix_tokens` = 1, timm's name, which rollout reads to drop it) and the
    head reads the CLS token after the last block.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        image_size: int = 28,
        patch_size: int = 7,
        in_channels: int = 1,
        dim: int = 64,
        depth: int = 4,
        num_heads: int = 4,
        mlp_dim: int = 128,
    ) -> None:
        super().__init__()
        grid = image_size // patch_size
        self.num_prefix_tokens = 1
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.Sequential(*(Block(dim, num_heads, mlp_dim) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)  # (N, 16, D)
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # (N, 1, D)
        tokens = torch.cat([cls, tokens], 1) + self.pos_embed  # (N, 17, D)
        return self.head(self.norm(self.blocks(tokens))[:, 0])  # (N, K)


_BUILDERS: dict[str, Callable[[int], list[nn.Module]]] = {
    "linear": _linear,
    "mlp": _mlp,
    "cnn": _cnn,
    "cnn-bn": lambda k: _cnn(k, batch_norm=True),
    "vit": lambda k: [VisionTransformer(k)],
}


def build_model(
    architecture: str,
    num_classes: int = 10,
    *,
    normalisation: tuple[float, float] = (0.0, 1.0),
) -> nn.Sequential:
    """A freshly initialised model of a registry architecture.

    Maps `(N, 1, 28, 28)` images in [0, 1] to `(N, num_classes)` logits; layer 0 is
    `Normalize(*normalisation)`. Parameter names match the shipped weights, so a state dict
    trained elsewhere for the same architecture loads with `load_state_dict`. Uses the global
    torch RNG for initialisation (seed it for reproducibility).
    """
    if architecture not in _BUILDERS:
        raise ValueError(
            f"unknown architecture {architecture!r}; known architectures: {', '.join(_BUILDERS)}"
        )
    mean, std = normalisation
    return nn.Sequential(Normalize(mean, std), *_BUILDERS[architecture](num_classes))


def count_parameters(model: nn.Module) -> int:
    """Number of learned scalars (BatchNorm running statistics are not counted)."""
    return sum(p.numel() for p in model.parameters())


class StandardisedRegressor(nn.Module):
    """A regression net for a table in raw units, the kind people ask about: it standardises
    its inputs inside `forward` and returns a tuple, `(y, y_scaled)`, the prediction in the
    target's units and in standard units, each `(N, 1)`.

    Input `(N, D)` in each feature's own unit. The statistics are persistent buffers (set from
    the training rows), so the state dict holds everything the model computes with. Tanh
    hidden layers make it smooth, so autograd and finite differences agree closely.
    """

    def __init__(self, n_features: int, hidden: int = 32) -> None:
        super().__init__()
        self.register_buffer("x_mean", torch.zeros(n_features))
        self.register_buffer("x_std", torch.ones(n_features))
        self.register_buffer("y_mean", torch.zeros(()))
        self.register_buffer("y_std", torch.ones(()))
        self.net = nn.Sequential(
            nn.Linear(n_features, hidden),
            nn.Tanh(),
            nn.Linear(hidden, hidden),
            nn.Tanh(),
            nn.Linear(hidden, 1),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y_scaled = self.net((x - self.x_mean) / self.x_std)
        return y_scaled * self.y_std + self.y_mean, y_scaled
