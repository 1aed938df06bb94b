"""Regenerate saliency/colormaps.npz: 256-entry uint8 RGB tables taken from matplotlib.

The library stays torch + numpy only; this script (run once, by hand) is the only place that
needs matplotlib. Usage: python tools/make_colormaps.py
"""

from pathlib import Path

import matplotlib
import numpy as np

SEQUENTIAL = ["inferno", "magma", "viridis", "hot", "gray", "turbo"]
DIVERGING = ["RdBu_r", "coolwarm", "seismic", "PiYG"]

tables = {}
for name in SEQUENTIAL + DIVERGING:
    cmap = matplotlib.colormaps[name].resampled(256)
    tables[name] = np.round(cmap(np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
out = Path(__file__).resolve().parents[1] / "saliency" / "colormaps.npz"
np.savez_compressed(out, **tables)
print(f"wrote {out} ({out.stat().st_size} bytes): {', '.join(tables)}")
