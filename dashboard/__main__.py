"""`python -m dashboard [--class] [--no-uploads] [streamlit options]`: start the dashboard.

By default the server listens on this machine only (localhost), as `.streamlit/config.toml`
says. `--class` opens it to the network (every interface, port 8501 unless `--server.port`
says otherwise), so that students can open the link the server prints. `--no-uploads` turns off
uploading models, images and photos (SALIENCY_UPLOADS=off): for a class that only needs the
bundled models. Uploaded models run in sandboxed workers either way (see the README's
"Limits").

Streamlit runs the app's script only when a browser connects, so the first visitor would pay
for importing torch and the rest and for torch's first backward pass (~4 s here). A background
thread does all that while the server starts; the script runs in this same process and finds
the modules imported and torch initialised.
"""

from __future__ import annotations

import os
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


def streamlit_args(argv: list[str]) -> list[str]:
    """Our own switches turned into Streamlit options (and SALIENCY_UPLOADS); the rest of
    `argv` is passed through unchanged."""
    args = []
    explicit = any(a.startswith("--server.address") for a in argv)
    if not explicit:  # also when started from another folder, where config.toml isn't read
        args += ["--server.address", "0.0.0.0" if "--class" in argv else "localhost"]
    for arg in argv:
        if arg == "--no-uploads":
            os.environ["SALIENCY_UPLOADS"] = "off"
        elif arg != "--class":
            args.append(arg)
    return args


def main() -> None:
    import threading

    args = streamlit_args(sys.argv[1:])
    threading.Thread(target=warm_up, name="warm-up", daemon=True).start()
    from streamlit.web import cli

    app = Path(__file__).with_name("app.py")
    sys.exit(cli.main(["run", str(app), *args], prog_name="streamlit"))


if __name__ == "__main__":
    main()
