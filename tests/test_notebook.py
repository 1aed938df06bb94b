"""The notebook widget in the kernel (saliency.widget), its payload shared with the dashboard,
the optional anywidget, and the example notebook run by nbclient. The browser side:
tests/test_notebook_browser.py."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import pretrained
import saliency
from saliency import panel as core
from saliency.notebook import INSTALL

ROOT = Path(__file__).resolve().parents[1]
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
    # The browser checks the same number.
    js = re.search(r"const PAYLOAD_VERSION = (\d+);", core.source("widget"))
    assert js and int(js.group(1)) == core.VERSION
    # A key the dataclass doesn't name is refused, not sent for the panel to ignore.
    from dashboard.components import saliency_panel

    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        sent = {k: v for k, v in dashboard_data.items() if k not in ("arrays", "version")}
        saliency_panel.pack_all({}, {**sent, "colour": 1})


def test_one_source_and_the_widget_reads_no_streamlit_dom() -> None:
    streamlit, widget = core.source("streamlit"), core.source("widget")
    core_js = "\n".join((ROOT / "saliency/panel" / n).read_text() for n in ("arith.js", "panel.js"))
    assert streamlit.startswith(core_js) and widget.startswith(core_js)
    assert "stSidebar" in streamlit  # the dashboard's entry still reads the sidebar (issue 31)
    for text in (core_js, widget):
        assert "stSidebar" not in text and "querySelector('[data-testid" not in text
        assert "aria-expanded" not in text
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
