"""Live class: the pictures of a round (its image, a map on the paintings' 28 × 28 grid, a
painting from the canvas) and its reveal: the result the store publishes, and what a revealed
round shows on the projector and on each phone (`dashboard.views.live` draws the page)."""

from __future__ import annotations

import numpy as np
import streamlit as st
from PIL import Image

from dashboard import cache, live_class, render, sources
from dashboard.live_store import PAINTING_SIDE, LiveStore
from dashboard.render import class_label, class_md
from sandbox.text import clean

# Session keys of this page: a prefix (one table per round shown).
LIVE_CALIBRATION = "live_calibration"

CANVAS_PX = 280
NULL_IMAGES = 8  # other images whose maps the class's painting is scored against (the null)


# --- pictures ------------------------------------------------------------------------------


def grid(m: np.ndarray) -> np.ndarray:
    """A map `(H, W)` on the paintings' 28 × 28 grid (box-averaged; 28 × 28 is kept)."""
    m = np.asarray(m, dtype=np.float32)
    if m.shape == (PAINTING_SIDE, PAINTING_SIDE):
        return m.astype(np.float64)
    img = Image.fromarray(m, mode="F").resize((PAINTING_SIDE, PAINTING_SIDE), Image.Resampling.BOX)
    return np.asarray(img, dtype=np.float64)


def heat(m: np.ndarray, image: np.ndarray | None = None) -> np.ndarray:
    """A map in [0, 1] (one colour scale for the model's and the class's) as a picture."""
    style = render.Style(signed=False, cmap="inferno", alpha=0.45, clip=100.0, shared=True)
    scale = CANVAS_PX // m.shape[-1]
    return render.picture(m, 0.0, 1.0, style, image=image, scale=scale)


def round_image(spec: dict) -> np.ndarray:
    """The round's image `(C, H, W)` in [0, 1]."""
    return sources.source(spec["dataset"]).image(spec["index"])


def painting_from_canvas(data: np.ndarray | None) -> np.ndarray | None:
    """The canvas's RGBA `(H, W, 4)`, as `dashboard.canvas` checked it (uint8, the canvas's
    own size) -> 28 × 28 in [0, 1]: the painted share of each cell."""
    if data is None:
        return None
    alpha = np.asarray(data)[..., 3].astype(np.float32) / 255.0
    img = Image.fromarray(alpha, mode="F").resize(
        (PAINTING_SIDE, PAINTING_SIDE), Image.Resampling.BOX
    )
    return np.clip(np.asarray(img, dtype=np.float64), 0.0, 1.0)


# --- the reveal --------------------------------------------------------------------------


def model_map(spec: dict) -> np.ndarray:
    """|∂score_target/∂x| of the round's image, channels reduced, on the 28 × 28 grid."""
    image = round_image(spec)
    m = cache.class_maps(spec["model"], image, "gradient", "logit", True, (spec["target"],))[0]
    return grid(m)


def other_maps(spec: dict) -> tuple[np.ndarray, list[int]]:
    """The null's maps: the same score's map on `NULL_IMAGES` other images of the round's data
    set (chosen by the round's image index: the same round, the same images), on the 28 × 28
    grid `(M, 28, 28)`, and those images' indices."""
    n = len(sources.source(spec["dataset"]))
    pool = np.delete(np.arange(n), spec["index"])
    rng = np.random.default_rng(spec["index"])
    chosen = sorted(int(i) for i in rng.choice(pool, min(NULL_IMAGES, len(pool)), replace=False))
    maps = [model_map({**spec, "index": i}) for i in chosen]
    return (np.stack(maps) if maps else np.zeros((0, PAINTING_SIDE, PAINTING_SIDE))), chosen


