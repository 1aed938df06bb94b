"""The server's memory budget: one setting, split among every cache that holds user-derived data.

`SALIENCY_MEMORY_MB` (default 1536: sized for an 8 GB laptop that also runs a browser and a
projector's slides) is how much memory this server process may hold beyond its warm baseline
(about 0.9 GB: torch, Streamlit, the bundled test sets and models). Every cache that can hold
what a visitor caused (maps, pictures, uploaded workspaces' images, tables) is a `BytesLRU`
bounded by its share of it, in bytes; the rest is headroom for what one request holds while it
is being answered (a decoded canvas stroke, one chunk of a worker's answer), which is bounded
where it is decoded. The uploaded models' workers are outside this process and bounded apart
(`SALIENCY_MAX_WORKERS` × `SALIENCY_WORKER_MEMORY_MB`, see `sandbox.worker`).

Imports nothing of ours and no Streamlit, so that any module (and the tests) can read it.
"""

from __future__ import annotations

import os

DEFAULT_MB = 1536

# Each cache's share of the budget. They add up to 0.85: the rest (15 %) is for requests in
# flight (decoding, a worker's answer being read, a page's own arrays).
SHARES = {
    "workspaces": 0.30,  # uploaded ZIP workspaces: their prepared images, sums and index
    "images": 0.05,  # the server's own workspaces' images, decoded as visitors open them
    "maps": 0.20,  # computed maps, contrasts and probabilities (every model, every session)
    "tables": 0.12,  # uploaded CSVs read into arrays, and the results computed from them
    "route": 0.06,  # the explore route's answers, as sent
    "explained": 0.06,  # the explore view's explained answers (maps + numbers per view)
    "pngs": 0.06,  # encoded pictures sent to browsers
}


def total_bytes() -> int:
    """The budget in bytes: `SALIENCY_MEMORY_MB` (read on every call), at least 64 MB."""
    raw = os.environ.get("SALIENCY_MEMORY_MB", "")
    try:
        mb = float(raw) if raw.strip() else DEFAULT_MB
    except ValueError:
        mb = DEFAULT_MB
    return int(max(mb, 64) * 2**20)


def share(name: str) -> int:
    """The bytes cache `name` (a key of SHARES) may hold."""
    return int(total_bytes() * SHARES[name])
