"""What every server front end shares: limits, errors, image resolution, the run and the answer.

The HTTP API, the MCP server and the chat-assistant tool (:mod:`sam3agent.app.embed`) all take an image
from an untrusted caller, run the agent on it under a time limit and describe the result. This module
does that once:

- :class:`ServeLimits`: allowed file roots, URL fetching (off by default), upload size, pixel count and
  per-request timeout (defined in :mod:`sam3agent.app.serve.limits`).
- :class:`ServeError`: a failure the caller can act on, with its HTTP status and a message naming
  the fix; every front end turns it into its own error form.
- :func:`load_image`: an image given as a data URL, a base64 string, a path inside an allowed root
  or (when enabled) an ``http(s)`` URL, checked against the limits *before* it is decoded (defined in
  :mod:`sam3agent.app.serve.images`).
- :func:`run_agent`: one agent run with the request timeout, backend failures mapped to errors;
  :func:`load_and_run` loads the image first, within the same time. A :class:`Deadline` shared by
  :func:`load_within` and :func:`run_within` lets a front end answer input errors before it starts
  streaming a run; with ``on_event``, the run's events (:mod:`sam3agent.events`) are handed over as
  they happen.
- :func:`compact_answer`: the small JSON answer (status, count, per mask id, box, score, area, RLE);
  :func:`segment_answer`: the full one of ``POST /v1/segment``.

Nothing here imports the ASGI stack, so :mod:`sam3agent.app.embed` can use it without the ``serve`` extra.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from sam3agent.app.serve.images import (
    decode_image,
    fetch_url,
    load_image,
    read_image_file,
    resolve_allowed_path,
    too_large,
)
from sam3agent.app.serve.limits import (
    CLI_OPTIONS,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_UPLOAD_MB,
    DEFAULT_REQUEST_TIMEOUT_S,
    PYTHON_OPTIONS,
    ServeError,
    ServeLimits,
    bad_request,
)
from sam3agent.detections import detections_to_list
from sam3agent.events import AgentEvent
from sam3agent.llm.base import LLMBackendError
from sam3agent.versions import REPORTED, package_versions
from sam3core.image import ImageHandle, png_bytes

if TYPE_CHECKING:
    from sam3agent.agent import Agent
    from sam3agent.result import AgentResult

__all__ = [
    "CLI_OPTIONS",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_UPLOAD_MB",
    "DEFAULT_REQUEST_TIMEOUT_S",
    "PYTHON_OPTIONS",
    "Deadline",
    "OnEvent",
    "ServeError",
    "ServeLimits",
    "bad_request",
    "check_query",
    "compact_answer",
    "decode_image",
    "error_answer",
    "fetch_url",
    "load_and_run",
    "load_image",
    "load_within",
    "read_image_file",
    "resolve_allowed_path",
    "run_agent",
    "run_within",
    "segment_answer",
    "segment_spec",
    "server_versions",
    "too_large",
]

logger = logging.getLogger(__name__)

#: Receives each event of a run as it happens (see :mod:`sam3agent.events`).
OnEvent = Callable[[AgentEvent], Awaitable[None]]


# ------------------------------------------------------------------------------------------ runs


def check_query(query: object) -> str:
    """The stripped query, or a 400 error when it is missing or blank."""
    if not isinstance(query, str) or not query.strip():
        raise bad_request("query is required: a non-empty string describing what to segment")
    return query.strip()


@dataclass(frozen=True)
class Deadline:
    """When one request's time runs out: its image loading and its run share it.

    Attributes:
        timeout_s: The request timeout (``None``: no limit).
        option: How the 504 message names the setting (see :meth:`ServeLimits.option`).
        at: The event loop's clock reading when the time is up (``None``: never).
    """

    timeout_s: float | None
    option: str = CLI_OPTIONS["request_timeout"]
    at: float | None = None

    @classmethod
    def start(cls, timeout_s: float | None, option: str = CLI_OPTIONS["request_timeout"]) -> Deadline:
        """A deadline ``timeout_s`` from now (call it inside the event loop)."""
        at = None if timeout_s is None else asyncio.get_running_loop().time() + timeout_s
        return cls(timeout_s, option, at)

    def error(self, what: str) -> ServeError:
        """The 504 error saying ``what`` did not finish in time."""
        return ServeError(504, "timeout", f"{what} did not finish within the request timeout of {self.timeout_s:g} "
                                          f"s ({self.option}); try a smaller image or a simpler query")


async def run_agent(agent: Agent, image: ImageHandle, query: str, timeout_s: float | None) -> AgentResult:
    """Run the agent once under a wall-clock limit, mapping failures to :class:`ServeError`.

    Args:
        agent: The shared agent (concurrent calls are fine).
        image: The prepared image.
        query: What to segment.
        timeout_s: The time this run may take (``None``: no limit).

    Raises:
        ServeError: 400 (bad query), 502 (the LLM backend failed, naming its endpoint), 504 (timeout).
    """
    return await load_and_run(agent, lambda: image, query, timeout_s)


async def load_and_run(agent: Agent, loader: Callable[[], ImageHandle], query: object,
                       timeout_s: float | None, *, timeout_option: str = CLI_OPTIONS["request_timeout"],
                       on_event: OnEvent | None = None) -> AgentResult:
    """Load an image with ``loader`` (in a worker thread) and run the agent, together within ``timeout_s``.

    ``timeout_option`` is how the 504 message names the setting (see :meth:`ServeLimits.option`);
    ``on_event`` is awaited with each event of the run (see :func:`run_within`).

    Raises:
        ServeError: From the loader; 400 (bad query), 502 (the LLM backend failed, naming its
            endpoint) or 504 (the time ran out).
    """
    text = check_query(query)
    deadline = Deadline.start(timeout_s, timeout_option)
    handle = await load_within(loader, deadline)
    return await run_within(agent, handle, text, deadline, on_event=on_event)


async def load_within(loader: Callable[[], ImageHandle], deadline: Deadline) -> ImageHandle:
    """The image ``loader`` returns (called in a worker thread) before ``deadline``.

    Raises:
        ServeError: From the loader; 400 for a ``ValueError`` it raises, 504 when the time ran out.
    """
    try:
        async with asyncio.timeout_at(deadline.at) as scope:
            return await asyncio.to_thread(loader)
    except TimeoutError as e:
        if not scope.expired():
            raise
        raise deadline.error("loading the image") from e
    except ValueError as e:
        raise bad_request(str(e)) from e


async def run_within(agent: Agent, handle: ImageHandle, text: str, deadline: Deadline, *,
                     on_event: OnEvent | None = None) -> AgentResult:
    """Run the agent on a loaded image before ``deadline``, mapping failures to :class:`ServeError`.

    Args:
        agent: The shared agent.
        handle: The prepared image.
        text: The checked query (see :func:`check_query`).
        deadline: When the request's time is up.
        on_event: Awaited with each event of the run, in order, within the deadline (the run goes
            on meanwhile: :meth:`~sam3agent.agent.Agent.astream` buffers its events); ``None``: a
            plain :meth:`~sam3agent.agent.Agent.arun`.

    Raises:
        ServeError: 400 (bad query), 502 (the LLM backend failed, naming its endpoint), 504 (timeout).
    """
    try:
        async with asyncio.timeout_at(deadline.at) as scope:
            if on_event is None:
                return await agent.arun(handle, text)
            async with aclosing(agent.astream(handle, text)) as items:
                async for item in items:
                    if not isinstance(item, AgentEvent):
                        return item
                    await on_event(item)
            raise RuntimeError("internal error: Agent.astream ended without a result")
    except TimeoutError as e:
        if not scope.expired():
            raise
        raise deadline.error("the request") from e
    except LLMBackendError as e:
        logger.warning("LLM backend failure: %s", e)
        raise ServeError(502, "llm_backend_error",
                         f"the LLM backend {e.endpoint} failed after {e.attempts} attempt(s): {e.last_error}; "
                         "check that the endpoint is up and serves the configured model") from e
    except ValueError as e:
        raise bad_request(str(e)) from e


async def segment_spec(agent: Agent, spec: str, query: object, limits: ServeLimits, *,
                       allow_paths: bool = True, on_event: OnEvent | None = None) -> AgentResult:
    """Resolve ``spec`` with :func:`load_image` and run the agent on it (see :func:`load_and_run`)."""
    loader = functools.partial(load_image, spec, limits, allow_paths=allow_paths)
    return await load_and_run(agent, loader, query, limits.request_timeout_s,
                              timeout_option=limits.option("request_timeout"), on_event=on_event)


# ------------------------------------------------------------------------------------------ answers


def compact_answer(result: AgentResult, *, include_rle: bool = True) -> dict[str, Any]:
    """The small JSON-safe answer a tool caller gets.

    Returns:
        ``{"status", "query", "count", "reason", "image": {"width", "height"}, "masks": [...]}``; each
        mask has ``id`` (1-based, the number drawn on the overlay), ``phrase``, ``score``,
        ``box_xyxy`` (pixel corners x1, y1, x2, y2 of the original image, inclusive), ``area``
        (pixels) and, with ``include_rle``, ``rle`` (COCO RLE ``{"size": [h, w], "counts": str}``).
    """
    height, width = result.image.height, result.image.width
    records = detections_to_list(result.detections, height, width)
    masks = result.detections.mask
    out = []
    for i, record in enumerate(records):
        entry: dict[str, Any] = {
            "id": i + 1,
            "phrase": record["phrase"],
            "score": None if record["score"] is None else round(record["score"], 4),
            "box_xyxy": [round(v, 1) for v in record["box_xyxy"]],
            "area": int(np.count_nonzero(masks[i])) if masks is not None else 0,
        }
        if include_rle:
            entry["rle"] = record["rle"]
        out.append(entry)
    return {
        "status": result.status,
        "query": result.query,
        "count": len(out),
        "reason": result.reason,
        "image": {"width": width, "height": height},
        "masks": out,
    }


def segment_answer(result: AgentResult, *, steps: bool = False, overlay: bool = False,
                   mask: bool = False) -> dict[str, Any]:
    """The full JSON answer of ``POST /v1/segment`` (and the ``result`` event of its stream).

    Args:
        result: The run's result.
        steps: Include the per-turn ``steps``.
        overlay: Add ``overlay_png``: base64 PNG of the image with the answer masks drawn.
        mask: Add ``mask_png``: base64 PNG of the union of the answer masks, white (255) on black,
            at the original size.

    Returns:
        ``result.to_dict(include_steps=steps)`` plus the requested pictures.
    """
    payload = result.to_dict(include_steps=steps)
    if overlay:
        payload["overlay_png"] = base64.b64encode(png_bytes(result.overlay())).decode("ascii")
    if mask:
        union = Image.fromarray(result.mask().astype(np.uint8) * 255)  # 2-D uint8: mode "L"
        payload["mask_png"] = base64.b64encode(png_bytes(union)).decode("ascii")
    return payload


def error_answer(error: ServeError) -> dict[str, Any]:
    """The answer of a failed tool call: ``{"status": "error", "error": {"type", "message"}}``."""
    return {"status": "error", **error.to_dict()}


def server_versions() -> dict[str, str | None]:
    """Installed versions of the packages a server report cares about (``None``: not installed)."""
    return package_versions((*REPORTED, "mcp", "starlette", "uvicorn"))
