"""The live class's maths and files, without the page: what a reveal publishes, the CSV of a
round's answers, the join link and its QR code.

    >>> result = map_result(saliency_map, answers)     # the class against the model
    >>> result["rho"], result["overlap"]               # Spearman ρ and top-10 % overlap

Never imports streamlit.
"""

from __future__ import annotations

import io
import math
import socket

import numpy as np

from dashboard.live_store import PAINTING_SIDE, Answer, LiveError, Round
from saliency.agreement import Agreement, class_agreement
from saliency.metrics import spearman, top_overlap
from sandbox.text import clean, csv_text

TOP_FRACTION = 0.1


def _number(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def scores(saliency_map: np.ndarray, painting: np.ndarray) -> tuple[float | None, float | None]:
    """(Spearman ρ, top-10 % overlap) of one painting against the model's map; None where
    undefined (a painting of one uniform value has no ranking)."""
    return (
        _number(spearman(saliency_map, painting)),
        _number(top_overlap(saliency_map, painting, TOP_FRACTION)),
    )


def map_result(
    saliency_map: np.ndarray,
    answers: list[Answer],
    extra: dict,
    other_maps: np.ndarray | None = None,
) -> dict:
    """What the reveal of a "where does it look?" round publishes: the model's map and the
    mean painting (each divided by its maximum, so one colour scale shows both), the class's
    Spearman ρ and top-10 % overlap (mean painting against the map), every student's own
    pair of scores (without names: the histogram), the class read against itself
    (`agreement`: `class_agreement`'s numbers, None where undefined; the null against
    `other_maps` `(M, H, W)`, other images' maps), and `extra` (the round's facts)."""
    m = np.asarray(saliency_map, dtype=np.float64)
    paintings = [a.painting for a in answers if a.painting is not None]
    mean = np.mean(paintings, axis=0) if paintings else np.zeros_like(m)
    rho, overlap = scores(m, mean) if paintings else (None, None)
    each = [scores(m, p) for p in paintings]
    stack = np.stack(paintings) if paintings else np.zeros((0, *m.shape))
    return {
        **extra,
        "n": len(paintings),
        "map": _unit(m).round(5).ravel().tolist(),
        "mean": _unit(mean).round(5).ravel().tolist(),
        "rho": rho,
        "overlap": overlap,
        "scores": [list(s) for s in each],
        "agreement": agreement_result(class_agreement(stack, m, other_maps)),
    }


def agreement_result(a: Agreement) -> dict:
    """`class_agreement`'s numbers as a reveal publishes them (JSON: None for NaN)."""
    return {
        "n": a.n,
        "ceiling": _number(a.ceiling),
        "ceiling_reason": a.ceiling_reason,
        "alignment": _number(a.alignment),
        "interval": [_number(v) for v in a.interval],
        "null": [_number(v) for v in a.null],
        "dice": _number(a.dice),
        "iou": _number(a.iou),
        "blurred_rho": _number(a.blurred_rho),
        "draws": a.draws,
    }


def _against_null(rho: float | None, null: list[float]) -> str:
    if rho is None:
        return ""
    if rho > max(null):
        return f"This image's map, at ρ {rho:+.2f}, beats every one of them."
    return (
        f"This image's map, at ρ {rho:+.2f}, does no better than some of them: the class's "
        "agreement may not be about this image."
    )


def agreement_lines(result: dict) -> list[str]:
    """The class read against itself, in sentences a projector can show (Markdown of numbers
    only): the split-half ceiling and the model's share of it, the null, Dice/IoU of the top
    10 % and the blurred ρ. [] for a round revealed before these were measured."""
    a = result.get("agreement")
    if not a:
        return []
    lines = []
    ceiling, share, (low, high) = a["ceiling"], a["alignment"], a["interval"]
    if ceiling is None:
        lines.append(
            f"**How far the class agreed with itself can't be measured**: {a['ceiling_reason']}."
            " The class's ρ above is the raw one."
        )
    elif share is None:
        lines.append(
            f"**Your class agreed with itself at ρ {ceiling:.2f}** (split-half: the class cut "
            f"in two at random, {a['draws']} times), too little to measure the model against."
        )
    else:
        interval = (
            f" (95 % interval {low:.0%} to {high:.0%})" if low is not None and high is not None
            else ""
        )  # fmt: skip
        lines.append(
            f"**Your class agreed with itself at ρ {ceiling:.2f}** (split-half: the class cut "
            f"in two at random, {a['draws']} times). **The model reached {share:.0%} of "
            f"that**{interval}."
        )
    null = [v for v in a["null"] if v is not None]
    if null:
        lines.append(
            f"By chance: the class's painting against {len(null)} other images' maps gives "
            f"ρ {np.mean(null):+.2f} on average ({min(null):+.2f} to {max(null):+.2f}). "
            + _against_null(result.get("rho"), null)
        )
    if a["dice"] is not None:
        lines.append(
            f"The top {TOP_FRACTION:.0%} of each map: Dice {a['dice']:.2f}, IoU {a['iou']:.2f} "
            "(1: the same pixels, 0: none in common)."
        )
    if a["blurred_rho"] is not None:
        lines.append(
            f"With both maps blurred (a stroke's width off is forgiven): ρ {a['blurred_rho']:+.2f}."
        )
    return lines


def predict_result(probs: np.ndarray, answers: list[Answer], extra: dict) -> dict:
    """What the reveal of a "what will it say?" round publishes: the guesses per class, the
    model's probabilities, and how many guessed the model's answer; with the students'
    confidence, the class's vote weighted by how sure each was (`weighted`, shares summing to
    1), the mean confidence of those who picked each class (`confidence`, None where nobody
    did), and the mean confidence of those who guessed right and of the others."""
    probs = np.asarray(probs, dtype=np.float64)
    k = len(probs)
    predicted = int(probs.argmax())
    given = [a for a in answers if a.guess is not None and 0 <= a.guess < k]
    guesses = np.asarray([a.guess for a in given], dtype=np.int64)
    sure = np.asarray([a.confidence or 0.0 for a in given], dtype=np.float64)
    counts = np.bincount(guesses, minlength=k)[:k]
    weights = np.bincount(guesses, weights=sure, minlength=k)[:k]
    weighted = weights / weights.sum() if weights.sum() > 0 else np.zeros(k)
    right = [a for a in given if a.guess == predicted]
    wrong = [a for a in given if a.guess != predicted]
    return {
        **extra,
        "n": len(given),
        "probabilities": probs.round(6).tolist(),
        "predicted": predicted,
        "counts": counts.tolist(),
        "weighted": weighted.round(6).tolist(),
        "confidence": [
            _number(weights[c] / counts[c]) if counts[c] else None for c in range(k)
        ],  # fmt: skip
        "right": len(right),
        "mean_confidence_right": _mean_confidence(right),
        "mean_confidence_wrong": _mean_confidence(wrong),
    }


def _mean_confidence(answers: list[Answer]) -> float | None:
    return _number(np.mean([a.confidence or 0.0 for a in answers])) if answers else None


def calibration(pairs: list[tuple[float, bool]]) -> dict:
    """How well stated confidence matched being right, over (confidence, right) pairs: the
    number of guesses, how many were right, the share right and the mean stated confidence
    (None without guesses). A calibrated student's two shares are close."""
    n = len(pairs)
    right = sum(bool(r) for _, r in pairs)
    return {
        "guesses": n,
        "right": right,
        "share_right": right / n if n else None,
        "said": _number(np.mean([c for c, _ in pairs])) if n else None,
    }


RHO_BIN = 0.1  # the width of the reveal histogram's bins of students' own ρ


def rho_bins(values: list[float]) -> list[dict]:
    """Students' own Spearman ρ counted in bins of width 0.1 from -1 to 1 (the last bin holds
    1.0): `[{"from", "to", "students"}]`, every bin listed, empty ones as 0, so the chart's
    axes are ρ and whole numbers of students."""
    edges = np.round(np.arange(-1.0, 1.0 + RHO_BIN / 2, RHO_BIN), 10) + 0.0  # no -0.0
    counts, _ = np.histogram(np.clip(values, -1.0, 1.0), bins=edges) if values else (None, None)
    if counts is None:
        counts = np.zeros(len(edges) - 1, dtype=np.int64)
    return [
        {"from": float(lo), "to": float(hi), "students": int(c)}
        for lo, hi, c in zip(edges[:-1], edges[1:], counts, strict=True)
    ]


def _unit(m: np.ndarray) -> np.ndarray:
    top = float(m.max()) if m.size else 0.0
    return m / top if top > 0 else m


def answers_csv(rnd: Round, answers: list[Answer], saliency_map: np.ndarray | None = None) -> str:
    """One row per answer: nickname, time, and the answer with its scores (a map round: ρ,
    overlap and the painted pixels; a prediction round: the guess, how sure, right or not).
    Nicknames are all that is stored about a student; written as every CSV of the project is
    (`sandbox.text.csv_text`: a nickname a spreadsheet would run as a formula is text)."""
    spec = rnd.spec
    if rnd.kind == "map":
        rows = [["round", "nickname", "updated_utc", "spearman_rho", "top10_overlap",
                 "painted_pixels"]]  # fmt: skip
    else:
        rows = [["round", "nickname", "updated_utc", "guess", "confidence", "model_says",
                 "right"]]  # fmt: skip
    for a in answers:
        when, name = _utc(a.updated), clean(a.nickname)
        if rnd.kind == "map":
            rho, overlap = (
                scores(saliency_map, a.painting) if saliency_map is not None else (None,) * 2
            )
            rows.append([rnd.number, name, when, rho, overlap, int((a.painting > 0).sum())])
        else:
            says = spec.get("predicted")
            rows.append([rnd.number, name, when, a.guess, a.confidence, says, a.guess == says])
    return csv_text(rows)


MAX_NPZ_BYTES = 16 * 2**20  # one round's export: 60 students' paintings are 190 kB of these


def round_npz(rnd: Round, answers: list[Answer], image: np.ndarray, model_name: str) -> bytes:
    """A revealed "where does it look?" round as a `.npz` (numpy, no pickles): a class's own
    small ClickMe, one file per round. `paintings` `(K, 28, 28)` float32 in [0, 1] (no names),
    `map` `(28, 28)` float32 (the model's, divided by its maximum, as revealed), `image`
    float32 as the model saw it, `true_label`, `target`, `predicted`, `model` (as shown),
    `model_id`, `dataset`, `index`, `round`, `round_time` (Unix seconds, when it opened) and
    `round_time_utc`. LiveError when it would pass `MAX_NPZ_BYTES`, counted before it is
    built."""
    if rnd.kind != "map" or not rnd.result:
        raise LiveError("Only a revealed “where does it look?” round has paintings to export.")
    paintings = [a.painting for a in answers if a.painting is not None]
    image = np.asarray(image, dtype=np.float32)
    side = PAINTING_SIDE * PAINTING_SIDE
    size = 4 * side * (len(paintings) + 1) + image.nbytes + 8192  # arrays + names and headers
    if size > MAX_NPZ_BYTES:
        raise LiveError(
            f"This round's paintings and image come to {size / 2**20:.1f} MB, more than the "
            f"{MAX_NPZ_BYTES / 2**20:.0f} MB an export may be."
        )
    spec = rnd.spec
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        paintings=np.asarray(paintings, dtype=np.float32).reshape(-1, PAINTING_SIDE, PAINTING_SIDE),
        map=np.asarray(rnd.result["map"], dtype=np.float32).reshape(PAINTING_SIDE, PAINTING_SIDE),
        image=image,
        true_label=np.int64(spec.get("true", -1)),
        target=np.int64(spec["target"]),
        predicted=np.int64(spec.get("predicted", -1)),
        model=np.str_(model_name),
        model_id=np.str_(spec["model"]),
        dataset=np.str_(spec["dataset"]),
        index=np.int64(spec["index"]),
        round=np.int64(rnd.number),
        round_time=np.float64(rnd.opened),
        round_time_utc=np.str_(_utc(rnd.opened)),
    )
    return buf.getvalue()


def _utc(t: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")


def lan_address() -> str:
    """This machine's address on its network (the interface a packet to the outside would
    use; nothing is sent), or 127.0.0.1 without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def join_url(base: str, code: str) -> str:
    return f"{base.rstrip('/')}/live?room={code}"


def qr_png(url: str, scale: int = 10) -> bytes:
    """The link as a QR code (segno), black on white, big enough for a projector."""
    import segno

    buf = io.BytesIO()
    segno.make(url, error="m").save(buf, kind="png", scale=scale, border=2)
    return buf.getvalue()
