"""Photos (ImageNet): a real photo, a torchvision classifier, the map of each top-5 class.

Models, preprocessing and category names come from `workspace.imagenet` (torchvision's own
`weights.transforms()` and `weights.meta["categories"]`); maps from `cache.photo_map`, one class
at a time, by Explore's methods: gradients, layer maps (Grad-CAM and its kin, at a layer named
on screen), occlusion and LRP. Without the pretrained weights (offline) the page says how to
get them and offers random weights as a demonstration of the code path.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

import saliency
from dashboard import cache, render, state, upload_limits
from dashboard.rate_limits import EXPENSIVE, Refused
from dashboard.render import Style
from dashboard.views import explore, explore_controls
from sandbox import kinds
from sandbox.images import ImageError, decode_image
from workspace import imagenet

# Session keys of this page.
PH_DOWNLOAD_ERROR = "ph_download_error"
PH_DOWNLOAD = "ph_download"
PH_FILE = "ph_file"
PH_ERROR = "ph_error"
PH_SEEN = "ph_seen"
PH_IMAGE = "ph_image"
PH_NAME = "ph_name"


# Explore's methods and labels, less those Photos doesn't run as Explore labels them: the noisy
# and path methods' 50 passes of a 224 x 224 ResNet (SmoothGrad runs 10 here, and says so) and
# the transformer maps (neither model is a transformer).
_SKIPPED = ("smoothgrad_sq", "vargrad", "integrated_gradients")
METHOD_LABELS = {
    m: "SmoothGrad (10 noisy copies, σ = 0.15)" if m == "smoothgrad" else label
    for m, label in explore.METHOD_LABELS.items()
    if m not in _SKIPPED and saliency.method_info(m).family != "transformer"
}
# One map for the whole photo, the same in every colour channel: no channels to reduce.
ONE_MAP = ("grad_cam", "grad_cam_pp", "score_cam", "layer_cam", "occlusion")
REDUCTION_LABELS = {
    "max": "max |g| over R, G, B (Simonyan)",
    "sum": "sum of g over R, G, B (signed)",
}
PHOTO_SHAPE = (3, 224, 224)  # what the model sees: the photo resized and centre-cropped
RANDOM_LABEL = "Use random weights (a demo of the code path: the predictions mean nothing)"


def _try_download(name: str) -> None:
    try:
        imagenet.load(name, download=True)
    except imagenet.WeightsUnavailable as err:
        st.session_state[PH_DOWNLOAD_ERROR] = str(err)
    else:
        st.session_state[PH_DOWNLOAD_ERROR] = None


def _weights(name: str) -> str | None:
    """ "pretrained" when the weights are in the torch cache, "random" if the user opts in."""
    if imagenet.weights_available(name):
        return "pretrained"
    st.warning(imagenet.how_to_get(name))
    st.button("Try to download them now", key=PH_DOWNLOAD, on_click=_try_download, args=(name,))
    if st.session_state.get(PH_DOWNLOAD_ERROR):
        st.caption(f"Download failed: {st.session_state[PH_DOWNLOAD_ERROR][-200:]}")
    if st.checkbox(RANDOM_LABEL, key=state.PH_RANDOM):
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
        key=PH_FILE,
        type=None,
        max_upload_size=upload_limits.IMAGE_MB,
    )
    if too_big := upload_limits.too_big(file, "photo", upload_limits.IMAGE_MB):
        st.session_state[PH_ERROR], file = too_big, None  # never read
    if file := upload_limits.fresh(file, st.session_state, seen=PH_SEEN, error=PH_ERROR):
        try:
            photo = decode_image(file.getvalue())
            imagenet.resized_size(photo.width, photo.height, 256)  # refuse before keeping
            st.session_state[PH_IMAGE] = photo.convert("RGB")
            st.session_state[PH_NAME] = file.name
        except ImageError as err:
            st.session_state[PH_ERROR] = f"{file.name}: {err}"
    if st.session_state.get(PH_ERROR):
        had = PH_IMAGE in st.session_state
        kept = " The photo shown is the one you had before." if had else ""
        st.error(render.plain(st.session_state[PH_ERROR]) + kept)
    if PH_IMAGE not in st.session_state:
        st.info("No photo yet: upload one above.")
        return None
    try:
        return imagenet.pixels(name, st.session_state[PH_IMAGE]).numpy()
    except (ImageError, ValueError, OverflowError, MemoryError) as err:
        st.session_state.pop(PH_IMAGE, None)  # never fail again on every later click
        st.error(f"That photo can't be prepared for the model ({render.plain(err)}).")
        return None


def _controls() -> tuple[str, str, str]:
    """The model, method and colour-channel controls: (model, method, reduction)."""
    if st.session_state.get(state.PH_METHOD) not in METHOD_LABELS:  # a link's method it can't run
        st.session_state[state.PH_METHOD] = "gradient"
    c1, c2, c3 = st.columns(3)
    name = c1.radio(
        "Model",
        tuple(imagenet.MODELS),
        key=state.PH_MODEL,
        format_func=lambda n: imagenet.MODELS[n].title,
    )
    method = c2.selectbox(
        "Method", tuple(METHOD_LABELS), key=state.PH_METHOD, format_func=METHOD_LABELS.get
    )
    reduction = c3.radio(
        "Colour channels",
        tuple(REDUCTION_LABELS),
        key=state.PH_REDUCE,
        format_func=REDUCTION_LABELS.get,
        disabled=method in ONE_MAP,
        help="A layer map or occlusion is one map, the same in every channel."
        if method in ONE_MAP
        else None,
    )
    return name, method, reduction


def _showing(method, info, names, target, signed, reduction, layer, chosen) -> None:
    """What the map shows: the derivative as written, or the method, channels and layer."""
    label = METHOD_LABELS[method]
    if method in ("gradient", "smoothgrad"):  # a derivative of the pixels, as written
        symbol = "Σ_c ∂" if signed else "max_c |∂"
        st.markdown(
            f"**Showing** {label}, {symbol} logit[{names[target]}] / ∂x_c"
            f"{'' if signed else '|'} (channels: {REDUCTION_LABELS[reduction]}), class "
            f"#{target} of 1000."
        )
    else:
        channels = "" if method in ONE_MAP else f" (channels: {REDUCTION_LABELS[reduction]})"
        at = ""
        if info.layer:
            which = "chosen" if chosen else "automatic"
            at = f" At layer {render.plain(layer)} ({which}), upsampled to the photo."
        st.markdown(
            f"**Showing** {label} of logit[{names[target]}]{channels}, class #{target} of 1000.{at}"
        )


def render_view() -> None:
    state.keep(
        state.PH_MODEL,
        state.PH_RANDOM,
        state.PH_METHOD,
        state.PH_REDUCE,
        state.PH_CLASS,
        state.PH_LAYER,
    )
    st.title("Photos (ImageNet)")
    st.caption(
        "A real photo and a torchvision ImageNet classifier: the photo is resized and "
        "centre-cropped to 224 × 224 exactly as the weights' own transforms do, and each map "
        "explains one class's logit from those pixels: its gradient and kin, a layer map "
        "(Grad-CAM and kin), occlusion or LRP."
    )
    name, method, reduction = _controls()
    weights = _weights(name)
    if weights is None:
        return
    pixels = _photo(name)
    if pixels is None:
        return

    key = kinds.imagenet(name, weights)
    card = cache.model_info(key)
    names = card.class_names
    probs = cache.probabilities(key, pixels)  # (1000,)
    top5 = [int(k) for k in np.argsort(-probs)[:5]]
    st.subheader(f"{card.description} says **{names[top5[0]]}** ({probs[top5[0]]:.1%})")
    rank = st.radio(
        "Map of class (top 5)",
        range(5),
        key=state.PH_CLASS,
        horizontal=True,
        format_func=lambda r: f"{names[top5[r]]} ({probs[top5[r]]:.1%})",
    )
    target = top5[rank]
    info = saliency.method_info(method)
    layer, chosen = "", ""  # the layer map's layer, and the one the user chose ("": automatic)
    if info.layer:
        facts = _layer_control(key, method)
        if facts["problem"]:
            _cannot(info.label, name, facts["problem"])
            return
        layer, chosen = facts["layer"], _chosen()
    one_map = method in ONE_MAP
    how = "mean" if one_map else reduction  # the mean of identical channels is the map
    try:
        with EXPENSIVE.turn(method):  # Score-CAM, occlusion: a minute and 17 s of one core
            m = cache.photo_map(key, pixels, target, method, how, chosen)
    except ValueError as err:  # the library's reason (LRP and a MobileNet's Hardswish)
        _cannot(info.label, name, str(err))
        return
    except Refused as err:
        st.warning(str(err))
        return
    signed = info.signed if one_map else reduction == "sum"
    style = Style(signed, "RdBu_r" if signed else "inferno", 0.5, 99.0, False)
    lo, hi = style.range([m])
    _showing(method, info, names, target, signed, reduction, layer, chosen)
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


def _chosen() -> str:
    return st.session_state.get(state.PH_LAYER) or ""


def _layer_control(key: str, method: str) -> dict:
    """A layer map's layer picker (as Explore's), the automatic layer named in its first
    option; returns the facts of the layer in force (`problem` when none can be used)."""
    auto = cache.method_facts(key, PHOTO_SHAPE, method)
    if auto["problem"]:
        return auto
    options = ("", *auto["layers"])
    if st.session_state.get(state.PH_LAYER) not in options:
        st.session_state[state.PH_LAYER] = ""  # the other model's layer
    explore_controls.layer_picker(state.PH_LAYER, auto, transformers=False)
    return cache.method_facts(key, PHOTO_SHAPE, method, _chosen()) if _chosen() else auto


def _cannot(label: str, name: str, why: str) -> None:
    st.warning(
        f"**{label} can't explain {imagenet.MODELS[name].title}:** {render.plain(why)}. "
        "Choose another method above; nothing else you chose has changed."
    )
