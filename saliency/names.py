"""The names the library accepts for a score, a method and a bench metric, importable without
torch (a page that only lists them, such as the dashboard's first page, needs nothing else).

`METHOD_INFO` is the one registry of attribution methods: `attribute`, `class_maps` and
`contrast` dispatch through it, and a user interface groups its picker by `family` and says
why a method can't apply from `needs`. Adding a method is one entry here: its function is named
as "module:function" inside this package and imported only when first used.
"""

from __future__ import annotations

from dataclasses import dataclass

SCORES = ("logit", "probability", "log_probability")

# `saliency.bench`'s metrics: those that read one map per image, then those that run the method.
MAP_METRICS = (
    "sparseness",
    "complexity",
    "deletion_auc",
    "insertion_auc",
    "road_morf",
    "road_lerf",
)
METHOD_METRICS = ("max_sensitivity", "random_logit", "model_randomisation")
METRICS = MAP_METRICS + METHOD_METRICS

# The families, in the order a picker lists them.
FAMILIES = (
    "pixel gradients",
    "layer maps (CAM)",
    "perturbation",
    "relevance (LRP)",
    "transformer",
)

# What a method needs from a model beyond being differentiable, and the plain-English reason
# a user interface gives when the model lacks it.
NEEDS = {
    "": "",
    "spatial layer": "no spatial layer: an MLP has no Grad-CAM",
    "image": "needs an image batch (N, C, H, W)",
    "transformer": "needs a transformer",
    "lrp rules": "has a layer LRP has no rule for (attention, LayerNorm)",
}


@dataclass(frozen=True)
class MethodInfo:
    """What a user interface needs to know about a method before running it.

    `function`: "module:function" in this package, called as
    `function(model, x, target, *, absolute, score, output, **options)` and returning a map
    shaped like `x`. `all_classes`: optionally a "module:function" called as
    `function(model, x, classes, *, absolute, score, output, **options)` returning
    `(N, C, *x.shape[1:])` faster than one call per class (one forward, a backward from the
    layer per class); without it `class_maps` runs `function` once on the batch repeated per
    class. `layer`: whether the method takes `layer=`. `needs`: a key of `NEEDS`. `has_class`:
    whether the map depends on the target class (so every-class grids and contrasts apply).
    `signed`: whether the map's natural sign carries meaning (`absolute=None` keeps it).
    """

    name: str
    label: str
    family: str
    function: str
    paper: str
    reference: str = ""
    all_classes: str = ""
    layer: bool = False
    needs: str = ""
    has_class: bool = True
    signed: bool = False

    @property
    def why_not(self) -> str:
        """The sentence a user interface shows when a model lacks what the method needs."""
        return NEEDS[self.needs] if self.needs else ""


def _entries(*infos: MethodInfo) -> dict[str, MethodInfo]:
    for info in infos:
        assert info.family in FAMILIES and info.needs in NEEDS, info
    return {info.name: info for info in infos}


