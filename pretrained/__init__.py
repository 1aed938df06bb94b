"""The model zoo, and the other models: users' files, workspaces, and the sandbox they run in.

Four rooms share this package, apart by module (they may become packages of their own):

- **The zoo.** Real models trained on real MNIST and Fashion-MNIST, their committed weights,
  cards and recipes, and the test sets they are measured on (`registry`, `architectures`,
  `data`, `train`, `evaluation`, `test_predictions`, `cards`, `imagenet`, `tabular`).
- **Users' model files.** Reading a TorchScript, `torch.export`, ONNX or weights file, behind
  the gate that refuses unsafe ones (`model_files`, `gate`, `user_models`, `onnx_models`,
  `safetensors_file`, `named_weights`).
- **The sandbox.** Untrusted models run in worker processes with bounded memory, time and
  system calls (`worker`, `worker_main`, `worker_limits`, `sandbox`, `jobs`, `wire`).
- **Workspaces.** Any image classifier on any image folder: preparing images, indexing them
  under `torchrun`, ZIP uploads and the metric bench's CLI (`workspace`, `preparation`,
  `index`, `folder_upload`, `images`, `bench`, `export_maps`, `tables`).

Every model and data set is named by a key whose kind `kinds.parse` reads.

    >>> import pretrained
    >>> pretrained.list_models("mnist")
    ['mnist-linear', 'mnist-mlp', 'mnist-cnn', 'mnist-cnn-bn', 'mnist-vit']
    >>> model = pretrained.load_model("mnist-cnn")             # eval mode, weights_only load
    >>> x, y = pretrained.load_dataset("mnist", "test")[:8]    # (8, 1, 28, 28) in [0, 1], (8,)
    >>> model(x).shape
    torch.Size([8, 10])

The zoo's models take raw [0, 1] pixels; normalisation is their first layer, so input
gradients are with respect to pixels. Never imports streamlit or the dashboard.
"""

from typing import TYPE_CHECKING

from saliency._lazy import lazy_exports

from .data import (
    CLASS_NAMES,
    DATASETS,
    SPLITS,
    Dataset,
    IdxFormatError,
    load_dataset,
    read_idx,
    write_idx,
)
from .registry import ModelInfo, list_models, model_info

# Where the other public names live. They are imported when first used, not here: reading the
# registry's cards and the bundled test sets (the dashboard's first page) must not import
# torch, which takes seconds.
_FROM = {
    "architectures": ("ARCHITECTURES", "Normalize", "build_model", "count_parameters"),
    "evaluation": ("Evaluation", "confusion_matrix", "disagreements", "evaluate",
                   "least_confident_correct", "mistakes", "ranked_disagreements",
                   "ranked_least_confident", "ranked_mistakes"),
    "registry": ("default_device", "load_model", "model_from_weights"),
    "user_models": ("UserModelError", "UserModelInfo", "accept_upload", "load_user_model"),
}  # fmt: skip
__getattr__, __dir__ = lazy_exports(globals(), _FROM)


if TYPE_CHECKING:  # what the names are, for type checkers and editors
    from .architectures import ARCHITECTURES, Normalize, build_model, count_parameters
    from .evaluation import (
        Evaluation,
        confusion_matrix,
        disagreements,
        evaluate,
        least_confident_correct,
        mistakes,
        ranked_disagreements,
        ranked_least_confident,
        ranked_mistakes,
    )
    from .registry import default_device, load_model, model_from_weights
    from .user_models import UserModelError, UserModelInfo, accept_upload, load_user_model

__all__ = [
    "ARCHITECTURES",
    "CLASS_NAMES",
    "DATASETS",
    "SPLITS",
    "Dataset",
    "Evaluation",
    "IdxFormatError",
    "ModelInfo",
    "UserModelError",
    "UserModelInfo",
    "Normalize",
    "accept_upload",
    "build_model",
    "confusion_matrix",
    "count_parameters",
    "disagreements",
    "default_device",
    "evaluate",
    "least_confident_correct",
    "list_models",
    "load_dataset",
    "load_model",
    "load_user_model",
    "mistakes",
    "model_from_weights",
    "model_info",
    "ranked_disagreements",
    "ranked_least_confident",
    "ranked_mistakes",
    "read_idx",
    "write_idx",
]
