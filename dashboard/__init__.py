"""The Streamlit dashboard: `app.py` routes to thin views over `saliency` and `pretrained`."""

import threading

# Where `serve.py` tells the pages its routes are (unset under `streamlit run`). Here, in a
# module that imports nothing of ours, so that serve.py (imported before the server listens)
# doesn't import torch: the warm-up thread does that while the server already answers.
LIVE_STATUS_ENV = "SALIENCY_LIVE_STATUS_URL"
EXPLORE_ROUTE_ENV = "SALIENCY_EXPLORE_URL"
# For `python -m dashboard`'s warm-up, which leaves torch alone while a first page is drawn
# (see its warm_up). PAGE_STARTED: set by app.py when a run starts. PAGE_DRAWN: set once a page
# is complete: by app.py at the end of a run, unless the page still waits for the browser
# (`PAGE_WAITS` in the session: Explore's panel has not said that it drew), and then by the
# run that hears it.
PAGE_STARTED = threading.Event()
PAGE_DRAWN = threading.Event()
PAGE_WAITS = "page_waits_for_browser"


def view(name: str):
    """The module `dashboard.views.NAME`, for a page script. Its first import on a server reads
    torch and the models (seconds; longer while the warm-up thread is at it): the visitor
    sees a spinner saying so, not a blank page."""
    import importlib
    import sys

    module = f"dashboard.views.{name}"
    if module in sys.modules:
        return importlib.import_module(module)  # waits for another thread still importing it
    import streamlit as st

    with st.spinner(
        "Opening this page for the first time on this server: loading torch and the models "
        "(a few seconds, once)…"
    ):
        return importlib.import_module(module)
