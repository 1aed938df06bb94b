"""The live reveal reads the class against itself (issue 33): the page publishes and shows
`saliency.agreement`'s numbers for the stored paintings and the model's maps (computed here
independently), says plainly when 3 paintings are too few for a ceiling, works on a
workspace, and exports the round as a `.npz` that loads back (SQLite and Postgres)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

import pretrained  # noqa: E402
import saliency  # noqa: E402
from dashboard import cache, live_class, rate_limits  # noqa: E402
from dashboard.live_store import LiveError, LiveStore  # noqa: E402

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")


@pytest.fixture()
def class_db(tmp_path, monkeypatch) -> LiveStore:
    url = f"sqlite:///{tmp_path / 'live.sqlite3'}"
    monkeypatch.setenv("SALIENCY_CLASS_DB", url)
    cache.live_store.clear()
    rate_limits.clear()
    yield LiveStore(url)
    cache.live_store.clear()
    rate_limits.clear()


def text(at: AppTest) -> str:
    return " ".join([m.value for m in at.markdown] + [c.value for c in at.caption])


def a_round(class_db, paintings: list[np.ndarray], *, dataset: str | None = None, index=0):
    """A teacher's page that opened a map round on `index`, the paintings sent as students
    (joined straight in the store), and revealed."""
    teacher = AppTest.from_file(APP, default_timeout=300)
    if dataset:
        teacher.query_params["dataset"] = dataset
    teacher.switch_page("page_files/live.py")
    teacher.run()
    teacher.button(key="live_start").click().run()
    code = teacher.query_params["room"]
    students = [class_db.join(code, f"s{i}") for i in range(len(paintings))]
    teacher.number_input(key="live_index").set_value(index).run()
    teacher.button(key="live_open").click().run()
    for me, p in zip(students, paintings, strict=True):
        class_db.answer(code, me, 1, painting=p)
    teacher.button(key="live_reveal").click().run()
    assert not teacher.exception, [e.value for e in teacher.exception]
    key = teacher.session_state["live_teachers"][code]
    return teacher, code, key


def blobs(k: int, seed: int = 0) -> list[np.ndarray]:
    """K paintings around the digit's middle, each student a little off."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(k):
        p = np.zeros((28, 28))
        r, c = rng.integers(6, 12, 2)
        p[r : r + 12, c : c + 8] = 1.0
        p[rng.integers(0, 28), rng.integers(0, 28)] = 0.5
        out.append(p)
    return out


def direct_map(index: int, target: int) -> np.ndarray:
    model = pretrained.load_model("mnist-cnn", device="cpu")
    x, _ = pretrained.load_dataset("mnist", "test")[index : index + 1]
    return saliency.gradients(model, x, target=target)[0, 0].double().numpy()


def test_the_reveal_shows_the_librarys_numbers_and_exports_the_round(class_db, monkeypatch):
    exported = []
    real = live_class.round_npz

    def keep(*args, **kwargs):  # what the page's download button is given
        exported.append(real(*args, **kwargs))
        return exported[-1]

    monkeypatch.setattr(live_class, "round_npz", keep)
    teacher, code, key = a_round(class_db, blobs(6))
    rnd = class_db.current_round(code)
    got = rnd.result["agreement"]

    # The same numbers from the library, on the stored paintings and maps computed here.
    stored = np.stack([a.painting for a in class_db.answers(code, key, 1)])
    target = rnd.spec["target"]
    chosen = rnd.result["null_images"]
    assert len(chosen) == 8 and 0 not in chosen and chosen == sorted(set(chosen))
    others = np.stack([direct_map(i, target) for i in chosen])
    expect = saliency.class_agreement(stored, direct_map(0, target), others)
    assert got["n"] == 6 and got["draws"] == 50
    assert got["ceiling"] == pytest.approx(expect.ceiling, abs=1e-12)  # paintings only
    assert got["alignment"] == pytest.approx(expect.alignment, abs=1e-3)
    assert got["interval"] == pytest.approx(list(expect.interval), abs=1e-2)
    assert got["null"] == pytest.approx(expect.null.tolist(), abs=1e-3)
    assert (got["dice"], got["iou"]) == pytest.approx((expect.dice, expect.iou), abs=1e-9)
    assert got["blurred_rho"] == pytest.approx(expect.blurred_rho, abs=1e-3)
    assert got["ceiling"] > 0.2 and got["ceiling_reason"] is None

    # What the projector says, in those numbers.
    shown = text(teacher)
    lo, hi = got["interval"]
    assert (
        f"**Your class agreed with itself at ρ {got['ceiling']:.2f}** (split-half: the class "
        f"cut in two at random, 50 times). **The model reached {got['alignment']:.0%} of "
        f"that** (95 % interval {lo:.0%} to {hi:.0%})."
    ) in shown
    null = got["null"]
    assert (
        f"against 8 other images' maps gives ρ {np.mean(null):+.2f} on average "
        f"({min(null):+.2f} to {max(null):+.2f}). This image's map, at ρ {rnd.result['rho']:+.2f}, "
        + ("beats every one" if rnd.result["rho"] > max(null) else "does no better than some")
    ) in shown
    assert f"Dice {got['dice']:.2f}, IoU {got['iou']:.2f}" in shown
    assert f"With both maps blurred (a stroke's width off is forgiven): ρ " \
        f"{got['blurred_rho']:+.2f}." in shown  # fmt: skip

    # The export: the button, and what it holds loads back without pickles.
    labels = [b.proto.label for b in teacher.get("download_button")]
    assert "Download the class's paintings (.npz)" in labels
    with np.load(io.BytesIO(exported[-1]), allow_pickle=False) as z:
        assert z["paintings"].shape == (6, 28, 28) and z["paintings"].dtype == np.float32
        np.testing.assert_array_equal(z["paintings"], stored.astype(np.float32))
        np.testing.assert_array_equal(z["map"], np.float32(rnd.result["map"]).reshape(28, 28))
        x, y = pretrained.load_dataset("mnist", "test")[:1]
        np.testing.assert_array_equal(z["image"], x[0].numpy())
        assert int(z["true_label"]) == int(y[0]) == 7 and int(z["target"]) == target
        assert str(z["model"]) == cache.display_name("mnist-cnn")
        assert str(z["model_id"]) == "mnist-cnn" and str(z["dataset"]) == "mnist"
        assert float(z["round_time"]) == rnd.opened and int(z["round"]) == 1
        assert "nickname" not in z.files and "s0" not in str(z["model"])


