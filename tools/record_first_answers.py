"""Write dashboard/first_answers.npz: the answers the default view asks of its model.

    python tools/record_first_answers.py

Draws the default page (Streamlit's AppTest, as a first visitor's browser would ask for it)
with `dashboard.cache.run` wrapped from here, and stores every question the page asked a
registry model with the answer computed now. Run it again when the default view asks its model
something new or a bundled model is retrained (tests/dashboard/test_first_answers.py says when).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from streamlit.testing.v1 import AppTest  # noqa: E402, TID251 - a tool that draws the page

from dashboard import cache, first_answers  # noqa: E402
from sandbox import jobs, kinds  # noqa: E402


def record(path: Path = first_answers.PATH) -> list[dict[str, Any]]:
    """Draw the default page as a first visitor gets it and store every question it asked a
    registry model, with the answer computed now. Returns what was stored."""
    asked: dict[str, dict[str, Any]] = {}

    def answering(name: str, job: str, x: np.ndarray, **kwargs: Any) -> Any:
        x = np.ascontiguousarray(x, dtype=np.float32)
        kwargs.pop("timeout", None)
        answer = jobs.run(job, cache.model(name), x, **kwargs)
        if isinstance(answer, np.ndarray) and not kinds.is_upload(name):
            sha = cache.model_info(name).weights_sha256
            k = first_answers.key(name, sha, job, x, kwargs)
            asked[k] = {"name": name, "weights_sha256": sha, "job": job, "kwargs": kwargs,
                        "x": x, "answer": answer}  # fmt: skip
        return answer

    real = cache.run
    cache.run = answering
    try:
        at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=120)
        at.run()
    finally:
        cache.run = real
    if at.exception:
        raise RuntimeError(f"the default page failed: {at.exception[0].message}")
    arrays = {"questions": np.array(json.dumps(
        {k: {f: v for f, v in q.items() if f not in ("x", "answer")} for k, q in asked.items()},
        default=first_answers._plain,
    ))}  # fmt: skip
    for k, q in asked.items():
        arrays[f"x:{k}"] = q["x"]
        arrays[f"answer:{k}"] = q["answer"]
    np.savez_compressed(path, **arrays)
    first_answers._stored.cache_clear()
    return list(asked.values())


if __name__ == "__main__":
    os.environ.setdefault("SALIENCY_PANEL_WAIT_S", "0")  # AppTest has no browser to wait for
    for q in record():
        print(f"{q['name']} {q['job']} {q['x'].shape} -> {q['answer'].shape} {q['kwargs']}")
    print(f"wrote {first_answers.PATH}")
