"""Feature ranking for tabular models: mean |dy_i/dx_j| per output and feature.

Raw gradients of features in different units cannot be compared (a feature in metres has a
gradient 1000 times that of the same feature in millimetres); `scale="std"` multiplies each
feature's sensitivity by its standard deviation, the change of output per typical change of
input. When features are correlated, the model may lean on one and ignore the other: a low rank
does not mean the feature carries no information.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ._gradients import jacobian
from ._validate import OutputSelector, check_input, eval_mode, forward_scores

SCALES = (None, "std")


@dataclass(frozen=True)
class FeatureRanking:
    """Mean absolute sensitivities of a tabular model.

    sensitivity: `(K, D)` float64, mean over the data of |dy_k/dx_j| (times std_j if scaled).
    order: `(K, D)` feature indices per output, most sensitive first.
    scale: "none" or "std", the scaling that was applied.
    std: `(D,)` the features' standard deviations over the data (used when scale="std").
    signed: `(K, D)` float64, the mean of the signed dy_k/dx_j (times std_j if scaled): its
        sign says which way the output moves on average; near zero with a large mean |J|, the
        effect changes sign across the rows.
    """

    sensitivity: torch.Tensor
    order: torch.Tensor
    feature_names: tuple[str, ...]
    scale: str
    std: torch.Tensor
    signed: torch.Tensor

    def rank(self, output: int = 0) -> dict[str, int]:
        """{feature name: place}, 1 for the most sensitive feature of one output."""
        order = self.order[output].tolist()
        return {self.feature_names[j]: place + 1 for place, j in enumerate(order)}

    def ranked(self, output: int = 0) -> list[tuple[str, float]]:
        """(feature name, sensitivity) pairs for one output, most sensitive first."""
        row = self.sensitivity[output]
        return [(self.feature_names[j], float(row[j])) for j in self.order[output].tolist()]

    def table(self) -> list[dict]:
        """One row per output and feature: output, rank (1 = most), feature, sensitivity."""
        return [
            {
                "output": k,
                "rank": r + 1,
                "feature": self.feature_names[j],
                "sensitivity": float(self.sensitivity[k, j]),
                "signed_mean": float(self.signed[k, j]),
                "scale": self.scale,
            }
            for k in range(self.sensitivity.shape[0])
            for r, j in enumerate(self.order[k].tolist())
        ]

    def __str__(self) -> str:
        lines = [f"feature ranking (scale: {self.scale})"]
        for k in range(self.sensitivity.shape[0]):
            ranked = ", ".join(f"{n}={v:.4g}" for n, v in self.ranked(k))
            lines.append(f"  output {k}: {ranked}")
        return "\n".join(lines)


def feature_ranking(
    model: Callable,
    X: torch.Tensor,
    *,
    output: OutputSelector = None,
    feature_names: Sequence[str] | None = None,
    scale: str | None = None,
) -> FeatureRanking:
    """Rank the D input features of a tabular model by mean |dy_k/dx_j| over the rows of X.

    `X` is `(N, D)` in the units the model's forward takes (a model that standardises inside
    forward is differentiated through that step, so the ranking is per raw unit). `output`
    selects one output of a model returning a tuple or dict, e.g. `output=0` for a regression
    net returning `(y_descaled, y_scaled)`. `scale="std"` multiplies by each feature's standard
    deviation so features in different units can be compared; the result records which scaling
    was used. Computed in eval mode.
    """
    check_input(X, name="X")
    if X.ndim != 2:
        raise ValueError(f"X must be a table (N, D), got shape {tuple(X.shape)}")
    _check_scale(scale)
    names = _names(feature_names, X.shape[1])
    jac = jacobian(model, X, output=output)  # (N, K, D), raw outputs ("logit" = identity)
    return ranking_from_jacobian(jac, X, feature_names=names, scale=scale)


def _check_scale(scale: str | None) -> None:
    if scale not in SCALES and scale != "none":
        raise ValueError(f"scale must be None, 'none' or 'std', got {scale!r}")


def _names(feature_names: Sequence[str] | None, d: int) -> tuple[str, ...]:
    names = tuple(feature_names) if feature_names is not None else tuple(f"x{j}" for j in range(d))
    if len(names) != d:
        raise ValueError(f"feature_names has {len(names)} names but X has {d} columns")
    return names


def ranking_from_jacobian(
    jac: torch.Tensor,
    X: torch.Tensor,
    *,
    feature_names: Sequence[str] | None = None,
    scale: str | None = None,
) -> FeatureRanking:
    """`feature_ranking` from Jacobians already computed: `jac` `(N, K, D)` (or `(N, D)` for
    one output) at the rows of `X` `(N, D)`. For a table too large for one call, compute the
    Jacobian in batches and rank once: the result is the same as `feature_ranking`'s."""
    if jac.ndim == 2:
        jac = jac.unsqueeze(1)
    if X.ndim != 2 or jac.ndim != 3 or jac.shape[0] != X.shape[0] or jac.shape[2] != X.shape[1]:
        raise ValueError(
            f"jac must be (N, K, D) or (N, D) for X of shape (N, D); got {tuple(jac.shape)} "
            f"and {tuple(X.shape)}"
        )
    _check_scale(scale)
    d = X.shape[1]
    names = _names(feature_names, d)
    jac = jac.double()
    sens = jac.abs().mean(0)  # (K, D)
    signed = jac.mean(0)
    std = X.double().std(0) if X.shape[0] > 1 else torch.zeros(d, dtype=torch.float64)
    if scale == "std":
        sens = sens * std.to(sens.device)
        signed = signed * std.to(sens.device)
    order = torch.argsort(sens, dim=1, descending=True, stable=True)
    return FeatureRanking(
        sensitivity=sens,
        order=order,
        feature_names=names,
        scale="std" if scale == "std" else "none",
        std=std,
        signed=signed,
    )


