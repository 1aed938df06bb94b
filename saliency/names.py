"""The names the library accepts for a score and a method, importable without torch (a page
that only lists them, such as the dashboard's first page, needs nothing else)."""

SCORES = ("logit", "probability", "log_probability")
METHODS = (
    "gradient",
    "smoothgrad",
    "smoothgrad_sq",
    "vargrad",
    "input_x_gradient",
    "integrated_gradients",
)
