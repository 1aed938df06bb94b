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

from ._average import SensitivitySummary, average_sensitivity, sensitivity_summary
from ._gradients import finite_differences, gradients, jacobian
from ._methods import METHODS, attribute, class_maps, contrast
from ._tabular import (
    FeatureRanking,
    column_differences,
    correlated_pairs,
    feature_ranking,
    rank_flips,
    ranking_from_jacobian,
)
from ._validate import SCORES, eval_mode
from .faithfulness import Curve, blur, deletion_curve, insertion_curve
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

__all__ = [
    "METHODS",
    "SCORES",
    "Curve",
    "FeatureRanking",
    "LayerOrder",
    "RandomisedStep",
    "SensitivitySummary",
    "Nudge",
    "SanityStep",
    "attribute",
    "average_sensitivity",
    "blur",
    "cascade",
    "cascading_randomisation",
    "class_maps",
    "column_differences",
    "contrast",
    "correlated_pairs",
    "deletion_curve",
    "eval_mode",
    "feature_ranking",
    "finite_differences",
    "gradients",
    "insertion_curve",
    "jacobian",
    "layer_order",
    "sensitivity_summary",
    "nudge",
    "rank_flips",
    "ranking_from_jacobian",
    "sanity_check",
]
__version__ = "0.1.0"
