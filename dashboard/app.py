"""Saliency dashboard: the router. Run with `bash scripts/dashboard.sh`.

The shared sidebar picks the data set and the model; each view lives in `views/`, and
`page_files/` holds the scripts st.navigation runs, which call them. Every choice
is mirrored in the URL query (see `state.py`), so a link reopens the exact view.
"""

from __future__ import annotations

import streamlit as st

from dashboard import PAGE_DRAWN, PAGE_STARTED, PAGE_WAITS, render, sources, state
from sandbox.worker import ModelFailure
from workspace import WorkspaceError

PAGE_STARTED.set()
st.set_page_config(page_title="Saliency dashboard", page_icon="🔥", layout="wide")
st.html(render.PIXELATED_CSS)  # pictures are sent at their own size and scaled up crisply

view = state.init()
with st.sidebar:
    st.markdown("## 🔥 Saliency dashboard")
    st.caption("Which pixels does the network's decision depend on?")
    st.selectbox(
        "Data set",
        sources.keys(),
        key=state.DATASET,
        format_func=sources.title,
        help="The bundled test sets, the workspaces this server was started on "
        "(python -m dashboard --workspace FOLDER): any image classifier on any image folder, "
        "indexed with python -m workspace.index; and Photos (ImageNet): your own photo, "
        "explained by torchvision's classifiers.",
    )

    models = state.models(view["dataset"])
    # Only public models: the Explore panel's own Model picker offers the same ones, and this
    # box hides while it shows (saliency/panel/panel.css); with an upload of this session's,
    # which that picker can't offer, it stays.
    public = models == state.public_models(view["dataset"])
    st.container(key=state.PUBLIC_MODEL_BOX if public else None).selectbox(
        state.MODEL_PICKER,
        models,
        key=state.MODEL,
        format_func=state.model_label,
        help="Every model trained for this data set, with its accuracy on the test images "
        "(and the models you uploaded on the Your model page). A workspace has its own model.",
    )

page = st.navigation(
    {
        "Look at one image": [
            # File pages (not callables) so AppTest and st.switch_page can open them by path.
            # Each is a two-line script calling its view, whose module is imported once.
            st.Page(
                "page_files/explore.py",
                title="Explore",
                icon="🔍",
                url_path="explore",
                default=True,
            ),
            st.Page(
                "page_files/mistakes.py", title="Misclassifications", icon="❌", url_path="mistakes"
            ),
        ],
        "Look at a whole data set": [
            st.Page(
                "page_files/dataset.py", title="Data-set sensitivity", icon="🗺️", url_path="dataset"
            ),
            st.Page(
                "page_files/bench.py", title="Which map can I trust?", icon="⚖️", url_path="bench"
            ),
        ],
        "Teach": [
            st.Page("page_files/classroom.py", title="Classroom", icon="🎓", url_path="classroom"),
            st.Page("page_files/live.py", title="Live class", icon="🙋", url_path="live"),
        ],
        "Bring your own": [
            st.Page(
                "page_files/your_model.py", title="Your model", icon="📦", url_path="your-model"
            ),
            st.Page(
                "page_files/photos.py", title="Photos (ImageNet)", icon="📷", url_path="photos"
            ),
            st.Page("page_files/tables.py", title="Tables", icon="📊", url_path="tables"),
        ],
    }
)
for note in st.session_state.pop(state.GONE_MODELS, []):
    st.warning(note)
try:
    page.run()
except ModelFailure as err:  # an uploaded model failed in its worker: this page says so
    st.error(
        f"{render.plain(err)} The rest of the dashboard is unaffected: the bundled models and "
        "your other choices are still here."
    )
except WorkspaceError as err:  # a workspace's folder or model went bad since it was indexed
    st.error(
        f"This workspace can't be shown: {render.plain(err)}. Pick another data set in the "
        "sidebar; everything else you chose is kept."
    )
state.sync()
if not st.session_state.pop(PAGE_WAITS, False):
    PAGE_DRAWN.set()  # see dashboard/__init__.py
