"""`python -m dashboard [--workspace W]… [--class] [--no-uploads] [streamlit options]`.

`--workspace W` (as often as you like) adds a folder written by `python -m workspace.index`
to the sidebar's data sets and opens the dashboard on the first one: Explore,
Misclassifications and Data-set sensitivity then show that model on those images.

By default the server listens on this machine only (localhost), as `.streamlit/config.toml`
says. `--class` opens it to the network (every interface, port 8501 unless `--server.port`
says otherwise), so that students can open the link the server prints. `--no-uploads` turns off
uploading models, images and photos (SALIENCY_UPLOADS=off): for a class that only needs the
bundled models. Uploaded models run in sandboxed workers either way (see the README's
"Limits").

Streamlit runs the app's script only when a browser connects. The default first page needs no
torch (its model's answers are stored: `first_answers.py`); every other view would make its
visitor pay for importing torch and the rest and for torch's first backward pass (~3 s here).
A background thread does all that once a first page was drawn (or at once, when no browser came
in the first seconds); the script runs in this same process and finds the modules imported
and torch initialised.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# A browser opened with the server (or a visit that woke it) has started its first page by
# then (its front end takes ~1.5 s to load); a page that started is waited for FIRST_PAGE_S.
FIRST_VISITOR_S = 2.5
FIRST_PAGE_S = 10.0


def warm_up() -> None:
    # What the pages need, and not the dashboard's own modules: their st.cache_* functions
    # must be created inside the Streamlit runtime, which does not exist yet. Each line here
    # was seen costing a first visitor (py-spy on a cold server). One GIL: nothing before the
    # runtime has started, which would only make the server's own start later. Then, while a
    # first visitor's browser loads Streamlit's front end (~1.5 s, the server idle), what the
    # first page reads, none of it torch: Streamlit's emoji pattern for the page icon
    # (~0.3 s), our libraries' modules, the bundled test set and the colour tables. Then, if a
    # first page starts soon, nothing until it is complete: the default page needs no torch
    # (its model's answers are stored, dashboard/first_answers.py), and importing torch (~2 s
    # here) meanwhile only made it later. Then torch and the default model's first backward
    # pass, which the next view needs, and what other pages need: the charts' pandas and
    # pyarrow (~0.4 s) and altair (~0.5 s; Misclassifications, Classroom), and Captum
    # (~0.4 s, up to 1 s beside other work; +30 MB RSS with the matplotlib it imports): every
    # method but the vanilla gradient needs it, and the Explore panel's method picker is one
    # click away, whose first answer paid for the import (a route answer of ~12 ms took
    # ~0.3-1 s on a server's first switch).
    _server_started()
    from dashboard.compat_streamlit import warm_emoji

    warm_emoji()
    import numpy
    import PIL.ImageDraw  # noqa: F401
    import PIL.ImageFont

    import pretrained.data
    import saliency.display
    import saliency.metrics  # noqa: F401
    import sandbox.worker  # noqa: F401
    import workspace.folder_upload

    PIL.ImageFont.load_default(size=11)
    pretrained.data.load_arrays("mnist")  # the decoded file is kept
    for cmap in saliency.display.SEQUENTIAL_CMAPS + saliency.display.DIVERGING_CMAPS:
        saliency.display.colorize(numpy.zeros(1), cmap)  # each table read from its file once

    from dashboard import PAGE_DRAWN, PAGE_STARTED

    if PAGE_STARTED.wait(timeout=FIRST_VISITOR_S):
        PAGE_DRAWN.wait(timeout=FIRST_PAGE_S)
    import pretrained
    import saliency

    model = pretrained.load_model("mnist-cnn")
    x, _ = pretrained.load_dataset("mnist", "test")[:1]
    saliency.jacobian(model, x.to(next(model.parameters()).device))

    import altair  # noqa: F401
    import captum.attr  # noqa: F401 - saliency's methods but the gradient (see above)
    import pandas  # noqa: F401
    import pyarrow  # noqa: F401

    import workspace.tables  # noqa: F401 - the Tables page's (its example model is small)

    folders = [f for f in os.environ.get("SALIENCY_WORKSPACES", "").split(os.pathsep) if f]
    if folders:  # the first workspace's model, read and run once as its first view will
        import torch

        from workspace import open_indexed, shared_model

        try:
            ws = open_indexed(folders[0])
            device = str(pretrained.default_device())
            net = shared_model(ws.config, len(ws.classes), ws.model_sha256, device)
            x = torch.from_numpy(ws.image(0))[None].to(device)
            for _ in range(3):  # TorchScript optimises a graph after its first runs
                if len(ws.classes) <= 20:
                    saliency.jacobian(net, x)
                else:
                    saliency.gradients(net, x, 0)
        except Exception:  # noqa: BLE001, S110 - the view says what is wrong, on the page
            pass


def _server_started(timeout: float = 10.0) -> None:
    """Return once Streamlit's runtime has started (or `timeout` seconds passed): work done
    before then would only make the server's own start later (one GIL)."""
    import time

    from dashboard.compat_streamlit import runtime_started

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if runtime_started():
            return
        time.sleep(0.02)


