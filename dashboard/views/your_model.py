"""Your model: upload a torch.export program, TorchScript, ONNX or a state dict, then explore it.

Checking lives in `sandbox.user_models.accept_upload`: the file is never run in this
process, only in a sandboxed worker (`sandbox.worker`). This page asks, reports and keeps
the accepted model in `cache.uploads()` under `upload:<sha256[:12]>`, and in this session's
model list (`state.remember_upload`, with the secret key that a reload uses to get it back),
so every view can use it by name. The page's second form, a model with a ZIP of its pictures,
is `your_folder`; what both forms share, `upload_forms`.
"""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

import pretrained
from dashboard import cache, render, state
from dashboard import upload_limits as limits
from dashboard.views.upload_forms import (
    DATASET_LABELS,
    EXPORT_EXAMPLE,
    KIND_LABELS,
    MNIST_FORM_NOTE,
    ONNX_NOTE,
    OUTPUT_HELP,
    RAN_AND_FAILED,
    SAFETENSORS_NOTE,
    TORCHSCRIPT_NOTE,
    UM_ERROR,
    clear_errors,
    open_in_explore,
    same_file_again,
    send,
    unchanged,
)
from dashboard.views.your_folder import WS_SUBMIT, folder_section
from sandbox import user_models, worker

# Session keys of this page. The model form and what became of its last upload:
UM_ACCEPTED = "um_accepted"
UM_FILE = "um_file"
UM_NAMES = "um_names"
UM_KIND = "um_kind"
UM_DATASET = "um_dataset"
UM_ARCH = "um_arch"
UM_OUTPUT = "um_output"
UM_MEAN = "um_mean"
UM_STD = "um_std"
UM_SUBMIT = "um_submit"
UM_EXPLORE = "um_explore"
UM_TABLE = "um_table"
UM_LAST_SENT = "um_last_sent"


def _accept(file, names_file, kind, dataset, architecture, mean, std, output="") -> None:
    """Check the upload in a sandboxed worker; remember the accepted model or why not."""
    clear_errors()
    st.session_state[UM_ACCEPTED] = None
    if file is None:
        st.session_state[UM_ERROR] = "Choose a model file first. " + limits.not_sent(
            "model file", limits.MODEL_MB
        )
        return
    too_big = limits.too_big(file, "model file", limits.MODEL_MB) or limits.too_big(
        names_file, "file of class names", limits.NAMES_MB
    )
    if too_big:
        st.session_state[UM_ERROR] = too_big
        return
    if unchanged(
        UM_LAST_SENT, (file, names_file), (kind, dataset, architecture, mean, std, output)
    ):
        st.session_state[UM_ERROR] = same_file_again(file.name, "model file", limits.MODEL_MB)
        return
    bar = st.progress(0.0, text="Reading the model in a sandboxed worker, checking one image…")
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        text = f"Measuring accuracy on the test set: {render.counted(done, total, start)}"
        bar.progress(done / total, text=text)

    try:
        names = user_models.parse_class_names(names_file.getvalue() if names_file else None)
        with worker.on_wait(lambda wait: bar.progress(0.0, text=str(wait))):
            model_worker, info = user_models.accept_upload(
                file.getvalue(),
                dataset=dataset,
                kind=kind,
                architecture=architecture,
                normalisation=(float(mean), float(std)),
                class_names=names,
                filename=file.name,
                progress=progress,
                output=output,
            )
    except user_models.UserModelError as err:
        said = str(err)
        note = MNIST_FORM_NOTE if any(w in said for w in RAN_AND_FAILED) else ""
        st.session_state[UM_ERROR] = f"{file.name}: {said}{note}"
        return
    finally:
        bar.empty()
    kept = cache.uploads().add(worker.Upload(info.name, model_worker, info))
    state.remember_upload(kept.name, kept.token)
    st.session_state[UM_ACCEPTED] = kept.name


def _upload_intro() -> None:
    st.markdown(
        "Upload a classifier for the project's images (**1 × 28 × 28 greyscale, pixels in "
        "[0, 1]**) and explore it like the built-in models. Save it as a **torch.export** "
        f"program with a dynamic batch size: `{EXPORT_EXAMPLE}` (x: one batch of images, "
        "`(N, 1, 28, 28)`). Also accepted: the weights of one of the registry's architectures, "
        "as a **safetensors** file (`safetensors.torch.save_file(model.state_dict(), "
        "'w.safetensors')`) or a **state dict** (`torch.save(model.state_dict(), 'w.pt')`), "
        "with the architecture's name. Files are never unpickled "
        "as Python objects: anything else is refused. A model for your own images goes in the "
        "second form, below."
    )
    st.caption(TORCHSCRIPT_NOTE + " " + ONNX_NOTE + " " + SAFETENSORS_NOTE)
    st.caption(
        "A model is a program, so it never runs inside this server: it is read and run in a "
        "sandboxed worker process that can't open files, start programs or use the network, "
        f"with {worker.Limits().memory_bytes // 2**20} MB of memory and "
        f"{worker.Limits().job_seconds:g} s per request. This server runs at most "
        f"{worker.max_workers()} such workers at once: when all are busy, a check waits its "
        "turn. Programs may only call pure tensor operators; compressed tensor records (ZIP "
        "bombs) are refused before they are read."
    )


