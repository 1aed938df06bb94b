"""The Streamlit dashboard: `app.py` routes to thin views over `saliency` and `pretrained`."""

# Where `serve.py` tells the pages its routes are (unset under `streamlit run`). Here, in a
# module that imports nothing, so that serve.py (imported before the server listens) doesn't
# import torch: the warm-up thread does that while the server already answers.
LIVE_STATUS_ENV = "SALIENCY_LIVE_STATUS_URL"
EXPLORE_ROUTE_ENV = "SALIENCY_EXPLORE_URL"
