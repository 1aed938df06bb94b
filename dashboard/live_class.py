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

from dashboard.live_store import Answer, Round
from pretrained.text import clean, csv_text
from saliency.metrics import spearman, top_overlap

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


def map_result(saliency_map: np.ndarray, answers: list[Answer], extra: dict) -> dict:
    """What the reveal of a "where does it look?" round publishes: the model's map and the
    mean painting (each divided by its maximum, so one colour scale shows both), the class's
    Spearman ρ and top-10 % overlap (mean painting against the map), every student's own
    pair of scores (without names: the histogram), and `extra` (the round's facts)."""
    m = np.asarray(saliency_map, dtype=np.float64)
    paintings = [a.painting for a in answers if a.painting is not None]
    mean = np.mean(paintings, axis=0) if paintings else np.zeros_like(m)
    rho, overlap = scores(m, mean) if paintings else (None, None)
    each = [scores(m, p) for p in paintings]
    return {
        **extra,
        "n": len(paintings),
        "map": _unit(m).round(5).ravel().tolist(),
        "mean": _unit(mean).round(5).ravel().tolist(),
        "rho": rho,
        "overlap": overlap,
        "scores": [list(s) for s in each],
    }


def predict_result(probs: np.ndarray, answers: list[Answer], extra: dict) -> dict:
    """What the reveal of a "what will it say?" round publishes: the guesses per class, the
    model's probabilities, and how many guessed the model's answer."""
    probs = np.asarray(probs, dtype=np.float64)
    predicted = int(probs.argmax())
    guesses = [a.guess for a in answers if a.guess is not None]
    counts = np.bincount(np.asarray(guesses, dtype=np.int64), minlength=len(probs))[: len(probs)]
    right = [a for a in answers if a.guess == predicted]
    return {
        **extra,
        "n": len(guesses),
        "probabilities": probs.round(6).tolist(),
        "predicted": predicted,
        "counts": counts.tolist(),
        "right": len(right),
        "mean_confidence_right": _number(np.mean([a.confidence for a in right])) if right else None,
    }


def _unit(m: np.ndarray) -> np.ndarray:
    top = float(m.max()) if m.size else 0.0
    return m / top if top > 0 else m


def answers_csv(rnd: Round, answers: list[Answer], saliency_map: np.ndarray | None = None) -> str:
    """One row per answer: nickname, time, and the answer with its scores (a map round: ρ,
    overlap and the painted pixels; a prediction round: the guess, how sure, right or not).
    Nicknames are all that is stored about a student; written as every CSV of the project is
    (`pretrained.text.csv_text`: a nickname a spreadsheet would run as a formula is text)."""
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
