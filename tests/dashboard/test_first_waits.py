"""Issue 29.6: long first waits. A bundled model's test-set predictions are read, not computed
on a visitor's click; countable work shows its count, rate and time left."""

from __future__ import annotations

import numpy as np
import pytest

from dashboard import cache, render
from pretrained import test_predictions


@pytest.fixture
def no_model_runs(monkeypatch):
    """`cache.run` refuses: what passes had no model run."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a model ran: {args[:2]}")

    monkeypatch.setattr(cache, "run", refuse)
    cache.test_set_probabilities.clear()
    yield
    cache.test_set_probabilities.clear()


@pytest.mark.parametrize(
    "name, dataset", [("mnist-cnn", "mnist"), ("fashion-mnist-mlp", "fashion-mnist")]
)
def test_bundled_predictions_need_no_model_run(no_model_runs, name, dataset):
    """What Start a class and Misclassifications ask first (`cache.predictions`) is answered from
    the stored file: before, 10,000 images were classified (8 s of a core for mnist-cnn)."""
    preds = cache.predictions(name, dataset)
    stored = test_predictions.stored(name, dataset)
    np.testing.assert_array_equal(preds.predicted, stored.argmax(1))
    labels = cache.dataset(dataset).labels.numpy()
    info = cache.model_info(name)
    assert int((preds.predicted == labels).sum()) == round(info.test_accuracy * 10_000)


def test_other_weights_are_computed_with_progress(monkeypatch):
    """A model without stored answers is classified in chunks of 1000, each step counted."""
    calls = []

    def fake_run(name, job, x, **kwargs):
        calls.append(len(x))
        return np.full((len(x), 10), 0.1, np.float32)

    steps = []
    monkeypatch.setattr(cache, "run", fake_run)
    monkeypatch.setattr(test_predictions, "stored", lambda name, dataset: None)
    monkeypatch.setattr(
        cache, "page_progress", lambda text: _Recorder(steps)
    )  # the bar's calls, as a page would see them
    cache.test_set_probabilities.clear()
    try:
        probs = cache.test_set_probabilities("mnist-cnn", "mnist")
    finally:
        cache.test_set_probabilities.clear()
    assert probs.shape == (10_000, 10) and calls == [1000] * 10
    assert steps == [(1000 * i, 10_000) for i in range(1, 11)]


class _Recorder:
    def __init__(self, steps):
        self.steps = steps

    def __enter__(self):
        return lambda done, total: self.steps.append((done, total))

    def __exit__(self, *exc):
        return False


def test_counted_words(monkeypatch):
    monkeypatch.setattr(render.time, "perf_counter", lambda: 12.0)
    assert render.counted(3000, 10_000, 10.0) == (
        "3,000 / 10,000 images · 1,500 images/s · about 5 s left"
    )
    assert render.counted(5, 10, 11.0, unit="rows") == "5 / 10 rows · 5 rows/s · about 1 s left"


def test_a_shared_computations_bar_counts_from_its_start_and_says_when_it_waits(monkeypatch):
    class Bar:
        def __init__(self):
            self.shown = []

        def progress(self, value, text):
            self.shown.append((value, text))

    monkeypatch.setattr(render.time, "perf_counter", lambda: 10.0)
    bar = Bar()
    start, progress, wait = render.bar_calls(bar, "Another visitor is computing this.")
    monkeypatch.setattr(render.time, "perf_counter", lambda: 12.0)
    progress(3000, 10_000)
    wait()
    assert start == 10.0
    assert bar.shown == [
        (0.3, "3,000 / 10,000 images · 1,500 images/s · about 5 s left"),
        (0.0, "Another visitor is computing this."),
    ]


def test_page_progress_is_silent_off_a_page():
    """Off a page's run (the explore route's thread), the bar is a no-op, not an error."""
    with cache.page_progress("x") as step:
        step(1, 2)
