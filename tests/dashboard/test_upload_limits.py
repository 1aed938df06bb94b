"""Issue 29, items 2, 8 and 9: what the Your model page says about sizes, shapes and names.

Each test reads what a user sees: an uploader's limit, an error's sentence, a heading, a choice
kept across pages.
"""

from __future__ import annotations

import io
from pathlib import Path

import hostile
import pytest
import torch
from torch import nn

import pretrained
from dashboard import upload_limits
from sandbox import user_models
from sandbox.user_models import UserModelError, error_line

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")
CLI = "python -m workspace.index"


@pytest.fixture(autouse=True)
def fewer_test_images(monkeypatch):
    monkeypatch.setattr(user_models, "TEST_IMAGES", 300)


def open_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page("page_files/your_model.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def submit(at: AppTest, button: str = "um_submit") -> AppTest:
    at.button(key=button).click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def exported(model: nn.Module, shape: tuple[int, ...]) -> bytes:
    x = torch.zeros(2, *shape)
    batch = torch.export.Dim("batch")
    buf = io.BytesIO()
    torch.export.save(torch.export.export(model.eval(), (x,), dynamic_shapes=({0: batch},)), buf)
    return buf.getvalue()


def digits_cnn() -> nn.Module:
    """A model for scikit-learn's 8 × 8 grey digits, as a practitioner would bring."""
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))


# --- 29.2: sizes ----------------------------------------------------------------------------


def test_each_uploader_takes_its_own_limit_and_a_resnet_fits():
    at = open_page()
    limits = {
        key: at.file_uploader(key=key).proto.max_upload_size_mb
        for key in ("um_file", "um_names", "ws_model_file", "ws_zip")
    }
    assert limits == {"um_file": 256, "um_names": 1, "ws_model_file": 256, "ws_zip": 200}
    assert 45 < upload_limits.MODEL_MB  # a scripted resnet18
    assert at.file_uploader(key="um_file").proto.label.endswith("up to 256 MB)")


def test_a_form_sent_without_its_file_names_the_limit_and_the_command_line():
    at = submit(open_page())
    said = at.error[0].value
    assert said.startswith("Choose a model file first. A model file over 256 MB is not sent")
    assert CLI in said
    at = submit(at, "ws_submit")
    said = at.error[0].value
    assert "A model file over 256 MB is not sent" in said and "A ZIP over 200 MB" in said
    assert len(at.error) == 1  # the first form's box went when the second form was sent


