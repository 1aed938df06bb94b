"""How a picture becomes a model's input: `Preprocessing` (resize, centre crop, grey or RGB,
pixels in [0, 1]; the mean and std are applied inside the model), and `WorkspaceError`, the
message a workspace's settings get when they are wrong.

Used by workspaces (`workspace`, which re-exports both) and by the reading of a
workspace's model file (`sandbox.model_files`, in the sandboxed worker too); it imports
neither. Never imports streamlit or torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from .images import ImageError, resized_size

__all__ = ["Preprocessing", "WorkspaceError"]


class WorkspaceError(ValueError):
    """A user-facing message: what is wrong with the workspace's model, data or settings."""


def _floats(values: Any, name: str) -> tuple[float, ...]:
    if isinstance(values, int | float):
        values = (values,)
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise WorkspaceError(
            f"{name} must be a number or a list of numbers, got {values!r}"
        ) from None
    if not out:
        raise WorkspaceError(f"{name} is empty")
    return out


@dataclass(frozen=True)
class Preprocessing:
    """How a picture becomes the model's input `(C, H, W)` in [0, 1].

    `resize`: the shorter side in pixels (aspect kept, torchvision's rule), or None to keep
    the size. `crop`: a centre crop to `crop × crop`, or None. `channels`: 1 (grey) or 3
    (RGB). `mean`, `std`: per channel (or one value for all), applied inside the model.
    """

    resize: int | None = None
    crop: int | None = None
    channels: int = 3
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise WorkspaceError(f"channels must be 1 (grey) or 3 (RGB), got {self.channels}")
        for name in ("resize", "crop"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, int) and 1 <= v <= 4096):
                raise WorkspaceError(f"{name} must be a whole number of pixels (1-4096), got {v}")
        mean, std = _floats(self.mean, "mean"), _floats(self.std, "std")
        for values, name in ((mean, "mean"), (std, "std")):
            if len(values) not in (1, self.channels):
                raise WorkspaceError(
                    f"{name} has {len(values)} values for {self.channels} channel(s)"
                )
        if not all(s > 0 for s in std):
            raise WorkspaceError(f"std must be positive, got {std}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    def describe(self) -> str:
        """The steps, for a person: what the model sees."""
        steps = ["grey (1 channel)" if self.channels == 1 else "RGB (3 channels)"]
        steps.append(
            f"shorter side resized to {self.resize} px" if self.resize else "own size kept"
        )
        if self.crop:
            steps.append(f"centre crop {self.crop} × {self.crop}")
        steps.append("pixels scaled to [0, 1]")
        if self.mean != (0.0,) or self.std != (1.0,):
            fmt = lambda v: ", ".join(f"{x:g}" for x in v)  # noqa: E731
            steps.append(f"then (x − ({fmt(self.mean)})) / ({fmt(self.std)}) inside the model")
        return " · ".join(steps)

    def __call__(self, image: Image.Image) -> np.ndarray:
        """`(C, H, W)` float32 in [0, 1]. Raises ImageError for a photo whose resize would be
        extreme (`images.resized_size`'s aspect limit)."""
        image = image.convert("L" if self.channels == 1 else "RGB")
        if self.resize:
            w, h = resized_size(image.width, image.height, self.resize)
            image = image.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=None)
        if self.crop:
            c = self.crop
            if image.width < c or image.height < c:  # torchvision pads; we say so instead
                raise ImageError(
                    f"The image is {image.width} × {image.height}, smaller than the "
                    f"{c} × {c} crop: add a resize."
                )
            left, top = (image.width - c) // 2, (image.height - c) // 2
            image = image.crop((left, top, left + c, top + c))
        a = np.asarray(image, dtype=np.float32) / 255.0
        return a[None] if a.ndim == 2 else np.ascontiguousarray(a.transpose(2, 0, 1))
