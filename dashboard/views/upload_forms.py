"""What the Your model page's two forms share: the kinds of model file and their help, the
error box either form clears when sent, what a form last checked, and opening an accepted
model in Explore. The model form is `your_model`, the folder form `your_folder`."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from dashboard import state
from dashboard import upload_limits as limits

# Session keys: each form's error box (a form sent clears both).
UM_ERROR = "um_error"
WS_ERROR = "ws_error"

KIND_LABELS = {
    "auto": "detect from the file",
    "export": "torch.export program (torch.export.save)",
    "torchscript": "TorchScript (torch.jit.save; deprecated by torch)",
    "state_dict": "state dict for a registry architecture (torch.save)",
    "onnx": "ONNX (torch.onnx.export, or any framework's exporter)",
    "safetensors": "safetensors weights for an architecture (what the Hugging Face hub serves)",
}
SAFETENSORS_NOTE = (
    "Weights alone (a state dict, or a safetensors file: "
    "`safetensors.torch.save_file(model.state_dict(), 'm.safetensors')`) run the "
    "architecture's own code, which you name: on this form one of the registry's; on your own "
    "images any torchvision classifier too, or a timm model where timm is installed. Nothing "
    "in the file is run."
)
EXPORT_EXAMPLE = (
    "torch.export.save(torch.export.export(model, (x,), "
    'dynamic_shapes=({0: torch.export.Dim("batch")},)), "m.pt2")'
)
ONNX_NOTE = (
    "ONNX files from any framework are converted to PyTorch (by onnx2torch, in the sandbox): "
    "from torch, `torch.onnx.export(model, (x,), 'm.onnx', dynamo=False, "
    "dynamic_axes={'x': {0: 'batch'}}, input_names=['x'])`. Weights must be inside the file."
)
TORCHSCRIPT_NOTE = (
    "TorchScript (`torch.jit.save(torch.jit.script(model), 'm.pt')`, or traced) is still "
    "accepted, but torch has deprecated it: prefer `torch.export`."
)
# Words of a model that ran and failed on an image (not of a file that couldn't be read).
RAN_AND_FAILED = ("failed on one", "failed on a batch", "returned shape", "returned a ")
MNIST_FORM_NOTE = (
    " This form is for models of 28 × 28 greyscale MNIST or Fashion-MNIST images: a model "
    "for your own images (another size, or colour) goes in the form below, “Your model on "
    "your own images”, with a ZIP of them."
)
DATASET_LABELS = {"mnist": "MNIST digits", "fashion-mnist": "Fashion-MNIST"}
OUTPUT_HELP = (
    "For a model that returns a tuple, named tuple or dict (torchvision's GoogLeNet, a model "
    "returning (features, logits)): the entry that holds the class scores, by position (0, "
    "1, …) or by name (logits). Empty: the output itself, or its only (N, K) entry."
)


def open_in_explore(name: str, dataset: str) -> None:
    state.put(state.DATASET, dataset)
    state.put(state.MODEL, name)


def send(form: Callable[[], tuple[bool, tuple]], accept: Callable, accepted: str) -> None:
    """Draw a form (`form()` returns whether it was sent and its values) and check what was
    sent (`accept(*values)`). A model or data set accepted (`accepted` set) reruns the page, so
    that the sidebar, drawn before this page, lists it."""
    submitted, values = form()
    if submitted:
        accept(*values)
        if st.session_state.get(accepted):
            st.rerun()


def clear_errors() -> None:
    """A form sent again starts from a clean page: no box of an earlier attempt stays."""
    for key in (UM_ERROR, WS_ERROR):
        st.session_state[key] = None


def unchanged(last_sent: str, files: tuple, settings: tuple) -> bool:
    """True when a form (whose key `last_sent` holds what it last checked) is sent with the very
    files and settings it last checked: what the page sees when the user's new file was over
    the uploader's limit and never sent (the uploader keeps its earlier file), so that file must
    not be checked again in its place."""
    sent = (tuple(getattr(f, "file_id", None) for f in files), settings)
    seen = st.session_state.get(last_sent)
    st.session_state[last_sent] = sent
    return sent == seen


def same_file_again(name: str, what: str, mb: int) -> str:
    return (
        f"{name} was already checked with these settings. If you chose another file and the "
        f"box marks it in red, it was not sent: {limits.not_sent(what, mb)}"
    )