def test_three_paintings_give_the_raw_rho_and_say_the_ceiling_cannot_be_measured(class_db):
    teacher, code, _ = a_round(class_db, blobs(3, seed=1))
    r = class_db.current_round(code).result
    assert r["agreement"]["ceiling"] is None and r["agreement"]["alignment"] is None
    assert r["rho"] is not None
    shown = text(teacher)
    assert (
        "**How far the class agreed with itself can't be measured**: 3 paintings: the class's "
        "agreement with itself takes at least 4 (two halves of two). The class's ρ above is "
        "the raw one."
    ) in shown
    assert "The model reached" not in shown
    metric = {m.label: m.value for m in teacher.metric}
    assert metric["The class's Spearman ρ with the map"] == f"{r['rho']:+.2f}"


def test_a_workspace_round_reads_the_class_against_the_workspaces_maps(
    class_db, tmp_path, monkeypatch
):
    import torch
    from PIL import Image
    from workspaces import rgb_workspace

    from workspace import load_model, open_indexed

    folder = rgb_workspace(tmp_path)
    monkeypatch.setenv("SALIENCY_WORKSPACES", str(folder))
    _, code, key = a_round(class_db, blobs(4, seed=2), dataset="ws:W-rgb", index=3)
    rnd = class_db.current_round(code)
    ws = open_indexed(folder)
    net = load_model(ws.config, len(ws.classes), device="cpu")

    def pooled(i: int) -> np.ndarray:
        x = torch.from_numpy(ws.image(i))[None]
        g = saliency.gradients(net, x, target=rnd.spec["target"])[0].amax(0).numpy()
        img = Image.fromarray(g.astype(np.float32), mode="F")
        return np.asarray(img.resize((28, 28), Image.Resampling.BOX), dtype=np.float64)

    chosen = rnd.result["null_images"]
    assert 3 not in chosen and len(chosen) == min(8, len(ws.paths) - 1)
    stored = np.stack([a.painting for a in class_db.answers(code, key, 1)])
    expect = saliency.class_agreement(stored, pooled(3), np.stack([pooled(i) for i in chosen]))
    got = rnd.result["agreement"]
    assert got["ceiling"] == pytest.approx(expect.ceiling, abs=1e-12)
    assert got["null"] == pytest.approx(expect.null.tolist(), abs=1e-3)
    assert got["alignment"] == pytest.approx(expect.alignment, abs=1e-3)


MAP_SPEC = {"dataset": "mnist", "model": "mnist-cnn", "index": 0, "target": 7, "predicted": 7,
            "true": 7, "n_classes": 10}  # fmt: skip


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'live.sqlite3'}"
    base = request.getfixturevalue("postgres_url")
    import psycopg

    with psycopg.connect(base, autocommit=True) as db:
        for table in ("live_answers", "live_rounds", "live_students", "live_passes",
                      "live_teacher_devices", "live_rooms"):  # fmt: skip
            db.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
    return base


def test_the_npz_export_round_trips_from_either_store_and_is_bounded(url, monkeypatch):
    store = LiveStore(url)
    room, teacher = store.create_room()
    paints = blobs(5, seed=4)
    students = [store.join(room, f"s{i}") for i in range(5)]
    n = store.open_round(room, teacher, "map", MAP_SPEC)
    for me, p in zip(students, paints, strict=True):
        store.answer(room, me, n, painting=p)
    m = np.random.default_rng(0).random((28, 28))
    answers = store.answers(room, teacher, n)
    store.reveal(room, teacher, n, live_class.map_result(m, answers, {"target": 7}))
    rnd = store.current_round(room)
    image = np.random.default_rng(1).random((1, 28, 28)).astype(np.float32)
    data = live_class.round_npz(rnd, store.answers(room, teacher, n), image, "MNIST CNN")
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        # Stored as 0..255: what the store kept, to its 1/255 steps.
        np.testing.assert_allclose(z["paintings"], np.float32(paints), atol=0.5 / 255)
        np.testing.assert_allclose(z["map"], m / m.max(), atol=1e-5)
        np.testing.assert_array_equal(z["image"], image)
        assert (int(z["true_label"]), str(z["model"]), int(z["index"])) == (7, "MNIST CNN", 0)
        assert math.isclose(float(z["round_time"]), rnd.opened)
    # A class too big for an export is refused, counted before it is built.
    monkeypatch.setattr(live_class, "MAX_NPZ_BYTES", 5 * 28 * 28 * 4)
    with pytest.raises(LiveError, match=r"more than the 0 MB an export may be"):
        live_class.round_npz(rnd, answers, image, "MNIST CNN")
    # A prediction round has no paintings to export.
    store.open_round(room, teacher, "predict", MAP_SPEC)
    with pytest.raises(LiveError, match="Only a revealed"):
        live_class.round_npz(store.current_round(room), [], image, "x")
    store.close()
