"""The explore route (`dashboard.serve`, `GET /api/explore/panel`): the Explore panel's payload
for a view's query, without a session. The panel draws it before the page's rerun brings the
same payload (tests/browser/test_browser.py checks that in Chromium); here, that it *is* the
same, and that it serves nothing but public content."""

from __future__ import annotations

import hostile
import numpy as np
import pytest
from test_dashboard import panel_payload, run_app

from dashboard import cache
from dashboard.components import saliency_panel
from dashboard.views import explore, explore_explained


@pytest.fixture(autouse=True)
def route_on(monkeypatch):
    """As under `python -m dashboard`: the pages know where the route is."""
    monkeypatch.setenv(explore.ROUTE_ENV, "/api/explore/panel")


def routed(data: dict, **change) -> tuple[dict, dict]:
    """The route's answer to the page's query, with `change`."""
    query = {**data["route"]["query"], **change, "seq": str(data["seq"])}
    return saliency_panel.unpack(explore.route_payload(query))


def assert_same(page: tuple[dict, dict], route: tuple[dict, dict]) -> None:
    """The same data (less what says which arrays travelled, and what the session's server
    drew or heard) and the same arrays, by content."""
    (p_data, p_arrays), (r_data, r_arrays) = page, route
    assert (r_data["fallback"], r_data["alive"]) == (False, True)  # the panel has nothing to say
    session = ("arrays", "fallback", "alive")
    strip = lambda d: {k: v for k, v in d.items() if k not in session}  # noqa: E731
    assert strip(r_data) == strip(p_data)
    ids = lambda d: {k: v["id"] for k, v in d["arrays"].items()}  # noqa: E731
    assert ids(r_data) == ids(p_data)
    for name, array in r_arrays.items():  # the route carries every array
        if name in p_arrays:
            np.testing.assert_array_equal(array, p_arrays[name])
    assert set(r_arrays) == set(r_data["arrays"])


def test_the_route_answers_what_the_page_then_shows():
    at = run_app()
    page = panel_payload(at)
    route = page[0]["route"]
    assert route["query"]["index"] == "0" and (route["next"], route["previous"]) == (1, 9999)
    assert route["buttons"] == {"next": "Next ▶", "previous": "◀ Previous"}
    assert_same(page, routed(page[0]))

    # Next: what the route gave for route["next"] is what the page's rerun brings.
    asked = routed(page[0], index=str(route["next"]))
    at.button(key="next").click().run()
    now = panel_payload(at)
    assert now[0]["route"]["query"]["index"] == "1"
    assert_same(now, asked)

    # A method, a class score, a model: the same.
    for key, value, kind in [
        ("method", "input_x_gradient", at.selectbox),
        ("score", "log_probability", at.radio),
    ]:
        asked = routed(now[0], **{key: value})
        at.run()  # (a map control's change runs the fragment alone: AppTest keeps its elements)
        kind(key=key).set_value(value).run()
        now = panel_payload(at)
        assert now[0]["route"]["query"][key] == value
        assert_same(now, asked)
    asked = routed(now[0], model="mnist-mlp")
    at.run()
    at.selectbox(key="model").select("mnist-mlp").run()
    now = panel_payload(at)
    assert_same(now, asked)
    # A second answer to the same query comes from the route's cache, byte for byte.
    query = {**now[0]["route"]["query"], "seq": "0"}
    assert explore.route_payload(query) is explore.route_payload(dict(query))


def _sidebar_keys(at) -> set[str]:
    return {w.key for kind in ("selectbox", "radio") for w in at.sidebar.get(kind)}


