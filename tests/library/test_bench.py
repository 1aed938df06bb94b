"""The metric bench (issue 33): each metric against Quantus 0.6.0 (a test-only reference) or the
paper's formula written out here, known answers, batch = loop, seeds, and the controls on
mnist-cnn behaving as the literature says."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import pretrained
import saliency
from saliency import bench as B
from saliency.metrics import ssim

quantus = pytest.importorskip("quantus")
warnings.filterwarnings("ignore", module="quantus")


@pytest.fixture(scope="module")
def cnn():
    return pretrained.load_model("mnist-cnn", device="cpu")


@pytest.fixture(scope="module")
def batch(cnn):
    x = pretrained.load_dataset("mnist", "test").images[:8]  # (8, 1, 28, 28) in [0, 1]
    with torch.no_grad():
        y = cnn(x).argmax(1)
    a = saliency.attribute(cnn, x, y, method="gradient", absolute=True)
    return x, y, a


def _as_image(m: np.ndarray) -> np.ndarray:
    """A map `(C, H, W)` as one `(H, W)` image in [0, 1], one at a time in NumPy (the
    reference for random_logit's batched SSIM): max |value| over channels, divided by its
    maximum."""
    a = np.abs(m).max(0) if m.ndim == 3 else np.abs(m)
    top = a.max()
    return a / top if top > 0 else a


def _gradient_np(model, inputs, targets, **kwargs):
    """Quantus's explain_func: the library's |gradient|."""
    x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32)
    t = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    return saliency.attribute(model, x, t, method="gradient", absolute=True).numpy()


# --- the map alone ---------------------------------------------------------------------------


def test_sparseness_and_complexity_equal_quantus(batch):
    x, y, a = batch
    maps = torch.cat([a, torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))])
    kw = {"disable_warnings": True, "display_progressbar": False}
    q_sparse = quantus.Sparseness(**kw)(
        model=None, x_batch=np.zeros(maps.shape, np.float32), y_batch=np.zeros(12, int),
        a_batch=maps.double().numpy(),
    )  # fmt: skip
    q_complex = quantus.Complexity(**kw)(
        model=None, x_batch=np.zeros(maps.shape, np.float32), y_batch=np.zeros(12, int),
        a_batch=maps.double().numpy(),
    )  # fmt: skip
    # Quantus scores the map divided by its maximum plus 1e-7 (Gini) and puts 1e-12 inside the
    # log, in float32: given that map, the Gini index is the same within 1e-6 (float32's
    # rounding); so is the entropy.
    # (On the raw map the 1e-7 moves the Gini of these gradient maps by up to 1.5e-6.)
    shifted = maps.double() / maps.double().flatten(1).amax(1).view(-1, 1, 1, 1) + 1e-7
    np.testing.assert_allclose(B.sparseness(shifted).numpy(), q_sparse, rtol=0, atol=1e-6)
    np.testing.assert_allclose(B.sparseness(maps).numpy(), q_sparse, rtol=0, atol=2e-6)
    np.testing.assert_allclose(B.complexity(maps).numpy(), q_complex, rtol=0, atol=1e-6)


def test_sparseness_is_the_same_whichever_sort_runs(batch):
    """float32 and float64 maps on CPU are sorted by numpy, other dtypes by torch.sort: the
    same Gini index from the same values."""
    a = batch[2].half()
    expected = B.sparseness(a.double())
    torch.testing.assert_close(B.sparseness(a), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(B.sparseness(a.float()), expected, rtol=0, atol=1e-12)


def test_known_answers_of_the_map_metrics():
    d = 28 * 28
    one = torch.zeros(2, 1, 28, 28)
    one[:, 0, 5, 7] = 3.0
    uniform = torch.full((2, 1, 28, 28), 0.4)
    assert B.sparseness(one).tolist() == pytest.approx([(d - 1) / d] * 2, abs=1e-12)
    assert B.sparseness(uniform).tolist() == pytest.approx([0.0, 0.0], abs=1e-12)
    assert B.complexity(one).tolist() == [0.0, 0.0]
    assert B.complexity(uniform).tolist() == pytest.approx([math.log(d)] * 2, abs=1e-12)
    # The sign does not matter; an all-zero map has no value (documented NaN).
    assert torch.equal(B.sparseness(-one), B.sparseness(one))
    zero = torch.zeros(1, 1, 28, 28)
    assert math.isnan(B.sparseness(zero)[0]) and math.isnan(B.complexity(zero)[0])
    assert B.sparseness(one).dtype == torch.float64 and B.sparseness(one).shape == (2,)


def test_bad_maps_get_clear_messages(cnn, batch):
    x, y, a = batch
    bad = a.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="1 non-finite values"):
        B.sparseness(bad)
    with pytest.raises(ValueError, match=r"shaped like x \(8, 1, 28, 28\), got \(8, 28, 28\)"):
        B.deletion_auc(cnn, x, y, a[:, 0])
    with pytest.raises(ValueError, match="percentages must be in"):
        B.road(cnn, x, y, a, percentages=[0, 50])


# --- removal ---------------------------------------------------------------------------------


class Linear(nn.Module):
    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w.flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1) @ self.w  # (N,)
        return torch.stack([s, torch.zeros_like(s)], 1)  # (N, 2): class 0's logit is w·x


def test_deletion_of_a_linear_models_pixels_in_w_order_is_the_known_curve():
    w = torch.randn(1, 6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    model = Linear(w).double()
    x = torch.ones(3, 1, 6, 6, dtype=torch.float64)
    order = w.abs().flatten().argsort(descending=True)
    # After removing the k largest |w|, the logit is the sum of the other weights.
    expected = w.sum() - torch.cat([torch.zeros(1, dtype=w.dtype), w.flatten()[order].cumsum(0)])
    maps = w.abs().expand(3, 1, 6, 6)
    curve = saliency.deletion_curve(model, x, maps, 0, steps=36, score="logit", batch_size=7)
    torch.testing.assert_close(curve.scores, expected.expand(3, 37), rtol=0, atol=1e-12)
    auc = B.deletion_auc(model, x, 0, maps, steps=36, score="logit", batch_size=7)
    fractions = torch.arange(37, dtype=torch.float64) / 36
    assert auc.tolist() == pytest.approx([float(torch.trapezoid(expected, fractions))] * 3)


def test_deletion_and_insertion_batched_equal_one_image_at_a_time(cnn, batch):
    x, y, a = batch
    for f in (B.deletion_auc, B.insertion_auc):
        together = f(cnn, x, y, a, steps=14, batch_size=40)
        alone = torch.cat(
            [f(cnn, x[i : i + 1], y[i : i + 1], a[i : i + 1], steps=14) for i in range(8)]
        )
        torch.testing.assert_close(together, alone, rtol=0, atol=1e-6)


def test_deletion_and_insertion_equal_quantus_pixel_flipping(cnn, batch):
    """With a fixed order (a random map: no ties), the deletion curve is Quantus's PixelFlipping
    (14 pixels a step to its "black" baseline, the image's minimum: 0 here) point for point, and
    the insertion curve is PixelFlipping from the blurred start with a perturb_func that reveals
    the image's pixels; the AUC is the trapezoid over both, the unperturbed point included."""
    x, y, _ = batch
    a = torch.rand(x.shape, generator=torch.Generator().manual_seed(0))
    kw = {"abs": False, "normalise": False, "disable_warnings": True, "display_progressbar": False}
    call = {"model": cnn, "y_batch": y.numpy(), "a_batch": a.numpy(), "device": "cpu"}
    assert float(x.flatten(1).min(1).values.max()) == 0.0  # "black" is 0 for these images
    flip = quantus.PixelFlipping(features_in_step=14, perturb_baseline="black", **kw)
    theirs = np.array(flip(x_batch=x.numpy(), softmax=True, **call))  # (8, 56): after each step
    mine = saliency.deletion_curve(cnn, x, a, y, steps=56)
    np.testing.assert_allclose(mine.scores[:, 1:].numpy(), theirs, rtol=0, atol=1e-6)
    whole = np.concatenate([mine.scores[:, :1].numpy(), theirs], 1)
    np.testing.assert_allclose(
        B.deletion_auc(cnn, x, y, a).numpy(), np.trapezoid(whole, dx=1 / 56, axis=1), atol=1e-6
    )

    start = saliency.blur(x)
    pixels = x.numpy().reshape(len(x), -1)

    def reveal(arr, indices, **_):
        out = arr.copy()
        rows = np.arange(len(arr))[:, None]
        out[rows, indices] = pixels[rows, indices]
        return out

    insert = quantus.PixelFlipping(features_in_step=14, perturb_func=reveal, **kw)
    theirs = np.array(insert(x_batch=start.numpy(), softmax=True, **call))
    mine = saliency.insertion_curve(cnn, x, a, y, steps=56, start=start)
    np.testing.assert_allclose(mine.scores[:, 1:].numpy(), theirs, rtol=0, atol=1e-6)
    whole = np.concatenate([mine.scores[:, :1].numpy(), theirs], 1)
    np.testing.assert_allclose(
        B.insertion_auc(cnn, x, y, a).numpy(), np.trapezoid(whole, dx=1 / 56, axis=1), atol=1e-6
    )


def test_model_randomisation_agrees_with_quantus_mprt_within_20_seeds(cnn, batch):
    """MPRT at full randomisation (Quantus's last layer of its top-down cascade, Spearman of the
    gradient's |map|): each draws its own weights, so the two means over 20 seeds must agree
    within 3 standard errors of their difference."""
    x, y, a = batch
    kw = {"return_last_correlation": True, "disable_warnings": True, "display_progressbar": False}
    call = {"model": cnn, "x_batch": x.numpy(), "y_batch": y.numpy(), "a_batch": a.numpy()}
    ours, theirs = [], []
    for seed in range(20):
        ours.append(float(B.model_randomisation(cnn, x, y, method="gradient", seed=seed).mean()))
        mprt = quantus.MPRT(seed=seed, **kw)
        theirs.append(float(np.mean(mprt(**call, device="cpu", explain_func=_gradient_np))))
    ours, theirs = np.array(ours), np.array(theirs)
    assert 0.05 < ours.mean() < 0.5  # a destroyed model's map is far from the trained one's
    se = math.sqrt(ours.var(ddof=1) / 20 + theirs.var(ddof=1) / 20)
    assert abs(ours.mean() - theirs.mean()) < 3 * se, (ours.mean(), theirs.mean(), se)


def test_linear_imputation_equals_quantus(batch):
    from quantus.functions.perturb_func import noisy_linear_imputation

    x = batch[0][:3].double()
    rng = np.random.default_rng(0)
    for fraction in (0.05, 0.5, 0.97):
        idx = [rng.permutation(784)[: int(784 * fraction)] for _ in range(3)]
        removed = torch.zeros(3, 784, dtype=torch.bool)
        for i in range(3):
            removed[i, idx[i]] = True
        mine = B.linear_imputation(x, removed.view(3, 28, 28)).numpy()
        ref = np.stack([noisy_linear_imputation(x[i].numpy(), idx[i], noise=0.0) for i in range(3)])
        np.testing.assert_allclose(mine, ref, rtol=0, atol=1e-6)


def _exact_imputation(x: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Rong et al.'s system for one (H, W) image written out entry by entry and solved by a
    sparse direct solver (scipy's spsolve): the reference for the iterative solver."""
    sparse = pytest.importorskip("scipy.sparse")
    from scipy.sparse.linalg import spsolve

    h, w = x.shape
    weights = {(di, dj): (1 / 6 if di == 0 or dj == 0 else 1 / 12)
               for di in (-1, 0, 1) for dj in (-1, 0, 1) if (di, dj) != (0, 0)}  # fmt: skip
    unknown = np.argwhere(removed)
    index = -np.ones((h, w), dtype=int)
    index[removed] = np.arange(len(unknown))
    a = sparse.lil_matrix((len(unknown), len(unknown)))
    rhs = np.zeros(len(unknown))
    for row, (i, j) in enumerate(unknown):
        for (di, dj), wt in weights.items():
            if 0 <= i + di < h and 0 <= j + dj < w:
                a[row, row] += wt
                if removed[i + di, j + dj]:
                    a[row, index[i + di, j + dj]] -= wt
                else:
                    rhs[row] += wt * x[i + di, j + dj]
    out = x.copy()
    out[removed] = spsolve(a.tocsc(), rhs)
    return out


def test_linear_imputation_equals_an_exact_sparse_solve_on_random_masks():
    """float64, random images and holes from 1 % to 99 % (and one rectangular image): the
    iterative solver's answer (relative residual 1e-10) within 1e-8 of the direct solve."""
    gen = torch.Generator().manual_seed(0)
    for h, w in ((28, 28), (13, 21)):
        x = torch.rand(6, 1, h, w, generator=gen, dtype=torch.float64)
        for fraction in (0.01, 0.3, 0.7, 0.9, 0.99):
            removed = torch.rand(6, h, w, generator=gen) < fraction
            removed[:, h // 2, w // 3] = False  # at least one kept pixel
            mine = B.linear_imputation(x, removed)[:, 0].numpy()
            ref = np.stack(
                [_exact_imputation(x[i, 0].numpy(), removed[i].numpy()) for i in range(6)]
            )
            np.testing.assert_allclose(mine, ref, rtol=0, atol=1e-8)


def test_the_neighbour_sum_is_the_3x3_convolution():
    from saliency._imputation import _WEIGHTS, _neighbours

    v = torch.rand(4, 1, 9, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    conv = torch.nn.functional.conv2d(v, _WEIGHTS.view(1, 1, 3, 3), padding=1)
    torch.testing.assert_close(_neighbours(v), conv, rtol=0, atol=1e-15)


def test_road_equals_quantus_without_noise(cnn, batch):
    """With no noise ROAD is deterministic: the same accuracy at every percentage."""
    x, y, a = batch
    a = a + 1e-9 * torch.rand(a.shape, generator=torch.Generator().manual_seed(0))  # no ties
    metric = quantus.ROAD(noise=0.0, disable_warnings=True, display_progressbar=False)
    metric(model=cnn, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy(), device="cpu")
    theirs = np.array(list(metric.evaluation_scores.values()))  # (50,) mean over images
    mine = B.road_curve(cnn, x, y, a, noise=0.0)  # (8, 50)
    np.testing.assert_array_equal(mine.mean(0).numpy(), theirs)


def test_road_with_noise_agrees_with_quantus_within_the_sampling_error_of_20_seeds(cnn, batch):
    """Quantus draws its noise from numpy's global stream, so the check is statistical: the
    mean ROAD over 20 seeds of each, to within 4 standard errors of the difference."""
    x, y, a = batch[0][:4], batch[1][:4], batch[2][:4]
    pct, noise = list(range(10, 100, 10)), 0.3  # a large noise, so that it matters
    metric = quantus.ROAD(
        noise=noise, percentages=pct, disable_warnings=True, display_progressbar=False
    )
    theirs, mine = [], []
    state = np.random.get_state()
    for seed in range(20):
        np.random.seed(seed)
        metric(model=cnn, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy(), device="cpu")
        theirs.append(np.mean(list(metric.evaluation_scores.values())))
        mine.append(
            float(B.road(cnn, x, y, a, percentages=pct, noise=noise, seed=100 * seed).mean())
        )
    np.random.set_state(state)
    se = math.sqrt(np.var(theirs, ddof=1) / 20 + np.var(mine, ddof=1) / 20)
    assert np.std(mine) > 0  # the noise did change the answers
    assert abs(np.mean(theirs) - np.mean(mine)) <= 4 * se + 1e-12, (np.mean(theirs), np.mean(mine))


def test_road_batched_equals_a_loop_with_seeds_seed_plus_i(cnn, batch):
    x, y, a = batch
    kw = {"percentages": [10, 50, 90], "noise": 0.2}
    together = B.road(cnn, x, y, a, seed=5, batch_size=7, **kw)
    alone = torch.cat(
        [B.road(cnn, x[i : i + 1], y[i : i + 1], a[i : i + 1], seed=5 + i, **kw) for i in range(8)]
    )
    torch.testing.assert_close(together, alone, rtol=0, atol=0)


# --- recomputed maps -------------------------------------------------------------------------


def _deltas(x: torch.Tensor, samples: int, radius: float, seed: int) -> torch.Tensor:
    """The library's documented draws: image i's δ from a generator seeded seed + i."""
    out = []
    for i in range(x.shape[0]):
        g = torch.Generator().manual_seed(seed + i)
        out.append((torch.rand((samples, *x.shape[1:]), generator=g) * 2 - 1) * radius)
    return torch.stack(out, 1)  # (S, N, ...)


def test_max_sensitivity_equals_quantus_under_shared_noise(cnn, batch):
    x, y, a = batch
    samples, radius = 6, 0.1
    deltas = _deltas(x, samples, radius, seed=3)
    calls = iter(range(samples))

    def shared_noise(arr, indices, **kwargs):  # Quantus's perturb_func, given our δ
        return arr + deltas[next(calls)].reshape(arr.shape).numpy()

    metric = quantus.MaxSensitivity(
        nr_samples=samples, perturb_func=shared_noise, disable_warnings=True,
        display_progressbar=False,
    )  # fmt: skip
    theirs = metric(
        model=cnn, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy(), device="cpu",
        explain_func=_gradient_np,
    )  # fmt: skip
    mine = B.max_sensitivity(cnn, x, y, method="gradient", radius=radius, samples=samples, seed=3)
    np.testing.assert_allclose(mine.numpy(), theirs, rtol=1e-5)


def test_random_logit_equals_quantus_on_the_classes_quantus_drew(cnn, batch):
    """Quantus's default SSIM runs on the flattened map (a 1-D signal, 7-sample window), not
    on the image Sixt et al. compare; it is given the 2-D SSIM the library uses instead, and the
    classes it draws are read from its explain calls."""
    x, y, a = batch
    drawn = []

    def explain(model, inputs, targets, **kwargs):
        drawn.append(np.asarray(targets).copy())
        return _gradient_np(model, inputs, targets)

    def image_ssim(a, b, batched=True, **kwargs):
        return [
            ssim(_as_image(p.reshape(28, 28)), _as_image(q.reshape(28, 28)), data_range=1.0)
            for p, q in zip(a, b, strict=True)
        ]

    metric = quantus.RandomLogit(
        num_classes=10, similarity_func=image_ssim, disable_warnings=True,
        display_progressbar=False,
    )  # fmt: skip
    theirs = metric(
        model=cnn, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy(), device="cpu",
        explain_func=explain,
    )  # fmt: skip
    other = torch.as_tensor(drawn[-1])
    assert (other != y).all()
    mine = B.random_logit(cnn, x, y, method="gradient", other=other)
    np.testing.assert_allclose(mine.numpy(), theirs, rtol=0, atol=1e-6)
    # Its own draws: image i's other class from seed + i, so a batch equals a loop.
    torch.testing.assert_close(
        B.random_logit(cnn, x, y, seed=9),
        torch.cat([B.random_logit(cnn, x[i : i + 1], y[i : i + 1], seed=9 + i) for i in range(8)]),
    )


def test_max_sensitivity_does_not_depend_on_how_samples_are_batched(cnn, batch):
    x, y, _ = batch
    one_sample_a_call = B.max_sensitivity(cnn, x, y, samples=5, seed=2, batch_size=8)
    all_in_one_call = B.max_sensitivity(cnn, x, y, samples=5, seed=2, batch_size=40)
    three_a_call = B.max_sensitivity(cnn, x, y, samples=5, seed=2, batch_size=24)
    torch.testing.assert_close(all_in_one_call, one_sample_a_call, rtol=1e-6, atol=0)
    torch.testing.assert_close(three_a_call, one_sample_a_call, rtol=1e-6, atol=0)


def test_batched_ssim_equals_the_per_image_ssim():
    """Random Logit's SSIM, one torch call for the batch, equals `saliency.metrics.ssim` of
    each pair of maps read as images (square, rectangular, with and without channels)."""
    from saliency._bench_metrics import _as_images, _ssim_images

    gen = torch.Generator().manual_seed(2)
    for shape in ((5, 1, 28, 28), (4, 3, 17, 23), (3, 12, 30)):
        a = torch.rand(shape, generator=gen, dtype=torch.float64) ** 3
        b = torch.rand(shape, generator=gen, dtype=torch.float64)
        b[0] = a[0]  # identical maps: 1
        got = _ssim_images(_as_images(a), _as_images(b)).numpy()
        ref = [
            ssim(_as_image(p), _as_image(q), data_range=1.0)
            for p, q in zip(a.numpy(), b.numpy(), strict=True)
        ]
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
        assert got[0] == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="image maps"):
        _as_images(torch.rand(4, 30))
    with pytest.raises(ValueError, match="smaller than the 11 window"):
        _ssim_images(torch.rand(2, 10, 30), torch.rand(2, 10, 30))


def test_given_maps_are_not_recomputed_and_give_the_same_values(cnn, batch):
    x, y, a = batch
    calls = []

    def gradient(model, x, t):
        calls.append(len(x))
        return saliency.attribute(model, x, t, method="gradient", absolute=True)

    kw = {"method": gradient, "seed": 4}
    for metric, extra in ((B.max_sensitivity, {"samples": 3}), (B.random_logit, {})):
        calls.clear()
        computed = metric(cnn, x, y, **kw, **extra)
        n_computed = len(calls)
        given = metric(cnn, x, y, maps=a, **kw, **extra)
        assert len(calls) - n_computed == n_computed - 1  # the target's maps: not again
        torch.testing.assert_close(given, computed, rtol=0, atol=0)
    with pytest.raises(ValueError, match="shaped like x"):
        B.random_logit(cnn, x, y, maps=a[:, :, :5])


def test_model_randomisation_is_the_sanity_checks_last_step(cnn, batch):
    x, y, _ = batch
    steps = saliency.sanity_check(cnn, x, y, method="gradient")
    torch.testing.assert_close(
        B.model_randomisation(cnn, x, y, method="gradient"), steps[-1].spearman
    )


def test_seeds_make_results_reproducible_and_leave_the_callers_streams_alone(cnn, batch):
    x, y, a = batch
    before = torch.random.get_rng_state()
    runs = [
        (
            B.road(cnn, x, y, a, percentages=[30, 70], noise=0.2, seed=1),
            B.max_sensitivity(cnn, x, y, samples=3, seed=1),
            B.random_logit(cnn, x, y, seed=1),
            B.random_map(x, seed=1),
        )
        for _ in range(2)
    ]
    assert torch.equal(torch.random.get_rng_state(), before)
    for first, second in zip(*runs, strict=True):
        assert torch.equal(first, second)
    assert not torch.equal(B.random_map(x, seed=1), B.random_map(x, seed=2))


# --- controls and the table ------------------------------------------------------------------


def test_edge_map_is_the_sobel_magnitude():
    x = torch.zeros(1, 2, 8, 8)
    x[0, 0, :, 4:] = 1.0  # a vertical edge between columns 3 and 4 in channel 0
    e = B.edge_map(x)
    assert e.shape == x.shape and torch.equal(e[:, 0], e[:, 1])
    assert e[0, 0, 4].tolist() == [0, 0, 0, 4, 4, 0, 0, 0]  # |[-1 0 1; -2 0 2; -1 0 1] * x|


def test_the_controls_behave_as_the_literature_says_on_mnist_cnn(cnn):
    x = pretrained.load_dataset("mnist", "test").images[:16]
    b = B.bench(
        cnn, x, methods=("gradient",), metrics=("deletion_auc", "road_morf", "road_lerf"),
        n_boot=500,
    )  # fmt: skip
    s = {(c.row, c.metric): c for c in b.scores}
    # A random map removes pixels in a random order: MoRF and LeRF are the same experiment
    # (measured: 0.876 and 0.909 on these 16 images), and its deletion curve is that of
    # another random order.
    rnd = s["random", "road_morf"]
    assert abs(rnd.mean - s["random", "road_lerf"].mean) < 0.05
    other = B.deletion_auc(cnn, x, None, B.random_map(x, seed=77))
    assert abs(float(other.mean()) - s["random", "deletion_auc"].mean) < 0.1
    # The gradient beats chance on both...
    assert s["gradient", "road_morf"].high < rnd.low
    assert s["gradient", "deletion_auc"].mean < s["random", "deletion_auc"].mean
    # ...and removal-based scores rank its blurred copy above it (the 2023 finding).
    assert s["blurred", "road_morf"].mean < s["gradient", "road_morf"].mean
    assert s["blurred", "deletion_auc"].mean < s["gradient", "deletion_auc"].mean
    assert "gradient is worse than its blurred copy on road_morf" in b.losses


def test_the_table_ranks_intervals_and_agreement(cnn, batch):
    from scipy.stats import kendalltau

    x, y, a = batch
    metrics = ("sparseness", "complexity", "deletion_auc")
    kw = {"metrics": metrics, "controls": ("random",), "n_boot": 300}
    kw["options"] = {"smoothgrad": {"n_samples": 4}}
    b = B.bench(cnn, x, methods=("gradient", "input_x_gradient", "smoothgrad"), **kw)
    assert [(s.row, s.metric) for s in b.scores][:3] == [("gradient", k) for k in metrics]
    assert len(b.scores) == 4 * 3 and b.agreement.shape == (3, 3)
    for s in b.scores:
        assert s.low <= s.mean <= s.high and s.n == 8
        assert s.mean == pytest.approx(float(b.values[s.row, s.metric].mean()))
    assert b.score("gradient", "sparseness").mean == pytest.approx(float(B.sparseness(a).mean()))
    good = {
        k: [(1 if B.HIGHER_IS_BETTER[k] else -1) * b.score(r, k).mean for r in b.methods]
        for k in metrics
    }
    for i, ki in enumerate(metrics):
        assert sorted(b.ranks[ki].values()) == [1, 2, 3]
        for j, kj in enumerate(metrics):
            assert b.agreement[i, j] == pytest.approx(kendalltau(good[ki], good[kj]).statistic)
    assert b.agreement[0, 1] == pytest.approx(1.0)  # Gini and entropy agree here
    again = B.bench(cnn, x, methods=("gradient", "input_x_gradient", "smoothgrad"), **kw)
    assert again.scores == b.scores
    one = B.bench(cnn, x, methods=("gradient",), metrics=metrics, controls=False, n_boot=10)
    assert np.isnan(one.agreement).all() and "at least 2 methods" in one.agreement_note
    assert one.rows()[0]["rank"] == 1


def test_kendall_tau_equals_scipy_with_ties():
    from scipy.stats import kendalltau

    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.integers(0, 4, 7).astype(float), rng.normal(size=7)
        assert B.kendall_tau(a, b) == pytest.approx(kendalltau(a, b).statistic)
    assert math.isnan(B.kendall_tau([1, 1, 1], [1, 2, 3]))
