"""How far a class of people agree with a saliency map, read against how far they agree with
each other (numpy only).

A class paints where it thinks a model looks; the mean painting's Spearman ρ with the model's
map means little alone. Linsley et al. (ClickMe, "Learning what and where to attend", ICLR
2019) and Fel et al. ("Harmonizing the object recognition strategies of deep neural networks
with humans", NeurIPS 2022) read it against the people's own split-half agreement (the
"ceiling": for ClickMe ρ 0.66), and report the model's ρ as a share of it.

    >>> a = class_agreement(paintings, model_map, other_maps)   # (K, H, W), (H, W), (M, H, W)
    >>> a.ceiling, a.alignment, a.interval                      # 0.52, 0.60, (0.41, 0.78)

Documented values instead of errors, because a classroom sends whatever it sends:
- a painting holding NaN or infinity is left out (`n` counts those kept);
- a ρ involving a uniform map (no ranking) is NaN, and so is anything built on it;
- fewer than `MIN_PAINTINGS` paintings: the ceiling is NaN with a `reason`, ρ is still given.
Random draws come from a generator seeded by `seed`: the same call gives the same numbers, and
numpy's global random state is untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .metrics import _gaussian_filter, top_set

MIN_PAINTINGS = 4  # two halves of at least two: a half of one painting is one person, no mean
BLUR_SIGMA = 1.5  # pixels on the 28 x 28 grid: about a stroke's half-width


@dataclass(frozen=True)
class Ceiling:
    """A split-half ceiling: `rho` (NaN when not computable, `reason` then says why), the
    number of paintings `n` it used and each draw's ρ `per_draw` `(draws,)` (NaN where that
    draw's halves had a uniform mean)."""

    rho: float
    n: int
    per_draw: np.ndarray
    reason: str | None = None


@dataclass(frozen=True)
class Agreement:
    """Everything `class_agreement` measures; NaN where a value is undefined (see the module's
    docstring), `ceiling_reason` when the ceiling is."""

    n: int  # paintings used (finite ones)
    rho: float  # Spearman ρ of the mean painting with the map
    ceiling: float  # split-half ρ of the class with itself
    ceiling_reason: str | None
    alignment: float  # rho / ceiling
    interval: tuple[float, float]  # 95 % bootstrap interval of the alignment over students
    null: np.ndarray  # (M,) ρ of the mean painting with each other image's map
    dice: float  # of the top-`fraction` sets of the mean painting and the map
    iou: float
    blurred_rho: float  # ρ with both maps Gaussian-blurred
    draws: int


def _finite_paintings(paintings) -> np.ndarray:
    """`(K, H, W)` float64 without the paintings that hold a non-finite value."""
    p = np.asarray(paintings, dtype=np.float64)
    if p.ndim != 3:
        raise ValueError(f"paintings are (K, H, W), one map per person; got shape {p.shape}")
    return p[np.isfinite(p).all(axis=(1, 2))]


def _rank_rows(v: np.ndarray) -> np.ndarray:
    """`(N, P)` -> each row's ranks 1..P, ties given their average rank (`metrics._ranks`
    row by row, in one sort)."""
    n, size = v.shape
    order = np.argsort(v, axis=1)
    s = np.take_along_axis(v, order, axis=1)
    pos = np.broadcast_to(np.arange(size), (n, size))
    new = np.ones((n, size), dtype=bool)
    new[:, 1:] = s[:, 1:] != s[:, :-1]  # (N, P) where a run of equal values starts
    start = np.maximum.accumulate(np.where(new, pos, 0), axis=1)
    last = np.ones((n, size), dtype=bool)
    last[:, :-1] = new[:, 1:]  # where a run ends
    end = np.minimum.accumulate(np.where(last, pos, size)[:, ::-1], axis=1)[:, ::-1]
    ranks = np.empty((n, size), dtype=np.float64)
    np.put_along_axis(ranks, order, (start + end) / 2.0 + 1.0, axis=1)
    return ranks


