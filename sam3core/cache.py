"""A byte-budgeted LRU cache with counters (used for image features and text features)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

V = TypeVar("V")


@dataclass
class CacheStats:
    """Counters of one cache.

    Attributes:
        hits: Lookups that found an entry.
        misses: Lookups that did not.
        evictions: Entries dropped to stay within the budget.
        entries: Entries held now.
        bytes: Bytes held now.
        budget_bytes: The budget.
    """

    hits: int = 0
    misses: int = 0
    evictions: int = 0
    entries: int = 0
    bytes: int = 0
    budget_bytes: int = 0


class LRUCache(Generic[V]):
    """Least-recently-used cache bounded by the total size of its values.

    Args:
        budget_bytes: Maximum total size. An entry larger than the whole budget is not stored.
        sizeof: Returns the size in bytes of a value.
    """

    def __init__(self, budget_bytes: int, sizeof: Callable[[V], int]) -> None:
        if budget_bytes < 0:
            raise ValueError(f"cache budget must be >= 0 bytes, got {budget_bytes}")
        self._data: OrderedDict[str, tuple[V, int]] = OrderedDict()
        self._sizeof = sizeof
        self._lock = threading.Lock()
        self.stats = CacheStats(budget_bytes=budget_bytes)

    def get(self, key: str) -> V | None:
        """The value for ``key`` (marked most recently used), or ``None``; counts a hit or miss."""
        with self._lock:
            item = self._data.get(key)
            if item is None:
                self.stats.misses += 1
                return None
            self._data.move_to_end(key)
            self.stats.hits += 1
            return item[0]

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._data

    def put(self, key: str, value: V) -> None:
        """Store ``value``, evicting least-recently-used entries to stay within the budget."""
        size = int(self._sizeof(value))
        with self._lock:
            if key in self._data:
                self.stats.bytes -= self._data.pop(key)[1]
            if size > self.stats.budget_bytes:
                self._sync()
                return
            while self._data and self.stats.bytes + size > self.stats.budget_bytes:
                _, (_, old) = self._data.popitem(last=False)
                self.stats.bytes -= old
                self.stats.evictions += 1
            self._data[key] = (value, size)
            self.stats.bytes += size
            self._sync()

    def clear(self) -> None:
        """Drop every entry (counters other than size are kept)."""
        with self._lock:
            self._data.clear()
            self.stats.bytes = 0
            self._sync()

    def _sync(self) -> None:
        self.stats.entries = len(self._data)
