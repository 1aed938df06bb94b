"""One byte-bounded, thread-safe cache for the server's computed results (every session's)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from typing import Any


class BytesLRU:
    """Values by key; once their sizes add up to more than `max_bytes`, the least recently used
    go first (the newest always stays)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0  # the sum of the kept values' sizes
        self.items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        """The value kept for `key` (now the most recently used), else None."""
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key][0]
        return None

    def put(self, key: Hashable, value: Any, size: int) -> None:
        """Keep `value` (of `size` bytes) unless `key` already has one."""
        with self.lock:
            if key in self.items:
                return
            self.items[key] = (value, size)
            self.bytes += size
            while self.bytes > self.max_bytes and len(self.items) > 1:
                _, (_, old) = self.items.popitem(last=False)
                self.bytes -= old

    def values(self) -> Iterator[Any]:
        """The kept values, least recently used first (a copy: safe while others put)."""
        with self.lock:
            return iter([value for value, _ in self.items.values()])
