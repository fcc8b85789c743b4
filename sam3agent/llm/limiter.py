"""Limits on the LLM calls in flight, shared across event loops.

:class:`SharedLimiter` caps concurrent holders like an ``asyncio.Semaphore`` but keeps one semaphore
per running event loop, so one limiter can be shared by every backend of a process (see
:func:`shared_limiter`, keyed by base URL) even when a synchronous wrapper runs each job in a fresh
loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref

logger = logging.getLogger(__name__)


class SharedLimiter:
    """At most ``limit`` holders at a time, usable as ``async with limiter:`` from any event loop.

    An ``asyncio.Semaphore`` binds to the first event loop that waits on it; this keeps one semaphore
    per running loop instead, so a limiter shared process-wide keeps working when a synchronous
    wrapper runs each job in a fresh loop. Within one loop (the normal case: many agents gathered
    together) the limit is exact.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.limit = limit
        self._lock = threading.Lock()
        self._semaphores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        with self._lock:
            sem = self._semaphores.get(loop)
            if sem is None:
                sem = self._semaphores[loop] = asyncio.Semaphore(self.limit)
            return sem

    async def __aenter__(self) -> None:
        await self._semaphore().acquire()

    async def __aexit__(self, *exc: object) -> None:
        self._semaphore().release()


_SHARED_LIMITERS: dict[str, SharedLimiter] = {}
_SHARED_LOCK = threading.Lock()


def shared_limiter(key: str, limit: int) -> SharedLimiter:
    """The process-wide limiter for ``key`` (a base URL), created with ``limit`` on first use.

    A later request for the same key with a different limit keeps the first limit and logs a warning.
    """
    with _SHARED_LOCK:
        limiter = _SHARED_LIMITERS.get(key)
        if limiter is None:
            limiter = _SHARED_LIMITERS[key] = SharedLimiter(limit)
        elif limiter.limit != limit:
            logger.warning("shared limiter for %s already caps at %d; ignoring new limit %d", key, limiter.limit, limit)
        return limiter
