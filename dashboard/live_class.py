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
