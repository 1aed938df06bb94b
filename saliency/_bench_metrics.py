"""The metric bench's metrics and controls, one value per image (`saliency.bench` is the
face: read its docstring). The table that scores methods and controls together is
`_bench_table`, which imports this module; nothing here imports it back."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Union

import numpy as np
import torch

from ._imputation import linear_imputation
from ._validate import (
    OutputSelector,
    Target,
    check_input,
    eval_mode,
    forward_scores,
    resolve_target,
)
from .faithfulness import blur, deletion_curve, insertion_curve
from .metrics import spearman

# A method: a registry name (`saliency.attribute`'s) or a callable (model, x, target) -> maps.
Method = Union[str, Callable[..., torch.Tensor]]  # noqa: UP007
# A seed: an int (image i draws from seed + i) or one int per image.
Seed = Union[int, Sequence[int]]  # noqa: UP007


def _seed_of(seed: Seed, i: int) -> int:
    """Image i's seed (see the module docstring)."""
    return int(seed) + i if np.ndim(seed) == 0 else int(seed[i])


def _check_seeds(seed: Seed, n: int) -> None:
    if np.ndim(seed) != 0 and len(seed) != n:
        raise ValueError(f"seed must be an int or one int per image: {n} images, {len(seed)} seeds")


# Which way each metric points: True when a higher value means a better map.
HIGHER_IS_BETTER = {
    "sparseness": True,
    "complexity": False,
    "deletion_auc": False,
    "insertion_auc": True,
    "road_morf": False,
    "road_lerf": True,
    "max_sensitivity": False,
    "random_logit": False,
    "model_randomisation": False,
}


def _flat_maps(maps: torch.Tensor, name: str = "maps") -> torch.Tensor:
    """`(N, D)` float64 |maps|, or a clear error for a map that can't be scored."""
    if not isinstance(maps, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(maps).__name__}")
    if maps.ndim < 2 or maps.shape[0] == 0:
        raise ValueError(f"{name} must be batch-first (N, ...), got shape {tuple(maps.shape)}")
    bad = int((~torch.isfinite(maps)).sum())
    if bad:
        raise ValueError(f"{name} contain {bad} non-finite values (NaN or inf): nothing to score")
    return maps.detach().reshape(maps.shape[0], -1).abs().double()


def _check_maps(maps: torch.Tensor, x: torch.Tensor) -> None:
    _flat_maps(maps)
    if maps.shape != x.shape:
        raise ValueError(f"maps must be shaped like x {tuple(x.shape)}, got {tuple(maps.shape)}")


def sparseness(maps: torch.Tensor) -> torch.Tensor:
    """Gini index of each map's absolute values (Chalasani et al. 2020, "Concise explanations of
    neural networks using adversarial training"): 0 for a uniform map, (D - 1) / D → 1 for one
    non-zero element out of D. Higher is better (a concise map). An all-zero map has no
    Gini index: NaN. `(N,)` float64.
    """
    a = _flat_maps(maps)
    flat = maps.detach().reshape(a.shape).abs()  # sorted in its own dtype: the same order
    if flat.device.type == "cpu" and flat.dtype in (torch.float32, torch.float64):
        a = torch.from_numpy(np.sort(flat.numpy(), axis=1)).double()  # ~10x torch.sort's speed
    else:
        a = torch.sort(a, dim=1).values  # (N, D) ascending
    d = a.shape[1]
    i = torch.arange(1, d + 1, dtype=torch.float64, device=a.device)
    total = a.sum(1)
    gini = ((2 * i - d - 1) * a).sum(1) / (d * total)
    return torch.where(total > 0, gini, torch.nan).cpu()


def complexity(maps: torch.Tensor) -> torch.Tensor:
    """Entropy of each map's absolute values as a distribution, p = |m| / sum |m| (Bhatt et al.
    2020, "Evaluating and aggregating feature-based model explanations"): 0 for one non-zero
    element, log D for a uniform map. Lower is better (a simpler map). 0·log 0 = 0; an all-zero
    map has no distribution: NaN. `(N,)` float64.
    """
    a = _flat_maps(maps)
    total = a.sum(1, keepdim=True)
    p = a / total.clamp_min(torch.finfo(torch.float64).tiny)
    h = -torch.where(p > 0, p * p.log(), 0.0).sum(1)
    return torch.where(total.squeeze(1) > 0, h, torch.nan).cpu()


