"""One agent run as Server-Sent Events: the body of ``POST /v1/segment/stream``.

:func:`event_stream` starts the run in its own task and writes, in order, one message per event of
the run (:mod:`sam3agent.events`)::

    event: <type>
    data: <the event's to_dict() as one line of JSON>

then one final message: ``event: result`` with the answer, or ``event: error`` with
``{"error": {"type", "message"}, "status": <the HTTP status POST /v1/segment would answer>}``.
While no event is due, a comment line (``: keep-alive``) goes out every :data:`KEEPALIVE_S` seconds
so that proxies keep the connection open. When the client disconnects, Starlette cancels the body
and the run is cancelled with it.

Plain ``starlette.responses.StreamingResponse`` is enough for this: the format is three lines, and
the run owns the disconnect and keep-alive handling, which ``sse-starlette`` would duplicate.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from starlette.responses import StreamingResponse

from sam3agent.app.serve.common import OnEvent, ServeError

if TYPE_CHECKING:
    from sam3agent.events import AgentEvent
    from sam3agent.result import AgentResult

__all__ = ["KEEPALIVE_S", "event_stream", "event_stream_response", "sse_message"]

logger = logging.getLogger(__name__)

#: Seconds without an event after which a keep-alive comment is sent.
KEEPALIVE_S = 15.0

_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no caching, no proxy buffering


def sse_message(event: str, data: Mapping[str, Any]) -> str:
    """One Server-Sent Events message: ``event: <event>``, ``data: <JSON on one line>``, a blank line."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))  # as JSONResponse
    return f"event: {event}\ndata: {text}\n\n"


def _error_message(error: ServeError) -> str:
    return sse_message("error", {**error.to_dict(), "status": error.status})


async def event_stream(run: Callable[[OnEvent], Awaitable[AgentResult]],
                       answer: Callable[[AgentResult], dict[str, Any]], *,
                       keepalive_s: float = KEEPALIVE_S) -> AsyncIterator[str]:
    """The messages of one run (see the module docstring).

    Args:
        run: Starts the run given the callback for its events (e.g. a partial of
            :func:`~sam3agent.app.serve.common.run_within`); raises :class:`ServeError` on failure.
        answer: The ``result`` message's data for the run's result (called in a worker thread).
        keepalive_s: Seconds of silence before a keep-alive comment.

    Yields:
        SSE messages, as text.
    """
    queue: asyncio.Queue[AgentEvent | None] = asyncio.Queue()

    async def on_event(event: AgentEvent) -> None:
        queue.put_nowait(event)

    task = asyncio.ensure_future(run(on_event))
    task.add_done_callback(lambda _: queue.put_nowait(None))  # after the run's last event
    try:
        while True:
            try:
                async with asyncio.timeout(keepalive_s):
                    event = await queue.get()
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if event is None:
                break
            yield sse_message(event.type, event.to_dict())
        yield await _final_message(task, answer)
    finally:
        if not task.done():  # the client left (or the server is stopping): the run ends here too
            logger.info("the client of a streamed run went away; cancelling the run")
            task.cancel()
            await asyncio.wait({task})


async def _final_message(task: asyncio.Future[AgentResult], answer: Callable[[AgentResult], dict[str, Any]]) -> str:
    """``event: result`` with the answer of the finished run, or ``event: error``."""
    try:
        payload = await asyncio.to_thread(answer, task.result())
    except ServeError as e:
        logger.info("streamed run -> %d %s: %s", e.status, e.kind, e.message)
        return _error_message(e)
    except Exception as e:
        logger.exception("unhandled error in a streamed run", exc_info=e)
        return _error_message(ServeError(500, "internal_error", f"internal error ({type(e).__name__}); "
                                                                "see the server log"))
    return sse_message("result", payload)


def event_stream_response(run: Callable[[OnEvent], Awaitable[AgentResult]],
                          answer: Callable[[AgentResult], dict[str, Any]]) -> StreamingResponse:
    """A ``text/event-stream`` response streaming :func:`event_stream` (uncached, unbuffered by proxies)."""
    body = event_stream(run, answer, keepalive_s=KEEPALIVE_S)
    return StreamingResponse(body, media_type="text/event-stream", headers=_HEADERS)