def _rho_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`(N,)` Spearman ρ of rows `a[i]` and `b[i]` (`(N, ...)` each, or `b` one map for all);
    NaN for a row holding a non-finite value or uniform (no ranking)."""
    a = np.asarray(a, dtype=np.float64)
    if not len(a):
        return np.zeros(0)
    a = a.reshape(len(a), -1)
    b = np.broadcast_to(np.asarray(b, dtype=np.float64).reshape(-1, a.shape[1]), a.shape)
    ok = np.isfinite(a).all(axis=1) & np.isfinite(b).all(axis=1)
    ra = _rank_rows(np.where(ok[:, None], a, 0.0))
    rb = _rank_rows(np.where(ok[:, None], b, 0.0))
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    denom = np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (ra * rb).sum(axis=1) / denom
    return np.where(ok & (denom > 0), rho, np.nan)


def _rho(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman ρ; NaN when either holds a non-finite value or is uniform (no ranking)."""
    a, b = np.ravel(a), np.ravel(b)
    if a.shape != b.shape:
        raise ValueError(f"maps differ in size: {a.size} and {b.size} values")
    return float(_rho_rows(a[None], b[None])[0])


def split_half_ceiling(
    paintings, draws: int = 50, seed: int = 0, *, spearman_brown: bool = False
) -> Ceiling:
    """The class's agreement with itself (Linsley et al. 2019, ClickMe; Fel et al. 2022,
    Harmonization): `draws` times, the paintings `(K, H, W)` are shuffled and cut into halves
    of K // 2 and K - K // 2, each half is averaged, and the two means are Spearman-correlated;
    the ceiling is the mean of those ρ (draws with a uniform half-mean left out).

    Draw d uses `perm = rng.permutation(K)` from `rng = np.random.default_rng(seed)`, halves
    `perm[:K // 2]` and `perm[K // 2:]`. `spearman_brown=True` returns 2ρ / (1 + ρ) instead,
    the estimate for a class twice a half's size (the whole class), which the mean painting
    is; the default is the uncorrected split-half ρ, as Harmonization reports it.

    Fewer than `MIN_PAINTINGS` finite paintings: `rho` is NaN and `reason` says so.
    """
    p = _finite_paintings(paintings)
    n = len(p)
    if n < MIN_PAINTINGS:
        reason = (
            f"{n} painting{'s' if n != 1 else ''}: the class's agreement with itself takes at "
            f"least {MIN_PAINTINGS} (two halves of two)"
        )
        return Ceiling(float("nan"), n, np.full(0, np.nan), reason)
    rng = np.random.default_rng(seed)
    half = n // 2
    perms = np.stack([rng.permutation(n) for _ in range(draws)])  # (draws, K)
    per_draw = _rho_rows(p[perms[:, :half]].mean(axis=1), p[perms[:, half:]].mean(axis=1))
    finite = per_draw[np.isfinite(per_draw)]
    if not finite.size:
        reason = "every half's mean painting was uniform: there is no ranking to compare"
        return Ceiling(float("nan"), n, per_draw, reason)
    rho = float(finite.mean())
    if spearman_brown:
        rho = 2 * rho / (1 + rho) if rho > -1 else float("nan")
    return Ceiling(rho, n, per_draw)


def null_rho(mean_painting, other_maps) -> np.ndarray:
    """`(M,)` ρ of the class's mean painting `(H, W)` with M other images' maps `(M, H, W)`:
    what agreement looks like when the map has nothing to do with this image (the null of
    ClickMe and Harmonization, Linsley et al. 2019, Fel et al. 2022). NaN for a uniform map."""
    m = np.asarray(mean_painting, dtype=np.float64)
    others = np.asarray(other_maps, dtype=np.float64)
    if others.ndim != 3 or others.shape[1:] != m.shape:
        raise ValueError(
            f"other maps are (M, {', '.join(map(str, m.shape))}) like the painting; "
            f"got shape {others.shape}"
        )
    return _rho_rows(others, m)


