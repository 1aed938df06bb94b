"""Tables: which input features does a regression or classification net's output depend on?

A CSV and a model (TorchScript or torch.export, run in its sandbox), or the bundled diabetes
example. The ranking is the mean |∂y/∂x_j| over the rows (`saliency.ranking_from_jacobian`),
in raw units or times each feature's std; the caveats (correlated features, ranks that flip
with the units) are computed from the data, not only written.
"""

from __future__ import annotations

import json
import math

import numpy as np
import streamlit as st

import saliency
from dashboard import cache, render, state, table_cache, upload_limits
from dashboard.views.table_ranking import float64_tensor, ranking_section
from dashboard.views.table_ranking import ranking_csv as _ranking_csv  # noqa: F401 (tests)
from sandbox.gate import UserModelError
from sandbox.worker import ModelFailure
from workspace import tables
from workspace.tables import quote

# Session keys of this page.
T_CSV_FILE = "t_csv_file"
T_MODEL_FILE = "t_model_file"
T_KIND = "t_kind"
T_CSV = "t_csv"
T_MODEL = "t_model"
T_DL_CSV = "t_dl_csv"
T_DL_MODEL = "t_dl_model"
T_CHECK = "t_check"
T_CHECKED = "t_checked"


NONE = "-"  # the target column's "no target"
TARGET_NAMES = ("target", "label", "labels", "y", "class", "outcome")  # a target's usual names
KINDS = {"auto": "detect", "torchscript": "TorchScript", "export": "torch.export", "onnx": "ONNX"}
TABLE_SCORES = ("probability", "log_probability", "logit")  # a classifier's class, first
SCORE_LABELS = {
    "probability": "probability (softmax)",
    "log_probability": "log-probability",
    "logit": "the column itself (logit)",
}


# --- the table and the model -----------------------------------------------------------------


def _upload_section() -> tuple[bytes | None, bytes | None, str]:
    """The uploaders; the files are kept in this session (never on the server's disk)."""
    limit = int(st.get_option("server.maxUploadSize"))
    c1, c2, c3 = st.columns([2, 2, 1])
    csv_file = c1.file_uploader("Your table (CSV with a header row)", type=["csv", "txt"],
                                key=T_CSV_FILE, max_upload_size=upload_limits.CSV_MB)  # fmt: skip
    model_file = c2.file_uploader("Your model (torch.export, TorchScript, ONNX)",
                                  key=T_MODEL_FILE,
                                  max_upload_size=upload_limits.MODEL_MB)  # fmt: skip
    kind = c3.selectbox("Kind of model file", tuple(KINDS), format_func=KINDS.get, key=T_KIND)
    st.caption(
        f"Up to {min(limit, tables.MAX_BYTES >> 20)} MB and {tables.MAX_ROWS:,} rows of CSV. "
        "The model gets a float32 tensor of the rows `(N, D)`, the chosen columns in their "
        "order, and may return a tensor, a tuple or a dict; you pick the output below. It runs "
        "in a sandbox: it can compute, not read files or connect. A pickle is never unpickled: "
        "save with `torch.export.save(torch.export.export(model, (x,), dynamic_shapes=…))` or "
        "`torch.jit.save(torch.jit.script(model))`."
    )
    for f, key in ((csv_file, T_CSV), (model_file, T_MODEL)):
        if f is not None:
            st.session_state[key] = (f.name, f.getvalue())
    csv = st.session_state.get(T_CSV)
    model = st.session_state.get(T_MODEL)
    return (csv[1] if csv else None), (model[1] if model else None), kind


def _example_downloads() -> None:
    c1, c2, _ = st.columns([1, 1, 2])
    c1.download_button("The example's CSV", table_cache.example_csv, "diabetes.csv", "text/csv",
                       key=T_DL_CSV, on_click="ignore")  # fmt: skip
    c2.download_button("The example's model (torch.export)", table_cache.example_program,
                       "diabetes-mlp.pt2",
                       "application/octet-stream", key=T_DL_MODEL, on_click="ignore")  # fmt: skip


def _valid(key: str, options, default) -> None:
    """A value from a link or another table that this table doesn't have falls back."""
    value = state.get(key)
    ok = all(v in options for v in value) and value if isinstance(value, list) else value in options
    if not ok:
        state.put(key, default)


def _default_target(names: list[str], example: bool) -> str:
    """The example's last column; else a column named like a target (scikit-learn's frames
    call it `target`), or none."""
    if example:
        return table_cache.example()[1].names[-1]
    return next((n for n in names if n.strip().lower() in TARGET_NAMES), NONE)


