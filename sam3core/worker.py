"""The engine's model-owning worker thread, with cross-request batching.

Every forward pass runs on this one thread (``torch.inference_mode`` is per-thread, so it is
entered here for each unit of work). Callers from any thread or event loop submit work and get a
``concurrent.futures.Future``. Segment jobs that arrive within ``window_s`` of each other — from
different agents, on different images — are run as one batched detector forward of at most
``max_batch`` prompts; a failed batch (e.g. out of memory) is retried job by job so one bad
request never fails its neighbours.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


@dataclass
class Job:
    """A unit of segmentation work: ``size`` prompts on one image; ``batchable`` if it may share a forward."""

    payload: Any
    size: int
    batchable: bool
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


@dataclass
class _Call:
    fn: Callable[[], Any]
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


_STOP = object()


class BatchingWorker:
    """One thread that runs calls and (batched) segment jobs.

    Args:
        name: Thread name.
        run_jobs: Runs a list of job payloads as one forward; returns one result per payload.
        window_s: How long to wait for more jobs after the first (0 = only take what is queued).
        max_batch: Upper bound on the summed ``size`` of a batch (1 disables cross-request batching).
    """

    def __init__(self, name: str, run_jobs: Callable[[Sequence[Any]], list[Any]], *, window_s: float = 0.002,
                 max_batch: int = 8) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if window_s < 0:
            raise ValueError(f"batch window must be >= 0 s, got {window_s}")
        self._run_jobs = run_jobs
        self.window_s = window_s
        self.max_batch = max_batch
        self._queue: queue.Queue[Any] = queue.Queue()
        self._pending: collections.deque[Any] = collections.deque()
        self.batches = 0
        self.batched_jobs = 0  # jobs that shared a forward with at least one other job
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def call(self, fn: Callable[[], Any]) -> concurrent.futures.Future:
        """Run ``fn`` on the worker thread (inline when already on it, so nothing deadlocks)."""
        item = _Call(fn)
        if threading.current_thread() is self._thread:
            item.future.set_result(fn())
        else:
            self._queue.put(item)
        return item.future

    def submit(self, job: Job) -> concurrent.futures.Future:
        """Queue a segment job; its future resolves to the job's result."""
        if threading.current_thread() is self._thread:
            job.future.set_result(self._run_jobs([job.payload])[0])
        else:
            self._queue.put(job)
        return job.future

    def stop(self, timeout: float = 30.0) -> None:
        """Finish queued work, then end the thread (joined, so no forward runs at interpreter exit)."""
        self._queue.put(_STOP)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # ------------------------------------------------------------------ loop
    def _next(self, timeout: float | None) -> Any:
        if self._pending:
            return self._pending.popleft()
        if timeout is None:
            return self._queue.get()
        if timeout <= 0:
            return self._queue.get_nowait()
        return self._queue.get(timeout=timeout)

    def _loop(self) -> None:
        import torch

        while True:
            item = self._next(None)
            if item is _STOP:
                return
            with torch.inference_mode():
                if isinstance(item, _Call):
                    _settle(item.future, item.fn)
                elif not item.batchable or self.max_batch == 1:
                    self._run_group([item])
                else:
                    self._run_group(self._gather(item))

    def _gather(self, first: Job) -> list[Job]:
        group, size = [first], first.size
        deadline = time.monotonic() + self.window_s
        while size < self.max_batch:
            try:
                nxt = self._next(deadline - time.monotonic())
            except queue.Empty:
                break
            if isinstance(nxt, Job) and nxt.batchable and size + nxt.size <= self.max_batch:
                group.append(nxt)
                size += nxt.size
                continue
            self._pending.appendleft(nxt)  # run it next, in order
            break
        return group

    def _run_group(self, group: list[Job]) -> None:
        live = [j for j in group if j.future.set_running_or_notify_cancel()]
        if not live:
            return
        self.batches += 1
        if len(live) > 1:
            self.batched_jobs += len(live)
        try:
            results = self._run_jobs([j.payload for j in live])
        except BaseException as e:
            if len(live) == 1:
                live[0].future.set_exception(e)
                return
            logger.warning("a batch of %d requests failed (%s); retrying them one by one", len(live), e)
            for job in live:
                _settle(job.future, lambda job=job: self._run_jobs([job.payload])[0])
            return
        for job, result in zip(live, results, strict=True):
            job.future.set_result(result)


def _settle(future: concurrent.futures.Future, fn: Callable[[], Any]) -> None:
    if future.done():
        return
    if not future.running() and not future.set_running_or_notify_cancel():
        return
    try:
        result = fn()
    except BaseException as e:  # delivered to the caller, who re-raises it
        future.set_exception(e)
    else:
        future.set_result(result)
