"""What Explore shows for one image, model and settings, computed and nothing drawn
(`Explained`), and the byte-bounded store of the latest answers (`explained`). Split from
`dashboard.views.explore`, which re-exports every name (issue 31)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import saliency
from dashboard import budget, cache, lru
from dashboard.rate_limits import EXPENSIVE_METHODS
from dashboard.render import Style
from dashboard.views.explore_controls import ALL_CLASSES_UP_TO, TOP_CLASSES, UNSIGNED

# Values in an image (3 × 129 × 129) above which an expensive method's maps are only those the
# view needs: SmoothGrad's 50 passes of a 224 × 224 ResNet-18 take 7 s of a core per class.
LARGE_INPUT = 50_000


def few_maps(method: str, image: np.ndarray) -> bool:
    """An expensive method (many passes per class) on a large image: the maps of the target,
    the contrast's other class and the true class only, one view at a time server-wide
    (`rate_limits.EXPENSIVE`), as the explore route computes them."""
    return method in EXPENSIVE_METHODS and image.size > LARGE_INPUT


def _maps_shown(probs: np.ndarray, target: int, versus: int, true: int | None, few=False):
    """The classes whose maps are computed: with `few` (`few_maps`), the target, the
    contrast's other class and the true class; else all K up to ALL_CLASSES_UP_TO, or the
    TOP_CLASSES most probable and those three (never the K-class Jacobian of a 1000-class
    model)."""
    k = len(probs)
    if few:
        chosen = list(dict.fromkeys(c for c in (target, versus, true) if c is not None))
        return tuple(sorted(chosen)), chosen
    if k <= ALL_CLASSES_UP_TO:
        return None, list(range(k))
    top = [int(c) for c in np.argsort(-probs)[:TOP_CLASSES]]
    extra = [c for c in (target, versus, true) if c is not None and c not in top]
    chosen = top + list(dict.fromkeys(extra))
    return tuple(sorted(chosen)), chosen


def _class_maps(model_name, image, method, score, signed, asked, layer=""):
    """`(maps, sent, of_signed)`: the maps shown, and what the panel gets. A vanilla gradient of
    a one-channel image is one Jacobian whichever the sign: its absolute map is |signed map|
    (bit for bit what `absolute=True` computes), so the panel gets the signed maps once and a
    switch between the two needs neither new gradients nor new maps."""
    if method == "gradient" and image.shape[0] == 1:
        raw = cache.class_maps(model_name, image, method, score, False, asked)
        return (raw if signed else np.abs(raw)), raw, not signed
    computed = cache.class_maps(model_name, image, method, score, not signed, asked, layer)
    return computed, computed, False


@dataclass(frozen=True)
class Explained:
    """What the view shows for one image, model and settings: computed, nothing drawn."""

    probs: np.ndarray
    pred: int
    true: int | None
    target: int
    versus: int  # the contrast's other class
    runner_up: int
    style: Style
    classes: list[int]  # the classes of `maps` (and of the rows of `sent`)
    grid_classes: list[int]
    maps: dict[int, np.ndarray]  # as shown: absolute or signed
    sent: np.ndarray  # what the panel gets (see `_class_maps`)
    of_signed: bool
    compare: dict[str, np.ndarray]  # other models' maps, on the same settings
    compare_targets: dict[str, int]
    lo: float
    hi: float
    diff: np.ndarray  # the contrast map, target minus versus
    from_maps: bool  # the contrast is a difference of two rows of `sent`

    @property
    def main(self) -> np.ndarray:
        return self.maps[self.target]


EXPLAINED_BYTES = budget.share("explained")  # the latest `explained` answers, by their bytes
# The view's keys that `explained` reads.
EXPLAINED_KEYS = ("model", "target", "method", "layer", "score", "sign", "cmap", "cmap_signed",
                  "alpha", "clip", "scale")  # fmt: skip
_explained = lru.store("explained")


def _arrays_of(ex: Explained) -> list[np.ndarray]:
    return [ex.probs, ex.sent, ex.diff, *ex.maps.values(), *ex.compare.values()]


def explained(view: dict, image: np.ndarray, true: int | None) -> Explained:
    """Every number the view shows for `image` under `view`'s model and settings: the latest
    answers are kept (up to EXPLAINED_BYTES, their arrays read-only), so a view seen again (a
    method or model switched back, another student on the same image, the explore route and
    the page's rerun) costs a lookup instead of the caches' hashing and copying. Keyed as those
    caches are: by model name, the image's bytes and the settings."""
    key = (
        *(view[k] for k in EXPLAINED_KEYS),
        tuple(view["compare"]),
        true,
        *cache.key_part(image),
    )
    ex = _explained.get(key)
    if ex is None:
        ex = _explained_now(view, image, true)
        arrays = _arrays_of(ex)
        for array in arrays:
            array.flags.writeable = False
        _explained.put(key, ex, sum(a.nbytes for a in arrays))
    return ex


def _explained_now(view: dict, image: np.ndarray, true: int | None) -> Explained:
    model_name = view["model"]
    probs = cache.probabilities(model_name, image)
    pred = int(probs.argmax())
    runner_up = int(np.argsort(-probs)[1])
    if view["target"] == "predicted":
        target = pred
    elif view["target"] == "true":
        target = pred if true is None else true
    else:
        target = int(view["target"])
    versus = pred if target != pred else runner_up

    method, score = view["method"], view["score"]
    signed = view["sign"] == "signed" and method not in UNSIGNED
    style = Style(
        signed=signed,
        cmap=view["cmap_signed"] if signed else view["cmap"],
        alpha=float(view["alpha"]),
        clip=float(view["clip"]),
        shared=view["scale"] == "shared",
    )
    few = few_maps(method, image)
    asked, grid_classes = _maps_shown(probs, target, versus, true, few)
    layer = view["layer"] if saliency.method_info(method).layer else ""
    computed, sent, of_signed = _class_maps(model_name, image, method, score, signed, asked,
                                            layer)  # fmt: skip
    classes = list(range(len(probs))) if asked is None else list(asked)
    maps = dict(zip(classes, computed, strict=True))
    compare, compare_targets = {}, {}
    for m in view["compare"]:
        if cache.method_facts(m, image.shape, method)["problem"]:
            continue  # said beside the comparison (`_compare_models`)
        p = cache.probabilities(m, image)
        t = int(p.argmax()) if view["target"] == "predicted" else target
        try:
            compare[m] = cache.class_maps(m, image, method, score, not signed, (t,))[0]
        except (ValueError, TypeError):
            if method in saliency.METHODS:
                raise
            continue  # refused when it ran (LRP without a rule for a layer): said there too
        compare_targets[m] = t
    on_screen = [maps[target], *(maps[k] for k in grid_classes), *compare.values()]
    lo, hi = style.range(on_screen if style.shared else [maps[target]])
    # The contrast of two classes: for a vanilla gradient of a one-channel image, the difference
    # of their Jacobian rows (what the panel computes too: any target, no new gradients).
    from_maps = method == "gradient" and image.shape[0] == 1
    if from_maps or not saliency.method_info(method).has_class:  # (a class-less map: zero)
        diff = sent[classes.index(target)] - sent[classes.index(versus)]
    else:
        diff = cache.contrast_map(model_name, image, target, versus, method, score, layer)
    return Explained(
        probs, pred, true, target, versus, runner_up, style, classes, grid_classes, maps, sent,
        of_signed, compare, compare_targets, lo, hi, diff, from_maps,
    )  # fmt: skip
