"""`saliency.agreement` (issue 33, the live reveal's statistics) against computations written
here from each definition with scipy: the split-half ceiling, the null, the alignment's
bootstrap interval, Dice and IoU by hand, blurred ρ; fewer than 4 paintings; NaN and uniform
paintings."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from scipy.stats import spearmanr

import saliency
from saliency import agreement


def rho(a, b) -> float:
    return float(spearmanr(np.ravel(a), np.ravel(b)).statistic)


def a_class(k: int, seed: int = 0, noise: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """K paintings `(K, 28, 28)` of one blob seen through each student's noise, and a map of
    that blob: a class that agrees with itself, and a model that agrees with it."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:28, :28]
    blob = np.exp(-((yy - 12) ** 2 + (xx - 15) ** 2) / 40.0)
    paintings = np.clip(blob + noise * rng.random((k, 28, 28)), 0, None)
    model_map = blob + 0.3 * rng.random((28, 28))
    return paintings, model_map


def test_the_ceiling_is_the_split_half_rho_written_from_its_definition():
    paintings, _ = a_class(9)
    got = agreement.split_half_ceiling(paintings, draws=50, seed=7)
    # The definition: 50 random halves (4 and 5 of 9), each averaged, Spearman-correlated.
    rng = np.random.default_rng(7)
    direct = []
    for _ in range(50):
        perm = rng.permutation(9)
        direct.append(rho(paintings[perm[:4]].mean(0), paintings[perm[4:]].mean(0)))
    assert got.rho == pytest.approx(np.mean(direct), abs=1e-12)
    np.testing.assert_allclose(got.per_draw, direct, atol=1e-12)
    assert (got.n, got.reason) == (9, None)
    assert 0.2 < got.rho < 1  # the class does agree with itself
    # Spearman-Brown: the whole class's reliability from a half's.
    sb = agreement.split_half_ceiling(paintings, draws=50, seed=7, spearman_brown=True)
    r = np.mean(direct)
    assert sb.rho == pytest.approx(2 * r / (1 + r), abs=1e-12)
    # Same seed, same numbers; numpy's global stream untouched.
    np.random.seed(1)
    before = np.random.random()
    np.random.seed(1)
    again = agreement.split_half_ceiling(paintings, draws=50, seed=7)
    assert again.rho == got.rho and np.random.random() == before


def test_the_ceiling_of_four_converges_to_the_mean_over_its_three_splits():
    """With 4 paintings there are 3 ways to split: enough draws average all three."""
    paintings, _ = a_class(4, seed=2)
    splits = [((0, 1), (2, 3)), ((0, 2), (1, 3)), ((0, 3), (1, 2))]
    exact = np.mean([rho(paintings[list(a)].mean(0), paintings[list(b)].mean(0))
                     for a, b in splits])  # fmt: skip
    got = agreement.split_half_ceiling(paintings, draws=3000, seed=0)
    values = sorted(set(np.round(got.per_draw, 12)))
    assert len(values) == 3  # each draw is one of the three splits
    assert got.rho == pytest.approx(exact, abs=0.02)
    # Identical paintings agree perfectly.
    same = np.repeat(paintings[:1], 6, axis=0)
    assert agreement.split_half_ceiling(same).rho == pytest.approx(1.0)


def test_fewer_than_four_paintings_no_ceiling_but_rho():
    paintings, model_map = a_class(3)
    c = agreement.split_half_ceiling(paintings)
    assert math.isnan(c.rho) and c.n == 3
    assert c.reason == "3 paintings: the class's agreement with itself takes at least 4 (two " \
        "halves of two)"  # fmt: skip
    a = agreement.class_agreement(paintings, model_map)
    assert a.rho == pytest.approx(rho(paintings.mean(0), model_map), abs=1e-12)
    assert math.isnan(a.ceiling) and math.isnan(a.alignment) and a.ceiling_reason == c.reason
    assert all(math.isnan(v) for v in a.interval)
    one = agreement.split_half_ceiling(paintings[:1])
    assert one.reason.startswith("1 painting:")
    empty = agreement.class_agreement(np.zeros((0, 28, 28)), model_map)
    assert empty.n == 0 and math.isnan(empty.rho) and math.isnan(empty.dice)


