"""Photos (ImageNet): a real photo, a torchvision classifier, the map of each top-5 class.

Models, preprocessing and category names come from `pretrained.imagenet` (torchvision's own
`weights.transforms()` and `weights.meta["categories"]`); maps from `cache.photo_map`, one class
at a time. Without the pretrained weights (offline) the page says how to get them and offers
random weights as a demonstration of the code path.
"""

from __future__ import annotations

import hashlib

import numpy as np
import streamlit as st

from dashboard import cache, render, state, upload_limits
from dashboard.render import Style
from pretrained import imagenet
from pretrained.images import ImageError, decode_image

METHOD_LABELS = {
    "gradient": "Vanilla gradient",
    "smoothgrad": "SmoothGrad (10 noisy copies, σ = 0.15)",
}
REDUCTION_LABELS = {
    "max": "max |g| over R, G, B (Simonyan)",
    "sum": "sum of g over R, G, B (signed)",
}
RANDOM_LABEL = "Use random weights (a demo of the code path: the predictions mean nothing)"


def _try_download(name: str) -> None:
    try:
        imagenet.load(name, download=True)
    except imagenet.WeightsUnavailable as err:
        st.session_state["ph_download_error"] = str(err)
    else:
        st.session_state["ph_download_error"] = None


def _weights(name: str) -> str | None:
    """ "pretrained" when the weights are in the torch cache, "random" if the user opts in."""
    if imagenet.weights_available(name):
        return "pretrained"
    st.warning(imagenet.how_to_get(name))
    st.button("Try to download them now", key="ph_download", on_click=_try_download, args=(name,))
    if st.session_state.get("ph_download_error"):
        st.caption(f"Download failed: {st.session_state['ph_download_error'][-200:]}")
    if st.checkbox(RANDOM_LABEL, key="ph_random"):
        return "random"
    st.info("The rest of the dashboard works without these weights.")
    return None


def _photo(name: str) -> np.ndarray | None:
    """(3, 224, 224) pixels of the uploaded photo; a bad upload keeps the previous one, and a
    photo that can't be prepared is dropped from the session with a message."""
    if not cache.uploads_allowed():
        st.info("Uploading photos is turned off on this server.")
        return None
    file = st.file_uploader(
        "A photo (PNG, JPEG, GIF, BMP, WebP; up to 20 MB)",
        key="ph_file",
        type=None,
        max_upload_size=upload_limits.IMAGE_MB,
    )
    if too_big := upload_limits.too_big(file, "photo", upload_limits.IMAGE_MB):
        st.session_state["ph_error"], file = too_big, None  # never read
    if file is not None:
        digest = hashlib.sha256(file.getvalue()).hexdigest()
        if st.session_state.get("ph_seen") != digest:
            st.session_state["ph_seen"] = digest
            st.session_state["ph_error"] = None
            try:
                photo = decode_image(file.getvalue())
                imagenet.resized_size(photo.width, photo.height, 256)  # refuse before keeping
                st.session_state["ph_image"] = photo.convert("RGB")
                st.session_state["ph_name"] = file.name
            except ImageError as err:
                st.session_state["ph_error"] = f"{file.name}: {err}"
    if st.session_state.get("ph_error"):
        had = "ph_image" in st.session_state
        kept = " The photo shown is the one you had before." if had else ""
        st.error(render.plain(st.session_state["ph_error"]) + kept)
    if "ph_image" not in st.session_state:
        st.info("No photo yet: upload one above.")
        return None
    try:
        return imagenet.pixels(name, st.session_state["ph_image"]).numpy()
    except (ImageError, ValueError, OverflowError, MemoryError) as err:
        st.session_state.pop("ph_image", None)  # never fail again on every later click
        st.error(f"That photo can't be prepared for the model ({render.plain(err)}).")
        return None


def render_view() -> None:
    state.init()
    state.keep("ph_model", "ph_random", "ph_method", "ph_reduce", "ph_class")
    st.title("Photos (ImageNet)")
    st.caption(
        "A real photo and a torchvision ImageNet classifier: the photo is resized and "
        "centre-cropped to 224 × 224 exactly as the weights' own transforms do, and each map is "
        "the gradient of one class's logit with respect to those pixels."
    )
    c1, c2, c3 = st.columns(3)
    name = c1.radio(
        "Model",
        tuple(imagenet.MODELS),
        key="ph_model",
        format_func=lambda n: imagenet.MODELS[n].title,
    )
    method = c2.radio(
        "Method", tuple(METHOD_LABELS), key="ph_method", format_func=METHOD_LABELS.get
    )
    reduction = c3.radio(
        "Colour channels",
        tuple(REDUCTION_LABELS),
        key="ph_reduce",
        format_func=REDUCTION_LABELS.get,
    )
    weights = _weights(name)
    if weights is None:
        return
    pixels = _photo(name)
    if pixels is None:
        return

    names = imagenet.categories(name)
    probs = cache.photo_probabilities(name, weights, pixels)  # (1000,)
    top5 = [int(k) for k in np.argsort(-probs)[:5]]
    what = "random weights" if weights == "random" else "ImageNet weights"
    st.subheader(
        f"{imagenet.MODELS[name].title} ({what}) says **{names[top5[0]]}** ({probs[top5[0]]:.1%})"
    )
    rank = st.radio(
        "Map of class (top 5)",
        range(5),
        key="ph_class",
        horizontal=True,
        format_func=lambda r: f"{names[top5[r]]} ({probs[top5[r]]:.1%})",
    )
    target = top5[rank]
    m = cache.photo_map(name, weights, pixels, target, method, reduction)  # (224, 224)
    signed = reduction == "sum"
    style = Style(signed, "RdBu_r" if signed else "inferno", 0.5, 99.0, False)
    lo, hi = style.range([m])
    symbol = "Σ_c ∂" if signed else "max_c |∂"
    st.markdown(
        f"**Showing** {METHOD_LABELS[method]}, {symbol} logit[{names[target]}] / ∂x_c"
        f"{'' if signed else '|'} (channels: {REDUCTION_LABELS[reduction]}), class "
        f"#{target} of 1000."
    )
    st.caption(style.describe(lo, hi))
    photo = np.moveaxis(pixels, 0, -1)  # (224, 224, 3)
    c1, c2, c3 = st.columns(3)
    with c1:
        render.show(render.grey(photo, 1), "What the model sees (224 × 224 crop)")
    with c2:
        render.show(render.picture(m, lo, hi, style, scale=1), f"Map: {names[target]}")
        render.show(render.colorbar(lo, hi, style.cmap, width=224), None)
    with c3:
        render.show(render.picture(m, lo, hi, style, image=photo, scale=1), "Overlay")
