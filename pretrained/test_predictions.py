"""Each bundled model's probabilities on its bundled test set, stored beside its weights.

They are facts as fixed as the model card: the same weights on the same 10,000 images give the
same answers. Computing them takes 3 to 30 s of a core (more on a loaded server), which a
teacher pressing "Start a class" or a visitor opening the Misclassifications page would
otherwise wait through. `weights/NAME.test.npz` holds them, float32 `(10000, K)`, with the two
sha256 they depend on: the weights' (as the training record states them) and the test images'
file. Retrained weights or another test set miss, and the dashboard computes as before; nothing
stale is shown. `tests/zoo/test_pretrained.py` checks each stored file against a live computation.

Written by `python -m pretrained.test_predictions [NAME ...]` and by `pretrained.train` after
training. Never imports streamlit.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import sys
from pathlib import Path

import numpy as np

from . import registry
from .data import BUNDLED_DIR

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MAX_BYTES = 4 * 2**20  # 10,000 × 10 float32 compress to well under this; more is not ours
CHUNK = 1000  # images per forward pass when writing


def path(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}.test.npz"


@functools.cache
def _images_sha256(dataset: str) -> str:
    return hashlib.sha256(
        (BUNDLED_DIR / dataset / "t10k-images-idx3-ubyte.gz").read_bytes()
    ).hexdigest()


def stored(name: str, dataset: str) -> np.ndarray | None:
    """Registry model `name`'s `(N, K)` probabilities on the bundled `dataset` test set, or None
    when none are stored for these weights and these images (or the file is unreadable)."""
    if name not in registry.list_models():
        return None
    info = registry.model_info(name)
    if info.dataset != dataset:
        return None
    return _read(path(name), info.weights_sha256, _images_sha256(dataset))


@functools.lru_cache(maxsize=16)
def _read(file: Path, weights_sha256: str, images_sha256: str) -> np.ndarray | None:
    try:
        if file.stat().st_size > MAX_BYTES:
            return None
        with np.load(io.BytesIO(file.read_bytes()), allow_pickle=False) as f:
            if str(f["weights_sha256"]) != weights_sha256:
                return None
            if str(f["images_sha256"]) != images_sha256:
                return None
            probs = np.asarray(f["probabilities"], dtype=np.float32)
    except (OSError, KeyError, ValueError):
        return None
    probs.flags.writeable = False
    return probs


def compute(name: str) -> np.ndarray:
    """`(N, K)` float32 probabilities of registry model `name` on its bundled test set."""
    import torch

    from .data import load_arrays

    model = registry.load_model(name, device="cpu")
    images, _ = load_arrays(registry.model_info(name).dataset, "test")
    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        chunks = [model(x[i : i + CHUNK]).softmax(1).numpy() for i in range(0, len(x), CHUNK)]
    return np.concatenate(chunks).astype(np.float32)


def write(name: str) -> Path:
    info = registry.model_info(name)
    probs = compute(name)
    out = path(name)
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        probabilities=probs,
        weights_sha256=np.array(info.weights_sha256),
        images_sha256=np.array(_images_sha256(info.dataset)),
    )
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(out)
    _read.cache_clear()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pretrained.test_predictions",
                                     description=__doc__.split("\n\n")[0])  # fmt: skip
    parser.add_argument("names", nargs="*", help="registry models (default: every image model)")
    args = parser.parse_args(argv)
    for name in args.names or registry.list_models():
        out = write(name)
        print(f"wrote {out} ({out.stat().st_size:,} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
