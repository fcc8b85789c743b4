"""Many agent runs at once: :meth:`Agent.arun_many` over an iterable of (image, query) items.

``arun_many`` keeps at most ``concurrency`` runs in flight on one agent (they share its LLM backend
and engine, so the engine batches and caches across them), pulls the next item only when a run
finishes, and yields one record per item as soon as its run ends, in completion order:

* :class:`ManyResult` when the run finished (``result`` is its :class:`~sam3agent.result.AgentResult`,
  whatever its status);
* :class:`ManyFailure` when the item could not be run: ``error`` is the exception, e.g. a
  ``ValueError`` for an unreadable image or an empty query, an
  :class:`~sam3agent.llm.base.LLMBackendError` when the backend failed for good (its
  ``partial_result`` is kept), a ``TypeError`` for an item that is not an (image, query).

Both carry ``index`` (the item's 0-based position in the input) and ``id`` (the item's own id, or
``str(index)``), so callers can match records to items. One item's failure never stops the others.
Nothing is written to disk; :mod:`evals.runner` (``sam3agent batch``) is the resumable, on-disk
counterpart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeAlias

from sam3agent.llm.base import LLMBackendError
from sam3agent.result import AgentResult
from sam3core.image import ImageInput

if TYPE_CHECKING:
    from sam3agent.agent import Agent

logger = logging.getLogger(__name__)

__all__ = ["ManyFailure", "ManyItem", "ManyOutcome", "ManyResult", "arun_many", "run_many"]


@dataclass(frozen=True)
class ManyItem:
    """One unit of work of :meth:`Agent.arun_many`.

    Attributes:
        image: Anything :func:`sam3core.image.prepare_image` accepts (a path, bytes, a PIL image, ...).
        query: What to segment.
        id: The item's id, reported back in its record (``None``: its 0-based index as a string).
    """

    image: ImageInput
    query: str
    id: str | None = None


Item: TypeAlias = "ManyItem | tuple[ImageInput, str] | Mapping[str, object]"
"""An item: a :class:`ManyItem`, an ``(image, query)`` pair, or a mapping with ``image``, ``query``
and optionally ``id`` (a JSONL line of ``sam3agent batch``, say)."""


@dataclass(frozen=True)
class ManyResult:
    """A run that finished (answered, no mask, or out of budget: see ``result.status``).

    Attributes:
        index: 0-based position of the item in the input.
        id: The item's id (``str(index)`` when it has none).
        result: The run's result.
        seconds: Wall time of the run.
    """

    index: int
    id: str
    result: AgentResult
    seconds: float

    @property
    def ok(self) -> Literal[True]:
        """Always True (a :class:`ManyFailure` is False)."""
        return True


@dataclass(frozen=True)
class ManyFailure:
    """An item that could not be run.

    Attributes:
        index: 0-based position of the item in the input.
        id: The item's id (``str(index)`` when it has none or could not be read).
        error: What went wrong: ``ValueError`` (bad image or query), ``TypeError`` (not an
            item), :class:`~sam3agent.llm.base.LLMBackendError` (the backend failed for good), or
            any other exception the run raised.
        seconds: Wall time until the failure.
    """

    index: int
    id: str
    error: Exception
    seconds: float

    @property
    def ok(self) -> Literal[False]:
        """Always False (a :class:`ManyResult` is True)."""
        return False

    @property
    def partial_result(self) -> AgentResult | None:
        """The run so far when the LLM backend failed mid-run (its turns and tokens), else None."""
        partial = getattr(self.error, "partial_result", None)
        return partial if isinstance(partial, AgentResult) else None


ManyOutcome: TypeAlias = "ManyResult | ManyFailure"
"""What :meth:`Agent.arun_many` yields for each item."""


def coerce_item(item: object) -> ManyItem:
    """The :class:`ManyItem` an input item stands for.

    Raises:
        TypeError: ``item`` is not a :class:`ManyItem`, an ``(image, query)`` pair, or a mapping with
            ``image`` and ``query`` keys.
    """
    if isinstance(item, ManyItem):
        return item
    if isinstance(item, tuple | list) and len(item) == 2:
        return ManyItem(image=item[0], query=item[1])
    if isinstance(item, Mapping) and "image" in item and "query" in item:
        item_id = item.get("id")
        return ManyItem(image=item["image"], query=item["query"],  # type: ignore[arg-type]
                        id=None if item_id is None else str(item_id))
    raise TypeError(f"an item must be an (image, query) pair, a ManyItem or a mapping with 'image' and 'query', "
                    f"got {type(item).__name__}")


def run_many(agent: Agent, items: Iterable[Item] | AsyncIterable[Item], *,
             concurrency: int = 8) -> AsyncIterator[ManyOutcome]:
    """Run ``agent`` on every item, ``concurrency`` at a time; see :meth:`Agent.arun_many`.

    Raises:
        ValueError: ``concurrency`` is not an integer >= 1 (raised here, before anything runs).
        TypeError: ``items`` is neither iterable nor async iterable.
    """
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be an integer >= 1, got {concurrency!r}")
    if isinstance(items, AsyncIterable):
        source: AsyncIterator[Item] = aiter(items)
    elif isinstance(items, Iterable):
        source = _from_sync(iter(items))
    else:
        raise TypeError(f"items must be an iterable or an async iterable, got {type(items).__name__}")
    return _stream(agent, source, concurrency)


def arun_many(self: Agent, items: Iterable[Item] | AsyncIterable[Item], *,
              concurrency: int = 8) -> AsyncIterator[ManyOutcome]:
    """Run the agent on many (image, query) items, ``concurrency`` at a time, yielding as runs end.

    Example:
        >>> async for done in agent.arun_many([("a.jpg", "the dog"), ("b.jpg", "the cat")]):  # doctest: +SKIP
        ...     print(done.index, done.id, done.result.status if done.ok else done.error)

    Args:
        items: An iterable or async iterable of items: ``(image, query)`` pairs, :class:`ManyItem`
            objects (with an ``id``), or mappings ``{"image", "query", "id"?}``. It is consumed
            lazily: item ``n + concurrency`` is taken only once a run has finished.
        concurrency: Runs in flight at once (at most this many items are held).

    Returns:
        An async generator of one :class:`ManyResult` or :class:`ManyFailure` per item, in
        completion order (ties in input order). A failing item is yielded as a failure and the
        others go on; an exception raised by ``items`` itself ends the generator. Leaving the loop
        early (or closing the generator) cancels the runs still in flight; use
        ``contextlib.aclosing`` to close it at once.

    Raises:
        ValueError: ``concurrency`` is not an integer >= 1 (at the call, before anything runs).
        TypeError: ``items`` is neither iterable nor async iterable.
    """
    return run_many(self, items, concurrency=concurrency)


async def _from_sync(items: Iterator[Item]) -> AsyncIterator[Item]:
    for item in items:
        yield item


async def _pull(source: AsyncIterator[Item]) -> tuple[bool, Item | None]:
    """The next item as ``(True, item)``, or ``(False, None)`` at the end of the input."""
    try:
        return True, await anext(source)
    except StopAsyncIteration:
        return False, None


async def _one(agent: Agent, index: int, raw: object) -> ManyOutcome:
    started = time.perf_counter()
    item_id = str(index)
    try:
        item = coerce_item(raw)
        item_id = item.id if item.id is not None else item_id
        result = await agent.arun(item.image, item.query)
    except Exception as e:  # one item's failure is its own record; the other runs go on
        expected = isinstance(e, ValueError | TypeError | LLMBackendError)  # input or backend, not a bug
        logger.warning("item %d (%s) failed: %s", index, item_id, e if expected else repr(e), exc_info=not expected)
        return ManyFailure(index, item_id, e, time.perf_counter() - started)
    return ManyResult(index, item_id, result, time.perf_counter() - started)


async def _stream(agent: Agent, source: AsyncIterator[Item], concurrency: int) -> AsyncIterator[ManyOutcome]:
    """Keep ``concurrency`` runs going; one pull from ``source`` at a time, only when a slot is free."""
    running: dict[asyncio.Task[ManyOutcome], int] = {}
    pulling: asyncio.Task[tuple[bool, Item | None]] | None = None
    exhausted, next_index = False, 0
    try:
        while True:
            if pulling is None and not exhausted and len(running) < concurrency:
                pulling = asyncio.create_task(_pull(source))
            waiting: set[asyncio.Future[object]] = {*running, *([pulling] if pulling is not None else [])}
            if not waiting:
                return
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if pulling is not None and pulling in done:
                more, item = pulling.result()  # an exception of the input itself propagates
                pulling = None
                if more:
                    running[asyncio.create_task(_one(agent, next_index, item))] = next_index
                    next_index += 1
                else:
                    exhausted = True
            for task in sorted((t for t in done if t in running), key=running.__getitem__):
                del running[task]
                yield task.result()
    finally:
        await _cancel([*running, *([pulling] if pulling is not None else [])])
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()


async def _cancel(tasks: list[asyncio.Task[object]]) -> None:
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
