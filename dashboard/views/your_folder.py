"""Your model's second form: a model with a ZIP of its pictures, one folder per class, checked
in a sandboxed worker, indexed as a workspace and opened in every view
(`workspace.folder_upload`)."""

from __future__ import annotations

import hashlib
import time

import pandas as pd
import streamlit as st

import pretrained
from dashboard import budget, cache, render, sources, state
from dashboard import upload_limits as limits
from dashboard.views.upload_forms import (
    EXPORT_EXAMPLE,
    KIND_LABELS,
    OUTPUT_HELP,
    WS_ERROR,
    clear_errors,
    open_in_explore,
    same_file_again,
    send,
    unchanged,
)
from sandbox import named_weights, user_models, worker
from workspace import Preprocessing, WorkspaceError, folder_upload

# Session keys of the folder form (a model with a ZIP of its images) and its last upload:
WS_ACCEPTED = "ws_accepted"
WS_PROBLEMS = "ws_problems"
WS_CSV = "ws_csv"
WS_SECONDS = "ws_seconds"
WS_RESET = "ws_reset"
WS_USED = "ws_used"
WS_MODEL_FILE = "ws_model_file"
WS_ZIP = "ws_zip"
WS_KIND = "ws_kind"
WS_ARCH = "ws_arch"
WS_OUTPUT = "ws_output"
WS_CHANNELS = "ws_channels"
WS_RESIZE = "ws_resize"
WS_CROP = "ws_crop"
WS_MEAN = "ws_mean"
WS_STD = "ws_std"
WS_SUBMIT = "ws_submit"
WS_PROBLEM_TABLE = "ws_problem_table"
WS_EXPLORE = "ws_explore"
WS_DOWNLOAD = "ws_download"
WS_LAST_SENT = "ws_last_sent"
WEIGHTS_LABEL = "(none: the file is a program)"


def _numbers(text: str, name: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.replace(";", ",").split(",") if v.strip())
    except ValueError:
        raise WorkspaceError(f"{name} must be numbers separated by commas, got {text!r}") from None
    if not values:
        raise WorkspaceError(f"{name} is empty")
    return values


def _folder_refusal(model_file, zip_file, settings: tuple) -> str | None:
    """Why the folder form's files are not checked (one missing, too big, the same again)."""
    if model_file is None or zip_file is None:
        missing = [
            limits.not_sent(what, mb)
            for f, what, mb in (
                (model_file, "model file", limits.MODEL_MB),
                (zip_file, "ZIP", limits.ZIP_MB),
            )
            if f is None
        ]
        return "Choose a model file and a ZIP of your images first. " + " ".join(missing)
    too_big = limits.too_big(model_file, "model file", limits.MODEL_MB) or limits.too_big(
        zip_file, "ZIP", limits.ZIP_MB
    )
    if too_big:
        return too_big
    if unchanged(WS_LAST_SENT, (model_file, zip_file), settings):
        return same_file_again(
            f"{model_file.name} with {zip_file.name}", "model file", limits.MODEL_MB
        )
    return None


def _step(bar, what: str, start: float):
    """A progress callback that shows `what`, the count and the rate since `start` on `bar`."""

    def progress(done: int, total: int) -> None:
        text = f"{what}: {render.counted(done, max(total, 1), start)}"
        bar.progress(min(done / max(total, 1), 1.0), text=text)

    return progress


def _index_folder(bar, start, model_file, zip_file, model_bytes, pre, kind, architecture, output):
    """Read the ZIP's images, check and index the model on them in a sandboxed worker, keep
    the workspace: (images, worker, built, the workspace's key, when indexing started)."""

    def waiting() -> None:
        bar.progress(0.0, text="Another upload is being indexed on this server: yours waits…")

    with sources.one_build(waiting):
        room = budget.share("workspaces")  # what one uploaded workspace may hold, in all
        images = folder_upload.read_zip_images(
            zip_file.getvalue(), pre, progress=_step(bar, "Reading your images", start),
            max_bytes=room,
        )  # fmt: skip
        start = time.perf_counter()
        bar.progress(0.0, text="Reading the model in a sandboxed worker, checking one image…")
        with worker.on_wait(lambda wait: bar.progress(0.0, text=str(wait))):
            model_worker, built = folder_upload.build(
                model_bytes,
                images,
                kind=kind,
                architecture=architecture or None,
                filename=model_file.name,
                progress=_step(
                    bar, "Indexing in the sandbox (prediction and gradient of each image)", start
                ),
                max_sums=room - images.x.nbytes,
                output=output,
            )
        try:
            key = sources.add_uploaded(built, zip_file.name)
        except WorkspaceError:
            model_worker.stop()  # its workspace is not kept: nor is its worker
            raise
    return images, model_worker, built, key, start


