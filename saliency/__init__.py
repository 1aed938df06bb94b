"""Sensitivity maps for PyTorch models: which inputs does a decision depend on?

The sensitivity of output i to input j is the Jacobian entry J_ij(x) = d f_i(x) / d x_j,
computed here by automatic differentiation (one backward pass), never by nudging inputs. For an
image classifier, |d score_c / d x| per pixel is the saliency map of class c
(Simonyan et al. 2013).

    >>> import saliency
    >>> s = saliency.gradients(model, x, target=3)      # |d logit_3 / dx|, shaped like x
    >>> J = saliency.jacobian(model, x)                  # (N, K, *x.shape[1:]), signed
    >>> avg = saliency.average_sensitivity(model, loader, by_class=True)   # (K, *x.shape[1:])

Every function evaluates the model in eval mode (restoring each submodule's flag), never writes
parameters' `.grad`, and leaves its input unmodified. What a map describes is the model, not the
world; see the README for the caveats.
"""

from typing import TYPE_CHECKING

from ._lazy import lazy_exports
from .names import FAMILIES, METHOD_INFO, METHODS, SCORES, MethodInfo, method_info, methods

# Where each public name lives. They are imported when first used, not here: `import saliency`
# (or `saliency.display`, numpy only) must not import torch, which takes seconds, for a caller
# that only draws maps already computed (the dashboard's first page).
_FROM = {
    "_average": ("SensitivitySummary", "average_sensitivity", "sensitivity_summary"),
    "_gradients": ("finite_differences", "gradients", "jacobian"),
    "_methods": ("attribute", "class_maps", "contrast"),
    "_tabular": ("FeatureRanking", "column_differences", "correlated_pairs", "feature_ranking",
                 "rank_flips", "ranking_from_jacobian"),
    "_layers": ("Layer", "find_layer", "layers"),
    "notebook": ("widget",),
    "_validate": ("eval_mode",),
    "agreement": ("Agreement", "Ceiling", "alignment", "alignment_interval", "blurred_rho",
                  "class_agreement", "dice_iou_top", "null_rho", "split_half_ceiling"),
    "cam": ("CAM", "cam_map"),
    "relevance": ("lrp",),
    "transformer": ("attention_rollout", "gradient_rollout"),
    "faithfulness": ("Curve", "blur", "deletion_curve", "insertion_curve"),
    "sanity": ("LayerOrder", "RandomisedStep", "SanityStep", "cascade",
               "cascading_randomisation", "layer_order", "sanity_check"),
    "taylor": ("Nudge", "nudge"),
}  # fmt: skip
__getattr__, __dir__ = lazy_exports(globals(), _FROM)


if TYPE_CHECKING:  # what the names are, for type checkers and editors
    from ._average import SensitivitySummary, average_sensitivity, sensitivity_summary
    from ._gradients import finite_differences, gradients, jacobian
    from ._layers import Layer, find_layer, layers
    from ._methods import attribute, class_maps, contrast
    from ._tabular import (
        FeatureRanking,
        column_differences,
        correlated_pairs,
        feature_ranking,
        rank_flips,
        ranking_from_jacobian,
    )
    from ._validate import eval_mode
    from .agreement import (
        Agreement,
        Ceiling,
        alignment,
        alignment_interval,
        blurred_rho,
        class_agreement,
        dice_iou_top,
        null_rho,
        split_half_ceiling,
    )
    from .cam import CAM, cam_map
    from .faithfulness import Curve, blur, deletion_curve, insertion_curve
    from .notebook import widget
    from .relevance import lrp
    from .sanity import (
        LayerOrder,
        RandomisedStep,
        SanityStep,
        cascade,
        cascading_randomisation,
        layer_order,
        sanity_check,
    )
    from .taylor import Nudge, nudge
    from .transformer import attention_rollout, gradient_rollout

__all__ = [
    "Agreement",
    "CAM",
    "Ceiling",
    "FAMILIES",
    "METHODS",
    "METHOD_INFO",
    "SCORES",
    "Layer",
    "MethodInfo",
    "Curve",
    "FeatureRanking",
    "LayerOrder",
    "RandomisedStep",
    "SensitivitySummary",
    "Nudge",
    "SanityStep",
    "alignment",
    "alignment_interval",
    "attention_rollout",
    "attribute",
    "average_sensitivity",
    "blur",
    "blurred_rho",
    "cam_map",
    "cascade",
    "cascading_randomisation",
    "class_agreement",
    "class_maps",
    "column_differences",
    "contrast",
    "correlated_pairs",
    "deletion_curve",
    "dice_iou_top",
    "eval_mode",
    "feature_ranking",
    "find_layer",
    "finite_differences",
    "gradient_rollout",
    "gradients",
    "insertion_curve",
    "jacobian",
    "layer_order",
    "layers",
    "lrp",
    "method_info",
    "methods",
    "sensitivity_summary",
    "nudge",
    "null_rho",
    "rank_flips",
    "ranking_from_jacobian",
    "sanity_check",
    "widget",
    "split_half_ceiling",
]
__version__ = "0.1.0"
