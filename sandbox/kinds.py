"""The kinds of model and data set, read from the keys that name them by one function.

    >>> parse("mnist-cnn"), parse("upload:3f2a9c04d1e7")
    (Key(kind='bundled', name='mnist-cnn'), Key(kind='upload', name='3f2a9c04d1e7'))
    >>> parse("ws:cells"), parse("ws:upload-3f2a9c04d1e7")
    (Key(kind='workspace', name='cells'), Key(kind='uploaded', name='3f2a9c04d1e7'))
    >>> parse(imagenet("resnet18", "random")), imagenet_parts("imagenet:resnet18/random")
    (Key(kind='imagenet', name='resnet18/random'), ('resnet18', 'random'))
    >>> parse(photos("imagenet"))
    Key(kind='photos', name='imagenet')

Every view, link, cache and table names a model or a data set by one of these strings; they
are built with `upload`, `workspace`, `uploaded`, `imagenet`, `photos` and `table` below and
read with `parse` only, so a new kind is one more branch here, not one more `startswith` in
each place that needs to know.
"""

from __future__ import annotations

from typing import NamedTuple

UPLOAD_PREFIX = "upload:"  # a model uploaded on the Your model page: upload:<hash>
WORKSPACE_PREFIX = "ws:"  # a server's workspace (its images, and its model): ws:<name>
UPLOADED_PREFIX = "ws:upload-"  # the images uploaded with model upload:<hash>: ws:upload-<hash>
IMAGENET_PREFIX = "imagenet:"  # a torchvision ImageNet classifier: imagenet:<name>/<weights>
TABLE_PREFIX = "table:"  # a table model uploaded on the Tables page: table:<hash>
# A workspace without images of its own: a user's photos, explained by the classifiers of its
# classes (`photos:imagenet`, torchvision's ImageNet models).
PHOTOS_PREFIX = "photos:"

BUNDLED = "bundled"  # a registry model or a bundled test set: its own name
UPLOAD = "upload"
WORKSPACE = "workspace"
UPLOADED = "uploaded"
IMAGENET = "imagenet"
TABLE = "table"
PHOTOS = "photos"


class Key(NamedTuple):
    kind: str  # BUNDLED, UPLOAD, WORKSPACE, UPLOADED, IMAGENET, TABLE or PHOTOS
    name: str  # the key without its prefix


def parse(key: str) -> Key:
    """What `key` names: the longest prefix first (an uploaded data set's is a workspace's
    too). Anything without a prefix, a non-string included, is `BUNDLED`; whether that name
    exists is for the registry or the data sets to say."""
    if not isinstance(key, str):
        return Key(BUNDLED, str(key))
    for prefix, kind in (
        (UPLOADED_PREFIX, UPLOADED),
        (WORKSPACE_PREFIX, WORKSPACE),
        (UPLOAD_PREFIX, UPLOAD),
        (IMAGENET_PREFIX, IMAGENET),
        (TABLE_PREFIX, TABLE),
        (PHOTOS_PREFIX, PHOTOS),
    ):
        if key.startswith(prefix):
            return Key(kind, key[len(prefix) :])
    return Key(BUNDLED, key)


def is_upload(key: str) -> bool:
    """An uploaded model's key (`upload:<hash>`): it runs in its sandboxed worker."""
    return parse(key).kind == UPLOAD


def is_workspace(key: str) -> bool:
    """A workspace's key: a server's (`ws:<name>`) or an uploaded one (`ws:upload-<hash>`)."""
    return parse(key).kind in (WORKSPACE, UPLOADED)


def upload(digest: str) -> str:
    return UPLOAD_PREFIX + digest


def workspace(name: str) -> str:
    return WORKSPACE_PREFIX + name


def uploaded(model_key: str) -> str:
    """`ws:upload-<hash>`, the data set uploaded with model `upload:<hash>`."""
    kind, digest = parse(model_key)
    if kind != UPLOAD:
        raise ValueError(f"{model_key!r} is not an uploaded model's key")
    return UPLOADED_PREFIX + digest


def table(digest: str) -> str:
    return TABLE_PREFIX + digest


def photos(classes: str) -> str:
    """`photos:<classes>`: the workspace of a user's photos, with no images of its own."""
    return PHOTOS_PREFIX + classes


def imagenet(name: str, weights: str) -> str:
    """`imagenet:<name>/<weights>`: torchvision's model `name` (`workspace.imagenet.MODELS`)
    with its ImageNet weights, or "random" ones."""
    return f"{IMAGENET_PREFIX}{name}/{weights}"


def imagenet_parts(key: str) -> tuple[str, str]:
    """(name, weights) of an `imagenet` key."""
    kind, rest = parse(key)
    if kind != IMAGENET or "/" not in rest:
        raise ValueError(f"{key!r} is not an ImageNet model's key")
    name, weights = rest.split("/", 1)
    return name, weights
