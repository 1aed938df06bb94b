"""Cached computations of the classroom lessons: thin wrappers around `sandbox.jobs`.

Each lesson's computation is a job, run by `cache.run`: in this process for a registry model
(shared by every session and never mutated: the sanity check and the float64 finite
differences work on deep copies), in the sandboxed worker for an uploaded one. Arrays go
through `dashboard.lru.memo`, bounded in bytes by the server's budget; the tabular
regressors are trained on demand (about a second each) and kept with `st.cache_resource`, so
no weights are stored for them.
"""

from __future__ import annotations

import numpy as np
import streamlit as st
import torch

import saliency
from dashboard import cache
from dashboard.lru import memo
from pretrained import tabular
from sandbox import jobs, worker

N_RANDOM_ORDERS = jobs.N_RANDOM_ORDERS
TABLES = ("cubic", "cubic-mm", "correlated")


def _one(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image, dtype=np.float32)[None, None]  # (1, 1, 28, 28)


@memo("maps")
def nudge(name: str, image: np.ndarray, target: int, row: int, col: int, deltas: tuple) -> dict:
    """Predicted (Δ·J_ij) and actual change of the target's logit for each Δ."""
    return cache.run(
        name, "nudge", _one(image), pixel=(0, row, col), deltas=tuple(deltas), target=target
    )


@memo("maps", spinner="Timing autograd and 2·784 forward passes…")
def autograd_vs_fd(name: str, image: np.ndarray, target: int, run: int) -> dict:
    """Signed maps by autograd and by central differences on a float64 copy, and their cost.

    `run` only makes a new measurement when the user asks for one.
    """
    res = cache.run(name, "autograd_vs_fd", _one(image), target=target)
    return {**res, "autograd": res["autograd"][0], "fd": res["fd"][0]}  # (28, 28) maps


# The methods of the sanity lesson, with the options the rest of the dashboard uses: the four
# pixel-gradient methods, then the four of Adebayo et al.'s sharpest contrast (issue 32).
SANITY_METHODS = {
    "gradient": {},
    "smoothgrad": cache.METHOD_OPTIONS["smoothgrad"],
    "integrated_gradients": cache.METHOD_OPTIONS["integrated_gradients"],
    "input_x_gradient": {},
    "guided_backprop": {},
    "guided_grad_cam": {},
    "grad_cam": {},
    "lrp": {},
}


@memo("maps", spinner="Randomising the layers one by one…")
def sanity(name: str, images: np.ndarray, method: str) -> list[dict]:
    """Cascading randomisation of `name` (on deep copies), maps of (N, 28, 28) `images` by
    `method`, each image's predicted class: per step its name, how its layer was
    re-initialised, the first image's map, and each image's Spearman ρ and SSIM."""
    x = np.ascontiguousarray(images, dtype=np.float32)[:, None]  # (N, 1, 28, 28)
    steps = cache.run(name, "sanity", x, method=method, timeout=120, **SANITY_METHODS[method])
    return [{**s, "map": s["map"][0]} for s in steps]


def sanity_or_why(name: str, images: np.ndarray, method: str) -> list[dict] | str:
    """`sanity`'s steps, or the library's reason `method` can't explain model `name` ("no
    spatial layer: an MLP has no Grad-CAM", no nn.ReLU to guide, a layer LRP has no rule for):
    a lesson shows that reason in the method's place and the other methods as usual."""
    if saliency.method_info(method).layer:
        problem = cache.method_facts(name, (1, *images.shape[1:]), method)["problem"]
        if problem:
            return problem
    try:
        return sanity(name, images, method)
    except ValueError as err:  # refused by the library, for a model in this process
        return str(err)
    except worker.ModelError as err:  # refused in an upload's worker: the same sentence,
        return str(err).partition("The model failed: ")[2] or str(err)  # after the model's name


@memo("maps", spinner="Deleting and inserting pixels…")
def faithfulness(name: str, image: np.ndarray, target: int, start: str) -> dict:
    """Deletion and insertion curves of the target's probability, gradient order vs random.

    `start` is "blank" (all 0) or "blurred" (Gaussian blur, sigma 3) for insertion. The random
    curve is the mean over `N_RANDOM_ORDERS` seeded orders.
    """
    return cache.run(name, "faithfulness", _one(image), target=target, start=start)


@memo("maps")
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


@memo("maps")
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
