"""Comparing maps: rank correlation and structural similarity (numpy only)."""

from __future__ import annotations

import numpy as np


def _ranks(v: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (as scipy.stats.rankdata)."""
    order = np.argsort(v, kind="mergesort")
    sorted_v = v[order]
    # Start of each run of equal values, and the average rank of the run.
    starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])
    ends = np.r_[starts[1:], v.size]
    avg = (starts + ends + 1) / 2.0  # ranks are 1-based: run [s, e) has mean rank (s+1+e)/2
    ranks = np.empty(v.size, dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps of the same shape (NaN if either is constant)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"maps differ in size: {a.size} and {b.size} values")
    ra, rb = _ranks(a), _ranks(b)
    ra -= ra.mean()
    rb -= rb.mean()
    denom = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def _gaussian_filter(m: np.ndarray, sigma: float, radius: int) -> np.ndarray:
    """Separable Gaussian blur over the last two axes of `m` (one map `(H, W)` or a stack
    `(..., H, W)`), mirrored edges (scipy.ndimage 'reflect')."""
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (t / sigma) ** 2)
    w /= w.sum()
    padded = np.pad(m, [(0, 0)] * (m.ndim - 2) + [(radius, radius)] * 2, mode="symmetric")
    h, wd = m.shape[-2:]
    rows = sum(w[i] * padded[..., i : i + h, :] for i in range(2 * radius + 1))  # (., H, W + 2r)
    return sum(w[i] * rows[..., i : i + wd] for i in range(2 * radius + 1))  # (., H, W)


def ssim(
    a: np.ndarray,
    b: np.ndarray,
    *,
    data_range: float | None = None,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> float:
    """Mean structural similarity of two 2-D maps (Wang et al. 2004, Gaussian window).

    Local means, variances and covariance are taken under a Gaussian window of `sigma` (1.5,
    truncated at 3.5 sigma: an 11 x 11 window), edges mirrored; the mean SSIM ignores a border
    of half a window, as `skimage.metrics.structural_similarity(a, b, gaussian_weights=True,
    use_sample_covariance=False, data_range=...)` does. `data_range` defaults to the spread of
    both maps' values together (pass 1.0 for maps scaled to [0, 1]). Identical maps give 1.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"ssim compares two 2-D maps of one shape, got {a.shape} and {b.shape}")
    if data_range is None:
        data_range = float(max(a.max(), b.max()) - min(a.min(), b.min()))
    if data_range <= 0:
        return 1.0  # two equal constant maps
    radius = int(3.5 * sigma + 0.5)
    if min(a.shape) <= 2 * radius:
        raise ValueError(f"maps of shape {a.shape} are smaller than the {2 * radius + 1} window")
    return float(_ssim_maps(a, b, data_range, sigma, radius, k1, k2))


def _ssim_maps(a, b, data_range, sigma, radius, k1, k2) -> np.ndarray:
    """The mean SSIM over the last two axes (a border of `radius` ignored): `ssim`'s core."""
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mu_a, mu_b = _gaussian_filter(a, sigma, radius), _gaussian_filter(b, sigma, radius)
    var_a = _gaussian_filter(a * a, sigma, radius) - mu_a * mu_a
    var_b = _gaussian_filter(b * b, sigma, radius) - mu_b * mu_b
    cov = _gaussian_filter(a * b, sigma, radius) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    )
    return s[..., radius:-radius, radius:-radius].mean(axis=(-2, -1))


def ssim_many(
    a: np.ndarray, b: np.ndarray, *, data_range: float, sigma: float = 1.5, k1: float = 0.01,
    k2: float = 0.03,
) -> np.ndarray:  # fmt: skip
    """`ssim` of each pair of maps of two stacks `(N, H, W)`, all at once: `(N,)` float64,
    equal to `[ssim(a[n], b[n], data_range=data_range) for n in range(N)]`. `data_range` is
    one value for every pair (1.0 for maps scaled to [0, 1])."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"ssim_many compares two (N, H, W) stacks, got {a.shape} and {b.shape}")
    if data_range <= 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    radius = int(3.5 * sigma + 0.5)
    if min(a.shape[1:]) <= 2 * radius:
        raise ValueError(
            f"maps of shape {a.shape[1:]} are smaller than the {2 * radius + 1} window"
        )
    return _ssim_maps(a, b, data_range, sigma, radius, k1, k2)


def top_set(v: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """Boolean mask of the "top `fraction`" of a map: the values at or above its
    (1 - fraction) quantile that are also above zero. For a continuous map that is about
    `fraction` of the pixels; for a painting (many equal values) it is every pixel painted at
    least as strongly as that quantile, so ties are kept together, never split at random."""
    v = np.asarray(v, dtype=np.float64).ravel()
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return (v >= np.quantile(v, 1 - fraction)) & (v > 0)


def top_overlap(reference: np.ndarray, other: np.ndarray, fraction: float = 0.1) -> float:
    """The share of `reference`'s top `fraction` of pixels (see `top_set`) that also lie in
    `other`'s top `fraction`: 1 when every pixel the reference ranks highest is also ranked
    highest by the other, 0 when none is. NaN when the reference has no positive pixel."""
    a, b = top_set(reference, fraction), top_set(other, fraction)
    if a.shape != b.shape:
        raise ValueError(f"maps differ in size: {a.size} and {b.size} values")
    return float((a & b).sum() / a.sum()) if a.any() else float("nan")
