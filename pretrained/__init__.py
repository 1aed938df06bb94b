"""Real models trained on real MNIST and Fashion-MNIST, with the test sets they are measured on.

    >>> import pretrained
    >>> pretrained.list_models("mnist")
    ['mnist-linear', 'mnist-mlp', 'mnist-cnn', 'mnist-cnn-bn']
    >>> model = pretrained.load_model("mnist-cnn")             # eval mode, weights_only load
    >>> x, y = pretrained.load_dataset("mnist", "test")[:8]    # (8, 1, 28, 28) in [0, 1], (8,)
    >>> model(x).shape
    torch.Size([8, 10])

Models take raw [0, 1] pixels; normalisation is their first layer, so input gradients are
with respect to pixels. Never imports streamlit or the saliency package.
"""

from .architectures import ARCHITECTURES, Normalize, build_model, count_parameters
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
from .registry import (
    ModelInfo,
    default_device,
    list_models,
    load_model,
    model_from_weights,
    model_info,
)
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
