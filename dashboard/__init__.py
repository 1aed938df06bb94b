"""The Streamlit dashboard: `app.py` routes to thin views over `saliency` and `pretrained`."""