def test_nan_and_uniform_paintings_have_documented_values():
    paintings, model_map = a_class(6)
    bad = paintings.copy()
    bad[2, 3, 3] = np.nan
    bad[4, 0, 0] = np.inf
    # A painting with a non-finite value is left out: the rest is what counts.
    a = agreement.class_agreement(bad, model_map, draws=20, boots=40)
    kept = paintings[[0, 1, 3, 5]]
    assert a.n == 4
    assert a.rho == pytest.approx(rho(kept.mean(0), model_map), abs=1e-12)
    assert a.ceiling == pytest.approx(agreement.split_half_ceiling(kept, 20).rho, abs=1e-12)
    # Uniform paintings: no ranking, so every ρ is NaN, with a reason for the ceiling.
    flat = np.ones((5, 28, 28))
    c = agreement.split_half_ceiling(flat)
    assert math.isnan(c.rho) and "uniform" in c.reason and np.isnan(c.per_draw).all()
    u = agreement.class_agreement(flat, model_map, np.stack([model_map, np.ones((28, 28))]))
    assert math.isnan(u.rho) and math.isnan(u.alignment) and math.isnan(u.blurred_rho)
    assert np.isnan(u.null).all()
    assert all(math.isnan(v) for v in u.interval)
    # A uniform map, or one with a NaN, against a real painting.
    assert math.isnan(saliency.blurred_rho(paintings[0], np.zeros((28, 28))))
    nan_map = model_map.copy()
    nan_map[0, 0] = np.nan
    assert math.isnan(agreement.class_agreement(paintings, nan_map, boots=20).rho)
    assert all(math.isnan(v) for v in saliency.dice_iou_top(paintings[0], nan_map))
    # Wrong shapes are named.
    with pytest.raises(ValueError, match=r"\(K, H, W\)"):
        agreement.split_half_ceiling(np.zeros((28, 28)))
    with pytest.raises(ValueError, match="differ in shape"):
        agreement.class_agreement(paintings, np.zeros((14, 14)))
    with pytest.raises(ValueError, match=r"other maps are \(M, 28, 28\)"):
        agreement.null_rho(paintings[0], np.zeros((3, 14, 14)))


def test_the_null_is_the_mean_painting_against_other_maps():
    paintings, model_map = a_class(8)
    rng = np.random.default_rng(5)
    others = rng.random((5, 28, 28))
    mean = paintings.mean(0)
    got = agreement.null_rho(mean, others)
    assert got.shape == (5,) and got.dtype == np.float64
    np.testing.assert_allclose(got, [rho(mean, o) for o in others], atol=1e-12)
    a = agreement.class_agreement(paintings, model_map, others, draws=10, boots=20)
    np.testing.assert_allclose(a.null, got, atol=1e-12)
    # Unrelated maps sit near 0; this image's map does far better.
    assert np.abs(got).max() < 0.2 < a.rho


def test_the_alignment_and_its_interval_repeat_a_loop_written_from_the_definition():
    paintings, model_map = a_class(7, seed=3)
    ceiling = agreement.split_half_ceiling(paintings).rho
    r = rho(paintings.mean(0), model_map)
    assert saliency.alignment(r, ceiling) == pytest.approx(r / ceiling)
    assert math.isnan(saliency.alignment(r, 0.0)) and math.isnan(saliency.alignment(r, -0.1))
    assert math.isnan(saliency.alignment(math.nan, 0.5))
    # The bootstrap, written as its docstring says, with scipy's ρ.
    boots, draws = 60, 6
    lo, hi = agreement.alignment_interval(
        paintings, model_map, boots=boots, boot_draws=draws, seed=4
    )
    rng = np.random.default_rng([4, 1])
    values = []
    for _ in range(boots):
        idx = rng.integers(0, 7, 7)
        halves = []
        for _ in range(draws):
            perm = rng.permutation(7)
            first, second = [], []
            for student in perm:  # every copy of a student in one half
                half = first if len(first) < 3 else second
                half += [student] * int((idx == student).sum())
            if second:
                halves.append(rho(paintings[first].mean(0), paintings[second].mean(0)))
        values.append(rho(paintings[idx].mean(0), model_map) / np.mean(halves))
    low, mid, high = np.percentile(values, [2.5, 50, 97.5])
    estimate = r / agreement.split_half_ceiling(paintings, 50, seed=4).rho
    expect = (low + estimate - mid, high + estimate - mid)  # centred on the estimate
    assert (lo, hi) == pytest.approx(tuple(expect), abs=1e-9)
    a = agreement.class_agreement(paintings, model_map)
    assert a.alignment == pytest.approx(r / ceiling)
    assert a.interval[0] < a.alignment < a.interval[1]
    # More students, a narrower interval.
    many, many_map = a_class(60, seed=3)
    wide = np.subtract(*agreement.alignment_interval(paintings, model_map)[::-1])
    narrow = np.subtract(*agreement.alignment_interval(many, many_map)[::-1])
    assert narrow < wide