_SMILKOV = "Smilkov et al. 2017, SmoothGrad"
METHOD_INFO: dict[str, MethodInfo] = _entries(
    MethodInfo(
        "gradient",
        "Gradient",
        "pixel gradients",
        "_methods:_PIXEL",
        "Simonyan et al. 2013",
        "finite differences; torch.autograd.functional.jacobian",
    ),
    MethodInfo("smoothgrad", "SmoothGrad", "pixel gradients", "_methods:_PIXEL", _SMILKOV),
    MethodInfo("smoothgrad_sq", "SmoothGrad²", "pixel gradients", "_methods:_PIXEL", _SMILKOV),
    MethodInfo("vargrad", "VarGrad", "pixel gradients", "_methods:_PIXEL", "Adebayo et al. 2018"),
    MethodInfo(
        "input_x_gradient",
        "Input × Gradient",
        "pixel gradients",
        "_methods:_PIXEL",
        "Shrikumar et al. 2016",
        signed=True,
    ),
    MethodInfo(
        "integrated_gradients",
        "Integrated Gradients",
        "pixel gradients",
        "_methods:_PIXEL",
        "Sundararajan et al. 2017",
        "completeness: sum of the map = f(x) - f(baseline)",
        signed=True,
    ),
    MethodInfo(
        "grad_cam",
        "Grad-CAM",
        "layer maps (CAM)",
        "cam:grad_cam",
        "Selvaraju et al. 2017",
        "pytorch-grad-cam 1.5.7 GradCAM",
        all_classes="cam:grad_cam_classes",
        layer=True,
        needs="spatial layer",
    ),
    MethodInfo(
        "grad_cam_pp",
        "Grad-CAM++",
        "layer maps (CAM)",
        "cam:grad_cam_pp",
        "Chattopadhay et al. 2018",
        "pytorch-grad-cam 1.5.7 GradCAMPlusPlus",
        all_classes="cam:grad_cam_pp_classes",
        layer=True,
        needs="spatial layer",
    ),
    MethodInfo(
        "score_cam",
        "Score-CAM",
        "layer maps (CAM)",
        "cam:score_cam",
        "Wang et al. 2020",
        "pytorch-grad-cam 1.5.7 ScoreCAM",
        all_classes="cam:score_cam_classes",
        layer=True,
        needs="spatial layer",
    ),
    MethodInfo(
        "layer_cam",
        "LayerCAM",
        "layer maps (CAM)",
        "cam:layer_cam",
        "Jiang et al. 2021",
        "pytorch-grad-cam 1.5.7 LayerCAM",
        all_classes="cam:layer_cam_classes",
        layer=True,
        needs="spatial layer",
    ),
    MethodInfo(
        "guided_backprop",
        "Guided Backprop",
        "pixel gradients",
        "guided:guided_backprop",
        "Springenberg et al. 2015",
        "Captum 0.9 GuidedBackprop",
        all_classes="guided:guided_backprop_classes",
        signed=True,
    ),
    MethodInfo(
        "guided_grad_cam",
        "Guided Grad-CAM",
        "layer maps (CAM)",
        "guided:guided_grad_cam",
        "Selvaraju et al. 2017",
        "guided backprop × upsampled Grad-CAM, each checked against its reference",
        all_classes="guided:guided_grad_cam_classes",
        layer=True,
        needs="spatial layer",
        signed=True,
    ),
    MethodInfo(
        "occlusion",
        "Occlusion",
        "perturbation",
        "perturbation:occlusion",
        "Zeiler & Fergus 2014",
        "Captum 0.9 Occlusion",
        all_classes="perturbation:occlusion_classes",
        needs="image",
        signed=True,
    ),
    MethodInfo(
        "lrp",
        "LRP",
        "relevance (LRP)",
        "relevance:lrp_method",
        "Bach et al. 2015; composite: Montavon et al. 2019",
        "Captum 0.9 LRP on the same rules",
        needs="lrp rules",
        signed=True,
    ),
    MethodInfo(
        "attention_rollout",
        "Attention rollout",
        "transformer",
        "transformer:attention_rollout_method",
        "Abnar & Zuidema 2020",
        "the paper's formula written out in the test",
        needs="transformer",
        has_class=False,
    ),
    MethodInfo(
        "gradient_rollout",
        "Gradient rollout",
        "transformer",
        "transformer:gradient_rollout_method",
        "Chefer et al. 2021",
        "the paper's formula written out in the test",
        needs="transformer",
    ),
)

# The pixel-gradient methods, which every differentiable model supports (the dashboard's
# picker and the sandboxed worker's warm-up list these; `METHOD_INFO` holds every method).
METHODS = tuple(name for name, info in METHOD_INFO.items() if info.function.startswith("_methods"))


def method_info(name: str) -> MethodInfo:
    """The registry entry of `name`, or a ValueError listing the methods."""
    try:
        return METHOD_INFO[name]
    except (KeyError, TypeError):
        raise ValueError(f"method must be one of {', '.join(METHOD_INFO)}; got {name!r}") from None


def methods(family: str | None = None) -> tuple[str, ...]:
    """Every method's name, or those of one family, in the registry's order."""
    if family is not None and family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}; got {family!r}")
    return tuple(n for n, i in METHOD_INFO.items() if family is None or i.family == family)