def test_a_file_over_the_limit_is_refused_from_its_size_before_it_is_read(monkeypatch):
    monkeypatch.setattr(upload_limits, "MODEL_MB", 1)
    read = []
    monkeypatch.setattr(user_models, "accept_upload", lambda *a, **k: read.append(1))
    at = open_page()
    at.file_uploader(key="um_file").set_value(("big.pt", b"\0" * (3 * 2**20 // 2), "x/y"))
    said = submit(at).error[0].value
    assert said.startswith("big.pt is 2 MB; a model file may be at most 1 MB here.")
    assert CLI in said and read == []


def test_a_failed_upload_never_makes_the_page_check_the_earlier_file(monkeypatch):
    """The browser refuses a file over the limit and keeps the earlier one in the box: sending
    the form again must not check that earlier file in its place."""
    calls = []

    def refuse(data, **kw):
        calls.append(kw["filename"])
        raise UserModelError("The model's output contains NaN or inf for a test image.")

    monkeypatch.setattr(user_models, "accept_upload", refuse)
    at = open_page()
    at.file_uploader(key="um_file").set_value(("first.pt", b"PK first", "x/y"))
    assert submit(at).error[0].value.startswith("first.pt: The model's output contains NaN")
    said = submit(at).error[0].value  # the user's new, too-big file never arrived
    assert said.startswith("first.pt was already checked with these settings.")
    assert "A model file over 256 MB is not sent" in said and CLI in said
    assert calls == ["first.pt"]
    at.selectbox(key="um_dataset").select("fashion-mnist")  # other settings: checked again
    submit(at)
    assert calls == ["first.pt", "first.pt"]


def test_the_server_and_its_command_line_allow_the_largest_uploader():
    import tomllib

    from dashboard.__main__ import streamlit_args

    config = tomllib.loads((Path(APP).parents[1] / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] == upload_limits.SERVER_MB == 256
    args = streamlit_args([])
    assert args[args.index("--server.maxUploadSize") + 1] == "256"


# --- 29.8: shape errors say what to change ------------------------------------------------


def test_torchs_shape_errors_say_which_colours_and_size_to_choose():
    model = digits_cnn()
    program = torch.export.export(
        model, (torch.zeros(2, 1, 8, 8),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    ).module()
    said = {}
    for name, run, x in (
        ("export rgb", program, torch.zeros(2, 3, 8, 8)),
        ("eager rgb", model, torch.zeros(2, 3, 8, 8)),
        ("export size", program, torch.zeros(2, 1, 28, 28)),
    ):
        with pytest.raises(Exception) as caught:
            run(x)
        said[name] = error_line(caught.value)
    grey = ". This model takes 1 colour channel: choose Colours: grey (or --grey for "
    assert said["export rgb"].startswith("Guard failed: ") and grey in said["export rgb"]
    assert "to have 1 channels, but got 3" in said["eager rgb"] and grey in said["eager rgb"]
    assert said["export size"].endswith(
        ". This model takes images 8 pixels high: set Resize and Centre crop to 8 "
        f"(or --resize 8 --crop 8 for {CLI})."
    )
    three = "expected input[1, 1, 8, 8] to have 3 channels, but got 1 channels instead"
    assert user_models.shape_hint(three).startswith(
        ". This model takes 3 colour channels: choose Colours: RGB (or --rgb"
    )


@hostile.needs_sandbox
def test_a_digits_model_in_the_mnist_form_is_sent_to_the_form_below():
    at = open_page()
    at.file_uploader(key="um_file").set_value(
        ("digits.pt2", exported(digits_cnn(), (1, 8, 8)), "application/octet-stream")
    )
    said = submit(at).error[0].value
    assert said.startswith("digits.pt2: ")
    assert "This model takes images 8 pixels high" in said
    assert "This form is for models of 28 × 28 greyscale MNIST or Fashion-MNIST images" in said
    assert "“Your model on your own images”" in said


# --- 29.9 and 30: names, sticky state, torch.export first -----------------------------------


@hostile.needs_sandbox
def test_an_upload_is_named_after_its_file_everywhere_and_an_old_error_goes():
    at = open_page()
    submit(at, "ws_submit")  # an error in the second form...
    assert at.error
    original = pretrained.load_model("mnist-cnn")
    at.file_uploader(key="um_file").set_value(
        ("my-cnn.pt2", exported(original, (1, 28, 28)), "application/octet-stream")
    )
    submit(at)  # ...is gone after a success in the first
    assert not at.error, [e.value for e in at.error]
    assert at.success[0].value.startswith("Accepted **my-cnn.pt2** (export): ")
    labels = at.selectbox(key="model").options
    assert any(label.startswith("my-cnn.pt2 (") for label in labels), labels
    assert not any("upload:" in label for label in labels)
    at.button(key="um_explore").click().run()
    assert at.selectbox(key="model").value.startswith("upload:")  # the key links keep
    assert at.subheader[0].value.startswith("my-cnn.pt2 says **")


def test_switching_data_sets_keeps_each_ones_model():
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.selectbox(key="model").select("mnist-mlp").run()
    at.selectbox(key="dataset").select("fashion-mnist").run()
    assert at.selectbox(key="model").value == "fashion-mnist-cnn"
    at.selectbox(key="model").select("fashion-mnist-linear").run()
    at.selectbox(key="dataset").select("mnist").run()
    assert at.selectbox(key="model").value == "mnist-mlp"
    at.selectbox(key="dataset").select("fashion-mnist").run()
    assert at.selectbox(key="model").value == "fashion-mnist-linear"
    assert not at.exception


def test_the_page_leads_with_torch_export_and_notes_torchscripts_deprecation():
    at = open_page()
    intro = next(m.value for m in at.markdown if "Upload a classifier" in m.value)
    assert "`torch.export.save(torch.export.export(model, (x,), dynamic_shapes=" in intro
    assert "torch.jit" not in intro  # TorchScript has its one-line note, below
    captions = [c.value for c in at.caption]
    assert any("torch has deprecated it: prefer `torch.export`" in c for c in captions)
    assert at.selectbox(key="ws_kind").options[:3] == [
        "detect from the file",
        "torch.export program (torch.export.save)",
        "TorchScript (torch.jit.save; deprecated by torch)",
    ]


def test_image_photo_and_table_uploaders_keep_their_smaller_limits(monkeypatch):
    """The server takes 256 MB now: every other uploader says its own, smaller limit."""
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["source"] = "upload"
    at.run()
    assert at.file_uploader(key="upload_file").proto.max_upload_size_mb == 20
    at.switch_page("page_files/photos.py").run()
    at.switch_page("page_files/explore.py").run()  # where Photos leads
    if not any(u.key == "ws_upload_file" for u in at.get("file_uploader")):  # offline
        at.checkbox(key="random_weights").check().run()  # random weights: the page goes on
    assert at.file_uploader(key="ws_upload_file").proto.max_upload_size_mb == 20
    at.switch_page("page_files/tables.py").run()
    at.radio(key="t_source").set_value("upload").run()
    assert not at.exception, [e.value for e in at.exception]
    csv = at.file_uploader(key="t_csv_file").proto.max_upload_size_mb
    assert (csv, at.file_uploader(key="t_model_file").proto.max_upload_size_mb) == (16, 256)
    from workspace import tables

    assert upload_limits.CSV_MB == tables.MAX_BYTES >> 20  # written out: see upload_limits


def test_an_image_over_its_limit_is_refused_from_its_size(monkeypatch):
    monkeypatch.setattr(upload_limits, "IMAGE_MB", 1)
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["source"] = "upload"
    at.run()
    at.file_uploader(key="upload_file").set_value(("huge.png", b"\0" * (3 * 2**20 // 2), "x/y"))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.error[0].value.startswith("huge.png is 2 MB; an image may be at most 1 MB here.")


def test_an_image_upload_is_read_once_per_new_file_and_its_error_stays_till_then():
    class File:
        def __init__(self, data: bytes):
            self.data = data

        def getvalue(self) -> bytes:
            return self.data

    session = {"seen": None, "error": None}
    a, b = File(b"one"), File(b"two")
    assert upload_limits.fresh(a, session, seen="seen", error="error") is a
    session["error"] = "a.png: not an image"
    assert upload_limits.fresh(File(b"one"), session, seen="seen", error="error") is None
    assert session["error"] == "a.png: not an image"  # the same file: still refused
    assert upload_limits.fresh(b, session, seen="seen", error="error") is b
    assert session["error"] is None
    assert upload_limits.fresh(None, session, seen="seen", error="error") is None
    # a page that keeps one image per source reads the same file again for another source
    assert upload_limits.fresh(b, session, seen="seen", error="error", scope="ws:x") is b
    assert upload_limits.fresh(b, session, seen="seen", error="error", scope="ws:y") is b
    assert upload_limits.fresh(b, session, seen="seen", error="error", scope="ws:y") is None
