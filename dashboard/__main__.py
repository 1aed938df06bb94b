"""`python -m dashboard [streamlit options]`: start the dashboard and warm it up meanwhile.

Streamlit runs the app's script only when a browser connects, so the first visitor would pay
for importing torch and the rest and for torch's first backward pass (~4 s here). A background
thread does all that while the server starts; the script runs in this same process and finds
the modules imported and torch initialised.
"""

from __future__ import annotations

import sys
from pathlib import Path


def warm_up() -> None:
    # Only what the default view needs (not Captum, pandas or altair, which other views import
    # when they are opened), and not the dashboard's own modules: their st.cache_* functions
    # must be created inside the Streamlit runtime, which does not exist yet.
    import pretrained
    import saliency

    model = pretrained.load_model("mnist-cnn")
    x, _ = pretrained.load_dataset("mnist", "test")[:1]
    saliency.jacobian(model, x.to(next(model.parameters()).device))


def main() -> None:
    import threading

    threading.Thread(target=warm_up, name="warm-up", daemon=True).start()
    from streamlit.web import cli

    app = Path(__file__).with_name("app.py")
    sys.exit(cli.main(["run", str(app), *sys.argv[1:]], prog_name="streamlit"))


if __name__ == "__main__":
    main()