def deletion_auc(
    model: Callable,
    x: torch.Tensor,
    target: Target,
    maps: torch.Tensor,
    *,
    steps: int = 56,
    baseline: torch.Tensor | float = 0.0,
    score: str = "probability",
    output: OutputSelector = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """Area under the deletion curve (Petsiuk et al. 2018, "RISE"): the target's probability as
    elements are set to `baseline`, largest |map| first. Lower is better. `(N,)` float64; the
    curve itself is `saliency.deletion_curve`."""
    _check_maps(maps, x)
    c = deletion_curve(
        model, x, maps.abs(), target, steps=steps, baseline=baseline, score=score,
        output=output, batch_size=batch_size,
    )  # fmt: skip
    return c.auc.double().cpu()


def insertion_auc(
    model: Callable,
    x: torch.Tensor,
    target: Target,
    maps: torch.Tensor,
    *,
    steps: int = 56,
    start: torch.Tensor | float | None = None,
    score: str = "probability",
    output: OutputSelector = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """Area under the insertion curve (Petsiuk et al. 2018, "RISE"): the target's probability as
    elements of `x` are revealed on `start` (default `blur(x)`), largest |map| first. Higher is
    better. `(N,)` float64; the curve itself is `saliency.insertion_curve`."""
    _check_maps(maps, x)
    start = blur(x) if start is None else start
    c = insertion_curve(
        model, x, maps.abs(), target, steps=steps, start=start, score=score, output=output,
        batch_size=batch_size,
    )  # fmt: skip
    return c.auc.double().cpu()


def _pixel_order(maps: torch.Tensor, most_first: bool) -> torch.Tensor:
    """`(N, H·W)` each pixel's place in the removal order (0 = removed first); channels summed,
    ties in index order."""
    pix = maps.detach().double().sum(1).flatten(1)  # (N, H·W)
    order = torch.argsort(pix, dim=1, descending=most_first, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return rank


# ROAD on CPU: (image, percentage) pairs per forward pass. mnist-cnn on one thread, 3,200 imputed
# copies: 8.8-9.2 ms an image in passes of 16 to 50, 9.4 in 100, 12.7-16.6 in 250: a pass of
# 250 allocates activations of ~25 MB each, which the allocator maps afresh every time (about
# 170,000 page faults per 3,200 copies against almost none in passes of 50), and which leave the
# caches. The imputation has its own chunk: 250 systems measured fastest (one run: 50: 13.4 ms an
# image, 100: 11.1, 250: 9.6, 500: 12.3, 1000: 14.6; another: 200: 10.3, 250: 10.1, 300: 10.2).
_ROAD_CPU_BATCH = 50
_IMPUTATION_ROWS = 250


def road_curve(
    model: Callable,
    x: torch.Tensor,
    target: Target,
    maps: torch.Tensor,
    *,
    order: str = "morf",
    percentages: Iterable[float] = range(1, 100, 2),
    noise: float = 0.01,
    score: str = "accuracy",
    seed: Seed = 0,
    output: OutputSelector = None,
    batch_size: int | None = None,
) -> torch.Tensor:
    """ROAD's curve (Rong et al. 2022, "A consistent and efficient evaluation strategy for
    attribution methods"): `(N, P)` float64, the score after removing each percentage of pixels.

    Pixels are ordered by the map (channels summed; `order` "morf": most relevant first, "lerf":
    least relevant first); int(H·W·p/100) of them are removed and filled by noisy linear
    imputation (`linear_imputation` plus N(0, `noise`²) in input units, image i's noise drawn
    from `seed + i`). `score` "accuracy": 1 when the model still predicts `target` (the paper's
    and Quantus's), or "probability" of `target`. `target` None: the class predicted at `x`.
    The imputed copies go through the model `batch_size` (image, percentage) pairs a pass;
    None: 50 on CPU (larger passes measured slower there), 256 elsewhere. The imputation
    solves max(250, `batch_size`) (image, percentage) systems at once, whole images a chunk.
    """
    _check_maps(maps, x)
    check_input(x)
    if x.ndim != 4:
        raise ValueError(f"x must be an image batch (N, C, H, W), got shape {tuple(x.shape)}")
    if order not in ("morf", "lerf"):
        raise ValueError(f"order must be 'morf' or 'lerf', got {order!r}")
    if score not in ("accuracy", "probability"):
        raise ValueError(f"score must be 'accuracy' or 'probability', got {score!r}")
    pct = torch.tensor(list(percentages), dtype=torch.float64)
    if pct.numel() == 0 or not bool(((pct > 0) & (pct < 100)).all()):
        raise ValueError("percentages must be in (0, 100) exclusive, at least one")
    n, c, h, w = x.shape
    _check_seeds(seed, n)
    counts = (h * w * pct / 100).long().to(x.device)  # (P,) as int(a_size * p / 100)
    rank = _pixel_order(maps, most_first=order == "morf")  # (N, H·W)
    gen = torch.Generator(device=x.device)
    if batch_size is None:
        batch_size = _ROAD_CPU_BATCH if x.device.type == "cpu" else 256
    per_chunk = max(1, max(batch_size, _IMPUTATION_ROWS) // len(pct))  # images per imputation
    scores = torch.empty(n, len(pct), dtype=torch.float64)
    with eval_mode(model), torch.no_grad():
        out, _ = forward_scores(model, x, score="probability", output=output)
        t = resolve_target(target, out)
        for i0 in range(0, n, per_chunk):
            i = torch.arange(i0, min(n, i0 + per_chunk), device=x.device).repeat_interleave(
                len(pct)
            )  # (B,) each image once per percentage
            k = counts.repeat(len(i) // len(pct))  # (B,)
            removed = (rank[i] < k.unsqueeze(1)).view(-1, h, w)
            filled = linear_imputation(x[i], removed)
            draws = []
            for j in range(i0, min(n, i0 + per_chunk)):
                gen.manual_seed(_seed_of(seed, j))
                draws.append(torch.randn((len(pct), c, h, w), generator=gen, device=x.device))
            eps = torch.cat(draws).to(x.dtype) * noise
            filled = torch.where(removed.unsqueeze(1), filled + eps, x[i])
            p = torch.cat(
                [forward_scores(model, f, score="probability", output=output)[1]
                 for f in filled.split(batch_size)]
            )  # fmt: skip
            if score == "accuracy":
                s = (p.argmax(1) == t[i]).double()
            else:
                s = p.gather(1, t[i].unsqueeze(1)).squeeze(1).double()
            scores[i0 : i0 + len(i) // len(pct)] = s.view(-1, len(pct)).cpu()
    return scores


def road(
    model: Callable, x: torch.Tensor, target: Target, maps: torch.Tensor, *, order: str = "morf",
    **options,
) -> torch.Tensor:  # fmt: skip
    """ROAD (Rong et al. 2022): the mean of `road_curve` over its percentages, `(N,)` float64,
    the area under the accuracy curve. MoRF (`order="morf"`): lower is better (removing what
    the map calls relevant should destroy the prediction); LeRF: higher is better."""
    return road_curve(model, x, target, maps, order=order, **options).mean(1)


def _explain(
    method: Method, model: Callable, x: torch.Tensor, t: torch.Tensor, options: dict | None
) -> torch.Tensor:
    if callable(method):
        return method(model, x, t, **(options or {})).detach()
    from ._methods import attribute

    return attribute(model, x, t, method=method, absolute=True, **(options or {})).detach()


def _targets(model: Callable, x: torch.Tensor, target: Target, output: OutputSelector):
    check_input(x)
    with eval_mode(model), torch.no_grad():
        out, _ = forward_scores(model, x, score="logit", output=output)
    return resolve_target(target, out), out.shape[1]


def max_sensitivity(
    model: Callable,
    x: torch.Tensor,
    target: Target = None,
    *,
    method: Method = "gradient",
    radius: float = 0.2,
    samples: int = 10,
    seed: Seed = 0,
    options: dict | None = None,
    output: OutputSelector = None,
    maps: torch.Tensor | None = None,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Max-Sensitivity (Yeh et al. 2019, "On the (in)fidelity and sensitivity of explanations"):
    max over `samples` draws of δ uniform in [-radius, radius]^D of ‖Φ(x + δ) − Φ(x)‖ / ‖Φ(x)‖
    (Frobenius norms, |maps| of `method`, the target fixed at x's). Lower is better. Image i's
    δ come from `seed + i`. `options` go to the method. An all-zero map: NaN. `(N,)` float64.
    `maps`: the method's maps at `x` for the target, when the caller has them already
    (Quantus's `a_batch`): not recomputed. The perturbed copies are explained `batch_size`
    images per call (whole samples of the N images; at least one sample a call); None: up to
    1024 on a GPU, N (one sample a call) on CPU, where larger batches measured slower.
    """
    t, _ = _targets(model, x, target, output)
    if samples < 1 or not radius > 0:
        raise ValueError(f"samples must be >= 1 and radius > 0, got {samples} and {radius}")
    _check_seeds(seed, x.shape[0])
    if maps is not None:
        _check_maps(maps, x)
    base = _explain(method, model, x, t, options) if maps is None else maps.detach()
    base = base.double().flatten(1)  # (N, D)
    gen = torch.Generator(device=x.device)
    deltas = []
    for i in range(x.shape[0]):
        gen.manual_seed(_seed_of(seed, i))
        u = torch.rand((samples, *x.shape[1:]), generator=gen, device=x.device, dtype=x.dtype)
        deltas.append((u * 2 - 1) * radius)
    delta = torch.stack(deltas, 1)  # (S, N, ...)
    n = x.shape[0]
    worst = torch.zeros(n, dtype=torch.float64, device=x.device)
    if batch_size is None:
        batch_size = 1024 if x.device.type == "cuda" else n
    per_call = max(1, batch_size // n)  # samples per explanation call: S·N images, in pieces
    for s in range(0, samples, per_call):
        g = min(per_call, samples - s)
        moved = (x + delta[s : s + g]).flatten(0, 1)  # (g·N, ...) sample-major
        m = _explain(method, model, moved, t.repeat(g), options).double().view(g, n, -1)
        worst = torch.maximum(worst, (m - base).norm(dim=2).amax(0))
    norm = base.norm(dim=1)
    return torch.where(norm > 0, worst / norm.clamp_min(1e-300), torch.nan).cpu()


def random_logit(
    model: Callable,
    x: torch.Tensor,
    target: Target = None,
    *,
    method: Method = "gradient",
    other: Target = None,
    similarity: str = "ssim",
    seed: Seed = 0,
    options: dict | None = None,
    output: OutputSelector = None,
    maps: torch.Tensor | None = None,
) -> torch.Tensor:
    """Random Logit (Sixt et al. 2020, "When explanations lie"): the similarity between the map
    for the target class and the map for another class, drawn uniformly from the others (image
    i's from `seed + i`; `other` gives them instead). `similarity` "ssim": SSIM of the two maps
    as images (channels reduced by max |value|, each divided by its maximum, data range 1;
    `saliency.metrics.ssim`), or "spearman". Lower is better: a map that explains the decision
    changes with the class. `maps`: the method's maps for the target, when the caller has them
    already (Quantus's `a_batch`): not recomputed. `(N,)` float64.
    """
    if similarity not in ("ssim", "spearman"):
        raise ValueError(f"similarity must be 'ssim' or 'spearman', got {similarity!r}")
    t, k = _targets(model, x, target, output)
    if k < 2:
        raise ValueError("random_logit needs a model with at least 2 classes")
    if other is None:
        _check_seeds(seed, x.shape[0])
        gen = torch.Generator()
        picks = []
        for i in range(x.shape[0]):
            gen.manual_seed(_seed_of(seed, i))
            picks.append(int(torch.randint(k - 1, (1,), generator=gen)))
        o = torch.tensor(picks, device=t.device)
        o = o + (o >= t).long()  # skip the target: uniform over the other k - 1 classes
    else:
        o = resolve_target(other, torch.empty(x.shape[0], k, device=t.device))
        if bool((o == t).any()):
            raise ValueError("other must differ from the target for every image")
    if maps is not None:
        _check_maps(maps, x)
    a = (_explain(method, model, x, t, options) if maps is None else maps.detach()).double()
    b = _explain(method, model, x, o, options).double()
    if similarity == "ssim":
        return _ssim_images(_as_images(a), _as_images(b)).cpu()
    a, b = a.cpu().numpy(), b.cpu().numpy()
    v = [spearman(p, q) for p, q in zip(a, b, strict=True)]
    return torch.tensor(v, dtype=torch.float64)


def _as_images(maps: torch.Tensor) -> torch.Tensor:
    """Maps `(N, C, H, W)` or `(N, H, W)` as images `(N, H, W)` float64 in [0, 1]: max |value|
    over channels, divided by its maximum (as the sanity check compares maps)."""
    if maps.ndim not in (3, 4):
        raise ValueError(
            f"similarity 'ssim' compares image maps (N, C, H, W) or (N, H, W), got shape "
            f"{tuple(maps.shape)}: use similarity='spearman'"
        )
    a = maps.abs().amax(1) if maps.ndim == 4 else maps.abs()
    top = a.flatten(1).amax(1).view(-1, 1, 1)
    return torch.where(top > 0, a / top.clamp_min(1e-300), a)


def _gaussian_matrix(n: int, sigma: float, radius: int, like: torch.Tensor) -> torch.Tensor:
    """`(n, n)`: `metrics._gaussian_filter` along one axis as a matrix (mirrored edges, numpy's
    'symmetric' padding), so that a whole batch is filtered by two matrix products."""
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (t / sigma) ** 2)
    w = w / w.sum()
    i = torch.arange(n).view(-1, 1)
    j = i + torch.arange(-radius, radius + 1).view(1, -1)  # (n, 2r + 1) before mirroring
    j = torch.where(j < 0, -j - 1, torch.where(j >= n, 2 * n - 1 - j, j))
    g = torch.zeros(n, n, dtype=torch.float64).index_put_((i.expand_as(j), j), w.expand_as(j),
                                                          accumulate=True)  # fmt: skip
    return g.to(like.device)


def _ssim_images(a: torch.Tensor, b: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    """`metrics.ssim_many(a, b, data_range=1.0)` in torch, the whole batch `(N, H, W)` at once
    on its device: `(N,)` float64."""
    radius = int(3.5 * sigma + 0.5)
    h, w = a.shape[1:]
    if min(h, w) <= 2 * radius:
        raise ValueError(f"maps of shape {(h, w)} are smaller than the {2 * radius + 1} window")
    gh, gw = _gaussian_matrix(h, sigma, radius, a), _gaussian_matrix(w, sigma, radius, a)
    stats = gh @ torch.stack([a, b, a * a, b * b, a * b]) @ gw.T  # (5, N, H, W)
    mu_a, mu_b, aa, bb, ab = stats
    c1, c2 = 0.01**2, 0.03**2
    var_a, var_b, cov = aa - mu_a * mu_a, bb - mu_b * mu_b, ab - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    )
    return s[:, radius:-radius, radius:-radius].mean((1, 2))


def model_randomisation(
    model: torch.nn.Module,
    x: torch.Tensor,
    target: Target = None,
    *,
    method: Method = "gradient",
    seed: int = 0,
    options: dict | None = None,
) -> torch.Tensor:
    """The model-parameter randomisation test (MPRT; Adebayo et al. 2018, "Sanity checks for
    saliency maps") as one number: Spearman ρ between each image's map on the model and on the
    model with every layer re-initialised (the last step of `saliency.sanity.cascade`; maps
    compared as in `sanity_check`). Lower is better: a map that explains the model must change
    when the model is destroyed. `(N,)` float64."""
    from .sanity import cascade

    t, _ = _targets(model, x, target, None)
    last = None
    for step in cascade(model, x, seed=seed):
        last = step.model
    if last is None:
        raise ValueError("the model has no parameters to randomise")
    with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):
        a = _explain(method, model, x, t, options)
    with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):
        b = _explain(method, last, x, t, options)
    a, b = (m.abs().amax(1).double().cpu().numpy() for m in (a, b))
    return torch.tensor([spearman(p, q) for p, q in zip(a, b, strict=True)], dtype=torch.float64)


def random_map(x: torch.Tensor, *, seed: Seed = 0) -> torch.Tensor:
    """The chance control: uniform [0, 1) values shaped like `x`, image i's from `seed + i`.

    The same image gives the same map whatever the model, class or small perturbation, so it
    scores at chance on removal metrics, fails the randomisation tests (ρ 1), and is perfectly
    robust (Max-Sensitivity 0): robustness alone rewards a map that ignores the model."""
    check_input(x)
    _check_seeds(seed, x.shape[0])
    gen = torch.Generator(device=x.device)
    out = []
    for i in range(x.shape[0]):
        gen.manual_seed(_seed_of(seed, i))
        out.append(torch.rand(x.shape[1:], generator=gen, device=x.device, dtype=x.dtype))
    return torch.stack(out)


def edge_map(x: torch.Tensor) -> torch.Tensor:
    """The edge-detector control (Adebayo et al. 2018): the Sobel gradient magnitude of the
    input, max over channels, the same map in every channel, edges replicated. Shaped like `x`.
    It looks like a saliency map and knows nothing of the model."""
    check_input(x)
    if x.ndim != 4:
        raise ValueError(f"x must be an image batch (N, C, H, W), got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    gx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=x.dtype, device=x.device)
    k = torch.stack([gx, gx.T]).unsqueeze(1)  # (2, 1, 3, 3)
    padded = torch.nn.functional.pad(x.reshape(n * c, 1, h, w), (1, 1, 1, 1), mode="replicate")
    g = torch.nn.functional.conv2d(padded, k)  # (NC, 2, H, W)
    mag = g.square().sum(1).sqrt().view(n, c, h, w).amax(1, keepdim=True)
    return mag.expand(n, c, h, w).contiguous()


def blurred_map(maps: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """The blur control: a Gaussian-blurred copy of a method's |map| (`saliency.blur`). Shaped
    like `maps`. Removal-based scores are known to rank such a copy above the sharp map."""
    return blur(maps.detach().abs(), sigma)
