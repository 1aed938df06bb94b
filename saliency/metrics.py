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
    """Separable Gaussian blur of a 2-D array with mirrored edges (scipy.ndimage 'reflect')."""
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (t / sigma) ** 2)
    w /= w.sum()
    padded = np.pad(m, radius, mode="symmetric")
    h, wd = m.shape
    rows = sum(w[i] * padded[i : i + h, :] for i in range(2 * radius + 1))  # (H, W + 2r)
    return sum(w[i] * rows[:, i : i + wd] for i in range(2 * radius + 1))  # (H, W)


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
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mu_a, mu_b = _gaussian_filter(a, sigma, radius), _gaussian_filter(b, sigma, radius)
    var_a = _gaussian_filter(a * a, sigma, radius) - mu_a * mu_a
    var_b = _gaussian_filter(b * b, sigma, radius) - mu_b * mu_b
    cov = _gaussian_filter(a * b, sigma, radius) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    )
    return float(s[radius:-radius, radius:-radius].mean())


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