def test_the_panel_owns_the_method_score_and_model_pickers_where_the_route_answers(monkeypatch):
    """The route carries the pickers' labels and choices (every method, every class score,
    the data set's public models as the sidebar names them); while the panel draws them, the
    sidebar draws no method or score box (its model box stays, hidden by panel.css), and it
    draws them again where the panel failed or the route can't answer (models compared)."""
    from dashboard import state

    monkeypatch.setenv("SALIENCY_PANEL_WAIT_S", "3")
    at = run_app(method="input_x_gradient", score="probability")
    at.session_state["explore_panel"] = {"alive": True}  # the panel drew
    at.run()
    data, _ = panel_payload(at)
    pickers = data["route"]["pickers"]
    assert pickers["labels"] == {"method": "Method", "score": "Class score", "model": "Model"}
    assert pickers["methods"] == [[m, label] for m, label in explore.METHOD_LABELS.items()]
    assert [m for m, _ in pickers["scores"]] == list(state.SCORES)
    assert dict(pickers["scores"])["log_probability"] == "log p"
    public = state.public_models("mnist")
    assert [m for m, _ in pickers["models"]] == public and "mnist-mlp" in public
    assert dict(pickers["models"])["mnist-cnn"].startswith("mnist-cnn (")
    query = data["route"]["query"]
    assert (query["method"], query["score"], query["model"]) == (
        "input_x_gradient", "probability", "mnist-cnn",
    )  # fmt: skip
    keys = _sidebar_keys(at)
    assert "model" in keys and not keys & {"method", "score"}

    at.session_state["explore_panel"] = {"alive": False}  # it failed: the sidebar's boxes
    at.run()
    assert {"method", "score"} <= _sidebar_keys(at)
    assert at.selectbox(key="method").value == "input_x_gradient"
    assert at.radio(key="score").value == "probability"

    at = run_app(compare="mnist-mlp")  # no route: the sidebar's, the panel alive or not
    at.session_state["explore_panel"] = {"alive": True}
    at.run()
    assert panel_payload(at)[0]["route"] is None and {"method", "score"} <= _sidebar_keys(at)


def _sidebar_block_ids(at) -> list[str]:
    found = []

    def walk(node) -> None:
        for child in getattr(node, "children", {}).values():
            if type(child).__name__ == "Block":
                found.append(child.proto.id)
            walk(child)

    walk(at.sidebar)
    return found


@hostile.needs_sandbox
def test_the_sidebars_model_box_hides_only_while_it_offers_the_pickers_models():
    """The sidebar's model box is in the container that panel.css hides (while the panel's
    Model picker shows) only while it offers the public models alone, as that picker does:
    with an upload of this session's, which the route can't offer, it stays."""
    from test_every_view import SmallCNN

    from dashboard import state

    at = run_app()
    assert any(i.endswith("-public_model_box") for i in _sidebar_block_ids(at))
    at.switch_page("page_files/your_model.py").run()
    net = hostile.scripted(SmallCNN().eval())
    at.file_uploader(key="um_file").set_value(("mine.pt", net, "application/octet-stream"))
    at.button(key="um_submit").click().run()
    assert not at.exception, [e.value for e in at.exception]
    at.switch_page("page_files/explore.py").run()
    assert not any(i.endswith("-public_model_box") for i in _sidebar_block_ids(at))
    public = state.public_models("mnist")  # and the upload:
    assert len(at.selectbox(key="model").options) == len(public) + 1


def test_what_the_pickers_report_is_checked():
    """The panel's trigger "choose" reaches the view only as a known method, a class score,
    or one of the data set's public models."""
    models = ["mnist-cnn", "mnist-mlp"]
    assert explore.panel_choice({"key": "method", "value": "smoothgrad"}, models) == (
        "method", "smoothgrad",
    )  # fmt: skip
    assert explore.panel_choice({"key": "score", "value": "log_probability"}, models) == (
        "score", "log_probability",
    )  # fmt: skip
    assert explore.panel_choice({"key": "model", "value": "mnist-mlp"}, models) == (
        "model", "mnist-mlp",
    )  # fmt: skip
    for bad in [
        {"key": "method", "value": "nope"}, {"key": "score", "value": "logits"},
        {"key": "model", "value": "fashion-mnist-cnn"}, {"key": "model", "value": ["mnist-mlp"]},
        {"key": "target", "value": "3"}, {"key": ["method"], "value": "gradient"},
        {"key": "method"}, None, ["method", "gradient"],
    ]:  # fmt: skip
        assert explore.panel_choice(bad, models) is None, bad


def test_the_filters_choose_next_and_previous():
    at = run_app(true_class="3", correctness="wrong")
    data, _ = panel_payload(at)
    route = data["route"]
    pred = cache.predictions("mnist-cnn", "mnist").predicted
    labels = cache.dataset("mnist").labels.numpy()
    wrong_threes = np.flatnonzero((labels == 3) & (pred != labels))
    index = int(route["query"]["index"])
    later = wrong_threes[wrong_threes > index]
    assert route["next"] == int(later[0] if len(later) else wrong_threes[0])
    at.button(key="next").click().run()
    assert panel_payload(at)[0]["route"]["query"]["index"] == str(route["next"])


