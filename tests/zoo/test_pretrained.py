"""Tests for `pretrained`: idx reading, bundled test sets, registry, weights, cards, training.

Needs only what the repository ships (bundled test sets, committed weights); the one test
that reads a train split skips when no data directory is present.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import pretrained
import sandbox.model_files
from pretrained import cards, registry
from pretrained import data as pdata

REQUIRED_MODELS = (
    "mnist-linear",
    "mnist-mlp",
    "mnist-cnn",
    "fashion-mnist-linear",
    "fashion-mnist-mlp",
    "fashion-mnist-cnn",
)
# The accuracy targets on the full 10k test set.
TARGETS = {
    "mnist-linear": 0.92,
    "mnist-mlp": 0.975,
    "mnist-cnn": 0.99,
    "fashion-mnist-linear": 0.83,
    "fashion-mnist-mlp": 0.88,
    "fashion-mnist-cnn": 0.91,
    "mnist-vit": 0.97,  # issue 32's
    "fashion-mnist-vit": 0.85,
}
TEST_IMAGES_MD5 = {
    "mnist": "2646ac647ad5339dbf082846283269ea",
    "fashion-mnist": "8181f5470baa50b63fa0f6fddb340f0a",
}
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


# --------------------------------------------------------------------------------------------
# idx files


@pytest.mark.parametrize("suffix", [".gz", ""])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, suffix, dtype):
    rng = np.random.default_rng(0)
    kind = np.dtype(dtype).kind
    array = rng.integers(0 if kind == "u" else -100, 100, (3, 4, 5))
    array = (array / 3 if kind == "f" else array).astype(dtype)
    path = pretrained.write_idx(tmp_path / f"a-idx3{suffix}", array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    back = pretrained.read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == (3, 4, 5)
    np.testing.assert_array_equal(back, array)


def test_idx_header_layout(tmp_path):
    # Against the published format: 0, 0, type 0x08, ndim, then big-endian uint32 sizes.
    path = pretrained.write_idx(tmp_path / "labels-idx1", np.array([7, 2, 1], dtype=np.uint8))
    assert path.read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1])


@pytest.fixture
def images_bytes(tmp_path) -> bytes:
    """A valid uncompressed idx3 file of ten 28x28 uint8 images."""
    path = pretrained.write_idx(tmp_path / "ten-images", np.zeros((10, 28, 28), np.uint8))
    return path.read_bytes()


def _read_error(path: Path) -> str:
    with pytest.raises(pretrained.IdxFormatError) as err:
        pretrained.read_idx(path)
    assert str(path) in str(err.value), "the message must name the file"
    return str(err.value)


def test_idx_rejects_bad_magic(tmp_path, images_bytes):
    path = tmp_path / "bad-magic-idx3-ubyte"
    path.write_bytes(b"\x12\x34" + images_bytes[2:])
    assert "bad magic" in _read_error(path)


def test_idx_rejects_unknown_dtype_code(tmp_path, images_bytes):
    path = tmp_path / "bad-code-idx3-ubyte"
    path.write_bytes(images_bytes[:2] + b"\x07" + images_bytes[3:])
    assert "unknown dtype code 0x07" in _read_error(path)


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_idx_rejects_truncated(tmp_path, images_bytes, suffix):
    payload = images_bytes[:-100]
    path = tmp_path / f"short-idx3-ubyte{suffix}"
    path.write_bytes(gzip.compress(payload) if suffix else payload)
    msg = _read_error(path)
    assert "truncated" in msg and "expected 7840" in msg and "got 7740" in msg


def test_idx_rejects_trailing_bytes(tmp_path, images_bytes):
    path = tmp_path / "long-idx3-ubyte"
    path.write_bytes(images_bytes + b"\x00" * 3)
    assert "3 unexpected trailing bytes" in _read_error(path)


def test_idx_rejects_non_gzip_garbage(tmp_path):
    path = tmp_path / "garbage-idx3-ubyte.gz"
    path.write_bytes(b"<html>404 not found</html>")
    assert "not a gzip file" in _read_error(path)


def test_idx_rejects_cut_gzip_stream(tmp_path, images_bytes):
    path = tmp_path / "cut-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(images_bytes)[:40])
    assert "corrupt or truncated gzip" in _read_error(path)


def test_missing_idx_file_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere-idx3-ubyte.gz"):
        pretrained.read_idx(tmp_path / "nowhere-idx3-ubyte.gz")


def _write_split(directory: Path, images: np.ndarray, labels: np.ndarray, prefix="t10k") -> None:
    pretrained.write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", images)
    pretrained.write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", labels)


def test_load_rejects_count_mismatch(tmp_path):
    _write_split(tmp_path, np.zeros((5, 28, 28), np.uint8), np.zeros(4, np.uint8))
    with pytest.raises(pretrained.IdxFormatError) as err:
        pretrained.load_dataset("mnist", "test", data_dir=tmp_path)
    msg = str(err.value)
    assert "count mismatch" in msg and "5 images" in msg and "4 labels" in msg
    assert "t10k-images-idx3-ubyte.gz" in msg and "t10k-labels-idx1-ubyte.gz" in msg


def test_load_rejects_wrong_image_shape_and_labels(tmp_path):
    _write_split(tmp_path / "a", np.zeros((5, 28, 27), np.uint8), np.zeros(5, np.uint8))
    with pytest.raises(pretrained.IdxFormatError, match=r"\(N, 28, 28\)"):
        pretrained.load_dataset("mnist", "test", data_dir=tmp_path / "a")
    _write_split(tmp_path / "b", np.zeros((5, 28, 28), np.uint8), np.full(5, 12, np.uint8))
    with pytest.raises(pretrained.IdxFormatError, match="label 12 outside 0..9"):
        pretrained.load_dataset("mnist", "test", data_dir=tmp_path / "b")


def test_load_reads_replaced_files_afresh(tmp_path):
    # The in-process cache must not hand back a file's old contents.
    _write_split(tmp_path, np.zeros((3, 28, 28), np.uint8), np.array([1, 2, 3], np.uint8))
    assert pretrained.load_dataset("mnist", "test", data_dir=tmp_path).labels.tolist() == [1, 2, 3]
    _write_split(tmp_path, np.zeros((2, 28, 28), np.uint8), np.array([4, 5], np.uint8))
    assert pretrained.load_dataset("mnist", "test", data_dir=tmp_path).labels.tolist() == [4, 5]


# --------------------------------------------------------------------------------------------
# Data sets


@pytest.mark.parametrize("name", pretrained.DATASETS)
def test_bundled_test_set_is_the_original(name):
    folder = pdata.BUNDLED_DIR / name
    images = gzip.decompress((folder / "t10k-images-idx3-ubyte.gz").read_bytes())
    assert hashlib.md5(images).hexdigest() == TEST_IMAGES_MD5[name]

    ds = pretrained.load_dataset(name)  # split defaults to "test"
    assert ds.split == "test" and len(ds) == 10_000
    assert ds.images.shape == (10_000, 1, 28, 28) and ds.images.dtype == torch.float32
    assert ds.labels.shape == (10_000,) and ds.labels.dtype == torch.int64
    assert 0.0 <= ds.images.min() and ds.images.max() == 1.0
    # Every class is present, and balanced to within the published counts (892..1135).
    counts = torch.bincount(ds.labels, minlength=10)
    assert counts.sum() == 10_000 and counts.min() >= 892 and counts.max() <= 1135
    # Pixels are the file's bytes / 255.
    first = np.frombuffer(images, np.uint8, count=784, offset=16).reshape(28, 28)
    torch.testing.assert_close(ds.images[0, 0], torch.from_numpy(first / 255.0).float())


def test_class_names():
    assert pretrained.load_dataset("mnist").classes == tuple("0123456789")
    assert pretrained.load_dataset("fashion-mnist").classes == FASHION_CLASSES


def test_dataset_indexing_and_batches():
    ds = pretrained.load_dataset("mnist", "test")
    x, y = ds[:8]
    assert x.shape == (8, 1, 28, 28) and y.shape == (8,)
    x1, y1 = ds[3]
    assert x1.shape == (1, 28, 28) and y1.shape == ()
    sizes = [len(y) for _, y in ds.batches(3000)]
    assert sizes == [3000, 3000, 3000, 1000]
    torch.testing.assert_close(torch.cat([y for _, y in ds.batches(3000)]), ds.labels)


def test_load_returns_independent_tensors():
    a = pretrained.load_dataset("mnist")
    a.images[0].fill_(7.0)
    assert pretrained.load_dataset("mnist").images[0].max() <= 1.0


def test_load_dataset_rejects_unknown_name_and_split():
    with pytest.raises(ValueError, match=r"'cifar10'.*mnist, fashion-mnist"):
        pretrained.load_dataset("cifar10")
    with pytest.raises(ValueError, match=r"'validation'.*train, test"):
        pretrained.load_dataset("mnist", "validation")


def test_missing_train_split_lists_paths_tried(tmp_path):
    # An explicit data_dir is never downloaded into, so this stays offline.
    with pytest.raises(FileNotFoundError) as err:
        pretrained.load_dataset("fashion-mnist", "train", data_dir=tmp_path)
    msg = str(err.value)
    assert "train-images-idx3-ubyte.gz" in msg and str(tmp_path) in msg
    assert str(tmp_path / "fashion-mnist" / "raw") in msg


def test_train_split_found_under_torchvision_layout(tmp_path):
    raw = tmp_path / "mnist" / "raw"
    _write_split(raw, np.zeros((4, 28, 28), np.uint8), np.arange(4, dtype=np.uint8), "train")
    ds = pretrained.load_dataset("mnist", "train", data_dir=tmp_path)
    assert ds.split == "train" and ds.labels.tolist() == [0, 1, 2, 3]


def test_train_split_search_order(tmp_path, monkeypatch):
    # SALIENCY_DATA_DIR comes before the shared directory and the cache.
    for d, label in (("env", 1), ("shared", 2), ("cache", 3)):
        raw = tmp_path / d / "mnist" / "raw"
        _write_split(raw, np.zeros((1, 28, 28), np.uint8), np.array([label], np.uint8), "train")
    monkeypatch.setattr(pdata, "SHARED_DATA_DIR", tmp_path / "shared")
    monkeypatch.setattr(pdata, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setenv(pdata.ENV_VAR, str(tmp_path / "env"))
    assert pretrained.load_dataset("mnist", "train").labels.tolist() == [1]
    monkeypatch.delenv(pdata.ENV_VAR)
    assert pretrained.load_dataset("mnist", "train").labels.tolist() == [2]
    shutil.rmtree(tmp_path / "shared")
    assert pretrained.load_dataset("mnist", "train").labels.tolist() == [3]


def test_download_failure_names_paths_tried(tmp_path, monkeypatch):
    def offline(name):
        raise RuntimeError("no network")

    monkeypatch.setattr(pdata, "SHARED_DATA_DIR", tmp_path / "shared")
    monkeypatch.setattr(pdata, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.delenv(pdata.ENV_VAR, raising=False)
    monkeypatch.setattr(pdata, "_download", offline)
    with pytest.raises(FileNotFoundError) as err:
        pretrained.load_dataset("fashion-mnist", "train")
    msg = str(err.value)
    assert str(tmp_path / "shared" / "fashion-mnist" / "raw") in msg
    assert str(tmp_path / "cache" / "fashion-mnist" / "raw") in msg
    assert "download via torchvision failed: no network" in msg and pdata.ENV_VAR in msg


def _real_data_dir() -> Path | None:
    env = os.environ.get(pdata.ENV_VAR)
    if env:
        return Path(env)
    return pdata.SHARED_DATA_DIR if pdata.SHARED_DATA_DIR.is_dir() else None


@pytest.mark.parametrize("name", pretrained.DATASETS)
def test_train_split_loads(name):
    if _real_data_dir() is None:
        pytest.skip(f"no data dir: {pdata.SHARED_DATA_DIR} missing and {pdata.ENV_VAR} unset")
    ds = pretrained.load_dataset(name, "train")
    assert len(ds) == 60_000 and ds.images.shape == (60_000, 1, 28, 28)
    assert torch.bincount(ds.labels, minlength=10).min() >= 5_000
    mean, std = pdata.NORMALISATION[name]  # the constants the models normalise with
    assert abs(ds.images.mean().item() - mean) < 1e-4
    assert abs(ds.images.std().item() - std) < 1e-4


# --------------------------------------------------------------------------------------------
# Registry and weights


def test_registry_lists_required_models():
    names = pretrained.list_models()
    assert set(REQUIRED_MODELS) <= set(names) and len(names) == len(set(names))
    for dataset in pretrained.DATASETS:
        subset = pretrained.list_models(dataset)
        assert subset and all(pretrained.model_info(n).dataset == dataset for n in subset)
    assert sorted(pretrained.list_models("mnist") + pretrained.list_models("fashion-mnist")) == (
        sorted(names)
    )
    with pytest.raises(ValueError, match="known datasets"):
        pretrained.list_models("cifar10")


@pytest.mark.parametrize("call", [pretrained.model_info, pretrained.load_model])
def test_registry_refuses_unknown_names(call):
    with pytest.raises(KeyError) as err:
        call("mnist-resnet")
    msg = str(err.value)
    assert "mnist-resnet" in msg
    assert all(name in msg for name in pretrained.list_models())


@pytest.mark.parametrize("name", pretrained.list_models())
def test_model_loads_and_reaches_recorded_accuracy(name):
    info = pretrained.model_info(name)
    model = pretrained.load_model(name, device="cpu")
    assert not model.training and not any(m.training for m in model.modules())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert pretrained.count_parameters(model) == info.n_params

    ds = pretrained.load_dataset(info.dataset, "test")
    assert info.class_names == ds.classes and info.input_shape == (1, 28, 28)
    with torch.no_grad():
        for n in (1, 5):
            out = model(ds.images[:n])
            assert out.shape == (n, 10) and out.dtype == torch.float32

    result = pretrained.evaluate(model, ds, batch_size=2000)
    assert result.n == 10_000
    assert abs(result.accuracy - info.test_accuracy) <= 0.001
    assert info.test_accuracy >= TARGETS.get(name, 0.9)
    np.testing.assert_allclose(result.per_class_accuracy, info.per_class_accuracy, atol=0.01)
    assert info.weights_file.stat().st_size < 5e6


@pytest.mark.parametrize("name", pretrained.list_models())
def test_stored_test_predictions_are_the_models(name):
    """The committed probabilities equal the model's own on its test set, and give exactly the
    accuracy its training record states; other weights or another test set read nothing."""
    from pretrained import test_predictions

    info = pretrained.model_info(name)
    stored = test_predictions.stored(name, info.dataset)
    assert stored is not None and stored.shape == (10_000, 10) and stored.dtype == np.float32
    np.testing.assert_allclose(stored, test_predictions.compute(name), rtol=1e-4, atol=1e-6)
    labels = pretrained.data.load_arrays(info.dataset, "test")[1]
    assert int((stored.argmax(1) == labels).sum()) == round(info.test_accuracy * 10_000)
    other = "fashion-mnist" if info.dataset == "mnist" else "mnist"
    assert test_predictions.stored(name, other) is None
    assert test_predictions._read(test_predictions.path(name), "0" * 64, "0" * 64) is None


def test_stored_test_predictions_miss_for_other_weights(tmp_path, monkeypatch):
    from pretrained import test_predictions

    info = pretrained.model_info("mnist-linear")
    monkeypatch.setattr(test_predictions, "WEIGHTS_DIR", tmp_path)
    assert test_predictions.stored("mnist-linear", "mnist") is None  # no file
    (tmp_path / "mnist-linear.test.npz").write_bytes(b"not an npz")
    test_predictions._read.cache_clear()
    assert test_predictions.stored("mnist-linear", "mnist") is None  # unreadable
    np.savez(tmp_path / "mnist-linear.test.npz", probabilities=np.zeros((3, 10), np.float32),
             weights_sha256=np.array("f" * 64),
             images_sha256=np.array(test_predictions._images_sha256("mnist")))  # fmt: skip
    test_predictions._read.cache_clear()
    assert test_predictions.stored("mnist-linear", "mnist") is None  # retrained weights
    assert info.weights_sha256 != "f" * 64


@pytest.mark.parametrize("name", pretrained.list_models())
def test_model_normalises_inside_and_is_differentiable(name):
    info = pretrained.model_info(name)
    model = pretrained.load_model(name, device="cpu")
    first = model[0]
    assert isinstance(first, pretrained.Normalize)
    assert (first.mean.item(), first.std.item()) == pytest.approx(info.normalisation)

    x = pretrained.load_dataset(info.dataset)[:4][0].clone().requires_grad_()
    (g,) = torch.autograd.grad(model(x)[:, 3].sum(), x)
    assert g.shape == x.shape and g.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters()), "weights must not collect grads"


@pytest.mark.parametrize("name", pretrained.list_models())
def test_state_dict_matches_untrained_architecture(name):
    # What issue 7's uploads rely on: build_model's keys and shapes are the weights' keys.
    info = pretrained.model_info(name)
    state = torch.load(info.weights_file, map_location="cpu", weights_only=True)
    fresh = pretrained.build_model(info.architecture).state_dict()
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in fresh.items()}


@pytest.mark.parametrize("name", [n for n in pretrained.list_models() if n.endswith("-linear")])
def test_linear_model_gradient_is_its_weight_row(name):
    # The teaching anchor: d logit_c / dx = W[c] / std for every image.
    model = pretrained.load_model(name, device="cpu")
    _, std = pretrained.model_info(name).normalisation
    x = pretrained.load_dataset(pretrained.model_info(name).dataset)[:3][0].requires_grad_()
    (g,) = torch.autograd.grad(model(x)[:, 7].sum(), x)
    expected = (model[2].weight[7] / std).view(1, 1, 28, 28).expand(3, 1, 28, 28)
    torch.testing.assert_close(g, expected)


def test_load_model_default_device_and_fresh_instances():
    a = pretrained.load_model("mnist-linear")
    b = pretrained.load_model("mnist-linear")
    assert a is not b
    assert next(a.parameters()).device.type == pretrained.default_device().type


def test_load_model_refuses_weights_not_matching_record(tmp_path, monkeypatch):
    info = pretrained.model_info("mnist-linear")
    shutil.copy(info.metrics_file, tmp_path)
    state = torch.load(info.weights_file, weights_only=True)
    state["2.bias"] = state["2.bias"] + 1.0
    torch.save(state, tmp_path / info.weights_file.name)
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(ValueError, match="does not match the training record"):
        pretrained.load_model("mnist-linear", device="cpu")


def test_model_from_weights_matches_registry_model():
    info = pretrained.model_info("fashion-mnist-mlp")
    uploaded = sandbox.model_files.model_from_weights(
        info.weights_file.read_bytes(), architecture="mlp", dataset="fashion-mnist", device="cpu"
    )
    assert not uploaded.training and all(not p.requires_grad for p in uploaded.parameters())
    x = pretrained.load_dataset("fashion-mnist")[:16][0]
    with torch.no_grad():
        torch.testing.assert_close(uploaded(x), pretrained.load_model(info.name, "cpu")(x))


def test_model_from_weights_rejects_mismatches():
    cnn = pretrained.model_info("mnist-cnn").weights_file
    with pytest.raises(ValueError, match=r"do not fit architecture 'mlp'.*missing 2.weight"):
        sandbox.model_files.model_from_weights(cnn, architecture="mlp", dataset="mnist")
    with pytest.raises(ValueError, match="This file is not a PyTorch model"):  # the gate
        sandbox.model_files.model_from_weights(b"garbage", architecture="mlp", dataset="mnist")
    truncated = cnn.read_bytes()[:-100]  # a damaged archive: refused from its directory
    with pytest.raises(ValueError, match="damaged ZIP archive"):
        sandbox.model_files.model_from_weights(truncated, architecture="cnn", dataset="mnist")
    with pytest.raises(ValueError, match="known datasets"):
        sandbox.model_files.model_from_weights(cnn, architecture="cnn", dataset="svhn")


def test_build_model_rejects_unknown_architecture():
    with pytest.raises(ValueError, match=r"'resnet'.*linear, mlp, cnn"):
        pretrained.build_model("resnet")


@pytest.mark.parametrize("arch", list(pretrained.ARCHITECTURES))
def test_build_model_shapes(arch):
    torch.manual_seed(0)
    model = pretrained.build_model(arch, num_classes=7).eval()
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 7)


# --------------------------------------------------------------------------------------------
# Model cards and training records


@pytest.mark.parametrize("name", pretrained.list_models())
def test_card_states_registry_accuracy_and_is_current(name):
    info = pretrained.model_info(name)
    text = info.card_file.read_text()
    assert f"| Test accuracy | **{cards.format_accuracy(info.test_accuracy)}**" in text
    assert f"`{info.train_command}`" in text and "Confusion matrix" in text
    assert text == cards.render_card(info), "stale card: run `python -m pretrained.cards`"


@pytest.mark.parametrize("name", pretrained.list_models())
def test_training_record_is_consistent(name):
    info = pretrained.model_info(name)
    record = json.loads(info.metrics_file.read_text())
    assert record["name"] == name and record["n_test"] == 10_000 and record["n_train"] == 60_000
    assert info.train_command.startswith(f"python -m pretrained.train {name}")
    assert record["test_correct"] == sum(row[i] for i, row in enumerate(info.confusion_matrix))
    assert record["test_correct"] / 10_000 == info.test_accuracy
    assert len(record["history"]) == info.epochs and info.train_seconds > 0


def test_training_is_seeded_and_writes_a_record(tmp_path):
    # A tiny run of the real training code on 2048 bundled test images posing as a train set.
    from pretrained import train

    test = pretrained.load_dataset("mnist")
    images = (test.images[:2048, 0] * 255).round().to(torch.uint8).numpy()
    _write_split(tmp_path / "data", images, test.labels[:2048].to(torch.uint8).numpy(), "train")
    threads, rng_state = torch.get_num_threads(), torch.get_rng_state()
    records = [
        train.train("mnist-linear", epochs=2, data_dir=tmp_path / "data", out_dir=tmp_path / d)
        for d in ("a", "b")
    ]
    assert records[0]["weights_sha256"] == records[1]["weights_sha256"]
    assert records[0]["n_train"] == 2048 and records[0]["epochs"] == 2
    assert records[0]["train_command"] == "python -m pretrained.train mnist-linear --epochs 2"
    assert 0.6 < records[0]["test_accuracy"] < 0.95  # learned something from 2048 images
    # No side effects on the caller's torch state.
    assert torch.get_num_threads() == threads and torch.equal(torch.get_rng_state(), rng_state)
    assert not torch.are_deterministic_algorithms_enabled()
    state = torch.load(tmp_path / "a" / "mnist-linear.pt", weights_only=True)
    assert all(v.dtype == torch.float32 for v in state.values())


def test_library_does_not_import_streamlit_or_saliency():
    """`import pretrained` is light: no Streamlit, and of `saliency` only its face (`import
    saliency` alone: the lazy exports both packages share and the method names, standard
    library only), none of its maths."""
    code = (
        "import sys, saliency; face = set(sys.modules); import pretrained; "
        "print(sorted(m for m in set(sys.modules) - face "
        "if m.split('.')[0] in ('streamlit', 'saliency')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(pretrained.__file__).resolve().parents[1],
    )
    assert out.stdout.strip() == "[]"
