"""The ImageNet workspace without its weights (offline): how to get them, a try at downloading
them, and the choice of random ones, which show the code path and mean nothing. Explore asks
`ready` before it explains with such a model."""

from __future__ import annotations

import streamlit as st

from dashboard import render, state

# Session keys of this part of Explore.
WEIGHTS_DOWNLOAD = "weights_download"
WEIGHTS_DOWNLOAD_ERROR = "weights_download_error"
RANDOM_LABEL = "Use random weights (a demo of the code path: the predictions mean nothing)"


def _try_download(architecture: str) -> None:
    from workspace import imagenet

    try:
        imagenet.load(architecture, download=True)
    except imagenet.WeightsUnavailable as err:
        st.session_state[WEIGHTS_DOWNLOAD_ERROR] = str(err)
    else:
        st.session_state[WEIGHTS_DOWNLOAD_ERROR] = None


def ready(info) -> bool:
    """Whether the model of card `info` may explain: one with its weights, or one with random
    weights its visitor chose, having been told how to get the real ones."""
    missing = getattr(info, "missing", "")
    if not missing:
        return True
    st.warning(missing)  # the card's own words: how to get the weights, with a command
    st.button(
        "Try to download them now",
        key=WEIGHTS_DOWNLOAD,
        on_click=_try_download,
        args=(info.architecture,),
    )
    if st.session_state.get(WEIGHTS_DOWNLOAD_ERROR):
        failed = st.session_state[WEIGHTS_DOWNLOAD_ERROR][-200:]
        st.caption(f"Download failed: {render.plain(failed)}")
    if st.checkbox(RANDOM_LABEL, key=state.RANDOM_WEIGHTS):
        return True
    st.info("The rest of the dashboard works without these weights.")
    return False