def _columns(table: tables.Table, example: bool) -> tuple[list[str], str]:
    """The target column (never a feature), then the features: by default every numeric
    column but the target, in the table's order; or a list the user edits."""
    names = list(table.names)
    _valid(state.T_TARGET, [NONE, *names], _default_target(names, example))
    c1, c2 = st.columns([1, 2])
    c1.selectbox(
        "Target column (optional)",
        [NONE, *names],
        key=state.T_TARGET,
        format_func=lambda n: "none" if n == NONE else n,
        help="Only for comparing the output with it; it is never an input.",
    )
    target = state.get(state.T_TARGET)
    candidates = [n for n in names if n != target]
    numeric = [n for n in table.numeric_names() if n != target]
    default = numeric or candidates[:1]
    text = [c for c in table.columns if not c.numeric]
    if text:
        st.caption(
            "Left out of the default choice, because they hold text: "
            + ", ".join(
                f"{render.plain(c.name)} ({quote(c.text[1])} in row {c.text[0] + 1})"
                for c in text[:10]
            )  # fmt: skip
            + (", …" if len(text) > 10 else "")
        )
    every = c2.toggle(
        f"Features: every numeric column but the target ({len(numeric):,})",
        key=state.T_ALL,
        help="Off: choose the columns and their order yourself.",
    )
    if every:
        features = default
        shown = ", ".join(render.plain(n) for n in features[:40])
        st.caption(
            f"The model's inputs, in this order ({len(features):,}): {shown}"
            + (", …" if len(features) > 40 else "")
        )
        return features, target
    chosen = [f for f in state.get(state.T_FEATURES) if f != target]
    if chosen != state.get(state.T_FEATURES):
        state.put(state.T_FEATURES, chosen)  # the target chosen since is never an input
    _valid(state.T_FEATURES, candidates, default)
    features = st.multiselect(
        "Feature columns: the model's inputs, in the order its forward takes them",
        candidates,
        key=state.T_FEATURES,
    )
    return features, target


def _output_options(facts: dict, names: tuple[str, ...] = ()) -> dict[str, str]:
    """Every column of every float output: option (JSON [key, column]) -> label; `names`
    name a tuple's entries (the bundled example's model card has them)."""
    options = {}
    for o in facts["outputs"]:
        if not o["floating"] or len(o["shape"]) not in (1, 2):
            continue
        key = o["key"]
        width = o["shape"][1] if len(o["shape"]) == 2 else 1
        where = "the output" if key is None else (f"output [{key}]" if isinstance(key, int)
                                                  else f"output [{key!r}]")  # fmt: skip
        if isinstance(key, int) and 0 <= key < len(names):
            where += f" ({names[key]})"
        for c in range(min(width, 1000)):
            label = where if width == 1 else f"{where}, column {c}"
            options[json.dumps([key, c])] = label
    return options


def _describe(run, digest: tuple, X: np.ndarray) -> dict:
    return table_cache.remembered(("outputs", *digest), lambda: run("table_outputs", X[:1]),
                                  lambda _: 1024)  # fmt: skip


def _sentence(err: BaseException) -> str:
    text = render.plain(err).rstrip()
    return text if text.endswith((".", "?", "!")) else text + "."


# --- the page --------------------------------------------------------------------------------


def _chosen_table() -> tuple | None:
    """The source choice, then the example's or the uploaded table and model:
    (example, table, model, kind, digest), or None when there is nothing to explain yet."""
    allowed = cache.uploads_allowed()
    if not allowed and state.get(state.T_SOURCE) != "example":
        state.put(state.T_SOURCE, "example")  # a link that asked for uploads
        st.info("Uploading tables and models is turned off on this server (--no-uploads).")
    st.radio(
        "Table and model",
        state.TABLE_SOURCES if allowed else ("example",),
        key=state.T_SOURCE,
        horizontal=True,
        format_func={
            "example": "Bundled example: diabetes (442 patients, 10 features in their own "
            "units) and a net that standardises inside forward and returns (y, y_scaled)",
            "upload": "Your own CSV and model",
        }.get,
    )
    example = state.get(state.T_SOURCE) == "example"
    if example:
        csv, model, kind = None, None, "auto"
        table = table_cache.example()[1]
        digest = ("example", table_cache.EXAMPLE)
        with st.expander("The example's files (the formats an upload takes)"):
            _example_downloads()
    else:
        csv, model, kind = _upload_section()
        table = None
        if csv is not None:
            try:
                table = table_cache.read_table(table_cache.sha(csv), csv)
            except tables.TableError as err:
                st.error(f"{render.plain(err)} Upload another file; your model is kept.")
                return None
        if table is None or model is None:
            st.info(
                f"Upload {'a CSV' if table is None else 'the model'}"
                f"{' and a model' if table is None and model is None else ''} to go on; the "
                "bundled example is one click above."
            )
            return None
        digest = ("upload", table_cache.sha(csv), table_cache.sha(model), kind)
    return example, table, model, kind, digest