@pytest.mark.parametrize(
    ("query", "error", "message"),
    [
        ({"dataset": "mnist", "model": "nope"}, LookupError, "no model"),
        ({"dataset": "mnist", "model": "fashion-mnist-cnn"}, LookupError, "no model"),
        ({"dataset": "up:abc", "model": "mnist-cnn"}, LookupError, "no data set"),
        ({"dataset": "mnist", "model": "mnist-cnn", "index": "10000"}, LookupError, "no image"),
        ({"dataset": "mnist", "model": "mnist-cnn", "index": "-1"}, ValueError, "number"),
        ({"dataset": "mnist", "model": "mnist-cnn", "target": "10"}, ValueError, "class"),
        ({"dataset": "mnist", "model": "mnist-cnn", "method": "x"}, ValueError, "one of"),
        ({"dataset": "mnist", "model": "mnist-cnn", "clip": "nan"}, ValueError, "number"),
    ],
)
def test_the_route_refuses_what_is_not_public_or_not_well_formed(query, error, message):
    with pytest.raises(error, match=message):
        explore.route_payload(query)


def test_comparisons_get_no_route_and_other_keys_change_nothing():
    at = run_app(compare="mnist-mlp")
    assert panel_payload(at)[0]["route"] is None  # the route knows no comparisons
    # Keys the route doesn't read (a session's upload keys among them) change nothing.
    at = run_app()
    data, _ = panel_payload(at)
    plain = routed(data)
    extra = routed(data, mine="AAAAAAAA", compare="mnist-mlp", source="upload")
    assert_same(plain, extra)


def test_the_same_maps_asked_twice_at_once_are_computed_once():
    """A page's rerun and the route (or two students) asking for the same new maps at the same
    moment: the second waits for the first and reads its cache (`cache.one_at_a_time`)."""
    import threading
    import time

    import streamlit as st

    calls = []

    @cache.one_at_a_time
    @st.cache_data(show_spinner=False)
    def slow(image: np.ndarray, method: str) -> float:
        calls.append(method)
        time.sleep(0.3)
        return float(image.sum())

    image = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    out = []
    threads = [threading.Thread(target=lambda: out.append(slow(image, "m"))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == [66.0] * 3 and calls == ["m"]
    assert slow(image + 1, "m") == 78.0 and calls == ["m", "m"]  # other arguments: computed
    assert not cache._COMPUTING  # no lock left behind


def test_the_route_keeps_answers_within_its_byte_bound(monkeypatch):
    monkeypatch.setattr(explore._route_cache, "max_bytes", 100_000)  # about two 28 × 28 answers
    for i in range(5):
        explore.route_payload({"dataset": "mnist", "model": "mnist-linear", "index": str(i)})
    sizes = [len(b) for b in explore._route_cache.values()]
    assert explore._route_cache.bytes == sum(sizes) <= 100_000 and len(sizes) >= 1
    newest = {"dataset": "mnist", "model": "mnist-linear", "index": "4"}
    assert explore.route_payload(newest) is list(explore._route_cache.values())[-1]


def _fields_equal(a: explore.Explained, b: explore.Explained) -> None:
    for name in explore.Explained.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, dict):
            assert x.keys() == y.keys(), name
            for k in x:
                np.testing.assert_array_equal(x[k], y[k])
        elif isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y)
        else:
            assert x == y, name


def _view(**change) -> dict:
    from dashboard import state

    view = {k: f.default for k, f in state.FIELDS.items() if k not in ("dataset", "model")}
    return {**view, "dataset": "mnist", "model": "mnist-linear", "compare": [], **change}


def test_the_page_draws_with_the_view_module_imported_once(monkeypatch):
    """st.navigation executes a page's script afresh on every rerun: the view must be the
    imported module, not a copy made per rerun, or its kept answers (`explained`) would be
    made again and thrown away on every click."""
    from dashboard.lru import BytesLRU

    kept = BytesLRU(explore.EXPLAINED_BYTES)
    monkeypatch.setattr(explore_explained, "_explained", kept)  # the store `explained` reads
    at = run_app(index="11")
    assert len(list(kept.values())) == 1
    (ex,) = kept.values()
    assert ex.target == panel_payload(at)[0]["target"]
    at.run()  # the rerun finds it kept: nothing new
    assert list(kept.values()) == [ex]


