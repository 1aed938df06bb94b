"""Everything slow, computed once: models per process, maps and predictions in bounded caches.

Models are shared by every session (`st.cache_resource`) and never mutated: the saliency
functions leave a model's flags and parameters as they found them. Computed arrays go through
`st.cache_data` (each caller gets a copy), bounded so a long-running classroom server does not
grow without limit.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import streamlit as st
import torch

import pretrained
import saliency
from pretrained.user_models import UserModelInfo
from saliency import display

# Method options used everywhere in the app (named on screen): images live in [0, 1].
METHOD_OPTIONS = {
    "smoothgrad": {"n_samples": 50, "noise": 0.15, "noise_range": (0.0, 1.0), "seed": 0},
    "smoothgrad_sq": {"n_samples": 50, "noise": 0.15, "noise_range": (0.0, 1.0), "seed": 0},
    "vargrad": {"n_samples": 50, "noise": 0.15, "noise_range": (0.0, 1.0), "seed": 0},
    "integrated_gradients": {"steps": 50, "baseline": 0.0},
}


@st.cache_resource(show_spinner="Loading the model…", max_entries=32)
def _registry_model(name: str) -> torch.nn.Module:
    return pretrained.load_model(name)


# --- users' own models: accepted uploads, shared by name like registry models ---------------

UPLOAD_PREFIX = "upload:"
MAX_UPLOADS = 16  # accepted uploads kept per process; the oldest is forgotten first


class _Uploads:
    """A bounded, thread-safe name -> (model, info) store, one per process. Names are content
    hashes, so two sessions uploading the same file with the same settings share one model."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.entries: OrderedDict[str, tuple[torch.nn.Module, UserModelInfo]] = OrderedDict()
        self.lock = threading.Lock()

    def add(self, model: torch.nn.Module, info: UserModelInfo) -> None:
        with self.lock:
            self.entries[info.name] = (model, info)
            self.entries.move_to_end(info.name)
            while len(self.entries) > self.max_entries:
                self.entries.popitem(last=False)

    def get(self, name: str) -> tuple[torch.nn.Module, UserModelInfo]:
        with self.lock:
            if name not in self.entries:
                raise KeyError(f"{name} is no longer loaded on this server: upload it again")
            return self.entries[name]

    def __contains__(self, name: str) -> bool:
        with self.lock:
            return name in self.entries


@st.cache_resource(show_spinner=False)
def uploads() -> _Uploads:
    return _Uploads(MAX_UPLOADS)


def is_upload(name: str) -> bool:
    return isinstance(name, str) and name.startswith(UPLOAD_PREFIX)


def model(name: str) -> torch.nn.Module:
    """A registry model, or an accepted upload (`upload:<sha256[:12]>`); shared, never mutated."""
    return uploads().get(name)[0] if is_upload(name) else _registry_model(name)


def model_info(name: str) -> pretrained.ModelInfo | UserModelInfo:
    """The registry's model card, or what was measured when an upload was accepted."""
    return uploads().get(name)[1] if is_upload(name) else pretrained.model_info(name)


@st.cache_resource(show_spinner="Loading the test set…")
def dataset(name: str) -> pretrained.Dataset:
    return pretrained.load_dataset(name, "test")


def _batch(name: str, image: np.ndarray) -> torch.Tensor:
    m = model(name)
    device = next(m.parameters()).device
    return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).to(device)[None, None]


@st.cache_data(show_spinner=False, max_entries=2048)
def probabilities(name: str, image: np.ndarray) -> np.ndarray:
    """(K,) softmax probabilities of one 28x28 image."""
    with torch.no_grad():
        return model(name)(_batch(name, image)).softmax(1)[0].cpu().numpy()


@st.cache_data(show_spinner="Classifying the whole test set…", max_entries=32)
def test_set_probabilities(name: str, dataset_name: str) -> np.ndarray:
    """(10000, K) float32 probabilities of every bundled test image, computed once per model."""
    m = model(name)
    device = next(m.parameters()).device
    parts = []
    with torch.no_grad():
        for x, _ in dataset(dataset_name).batches(1000):
            parts.append(m(x.to(device)).softmax(1).cpu())
    return torch.cat(parts).numpy()


@st.cache_data(show_spinner=False, max_entries=512)
def class_maps(name: str, image: np.ndarray, method: str, score: str, absolute: bool) -> np.ndarray:
    """(K, 28, 28) maps of every class for one image (gradient: one `jacobian` call)."""
    maps = saliency.class_maps(
        model(name),
        _batch(name, image),
        method=method,
        score=score,
        absolute=absolute,
        **METHOD_OPTIONS.get(method, {}),
    )  # (1, K, 1, 28, 28)
    return maps[0, :, 0].cpu().numpy()


@st.cache_data(show_spinner=False, max_entries=512)
def contrast_map(
    name: str, image: np.ndarray, target: int, versus: int, method: str, score: str
) -> np.ndarray:
    """(28, 28) signed map of score_target - score_versus."""
    m = saliency.contrast(
        model(name),
        _batch(name, image),
        target,
        versus,
        method=method,
        score=score,
        **METHOD_OPTIONS.get(method, {}),
    )
    return m[0, 0].cpu().numpy()