def _upload_form() -> tuple[bool, tuple]:
    """The MNIST-sized model's form: (sent, its values)."""
    with st.form("um_form", border=True):
        file = st.file_uploader(
            f"Model file (.pt2, .pt, .pth, .onnx, .safetensors; up to {limits.MODEL_MB} MB)",
            key=UM_FILE,
            max_upload_size=limits.MODEL_MB,
        )
        names_file = st.file_uploader(
            "Class names (optional): a text file, one per line, or a JSON list",
            type=["txt", "json"],
            key=UM_NAMES,
            max_upload_size=limits.NAMES_MB,
        )
        c1, c2 = st.columns(2)
        kind = c1.selectbox(
            "Kind of file", tuple(KIND_LABELS), key=UM_KIND, format_func=KIND_LABELS.get
        )
        dataset = c2.selectbox(
            "Trained for", pretrained.DATASETS, key=UM_DATASET, format_func=DATASET_LABELS.get
        )
        architecture = c1.selectbox(
            "Architecture (state dicts and safetensors only)",
            tuple(pretrained.ARCHITECTURES),
            key=UM_ARCH,
            help="\n".join(f"- **{k}**: {v}" for k, v in pretrained.ARCHITECTURES.items()),
        )
        output = c1.text_input("Output (tuple or dict outputs)", key=UM_OUTPUT, help=OUTPUT_HELP)
        m1, m2 = c2.columns(2)
        mean = m1.number_input("Normalise: mean", format="%.4f", key=UM_MEAN)
        std = m2.number_input(
            "std", min_value=1e-6, format="%.4f", key=UM_STD,
            help="The model gets (x − mean) / std. State dicts ignore this: the registry "
            "architectures normalise with the data set's own statistics.",
        )  # fmt: skip
        submitted = st.form_submit_button("Check and add", type="primary", key=UM_SUBMIT)
    return submitted, (file, names_file, kind, dataset, architecture, mean, std, output)


def _upload_result() -> None:
    """The last upload's error, or the model it added with a way to Explore."""
    if st.session_state.get(UM_ERROR) and not st.session_state.get(WS_SUBMIT):
        # (the second form, sent in this run, clears this box below: it isn't drawn stale)
        st.error(
            render.plain(st.session_state[UM_ERROR])
            + " The models you added before are still available."
        )
    accepted = st.session_state.get(UM_ACCEPTED)
    if accepted and accepted in cache.uploads():
        info = cache.model_info(accepted)
        st.success(
            f"Accepted **{render.plain(cache.display_name(info.name))}** ({info.kind}): "
            f"{info.test_accuracy:.2%} on {info.n_test:,} {info.dataset} test images, "
            f"{info.seconds_per_example * 1000:.0f} ms for one image."
        )
        if st.button(
            "Open it in Explore",
            key=UM_EXPLORE,
            on_click=open_in_explore,
            args=(info.name, info.dataset),
        ):
            st.switch_page("page_files/explore.py")


def _session_models() -> None:
    """The table of this session's uploaded models."""
    mine = [n for n in st.session_state.get(cache.USER_MODELS, []) if n in cache.uploads()]
    if not mine:
        return
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
                "name": [cache.display_name(i.name) for i in rows],
                "key": [i.name for i in rows],
                "kind": [i.kind for i in rows],
                "data set": [i.dataset for i in rows],
                "test accuracy": [i.test_accuracy for i in rows],
                "ms per image": [round(i.seconds_per_example * 1000, 1) for i in rows],
                "parameters": [i.n_params for i in rows],
            }
        ),
        hide_index=True,
        key=UM_TABLE,
    )


def render_view() -> None:
    state.keep(UM_KIND, UM_DATASET, UM_ARCH, UM_MEAN, UM_STD)
    for key, default in ((UM_ARCH, "cnn"), (UM_MEAN, 0.0), (UM_STD, 1.0)):
        st.session_state.setdefault(key, default)
    st.title("Your model")
    if not cache.uploads_allowed():
        st.info(
            "Uploading models is turned off on this server (it was started with "
            "`--no-uploads`). The bundled models work everywhere in the dashboard."
        )
        return
    _upload_intro()
    send(_upload_form, _accept, UM_ACCEPTED)
    _upload_result()
    st.divider()
    folder_section()
    _session_models()
