"""Cached computations of the classroom lessons: thin wrappers around the library.

Models come from `dashboard.cache.model` (shared by every session, never mutated: the sanity
check and the float64 finite differences work on deep copies). Arrays go through
`st.cache_data`, bounded; the tabular regressors are trained on demand (about a second each)
and kept with `st.cache_resource`, so no weights are stored for them.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import streamlit as st
import torch

import saliency
from dashboard import cache
from pretrained import tabular

N_RANDOM_ORDERS = 5
TABLES = ("cubic", "cubic-mm", "correlated")


def batch(name: str, image: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(1, 1, 28, 28) tensor of a 28x28 image on the model's device."""
    device = next(cache.model(name).parameters()).device
    return torch.from_numpy(np.ascontiguousarray(image)).to(device=device, dtype=dtype)[None, None]


@st.cache_data(show_spinner=False, max_entries=256)
def nudge(name: str, image: np.ndarray, target: int, row: int, col: int, deltas: tuple) -> dict:
    """Predicted (Δ·J_ij) and actual change of the target's logit for each Δ."""
    n = saliency.nudge(cache.model(name), batch(name, image), (0, row, col), deltas, target)
    return {
        "deltas": n.deltas.cpu().numpy(),
        "gradient": float(n.gradient[0]),
        "predicted": n.predicted[0].cpu().numpy(),
        "actual": n.actual[0].cpu().numpy(),
    }


def _ms(fn, repeat: int) -> tuple[torch.Tensor, float]:
    """The result of fn() and its best wall time over `repeat` runs, in milliseconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return result, best * 1e3


@st.cache_data(show_spinner="Timing autograd and 2·784 forward passes…", max_entries=64)
def autograd_vs_fd(name: str, image: np.ndarray, target: int, run: int) -> dict:
    """Signed maps by autograd and by central differences on a float64 copy, and their cost.

    `run` only makes a new measurement when the user asks for one.
    """
    model64 = copy.deepcopy(cache.model(name)).double()  # never change the shared model
    x = batch(name, image, torch.float64)
    saliency.gradients(model64, x, target)  # warm-up: first calls allocate
    ag, ag_ms = _ms(lambda: saliency.gradients(model64, x, target, absolute=False), 5)
    fd, fd_ms = _ms(lambda: saliency.finite_differences(model64, x, target), 1)
    ag, fd = ag[0, 0].cpu().numpy(), fd[0, 0].cpu().numpy()
    diff = np.abs(ag - fd)
    digit = image > 0
    return {
        "autograd": ag,
        "fd": fd,
        "autograd_ms": ag_ms,
        "fd_ms": fd_ms,
        "forwards": 2 * image.size,
        "max_diff": float(diff.max()),
        "max_diff_digit": float(diff[digit].max()) if digit.any() else float("nan"),
        "max_diff_background": float(diff[~digit].max()) if (~digit).any() else float("nan"),
        "max_abs": float(np.abs(ag).max()),
    }


@st.cache_data(show_spinner="Randomising the layers one by one…", max_entries=64)
def sanity(name: str, image: np.ndarray, target: int) -> list[dict]:
    """Cascading randomisation (on deep copies): map, Spearman and SSIM after each step."""
    steps = saliency.sanity_check(cache.model(name), batch(name, image), target)
    return [
        {
            "step": s.name,
            "map": s.map[0, 0].cpu().numpy(),
            "spearman": float(s.spearman[0]),
            "ssim": float(s.ssim[0]),
        }
        for s in steps
    ]


@st.cache_data(show_spinner="Deleting and inserting pixels…", max_entries=64)
def faithfulness(name: str, image: np.ndarray, target: int, start: str) -> dict:
    """Deletion and insertion curves of the target's probability, gradient order vs random.

    `start` is "blank" (all 0) or "blurred" (Gaussian blur, sigma 3) for insertion. The random
    curve is the mean over `N_RANDOM_ORDERS` seeded orders.
    """
    model = cache.model(name)
    x = batch(name, image)
    grad = saliency.gradients(model, x, target)
    begin = saliency.blur(x) if start == "blurred" else 0.0
    curves = {
        "deletion": saliency.deletion_curve(model, x, grad, target),
        "insertion": saliency.insertion_curve(model, x, grad, target, start=begin),
    }
    out = {"fractions": curves["deletion"].fractions.numpy()}
    for kind, curve in curves.items():
        random_scores = []
        for seed in range(N_RANDOM_ORDERS):
            g = torch.Generator().manual_seed(seed)
            order = torch.rand(x.shape, generator=g).to(x.device)
            fn = saliency.deletion_curve if kind == "deletion" else saliency.insertion_curve
            extra = {} if kind == "deletion" else {"start": begin}
            random_scores.append(fn(model, x, order, target, **extra).scores[0])
        rand = torch.stack(random_scores).mean(0)  # (S + 1,)
        out[kind] = curve.scores[0].cpu().numpy()
        out[f"{kind}_random"] = rand.cpu().numpy()
        out[f"{kind}_auc"] = float(curve.auc[0])
        out[f"{kind}_random_auc"] = float(saliency.faithfulness.auc(curve.fractions, rand[None])[0])
    return out


@st.cache_data(show_spinner=False, max_entries=64)
def linear_map_facts(name: str, target: int) -> dict:
    """W_c / σ of a registry logistic regression (Normalize, Flatten, Linear): its exact map."""
    model = cache.model(name)
    norm, linear = model[0], model[-1]
    w = (linear.weight[target] / norm.std).reshape(28, 28)
    return {"w_over_std": w.detach().cpu().numpy()}


@st.cache_resource(show_spinner="Training a small regression net (about a second)…")
def regressor(kind: str) -> tuple[tabular.Table, torch.nn.Module]:
    """A synthetic table (seed 0) and a net trained on it (seed 0), shared and never mutated."""
    if kind not in TABLES:
        raise ValueError(f"kind must be one of {TABLES}, got {kind!r}")
    if kind == "correlated":
        table = tabular.correlated_data(seed=0)
    else:
        table = tabular.cubic_data(seed=0, x1_in_mm=kind == "cubic-mm")
    return table, tabular.train_regressor(table.X, table.y, seed=0)


@st.cache_data(show_spinner=False, max_entries=16)
def tabular_ranking(kind: str) -> dict:
    """Learned mean |∂y/∂x_j| (raw and std-scaled) beside the analytic values."""
    table, net = regressor(kind)
    raw = saliency.feature_ranking(net, table.X, feature_names=table.feature_names)
    scaled = saliency.feature_ranking(net, table.X, feature_names=table.feature_names, scale="std")
    with torch.no_grad():
        residual = net(table.X)[:, 0] - table.y
    analytic = table.dy_dx.abs().double().mean(0)
    return {
        "features": table.feature_names,
        "units": table.units,
        "formula": table.formula,
        "learned": raw.sensitivity[0].numpy(),
        "learned_std": scaled.sensitivity[0].numpy(),
        "analytic": analytic.numpy(),
        "analytic_std": (analytic * raw.std).numpy(),
        "std": raw.std.numpy(),
        "rmse": float(residual.pow(2).mean().sqrt()),
        "corr": np.corrcoef(table.X.T.numpy()),
        "corr_y": [
            float(np.corrcoef(table.X[:, j].numpy(), table.y.numpy())[0, 1]) for j in range(3)
        ],
    }