def _keep_folder(model_file, model_bytes, architecture, images, model_worker, built, key, start):
    """Keep the indexed upload's model and say so on the next run."""
    pre = images.preprocessing
    detected = user_models.detect_kind(model_bytes)
    info = user_models.UserModelInfo(
        name=built.name,
        dataset=sources.uploaded_key(built.name),
        kind=detected,
        architecture=architecture if detected in user_models.WEIGHTS else None,
        class_names=images.classes,
        normalisation=(pre.mean[0], pre.std[0]),
        filename=model_file.name,
        weights_sha256=hashlib.sha256(model_bytes).hexdigest(),
        n_params=built.n_params,
        test_accuracy=built.accuracy,
        n_test=len(images.paths),
        seconds_per_example=built.seconds_per_image,
    )
    kept = cache.uploads().add(worker.Upload(info.name, model_worker, info))
    state.remember_upload(kept.name, kept.token)
    st.session_state[WS_ACCEPTED] = key
    st.session_state[WS_PROBLEMS] = images.problems
    st.session_state[WS_CSV] = built.predictions_csv()
    st.session_state[WS_SECONDS] = time.perf_counter() - start
    # The next upload is another model, maybe of other images: its settings start afresh
    # rather than carrying this one's Colours over unseen (the success message says them).
    st.session_state[WS_RESET] = pre.describe()


def _accept_folder(
    model_file, zip_file, kind, resize, crop, channels, mean, std, architecture=None, output=""
) -> None:
    """Prepare the ZIP's images, check the model on them in a sandboxed worker and index them
    there; keep the workspace, or say why not."""
    clear_errors()
    st.session_state[WS_ACCEPTED] = None
    st.session_state[WS_PROBLEMS] = []
    settings = (kind, resize, crop, channels, mean, std, architecture, output)
    refusal = _folder_refusal(model_file, zip_file, settings)
    if refusal:
        st.session_state[WS_ERROR] = refusal
        return
    model_bytes = model_file.getvalue()  # the uploader's own bytes, not a copy
    bar = st.progress(0.0, text="Checking the ZIP…")
    start = time.perf_counter()
    try:
        pre = Preprocessing(
            resize=int(resize) or None,
            crop=int(crop) or None,
            channels=int(channels),
            mean=_numbers(mean, "mean"),
            std=_numbers(std, "std"),
        )
        images, model_worker, built, key, start = _index_folder(
            bar, start, model_file, zip_file, model_bytes, pre, kind, architecture, output
        )
    except (WorkspaceError, user_models.UserModelError) as err:
        st.session_state[WS_ERROR] = f"{model_file.name} and {zip_file.name}: {err}"
        return
    finally:
        bar.empty()
    _keep_folder(model_file, model_bytes, architecture, images, model_worker, built, key, start)


def _folder_intro() -> None:
    st.markdown("### Your model on your own images")
    st.markdown(
        "Any image classifier, on a **ZIP of an ImageFolder**: one folder per class, the "
        "folder names are the class names (sorted), as in torchvision. The images are "
        "prepared as you say below, the model is checked and then runs on every image in its "
        "sandbox, one forward and one backward pass each, as `python -m workspace.index` "
        "does. Then Explore, Misclassifications and Data-set sensitivity show it. Upload the "
        f"model as a torch.export program with a dynamic batch size (`{EXPORT_EXAMPLE}`) or "
        "as TorchScript or ONNX; its output must be one score per class."
    )
    st.caption(
        f"Limits: a model file of at most {limits.MODEL_MB} MB, a ZIP of at most "
        f"{limits.ZIP_MB} MB and "
        f"{folder_upload.MAX_FILES:,} files, {budget.share('workspaces') >> 20} MB of prepared "
        f"images and maps, {folder_upload.ZIP_DECODE_PIXELS // 10**6:,} million pixels decoded "
        "in all; nothing is written to the server's disk, and the server keeps the last "
        f"{sources.MAX_UPLOADED} such workspaces in memory (as the memory budget allows). For "
        "bigger data sets, index on "
        "your own machine and start the dashboard on the result: "
        "`python -m workspace.index …` then `python -m dashboard --workspace W`."
    )


