"""The answers the default view asks of its model, stored with the code.

A fresh server's first page would otherwise wait for `import torch` (about 2 s of one core)
before it could show anything. The default view (Explore, mnist-cnn, test image #0) asks the
model two questions: the probabilities of the image and its Jacobian. Their answers are stored
here, in `first_answers.npz`, and `cache.run` reads them instead of computing, so the first
page is drawn without torch while `python -m dashboard` imports it in the background.

An answer is found by a key of everything it depends on: the model's name and the sha256 of
its weights (as its training record states them), the job, the input's dtype, shape and bytes,
and the job's arguments. Retrained weights, another image or other settings miss it and are
computed as usual; nothing stale is shown. `tests/dashboard/test_first_answers.py` checks
every stored answer against a live computation, and that the default page needs nothing else.

Written by `python tools/record_first_answers.py`: it draws the default page (Streamlit's
AppTest, as a first visitor's browser would ask for it) with `cache.run` wrapped from outside,
and stores what that page asked. This module is the lookup only: it imports nothing of ours, so
`cache` may import it without a circle.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

PATH = Path(__file__).with_name("first_answers.npz")
MAX_BYTES = 4 * 2**20  # a file larger than this is not read: it can't be ours


def key(name: str, weights_sha256: str, job: str, x: np.ndarray, kwargs: dict[str, Any]) -> str:
    """The sha256 that identifies one question: `jobs.run(job, model, x, **kwargs)` of the
    registry model `name` whose weights hash to `weights_sha256`."""
    about = [name, weights_sha256, job, x.dtype.str, list(x.shape), kwargs]
    h = hashlib.sha256(json.dumps(about, sort_keys=True, default=_plain).encode())
    h.update(np.ascontiguousarray(x).tobytes())
    return h.hexdigest()


def _plain(value: Any) -> Any:
    """A job argument that JSON can't write, as something that identifies it."""
    if isinstance(value, np.ndarray):
        digest = hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()
        return ["ndarray", value.dtype.str, list(value.shape), digest]
    if isinstance(value, np.generic):
        return value.item()
    return repr(value)


@functools.cache
def _stored(path: Path = PATH) -> tuple[dict[str, np.ndarray], frozenset[tuple]]:
    """key -> answer, and the (job, input shape) pairs asked, read once. A missing, oversized
    or unreadable file answers nothing: every question is then computed."""
    try:
        if path.stat().st_size > MAX_BYTES:
            return {}, frozenset()
        with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as f:
            asked = json.loads(str(f["questions"]))
            answers = {k: f[f"answer:{k}"] for k in asked}
            shapes = frozenset((q["job"], f[f"x:{k}"].shape) for k, q in asked.items())
    except Exception:  # noqa: BLE001 - OSError, BadZipFile, KeyError, ValueError…: compute
        return {}, frozenset()
    return answers, shapes


def may_hold(job: str, shape: tuple[int, ...]) -> bool:
    """Whether an answer to `job` on an input of this shape is stored at all: most questions
    are told no here, before anything is hashed or looked up."""
    return (job, tuple(shape)) in _stored()[1]


def get(
    name: str, weights_sha256: str, job: str, x: np.ndarray, kwargs: dict[str, Any]
) -> np.ndarray | None:
    """The stored answer to this question (a copy), or None when it isn't stored."""
    if not may_hold(job, x.shape):
        return None
    answers, _ = _stored()
    answer = answers.get(key(name, weights_sha256, job, x, kwargs))
    return None if answer is None else answer.copy()


def questions(path: Path = PATH) -> list[dict[str, Any]]:
    """Every stored question and its answer: `name`, `weights_sha256`, `job`, `kwargs`, `x`,
    `answer` and `key` (for the tests, which compute each again)."""
    out = []
    with np.load(path, allow_pickle=False) as f:
        for k, about in json.loads(str(f["questions"])).items():
            out.append({**about, "x": f[f"x:{k}"], "answer": f[f"answer:{k}"], "key": k})
    return out
