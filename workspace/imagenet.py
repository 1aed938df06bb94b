"""torchvision's ImageNet classifiers for real photos, with their own preprocessing and names.

    >>> model = load("resnet18")                 # eval mode; raises WeightsUnavailable offline
    >>> model = load("resnet18", weights="random")   # the same code path, untrained weights
    >>> x = pixels("resnet18", photo)[None]      # (1, 3, 224, 224) in [0, 1], resized + cropped
    >>> model(x).shape                           # (1, 1000) logits; normalisation is layer 0
    >>> categories("resnet18")[0]                # 'tench'

The resize, crop and per-channel normalisation are exactly `weights.transforms()`, split so the
model's input is pixels (as for the MNIST models): `ChannelNormalize` is the model's first
layer, so saliency is with respect to the pixels of the cropped photo. Weights come from the
torch hub cache (`torch.hub.get_dir()/checkpoints`), read with `weights_only=True`; when they
are missing, `load(..., download=True)` tries torchvision's download. Never imports streamlit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from PIL import Image
from torch import nn
from torchvision.transforms import functional as F

from pretrained.registry import default_device
from sandbox.images import MAX_ASPECT, ImageError, resized_size

__all__ = [
    "MAX_ASPECT",
    "MODELS",
    "ChannelNormalize",
    "Card",
    "Preparation",
    "WeightsUnavailable",
    "card",
    "categories",
    "how_to_get",
    "load",
    "pixels",
    "preparation",
    "resized_size",
    "weights_available",
    "weights_file",
]


@dataclass(frozen=True)
class _Model:
    title: str
    builder: str  # torchvision.models function name
    weights: str  # torchvision weights enum member, e.g. "ResNet18_Weights.IMAGENET1K_V1"

    @property
    def enum(self) -> torchvision.models.WeightsEnum:
        cls, member = self.weights.split(".")
        return getattr(getattr(torchvision.models, cls), member)


MODELS: dict[str, _Model] = {
    "resnet18": _Model("ResNet-18", "resnet18", "ResNet18_Weights.IMAGENET1K_V1"),
    "mobilenet_v3_small": _Model(
        "MobileNetV3-Small", "mobilenet_v3_small", "MobileNet_V3_Small_Weights.IMAGENET1K_V1"
    ),
}


class WeightsUnavailable(RuntimeError):
    """The pretrained weights are not in the torch cache and could not be downloaded."""


class ChannelNormalize(nn.Module):
    """`(x - mean[c]) / std[c]` per colour channel: `(N, C, H, W)` -> same shape."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _spec(name: str) -> _Model:
    if name not in MODELS:
        raise KeyError(f"unknown ImageNet model {name!r}; known: {', '.join(MODELS)}")
    return MODELS[name]


def categories(name: str) -> tuple[str, ...]:
    """The 1000 ImageNet category names, in output order (shipped inside torchvision)."""
    return tuple(_spec(name).enum.meta["categories"])


@dataclass(frozen=True)
class Card:
    """A classifier's card (its `workspace.model_ref.ModelRef.info`), as a registry model's."""

    name: str  # its key, `imagenet:<name>/<weights>`
    weights: str  # "pretrained" or "random"
    description: str
    class_names: tuple[str, ...]
    dataset: str  # the workspace it explains: `photos:imagenet`
    test_accuracy: float | None  # torchvision's top-1 on ImageNet-1K's validation set
    missing: str = ""  # random weights: how to get the pretrained ones (`how_to_get`)
    title: str = ""  # the architecture as people name it: "ResNet-18"
    architecture: str = ""  # torchvision's name of it, a key of MODELS: "resnet18"
    # The first 8 hex digits of the weights file's sha256, as torchvision names the file and
    # checks it when downloading ("" for random weights, seeded with 0).
    weights_sha256: str = ""


def card(name: str, weights: str, key: str = "", dataset: str = "") -> Card:
    what = "random weights" if weights == "random" else "ImageNet weights"
    metrics = _spec(name).enum.meta["_metrics"]["ImageNet-1K"]
    return Card(
        key or name,
        weights,
        f"{_spec(name).title} ({what})",
        categories(name),
        dataset,
        None if weights == "random" else metrics["acc@1"] / 100,
        missing=how_to_get(name) if weights == "random" else "",
        title=_spec(name).title,
        architecture=name,
        weights_sha256="" if weights == "random" else weights_file(name).stem.rsplit("-", 1)[-1],
    )


