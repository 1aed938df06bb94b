"""Writing a file so that readers see the old file or the whole new one, never half of one:
the bytes go to a uniquely named temporary file beside it, which then replaces it
(`os.replace`); a failure leaves no temporary file behind. Used for every table, index part
and cached answer the project writes (`saliency.bench.save_table`, `pretrained`'s runs, the
dashboard's disk cache)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomically(path: str | os.PathLike, data: bytes | Callable[[BinaryIO], object]) -> Path:
    """Write `data` (bytes, or a function that writes to the open binary file) to `path`
    atomically; its folder is made if missing. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path