def reveal(store: LiveStore, code: str, teacher: str, rnd) -> None:
    answers = store.answers(code, teacher, rnd.number)
    spec = rnd.spec
    if rnd.kind == "map":
        others, chosen = other_maps(spec)
        extra = {"target": spec["target"], "null_images": chosen}
        result = live_class.map_result(model_map(spec), answers, extra, others)
    else:
        image = round_image(spec)
        probs = cache.probabilities(spec["model"], image)
        result = live_class.predict_result(probs, answers, {})
    store.reveal(code, teacher, rnd.number, result)


def result(rnd, mine=None) -> None:
    """The published result of a revealed round (the same on the projector and on phones),
    with the student's own answer beside it when `mine` is given."""
    spec, r = rnd.spec, rnd.result
    names = cache.model_info(spec["model"]).class_names
    image = round_image(spec)
    if rnd.kind == "map":
        model_map = np.reshape(r["map"], (28, 28))
        mean = np.reshape(r["mean"], (28, 28))
        pictures = [
            render.grey(image, render.scale_for(image.shape)),
            heat(model_map),
            heat(mean),
        ]
        captions = [
            f"The image (the model says {class_md(spec['predicted'], names)})",
            f"The model: |∂ score of {class_md(spec['target'], names)} / ∂x|",
            f"The class: the mean of {r['n']} paintings",
        ]
        if mine is not None and mine.painting is not None:
            pictures.append(heat(mine.painting))
            captions.append(f"Yours, {render.plain(mine.nickname)}")
        render.show_row([render.thumbnail(p, CANVAS_PX) for p in pictures], captions)
        st.caption("Each map divided by its maximum: one colour scale for all.")
        c1, c2, c3 = st.columns(3)
        c1.metric("The class's Spearman ρ with the map", fmt(r["rho"]))
        c2.metric("Top-10 % overlap", fmt(r["overlap"], percent=True))
        if mine is not None and mine.painting is not None:
            rho, overlap = live_class.scores(model_map, mine.painting)
            c3.metric("Your ρ · your overlap", f"{fmt(rho)} · {fmt(overlap, percent=True)}")
        lines = live_class.agreement_lines(r)
        if lines:
            st.markdown("\n\n".join(lines))
        histogram([s[0] for s in r["scores"] if s[0] is not None])
    else:
        predict_result(rnd, names, image, mine)


def predict_result(rnd, names, image: np.ndarray, mine) -> None:
    """The image beside the model's probabilities, the class's guesses and the same guesses
    weighted by how sure each student was; how sure the right and the wrong guessers were."""
    spec, r = rnd.spec, rnd.result
    probs = np.asarray(r["probabilities"])
    n = max(r["n"], 1)
    weighted = r.get("weighted") or [0.0] * len(probs)  # rounds revealed before it was kept
    confidence = r.get("confidence") or [None] * len(probs)
    rows = [
        {"class": class_label(k, names), "share": v, "who": who,
         "mean confidence": fmt(confidence[k], percent=True)}
        for k in range(len(probs))
        for who, v in (
            ("the model's probability", float(probs[k])),
            ("the class's guesses", r["counts"][k] / n),
            ("the guesses, weighted by how sure", float(weighted[k])),
        )
    ]  # fmt: skip
    left, right = st.columns([1, 2])
    with left:
        render.show(
            render.grey(image, render.scale_for(image.shape)),
            f"The image (true class: {class_md(spec['true'], names)})",
            width=CANVAS_PX // 2,
        )
    with right:
        st.markdown(
            f"The model says **{render.plain(class_label(r['predicted'], names))}** "
            f"({probs[r['predicted']]:.1%}); **{r['right']} of {r['n']}** students guessed it."
        )
        said_right, said_wrong = r.get("mean_confidence_right"), r.get("mean_confidence_wrong")
        if said_right is not None or said_wrong is not None:
            st.markdown(
                f"How sure they were: **{fmt(said_right, percent=True)}** on average for "
                f"those who guessed it, **{fmt(said_wrong, percent=True)}** for the others."
            )
        if mine is not None and mine.guess is not None:
            verdict = "right" if mine.guess == r["predicted"] else "not what the model said"
            st.markdown(
                f"You guessed **{render.plain(class_label(mine.guess, names))}**, "
                f"{mine.confidence:.0%} sure: {verdict}."
            )
    spec_chart = {
        "data": {"values": rows},
        "mark": {"type": "bar", "tooltip": True},
        "height": 360,
        "encoding": {
            "y": {"field": "class", "type": "nominal", "sort": None, "title": None},
            "x": {
                "field": "share",
                "type": "quantitative",
                "scale": {"domain": [0, 1]},
                "axis": {"format": "%"},
                "title": None,
            },
            "yOffset": {"field": "who", "sort": None},
            "color": {
                "field": "who",
                "type": "nominal",
                "sort": None,
                "legend": {"orient": "top", "title": None, "labelLimit": 0},
            },
        },
    }  # fmt: skip
    st.vega_lite_chart(None, spec_chart, width="stretch")


