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
- :func:`run_agent`: one agent run with the request timeout, backend failures mapped to errors.
- :func:`compact_answer`: the small JSON answer (status, count, per mask id, box, score, area, RLE).

Nothing here imports the ASGI stack, so :mod:`sam3agent.app.embed` can use it without the ``serve`` extra.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

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
from sam3agent.llm.base import LLMBackendError
from sam3agent.versions import REPORTED, package_versions
from sam3core.image import ImageHandle

if TYPE_CHECKING:
    from sam3agent.agent import Agent
    from sam3agent.result import AgentResult

__all__ = [
    "CLI_OPTIONS",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_UPLOAD_MB",
    "DEFAULT_REQUEST_TIMEOUT_S",
    "PYTHON_OPTIONS",
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
    "read_image_file",
    "resolve_allowed_path",
    "run_agent",
    "segment_spec",
    "server_versions",
    "too_large",
]

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ runs


def check_query(query: object) -> str:
    """The stripped query, or a 400 error when it is missing or blank."""
    if not isinstance(query, str) or not query.strip():
        raise bad_request("query is required: a non-empty string describing what to segment")
    return query.strip()


def _timeout_error(timeout_s: float | None, what: str, option: str) -> ServeError:
    return ServeError(504, "timeout", f"{what} did not finish within the request timeout of {timeout_s:g} s "
                                      f"({option}); try a smaller image or a simpler query")


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
                       timeout_s: float | None, *, timeout_option: str = CLI_OPTIONS["request_timeout"]
                       ) -> AgentResult:
    """Load an image with ``loader`` (in a worker thread) and run the agent, together within ``timeout_s``.

    ``timeout_option`` is how the 504 message names the setting (see :meth:`ServeLimits.option`).

    Raises:
        ServeError: From the loader; 400 (bad query), 502 (the LLM backend failed, naming its
            endpoint) or 504 (the time ran out).
    """
    text = check_query(query)
    what = "loading the image"
    try:
        async with asyncio.timeout(timeout_s) as deadline:
            handle = await asyncio.to_thread(loader)
            what = "the request"
            return await agent.arun(handle, text)
    except TimeoutError as e:
        if not deadline.expired():
            raise
        raise _timeout_error(timeout_s, what, timeout_option) from e
    except LLMBackendError as e:
        logger.warning("LLM backend failure: %s", e)
        raise ServeError(502, "llm_backend_error",
                         f"the LLM backend {e.endpoint} failed after {e.attempts} attempt(s): {e.last_error}; "
                         "check that the endpoint is up and serves the configured model") from e
    except ValueError as e:
        raise bad_request(str(e)) from e


async def segment_spec(agent: Agent, spec: str, query: object, limits: ServeLimits, *,
                       allow_paths: bool = True) -> AgentResult:
    """Resolve ``spec`` with :func:`load_image` and run the agent on it (see :func:`load_and_run`)."""
    loader = functools.partial(load_image, spec, limits, allow_paths=allow_paths)
    return await load_and_run(agent, loader, query, limits.request_timeout_s,
                              timeout_option=limits.option("request_timeout"))


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


def error_answer(error: ServeError) -> dict[str, Any]:
    """The answer of a failed tool call: ``{"status": "error", "error": {"type", "message"}}``."""
    return {"status": "error", **error.to_dict()}


def server_versions() -> dict[str, str | None]:
    """Installed versions of the packages a server report cares about (``None``: not installed)."""
    return package_versions((*REPORTED, "mcp", "starlette", "uvicorn"))