def alignment(rho: float, ceiling: float) -> float:
    """ρ as a share of the class's own ceiling (Fel et al. 2022, Harmonization: "human
    alignment" = ρ / split-half ρ). NaN when either is undefined or the ceiling is not above
    zero (a class that doesn't agree with itself gives nothing to be a share of). It may exceed
    1: the whole class's mean is less noisy than either half's (see `spearman_brown`)."""
    if not (np.isfinite(rho) and np.isfinite(ceiling)) or ceiling <= 0:
        return float("nan")
    return float(rho / ceiling)


def alignment_interval(
    paintings,
    saliency_map,
    *,
    draws: int = 50,
    boots: int = 200,
    boot_draws: int = 10,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Bootstrap interval of `alignment` over students (as Linsley et al. 2019 and Fel et al.
    2022 bootstrap over participants): `boots` times the K paintings are resampled with
    replacement, and both ρ and the split-half ceiling are recomputed on the resample (the
    ceiling from `boot_draws` draws: the interval's width comes from which students were
    drawn; fewer draws only add a little noise, which widens it). (NaN, NaN) when fewer than
    `MIN_PAINTINGS`, when the estimate (`split_half_ceiling(paintings, draws, seed)`'s
    alignment) is undefined, or when fewer than half the resamples give an alignment.

    The interval is the resamples' central `level` share, moved so that their median sits on
    the estimate. Unmoved, it would miss it: a resample holds about 63 % distinct students,
    so its halves agree less than the class's, its ceiling is lower and its alignment higher
    (with 30 and 60 students, each plain 95 % interval we tried lay above the estimate).
    The spread is what the resampling measures; the location is the estimate's.

    A student drawn more than once keeps all their copies in one half (split across both, a
    painting would agree with itself). The stream, for a reference to repeat it:
    `rng = np.random.default_rng([seed, 1])`; per resample `idx = rng.integers(0, K, K)`
    (`count` = copies of each student), then per draw `perm = rng.permutation(K)`: walking
    `perm`, each student's copies join the first half until it holds K // 2 or more, the
    others make the second; each half's mean weighs a student by their copies.
    """
    p = _finite_paintings(paintings)
    m = np.asarray(saliency_map, dtype=np.float64).ravel()
    n = len(p)
    if n < MIN_PAINTINGS:
        return (float("nan"), float("nan"))
    flat = p.reshape(n, -1)  # (K, P)
    rng = np.random.default_rng([seed, 1])  # its own stream: the ceiling's draws are unchanged
    values = np.empty(boots, dtype=np.float64)
    chunk = 50  # resamples at a time: a few MB of ranks, whatever `boots`
    for lo in range(0, boots, chunk):
        size = min(chunk, boots - lo)
        whole = np.zeros((size, n))  # copies of each student in resample b
        first = np.zeros((size, boot_draws, n))  # ... in draw d's first half
        for b in range(size):
            whole[b] = np.bincount(rng.integers(0, n, n), minlength=n)
            for d in range(boot_draws):
                perm = rng.permutation(n)
                filled = np.cumsum(whole[b, perm])  # (K,) copies in the first half so far
                taken = perm[: int(np.searchsorted(filled, n // 2)) + 1]
                first[b, d, taken] = whole[b, taken]
        second = whole[:, None, :] - first  # (size, draws, K)
        rho = _rho_rows(whole @ flat / n, m)  # (size,)
        with np.errstate(invalid="ignore", divide="ignore"):
            halves = _rho_rows(
                ((first @ flat) / first.sum(axis=2, keepdims=True)).reshape(size * boot_draws, -1),
                ((second @ flat) / second.sum(axis=2, keepdims=True)).reshape(
                    size * boot_draws, -1
                ),
            ).reshape(size, boot_draws)  # NaN where one half is empty (one student drawn K times)
            ok = np.isfinite(halves)
            ceiling = np.where(ok, halves, 0).sum(axis=1) / ok.sum(axis=1)  # NaN: none finite
        values[lo : lo + size] = [alignment(r, c) for r, c in zip(rho, ceiling, strict=True)]
    finite = values[np.isfinite(values)]
    estimate = alignment(_rho(p.mean(axis=0), m), split_half_ceiling(p, draws, seed).rho)
    if finite.size < boots / 2 or not np.isfinite(estimate):
        return (float("nan"), float("nan"))
    tail = 100 * (1 - level) / 2
    low, mid, high = np.percentile(finite, [tail, 50, 100 - tail])
    shift = estimate - mid  # the resamples' spread, centred on the estimate
    return (float(low + shift), float(high + shift))


def dice_iou_top(a, b, fraction: float = 0.10) -> tuple[float, float]:
    """(Dice, IoU) of the top `fraction` of two maps (`metrics.top_set`: values at or above
    the (1 - fraction) quantile and above zero, ties kept together), as Harmonization compares
    human and model maps' most important pixels (Fel et al. 2022). Dice = 2|A ∩ B| / (|A| +
    |B|), IoU = |A ∩ B| / |A ∪ B|; (NaN, NaN) when neither map has a positive pixel or one
    holds a non-finite value."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"maps differ in shape: {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return (float("nan"), float("nan"))
    ta, tb = top_set(a, fraction), top_set(b, fraction)
    union = int((ta | tb).sum())
    if union == 0:
        return (float("nan"), float("nan"))
    both = int((ta & tb).sum())
    return (2 * both / int(ta.sum() + tb.sum()), both / union)


def blur(m, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """A 2-D map Gaussian-blurred (`sigma` pixels, mirrored edges), as Harmonization blurs
    the human maps before comparing (Fel et al. 2022)."""
    m = np.asarray(m, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"blur takes one 2-D map, got shape {m.shape}")
    return _gaussian_filter(m, sigma, max(1, int(3 * sigma + 0.5)))


def blurred_rho(a, b, sigma: float = BLUR_SIGMA) -> float:
    """Spearman ρ of two 2-D maps, both Gaussian-blurred first (Fel et al. 2022): agreement
    that forgives being a stroke's width off. NaN as `_rho` (non-finite or uniform)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")
    return _rho(blur(a, sigma), blur(b, sigma))


def class_agreement(
    paintings,
    saliency_map,
    other_maps=None,
    *,
    draws: int = 50,
    boots: int = 200,
    seed: int = 0,
    fraction: float = 0.10,
    sigma: float = BLUR_SIGMA,
) -> Agreement:
    """The class's paintings `(K, H, W)` against the model's map `(H, W)`: ρ of the mean
    painting, the split-half ceiling, alignment = ρ / ceiling with its bootstrap interval,
    the null against `other_maps` `(M, H, W)` (empty without), Dice and IoU of the top
    `fraction`, and ρ with both maps blurred. Each as its own function here computes it."""
    p = _finite_paintings(paintings)
    m = np.asarray(saliency_map, dtype=np.float64)
    if p.shape[1:] != m.shape:
        raise ValueError(f"paintings {p.shape[1:]} and the map {m.shape} differ in shape")
    mean = p.mean(axis=0) if len(p) else np.full(m.shape, np.nan)
    rho = _rho(mean, m)
    ceiling = split_half_ceiling(p, draws, seed)
    others = np.zeros((0, *m.shape)) if other_maps is None else other_maps
    dice, iou = dice_iou_top(mean, m, fraction)
    return Agreement(
        n=len(p),
        rho=rho,
        ceiling=ceiling.rho,
        ceiling_reason=ceiling.reason,
        alignment=alignment(rho, ceiling.rho),
        interval=alignment_interval(p, m, draws=draws, boots=boots, seed=seed),
        null=null_rho(mean, others),
        dice=dice,
        iou=iou,
        blurred_rho=blurred_rho(mean, m, sigma),
        draws=draws,
    )