def streamlit_args(argv: list[str]) -> list[str]:
    """Our own switches turned into Streamlit options (and SALIENCY_UPLOADS,
    SALIENCY_WORKSPACES); the rest of `argv` is passed through unchanged. Raises SystemExit
    with a message when a `--workspace` folder is not a finished index."""
    args = []
    explicit = any(a.startswith("--server.address") for a in argv)
    if not explicit:  # also when started from another folder, where config.toml isn't read
        args += ["--server.address", "0.0.0.0" if "--class" in argv else "localhost"]
    if not any(a.startswith("--runner.postScriptGC") for a in argv):  # see config.toml
        args += ["--runner.postScriptGC", "false"]
    if not any(a.startswith("--server.showEmailPrompt") for a in argv):  # see config.toml
        args += ["--server.showEmailPrompt", "false"]
    for option, mb in (("maxUploadSize", "256"), ("maxWidgetStateSize", "2")):  # see config.toml
        if not any(a.startswith(f"--server.{option}") for a in argv):
            args += [f"--server.{option}", mb]
    if not any(a.startswith("--server.fileWatcherType") for a in argv):
        # A served dashboard's code doesn't change under it: without this, Streamlit polls
        # every imported module's file for changes and re-registers them on each run, 11 % of
        # the server's CPU while 10 students' pages wait for a round (py-spy). Developers who
        # want reload on save pass --server.fileWatcherType auto.
        args += ["--server.fileWatcherType", "none"]
    workspaces = []
    rest = iter(argv)
    for arg in rest:
        if arg == "--no-uploads":
            os.environ["SALIENCY_UPLOADS"] = "off"
        elif arg == "--workspace" or arg.startswith("--workspace="):
            folder = arg.partition("=")[2] if "=" in arg else next(rest, "")
            workspaces.append(_checked_workspace(folder))
        elif arg != "--class":
            args.append(arg)
    if workspaces:
        os.environ["SALIENCY_WORKSPACES"] = os.pathsep.join(workspaces)
    return args


def _checked_workspace(folder: str) -> str:
    from workspace import WorkspaceError, open_indexed

    if not folder:
        raise SystemExit("--workspace needs a folder written by python -m workspace.index")
    try:
        open_indexed(folder)
    except WorkspaceError as err:
        raise SystemExit(f"--workspace {folder}: {err}") from None
    return str(Path(folder).resolve())


def _freeze_after(thread) -> None:
    import gc

    thread.join()
    gc.collect()
    gc.freeze()


def main() -> None:
    import threading

    args = streamlit_args(sys.argv[1:])
    # uvicorn believes X-Forwarded-For from FORWARDED_ALLOW_IPS, by default this machine: any
    # local program could pick the address its requests are counted under by the rate limits
    # (dashboard/rate_limits.py). None, unless the environment names the reverse proxy.
    os.environ.setdefault("FORWARDED_ALLOW_IPS", "")
    # Streamlit and numpy first, in this thread, and only then the warm-up: a thread importing
    # a module of a package that another thread is still initialising can meet it in the
    # package's circular imports, and Python then hands one of them a half-made module (an
    # ImportError in `streamlit.errors` killed a server's start once). After these, what the
    # server's start imports and what the warm-up imports (torch, the models) share no
    # package (tests/house/test_compat_streamlit.py).
    import numpy  # noqa: F401 - torch's and serve.py's

    from dashboard import compat_streamlit

    compat_streamlit.load_cli()
    compat_streamlit.tcp_no_delay()  # no ~40 ms wait on a response written in two parts

    warm = threading.Thread(target=warm_up, name="warm-up", daemon=True)
    warm.start()
    # serve.py: app.py's pages under Streamlit's server, plus the Live class's status route.
    app = Path(__file__).with_name("serve.py")
    # gc.freeze() once the warm-up is done: the modules and models it loaded never become
    # garbage, so the collector stops walking them on every full collection.
    threading.Thread(target=_freeze_after, args=(warm,), name="gc-freeze", daemon=True).start()
    if _file_watcher(args) == "none":  # nor the config files: see no_config_polling
        compat_streamlit.no_config_polling()
    sys.exit(compat_streamlit.run_cli(["run", str(app), *args]))


def _file_watcher(args: list[str]) -> str:
    """The `--server.fileWatcherType` that `args` set (the last one), else "auto"."""
    kind = "auto"
    for i, arg in enumerate(args):
        if arg == "--server.fileWatcherType" and i + 1 < len(args):
            kind = args[i + 1]
        elif arg.startswith("--server.fileWatcherType="):
            kind = arg.partition("=")[2]
    return kind


if __name__ == "__main__":
    main()
