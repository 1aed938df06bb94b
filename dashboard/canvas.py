"""The drawing canvas, read without trusting the browser that drew on it.

    >>> drawing = canvas.draw(width=280, height=280, key="canvas", stroke_width=22)
    >>> drawing.pixels   # (280, 280, 4) uint8, or None (nothing drawn yet, or refused)
    >>> drawing.error    # why it was refused, for the page; None when it was not

`streamlit_drawable_canvas.st_canvas` hands back the PNG data URL the browser sent, and its
`image_data` decodes whatever that PNG declares: a 13,370² transparent PNG fits in a 927 kB
data URL and decodes to 715 MB of RGBA (the server went from 0.9 to 7.1 GB). So the data URL
is taken before the package decodes it and checked by `sandbox.images.decode_canvas_png`:
its length, then the size its PNG header declares against the canvas's own, before a pixel is
decoded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sandbox.images import ImageError, decode_canvas_png


@dataclass(frozen=True)
class Drawing:
    pixels: np.ndarray | None  # (height, width, 4) uint8 RGBA
    error: str | None  # a refusal, to show as is


def data_url(result) -> str | None:
    """The PNG data URL inside an `st_canvas` result, undecoded.

    streamlit-drawable-canvas 0.13.0 keeps it in the result's `_image_data_url` slot and decodes
    it only when `image_data` is read. Should a later version move it, this fails loudly rather
    than fall back to that decoder (tests/browser/test_budget_decode.py pins it)."""
    try:
        return result._image_data_url
    except AttributeError:
        raise RuntimeError(
            "streamlit-drawable-canvas changed: its result no longer holds the PNG data URL in "
            "`_image_data_url`; update dashboard/canvas.py (never read `image_data`, which "
            "decodes whatever the browser sent)"
        ) from None


def read(url: str | None, *, width: int, height: int) -> Drawing:
    """A data URL the browser sent for a width x height canvas -> its checked pixels."""
    if url is None:
        return Drawing(None, None)
    try:
        return Drawing(decode_canvas_png(url, width=width, height=height), None)
    except ImageError as err:
        return Drawing(None, str(err))


def draw(*, width: int, height: int, key: str, **options) -> Drawing:
    """`st_canvas(width=…, height=…, key=…, **options)` with its image returned, read through
    `read`. `options` are st_canvas's own (stroke, background, drawing mode…)."""
    from streamlit_drawable_canvas import st_canvas

    result = st_canvas(width=width, height=height, key=key, return_image_data=True, **options)
    return read(data_url(result), width=width, height=height)
