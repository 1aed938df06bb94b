"""Users' own models: safe loading (nothing unpickled as code), the checks, the page."""

from __future__ import annotations

import io
import pickle
import uuid
import zipfile
from pathlib import Path

import hostile
import pytest
import torch
from torch import nn

import pretrained
from sandbox import user_models
from sandbox.user_models import UserModelError, load_user_model, read_model

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")
N_TEST = 500  # test images the accuracy is measured on here (the app uses all 10,000)


@pytest.fixture(autouse=True)
def fewer_test_images(monkeypatch):
    monkeypatch.setattr(user_models, "TEST_IMAGES", N_TEST)


class Pwn:
    """Unpickling this object creates `path`: the kind of file that must never be unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def marker() -> Path:
    return Path("/tmp") / f"pwned-{uuid.uuid4().hex}"


def torch_saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def scripted(model: nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(model), buf)
    return buf.getvalue()


def with_member(data: bytes, name: str, content: bytes) -> bytes:
    """A copy of the zip archive `data` with one more file in it."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item.filename))
        dst.writestr(name, content)
    return out.getvalue()


class Lambda(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.linear = nn.Linear(784, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "rgb":
            x = x.expand(-1, 3, -1, -1)
            return self.linear(x.reshape(x.shape[0], 784))  # 3 * 784 values per row: fails
        out = self.linear(x.flatten(1))  # (N, 10)
        if self.kind == "nan":
            return out * float("nan")
        if self.kind == "flat":
            return out.flatten()  # (N * 10,)
        if self.kind == "seven":
            return out[:, :7]
        return out


# --- never unpickle ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["torch.save", "pickle.dumps"])
@pytest.mark.parametrize("kind", ["auto", "state_dict", "torchscript"])
def test_a_crafted_pickle_is_refused_and_never_runs(fmt, kind):
    path = marker()
    data = torch_saved(Pwn(path)) if fmt == "torch.save" else pickle.dumps(Pwn(path))
    assert not path.exists()
    with pytest.raises(UserModelError) as err:
        load_user_model(data, dataset="mnist", kind=kind, architecture="cnn")
    assert not path.exists(), "unpickling ran code"
    message = str(err.value)
    if fmt == "pickle.dumps":  # not a zip archive: torch.save's legacy format, refused unread
        assert message.startswith("This file is in torch.save's legacy format")
    elif kind == "torchscript":
        assert "You chose torchscript, but the file is a state_dict file" in message
    else:
        assert message.startswith("Refused: this file holds Python objects")


def test_a_crafted_pickle_disguised_as_torchscript_never_runs():
    path = marker()
    data = with_member(torch_saved(Pwn(path)), "archive/code/__torch__.py", b"")
    assert user_models.detect_kind(data) == "torchscript"
    with pytest.raises(UserModelError, match="Could not read this torchscript file"):
        read_model(data, dataset="mnist")
    assert not path.exists()


def test_a_crafted_export_archive_never_runs():
    # torch.export.load falls back to a full unpickler when weights_only fails; ours must not.
    path = marker()
    ep = torch.export.export(nn.Linear(3, 2), (torch.zeros(1, 3),))
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as src, zipfile.ZipFile(out, "w") as dst:
        names = src.namelist()
        for item in src.infolist():
            content = src.read(item.filename)
            if item.filename.endswith(".pt"):  # every pickled member becomes the payload
                content = torch_saved((Pwn(path),))
            dst.writestr(item, content)
    assert any(n.endswith(".pt") for n in names)
    with pytest.raises(UserModelError):
        read_model(out.getvalue(), dataset="mnist")
    assert not path.exists()


# --- accepted models --------------------------------------------------------------------------


def test_torchscript_upload_predicts_like_the_original():
    original = pretrained.load_model("mnist-cnn")
    model, info = load_user_model(scripted(original), dataset="mnist", filename="cnn.pt")
    assert info.kind == "torchscript" and info.name.startswith("upload:") and len(info.name) == 19
    x, y = pretrained.load_dataset("mnist")[:64]
    with torch.no_grad():
        torch.testing.assert_close(model(x), original(x))
    ds = pretrained.load_dataset("mnist")
    with torch.no_grad():
        expected = (original(ds.images[:N_TEST]).argmax(1) == ds.labels[:N_TEST]).float().mean()
    assert info.test_accuracy == pytest.approx(float(expected)) and info.n_test == N_TEST
    assert info.n_params == pretrained.count_parameters(original)
    assert not any(p.requires_grad for p in model.parameters())


def test_normalisation_is_applied_before_the_model():
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    model, info = load_user_model(scripted(net), dataset="fashion-mnist", normalisation=(0.5, 0.25))
    x = pretrained.load_dataset("fashion-mnist")[:4][0]
    with torch.no_grad():
        torch.testing.assert_close(model(x), net((x - 0.5) / 0.25))
    assert (
        info.dataset == "fashion-mnist"
        and info.class_names == pretrained.CLASS_NAMES["fashion-mnist"]
    )


def test_the_same_file_and_settings_give_the_same_name():
    data = scripted(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)))
    a = load_user_model(data, dataset="mnist")[1].name
    assert load_user_model(data, dataset="mnist")[1].name == a
    assert load_user_model(data, dataset="mnist", normalisation=(0.1, 0.3))[1].name != a


