"""The notebook widget in the kernel (saliency.widget), its payload shared with the dashboard,
the optional anywidget, and the example notebook run by nbclient. The browser side:
tests/library/test_notebook_browser.py."""

from __future__ import annotations

import dataclasses
import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pretrained
import saliency
from saliency import display
from saliency import panel as core
from saliency._view_report import state_sha256
from saliency.notebook import INSTALL
from saliency.report import read_report

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "explore.ipynb"

pytest.importorskip("anywidget")


@pytest.fixture(scope="module")
def mnist():
    ds = pretrained.load_dataset("mnist", "test")
    return pretrained.load_model("mnist-cnn"), ds.images[:4], ds.labels[:4], ds.classes


def test_both_hosts_build_the_same_versioned_dataclass(mnist) -> None:
    from dashboard.views import explore

    dashboard_data, _ = core.unpack(
        explore.route_payload({"dataset": "mnist", "model": "mnist-cnn"})
    )
    w = saliency.widget(*mnist)
    widget_data, _ = core.unpack(w._payload)
    fields = {f.name for f in dataclasses.fields(core.PanelData)}
    assert set(dashboard_data) - {"arrays"} == fields
    assert set(widget_data) - {"arrays"} == fields
    assert dashboard_data["version"] == widget_data["version"] == core.VERSION
    # The browser checks the same number, and the same field names: arith.js refuses a payload
    # without one of its PAYLOAD_FIELDS.
    js = re.search(r"const PAYLOAD_VERSION = (\d+);", core.source("widget"))
    assert js and int(js.group(1)) == core.VERSION
    listed = re.search(r"const PAYLOAD_FIELDS = \[(.*?)\];", core.source("widget"), re.S)
    assert listed and re.findall(r'"(\w+)"', listed.group(1)) == list(core.FIELDS)
    # A key the dataclass doesn't name is refused, not sent for the panel to ignore.
    from dashboard.components import saliency_panel

    # One class, not two look-alikes: the widget's data is saliency.panel.PanelData, and the
    # dashboard's component builds that same class (and packs nothing else).
    assert type(w.data) is core.PanelData and saliency_panel.PanelData is core.PanelData
    with pytest.raises(TypeError, match="the panel's data is a PanelData, not dict"):
        core.pack_arrays(dashboard_data, {}, lambda ident: True)
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        sent = {k: v for k, v in dashboard_data.items() if k not in ("arrays", "version")}
        saliency_panel.pack_all({}, {**sent, "colour": 1})


def test_one_source_and_no_host_reads_streamlits_dom() -> None:
    """Both entry points read nothing of the page around the panel (issue 31): no Streamlit
    element looked up by its test id or label, no document-wide listener or observer."""
    streamlit, widget = core.source("streamlit"), core.source("widget")
    core_js = "\n".join((ROOT / "saliency/panel" / n).read_text() for n in ("arith.js", "panel.js"))
    assert streamlit.startswith(core_js) and widget.startswith(core_js)
    for text in (streamlit, widget):
        for reading in ("stSidebar", "[data-testid", "[aria-label", "aria-expanded",
                        "document.querySelector", "document.addEventListener",
                        "MutationObserver"):  # fmt: skip
            assert reading not in text, reading
    for name in ("arith.js", "panel.js", "streamlit.js", "widget.js"):
        assert len((ROOT / "saliency/panel" / name).read_text().splitlines()) < 600, name


def test_widget_maps_equal_the_library_call(mnist) -> None:
    model, x, y, names = mnist
    w = saliency.widget(model, x, y, names, methods=("gradient", "grad_cam"))
    data, arrays = core.unpack(w._payload)
    jac = saliency.class_maps(model, x[:1], list(range(10)), absolute=False)  # (1, 10, 1, H, W)
    np.testing.assert_array_equal(arrays["maps"], jac[0, :, 0].numpy())
    assert data["sign_local"] and data["own_controls"] and data["true"] == int(y[0])
    w.index, w.method = 2, "grad_cam"
    data, arrays = core.unpack(w._payload)
    cam = saliency.class_maps(model, x[2:3], list(range(10)), method="grad_cam")
    np.testing.assert_array_equal(arrays["maps"], cam[0, :, 0].numpy())
    assert data["true"] == int(y[2]) and data["map_of"] == "Grad-CAM" and not data["sign_local"]
    # A method switch reuses the image's prediction (no second forward pass): still image 2's.
    with torch.no_grad():
        probs = torch.softmax(model(x[2:3]).double(), dim=1)[0].numpy()
    np.testing.assert_array_equal(w.view.probs, probs)
    assert data["bars"] == [[k, float(probs[k])] for k in range(10)]
    assert w.kernel_messages == 0  # set from the kernel: no message came from a browser


