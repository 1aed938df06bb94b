"""MNIST and Fashion-MNIST, read from their original idx files.

The two test sets ship inside the package (`pretrained/data/<name>/`), so everything that
needs only test images runs offline. Train splits are read from a data directory, found in
this order:

1. the `data_dir=` argument,
2. the `SALIENCY_DATA_DIR` environment variable,
3. `../shared/data/<name>/raw/` next to the repository,
4. `~/.cache/saliency-dashboard/<name>/raw/`,

and, if none holds the files, downloaded by torchvision into the last of these.
A data directory may hold the idx files itself or be a root with `<name>/raw/` inside
(torchvision's layout), so `/path/to/data` and `/path/to/data/mnist/raw` both work.

Example:
    >>> ds = load_dataset("mnist", "test")
    >>> x, y = ds[:8]            # (8, 1, 28, 28) float32 in [0, 1], (8,) int64
"""

from __future__ import annotations

import functools
import gzip
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # imported by load_dataset: `load_arrays` needs no torch
    import torch

DATASETS: tuple[str, ...] = ("mnist", "fashion-mnist")
SPLITS: tuple[str, ...] = ("train", "test")

CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "mnist": tuple(str(d) for d in range(10)),
    "fashion-mnist": (
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
    ),
}

# Mean and std of the training images' pixel values in [0, 1] (all 60,000 x 784 pixels); the
# models normalise with these inside their first layer.
NORMALISATION: dict[str, tuple[float, float]] = {
    "mnist": (0.1307, 0.3081),
    "fashion-mnist": (0.2860, 0.3530),
}

BUNDLED_DIR = Path(__file__).resolve().parent / "data"
# The repository sits next to a `shared/` directory in the environment it was built in.
SHARED_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CACHE_DIR = Path.home() / ".cache" / "saliency-dashboard"
ENV_VAR = "SALIENCY_DATA_DIR"

_FILE_PREFIX = {"train": "train", "test": "t10k"}

# idx type codes (http://yann.lecun.com/exdb/mnist/): numpy dtype, big-endian on disk.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {dt.newbyteorder(">").str: code for code, dt in _IDX_DTYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"


class IdxFormatError(ValueError):
    """An idx file is missing, corrupt, or does not match its partner file."""


