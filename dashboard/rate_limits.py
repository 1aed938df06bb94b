"""How much one client may ask of the server: guesses at room codes, joins, reads of a room's
status, and CPU on the explore route; and the queue of the explore route's expensive methods.

Each limit is a token bucket per client address: it holds up to `burst` tokens and gains
`rate` a second; a request that finds too few is refused with the wait until there are enough
(the routes answer 429 with `Retry-After`, the Live page says it in words). The page and the
routes run in one process (`python -m dashboard`), so they share the buckets: guesses typed
into the join form and guesses sent to the status route spend the same budget.

**Room codes.** A lookup of a code that names no room (a miss) costs a token of `GUESSES`,
taken before the lookup and given back when the code named a room; with none left, every
lookup is refused, of a real room's code too, so that a refusal tells nothing about the code.
At `SALIENCY_ROOM_GUESSES_PER_MIN` (30) misses a minute, one address tries 43,200 codes a
day; `sweep_years()` is the time to try them all.

**The client's address** is the one the connection comes from. Behind a reverse proxy that is
the proxy's, so every client shares one budget; `X-Forwarded-For` is believed only from the
addresses in uvicorn's `FORWARDED_ALLOW_IPS`, which `python -m dashboard` sets to none unless
the environment names the proxy (uvicorn's own default believes it from this machine, so any
local program could pick the address it is counted under). An IPv6 client is counted by its
/64 network: one machine can have as many addresses in it as it likes.

Never imports streamlit.
"""

from __future__ import annotations

import ipaddress
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

MAX_CLIENTS = 4096  # buckets kept per limit; the longest idle is dropped (as if refilled)
LOCAL = "local"  # this machine (Streamlit reports no address for it)


def _setting(name: str, default: float) -> float:
    text = os.environ.get(name, "")
    try:
        value = float(text) if text else default
    except ValueError:
        value = default
    return value if math.isfinite(value) and value > 0 else default


GUESSES_PER_MIN = _setting("SALIENCY_ROOM_GUESSES_PER_MIN", 30.0)
GUESS_BURST = 10.0
# Status reads, of known codes too: a teacher's count reads 2 a second, a waiting page 0.5 (a
# class behind one proxy address: 2 + 0.5 a student).
READS_PER_S = _setting("SALIENCY_STATUS_READS_PER_S", 20.0)
READ_BURST = 2 * READS_PER_S
JOINS_PER_MIN = _setting("SALIENCY_JOINS_PER_MIN", 6.0)
JOIN_BURST = 10.0
EXPLORE_CPU_S_PER_MIN = _setting("SALIENCY_EXPLORE_CPU_S_PER_MIN", 20.0)
EXPENSIVE_METHODS = frozenset(
    {"smoothgrad", "smoothgrad_sq", "vargrad", "integrated_gradients", "score_cam", "occlusion"}
)  # each many forward (and backward) passes: Score-CAM one per channel of its layer
EXPENSIVE_AT_ONCE = int(_setting("SALIENCY_EXPENSIVE_AT_ONCE", 1.0))
EXPENSIVE_WAITING = 8  # requests that may wait for a turn, server-wide; more are refused
EXPENSIVE_WAIT_S = 30.0  # the longest one waits
EXPENSIVE_PER_CLIENT = 2  # of one client's, running or waiting


class Refused(Exception):
    """Too much, too soon: try again in `retry_after` seconds. `str()` says it in words;
    `status` is the HTTP answer (429: this client asked too much; 503: the server is busy)."""

    def __init__(self, message: str, retry_after: float, status: int = 429) -> None:
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))
        self.status = status


