"""Workspaces the tests build from scratch: coloured pictures in class folders, a small model
trained on them, and a torchvision resnet18 with 1000 classes (random weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from workspace import Preprocessing, WorkspaceConfig, list_items, read_image
from workspace.index import index

COLOURS = np.array([[220, 40, 40], [40, 200, 40], [40, 60, 220], [230, 210, 30], [150, 40, 190]])


def colour_images(folder: Path, per_class: int, seed: int = 0) -> Path:
    """Five classes of 96 x 72 RGB pictures: a coloured square on noise, placed at random."""
    rng = np.random.default_rng(seed)
    for k, colour in enumerate(COLOURS):
        d = folder / f"class-{k}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 90, (72, 96, 3)).astype(np.uint8)
            r, c = rng.integers(4, 72 - 30), rng.integers(14, 96 - 44)
            img[r : r + 26, c : c + 26] = colour
            Image.fromarray(img).save(d / f"{i:03d}.png")
    return folder


class Tiny(nn.Module):
    def __init__(self, k: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 5, stride=2)
        self.head = nn.Linear(8, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


def train_tiny(x: torch.Tensor, y: torch.Tensor, path: Path) -> Tiny:
    """A `Tiny` net trained on pixels `x` (normalised by 0.5, 0.25 as the workspace does) and
    labels `y`, saved to `path` as a torch.export program with a dynamic batch size."""
    torch.manual_seed(0)
    net = Tiny()
    opt = torch.optim.Adam(net.parameters(), lr=0.03)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(net((x - 0.5) / 0.25), y).backward()
        opt.step()
    batch = torch.export.Dim("batch", min=1, max=4096)
    ep = torch.export.export(net.eval(), (x[:2],), dynamic_shapes=({0: batch},))
    torch.export.save(ep, str(path))
    return net


def rgb_workspace(tmp: Path, per_class: int = 24) -> Path:
    """Five classes of RGB pictures at 64 x 64, a `Tiny` net trained on them here and saved as
    a torch.export program, indexed into `tmp / "W-rgb"`."""
    folder = colour_images(tmp / "rgb-data", per_class)
    pre = Preprocessing(resize=64, crop=64, channels=3, mean=(0.5, 0.5, 0.5), std=(0.25,) * 3)
    config = WorkspaceConfig(model=str(tmp / "tiny.pt2"), data=str(folder), preprocessing=pre)
    items, _, _ = list_items(config)
    x = torch.stack([torch.from_numpy(read_image(folder, it, pre)) for it in items])
    y = torch.tensor([it.label for it in items])
    train_tiny(x, y, tmp / "tiny.pt2")
    index(config, tmp / "W-rgb", progress=False, batch_size=16)
    return tmp / "W-rgb"


def resnet_workspace(tmp: Path, per_class: int = 8) -> Path:
    """A torchvision resnet18 with random weights and K = 1000 (its state dict), on a CSV of
    coloured pictures labelled 7, 999, 0, 512 and 3, indexed into `tmp / "W-resnet"`."""
    import torchvision

    folder = colour_images(tmp / "resnet-data", per_class)
    files = sorted(folder.rglob("*.png"))
    labels = [7, 999, 0, 512, 3] * per_class
    (tmp / "data.csv").write_text(
        "path,label\n"
        + "".join(f"{f.relative_to(tmp)},{k}\n" for f, k in zip(files, labels, strict=True))
    )
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=1000).eval()
    torch.save(net.state_dict(), tmp / "resnet18.pt")
    config = WorkspaceConfig(
        model=str(tmp / "resnet18.pt"), data=str(tmp / "data.csv"), kind="state_dict",
        architecture="resnet18", classes=tuple(f"category {k}" for k in range(1000)),
        preprocessing=Preprocessing(resize=64, crop=64, channels=3),
    )  # fmt: skip
    index(config, tmp / "W-resnet", progress=False, batch_size=8)
    return tmp / "W-resnet"
