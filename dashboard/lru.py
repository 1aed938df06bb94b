"""Byte-bounded, thread-safe caches for the server's computed results (every session's).

Every cache that can hold what a visitor caused is bounded in bytes against its share of the
server's budget (`dashboard.budget`), never by a count of entries alone: one entry can be a
28 × 28 map or twenty classes' maps of a 1024 × 1024 RGB picture.

    >>> @memo("maps")
    ... def class_maps(name, image, method): ...   # computed once per arguments, kept by bytes
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import threading
from collections.abc import Callable, Hashable, Iterator
from contextlib import nullcontext
from typing import Any

import cachetools
import numpy as np

from dashboard import budget

_MISSING = object()


class BytesLRU:
    """Values by key; once their sizes add up to more than `max_bytes`, the least recently used
    go first. A value larger than `max_bytes` on its own is not kept at all. A thread-safe face
    over `cachetools.LRUCache`, each entry weighed by the size it is put with."""

    def __init__(self, max_bytes: int) -> None:
        self.cache: cachetools.LRUCache = cachetools.LRUCache(max_bytes, getsizeof=_entry_size)
        self.lock = threading.Lock()

    @property
    def max_bytes(self) -> int:
        return int(self.cache.maxsize)

    @max_bytes.setter
    def max_bytes(self, value: int) -> None:
        """A new bound (the kept values that fit it stay, oldest first out)."""
        with self.lock:
            old = self.cache
            self.cache = cachetools.LRUCache(value, getsizeof=_entry_size)
            for key in list(old):
                entry = old[key]
                if entry[1] <= value:
                    self.cache[key] = entry

    @property
    def bytes(self) -> int:
        """The sum of the kept values' sizes."""
        return int(self.cache.currsize)

    def get(self, key: Hashable, default: Any = None) -> Any:
        """The value kept for `key` (now the most recently used), else `default`."""
        with self.lock:
            entry = self.cache.get(key, _MISSING)
        return default if entry is _MISSING else entry[0]

    def put(self, key: Hashable, value: Any, size: int) -> bool:
        """Keep `value` (of `size` bytes) unless `key` already has one; False when it is too
        big to keep."""
        with self.lock:
            if key in self.cache:
                return True
            if size > self.cache.maxsize:
                return False
            self.cache[key] = (value, size)  # the least recently used go while it won't fit
            return True

    def pop(self, key: Hashable) -> None:
        with self.lock:
            self.cache.pop(key, None)

    def clear(self) -> None:
        with self.lock:
            self.cache.clear()

    def keys(self) -> list[Hashable]:
        with self.lock:
            return list(self.cache)

    def values(self) -> Iterator[Any]:
        """The kept values, in the order they were kept (a copy: safe while others put)."""
        with self.lock:
            return iter([value for value, _ in self.cache.values()])


def _entry_size(entry: tuple[Any, int]) -> int:
    return entry[1]


def nbytes(value: Any, _seen: set[int] | None = None) -> int:
    """What `value` holds, in bytes: arrays' buffers, bytes and strings, and what containers
    and dataclasses hold (each object counted once), plus a small overhead per object."""
    seen = set() if _seen is None else _seen
    if id(value) in seen:
        return 0
    seen.add(id(value))
    if isinstance(value, np.ndarray):  # a view keeps its whole base alive: count that once
        owner = value
        while isinstance(owner.base, np.ndarray):
            owner = owner.base
        if owner is not value and id(owner) in seen:
            return 112
        seen.add(id(owner))
        return 112 + owner.nbytes
    if isinstance(value, (bytes, bytearray, memoryview)):
        return 33 + len(value)
    if isinstance(value, str):
        return 49 + len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, dict):
        return 64 + sum(nbytes(k, seen) + nbytes(v, seen) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return 56 + 8 * len(value) + sum(nbytes(v, seen) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = (getattr(value, f.name) for f in dataclasses.fields(value))
        return 64 + sum(nbytes(v, seen) for v in fields)
    if hasattr(value, "numpy") and hasattr(value, "element_size"):  # a torch tensor
        return 112 + value.element_size() * value.nelement()
    return 32


def key_part(value: Any) -> Any:
    """`value` as part of a cache's key: an array by its dtype, shape and a hash of its bytes."""
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value)
        return (value.dtype.str, value.shape, hashlib.blake2b(data.data).digest())
    if isinstance(value, (bytes, bytearray)) and len(value) > 256:  # an uploaded file: its hash
        return ("bytes", len(value), hashlib.blake2b(value).digest())
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, *map(key_part, value))
    return value


def frozen(value: Any) -> Any:
    """`value` with every array in it made read-only: what a cache hands out is shared by every
    caller, so nobody may change it in place (copy first)."""
    if isinstance(value, np.ndarray):
        value.setflags(write=False)
    elif isinstance(value, dict):
        for v in value.values():
            frozen(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            frozen(v)
    return value


_STORES: dict[str, BytesLRU] = {}
_STORES_LOCK = threading.Lock()


def store(share: str) -> BytesLRU:
    """The server's one cache for budget share `share`, sized when first used."""
    with _STORES_LOCK:
        if share not in _STORES:
            _STORES[share] = BytesLRU(budget.share(share))
        return _STORES[share]


def memo(share: str, *, spinner: str | None = None) -> Callable[[Callable], Callable]:
    """A function's results by its arguments (arrays by content), in the server's cache for
    budget `share`, handed out read-only: what Streamlit's data cache did, bounded by bytes.
    `spinner` is shown on a page while a result is computed."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            key = (fn.__module__, fn.__qualname__, *map(key_part, args))
            key += tuple(sorted((k, key_part(v)) for k, v in kwargs.items()))
            cache = store(share)
            value = cache.get(key, _MISSING)
            if value is not _MISSING:
                return value
            with _spinner(spinner):
                value = frozen(fn(*args, **kwargs))
            cache.put(key, value, nbytes(value) + nbytes(key))
            return value

        call.clear = lambda: store(share).clear()
        return call

    return wrap


def _spinner(text: str | None):
    """Streamlit's spinner on a page's run; nothing elsewhere (the explore route's thread)."""
    if not text:
        return nullcontext()
    from dashboard.compat_streamlit import in_script_run

    if not in_script_run():
        return nullcontext()
    import streamlit as st

    return st.spinner(text)