def render_view() -> None:
    st.title("📊 Tables: which features does the output depend on?")
    st.caption(
        "For a net that takes a row of numbers: the sensitivity of the chosen output y to "
        "feature j is ∂y/∂xⱼ, by one backward pass per batch of rows; the ranking is its mean "
        "absolute value over the rows. It describes the model, not the world."
    )
    chosen = _chosen_table()
    if chosen is None:
        return
    example, table, model, kind, digest = chosen
    for note in table.notes:
        st.info(render.plain(note))
    features, target = _columns(table, example)
    missing = len(table.missing_rows(features)) if features else 0
    if missing:
        st.toggle(f"Leave out the {missing:,} rows with a missing value", key=state.T_DROP)
    try:
        X, kept = table.matrix(features, drop_missing=state.get(state.T_DROP))
    except tables.TableError as err:
        st.error(render.plain(err))
        return
    key = (*digest, tuple(features), bool(state.get(state.T_DROP)) and bool(missing))
    try:
        run = table_cache.handle(model, kind, X).run
        facts = _describe(run, key, X)
    except (UserModelError, ModelFailure) as err:
        hint = ""
        if str(err).startswith("The model failed on one"):
            s = "s" if len(features) != 1 else ""
            hint = (
                f" You chose {len(features)} column{s}: does the model take exactly these, in "
                "this order?"
            )
        st.error(f"{_sentence(err)}{hint} Your table and model are kept.")
        return
    names = tables.registry.table_model_info(table_cache.EXAMPLE).outputs if example else ()
    options = _output_options(facts, names)
    if not options:
        st.error("The model returned no float output to explain.")
        return
    _valid(state.T_OUTPUT, list(options), next(iter(options)))
    st.selectbox("Output to explain", list(options), format_func=options.get, key=state.T_OUTPUT,
                 help="An entry of a tuple or dict output, and a column of it.")  # fmt: skip
    out_key, column = json.loads(state.get(state.T_OUTPUT))
    width = _width(facts, out_key)
    score = _score_choice(width, column) if width > 1 else "logit"
    key = (*key, out_key, column, score)
    try:
        _explained_page(run, key, table, X, kept, features, target, out_key, column, score,
                        width)  # fmt: skip
    except (UserModelError, ModelFailure, tables.TableError) as err:
        st.error(f"{_sentence(err)} Your table and model are kept; try other columns.")


def _width(facts: dict, out_key) -> int:
    """How many columns the chosen output has."""
    for o in facts["outputs"]:
        if o["key"] == out_key:
            return int(o["shape"][1]) if len(o["shape"]) == 2 else 1
    return 1


def _score_choice(width: int, column: int) -> str:
    """A classifier's output (K ≥ 2 columns) is explained by the probability of the chosen
    class by default, as a user of a classifier reads it; its logit is one choice among
    three, as on the image pages."""
    st.radio(
        "Score",
        TABLE_SCORES,
        key=state.T_SCORE,
        horizontal=True,
        format_func=SCORE_LABELS.get,
        help="What y is, for an output with several columns: a classifier's classes.",
    )
    score = state.get(state.T_SCORE)
    st.caption(
        {
            "probability": f"y is the probability of class {column}: the softmax over the "
            f"output's {width} columns, taken at column {column}. A confident row (p near 0 "
            "or 1) moves little, so the rows near the decision weigh most.",
            "log_probability": f"y is the log-probability of class {column} (log-softmax over "
            f"the output's {width} columns): what the log-loss adds up, and unlike the "
            "probability it still moves where the class is already unlikely.",
            "logit": f"y is column {column} itself. For a softmax classifier one logit alone "
            "is not what the model predicts: adding the same number to every column changes "
            "no probability.",
        }[score]
    )
    return score