# ---------------------------------------------------------------------------------------------
# idx reading and writing


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an idx file (gzip-compressed or raw) into a read-only numpy array.

    The array has the file's dtype (native byte order) and shape, e.g. `(N, 28, 28)` uint8
    for images and `(N,)` uint8 for labels. Raises `IdxFormatError` naming the file and what
    is wrong: not gzip / corrupt gzip, bad magic, unknown dtype code, truncated or trailing
    bytes.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such idx file") from None
    compressed = raw[:2] == _GZIP_MAGIC
    if path.suffix == ".gz" and not compressed:
        raise IdxFormatError(f"{path}: not a gzip file (starts with {raw[:4]!r})")
    if compressed:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise IdxFormatError(f"{path}: corrupt or truncated gzip data ({err})") from None

    if len(raw) < 4:
        raise IdxFormatError(f"{path}: truncated: {len(raw)} bytes, shorter than the idx magic")
    if raw[0] != 0 or raw[1] != 0 or raw[3] == 0:
        raise IdxFormatError(
            f"{path}: bad magic {raw[:4].hex()}: an idx file starts with two zero bytes, "
            "a type code and the number of dimensions"
        )
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise IdxFormatError(f"{path}: bad magic: unknown dtype code 0x{code:02X} (known: {known})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IdxFormatError(
            f"{path}: truncated header: expected {header} bytes for {ndim} dimensions, "
            f"got {len(raw)}"
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(raw) - header
    if got < expected:
        raise IdxFormatError(
            f"{path}: truncated: expected {expected} data bytes for shape {shape}, got {got}"
        )
    if got > expected:
        raise IdxFormatError(
            f"{path}: {got - expected} unexpected trailing bytes after {expected} data bytes "
            f"for shape {shape}"
        )
    array = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    array = array.astype(dtype.newbyteorder("="), copy=False)
    array.flags.writeable = False  # shared through the in-process cache
    return array


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write `array` as an idx file, gzip-compressed if `path` ends with `.gz`."""
    path = Path(path)
    array = np.asarray(array)
    key = array.dtype.newbyteorder(">").str
    if key not in _IDX_CODES or array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"cannot write {array.dtype} array of {array.ndim} dims as idx")
    big = array.astype(array.dtype.newbyteorder(">"), copy=False)
    payload = (
        bytes([0, 0, _IDX_CODES[key], array.ndim])
        + np.asarray(array.shape, dtype=">u4").tobytes()
        + big.tobytes()
    )
    if path.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


# ---------------------------------------------------------------------------------------------
# Datasets


@dataclass(frozen=True, eq=False)
class Dataset:
    """One split of MNIST or Fashion-MNIST, held in memory.

    `images`: `(N, 1, 28, 28)` float32 in [0, 1]; `labels`: `(N,)` int64 in [0, 10).
    Indexing returns `(images[idx], labels[idx])`, so `ds[:8]` gives a batch of 8.
    """

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[idx], self.labels[idx]

    def batches(self, batch_size: int = 256) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Consecutive `(x, y)` batches in file order, `(B, 1, 28, 28)` and `(B,)`."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        for start in range(0, len(self), batch_size):
            yield self[start : start + batch_size]

    def __repr__(self) -> str:
        return f"Dataset(name={self.name!r}, split={self.split!r}, n={len(self)})"


def load_arrays(
    name: str, split: str = "test", *, data_dir: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A split of "mnist" or "fashion-mnist" as numpy arrays, without torch: `(N, 1, 28, 28)`
    float32 pixels in [0, 1] and `(N,)` int64 labels, fresh on every call. Found as
    `load_dataset` says."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} for {name}; known splits: {', '.join(SPLITS)}")
    if split == "test" and data_dir is None:
        directory = BUNDLED_DIR / name
    else:
        directory = find_data_dir(name, split, data_dir=data_dir)
    images, labels = _read_split(directory, _FILE_PREFIX[split])
    # New arrays, so the cached uint8 ones stay untouched by callers.
    x = np.divide(images, np.float32(255.0), dtype=np.float32)[:, None]  # (N, 1, 28, 28)
    return x, labels.astype(np.int64)


def load_dataset(
    name: str, split: str = "test", *, data_dir: str | os.PathLike | None = None
) -> Dataset:
    """Load a split of "mnist" or "fashion-mnist" as tensors.

    The test split comes from the files bundled with the package unless `data_dir` is given;
    the train split is looked up as described in the module docstring. Decoded files are
    cached in-process; each call returns fresh float tensors.
    """
    import torch

    x, y = load_arrays(name, split, data_dir=data_dir)
    return Dataset(
        name=name,
        split=split,
        images=torch.from_numpy(x),
        labels=torch.from_numpy(y),
        classes=CLASS_NAMES[name],
    )


def candidate_dirs(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Directories searched for a data set's idx files, in order.

    An explicit `data_dir` is the only place searched; otherwise `SALIENCY_DATA_DIR` (if set),
    the shared directory and the cache. A user-given directory may hold the files or be a
    torchvision-style root with `<name>/raw/` (or `<name>/`) inside.
    """
    user = data_dir if data_dir is not None else os.environ.get(ENV_VAR) or None
    out: list[Path] = []
    if user is not None:
        root = Path(user).expanduser()
        out += [root, root / name / "raw", root / name]
    if data_dir is None:
        out += [SHARED_DATA_DIR / name / "raw", CACHE_DIR / name / "raw"]
    return out


def find_data_dir(
    name: str, split: str = "train", *, data_dir: str | os.PathLike | None = None
) -> Path:
    """The first directory holding both idx files of `split`; downloads if none does.

    Raises `FileNotFoundError` listing every path tried when the files are nowhere and
    cannot be downloaded (offline). An explicit `data_dir` is never downloaded into.
    """
    images_file, labels_file = _file_names(split)
    tried = candidate_dirs(name, data_dir)
    for d in tried:
        if (d / images_file).is_file() and (d / labels_file).is_file():
            return d
    if data_dir is None:
        try:
            return _download(name)
        except Exception as err:  # noqa: BLE001 - any network/IO failure means "not available"
            reason = f"; download via torchvision failed: {err}"
    else:
        reason = ""
    paths = "\n  ".join(str(d) for d in tried)
    raise FileNotFoundError(
        f"{name} {split} split not found: looked for {images_file} and {labels_file} in\n  "
        f"{paths}{reason}\nPass data_dir=... or set {ENV_VAR}."
    )


def _file_names(split: str) -> tuple[str, str]:
    prefix = _FILE_PREFIX[split]
    return f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz"


def _download(name: str) -> Path:
    """Fetch the raw files with torchvision into `CACHE_DIR/<name>/raw` (for online users)."""
    from torchvision import datasets

    base = {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST}[name]
    target = CACHE_DIR / name / "raw"

    class _Into(base):  # torchvision puts files in <root>/<ClassName>/raw; we want <name>/raw
        @property
        def raw_folder(self) -> str:
            return str(target)

    _Into(root=str(CACHE_DIR), download=True)  # fetches all four files, train and test
    return target


def _read_split(directory: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode and cross-check one split: `(N, 28, 28)` uint8 images, `(N,)` uint8 labels."""
    paths = (
        directory / f"{prefix}-images-idx3-ubyte.gz",
        directory / f"{prefix}-labels-idx1-ubyte.gz",
    )
    # Key the cache on size and mtime too, so a file replaced on disk is read again.
    stamps = tuple((st.st_size, st.st_mtime_ns) for st in (_stat(p) for p in paths))
    return _read_split_cached(str(paths[0]), str(paths[1]), stamps)


def _stat(path: Path) -> os.stat_result:
    try:
        return path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such idx file") from None


@functools.lru_cache(maxsize=8)
def _read_split_cached(
    images_file: str, labels_file: str, _stamps: tuple
) -> tuple[np.ndarray, np.ndarray]:
    images_path, labels_path = Path(images_file), Path(labels_file)
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise IdxFormatError(
            f"{images_path}: expected uint8 images of shape (N, 28, 28), "
            f"got {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise IdxFormatError(
            f"{labels_path}: expected uint8 labels of shape (N,), got {labels.dtype} {labels.shape}"
        )
    if images.shape[0] != labels.shape[0]:
        raise IdxFormatError(
            f"count mismatch: {images_path} has {images.shape[0]} images but "
            f"{labels_path} has {labels.shape[0]} labels"
        )
    if labels.size and labels.max() > 9:
        raise IdxFormatError(f"{labels_path}: label {int(labels.max())} outside 0..9")
    return images, labels
