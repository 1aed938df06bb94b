"""Workspaces: one model, one labelled image data set, its class names and its preprocessing.

This package is the room for a model with its inputs: this module (the workspace itself), its
index under `torchrun` (`index`, `index_batches`, `ranks`), the maps' export (`export_maps`,
`zip_stream`), the metric bench's CLI (`bench`, `bench_parts`), a workspace uploaded as a ZIP
(`folder_upload`), torchvision's ImageNet classifiers (`imagenet`), tables (`csv_table`, the
defensive CSV reader; `tables`, explaining a table model), the workspace as every view opens it
(`opened.Workspace`: classes, input shape, preparation, images or none, models) and the one
model handle every view uses (`model_ref.ModelRef`). Untrusted files and models go through
`sandbox`.

    >>> pre = Preprocessing(resize=256, crop=224, mean=(0.485, 0.456, 0.406), std=(0.229,) * 3)
    >>> config = WorkspaceConfig(model="net.pt", data="images/", preprocessing=pre)
    >>> items, classes, problems = list_items(config)      # ImageFolder tree or CSV of path,label
    >>> model = load_model(config, len(classes))           # (N, C, H, W) pixels in [0, 1] -> (N, K)
    >>> x = config.preprocessing(picture)                  # (C, H, W) float32 in [0, 1]

- **Model**: TorchScript, a `torch.export` program, or weights (a state dict, or a
  safetensors file) of a torchvision classification architecture (`resnet18`,
  `mobilenet_v3_small`, …), a timm model (when timm is installed) or a registry architecture,
  with as many classes as its last layer has. Weights only: nothing is ever unpickled, and
  programs pass the gate (`sandbox.gate`) before they run.
- **Data**: an ImageFolder tree (one subfolder per class, sorted names are the classes, as in
  torchvision) or a CSV with a header `path,label` (label: a class index or name; paths
  relative to the CSV's folder).
- **Preprocessing**: optional resize of the shorter side and centre crop, grey (1 channel) or
  RGB (3), pixels scaled to [0, 1]; the mean and std are applied *inside* the model, as its
  first layer, so that maps are with respect to pixels. Without a resize, images keep their own
  size (a data set of several sizes then needs one).

A workspace is written down as a small TOML file (`WorkspaceConfig.to_toml`), the same
settings the CLI flags of `python -m workspace.index` give. Never imports streamlit or the
dashboard.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sandbox import gate
from sandbox.gate import UserModelError
from sandbox.images import ImageError, decode_image
from sandbox.preparation import Preprocessing, WorkspaceError
from sandbox.text import from_csv_cell, output_key

# torch and the architectures are imported where a model is read (`load_model`): listing,
# reading and opening a workspace's images and index need no torch, which takes seconds.
if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "IMAGE_SUFFIXES",
    "Indexed",
    "Item",
    "Preprocessing",
    "WorkspaceConfig",
    "WorkspaceError",
    "file_digest",
    "list_items",
    "load_model",
    "open_indexed",
    "read_bytes",
    "read_image",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp")
MAX_CLASSES = 1000
MAX_IMAGE_BYTES = 50 * 2**20  # one image file


@dataclass(frozen=True)
class WorkspaceConfig:
    """One model and one labelled image data set, and how to read them."""

    model: str
    data: str
    kind: str = "auto"
    architecture: str | None = None
    classes: tuple[str, ...] | None = None
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    output: str | int | None = None  # the scores' entry in a tuple or dict output

    def to_dict(self) -> dict:
        d = asdict(self)
        d["preprocessing"] = {k: v for k, v in d["preprocessing"].items() if v is not None}
        d["preprocessing"]["mean"] = list(self.preprocessing.mean)
        d["preprocessing"]["std"] = list(self.preprocessing.std)
        if self.classes is not None:
            d["classes"] = list(self.classes)
        return {k: v for k, v in d.items() if v is not None}

    def to_toml(self) -> str:
        """The settings as TOML (what `from_toml` reads back)."""

        def value(v: Any) -> str:
            if isinstance(v, bool):
                return "true" if v else "false"
            if isinstance(v, int | float):
                return repr(v)
            if isinstance(v, str):
                return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
            return "[" + ", ".join(value(x) for x in v) + "]"

        d = self.to_dict()
        pre = d.pop("preprocessing")
        lines = ["# A workspace: python -m workspace.index --config THIS_FILE --out FOLDER"]
        lines += [f"{k} = {value(v)}" for k, v in d.items()]
        lines += ["", "[preprocessing]"] + [f"{k} = {value(v)}" for k, v in pre.items()]
        return "\n".join(lines) + "\n"

    @classmethod
    def from_dict(cls, d: dict, *, base: Path | None = None) -> WorkspaceConfig:
        """From a parsed TOML table; relative paths are taken from `base` (the file's folder)."""
        known = {"model", "data", "kind", "architecture", "classes", "preprocessing", "output"}
        unknown = set(d) - known
        if unknown:
            raise WorkspaceError(f"unknown workspace settings: {', '.join(sorted(unknown))}")
        if "model" not in d or "data" not in d:
            raise WorkspaceError("a workspace needs `model` and `data`")
        pre = dict(d.get("preprocessing", {}))
        bad = set(pre) - {"resize", "crop", "channels", "mean", "std"}
        if bad:
            raise WorkspaceError(f"unknown preprocessing settings: {', '.join(sorted(bad))}")

        def path(p: str) -> str:
            return str((base / p) if base is not None and not Path(p).is_absolute() else p)

        classes = d.get("classes")
        return cls(
            model=path(d["model"]),
            data=path(d["data"]),
            kind=d.get("kind", "auto"),
            architecture=d.get("architecture"),
            classes=tuple(str(c) for c in classes) if classes is not None else None,
            preprocessing=Preprocessing(**pre),
            output=output_key(d.get("output")),
        )

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> WorkspaceConfig:
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        p = Path(path)
        try:
            d = tomllib.loads(p.read_text())
        except OSError as err:
            raise WorkspaceError(f"can't read {p}: {err.strerror or err}") from None
        except tomllib.TOMLDecodeError as err:
            raise WorkspaceError(f"{p} is not valid TOML: {err}") from None
        return cls.from_dict(d, base=p.parent)

    def with_(self, **changes: Any) -> WorkspaceConfig:
        return replace(self, **changes)


# --- the data ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One labelled image: `path` as found under the data folder (or as the CSV gives it)."""

    path: str
    label: int


def _folder_items(root: Path, classes: Sequence[str] | None):
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise WorkspaceError(
            f"{root} has no class folders: an ImageFolder tree has one subfolder per class"
        )
    names = tuple(classes) if classes is not None else tuple(folders)
    index = {n: i for i, n in enumerate(names)}
    items, problems = [], []
    for folder in folders:
        files = sorted(
            p for p in (root / folder).rglob("*") if p.is_file() and not p.name.startswith(".")
        )
        if folder not in index:
            problems.append(
                {"path": folder, "reason": "a folder whose name is not in the class list"}
            )
            continue
        images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
        for p in files:
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                problems.append({"path": str(p.relative_to(root)), "reason": "not an image file"})
        if not images:
            problems.append({"path": folder, "reason": f"the class folder {folder!r} is empty"})
        items += [Item(str(p.relative_to(root)), index[folder]) for p in images]
    for name in names:
        if name not in folders:
            problems.append({"path": name, "reason": f"no folder for class {name!r}"})
    return items, names, problems


def _csv_items(path: Path, classes: Sequence[str] | None):
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise WorkspaceError(f"can't read {path}: {err}") from None
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or [c.strip().lower() for c in rows[0][:2]] != ["path", "label"]:
        raise WorkspaceError(f"{path} must start with a header row `path,label`")
    body = [(r[0].strip(), r[1].strip()) for r in rows[1:] if len(r) >= 2 and r[0].strip()]
    if not body:
        raise WorkspaceError(f"{path} lists no images")
    labels = [label for _, label in body]
    numeric = all(label.lstrip("-").isdigit() for label in labels)
    if classes is not None:
        names = tuple(classes)
    elif numeric:
        names = tuple(str(k) for k in range(max(int(v) for v in labels) + 1))
    else:
        names = tuple(sorted(set(labels)))
    index = {n: i for i, n in enumerate(names)}
    items, problems = [], []
    for line, (p, label) in enumerate(body, start=2):
        k = int(label) if numeric and label not in index else index.get(label)
        if k is None or not 0 <= k < len(names):
            problems.append(
                {"path": p, "reason": f"line {line}: label {label!r} is not in the class list"}
            )
            continue
        items.append(Item(p, k))
    return items, names, problems


def list_items(config: WorkspaceConfig) -> tuple[list[Item], tuple[str, ...], list[dict]]:
    """The labelled images of a workspace, its class names, and the problems found (entries
    skipped, each `{"path", "reason"}`). Raises WorkspaceError when there is no data at all."""
    root = Path(config.data)
    if not root.exists():
        raise WorkspaceError(f"the data path {root} does not exist")
    if root.is_dir():
        items, names, problems = _folder_items(root, config.classes)
    else:
        items, names, problems = _csv_items(root, config.classes)
    if not 2 <= len(names) <= MAX_CLASSES:
        raise WorkspaceError(f"a workspace has 2 to {MAX_CLASSES} classes, this one {len(names)}")
    if not items:
        raise WorkspaceError(f"no images found in {root}")
    return items, names, problems


def data_root(config: WorkspaceConfig) -> Path:
    root = Path(config.data)
    return root if root.is_dir() else root.parent


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_bytes(root: Path, item: Item) -> bytes:
    """The file of one image, at most MAX_IMAGE_BYTES; raises ImageError saying why not."""
    p = os.path.join(root, item.path)
    try:
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_IMAGE_BYTES:
                raise ImageError(f"the file is over {MAX_IMAGE_BYTES >> 20} MB")
            # Its own size (+1, to notice a file still growing), not the limit: read(50 MB)
            # allocates 50 MB first, which cost more than decoding a small PNG.
            data = f.read(size + 1)
    except OSError as err:
        raise ImageError(f"can't read the file ({err.strerror or err})") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageError(f"the file is over {MAX_IMAGE_BYTES >> 20} MB")
    return data


def read_image(root: Path, item: Item, pre: Preprocessing) -> np.ndarray:
    """One image as the model's input `(C, H, W)`; raises ImageError saying why not."""
    return pre(decode_image(read_bytes(root, item), max_bytes=MAX_IMAGE_BYTES))


# --- the model --------------------------------------------------------------------------------


def torchvision_classifiers() -> list[str]:
    """The classification architectures torchvision can build (`resnet18`, `vit_b_16`, …)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def load_model(
    config: WorkspaceConfig,
    num_classes: int,
    *,
    device: str | torch.device = "cpu",
    data: bytes | None = None,
) -> nn.Module:
    """The workspace's model, `(N, C, H, W)` pixels in [0, 1] -> `(N, K)` scores, read in
    this process (a CLI user's own file; a server reads uploads in the sandbox instead).

    The file is checked by the gate first (its ZIP directory; for programs, every operator).
    `data`: the file's bytes when already read. Raises WorkspaceError saying what is wrong.
    """
    from pretrained.architectures import Prepared
    from sandbox.model_files import _resolve_kind, error_line, load_program

    if data is None:
        try:
            data = Path(config.model).read_bytes()
        except OSError as err:
            raise WorkspaceError(f"can't read the model {config.model}: {err.strerror}") from None
    pre = config.preprocessing
    try:
        kind = _resolve_kind(data, config.kind)
        if kind in ("state_dict", "safetensors"):
            return _from_state_dict(data, config.architecture, num_classes, pre).to(device)
        if kind == "onnx":
            from sandbox.onnx_models import read_onnx

            return Prepared(read_onnx(data)[0], pre, config.output).to(device)
        program, inner = load_program(data, kind)
        gate.check_program(program)
    except UserModelError as err:
        raise WorkspaceError(str(err)) from None
    except WorkspaceError:
        raise
    except Exception as err:  # noqa: BLE001 - reading a model file fails in many ways
        raise WorkspaceError(
            f"could not read the model {config.model}: {error_line(err)}"
        ) from None
    return Prepared(inner, pre, config.output).to(device)


@functools.lru_cache(maxsize=8)
def shared_model(
    config: WorkspaceConfig, num_classes: int, sha256: str, device: str = "cpu"
) -> nn.Module:
    """`load_model`, once per process for these settings (a server's sessions and its warm-up
    share it; never mutated). Refused when the file's content is not `sha256`, the hash its
    index recorded: results would not match the index's."""
    try:
        data = Path(config.model).read_bytes()
    except OSError as err:
        raise WorkspaceError(
            f"can't read the model {config.model}: {err.strerror or err}"
        ) from None
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        raise WorkspaceError(
            f"the model file {config.model} changed since the workspace was indexed: index it "
            "again (python -m workspace.index --config workspace.toml --out FOLDER)"
        )
    return load_model(config, num_classes, data=data, device=device)


def _from_state_dict(
    data: bytes, architecture: str | None, num_classes: int, pre: Preprocessing
) -> nn.Module:
    """Weights (a state dict or a safetensors file) in a named architecture: the registry's,
    a torchvision classifier or a timm model (`named_weights`), its classes read from the
    weights' last layer, which must be `num_classes`."""
    from pretrained.architectures import ARCHITECTURES, Prepared
    from sandbox.named_weights import model_from_weights

    if architecture in ARCHITECTURES and pre.channels != 1:
        raise WorkspaceError(f"the registry architecture {architecture!r} takes grey images")
    return Prepared(model_from_weights(data, architecture, num_classes=num_classes), pre)


# --- an indexed workspace, opened (what the dashboard shows) ------------------------------------


@dataclass(frozen=True)
class Indexed:
    """A folder written by `python -m workspace.index`, read back: the settings, every image's
    label and prediction, and the summary. Opening reads three small files (no image, no model):
    10,000 images take well under a second.

    `paths[i]`, `labels[i]`, `predicted[i]`, `p_predicted[i]`, `p_label[i]`: row i of
    `predictions.csv`; `top_classes`, `top_probabilities` `(N, 5)`; `shape` `(C, H, W)`.
    """

    folder: Path
    config: WorkspaceConfig
    manifest: dict
    classes: tuple[str, ...]
    paths: tuple[str, ...]
    labels: np.ndarray
    predicted: np.ndarray
    p_predicted: np.ndarray
    p_label: np.ndarray
    top_classes: np.ndarray
    top_probabilities: np.ndarray
    shape: tuple[int, int, int]

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def accuracy(self) -> float:
        return float((self.predicted == self.labels).mean()) if len(self.labels) else 0.0

    @property
    def model_sha256(self) -> str:
        return str(self.manifest.get("model", {}).get("sha256", ""))

    @property
    def skipped(self) -> list[dict]:
        return list(self.manifest.get("skipped", []))

    def find(self, path: str) -> int | None:
        """The row of an image given by its path under the data folder (or None)."""
        return find_path(self.paths, path)

    def image(self, i: int) -> np.ndarray:
        """Image `i` as the model's input `(C, H, W)` float32 in [0, 1]. Raises ImageError when
        the file is gone, damaged or changed size since indexing."""
        x = read_image(data_root(self.config), Item(self.paths[i], int(self.labels[i])),
                       self.config.preprocessing)  # fmt: skip
        if tuple(x.shape) != self.shape:
            raise ImageError(
                f"{self.paths[i]} is now {tuple(x.shape)}, not the indexed {self.shape}"
            )
        return x

    def summary(self) -> dict[str, np.ndarray]:
        """`summary.npz`'s arrays (mean_abs_grad_by_class is missing after --predictions-only)."""
        try:
            with np.load(self.folder / "summary.npz", allow_pickle=False) as f:
                return {k: f[k] for k in f.files}
        except (OSError, ValueError) as err:
            raise WorkspaceError(f"can't read {self.folder / 'summary.npz'}: {err}") from None


def find_path(paths: Sequence[str], text: str) -> int | None:
    """The index of `text` in `paths` (paths as under the data folder, "/"-separated), with
    a leading "./" and Windows separators forgiven; None when it is not there."""
    wanted = text.strip().removeprefix("./").replace("\\", "/")
    return next((i for i, p in enumerate(paths) if p == wanted), None)


def open_indexed(folder: str | os.PathLike) -> Indexed:
    """Read an indexed workspace folder; raises WorkspaceError saying what is missing or
    inconsistent (an unfinished index included: run `python -m workspace.index` again)."""
    folder = Path(folder)
    need = ("manifest.json", "workspace.toml", "predictions.csv", "top5.npz")
    missing = [n for n in need if not (folder / n).is_file()]
    if missing:
        raise WorkspaceError(
            f"{folder} is not an indexed workspace (missing {', '.join(missing)}): run "
            f"python -m workspace.index --model M --data D --out {folder}"
        )
    import json

    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError) as err:
        raise WorkspaceError(f"can't read {folder / 'manifest.json'}: {err}") from None
    if manifest.get("status") != "complete":
        raise WorkspaceError(
            f"the index in {folder} is unfinished: run the same python -m workspace.index "
            "command again, and it continues where it stopped"
        )
    config = WorkspaceConfig.from_toml(folder / "workspace.toml")
    classes = tuple(str(c) for c in manifest["classes"])
    try:
        with open(folder / "predictions.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        body = rows[1:]
        paths = tuple(from_csv_cell(r[0]) for r in body)
        cols = np.array([r[1:5] for r in body], dtype=np.float64).reshape(-1, 4)
        with np.load(folder / "top5.npz", allow_pickle=False) as f:
            top_i, top_p = f["indices"], f["probabilities"]
    except (OSError, ValueError, IndexError, KeyError) as err:
        raise WorkspaceError(f"the index in {folder} is damaged ({err}): index again") from None
    labels, predicted = cols[:, 0].astype(np.int64), cols[:, 1].astype(np.int64)
    k = len(classes)
    if len(top_i) != len(paths) or (len(paths) and not (
        0 <= labels.min() and labels.max() < k and 0 <= predicted.min() and predicted.max() < k
    )):  # fmt: skip
        raise WorkspaceError(f"the index in {folder} is inconsistent: index again")
    return Indexed(
        folder=folder,
        config=config,
        manifest=manifest,
        classes=classes,
        paths=paths,
        labels=labels,
        predicted=predicted,
        p_predicted=cols[:, 2].astype(np.float32),
        p_label=cols[:, 3].astype(np.float32),
        top_classes=np.asarray(top_i, dtype=np.int64),
        top_probabilities=np.asarray(top_p, dtype=np.float32),
        shape=tuple(int(v) for v in manifest["input_shape"]),
    )