def _explained_page(run, key, table, X, kept, features, target, out_key, column, score, width):
    check = table_cache.remembered(
        ("check", *key),
        lambda: tables.check_gradients(run, X, output=out_key, column=column, score=score),
        lambda c: c.differences.nbytes * 2 + 1024,
    )

    def compute():
        bar = st.progress(0.0, text=f"Computing ∂y/∂x on {len(X):,} rows…")

        def progress(done, total):
            bar.progress(done / total, text=f"Computed {done:,} of {total:,} rows")

        try:
            return tables.explain(run, X, output=out_key, column=column, score=score,
                                  autograd=check.differentiable, progress=progress)  # fmt: skip
        finally:
            bar.empty()

    ex = table_cache.remembered(("explain", *key), compute,
                                lambda e: e.jacobian.nbytes + e.values.nbytes * 3)  # fmt: skip
    Xu = X[ex.rows]
    if not check.differentiable:
        st.warning(
            f"**Not differentiable here:** {render.plain(check.reason)}. So the sensitivities "
            f"below are **central finite differences** with a step of "
            f"{tables.FALLBACK_STEP:g}·std per feature, not autograd."
        )
    if len(ex.dropped):
        first = ", ".join(str(int(kept[r]) + 1) for r in ex.dropped[:5])
        st.warning(
            f"The model's output or gradient is NaN or inf on {len(ex.dropped):,} of "
            f"{len(X):,} rows (rows {first}{', …' if len(ex.dropped) > 5 else ''}): they are "
            "left out."
        )
    xt, jt = float64_tensor(Xu), float64_tensor(ex.jacobian)
    raw = saliency.ranking_from_jacobian(jt, xt, feature_names=features)
    scaled = saliency.ranking_from_jacobian(jt, xt, feature_names=features, scale="std")
    fit = _classifier_fit(run, key, table, target, kept[ex.rows], Xu, out_key, width)
    _fit_line(ex.values, table, target, kept[ex.rows], fit)
    shown = ranking_section(Xu, features, raw, scaled)
    _one_row(run, key, ex, Xu, kept, features, shown, out_key, column, score)
    _check_section(check, features, key)


def _classifier_fit(run, key, table, target, file_rows, Xu, out_key, width):
    """`(fit, classes)` when the target holds the class labels of a `width`-column output
    (`tables.class_labels`), else None: a classifier is judged by accuracy and log-loss, not by
    an R² of one column against a label."""
    if target == NONE or width < 2:
        return None
    y = table.column(target).values[file_rows]
    ok = np.isfinite(y)
    read = tables.class_labels(y[ok], width) if ok.sum() > 1 else None
    if read is None:
        return None
    labels, classes = read
    fit = table_cache.remembered(
        ("classify", *key[:-2], target),
        lambda: tables.classify(run, Xu[ok], labels, output=out_key),
        lambda _: 1024,
    )
    return fit, classes


def _fit_line(values, table, target, file_rows, fit=None) -> None:
    text = f"{len(values):,} rows; the output's mean {values.mean():.4g}, std {values.std():.4g}."
    if fit is not None:
        f, classes = fit
        named = (
            ""
            if classes == tuple(float(c) for c in range(len(classes)))
            else " (column c is the c-th of its values in sorted order: "
            + ", ".join(f"{c} = {v:g}" for c, v in enumerate(classes[:10]))
            + (", …" if len(classes) > 10 else "")
            + ")"
        )
        text += (
            f" Against {render.plain(target)}{named}: accuracy {f.accuracy:.2%} (argmax), "
            f"log-loss {f.log_loss:.4f} on {f.n:,} rows (every row, training rows included)."
        )
    elif target != NONE:
        y = table.column(target).values[file_rows]
        ok = np.isfinite(y)
        if ok.sum() > 1:
            resid = values[ok] - y[ok]
            r2 = 1 - (resid**2).sum() / ((y[ok] - y[ok].mean()) ** 2).sum()
            text += (
                f" Against {render.plain(target)}: R² {r2:.3f}, RMSE "
                f"{math.sqrt((resid**2).mean()):.4g} (on every row, training rows included)."
            )
    st.caption(text)