@pytest.mark.parametrize(
    "change",
    [{}, {"target": "3"}, {"target": "true"}, {"method": "input_x_gradient"},
     {"score": "probability"}, {"sign": "signed"}, {"scale": "shared"}, {"clip": 90.0},
     {"alpha": 0.3}, {"cmap": "magma"}, {"sign": "signed", "cmap_signed": "PuOr"},
     {"model": "mnist-mlp"}, {"compare": ["mnist-mlp"]}],
)  # fmt: skip
def test_a_view_seen_again_is_the_same_as_computed_afresh(change):
    """`explained` keeps its latest answers: each setting it reads must be part of the key (a
    change of any one gets that view's own numbers, not the last one's), and what it hands
    out can't be changed in place by a caller."""
    from dashboard import sources

    src = sources.source("mnist")
    image, true = src.image(7), int(src.labels[7])
    explore.explained(_view(), image, true)  # the view before the change, kept
    got = explore.explained(_view(**change), image, true)
    _fields_equal(got, explore._explained_now(_view(**change), image, true))
    assert explore.explained(_view(**change), image, true) is got  # seen again: kept
    other_true = (true + 1) % 10
    assert explore.explained(_view(**change), image, other_true) is not got
    with pytest.raises(ValueError, match="read-only"):
        got.sent[0, 0, 0] = 1.0


def test_explained_keeps_answers_within_its_byte_bound(monkeypatch):
    from dashboard import sources

    monkeypatch.setattr(explore._explained, "max_bytes", 80_000)  # about two 28 × 28 answers
    src = sources.source("mnist")
    for i in range(5):  # views no other test asked for: each is computed, then kept
        explore.explained(_view(clip=77.5), src.image(i), int(src.labels[i]))
    kept = list(explore._explained.values())
    total = sum(a.nbytes for ex in kept for a in explore._arrays_of(ex))
    assert explore._explained.bytes == total <= 80_000 and len(kept) >= 1


def test_the_shared_byte_bounded_cache_drops_the_least_recently_used():
    """dashboard.lru.BytesLRU, under the route's, `explained`'s, the PNGs' and the tables'
    caches: a value read is used again; past the bound the oldest go; one too big is not kept."""
    from dashboard.lru import BytesLRU

    lru = BytesLRU(10)
    for k in "abc":
        lru.put(k, k.upper(), 4)  # 12 bytes > 10: "a" goes
    assert lru.get("a") is None and list(lru.values()) == ["B", "C"] and lru.bytes == 8
    assert lru.get("b") == "B"  # now the most recently used
    lru.put("d", "D", 4)  # "c" goes, not "b"
    assert list(lru.values()) == ["B", "D"] and lru.bytes == 8
    lru.put("d", "other", 4)  # a key already kept keeps its value
    assert lru.get("d") == "D"
    assert lru.put("big", "BIG", 100) is False  # over the bound alone: not kept (issue 28)
    assert list(lru.values()) == ["B", "D"] and lru.bytes == 8


def test_the_served_route_answers_uncompressed_what_the_library_packs(server):
    """Over HTTP from `python -m dashboard`: the answer is the panel's payload for the query,
    sent as is although the browser accepts gzip (float maps hardly compress: see
    `dashboard.serve.Uncompressed`). A refused query gets its error as JSON."""
    import json
    import urllib.error
    import urllib.request

    query = "dataset=mnist&model=mnist-mlp&index=5&method=input_x_gradient&seq=3"
    asked = urllib.request.Request(f"{server.url}/api/explore/panel?{query}",
                                   headers={"Accept-Encoding": "gzip, deflate, br"})  # fmt: skip
    with urllib.request.urlopen(asked, timeout=60) as answer:
        assert answer.headers.get("Content-Encoding") is None
        body = answer.read()
    data, arrays = saliency_panel.unpack(body)
    mine = dict(pair.split("=") for pair in query.split("&"))
    want_data, want_arrays = saliency_panel.unpack(explore.route_payload(mine))
    assert data["seq"] == want_data["seq"] == 3 and data["target"] == want_data["target"]
    assert set(arrays) == set(want_arrays)
    for name, array in want_arrays.items():
        np.testing.assert_allclose(arrays[name], array, rtol=1e-5, atol=1e-7)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{server.url}/api/explore/panel?dataset=nope", timeout=60)
    assert refused.value.code == 404 and "no data set" in json.load(refused.value)["error"]
