"""Your model: upload a TorchScript file, a torch.export program or a state dict, then explore it.

Checking lives in `pretrained.user_models.accept_upload`: the file is never run in this
process, only in a sandboxed worker (`pretrained.worker`). This page asks, reports and keeps
the accepted model in `cache.uploads()` under `upload:<sha256[:12]>`, and in this session's
model list (`state.remember_upload`, with the secret key that a reload uses to get it back),
so every view can use it by name.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

import pretrained
from dashboard import cache, render, state
from pretrained import user_models, worker

KIND_LABELS = {
    "auto": "detect from the file",
    "torchscript": "TorchScript (torch.jit.save)",
    "export": "torch.export program (torch.export.save)",
    "state_dict": "state dict for a registry architecture (torch.save)",
}
DATASET_LABELS = {"mnist": "MNIST digits", "fashion-mnist": "Fashion-MNIST"}


def _open_in_explore(name: str, dataset: str) -> None:
    state.put("dataset", dataset)
    state.put("model", name)


def _accept(file, names_file, kind, dataset, architecture, mean, std) -> None:
    """Check the upload in a sandboxed worker; remember the accepted model or why not."""
    st.session_state["um_error"] = None
    st.session_state["um_accepted"] = None
    if file is None:
        st.session_state["um_error"] = "Choose a model file first."
        return
    bar = st.progress(0.0, text="Reading the model in a sandboxed worker, checking one image…")

    def progress(done: int, total: int) -> None:
        bar.progress(done / total, text=f"Measuring accuracy: {done:,} / {total:,} test images")

    try:
        names = user_models.parse_class_names(names_file.getvalue() if names_file else None)
        model_worker, info = user_models.accept_upload(
            file.getvalue(),
            dataset=dataset,
            kind=kind,
            architecture=architecture,
            normalisation=(float(mean), float(std)),
            class_names=names,
            filename=file.name,
            progress=progress,
        )
    except user_models.UserModelError as err:
        st.session_state["um_error"] = f"{file.name}: {err}"
        return
    finally:
        bar.empty()
    kept = cache.uploads().add(worker.Upload(info.name, model_worker, info))
    state.remember_upload(kept.name, kept.token)
    st.session_state["um_accepted"] = kept.name


def render_view() -> None:
    state.init()
    state.keep("um_kind", "um_dataset", "um_arch", "um_mean", "um_std")
    for key, default in (("um_arch", "cnn"), ("um_mean", 0.0), ("um_std", 1.0)):
        st.session_state.setdefault(key, default)
    st.title("Your model")
    if not cache.uploads_allowed():
        st.info(
            "Uploading models is turned off on this server (it was started with "
            "`--no-uploads`). The bundled models work everywhere in the dashboard."
        )
        return
    st.markdown(
        "Upload a classifier for the project's images (**1 × 28 × 28 greyscale, pixels in "
        "[0, 1]**) and explore it like the built-in models. Accepted: **TorchScript** "
        "(`torch.jit.save(torch.jit.script(model), 'm.pt')`), a **torch.export** program "
        "(`torch.export.save(...)`, with a dynamic batch size), or a **state dict** of one of "
        "the registry's architectures (`torch.save(model.state_dict(), 'w.pt')`). Files are "
        "never unpickled as Python objects: anything but these is refused."
    )
    st.caption(
        "A model is a program, so it never runs inside this server: it is read and run in a "
        "sandboxed worker process that can't open files, start programs or use the network, "
        f"with {worker.Limits().memory_bytes // 2**20} MB of memory and "
        f"{worker.Limits().job_seconds:g} s per request. Programs may only call pure tensor "
        "operators; compressed tensor records (ZIP bombs) are refused before they are read."
    )
    with st.form("um_form", border=True):
        file = st.file_uploader("Model file (.pt, .pth, .pt2; up to 20 MB)", key="um_file")
        names_file = st.file_uploader(
            "Class names (optional): a text file, one per line, or a JSON list",
            type=["txt", "json"],
            key="um_names",
        )
        c1, c2 = st.columns(2)
        kind = c1.selectbox(
            "Kind of file", tuple(KIND_LABELS), key="um_kind", format_func=KIND_LABELS.get
        )
        dataset = c2.selectbox(
            "Trained for", pretrained.DATASETS, key="um_dataset", format_func=DATASET_LABELS.get
        )
        architecture = c1.selectbox(
            "Architecture (state dicts only)",
            tuple(pretrained.ARCHITECTURES),
            key="um_arch",
            help="\n".join(f"- **{k}**: {v}" for k, v in pretrained.ARCHITECTURES.items()),
        )
        m1, m2 = c2.columns(2)
        mean = m1.number_input("Normalise: mean", format="%.4f", key="um_mean")
        std = m2.number_input(
            "std", min_value=1e-6, format="%.4f", key="um_std",
            help="The model gets (x − mean) / std. State dicts ignore this: the registry "
            "architectures normalise with the data set's own statistics.",
        )  # fmt: skip
        submitted = st.form_submit_button("Check and add", type="primary", key="um_submit")
    if submitted:
        _accept(file, names_file, kind, dataset, architecture, mean, std)
        if st.session_state.get("um_accepted"):
            st.rerun()  # so the sidebar's model list, drawn before this page, includes it

    if st.session_state.get("um_error"):
        st.error(
            render.plain(st.session_state["um_error"])
            + " The models you added before are still available."
        )
    accepted = st.session_state.get("um_accepted")
    if accepted and accepted in cache.uploads():
        info = cache.model_info(accepted)
        st.success(
            f"Accepted **{info.name}** ({info.filename}, {info.kind}): "
            f"{info.test_accuracy:.2%} on {info.n_test:,} {info.dataset} test images, "
            f"{info.seconds_per_example * 1000:.0f} ms for one image."
        )
        if st.button(
            "Open it in Explore",
            key="um_explore",
            on_click=_open_in_explore,
            args=(info.name, info.dataset),
        ):
            st.switch_page("views/explore.py")

    mine = [n for n in st.session_state.get("user_models", []) if n in cache.uploads()]
    if mine:
        st.markdown("#### Your models in this session")
        st.caption(
            "Each also appears in the sidebar's model list (for its data set), in Explore, "
            "Misclassifications and the other views. The server keeps the last "
            f"{cache.MAX_UPLOADS} uploads. Your page's link holds a secret key for each "
            "(`mine=`): reloading it gets them back, and nobody without the key can use them, "
            "so share that link only with people who may use your models."
        )
        rows = [cache.model_info(n) for n in mine]
        st.dataframe(
            pd.DataFrame(
                {
                    "name": [i.name for i in rows],
                    "file": [i.filename for i in rows],
                    "kind": [i.kind for i in rows],
                    "data set": [i.dataset for i in rows],
                    "test accuracy": [i.test_accuracy for i in rows],
                    "ms per image": [round(i.seconds_per_example * 1000, 1) for i in rows],
                    "parameters": [i.n_params for i in rows],
                }
            ),
            hide_index=True,
            key="um_table",
        )


if __name__ == "__main__":  # run as a page by the router
    render_view()