@st.cache_data(show_spinner=False, max_entries=512)
def integrated_gradients_delta(name: str, image: np.ndarray, target: int, score: str) -> float:
    """Completeness delta of IG for one image and class: sum(map) - (f(x) - f(baseline))."""
    _, delta = saliency.attribute(
        model(name),
        _batch(name, image),
        target,
        method="integrated_gradients",
        score=score,
        return_delta=True,
        **METHOD_OPTIONS["integrated_gradients"],
    )
    return float(delta[0])


# --- data-set sensitivity, cached on disk so a second visit (and other users) get it at once ---


def cache_dir() -> Path:
    """$SALIENCY_CACHE_DIR, else ~/.cache/saliency-dashboard (read on every call)."""
    return Path(
        os.environ.get("SALIENCY_CACHE_DIR") or Path.home() / ".cache" / "saliency-dashboard"
    )


_SUMMARY_VERSION = 1  # bump when the summary's meaning or layout changes


def summary_path(model_name: str, dataset_name: str, n: int) -> Path:
    """Keyed by model name and weights hash, data set, number of test images, and format."""
    sha = model_info(model_name).weights_sha256[:12]
    stem = model_name.replace(":", "-")  # uploads are named "upload:<hash>"
    name = f"{stem}-{sha}-{dataset_name}-test{n}-logit-v{_SUMMARY_VERSION}.npz"
    return cache_dir() / "sensitivity" / name


@st.cache_data(show_spinner=False, max_entries=32)
def _read_summary(path: str, mtime: float) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in ("abs_sums", "signed_sums", "counts")}


def stored_summary(
    model_name: str, dataset_name: str, n: int
) -> saliency.SensitivitySummary | None:
    path = summary_path(model_name, dataset_name, n)
    if not path.is_file():
        return None
    try:
        arrays = _read_summary(str(path), path.stat().st_mtime)
    except (OSError, ValueError, KeyError):
        return None  # a damaged cache file is recomputed, not fatal
    return saliency.SensitivitySummary(**{k: torch.from_numpy(v) for k, v in arrays.items()})


def compute_summary(
    model_name: str, dataset_name: str, n: int, progress=None
) -> saliency.SensitivitySummary:
    """One pass over the first `n` test images; saved atomically to the disk cache."""
    ds = dataset(dataset_name)
    batches = (ds[i : min(i + 256, n)] for i in range(0, n, 256))
    summary = saliency.sensitivity_summary(
        model(model_name), batches, progress=lambda done, _: progress and progress(done, n)
    )
    path = summary_path(model_name, dataset_name, n)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(
        tmp,
        abs_sums=summary.abs_sums.cpu().numpy(),
        signed_sums=summary.signed_sums.cpu().numpy(),
        counts=summary.counts.cpu().numpy(),
    )
    os.replace(tmp, path)
    return summary


# --- ImageNet photos: torchvision models, maps for the classes asked for only --------------

PHOTO_METHODS = {
    "gradient": {},
    # 10 noisy copies, not 50: each is a 224 x 224 ResNet backward pass on the CPU.
    "smoothgrad": {"n_samples": 10, "noise": 0.15, "noise_range": (0.0, 1.0), "seed": 0},
}


@st.cache_resource(show_spinner="Loading the ImageNet model…", max_entries=4)
def imagenet_model(name: str, weights: str) -> torch.nn.Module:
    """Raises `imagenet.WeightsUnavailable` (not cached) when pretrained weights are missing."""
    # Imported here: torchvision takes seconds to import, and only the Photos page needs it.
    from pretrained import imagenet

    return imagenet.load(name, weights=weights, download=False)


@st.cache_data(show_spinner=False, max_entries=64)
def photo_probabilities(name: str, weights: str, pixels: np.ndarray) -> np.ndarray:
    """(1000,) softmax probabilities of one (3, 224, 224) photo."""
    m = imagenet_model(name, weights)
    with torch.no_grad():
        return m(torch.from_numpy(pixels)[None]).softmax(1)[0].numpy()


@st.cache_data(show_spinner="Computing the map…", max_entries=64)
def photo_map(
    name: str, weights: str, pixels: np.ndarray, target: int, method: str, reduction: str
) -> np.ndarray:
    """(224, 224) map of one class: signed gradients (3, 224, 224) reduced over channels
    ("max": max |g|, Simonyan's choice; "sum": signed sum). One class at a time: never the
    1000-class Jacobian."""
    m = imagenet_model(name, weights)
    x = torch.from_numpy(pixels)[None]  # (1, 3, 224, 224)
    signed = reduction != "max"  # "max" takes |g| anyway; SmoothGrad then averages |g|
    g = saliency.attribute(
        m, x, target, method=method, absolute=False if signed else None, **PHOTO_METHODS[method]
    )  # (1, 3, 224, 224)
    return display.reduce_channels(g[0].numpy(), reduction)  # (224, 224)