def _folder_form() -> tuple[bool, tuple]:
    """The folder form, its settings at their defaults after a success: (sent, its values)."""
    defaults = {WS_RESIZE: 0, WS_CROP: 0, WS_CHANNELS: 3, WS_MEAN: "0", WS_STD: "1"}
    if st.session_state.get(WS_RESET):  # set by the last success, before these widgets draw
        st.session_state[WS_USED] = st.session_state.pop(WS_RESET)
        st.session_state.update(defaults)
    for key, default in defaults.items():
        st.session_state.setdefault(key, default)
    with st.form("ws_form", border=True):
        c1, c2 = st.columns(2)
        model_file = c1.file_uploader(
            f"Model file (.pt2, .pt, .onnx, .safetensors; up to {limits.MODEL_MB} MB)",
            key=WS_MODEL_FILE,
            max_upload_size=limits.MODEL_MB,
        )
        zip_file = c2.file_uploader(
            f"Your images: a ZIP of class folders (up to {limits.ZIP_MB} MB)",
            type=["zip"],
            key=WS_ZIP,
            max_upload_size=limits.ZIP_MB,
        )
        c1, c2, c3, c4, c5 = st.columns(5)
        kind = c1.selectbox(
            "Kind of file", ("auto", "export", "torchscript", "onnx", "state_dict", "safetensors"),
            key=WS_KIND, format_func=KIND_LABELS.get,
        )  # fmt: skip
        architecture = c1.selectbox(
            "Architecture (weights only)",
            ("", *named_weights.architecture_names()),
            key=WS_ARCH,
            format_func=lambda name: name or WEIGHTS_LABEL,
            help="For a state dict or safetensors file: the registry's (" + ", ".join(
                pretrained.ARCHITECTURES) + "), every torchvision classifier by its builder's "
            "name (resnet18, vit_b_16, …), and timm's models where timm is installed "
            "(otherwise: " + named_weights.INSTALL_TIMM + "). Type to search. The number of "
            "classes comes from the weights' last layer.",
        )  # fmt: skip
        output = c1.text_input("Output (tuple or dict outputs)", key=WS_OUTPUT, help=OUTPUT_HELP)
        channels = c2.selectbox(
            "Colours", (3, 1), key=WS_CHANNELS, format_func={3: "RGB", 1: "grey"}.get
        )
        resize = c3.number_input(
            "Resize shorter side to (px; 0 keeps the size)", 0, 4096, key=WS_RESIZE
        )
        crop = c4.number_input("Centre crop (px; 0: none)", 0, 4096, key=WS_CROP)
        with c5:
            mean = st.text_input(
                "Normalise: mean",
                key=WS_MEAN,
                help="One value, or one per channel: 0.485, 0.456, 0.406",
            )
            std = st.text_input(
                "std", key=WS_STD, help="One value, or one per channel: 0.229, 0.224, 0.225"
            )
        # fmt: skip
        submitted = st.form_submit_button("Check and index", type="primary", key=WS_SUBMIT)
    return submitted, (
        model_file, zip_file, kind, resize, crop, channels, mean, std, architecture, output
    )  # fmt: skip


def _folder_result() -> None:
    """The last indexed workspace: what it holds, the files skipped, Explore and the CSV."""
    key = st.session_state.get(WS_ACCEPTED)
    src = sources.uploaded().get(key) if key else None
    if src is None:
        return
    info = cache.model_info(src.model)
    st.success(
        f"Indexed **{len(src):,} images** of {len(src.classes):,} classes "
        f"({src.shape[0]} × {src.shape[1]} × {src.shape[2]}) in "
        f"{st.session_state.get(WS_SECONDS, 0):.1f} s: accuracy {info.test_accuracy:.2%}, "
        f"{info.seconds_per_example * 1000:.0f} ms for one image."
    )
    if st.session_state.get(WS_USED):
        st.caption(
            f"Prepared as: {render.plain(st.session_state[WS_USED])}. The form above is back "
            "to its defaults (Colours: RGB, no resize or crop) for your next upload."
        )
    problems = st.session_state.get(WS_PROBLEMS) or []
    if problems:
        n = len(problems)
        st.warning(f"{n:,} file{'s' if n != 1 else ''} of the ZIP {'were' if n != 1 else 'was'} "
                   "skipped:")  # fmt: skip
        st.dataframe(pd.DataFrame(problems), hide_index=True, key=WS_PROBLEM_TABLE)
    c1, c2 = st.columns(2)
    if c1.button("Open it in Explore", key=WS_EXPLORE, on_click=open_in_explore,
                 args=(src.model, key)):  # fmt: skip
        st.switch_page("page_files/explore.py")
    c2.download_button(
        "predictions.csv",
        st.session_state.get(WS_CSV, ""),
        "predictions.csv",
        "text/csv",
        key=WS_DOWNLOAD,
        on_click="ignore",
    )


def folder_section() -> None:
    """Your model on your own images: a ZIP of an ImageFolder becomes a workspace."""
    _folder_intro()
    send(_folder_form, _accept_folder, WS_ACCEPTED)
    if st.session_state.get(WS_ERROR):
        st.error(
            render.plain(st.session_state[WS_ERROR])
            + " Everything you added before is still available."
        )
    _folder_result()