def test_widget_refuses_what_it_cannot_show(mnist) -> None:
    model, x, y, names = mnist
    with pytest.raises(ValueError, match=r"images must be \(N, C, H, W\)"):
        saliency.widget(model, x[0], y, names)
    with pytest.raises(ValueError, match="unknown methods"):
        saliency.widget(model, x, y, names, methods=("nope",))
    w = saliency.widget(pretrained.load_model("mnist-mlp"), x, y, names)
    w.method = "grad_cam"  # an MLP has no spatial layer: said, the last view kept
    assert w.error.startswith("Grad-CAM: ") and "spatial" in w.error
    assert core.unpack(w._payload)[0]["map_of"] == ""


def test_library_imports_without_anywidget_and_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['anywidget'] = None\n"
        "import saliency, torch\n"
        "try:\n"
        "    saliency.widget(torch.nn.Linear(4, 2), torch.zeros(1, 1, 2, 2))\n"
        "except ModuleNotFoundError as err:\n"
        "    print(err)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == INSTALL
    assert "pip install 'saliency-dashboard[notebook]'" in INSTALL


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_widget_computes_on_the_models_device(mnist) -> None:
    model, x, y, names = mnist
    w = saliency.widget(model.to("cuda"), x, y, names)
    cpu = saliency.widget(model.to("cpu"), x, y, names)
    np.testing.assert_allclose(w.view.maps, cpu.view.maps, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_example_notebook_runs(tmp_path: Path) -> None:
    """notebooks/explore.ipynb, executed as it is by nbclient: it can't rot."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": ROOT}}
    ).execute()
    shown = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs
        if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]  # fmt: skip
    assert len(shown) == 2  # the MNIST widget and the torchvision one
    last = nb.cells[-1].outputs[-1]["data"]["text/plain"]
    assert re.fullmatch(r"'\d+ kB of HTML'", last), last  # the report, made in the kernel


def _pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def check_report(html: str, w, target: int, s: dict) -> None:
    """Every picture of the widget's report is saliency.display's, from the maps the panel
    was sent (`w._payload`) and the settings the report states; the settings round-trip."""
    back = read_report(html)
    data, arrays = core.unpack(w._payload)
    got = back["settings"]
    assert {k: got["settings"][k] for k in s} == s
    assert got["settings"]["method"] == w.method and got["target"] == target
    assert got["image"] == w.index and got["true"] == data["true"]
    index = {k: i for i, k in enumerate(data["classes"])}
    maps, rgb = arrays["maps"], arrays["rgb"]
    signed = s["sign"] == "signed" if data["sign_local"] else data["signed"]
    shown = np.abs(maps) if data["sign_local"] and not signed else maps
    cmap = s["cmap_signed"] if signed else s["cmap"]
    main = shown[index[target]]
    grid = [shown[index[k]] for k in data["grid"]]
    parts = [main, *grid] if s["scale"] == "shared" else [main]
    lo, hi = display.display_range(parts, signed=signed, percentile=s["clip"])
    assert got["display_range"] == [lo, hi]
    big = data["scale"]
    first, contrast, cells = back["sections"]
    want = [
        display.upscale(rgb, big),
        display.render(main, lo=lo, hi=hi, cmap=cmap, scale=big),
        display.render(main, lo=lo, hi=hi, cmap=cmap, image=rgb, alpha=s["alpha"], scale=big),
        display.colorbar(lo, hi, cmap, length=max(280, rgb.shape[1] * big))[0],
    ]
    assert len(first["images"]) == len(want)
    for (caption, png), rgb_want in zip(first["images"], want, strict=True):
        assert np.array_equal(_pixels(png), rgb_want), caption
    assert [p for _, p in first["probabilities"]] == [p for _, p in data["bars"]]
    if data["sign_local"]:  # two rows of the signed maps, in float32 as the browser subtracts
        versus = data["pred"] if target != data["pred"] else data["runner_up"]
        diff = maps[index[target]] - maps[index[versus]]
    else:
        diff = arrays["contrast"]
    c_lo, c_hi = display.display_range(diff, signed=True, percentile=s["clip"])
    c_want = display.render(diff, lo=c_lo, hi=c_hi, cmap=s["cmap_signed"], scale=big)
    assert np.array_equal(_pixels(contrast["images"][0][1]), c_want)
    small = max(1, 140 // max(rgb.shape[:2]))
    assert len(cells["images"]) == len(data["grid"])
    for (caption, png), k, m in zip(cells["images"], data["grid"], grid, strict=True):
        k_lo, k_hi = (
            (lo, hi)
            if s["scale"] == "shared"
            else display.display_range(m, signed=signed, percentile=s["clip"])
        )
        rgb_k = display.render(m, lo=k_lo, hi=k_hi, cmap=cmap, image=rgb, alpha=s["alpha"],
                               scale=small)  # fmt: skip
        assert np.array_equal(_pixels(png), rgb_k) and caption.split(":")[0].startswith(str(k))


def test_the_widgets_report_is_the_view_it_shows(mnist, tmp_path: Path) -> None:
    model, x, y, names = mnist
    w = saliency.widget(model, x, y, names, methods=("gradient", "input_x_gradient"),
                        model_name="mnist-cnn", model_card="A <b>card</b>")  # fmt: skip
    defaults = {"cmap": "inferno", "cmap_signed": "RdBu_r", "alpha": 0.5, "clip": 99.0,
                "sign": "signed", "scale": "map"}  # fmt: skip
    html = w.report()
    check_report(html, w, int(w.view.probs.argmax()), defaults)
    assert "mnist-cnn" in html and "A &lt;b&gt;card&lt;/b&gt;" in html
    sha = re.search(r"weights sha256 <code>([0-9a-f]{64})</code>", html)
    assert sha and sha.group(1) == state_sha256(model)
    for library in ("torch", "numpy", "saliency-dashboard", "python"):
        assert f"<td>{library}</td>" in html

    # Another class and the panel's switches: what the browser sends with "Download report".
    s = {"cmap": "viridis", "cmap_signed": "PiYG", "alpha": 0.25, "clip": 95.0,
         "sign": "absolute", "scale": "shared"}  # fmt: skip
    sent = []
    w.send = lambda content, buffers=None: sent.append((content, buffers))
    w._on_browser_msg(w, {"kind": "report", "target": 3, "settings": s, "seq": 1}, [])
    ((content, buffers),) = sent
    assert content["name"] == "report_mnist-cnn_image0_class3_gradient.html"
    check_report(bytes(buffers[0]).decode("utf-8"), w, 3, s)

    # Another image and method (not sign-local: the kernel's contrast), saved to a file.
    w.index, w.method = 1, "input_x_gradient"
    path = w.save_report(tmp_path / "r.html", target=int(y[1]), clip=90)
    assert core.unpack(w._payload)[0]["sign"] == "absolute"  # the method's: no sign switch
    check_report(
        path.read_text("utf-8"), w, int(y[1]), {**defaults, "clip": 90.0, "sign": "absolute"}
    )

    # What the panel can't show is refused, said to the browser, not drawn.
    with pytest.raises(ValueError, match="sign must be one of"):
        w.report(sign="signed")  # Input × Gradient has no sign switch
    with pytest.raises(TypeError, match="unknown settings"):
        w.report(colour="red")
    sent.clear()
    w._on_browser_msg(w, {"kind": "report", "target": 99, "settings": {}}, [])
    assert sent == [({"kind": "report", "error": sent[0][0]["error"]}, None)]
    assert "class 99 is not in this view" in sent[0][0]["error"]


@pytest.mark.slow  # trains, exports and indexes a small workspace (~13 s here)
def test_widget_on_a_workspace_with_its_name_and_sha256(tmp_path: Path) -> None:
    """A workspace's model, images, labels and classes, as docs/notebook.md shows them."""
    from workspaces import rgb_workspace

    import workspace

    ws = workspace.open_indexed(rgb_workspace(tmp_path, per_class=4))
    model = workspace.load_model(ws.config, len(ws.classes))
    images = torch.stack([torch.from_numpy(ws.image(i)) for i in range(3)])
    w = saliency.widget(model, images, ws.labels[:3], ws.classes,
                        methods=("gradient", "grad_cam", "input_x_gradient"),
                        model_name=ws.name, model_sha256=ws.model_sha256)  # fmt: skip
    data, arrays = core.unpack(w._payload)
    assert arrays["maps"].shape == (5, 64, 64) and data["labels"]["0"] == ws.classes[0]
    jac = saliency.class_maps(model, images[:1], list(range(5)))[0].numpy()  # (5, 3, 64, 64)
    want = display.reduce_channels(jac, "max", channel_axis=1)  # RGB: max |gradient|
    np.testing.assert_array_equal(arrays["maps"], want)
    w.method = "grad_cam"  # a torch.export program keeps no layers: said, the view kept
    assert w.error.startswith("Grad-CAM: a layer map reads a layer through forward hooks")
    w.method = "input_x_gradient"
    assert not w.error and core.unpack(w._payload)[0]["map_of"] == "Input × Gradient"
    html = w.report()
    assert ws.name in html and f"<code>{ws.model_sha256}</code>" in html
