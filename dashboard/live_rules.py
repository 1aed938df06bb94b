"""The live class's values and rules, apart from their database (`dashboard.live_store`):
what a room, a round and an answer are, the errors a person gets, and how a code, a nickname
and a painting are read. Never imports streamlit."""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass

import numpy as np

DEFAULT_TTL_HOURS = 12.0
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read off a projector
# 32**8 = 1.1e12 codes: at the guess limit (dashboard/rate_limits.py, 30 misses a minute) one
# address needs about 70,000 years to try them all. Shown as ABCD-EFGH; typed either way.
CODE_LENGTH = 8
MAX_NICKNAME = 40
MAX_DEVICES = 100  # teacher's browser tokens per room
PASS_SECONDS = 120.0  # how long a pass for a teacher's browser token may wait to be redeemed
DEFAULT_MAX_STUDENTS = 60  # per room; SALIENCY_MAX_STUDENTS changes it
PAINTING_SIDE = 28  # a painting is stored as 28 x 28 uint8 (0..255)
KINDS = ("map", "predict")
# The teacher's key travels in a cookie, never in the page's address (issue 28): its name, and
# where `dashboard/serve.py` says its route that sets it is (unset under `streamlit run`).
TEACHER_COOKIE = "saliency_teacher_"  # + the room's code
TEACHER_ROUTE_ENV = "SALIENCY_LIVE_TEACHER_URL"


class LiveError(ValueError):
    """Something a person did that the class can't accept, with a message for them."""


class NoRoom(LiveError):
    pass


class NotTeacher(LiveError):
    pass


class RoundClosed(LiveError):
    pass


@dataclass(frozen=True)
class Room:
    code: str
    created: float
    expires: float


@dataclass(frozen=True)
class Round:
    room: str
    number: int
    kind: str  # "map" or "predict"
    spec: dict  # what the teacher chose: model, data set, image index, target class...
    state: str  # "open" or "revealed"
    opened: float
    result: dict | None  # published at the reveal: what every student may see


@dataclass(frozen=True)
class Answer:
    nickname: str
    painting: np.ndarray | None  # (28, 28) float in [0, 1]
    guess: int | None
    confidence: float | None
    updated: float


def student_cap() -> int:
    """SALIENCY_MAX_STUDENTS (a whole number of at least 1), else 60: the students one room
    takes."""
    text = os.environ.get("SALIENCY_MAX_STUDENTS", "")
    return int(text) if text.isdigit() and int(text) > 0 else DEFAULT_MAX_STUDENTS


def clean_nickname(text: str) -> str:
    """A nickname as shown: trimmed, control characters removed, at most 40 characters."""
    name = "".join(c for c in str(text) if unicodedata.category(c)[0] != "C").strip()
    if not name:
        raise LiveError("Type a nickname (any name your teacher will recognise).")
    if len(name) > MAX_NICKNAME:
        raise LiveError(f"A nickname has at most {MAX_NICKNAME} characters; yours has {len(name)}.")
    return name


def check_painting(painting: np.ndarray) -> np.ndarray:
    p = np.asarray(painting, dtype=np.float64)
    if p.shape != (PAINTING_SIDE, PAINTING_SIDE) or not np.isfinite(p).all():
        raise LiveError(f"A painting is {PAINTING_SIDE} × {PAINTING_SIDE} numbers in [0, 1].")
    if not (p > 0).any():
        raise LiveError("Your painting is empty: paint the pixels you think matter, then send.")
    return np.clip(p, 0.0, 1.0)


def normalise_code(code: str) -> str:
    """A code as typed (`abcd-efgh`, `ABCD EFGH`) as stored: `ABCDEFGH`."""
    text = str(code or "")[:32]
    return "".join(c for c in text if c not in "- \t").upper()[:16]


def teacher_cookie(code: str) -> str:
    """The name of the cookie that holds the key of the room `code`'s teacher."""
    return TEACHER_COOKIE + normalise_code(code)


def format_code(code: str) -> str:
    """A code as shown, in two halves that are easier to read off a projector: ABCD-EFGH."""
    half = (len(code) + 1) // 2
    return f"{code[:half]}-{code[half:]}" if len(code) > 5 else code