def preparation() -> Preparation:
    """How a photo becomes every model's input: what `pixels` does, the same for each of MODELS
    (each resizes the short side to 256 and crops 224 × 224, bilinear; a test checks it)."""
    return Preparation(next(iter(MODELS)))


@dataclass(frozen=True)
class Preparation:
    """A photo -> `(3, 224, 224)` float32 pixels in [0, 1], as model `name`'s transforms do."""

    name: str

    def __call__(self, photo: Image.Image):
        """Raises ImageError for a photo that can't be prepared (too long and thin, …)."""
        try:
            return pixels(self.name, photo).numpy()
        except ImageError:
            raise
        except (ValueError, OverflowError, MemoryError) as err:
            raise ImageError(f"it can't be prepared for the model ({err})") from None

    def describe(self) -> str:
        return (
            "colour (3 channels), the short side resized to 256 and the centre cropped to "
            "224 × 224, pixels in [0, 1] (the model normalises them itself)"
        )


def weights_file(name: str) -> Path:
    """Where torchvision keeps (or would keep) the weights: the torch hub cache."""
    url = _spec(name).enum.url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def weights_available(name: str) -> bool:
    return weights_file(name).is_file()


def how_to_get(name: str) -> str:
    """What to do when the weights are missing, for a person to read."""
    spec = _spec(name)
    return (
        f"The pretrained {spec.title} weights are not in the torch cache ({weights_file(name)}). "
        "To get them, while online run "
        f"`python -c \"import torchvision; torchvision.models.{spec.builder}(weights='DEFAULT')\"`"
        f", or copy {weights_file(name).name} (from {spec.enum.url}) into "
        f"{weights_file(name).parent}."
    )


def load(
    name: str,
    *,
    weights: str = "pretrained",
    download: bool = True,
    device: str | torch.device | None = None,
) -> nn.Module:
    """`ChannelNormalize` + the torchvision model, eval mode, frozen parameters.

    Maps `(N, 3, 224, 224)` pixels in [0, 1] (see `pixels`) to `(N, 1000)` logits.
    `weights="pretrained"` reads the torch cache, else (with `download`) tries torchvision's
    download, and raises `WeightsUnavailable` (message: `how_to_get`) when neither works.
    `weights="random"`: seeded random initialisation, for trying the code path without them.
    """
    spec = _spec(name)
    if weights not in ("pretrained", "random"):
        raise ValueError(f"weights must be 'pretrained' or 'random', got {weights!r}")
    device = default_device() if device is None else torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = getattr(torchvision.models, spec.builder)(weights=None)
    if weights == "pretrained":
        net.load_state_dict(_state_dict(name, download=download))
    transforms = spec.enum.transforms()
    model = nn.Sequential(ChannelNormalize(tuple(transforms.mean), tuple(transforms.std)), net)
    model.requires_grad_(False)
    return model.to(device).eval()


def _state_dict(name: str, *, download: bool) -> dict[str, torch.Tensor]:
    path = weights_file(name)
    if path.is_file():
        return torch.load(path, map_location="cpu", weights_only=True)
    if not download:
        raise WeightsUnavailable(how_to_get(name))
    try:  # what torchvision does online: fetch into the hub cache, check the hash, load
        return _spec(name).enum.get_state_dict(progress=False, check_hash=True)
    except Exception as err:  # noqa: BLE001 - URLError, timeouts, hash mismatch, ...
        raise WeightsUnavailable(f"{how_to_get(name)} ({type(err).__name__}: {err})") from None


def pixels(name: str, image: Image.Image) -> torch.Tensor:
    """`(3, 224, 224)` float32 in [0, 1]: the photo resized and centre-cropped exactly as
    `weights.transforms()` does, without its normalisation (the model's first layer does it).

    Raises `ImageError` for a photo more than `MAX_ASPECT` times longer than it is wide, whose
    resize would be huge; the output of the resize is computed (and bounded) before it is made.
    """
    t = _spec(name).enum.transforms()
    short = t.resize_size[0] if isinstance(t.resize_size, list | tuple) else int(t.resize_size)
    width, height = resized_size(image.width, image.height, short)
    image = image.convert("RGB")
    image = F.resize(image, [height, width], interpolation=t.interpolation, antialias=t.antialias)
    image = F.center_crop(image, t.crop_size)
    return F.convert_image_dtype(F.pil_to_tensor(image), torch.float)
