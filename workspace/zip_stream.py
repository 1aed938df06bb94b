"""Writing `.npz` files (ZIPs of `.npy` entries) a piece at a time, for
`python -m workspace.export_maps`: `_npy_entry` streams one array's rows into an entry whose
header is written first (its size checked at the end), `_write_array` writes a small array
whole, `_opened` takes a path or a caller's binary file object, `_size` / `_copy` measure and
copy a finished file. Never imports streamlit.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import zipfile
from typing import IO, Any

import numpy as np


@contextlib.contextmanager
def _npy_entry(zf: zipfile.ZipFile, name: str, dtype: np.dtype, shape: tuple[int, ...]):
    """A `.npy` entry of a ZIP, written in pieces: its header now, then `write(chunk)` calls
    that must add up to `shape` exactly (checked), C order."""
    nbytes = int(dtype.itemsize * math.prod(shape))
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
              "shape": shape}  # fmt: skip
    written = 0
    with zf.open(f"{name}.npy", "w", force_zip64=nbytes > 2**30) as f:
        np.lib.format.write_array_header_1_0(f, header)

        def write(chunk: np.ndarray) -> None:
            nonlocal written
            data = np.ascontiguousarray(chunk, dtype=dtype)
            f.write(memoryview(data).cast("B"))  # bytes, not rows: no copy
            written += data.nbytes

        yield write
    if written != nbytes:
        raise RuntimeError(f"{name}: wrote {written} bytes, expected {nbytes}")


def _write_array(zf: zipfile.ZipFile, name: str, array: np.ndarray) -> None:
    with zf.open(f"{name}.npy", "w", force_zip64=array.nbytes > 2**30) as f:
        np.lib.format.write_array(f, array, allow_pickle=False)


class _opened(contextlib.AbstractContextManager):
    """A path opened for reading and writing (created), or a caller's file object as is."""

    def __init__(self, target: str | os.PathLike | IO[bytes]) -> None:
        self.target, self.file = target, None

    def __enter__(self) -> IO[bytes]:
        if isinstance(self.target, str | os.PathLike):
            self.file = open(self.target, "w+b")  # noqa: SIM115 - closed in __exit__
            return self.file
        return self.target

    def __exit__(self, *exc: Any) -> None:
        if self.file is not None:
            self.file.close()


def _size(f: IO[bytes]) -> int:
    f.flush()
    return f.seek(0, os.SEEK_END)


def _copy(src: IO[bytes], dst: IO[bytes]) -> None:
    src.seek(0)
    shutil.copyfileobj(src, dst, 2**20)
