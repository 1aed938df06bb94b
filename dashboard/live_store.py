"""The live class's store: rooms, rounds and answers in a real database.

SQLite (the standard library's `sqlite3`) in the cache folder by default, so one command runs
everything on one machine; Postgres (psycopg 3) when `SALIENCY_CLASS_DB` holds a
`postgresql://` URL, so several server processes behind a load balancer share one class. The
same SQL runs on both. Nothing is kept in a server's memory: a restart loses nothing.

Who may do what is checked here, not in the page:
- a room's **teacher** holds a secret token (only its SHA-256 is stored); opening, revealing
  and reading everyone's answers need it. The teacher's browsers hold tokens of their own
  (`teacher_device`, kept as a cookie), which do the same; a page that must hand its browser
  one gets a single-use pass for it (`teacher_pass`, `redeem_pass`), which grants nothing once
  used or after two minutes, so the teacher's key never goes into a page;
- a **student** holds their own token from joining; they can answer the room's open round,
  read their own answer, and after the reveal the round's published result. Nothing takes a
  room code and a token of another room.

    >>> store = LiveStore.open()                       # SALIENCY_CLASS_DB, or SQLite
    >>> room, teacher = store.create_room()
    >>> me = store.join(room, "Ada")
    >>> n = store.open_round(room, teacher, "map", {"model": "mnist-cnn", "index": 7, ...})
    >>> store.answer(room, me, n, painting=mask28)     # until the reveal

Never imports streamlit.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from dashboard.live_rules import (  # noqa: F401 (re-exported: the pages and tests read them here)
    CODE_ALPHABET,
    CODE_LENGTH,
    DEFAULT_MAX_STUDENTS,
    DEFAULT_TTL_HOURS,
    KINDS,
    MAX_DEVICES,
    MAX_NICKNAME,
    PAINTING_SIDE,
    PASS_SECONDS,
    TEACHER_COOKIE,
    TEACHER_ROUTE_ENV,
    Answer,
    LiveError,
    NoRoom,
    NotTeacher,
    Room,
    Round,
    RoundClosed,
    check_painting,
    clean_nickname,
    format_code,
    normalise_code,
    student_cap,
    teacher_cookie,
)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new_device(db: _Cursor, code: str) -> str:
    """A new token for one of room `code`'s teacher's browsers, its hash stored in `db`."""
    token = secrets.token_urlsafe(18)
    db.execute(
        "INSERT INTO live_teacher_devices (room, token_hash) VALUES (?, ?)", code, _hash(token)
    )
    return token


_SCHEMA = """
CREATE TABLE IF NOT EXISTS live_rooms (
    code TEXT PRIMARY KEY,
    teacher_hash TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    expires DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS live_teacher_devices (
    room TEXT NOT NULL REFERENCES live_rooms(code) ON DELETE CASCADE,
    token_hash TEXT NOT NULL,
    PRIMARY KEY (room, token_hash)
);
CREATE TABLE IF NOT EXISTS live_passes (
    pass_hash TEXT PRIMARY KEY,
    room TEXT NOT NULL REFERENCES live_rooms(code) ON DELETE CASCADE,
    expires DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS live_students (
    room TEXT NOT NULL REFERENCES live_rooms(code) ON DELETE CASCADE,
    token_hash TEXT NOT NULL,
    nickname TEXT NOT NULL,
    joined DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (room, token_hash),
    UNIQUE (room, nickname)
);
CREATE TABLE IF NOT EXISTS live_rounds (
    room TEXT NOT NULL REFERENCES live_rooms(code) ON DELETE CASCADE,
    number INTEGER NOT NULL,
    kind TEXT NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    opened DOUBLE PRECISION NOT NULL,
    result TEXT,
    PRIMARY KEY (room, number)
);
CREATE TABLE IF NOT EXISTS live_answers (
    room TEXT NOT NULL,
    number INTEGER NOT NULL,
    token_hash TEXT NOT NULL,
    painting {blob},
    guess INTEGER,
    confidence DOUBLE PRECISION,
    updated DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (room, number, token_hash),
    FOREIGN KEY (room, number) REFERENCES live_rounds(room, number) ON DELETE CASCADE
);
"""


MAX_IDLE_CONNECTIONS = 8


class LiveStore:
    """One database; thread-safe (a small pool of connections). `url` is `sqlite:///PATH` or a
    `postgresql://` URL. `max_students`: per room (default: `student_cap()`)."""

    def __init__(self, url: str, *, max_students: int | None = None) -> None:
        self.url = url
        self.max_students = max_students or student_cap()
        self.postgres = url.startswith(("postgresql://", "postgres://"))
        if not self.postgres and not url.startswith("sqlite:///"):
            raise ValueError(f"SALIENCY_CLASS_DB must be sqlite:///PATH or postgresql://…: {url!r}")
        self._lock = threading.Lock()
        self._idle: list = []  # connections between transactions, the most recent last
        with self._tx() as db:
            for statement in _SCHEMA.format(blob="BYTEA" if self.postgres else "BLOB").split(";"):
                if statement.strip():
                    db.execute(statement)

    @classmethod
    def open(cls, cache_dir: str | os.PathLike | None = None) -> LiveStore:
        """`SALIENCY_CLASS_DB` if set, else SQLite at `cache_dir/live-class.sqlite3`."""
        url = os.environ.get("SALIENCY_CLASS_DB")
        if not url:
            folder = Path(cache_dir or Path.home() / ".cache" / "saliency-dashboard")
            folder.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{folder / 'live-class.sqlite3'}"
        return cls(url)

    # --- connections ---------------------------------------------------------------------

    def _connect(self):
        if self.postgres:
            import psycopg

            return psycopg.connect(self.url, autocommit=False)
        path = self.url.removeprefix("sqlite:///")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    @contextmanager
    def _tx(self, write: bool = True) -> Iterator[_Cursor]:
        """One transaction on a pooled connection. Not a connection per thread: Streamlit runs
        each rerun on a new thread, so that would be a new connection for every poll. SQLite
        takes its write lock at the start of a writing transaction (`BEGIN IMMEDIATE`, so two
        writers never deadlock); a reading one (`write=False`) takes none (WAL: readers never
        wait for a writer)."""
        with self._lock:
            db = self._idle.pop() if self._idle else None
        if db is None:
            db = self._connect()
        try:
            if not self.postgres:
                db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            yield _Cursor(db, self.postgres)
            db.commit()
        except BaseException:
            try:
                db.rollback()
            except Exception:  # noqa: BLE001 - a dead connection: dropped, the next call connects
                db = None
            raise
        finally:
            if db is not None:
                with self._lock:
                    if len(self._idle) < MAX_IDLE_CONNECTIONS:
                        self._idle.append(db)
                        db = None
                if db is not None:
                    db.close()

    def close(self) -> None:
        """Close the idle connections (one in use is closed when its transaction ends)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for db in idle:
            db.close()

    # --- rooms ---------------------------------------------------------------------------

    def create_room(self, ttl_hours: float = DEFAULT_TTL_HOURS) -> tuple[str, str]:
        """A new room: (code, teacher token). Expired rooms are deleted on the way."""
        token = secrets.token_urlsafe(18)
        now = time.time()
        self.expire(now)
        for _ in range(20):
            code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
            with self._tx() as db:
                if db.one("SELECT 1 FROM live_rooms WHERE code = ?", code):
                    continue
                db.execute(
                    "INSERT INTO live_rooms (code, teacher_hash, created, expires) "
                    "VALUES (?, ?, ?, ?)",
                    code, _hash(token), now, now + ttl_hours * 3600,
                )  # fmt: skip
            return code, token
        raise LiveError("Could not find a free room code; try again.")  # pragma: no cover

    def expire(self, now: float | None = None) -> int:
        """Delete rooms past their expiry (with their rounds and answers); how many."""
        now = time.time() if now is None else now
        with self._tx() as db:
            db.execute("DELETE FROM live_passes WHERE expires < ?", now)
            gone = [r[0] for r in db.all("SELECT code FROM live_rooms WHERE expires < ?", now)]
            for code in gone:
                db.execute("DELETE FROM live_passes WHERE room = ?", code)
                db.execute("DELETE FROM live_teacher_devices WHERE room = ?", code)
                db.execute("DELETE FROM live_answers WHERE room = ?", code)
                db.execute("DELETE FROM live_rounds WHERE room = ?", code)
                db.execute("DELETE FROM live_students WHERE room = ?", code)
                db.execute("DELETE FROM live_rooms WHERE code = ?", code)
        return len(gone)

    def room(self, code: str) -> Room:
        code = normalise_code(code)
        with self._tx(write=False) as db:
            row = db.one("SELECT code, created, expires FROM live_rooms WHERE code = ?", code)
        if row is None:
            raise NoRoom(f"There is no class with the code {code!r}: check it with your teacher.")
        room = Room(*row)
        if room.expires < time.time():
            raise NoRoom(
                f"The class {code} has ended (rooms close {DEFAULT_TTL_HOURS:g} hours after "
                "they start). Ask your teacher for the new code."
            )
        return room

    def is_teacher(self, code: str, token: str | None) -> bool:
        """Whether `token` is the key of the room's teacher, or one of the teacher's browser
        tokens (`teacher_device`)."""
        if not token:
            return False
        code = normalise_code(code)
        with self._tx(write=False) as db:
            row = db.one("SELECT teacher_hash FROM live_rooms WHERE code = ?", code)
            if row is None:
                return False
            if hmac.compare_digest(row[0], _hash(token)):
                return True
            return db.one(
                "SELECT 1 FROM live_teacher_devices WHERE room = ? AND token_hash = ?",
                code, _hash(token),
            ) is not None  # fmt: skip

    def teacher_device(self, code: str, teacher: str | None) -> str:
        """A new token for one of the teacher's browsers (a cookie): it does what the
        teacher's key does, in this room only. Teacher only."""
        code = self._teacher(code, teacher)
        with self._tx() as db:
            (count,) = db.one("SELECT COUNT(*) FROM live_teacher_devices WHERE room = ?", code)
            if count >= MAX_DEVICES:
                raise LiveError(f"This class already has {MAX_DEVICES} teacher's browsers.")
            return _new_device(db, code)

    def teacher_pass(self, code: str, teacher: str | None) -> str:
        """A single-use pass that `redeem_pass` exchanges, within PASS_SECONDS, for a token
        of `teacher_device`'s: what a page may hand its browser instead of the key. Teacher
        only."""
        code = self._teacher(code, teacher)
        token = secrets.token_urlsafe(18)
        with self._tx() as db:
            db.execute(
                "INSERT INTO live_passes (pass_hash, room, expires) VALUES (?, ?, ?)",
                _hash(token), code, time.time() + PASS_SECONDS,
            )  # fmt: skip
        return token

    def redeem_pass(self, code: str, token: str | None) -> str | None:
        """A teacher's browser token for a pass of this room's, used once and in time; None
        for anything else (a pass used already, too late, of another room, or none)."""
        code = normalise_code(code)
        with self._tx() as db:
            used = db.execute(
                "DELETE FROM live_passes WHERE pass_hash = ? AND room = ? AND expires >= ?",
                _hash(token or ""), code, time.time(),
            )  # fmt: skip
            if used != 1:
                return None
            return _new_device(db, code)

    def _teacher(self, code: str, token: str | None) -> str:
        code = self.room(code).code
        if not self.is_teacher(code, token):
            raise NotTeacher("Only the teacher of this class can do that.")
        return code

    # --- students ------------------------------------------------------------------------

    def join(self, code: str, nickname: str) -> str:
        """A new student in the room: their secret token. Nicknames are unique per room."""
        code = self.room(code).code
        name = clean_nickname(nickname)
        token = secrets.token_urlsafe(18)
        with self._tx() as db:
            (count,) = db.one("SELECT COUNT(*) FROM live_students WHERE room = ?", code)
            if count >= self.max_students:
                raise LiveError(
                    f"This class is full: it has {self.max_students} students, the most this "
                    "server takes in one class. Ask your teacher."
                )
            if db.one("SELECT 1 FROM live_students WHERE room = ? AND nickname = ?", code, name):
                raise LiveError(f"Someone in this class is already called {name!r}: pick another.")
            db.execute(
                "INSERT INTO live_students (room, token_hash, nickname, joined) "
                "VALUES (?, ?, ?, ?)",
                code, _hash(token), name, time.time(),
            )  # fmt: skip
        return token

    def student(self, code: str, token: str | None) -> str:
        """The nickname of the student holding `token` in this room; LiveError otherwise."""
        code = self.room(code).code
        with self._tx(write=False) as db:
            row = db.one(
                "SELECT nickname FROM live_students WHERE room = ? AND token_hash = ?",
                code, _hash(token or ""),
            )  # fmt: skip
        if row is None:
            raise LiveError("You haven't joined this class yet (or your link is from another).")
        return row[0]

    def n_students(self, code: str) -> int:
        with self._tx(write=False) as db:
            return db.one("SELECT COUNT(*) FROM live_students WHERE room = ?", code)[0]

    # --- rounds --------------------------------------------------------------------------

    def open_round(self, code: str, teacher: str | None, kind: str, spec: dict) -> int:
        """Open the next round (an open one is revealed-less closed first: at most one is
        open). Teacher only. Its number."""
        code = self._teacher(code, teacher)
        if kind not in KINDS:
            raise LiveError(f"A round is one of {', '.join(KINDS)}, not {kind!r}.")
        text = json.dumps(spec)
        with self._tx() as db:
            (last,) = db.one(
                "SELECT COALESCE(MAX(number), 0) FROM live_rounds WHERE room = ?", code
            )
            db.execute(
                "UPDATE live_rounds SET state = 'closed' WHERE room = ? AND state = 'open'", code
            )
            db.execute(
                "INSERT INTO live_rounds (room, number, kind, spec, state, opened) "
                "VALUES (?, ?, ?, ?, 'open', ?)",
                code, last + 1, kind, text, time.time(),
            )  # fmt: skip
        return last + 1

    def current_round(self, code: str) -> Round | None:
        """The room's latest round (open, revealed or closed), or None before the first."""
        code = normalise_code(code)
        with self._tx(write=False) as db:
            row = db.one(
                "SELECT room, number, kind, spec, state, opened, result FROM live_rounds "
                "WHERE room = ? ORDER BY number DESC LIMIT 1",
                code,
            )
        return _round(row)

    def round(self, code: str, number: int) -> Round:
        with self._tx(write=False) as db:
            row = db.one(
                "SELECT room, number, kind, spec, state, opened, result FROM live_rounds "
                "WHERE room = ? AND number = ?",
                normalise_code(code), int(number),
            )  # fmt: skip
        if row is None:
            raise LiveError(f"This class has no round {number}.")
        return _round(row)

    def status(self, code: str) -> tuple[int, str, int]:
        """(latest round number or 0, its state, its number of answers): what a waiting page
        polls, in one query."""
        with self._tx(write=False) as db:
            row = db.one(
                "SELECT r.number, r.state, (SELECT COUNT(*) FROM live_answers a "
                "WHERE a.room = r.room AND a.number = r.number) FROM live_rounds r "
                "WHERE r.room = ? ORDER BY r.number DESC LIMIT 1",
                normalise_code(code),
            )
        return (0, "none", 0) if row is None else (int(row[0]), row[1], int(row[2]))

    def public_status(self, code: str) -> dict[str, int | str] | None:
        """What a room's waiting pages poll, in one query: `{"round", "state", "answers",
        "students"}` (round 0, state "none" before the first), or None for no room or an
        expired one. Nothing in it is secret: a student's page shows all of it."""
        with self._tx(write=False) as db:
            row = db.one(
                "SELECT m.expires, (SELECT COUNT(*) FROM live_students s WHERE s.room = m.code), "
                "r.number, r.state, (SELECT COUNT(*) FROM live_answers a "
                "WHERE a.room = r.room AND a.number = r.number) "
                "FROM live_rooms m LEFT JOIN live_rounds r ON r.room = m.code AND r.number = "
                "(SELECT MAX(number) FROM live_rounds WHERE room = m.code) WHERE m.code = ?",
                normalise_code(code),
            )
        if row is None or row[0] < time.time():
            return None
        _, students, number, state, answers = row
        if number is None:
            return {"round": 0, "state": "none", "answers": 0, "students": int(students)}
        return {"round": int(number), "state": state, "answers": int(answers),
                "students": int(students)}  # fmt: skip

    def reveal(self, code: str, teacher: str | None, number: int, result: dict) -> None:
        """Close the round and publish `result` (what students may see). Teacher only."""
        code = self._teacher(code, teacher)
        with self._tx() as db:
            updated = db.execute(
                "UPDATE live_rounds SET state = 'revealed', result = ? "
                "WHERE room = ? AND number = ? AND state = 'open'",
                json.dumps(result), code, int(number),
            )  # fmt: skip
        if not updated:
            raise RoundClosed(f"Round {number} is not open (already revealed, or replaced).")

    # --- answers -------------------------------------------------------------------------

    def answer(
        self,
        code: str,
        token: str | None,
        number: int,
        *,
        painting: np.ndarray | None = None,
        guess: int | None = None,
        confidence: float | None = None,
    ) -> None:
        """Store (or replace) a student's answer to the open round `number`."""
        self.student(code, token)
        code = normalise_code(code)
        rnd = self.round(code, number)
        if rnd.state != "open":
            raise RoundClosed(
                "This round is over: the answers were revealed, so yours can't change now."
            )
        blob = None
        if rnd.kind == "map":
            p = check_painting(painting) if painting is not None else None
            if p is None:
                raise LiveError("Paint the pixels you think matter, then send.")
            blob = np.round(p * 255).astype(np.uint8).tobytes()
            guess = confidence = None
        else:
            k = int(rnd.spec.get("n_classes", 10))
            if guess is None or not 0 <= int(guess) < k:
                raise LiveError("Pick the class you think the model will say.")
            c = 0.5 if confidence is None else float(confidence)
            if not 0.0 <= c <= 1.0:
                raise LiveError("How sure you are is between 0 % and 100 %.")
            guess, confidence = int(guess), c
        with self._tx() as db:
            state = db.one(
                "SELECT state FROM live_rounds WHERE room = ? AND number = ?", code, int(number)
            )
            if state is None or state[0] != "open":  # revealed between the two reads
                raise RoundClosed(
                    "This round is over: the answers were revealed, so yours can't change now."
                )
            db.execute(
                "INSERT INTO live_answers (room, number, token_hash, painting, guess, confidence, "
                "updated) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (room, number, token_hash) "
                "DO UPDATE SET painting = excluded.painting, guess = excluded.guess, "
                "confidence = excluded.confidence, updated = excluded.updated",
                code, int(number), _hash(token), blob, guess, confidence, time.time(),
            )  # fmt: skip

    def my_answer(self, code: str, token: str | None, number: int) -> Answer | None:
        name = self.student(code, token)
        with self._tx(write=False) as db:
            row = db.one(
                "SELECT painting, guess, confidence, updated FROM live_answers "
                "WHERE room = ? AND number = ? AND token_hash = ?",
                normalise_code(code), int(number), _hash(token),
            )  # fmt: skip
        return None if row is None else _answer(name, *row)

    def answers(self, code: str, teacher: str | None, number: int) -> list[Answer]:
        """Every answer to a round, by nickname. Teacher only."""
        code = self._teacher(code, teacher)
        with self._tx(write=False) as db:
            rows = db.all(
                "SELECT s.nickname, a.painting, a.guess, a.confidence, a.updated "
                "FROM live_answers a JOIN live_students s "
                "ON s.room = a.room AND s.token_hash = a.token_hash "
                "WHERE a.room = ? AND a.number = ? ORDER BY s.nickname",
                code, int(number),
            )  # fmt: skip
        return [_answer(*row) for row in rows]


def _round(row) -> Round | None:
    if row is None:
        return None
    room, number, kind, spec, state, opened, result = row
    return Round(room, int(number), kind, json.loads(spec), state, float(opened),
                 json.loads(result) if result else None)  # fmt: skip


def _answer(name, painting, guess, confidence, updated) -> Answer:
    p = None
    if painting is not None:
        p = np.frombuffer(bytes(painting), dtype=np.uint8).reshape(PAINTING_SIDE, PAINTING_SIDE)
        p = p.astype(np.float64) / 255.0
    return Answer(name, p, guess, confidence, float(updated))


class _Cursor:
    """`?` placeholders on both databases (psycopg's are `%s`)."""

    def __init__(self, db: Any, postgres: bool) -> None:
        self.db, self.postgres = db, postgres

    def execute(self, sql: str, *params: Any) -> int:
        if self.postgres:
            sql = sql.replace("%", "%%").replace("?", "%s")
        cur = self.db.execute(sql, params)
        return cur.rowcount

    def one(self, sql: str, *params: Any):
        if self.postgres:
            sql = sql.replace("%", "%%").replace("?", "%s")
        return self.db.execute(sql, params).fetchone()

    def all(self, sql: str, *params: Any) -> list:
        if self.postgres:
            sql = sql.replace("%", "%%").replace("?", "%s")
        return self.db.execute(sql, params).fetchall()