def client_key(host: str | None) -> str:
    """The key a client is counted under: its address; its /64 for IPv6; LOCAL for this
    machine (no address, or a loopback one)."""
    if not isinstance(host, str) or not host:  # (AppTest's is a mock)
        return LOCAL
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if ip.is_loopback:
        return LOCAL
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class Buckets:
    """A token bucket per client: each holds up to `burst` tokens and gains `rate` a second.
    Thread-safe; at most MAX_CLIENTS kept (the longest unused is dropped: a full bucket)."""

    def __init__(self, rate: float, burst: float, clock=time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self._lock = threading.Lock()
        self._tokens: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _now(self, client: str) -> float:
        """The client's tokens now (lock held), its bucket moved to the recent end."""
        now = self.clock()
        tokens, then = self._tokens.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        self._tokens[client] = (tokens, now)
        while len(self._tokens) > MAX_CLIENTS:
            self._tokens.popitem(last=False)
        return tokens

    def wait(self, client: str, cost: float = 1.0) -> float:
        """Seconds until the client has `cost` tokens (0: it has them now). Takes nothing."""
        with self._lock:
            tokens = self._now(client)
        return max(0.0, (cost - tokens) / self.rate)

    def take(self, client: str, cost: float = 1.0) -> float:
        """Take `cost` tokens and return 0, or take nothing and return the wait for them."""
        with self._lock:
            tokens = self._now(client)
            if tokens >= cost:
                self._tokens[client] = (tokens - cost, self.clock())
                return 0.0
        return (cost - tokens) / self.rate

    def charge(self, client: str, cost: float) -> None:
        """Take `cost` tokens whatever is left (a cost known only afterwards: CPU time), down
        to a debt of 10 bursts at most; a negative cost gives tokens back, up to `burst`."""
        with self._lock:
            tokens = self._now(client)
            self._tokens[client] = (max(-10 * self.burst, tokens - cost), self.clock())

    def clear(self) -> None:
        with self._lock:
            self._tokens.clear()


GUESSES = Buckets(GUESSES_PER_MIN / 60, GUESS_BURST)
READS = Buckets(READS_PER_S, READ_BURST)
JOINS = Buckets(JOINS_PER_MIN / 60, JOIN_BURST)
EXPLORE_CPU = Buckets(EXPLORE_CPU_S_PER_MIN / 60, EXPLORE_CPU_S_PER_MIN)


def sweep_years(alphabet: int, length: int) -> float:
    """Years one address needs to try every room code at the guess limit."""
    return alphabet**length / (GUESSES_PER_MIN / 60) / (365.25 * 86400)


def finds_per_day(alphabet: int, length: int, rooms: int) -> float:
    """Rooms one address expects to find in a day of guessing at the limit, when `rooms` are
    open."""
    return GUESSES_PER_MIN * 60 * 24 * rooms / alphabet**length


def guess(client: str) -> None:
    """Before a lookup of a room code that may miss: take a guess, or raise Refused when the
    client has none left, whatever the code (a refusal says nothing about it). Call `found`
    when the code named a room."""
    wait = GUESSES.take(client)
    if wait:
        raise Refused(
            "Too many class codes that don't exist were tried from your network: wait "
            f"{math.ceil(wait)} s, then check the code with your teacher.",
            wait,
        )


def found(client: str) -> None:
    """The code looked up after `guess` named a room: the guess is given back."""
    GUESSES.charge(client, -1.0)


def join(client: str) -> None:
    """A join from this client, or Refused."""
    wait = JOINS.take(client)
    if wait:
        raise Refused(
            f"Too many joins from your network in a short time: wait {math.ceil(wait)} s and "
            "press Join again.",
            wait,
        )


# --- the explore route ---------------------------------------------------------------------


class _Queue:
    """At most `at_once` expensive computations at a time, server-wide; up to `waiting` more
    wait for a turn (each at most `wait_s`), and beyond that they are refused at once."""

    def __init__(self, at_once: int, waiting: int, wait_s: float) -> None:
        self._turns = threading.BoundedSemaphore(at_once)
        self._lock = threading.Lock()
        self._waiting, self.max_waiting, self.wait_s = 0, waiting, wait_s
        self._mine: dict[str, int] = {}

    @contextmanager
    def turn(self, method: str | None) -> Iterator[None]:
        """A turn for an expensive `method` (nothing to wait for with another)."""
        if method not in EXPENSIVE_METHODS:
            yield
            return
        with self._lock:
            if self._waiting >= self.max_waiting:
                raise Refused("The server is busy with other maps: try again shortly.", 5, 503)
            self._waiting += 1
        try:
            got = self._turns.acquire(timeout=self.wait_s)
        finally:
            with self._lock:
                self._waiting -= 1
        if not got:
            raise Refused("The server is busy with other maps: try again shortly.", 5, 503)
        start = time.process_time()
        try:
            yield
        finally:
            # The whole process's CPU while this turn ran: torch's own threads work for it too
            # (a smoothgrad here: 1.1 s on this thread, 1.6 s in all). Anything else the
            # server did meanwhile is counted with it, so this errs on charging more.
            _spent.process = getattr(_spent, "process", 0.0) + time.process_time() - start
            self._turns.release()

    def client(self, client: str, method: str | None):
        """Around one client's request for `method`: refused when that client already has
        EXPENSIVE_PER_CLIENT expensive ones running or waiting."""
        if method not in EXPENSIVE_METHODS:
            return nullcontext()
        return self._client(client)

    @contextmanager
    def _client(self, client: str) -> Iterator[None]:
        with self._lock:
            if self._mine.get(client, 0) >= EXPENSIVE_PER_CLIENT:
                raise Refused("Your earlier maps are still being computed: try again shortly.", 2)
            self._mine[client] = self._mine.get(client, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._mine[client] -= 1
                if not self._mine[client]:
                    del self._mine[client]


EXPENSIVE = _Queue(EXPENSIVE_AT_ONCE, EXPENSIVE_WAITING, EXPENSIVE_WAIT_S)
_spent = threading.local()  # CPU of the expensive turns this thread had, for explore_budget


@contextmanager
def explore_budget(client: str) -> Iterator[None]:
    """Around one request to the explore route: refused when the client's CPU budget
    (EXPLORE_CPU_S_PER_MIN seconds a minute) is spent, else charged the CPU time spent inside:
    this thread's (`time.thread_time`: waiting for a turn costs nothing), or the process's
    during an expensive turn when that is more."""
    wait = EXPLORE_CPU.wait(client, 1e-9)
    if wait:
        raise Refused(
            f"You asked for more maps than this server computes for one visitor "
            f"({EXPLORE_CPU_S_PER_MIN:g} s of CPU a minute): the page shows them as it "
            f"computes them; quick previews come back in {math.ceil(wait)} s.",
            wait,
        )
    _spent.process = 0.0
    start = time.thread_time()
    try:
        yield
    finally:
        EXPLORE_CPU.charge(client, max(time.thread_time() - start, _spent.process))


def clear() -> None:
    """Forget every client's spending (tests)."""
    for buckets in (GUESSES, READS, JOINS, EXPLORE_CPU):
        buckets.clear()
