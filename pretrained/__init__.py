"""The model zoo: real models trained on real MNIST and Fashion-MNIST, a table model, their
committed weights, cards and recipes, and the test sets they are measured on (`registry`,
`architectures`, `data`, `train`, `evaluation`, `test_predictions`, `cards`, `tabular`, and
`tables`, the table model's recipe).

Users' files and models are the sandbox's (`sandbox`); a model with its own pictures, ImageNet
and tables are the workspace's (`workspace`).

    >>> import pretrained
    >>> pretrained.list_models("mnist")
    ['mnist-linear', 'mnist-mlp', 'mnist-cnn', 'mnist-cnn-bn', 'mnist-vit']
    >>> model = pretrained.load_model("mnist-cnn")             # eval mode, weights_only load
    >>> x, y = pretrained.load_dataset("mnist", "test")[:8]    # (8, 1, 28, 28) in [0, 1], (8,)
    >>> model(x).shape
    torch.Size([8, 10])

The zoo's models take raw [0, 1] pixels; normalisation is their first layer, so input
gradients are with respect to pixels. Never imports streamlit, `sandbox`, `workspace` or the
dashboard.
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
    "registry": ("default_device", "load_model"),
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
    from .registry import default_device, load_model

__all__ = [
    "ARCHITECTURES",
    "CLASS_NAMES",
    "DATASETS",
    "SPLITS",
    "Dataset",
    "Evaluation",
    "IdxFormatError",
    "ModelInfo",
    "Normalize",
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
    "mistakes",
    "model_info",
    "ranked_disagreements",
    "ranked_least_confident",
    "ranked_mistakes",
    "read_idx",
    "write_idx",
]