def test_state_dict_of_the_committed_cnn_is_accepted():
    info = pretrained.model_info("mnist-cnn")
    model, got = load_user_model(
        info.weights_file.read_bytes(), dataset="mnist", architecture="cnn"
    )
    assert got.kind == "state_dict" and got.architecture == "cnn"
    original = pretrained.load_model("mnist-cnn")
    x = pretrained.load_dataset("mnist")[:16][0]
    with torch.no_grad():
        torch.testing.assert_close(model(x), original(x))


def test_export_program_with_a_dynamic_batch_is_accepted_and_differentiable():
    import saliency

    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()
    x = torch.rand(2, 1, 28, 28)
    ep = torch.export.export(net, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    model, info = load_user_model(buf.getvalue(), dataset="mnist")
    assert info.kind == "export"
    # A linear model's saliency for class k is |W[k]| at every pixel.
    s = saliency.gradients(model, x, target=3)
    torch.testing.assert_close(s, net[1].weight[3].abs().view(1, 1, 28, 28).expand(2, -1, -1, -1))


FIXED_BATCH = r"runs on one image but not on a batch of two \(.*\)\. Its batch size was fixed"


def test_export_program_with_a_fixed_batch_says_how_to_fix_it():
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()
    buf = io.BytesIO()
    torch.export.save(torch.export.export(net, (torch.rand(1, 1, 28, 28),)), buf)
    with pytest.raises(UserModelError, match=FIXED_BATCH + r'.*Dim\("batch"\)'):
        load_user_model(buf.getvalue(), dataset="mnist")


class BakedBatch(nn.Module):
    """Reads its batch size as a Python int: torch.jit.trace keeps the traced one (1)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.view(int(x.size(0)), -1))


@hostile.needs_sandbox
def test_a_traced_model_with_its_batch_baked_in_is_told_so_in_the_sandbox_too():
    """Before: "works on one image but failed on a batch of test images: mat1 and mat2 shapes
    cannot be multiplied", with no word on tracing or how to save it."""
    data = hostile.saved(BakedBatch().eval(), torch.rand(1, 1, 28, 28), "trace")
    for read in (load_user_model, user_models.accept_upload):
        with pytest.raises(UserModelError, match=FIXED_BATCH + ".*torch.jit.trace records"):
            read(data, dataset="mnist")


# --- each way a model can be refused ----------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("rgb", "The model failed on one (1, 1, 28, 28) image: "),
        ("flat", "The model returned shape (10,) for one image; expected (1, K)"),
        ("seven", "The model returns 7 scores but there are 10 class names."),
        ("nan", "The model's output contains NaN or inf"),
    ],
)
def test_bad_models_are_refused_with_a_message(kind, message):
    with pytest.raises(UserModelError) as err:
        load_user_model(scripted(Lambda(kind)), dataset="mnist")
    assert message in str(err.value)
    assert "\n" not in str(err.value)  # the first line of the model's own error only


def test_a_slow_model_is_refused_after_the_fact(monkeypatch):
    seconds = user_models.check_model(
        Lambda("ok"), torch.zeros(1, 1, 28, 28), n_classes=10, time_limit=60
    )
    assert 0 < seconds < 60
    with pytest.raises(UserModelError, match=r"too slow: .* s for one image \(the limit is"):
        user_models.check_model(
            Lambda("ok"), torch.zeros(1, 1, 28, 28), n_classes=10, time_limit=1e-9
        )


