"""Weights, not code, in a real Chromium (issue 30): a torchvision resnet18 and a timm ViT, each
saved as a `.safetensors` file of random weights, sent with a ZIP of pictures on the Your model
page's second form with the architecture picked by name in its Architecture box. Each must be
indexed with the accuracy the module itself has on the same prepared pictures, and Explore must
then show what the module says of the first picture."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
import torch
from browser_support import IDLE, TIMEOUT_MS, send_zip_form
from workspaces import colour_images

from sandbox import safetensors_file
from workspace import Preprocessing
from workspace.folder_upload import read_zip_images

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CLASSES = 3  # class-0, class-1, class-2 of the coloured pictures
PER_CLASS = 3
MEAN, STD = 0.5, 0.25


def idle(page) -> None:
    page.wait_for_selector(IDLE)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> bytes:
    """A ZIP of an ImageFolder: three classes of three 96 x 72 RGB pictures."""
    folder = colour_images(tmp_path_factory.mktemp("weights") / "pics", per_class=PER_CLASS)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in sorted(folder.rglob("*.png")):
            if int(p.parent.name.removeprefix("class-")) < CLASSES:
                z.write(p, f"pictures/{p.relative_to(folder)}")
    return buf.getvalue()


def prepared(pictures: bytes, side: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The ZIP's pictures as the page prepares them (the server's own reader, then the
    normalisation the worker applies), their labels and paths."""
    pre = Preprocessing(resize=side, crop=side, channels=3, mean=(MEAN,) * 3, std=(STD,) * 3)
    images = read_zip_images(pictures, pre)
    assert images.x.shape == (CLASSES * PER_CLASS, 3, side, side)
    return (torch.from_numpy(images.x) - MEAN) / STD, torch.from_numpy(images.labels), images.paths


def centre_head(net: torch.nn.Module, head: torch.nn.Linear, x: torch.Tensor) -> None:
    """Random head weights with the bias that centres the pictures' logits: a random network
    says the same class of every picture, which would let a wrong preparation go unseen."""
    seen = []
    hook = head.register_forward_hook(lambda _, args, __: seen.append(args[0]))
    with torch.no_grad():
        net(x)
        hook.remove()
        head.weight.copy_(torch.randn_like(head.weight))
        head.bias.copy_(-head.weight @ seen[0].mean(0))


def expected(net: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor) -> tuple[float, int]:
    """The module's accuracy on the prepared pictures and its prediction for the first."""
    with torch.no_grad():
        predicted = net(x).argmax(1)
    assert len(set(predicted.tolist())) > 1, "a model that says one class tests too little"
    return (predicted == labels).float().mean().item(), int(predicted[0])


def send(page, server, tmp_path: Path, name: str, data: bytes, pictures: bytes, *,
         architecture: str, side: int) -> None:  # fmt: skip
    """The second form of the Your model page, filled in as a user would."""
    (tmp_path / name).write_bytes(data)
    (tmp_path / "pictures.zip").write_bytes(pictures)
    send_zip_form(page, server.url, tmp_path / name, tmp_path / "pictures.zip", side=side,
                  mean=MEAN, std=STD, architecture=architecture)  # fmt: skip


def indexed_then_explored(page, *, side: int, accuracy: float, first: int, path: str) -> None:
    from playwright.sync_api import expect

    n = CLASSES * PER_CLASS
    said = f"Indexed {n} images of {CLASSES} classes (3 × {side} × {side})"
    expect(page.get_by_text(said)).to_be_visible(timeout=2 * TIMEOUT_MS)
    idle(page)
    assert page.get_by_test_id("stException").count() == 0
    assert page.get_by_test_id("stAlertContentError").count() == 0
    expect(page.get_by_text(f"accuracy {accuracy:.2%}")).to_be_visible()
    page.get_by_role("button", name="Open it in Explore").click()
    expect(page.get_by_role("heading", name="Explore", exact=True)).to_be_visible()
    idle(page)
    expect(page.get_by_text(f"for #0 {path}")).to_be_visible()
    expect(
        page.get_by_role("heading").filter(has_text=f"says {first} · class-{first}")
    ).to_be_visible()
    assert page.get_by_test_id("stException").count() == 0


def test_a_safetensors_resnet18_on_a_zip_workspace(server, page, pictures, tmp_path):
    import torchvision

    torch.manual_seed(8)
    net = torchvision.models.resnet18(weights=None, num_classes=CLASSES).eval()
    x, labels, paths = prepared(pictures, 64)
    centre_head(net, net.fc, x)
    accuracy, first = expected(net, x, labels)
    data = safetensors_file.dumps(net.state_dict())
    send(page, server, tmp_path, "resnet18.safetensors", data, pictures,
         architecture="resnet18", side=64)  # fmt: skip
    indexed_then_explored(page, side=64, accuracy=accuracy, first=first, path=paths[0])


def test_a_timm_vits_safetensors_on_a_zip_workspace(server, page, pictures, tmp_path):
    """timm's smallest named ViT, at the 224 x 224 its position embeddings are made for."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(4)
    net = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=CLASSES).eval()
    x, labels, paths = prepared(pictures, 224)
    centre_head(net, net.head, x)
    accuracy, first = expected(net, x, labels)
    data = safetensors_file.dumps(net.state_dict())
    send(page, server, tmp_path, "vit-tiny.safetensors", data, pictures,
         architecture="vit_tiny_patch16_224", side=224)  # fmt: skip
    indexed_then_explored(page, side=224, accuracy=accuracy, first=first, path=paths[0])