def test_dice_and_iou_of_the_top_ten_percent_by_hand():
    # 10 pixels; the top 10 % is the single highest positive one.
    a = np.array([[0, 0, 0, 0, 9], [0, 0, 0, 0, 0]], dtype=float)
    b = np.array([[0, 0, 0, 0, 5], [0, 0, 0, 0, 0]], dtype=float)
    assert saliency.dice_iou_top(a, b) == (1.0, 1.0)
    c = np.array([[0, 0, 0, 0, 0], [7, 0, 0, 0, 0]], dtype=float)
    assert saliency.dice_iou_top(a, c) == (0.0, 0.0)
    # Top 30 % of 10 pixels: A = {0, 1, 2}, B = {1, 2, 3, 4} (a tie at the quantile is kept):
    # |A ∩ B| = 2, Dice = 4 / 7, IoU = 2 / 5.
    a = np.array([9, 8, 7, 1, 1, 1, 0, 0, 0, 0], dtype=float).reshape(2, 5)
    b = np.array([0, 5, 5, 5, 5, 1, 1, 0, 0, 0], dtype=float).reshape(2, 5)
    dice, iou = saliency.dice_iou_top(a, b, fraction=0.3)
    assert dice == pytest.approx(4 / 7) and iou == pytest.approx(2 / 5)
    assert all(math.isnan(v) for v in saliency.dice_iou_top(np.zeros((2, 5)), np.zeros((2, 5))))
    with pytest.raises(ValueError, match="differ in shape"):
        saliency.dice_iou_top(a, b[:, :4])


def test_blurred_rho_matches_scipy_and_forgives_a_shift():
    rng = np.random.default_rng(8)
    a, b = rng.random((28, 28)), rng.random((28, 28))
    direct = rho(gaussian_filter(a, 1.5, mode="reflect", truncate=3.0),
                 gaussian_filter(b, 1.5, mode="reflect", truncate=3.0))  # fmt: skip
    assert saliency.blurred_rho(a, b) == pytest.approx(direct, abs=1e-9)
    # A blob and the same blob two pixels over: blurring brings them closer.
    yy, xx = np.mgrid[:28, :28]
    blob = ((yy - 14) ** 2 + (xx - 12) ** 2 < 9).astype(float)
    moved = np.roll(blob, 2, axis=1)
    assert saliency.blurred_rho(blob, moved) > rho(blob, moved) + 0.2


def test_the_reveal_numbers_are_consistent_over_the_combinations():
    """`class_agreement` is its parts, each as the module's own function gives it."""
    paintings, model_map = a_class(10, seed=9)
    others = np.random.default_rng(1).random((3, 28, 28))
    a = agreement.class_agreement(paintings, model_map, others, draws=30, boots=50, seed=2)
    mean = paintings.mean(0)
    assert a.ceiling == agreement.split_half_ceiling(paintings, 30, 2).rho
    assert a.interval == agreement.alignment_interval(
        paintings, model_map, draws=30, boots=50, seed=2
    )
    assert (a.dice, a.iou) == saliency.dice_iou_top(mean, model_map)
    assert a.blurred_rho == pytest.approx(saliency.blurred_rho(mean, model_map), abs=1e-12)
    assert a.draws == 30 and a.n == 10
    # The order of the students changes nothing but the draws.
    for perm in itertools.islice(itertools.permutations(range(10)), 1, 3):
        b = agreement.class_agreement(paintings[list(perm)], model_map, others, draws=30, boots=50)
        assert b.rho == pytest.approx(a.rho, abs=1e-12)