def test_class_names_must_match_the_model_and_data_set():
    assert user_models.parse_class_names("a\n b \n\nc\n") == ("a", "b", "c")
    assert user_models.parse_class_names(b'["x", "y"]') == ("x", "y")
    assert user_models.parse_class_names("  ") is None
    with pytest.raises(UserModelError, match="look like JSON"):
        user_models.parse_class_names("[1, 2")
    with pytest.raises(UserModelError, match="5 class names given, but mnist has 10 classes"):
        load_user_model(scripted(Lambda("ok")), dataset="mnist", class_names=list("abcde"))
    names = [f"digit {k}" for k in range(10)]
    _, info = load_user_model(scripted(Lambda("ok")), dataset="mnist", class_names=names)
    assert info.class_names == tuple(names)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "The file is empty"),
        (b"hello, I am a text file", "This file is not a PyTorch model"),
        (b"PK\x03\x04" + bytes(60), "damaged ZIP archive"),
    ],
)
def test_files_of_no_known_format_are_refused(data, message):
    with pytest.raises(UserModelError, match=message):
        load_user_model(data, dataset="mnist")


def test_unrelated_zip_and_wrong_architecture_are_refused():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("readme.txt", "hi")
    with pytest.raises(UserModelError, match="not a PyTorch model file"):
        load_user_model(buf.getvalue(), dataset="mnist")
    mlp = pretrained.model_info("mnist-mlp").weights_file.read_bytes()
    with pytest.raises(UserModelError, match="weights do not fit architecture 'cnn'"):
        load_user_model(mlp, dataset="mnist", architecture="cnn")


# --- the page ---------------------------------------------------------------------------------


def open_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page("page_files/your_model.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def upload(at: AppTest, name: str, data: bytes, **choices) -> AppTest:
    at.file_uploader(key="um_file").set_value((name, data, "application/octet-stream"))
    for key, value in choices.items():
        at.selectbox(key=key).select(value)
    at.button(key="um_submit").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@hostile.needs_sandbox
def test_page_refuses_a_crafted_pickle_and_keeps_running():
    path = marker()
    at = upload(open_page(), "weights.pt", torch_saved(Pwn(path)))
    assert not path.exists()
    assert at.error and at.error[0].value.startswith("weights.pt: Refused: this file holds Python")
    assert all(not m.startswith("upload:") for m in at.selectbox(key="model").options)


@hostile.needs_sandbox
def test_page_accepts_torchscript_then_explore_uses_it():
    original = pretrained.load_model("mnist-cnn")
    at = upload(open_page(), "my-cnn.pt", scripted(original))
    assert not at.error
    assert at.success and at.success[0].value.startswith("Accepted **my-cnn.pt** (torchscript)")
    assert any(o.startswith("my-cnn.pt (") for o in at.selectbox(key="model").options)
    at.button(key="um_explore").click().run()  # selects it and opens Explore
    assert not at.exception, [e.value for e in at.exception]
    name = at.selectbox(key="model").value
    assert name.startswith("upload:")  # the key, in links; people read the file's name
    with torch.no_grad():
        probs = original(pretrained.load_dataset("mnist").images[:1]).softmax(1)[0]
    pred = int(probs.argmax())
    assert f"my-cnn.pt says **{pred}** ({float(probs[pred]):.1%})" in at.subheader[0].value

    # A bad upload afterwards: a message, and the accepted model stays.
    at.switch_page("page_files/your_model.py").run()
    upload(at, "nan.pt", scripted(Lambda("nan")))
    assert "nan.pt: The model's output contains NaN" in at.error[0].value
    assert "still available" in at.error[0].value
    assert at.selectbox(key="model").value == name


@hostile.needs_sandbox
def test_page_accepts_a_state_dict_and_reports_wrong_kinds():
    weights = pretrained.model_info("mnist-cnn").weights_file.read_bytes()
    at = upload(open_page(), "mnist-mlp.pt", weights, um_kind="state_dict", um_arch="mlp")
    assert "weights do not fit architecture 'mlp'" in at.error[0].value
    upload(at, "cnn.pt", weights, um_arch="cnn")
    assert not at.error and at.success[0].value.startswith("Accepted **cnn.pt** (state_dict)")
    upload(at, "cnn.pt", weights, um_kind="torchscript")
    assert "You chose torchscript, but the file is a state_dict file" in at.error[0].value


@hostile.needs_sandbox
def test_page_refuses_a_slow_model(monkeypatch):
    monkeypatch.setattr(user_models, "TIME_LIMIT", 1e-9)
    at = upload(open_page(), "slow.pt", scripted(Lambda("ok")))
    assert "slow.pt: The model is too slow" in at.error[0].value