def correlated_pairs(
    X: torch.Tensor, feature_names: Sequence[str] | None = None, *, threshold: float = 0.8
) -> list[tuple[str, str, float]]:
    """Pairs of features whose Pearson correlation over the rows has |r| >= `threshold`, most
    correlated first, as (name a, name b, r). A model may lean on one of such a pair and
    ignore the other, so the ranking can't tell which one carries the information. A constant
    column correlates with nothing."""
    check_input(X, name="X")
    if X.ndim != 2:
        raise ValueError(f"X must be a table (N, D), got shape {tuple(X.shape)}")
    names = _names(feature_names, X.shape[1])
    if X.shape[0] < 2:
        return []
    z = X.double() - X.double().mean(0)
    norm = z.norm(dim=0)
    ok = norm > 0
    r = (z.T @ z) / torch.outer(norm, norm).clamp_min(torch.finfo(torch.float64).tiny)
    pairs = [
        (names[a], names[b], float(r[a, b]))
        for a in range(len(names))
        for b in range(a + 1, len(names))
        if ok[a] and ok[b] and abs(float(r[a, b])) >= threshold
    ]
    return sorted(pairs, key=lambda p: -abs(p[2]))


def rank_flips(
    raw: FeatureRanking, scaled: FeatureRanking, *, output: int = 0, places: int = 2
) -> list[tuple[str, int, int]]:
    """Features whose place in the raw-unit ranking and in the std-scaled one differ by at
    least `places`, as (name, raw place, scaled place), largest move first. Such a feature's
    raw gradient is large or small because of its unit, not because the model leans on it."""
    a, b = raw.rank(output), scaled.rank(output)
    moved = [(n, a[n], b[n]) for n in raw.feature_names if abs(a[n] - b[n]) >= places]
    return sorted(moved, key=lambda m: (-abs(m[1] - m[2]), m[2]))


def column_differences(
    model: Callable,
    X: torch.Tensor,
    steps: torch.Tensor | Sequence[float],
    *,
    column: int = 0,
    output: OutputSelector = None,
    batch_size: int = 65536,
) -> torch.Tensor:
    """Central differences of one output column for every row and feature of a table:
    `(f(x + h_j e_j) - f(x - h_j e_j)) / (2 h_j)`, `(N, D)`, signed.

    `steps` `(D,)` are per feature, so features in different units each get a step in their
    own unit (say a tenth of each one's std). 2·D forward passes of the rows (in batches of
    `batch_size` rows), no backward: for a model that is not differentiable (`round`, `argmax`
    or comparisons inside), where autograd's gradient is zero or undefined; and for checking
    autograd on one that is. Evaluated in eval mode without gradients.
    """
    check_input(X, name="X")
    if X.ndim != 2:
        raise ValueError(f"X must be a table (N, D), got shape {tuple(X.shape)}")
    h = torch.as_tensor(steps, dtype=X.dtype, device=X.device).reshape(-1)
    if h.numel() != X.shape[1] or not bool((h > 0).all()):
        raise ValueError(f"steps must be {X.shape[1]} positive numbers, got {h.tolist()}")
    result = torch.empty(X.shape, dtype=X.dtype, device=X.device)
    with eval_mode(model), torch.no_grad():
        for i in range(0, X.shape[0], batch_size):
            x = X[i : i + batch_size]
            for j in range(X.shape[1]):
                step = torch.zeros_like(x[0])
                step[j] = h[j]
                both = torch.cat([x + step, x - step])
                _, s = forward_scores(model, both, score="logit", output=output)
                if not 0 <= column < s.shape[1]:
                    raise ValueError(
                        f"column {column} is out of range: the output has {s.shape[1]}"
                    )
                v = s[:, column]
                result[i : i + len(x), j] = (v[: len(x)] - v[len(x) :]) / (2 * h[j])
    return result