def guessing_rounds(store: LiveStore, code: str, upto: int) -> list:
    """The revealed "what will it say?" rounds up to round `upto`."""
    rounds = (store.round(code, n) for n in range(1, upto + 1))
    return [r for r in rounds if r.kind == "predict" and r.state == "revealed" and r.result]


def class_calibration(store: LiveStore, code: str, teacher: str, upto: int) -> None:
    """Each student's guesses so far: how many were right against how sure they said they
    were (closed: the names are the teacher's to show)."""
    pairs: dict[str, list[tuple[float, bool]]] = {}
    for rnd in guessing_rounds(store, code, upto):
        for a in store.answers(code, teacher, rnd.number):
            if a.guess is not None:
                right = a.guess == rnd.result["predicted"]
                pairs.setdefault(a.nickname, []).append((a.confidence or 0.0, right))
    if not pairs:
        return
    rows = []
    for name, said in pairs.items():
        c = live_class.calibration(said)
        rows.append({
            "student": clean(name), "guesses": c["guesses"], "right": c["right"],
            "share right": fmt(c["share_right"], percent=True),
            "said they were sure": fmt(c["said"], percent=True),
        })  # fmt: skip
    with st.expander(
        f"Each student's calibration over {len(guessing_rounds(store, code, upto))}"
        " guessing rounds: right answers against how sure they said they were"
    ):
        st.dataframe(rows, hide_index=True, key=f"{LIVE_CALIBRATION}_{upto}")  # fmt: skip


def my_calibration(store: LiveStore, code: str, me: str, upto: int) -> None:
    said = []
    for rnd in guessing_rounds(store, code, upto):
        mine = store.my_answer(code, me, rnd.number)
        if mine is not None and mine.guess is not None:
            said.append((mine.confidence or 0.0, mine.guess == rnd.result["predicted"]))
    c = live_class.calibration(said)
    if not c["guesses"]:
        return
    st.markdown(
        f"Your guesses so far: **{c['right']} of {c['guesses']}** right "
        f"({fmt(c['share_right'], percent=True)}), and you said you were "
        f"**{fmt(c['said'], percent=True)}** sure on average."
    )


def fmt(x, percent: bool = False) -> str:
    if x is None:
        return "–"
    return f"{x:.0%}" if percent else f"{x:+.2f}"


def histogram(values: list[float]) -> None:
    """How many students' own painting had each ρ: bins of ρ across, whole students up."""
    if not values:
        return
    spec = {
        "data": {"values": live_class.rho_bins(values)},
        "mark": {"type": "bar", "tooltip": True},
        "height": 160,
        "encoding": {
            "x": {
                "field": "from",
                "type": "quantitative",
                "scale": {"domain": [-1, 1]},
                "axis": {"tickMinStep": live_class.RHO_BIN, "format": ".1f"},
                "title": "each student's own Spearman ρ with the map",
            },
            "x2": {"field": "to"},
            "y": {
                "field": "students",
                "type": "quantitative",
                "axis": {"tickMinStep": 1, "format": "d"},
                "title": "students",
            },
        },
    }
    st.vega_lite_chart(None, spec, width="stretch")
