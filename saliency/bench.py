"""Which map can I trust? Metrics of attribution maps, scored per image, with controls.

Every metric returns one value per image, `(N,)` float64, for the whole batch at once on the
model's device. Two kinds:

    sparseness(maps), complexity(maps)                   # the map alone
    deletion_auc, insertion_auc, road(model, x, target, maps)  # remove pixels, watch the score
    max_sensitivity, random_logit, model_randomisation(model, x, target, method=...)
                                                         # recompute maps (perturbed x, another
                                                         # class, a randomised model)

Randomness comes from a local generator, never the global one: image i's draws come from
`seed + i`, so a batch gives exactly what a loop over its images gives with seeds seed, seed+1, …
and the caller's random streams are untouched. `seed` may also be a list, one seed per image
(a piece of a larger set passes seed + each image's index in the set, so that scoring the set
in pieces, on several processes, gives the values of one call: `score(..., indices=)` does).

Scores only mean something beside controls (removal-based scores reward blurry maps; an edge
detector makes maps that look like saliency, Adebayo et al. 2018): `random_map`, `edge_map` and
`blurred_map` make them. `bench` scores methods and controls together: `score` gives the
per-image values, `summarise` the table from them (bootstrap intervals, ranks, Kendall τ),
`save_table` / `load_table` store it. `HIGHER_IS_BETTER` says which way each metric points.
"""

from ._bench_metrics import (
    HIGHER_IS_BETTER,
    Method,
    Seed,
    blurred_map,
    complexity,
    deletion_auc,
    edge_map,
    insertion_auc,
    linear_imputation,
    max_sensitivity,
    model_randomisation,
    random_logit,
    random_map,
    road,
    road_curve,
    sparseness,
)
from ._bench_table import (
    CONTROLS,
    METRICS,
    Bench,
    Score,
    bench,
    kendall_tau,
    load_table,
    save_table,
    score,
    summarise,
)

__all__ = [
    "CONTROLS",
    "HIGHER_IS_BETTER",
    "METRICS",
    "Bench",
    "Method",
    "Score",
    "Seed",
    "bench",
    "blurred_map",
    "complexity",
    "deletion_auc",
    "edge_map",
    "insertion_auc",
    "kendall_tau",
    "linear_imputation",
    "load_table",
    "max_sensitivity",
    "model_randomisation",
    "random_logit",
    "random_map",
    "road",
    "road_curve",
    "save_table",
    "score",
    "sparseness",
    "summarise",
]