def _one_row(run, key, ex, Xu, kept, features, shown, out_key, column, score) -> None:
    st.subheader("One row")
    n = len(Xu)
    if state.get(state.T_ROW) > n:
        state.put(state.T_ROW, 1)
    c1, c2 = st.columns([1, 3])
    r = c1.number_input(f"Row (1 to {n:,})", 1, n, step=1, key=state.T_ROW) - 1
    file_row = int(kept[ex.rows[r]]) + 1
    c1.metric({"logit": "Prediction y", "probability": f"Probability of class {column}",
               "log_probability": f"Log-probability of class {column}"}[score],
              f"{ex.values[r]:.5g}")  # fmt: skip
    c1.caption(f"Data row {file_row:,} of the file.")
    scale = shown.std.numpy() if shown.scale == "std" else np.ones(len(features))
    g = ex.jacobian[r] * scale
    rows = [
        {"feature": f, "value": float(Xu[r, j]), "effect": float(g[j])}
        for j, f in enumerate(features)
    ]
    what = "∂y/∂xⱼ · stdⱼ" if shown.scale == "std" else "∂y/∂xⱼ"
    spec = {
        "data": {"values": rows},
        "mark": {"type": "bar"},
        "height": max(120, 26 * len(rows)),
        "encoding": {
            "x": {"field": "effect", "type": "quantitative", "title": f"{what} at this row"},
            "y": {"field": "feature", "type": "nominal", "sort": None, "title": None},
            "color": {
                "condition": {"test": "datum.effect < 0", "value": "#d6604d"},
                "value": "#4393c3",
            },  # fmt: skip
            "tooltip": [
                {"field": "feature", "type": "nominal"},
                {"field": "value", "type": "quantitative", "format": ".5g"},
                {"field": "effect", "type": "quantitative", "format": ".4g", "title": what},
            ],
        },
    }
    with c2:
        st.vega_lite_chart(None, spec, width="stretch")
    st.markdown("**Nudge a feature**: does the gradient predict what the model does?")
    best = shown.feature_names[int(shown.order[0, 0])]
    _valid(state.T_NUDGE, features, best)
    c1, c2 = st.columns([1, 3])
    name = c1.selectbox("Feature", features, key=state.T_NUDGE)
    j = features.index(name)
    std = float(tables.spreads(Xu)[j])
    try:
        nd = table_cache.remembered(
            ("nudge", *key, r, j),
            lambda: tables.nudges(run, Xu[r], j, std, output=out_key, column=column, score=score),
            lambda _: 4096,
        )
    except ModelFailure as err:  # e.g. NaN once the feature moves: the rest of the page stands
        c2.warning(f"The nudge can't be computed at this row: {render.plain(err)}")
        return
    table = [
        {
            "Δ (in std)": k,
            f"Δ {name}": float(d),
            "predicted Δy = Δ·∂y/∂x": float(p),
            "actual Δy": float(a),
            "error": float(a - p),
        }
        for k, d, p, a in zip(
            tables.NUDGES, nd["deltas"], nd["predicted"], nd["actual"], strict=True
        )  # fmt: skip
    ]
    c1.caption(
        f"∂y/∂{render.plain(name)} = {nd['gradient']:.4g} at this row. The prediction is "
        "first-order (Taylor): exact for a model linear in this feature, worse as Δ grows on a "
        "curved one."
    )
    c2.dataframe(table, hide_index=True, width="stretch")


def _check_section(check: tables.GradientCheck, features, key: tuple) -> None:
    st.subheader("Check autograd against finite differences")
    if st.button("Compare on a few rows", key=T_CHECK):
        st.session_state[T_CHECKED] = key
    if st.session_state.get(T_CHECKED) != key:
        st.caption(
            f"Central differences (f(x + h) − f(x − h)) / 2h with h = {tables.CHECK_STEP:g}·std "
            f"per feature, on {len(check.rows)} rows; finite differences are only for checking "
            "autograd, or for a model that is not differentiable."
        )
        return
    dtype = "float64 copy of the model" if check.float64 else "float32 (the model won't convert)"
    if check.autograd is None:
        st.error(f"Autograd failed: {render.plain(check.reason)}. The page uses differences.")
        return
    verdict = "agree" if check.differentiable else "do not agree"
    st.markdown(
        f"Max relative error **{check.rel_error:.2e}** over {len(check.rows)} rows × "
        f"{len(features)} features ({dtype}): autograd and finite differences {verdict}."
    )
    first = [
        {
            "feature": f,
            "autograd": float(check.autograd[0, j]),
            "finite differences": float(check.differences[0, j]),
        }  # fmt: skip
        for j, f in enumerate(features)
    ]
    st.dataframe(first, hide_index=True, width="stretch")
