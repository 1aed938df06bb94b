"""Tables (issue 12): the CSV reader, the ranking maths against independent references, the
autograd check and its fallback, and the Tables page through AppTest with uploads, good and
hostile."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import saliency
from pretrained import registry
from sandbox import jobs
from workspace import tables

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")
FEATURES = ("age", "sex", "bmi", "bp", "tc", "ldl", "hdl", "tch", "ltg", "glu")


# --- models and files the tests upload -------------------------------------------------------


class Linear(nn.Module):
    """y = x @ w + b: its Jacobian is w at every row."""

    def __init__(self, w, b: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("w", torch.tensor(w, dtype=torch.float32))
        self.b = b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w + self.b


class Rounded(nn.Module):
    """round(x @ w): autograd's gradient is zero everywhere."""

    def __init__(self, w) -> None:
        super().__init__()
        self.register_buffer("w", torch.tensor(w, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x @ self.w)


class DictOut(nn.Module):
    """A dict of a (N, 2) output and a (N,) one: column 1 of "both" is 3·x0 − x1."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"both": torch.stack([x[:, 0] ** 2, 3 * x[:, 0] - x[:, 1]], 1), "sum": x.sum(1)}


class SqrtFirst(nn.Module):
    """NaN wherever the first feature is negative."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(x[:, :1]) * 2


def torchscript(model: nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(model), buf)
    return buf.getvalue()


def exported(model: nn.Module, d: int) -> bytes:
    rows = torch.export.Dim("rows", min=1, max=100_000)
    program = torch.export.export(model, (torch.zeros(2, d),), dynamic_shapes=({0: rows},))
    buf = io.BytesIO()
    torch.export.save(program, buf)
    return buf.getvalue()


def csv_bytes(X: np.ndarray, names) -> bytes:
    lines = [",".join(names)] + [",".join(repr(float(v)) for v in row) for row in X]
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture(scope="module")
def mixed_units() -> np.ndarray:
    """300 rows of three features whose spreads are 1, 10 and 100."""
    return np.random.default_rng(0).normal(size=(300, 3)) * np.array([1.0, 10.0, 100.0])


def in_process(model: nn.Module):
    return lambda job, x, **kw: jobs.run(job, model, np.asarray(x, np.float32), **kw)


# --- the CSV reader -------------------------------------------------------------------------


def test_csv_reader_reads_numbers_and_records_text_and_missing_cells():
    t = tables.read_csv(b"a;b;c\n1;2;x\n3;NA;5\n5;6;7\n")  # semicolons
    assert t.names == ("a", "b", "c") and t.n_rows == 3
    assert t.numeric_names() == ("a", "b")
    assert t.column("c").text == (0, "x")
    np.testing.assert_array_equal(t.column("b").missing, [1])
    with pytest.raises(tables.TableError, match=r"Column 'c' has text in it \('x' in row 1\)"):
        t.matrix(["a", "c"])
    with pytest.raises(tables.TableError, match=r"Missing values in 'b' \(1\): rows 2\."):
        t.matrix(["a", "b"])
    X, rows = t.matrix(["a", "b"], drop_missing=True)
    np.testing.assert_array_equal(X, [[1, 2], [5, 6]])
    np.testing.assert_array_equal(rows, [0, 2])
    tabs = tables.read_csv(b"x\ty\n1\t2\n3\t4\n")
    np.testing.assert_array_equal(tabs.matrix(["x", "y"])[0], [[1, 2], [3, 4]])


@pytest.mark.parametrize(
    ("data", "kwargs", "message"),
    [
        (b"a,b\n1,2\n", {}, r"1 usable row: .* at least 2"),
        (b"a,b\n" + b"1,2\n" * 11, {"max_rows": 10}, r"More than 10 rows"),
        (b"a,b\n1,2\n" + b"3,4\n" * 100, {"max_bytes": 100}, r"this page reads CSV files up to"),
        (pickle.dumps({"a": 1}), {}, r"not a text CSV file"),
        (b"\xff\xfe\x80abc,def\n", {}, r"not a UTF-8 text CSV"),
        (b"a,b\n1,2\n3,4,5\n", {}, r"Row 2 has 3 values but the header has 2 columns"),
        (b"", {}, r"empty"),
        (b"a,b\n", {}, r"no data rows"),
        (b"a,b\ninf,2\n3,4\n", {}, r"Column 'a' has text in it \('inf' in row 1\)"),
    ],
)
def test_csv_reader_refuses_bad_files_saying_why(data, kwargs, message):
    with pytest.raises(tables.TableError, match=message):
        tables.read_csv(data, **kwargs).matrix(["a", "b"])


def test_duplicate_and_blank_header_names_are_made_unique():
    t = tables.read_csv(b"a,a,\n1,2,3\n4,5,6\n")
    assert t.names == ("a", "a (2)", "column 3")
    assert any("later one is now 'a (2)'" in n for n in t.notes)


# --- the ranking maths -----------------------------------------------------------------------


def test_bundled_example_page_path_equals_feature_ranking():
    """`explain` (batched, through the jobs) then `ranking_from_jacobian` is what the page
    shows; it must equal `saliency.feature_ranking` on the whole table at once."""
    model, table = tables.example()
    info = registry.table_model_info("diabetes-mlp")
    assert info.features == FEATURES and info.outputs == ("y", "y_scaled")
    X, _ = table.matrix(list(FEATURES))
    ex = tables.explain(in_process(model), X, output=0, column=0)
    assert ex.method == "autograd" and len(ex.rows) == 442 and not len(ex.dropped)
    xt = torch.tensor(X, dtype=torch.float32)
    for scale in (None, "std"):
        page = saliency.ranking_from_jacobian(
            torch.from_numpy(ex.jacobian), torch.from_numpy(X), feature_names=FEATURES, scale=scale
        )
        direct = saliency.feature_ranking(model, xt, output=0, feature_names=FEATURES, scale=scale)
        torch.testing.assert_close(page.sensitivity, direct.sensitivity, rtol=1e-5, atol=0)
        assert page.ranked(0)[0][0] == direct.ranked(0)[0][0]
        assert [n for n, _ in page.ranked(0)] == [n for n, _ in direct.ranked(0)]
    # The example is the kind of net people ask about: y_scaled's ranking is y's over y_std.
    scaled_out = saliency.feature_ranking(model, xt, output=1, feature_names=FEATURES)
    y_std = float(model.y_std)
    raw = saliency.feature_ranking(model, xt, output=0, feature_names=FEATURES)
    torch.testing.assert_close(scaled_out.sensitivity * y_std, raw.sensitivity, rtol=1e-4, atol=0)


def test_linear_model_ranks_by_weights_raw_and_weights_times_std(mixed_units):
    w = [2.0, -3.0, 0.5]
    model = Linear(w)
    X = torch.tensor(mixed_units, dtype=torch.float64)
    raw = saliency.feature_ranking(model.double(), X, feature_names=("a", "b", "c"))
    scaled = saliency.feature_ranking(model, X, feature_names=("a", "b", "c"), scale="std")
    torch.testing.assert_close(raw.sensitivity[0], torch.tensor(w, dtype=torch.float64).abs())
    torch.testing.assert_close(raw.signed[0], torch.tensor(w, dtype=torch.float64))
    std = X.std(0)
    torch.testing.assert_close(scaled.sensitivity[0], torch.tensor(w).double().abs() * std)
    assert [n for n, _ in raw.ranked(0)] == ["b", "a", "c"]
    assert [n for n, _ in scaled.ranked(0)] == ["c", "b", "a"]
    # a moves from 2nd to 3rd (1 place), c from 3rd to 1st (2 places): only c is flagged.
    assert saliency.rank_flips(raw, scaled) == [("c", 3, 1)]


def test_correlation_flag_fires_on_a_duplicated_column(mixed_units):
    X = np.column_stack([mixed_units, mixed_units[:, 1] * 2.54 + 1.0])  # d = b in other units
    pairs = saliency.correlated_pairs(torch.from_numpy(X), ("a", "b", "c", "d"))
    assert len(pairs) == 1 and pairs[0][:2] == ("b", "d")
    assert pairs[0][2] == pytest.approx(1.0, abs=1e-12)
    assert np.corrcoef(X.T)[1, 3] == pytest.approx(pairs[0][2], abs=1e-12)
    assert saliency.correlated_pairs(torch.from_numpy(mixed_units)) == []


def test_autograd_and_finite_differences_agree_on_the_smooth_example():
    model, table = tables.example()
    X, _ = table.matrix(list(FEATURES))
    check = tables.check_gradients(in_process(model), X, output=0, column=0)
    assert check.differentiable and check.float64
    assert check.rel_error < 1e-6
    assert len(check.rows) == tables.CHECK_ROWS


def test_a_rounded_model_falls_back_to_finite_differences(mixed_units):
    w = [2.0, -3.0, 0.5]
    run = in_process(Rounded(w))
    check = tables.check_gradients(run, mixed_units, output=None, column=0)
    assert not check.differentiable and "exactly zero" in check.reason
    ex = tables.explain(run, mixed_units, output=None, column=0, autograd=False)
    assert ex.method == "finite differences"
    # Steps of 0.1·std cross the rounding often enough that the mean slope is the weight's.
    np.testing.assert_allclose(np.abs(ex.jacobian).mean(0), np.abs(w), rtol=0.15)


def test_outputs_of_a_dict_model_and_one_column_are_explained(mixed_units):
    X = mixed_units[:, :2]
    facts = jobs.table_outputs(DictOut(), X[:1].astype(np.float32))
    assert [(o["key"], o["shape"]) for o in facts["outputs"]] == [("both", [1, 2]), ("sum", [1])]
    ex = tables.explain(in_process(DictOut()), X, output="both", column=1)
    np.testing.assert_allclose(ex.jacobian, np.tile([3.0, -1.0], (len(X), 1)))
    n = tables.nudges(in_process(DictOut()), X[0], 0, 1.0, output="both", column=0)
    # y = x0²: the actual change is 2·x0·Δ + Δ², the predicted one 2·x0·Δ.
    np.testing.assert_allclose(n["actual"] - n["predicted"], n["deltas"] ** 2, atol=1e-3)


def test_nan_rows_are_dropped_and_listed(mixed_units):
    ex = tables.explain(in_process(SqrtFirst()), mixed_units, output=None, column=0)
    negative = np.flatnonzero(mixed_units[:, 0] < 0)
    np.testing.assert_array_equal(ex.dropped, negative)
    x0 = mixed_units[ex.rows, 0]
    np.testing.assert_allclose(ex.jacobian[:, 0], 1 / np.sqrt(x0), rtol=1e-4)


# --- the page --------------------------------------------------------------------------------


def tables_page(**params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    for key, value in params.items():
        at.query_params[key] = value
    at.switch_page("page_files/tables.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def upload(at: AppTest, csv: bytes | None, model: bytes | None) -> AppTest:
    at.radio(key="t_source").set_value("upload").run()
    if csv is not None:
        at.file_uploader(key="t_csv_file").set_value(("t.csv", csv, "text/csv"))
    if model is not None:
        at.file_uploader(key="t_model_file").set_value(("m.pt", model, "application/octet-stream"))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def ranking(at: AppTest) -> dict[str, float]:
    frame = at.dataframe[0].value
    return dict(zip(frame["feature"], frame["mean |∂y/∂x|"], strict=True))


def messages(at: AppTest) -> str:
    return " ".join([e.body for e in at.error] + [w.body for w in at.warning])


def test_the_page_opens_on_the_example_and_shows_feature_ranking():
    at = tables_page()
    assert at.radio(key="t_scale").value == "std"  # the ranking that compares features first
    model, table = tables.example()
    X = torch.tensor(table.matrix(list(FEATURES))[0], dtype=torch.float32)
    for scale in ("none", "std"):
        at.radio(key="t_scale").set_value(scale).run()
        direct = saliency.feature_ranking(
            model, X, output=0, feature_names=FEATURES, scale=None if scale == "none" else scale
        )
        shown = ranking(at)
        assert list(shown) == [n for n, _ in direct.ranked(0)]
        for name, value in direct.ranked(0):
            assert shown[name] == pytest.approx(value, rel=1e-5)
    text = messages(at) + " ".join(i.body for i in at.info)
    assert "**tc** and **ldl**: r = +0.90" in text  # the correlation flag, computed
    assert "The order depends on the units" in text and "**sex**" in text
    assert "t_scale" not in at.query_params  # × std is the default: the link needn't say so
    # The autograd check, on the button.
    at.button(key="t_check").click().run()
    shown = " ".join(m.value for m in at.markdown)
    assert "autograd and finite differences agree" in shown


def test_the_url_reopens_the_view():
    at = tables_page(t_scale="std", t_row="5", t_nudge="bmi", t_output="[1, 0]")
    assert at.radio(key="t_scale").value == "std"
    assert at.number_input(key="t_row").value == 5
    assert at.selectbox(key="t_output").value == "[1, 0]"
    assert "∂y/∂bmi" in " ".join(c.value for c in at.caption)
    bad = tables_page(t_output="[7, 0]", t_nudge="nope")  # another model's output: falls back
    assert bad.selectbox(key="t_output").value == "[0, 0]"


@pytest.mark.parametrize("fmt", ["torchscript", "export"])
def test_an_uploaded_linear_model_ranks_by_its_weights(mixed_units, fmt):
    w = [2.0, -3.0, 0.5]
    data = torchscript(Linear(w)) if fmt == "torchscript" else exported(Linear(w), 3)
    at = upload(tables_page(), csv_bytes(mixed_units, "abc"), data)
    assert not at.error, messages(at)
    at.radio(key="t_scale").set_value("none").run()  # raw units: the weights themselves
    assert ranking(at) == pytest.approx({"b": 3.0, "a": 2.0, "c": 0.5}, rel=1e-6)
    at.radio(key="t_scale").set_value("std").run()
    std = mixed_units.std(0, ddof=1)
    expected = dict(zip("abc", np.abs(w) * std, strict=True))
    assert ranking(at) == pytest.approx(expected, rel=1e-5)


def test_bad_uploads_get_clear_messages_and_the_page_stays_usable(mixed_units):
    model = torchscript(Linear([2.0, -3.0, 0.5]))
    at = upload(tables_page(), csv_bytes(mixed_units[:, :2], "ab"), model)
    assert "The model failed on one (1, 2) row" in messages(at)
    assert "does the model take exactly these" in messages(at)

    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    at = upload(tables_page(), csv_bytes(mixed_units, "abc"), pickle.dumps(Evil()))
    assert "never unpickled" in messages(at)
    at = upload(at, b"a,b,c\n1,2,x\n3,4,5\n5,6,7\n", model)  # the model is kept
    assert "never unpickled" not in messages(at)
    assert "Left out of the default choice, because they hold text: c" in " ".join(
        c.value for c in at.caption
    )
    at.toggle(key="t_all").set_value(False).run()
    at.multiselect(key="t_features").set_value(["a", "b", "c"]).run()
    assert "Column 'c' has text in it" in messages(at)
    at = upload(tables_page(), b"a,b,c\n" + b"1.0000,2.0000,3.0000\n" * 1_000_000, None)
    assert "this page reads CSV files up to 16 MB" in messages(at)
    at = upload(at, csv_bytes(mixed_units, "abc"), torchscript(SqrtFirst()))
    assert "NaN or inf on" in messages(at) and at.dataframe  # the rest are ranked
    assert not at.exception


def test_a_100000_row_table_is_ranked_in_batches():
    """Thirteen jobs of 8,192 rows, with the progress bar between them; the result is the
    weights, as on a small table."""
    X = np.random.default_rng(1).normal(size=(100_000, 3))
    calls = []

    def run(job, x, **kw):
        calls.append(len(x))
        return jobs.run(job, Linear([2.0, -3.0, 0.5]), np.asarray(x, np.float32), **kw)

    ex = tables.explain(run, X, output=None, column=0, progress=lambda d, t: None)
    assert calls == [8192] * 12 + [100_000 - 12 * 8192]
    np.testing.assert_allclose(ex.jacobian, np.tile([2.0, -3.0, 0.5], (100_000, 1)))
    at = upload(tables_page(), csv_bytes(X, "abc"), torchscript(Linear([2.0, -3.0, 0.5])))
    assert not at.error, messages(at)
    at.radio(key="t_scale").set_value("none").run()
    assert ranking(at) == pytest.approx({"b": 3.0, "a": 2.0, "c": 0.5}, rel=1e-6)
    assert "100,000 rows" in " ".join(c.value for c in at.caption)


def test_a_target_column_is_never_a_feature(mixed_units):
    """A scikit-learn-style frame (features, then `target`): the target is found by its name,
    the model gets every other numeric column, and a target chosen later leaves the list."""
    y = mixed_units @ np.array([2.0, -3.0, 0.5])
    data = csv_bytes(np.column_stack([mixed_units, y]), ["a", "b", "c", "target"])
    at = upload(tables_page(), data, torchscript(Linear([2.0, -3.0, 0.5])))
    assert at.selectbox(key="t_target").value == "target"
    assert at.toggle(key="t_all").value is True
    assert not at.error, messages(at)
    assert "The model's inputs, in this order (3): a, b, c" in " ".join(c.value for c in at.caption)
    at.radio(key="t_scale").set_value("none").run()
    assert ranking(at) == pytest.approx({"b": 3.0, "a": 2.0, "c": 0.5}, rel=1e-6)
    # Edited by hand, then a feature made the target: it leaves the features.
    at.toggle(key="t_all").set_value(False).run()
    assert at.multiselect(key="t_features").value == ["a", "b", "c"]
    assert "target" not in at.multiselect(key="t_features").options
    at.selectbox(key="t_target").set_value("c").run()
    assert at.multiselect(key="t_features").value == ["a", "b"]
    assert "c" not in at.multiselect(key="t_features").options


# --- a classifier (issue 29.4) ---------------------------------------------------------------

CLASS_FEATURES = ("radius", "smoothness", "area", "concavity")


class Classifier(nn.Module):
    """An MLP with two logits that standardises its inputs inside forward, as a user's
    scikit-learn-style net does."""

    def __init__(self, mean, std) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


@pytest.fixture(scope="module")
def two_classes():
    return train_classifier()


def train_classifier():
    """400 rows of two Gaussian classes in four features of very different units (a radius
    in mm, a smoothness near 0.1, an area in mm², a concavity), labelled 0/1 in `target`, and
    an MLP trained on them in torch: `(X, y, model)`."""
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, size=400)
    centre = np.array([[17.5, 0.103, 980.0, 0.16], [12.1, 0.092, 460.0, 0.046]])
    spread = np.array([3.2, 0.013, 350.0, 0.07])
    X = centre[y] + rng.normal(size=(400, 4)) * spread
    torch.manual_seed(0)
    model = Classifier(X.mean(0), X.std(0))
    xt, yt = torch.tensor(X, dtype=torch.float32), torch.tensor(y)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    return X, y, model.eval()


def softmax_gradients(model: nn.Module, X: np.ndarray, column: int, score: str) -> torch.Tensor:
    """d p_c/dx (or d log p_c/dx, or d z_c/dx) of each row by one plain backward pass: the
    rows are independent, so the gradient of the sum is each row's gradient."""
    x = torch.tensor(X, dtype=torch.float32, requires_grad=True)
    z = model(x)
    s = {"logit": z, "probability": z.softmax(1), "log_probability": z.log_softmax(1)}[score]
    (g,) = torch.autograd.grad(s[:, column].sum(), x)
    return g.double()


@pytest.mark.parametrize("score", ["probability", "log_probability", "logit"])
def test_a_classifier_is_explained_by_its_class_probability(two_classes, score):
    X, _, model = two_classes
    run = in_process(model)
    ex = tables.explain(run, X, output=None, column=1, score=score)
    reference = softmax_gradients(model, X, 1, score)
    with torch.no_grad():
        z = model(torch.tensor(X, dtype=torch.float32))
    values = {"logit": z, "probability": z.softmax(1), "log_probability": z.log_softmax(1)}
    np.testing.assert_allclose(ex.values, values[score][:, 1].double().numpy(), rtol=1e-5)
    std = torch.from_numpy(X).std(0)
    ranked = saliency.ranking_from_jacobian(
        torch.from_numpy(ex.jacobian), torch.from_numpy(X), scale="std"
    )
    torch.testing.assert_close(ranked.sensitivity[0], reference.abs().mean(0) * std, rtol=1e-5,
                               atol=0)  # fmt: skip
    check = tables.check_gradients(run, X, output=None, column=1, score=score)
    assert check.differentiable and check.rel_error < 1e-5
    # The nudge moves the same score: the actual change is the model's own softmax moved.
    n = tables.nudges(run, X[3], 0, 3.2, output=None, column=1, score=score)
    moved = np.repeat(X[3:4], len(n["deltas"]), 0)
    moved[:, 0] += n["deltas"]
    with torch.no_grad():
        z2 = model(torch.tensor(np.vstack([X[3:4], moved]), dtype=torch.float32))
    s2 = {"logit": z2, "probability": z2.softmax(1), "log_probability": z2.log_softmax(1)}[score]
    actual = (s2[1:, 1] - s2[0, 1]).double().numpy()
    np.testing.assert_allclose(n["actual"], actual, rtol=1e-4, atol=1e-6)
    assert n["gradient"] == pytest.approx(float(reference[3, 0]), rel=1e-5)


def test_class_labels_and_the_classifiers_fit(two_classes):
    X, y, model = two_classes
    labels, classes = tables.class_labels(y.astype(float), 2)
    np.testing.assert_array_equal(labels, y)
    assert classes == (0.0, 1.0)
    relabelled = tables.class_labels(np.where(y == 1, 1.0, -1.0), 2)  # a −1/+1 label
    np.testing.assert_array_equal(relabelled[0], y)
    assert relabelled[1] == (-1.0, 1.0)
    assert tables.class_labels(X[:, 0], 2) is None  # a measurement, not a label
    assert tables.class_labels(np.array([0.0, 1.0, 2.0]), 2) is None  # three values, two columns
    fit = tables.classify(in_process(model), X, y, output=None)
    with torch.no_grad():
        z = model(torch.tensor(X, dtype=torch.float32)).double()
    accuracy = float((z.argmax(1).numpy() == y).mean())
    log_loss = float(nn.functional.cross_entropy(z, torch.tensor(y)))
    assert fit.n == 400 and fit.accuracy == accuracy and 0.8 < accuracy < 1.0
    assert fit.log_loss == pytest.approx(log_loss, rel=1e-6)
    # What the worker may answer for it is bounded by the rows, whatever the width.
    answer = jobs.table_classify(model, X.astype(np.float32), output=None, labels=y)
    sent = sum(a.nbytes for a in answer.values())
    assert sent <= jobs.answer_bytes("table_classify", X.shape, 0, {"labels": y}) == 8 * 2 * 400
    assert jobs.check_result("table_classify", answer, X.shape, 0, {"labels": y}) is None
    for job in ("table_jacobian", "table_check"):  # a score changes no answer's size
        kw = {"output": None, "column": 1, "score": "probability"}
        assert jobs.answer_bytes(job, X.shape, 0, kw) == jobs.answer_bytes(job, X.shape, 0, {})
    with pytest.raises(ValueError, match="score must be one of"):
        jobs.table_jacobian(model, X[:2].astype(np.float32), output=None, column=0, score="odds")


def test_an_uploaded_classifier_gets_probability_accuracy_and_log_loss(two_classes):
    """A scikit-learn-style CSV (four features, then `target` 0/1) and an exported MLP with
    two logits, run in the sandboxed worker: the page opens on the probability of the chosen
    class, ranks by d p/dx × std as autograd computes it, and reports accuracy and log-loss,
    not an R² of a logit against a 0/1 label."""
    X, y, model = two_classes
    data = csv_bytes(np.column_stack([X, y]), [*CLASS_FEATURES, "target"])
    at = upload(tables_page(), data, exported(model, 4))
    assert not at.error, messages(at)
    assert at.radio(key="t_score").value == "probability"
    assert at.selectbox(key="t_output").value == "[null, 0]"
    at.selectbox(key="t_output").set_value("[null, 1]").run()
    std = torch.from_numpy(X).std(0)
    for score in ("probability", "log_probability", "logit"):
        at.radio(key="t_score").set_value(score).run()
        assert not at.error, messages(at)
        expected = softmax_gradients(model, X, 1, score).abs().mean(0) * std
        shown = ranking(at)
        assert list(shown) == [CLASS_FEATURES[j] for j in expected.argsort(descending=True)]
        for j, name in enumerate(CLASS_FEATURES):
            assert shown[name] == pytest.approx(float(expected[j]), rel=1e-5)
    with torch.no_grad():
        z = model(torch.tensor(X, dtype=torch.float32)).double()
    accuracy = float((z.argmax(1).numpy() == y).mean())
    log_loss = float(nn.functional.cross_entropy(z, torch.tensor(y)))
    captions = " ".join(c.value for c in at.caption)
    assert f"accuracy {accuracy:.2%} (argmax), log-loss {log_loss:.4f} on 400 rows" in captions
    assert "R²" not in captions
    at.radio(key="t_score").set_value("probability").run()
    assert at.metric[0].label == "Probability of class 1"
    assert "t_score" not in at.query_params  # the probability is the default


def test_a_regression_keeps_its_r2_and_has_no_score(mixed_units):
    y = mixed_units @ np.array([2.0, -3.0, 0.5]) + 1.0
    data = csv_bytes(np.column_stack([mixed_units, y]), ["a", "b", "c", "target"])
    at = upload(tables_page(), data, torchscript(Linear([2.0, -3.0, 0.5])))
    assert not at.error, messages(at)
    assert not [r for r in at.radio if r.key == "t_score"]
    captions = " ".join(c.value for c in at.caption)
    assert "R² " in captions and "accuracy" not in captions
