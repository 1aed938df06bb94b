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
from ._validate import OutputSelector, check_input

SCALES = (None, "std")


@dataclass(frozen=True)
class FeatureRanking:
    """Mean absolute sensitivities of a tabular model.

    sensitivity: `(K, D)` float64, mean over the data of |dy_k/dx_j| (times std_j if scaled).
    order: `(K, D)` feature indices per output, most sensitive first.
    scale: "none" or "std", the scaling that was applied.
    std: `(D,)` the features' standard deviations over the data (used when scale="std").
    """

    sensitivity: torch.Tensor
    order: torch.Tensor
    feature_names: tuple[str, ...]
    scale: str
    std: torch.Tensor

    def ranked(self, output: int = 0) -> list[tuple[str, float]]:
        """(feature name, sensitivity) pairs for one output, most sensitive first."""
        row = self.sensitivity[output]
        return [(self.feature_names[j], float(row[j])) for j in self.order[output].tolist()]

    def table(self) -> list[dict]:
        """One row per output and feature: output, rank (1 = most), feature, sensitivity."""
        return [
            {"output": k, "rank": r + 1, "feature": name, "sensitivity": value, "scale": self.scale}
            for k in range(self.sensitivity.shape[0])
            for r, (name, value) in enumerate(self.ranked(k))
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
    if scale not in SCALES and scale != "none":
        raise ValueError(f"scale must be None, 'none' or 'std', got {scale!r}")
    d = X.shape[1]
    names = tuple(feature_names) if feature_names is not None else tuple(f"x{j}" for j in range(d))
    if len(names) != d:
        raise ValueError(f"feature_names has {len(names)} names but X has {d} columns")
    jac = jacobian(model, X, output=output)  # (N, K, D), raw outputs ("logit" = identity)
    sens = jac.double().abs().mean(0)  # (K, D)
    std = X.double().std(0) if X.shape[0] > 1 else torch.zeros(d, dtype=torch.float64)
    if scale == "std":
        sens = sens * std.to(sens.device)
    order = torch.argsort(sens, dim=1, descending=True, stable=True)
    return FeatureRanking(
        sensitivity=sens,
        order=order,
        feature_names=names,
        scale="std" if scale == "std" else "none",
        std=std,
    )
