"""The agent as an MCP server: one tool, ``segment_image(image, query)``, over stdio or streamable HTTP.

The tool answers with two content blocks: the compact JSON answer as text (see
:func:`~sam3agent.app.serve.common.compact_answer`) and the overlay (the image with the numbered masks)
as a PNG image block; the JSON also travels as structured content. Refusals (a forbidden path, an
image over the limits, an undecodable image, a failing LLM backend, a timeout) come back as a tool
result with ``isError`` and a JSON ``{"status": "error", "error": {"type", "message"}}`` text, so the
calling model can read what to fix.

A caller that sends a progress token gets one ``notifications/progress`` per agent event while the
run goes on (:mod:`sam3agent.events`): ``progress`` is the event's ``seq`` (no ``total``: the number
of turns is not known in advance) and ``message`` its one-line description, e.g.
``turn 1: segment_phrase(text_prompt='cat')`` or ``turn 2: mask 1 reject``.

Needs the ``serve`` extra (``mcp``, ``uvicorn``).
"""

from __future__ import annotations

import base64
import json
import logging
from typing import TYPE_CHECKING, Annotated

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.types import CallToolResult, ImageContent, TextContent, ToolAnnotations
from pydantic import Field

from sam3agent.app.embed import SegmentImageArgs
from sam3agent.app.serve.auth import ApiKeyMiddleware, check_api_key
from sam3agent.app.serve.common import (
    OnEvent,
    ServeError,
    ServeLimits,
    compact_answer,
    error_answer,
    segment_spec,
)
from sam3core.image import png_bytes

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from sam3agent.agent import Agent
    from sam3agent.events import AgentEvent

logger = logging.getLogger(__name__)

SERVER_NAME = "sam3agent"
_BODY_OVERHEAD = 64 * 1024  # JSON-RPC framing and the query around the base64 image
_IMAGE_HELP = SegmentImageArgs.model_fields["image"].description or ""
_QUERY_HELP = SegmentImageArgs.model_fields["query"].description or ""


def _tool_description(limits: ServeLimits) -> str:
    sources = ["a data URL (data:image/png;base64,...)", "a base64 string of the image file"]
    if limits.allowed_roots:
        roots = ", ".join(str(r) for r in limits.allowed_roots)
        sources.append(f"a file path inside {roots} (absolute, or relative to that folder)")
    if limits.allow_urls:
        sources.append("an http(s) URL")
    return (
        "Segment what a query describes in an image: a vision-language agent plans and SAM 3 draws exact "
        f"masks. The image is {', or '.join(sources)}. The query is plain words: an object, a referring "
        "expression ('the person on the left') or a question whose answer is a region. Returns a JSON text "
        "(status answered/no_mask/budget_exhausted, count, per mask: id as drawn on the overlay, box_xyxy in "
        "pixels, score, area in pixels, COCO RLE) and the overlay image with the numbered masks. "
        f"Limits: {limits.max_pixels} pixels, {limits.max_upload_bytes / 2**20:.0f} MB per image."
    )


def build_mcp_server(agent: Agent, limits: ServeLimits, *, include_rle: bool = True) -> MCPServer:
    """An :class:`mcp.server.MCPServer` exposing ``segment_image`` over ``agent``.

    Args:
        agent: The agent every call uses (calls run concurrently against its one engine).
        limits: What callers may send.
        include_rle: Put each mask's COCO RLE in the JSON answer.

    Returns:
        The server; run it with ``server.run_stdio_async()`` or serve
        ``server.streamable_http_app(host=...)`` with uvicorn (see :func:`streamable_http_app`).
    """
    from sam3agent.app.serve.common import server_versions

    server: MCPServer = MCPServer(
        SERVER_NAME,
        title="SAM 3 Agent",
        instructions="Call segment_image to locate and outline things in an image described in words.",
        version=server_versions().get("sam3agent") or "0",
    )

    @server.tool(
        name="segment_image",
        title="Segment image",
        description=_tool_description(limits),
        annotations=ToolAnnotations(read_only_hint=True, open_world_hint=limits.allow_urls),
    )
    async def segment_image(
        image: Annotated[str, Field(description=_IMAGE_HELP)],
        query: Annotated[str, Field(description=_QUERY_HELP)],
        ctx: Context,
    ) -> CallToolResult:
        return await call_segment_image(agent, limits, image, query, include_rle=include_rle,
                                        on_event=progress_reporter(ctx))

    return server


def progress_reporter(ctx: Context) -> OnEvent:
    """The event callback that reports each event as an MCP progress notification of ``ctx``'s request.

    The SDK sends nothing when the caller gave no progress token. A notification that cannot be
    sent is logged and the run goes on: progress is a courtesy, the result is what was asked for.
    """

    async def report(event: AgentEvent) -> None:
        try:
            await ctx.report_progress(event.seq, None, event.describe())
        except Exception as e:
            logger.debug("progress notification %d not sent: %s", event.seq, e)

    return report


async def call_segment_image(agent: Agent, limits: ServeLimits, image: str, query: str, *,
                             include_rle: bool = True, on_event: OnEvent | None = None) -> CallToolResult:
    """Run one ``segment_image`` call and shape its MCP result (refusals as ``isError`` results).

    ``on_event`` is awaited with each event of the run (see :func:`progress_reporter`).
    """
    try:
        result = await segment_spec(agent, image, query, limits, on_event=on_event)
    except ServeError as e:
        logger.info("segment_image refused (%d %s): %s", e.status, e.kind, e.message)
        text = json.dumps(error_answer(e))
        return CallToolResult(content=[TextContent(text=text)], is_error=True)
    answer = compact_answer(result, include_rle=include_rle)
    overlay = base64.b64encode(png_bytes(result.overlay())).decode("ascii")
    return CallToolResult(
        content=[TextContent(text=json.dumps(answer)), ImageContent(data=overlay, mime_type="image/png")],
        structured_content=answer,
    )


def streamable_http_app(server: MCPServer, host: str, limits: ServeLimits, *,
                        api_key: str | None = None) -> Starlette:
    """The ASGI app serving ``server`` over streamable HTTP at ``/mcp``.

    Request bodies may carry one base64 image up to ``limits.max_upload_bytes`` (the SDK's own default
    is 4 MB). On a loopback ``host`` the SDK enables DNS-rebinding protection (only loopback ``Host``
    and ``Origin`` headers are accepted).

    Args:
        server: The MCP server (see :func:`build_mcp_server`).
        host: The interface it will be served on.
        limits: What callers may send.
        api_key: The key every request must send (``Authorization: Bearer KEY`` or ``X-API-Key: KEY``;
            see :mod:`sam3agent.app.serve.auth`); ``None``: no key (loopback only).

    Raises:
        ValueError: If ``api_key`` is empty or not printable ASCII.
    """
    body = limits.max_upload_bytes * 4 // 3 + _BODY_OVERHEAD
    app = server.streamable_http_app(host=host, max_request_body_size=body)
    if api_key is not None:
        check_api_key(api_key)
        app.add_middleware(ApiKeyMiddleware, api_key=api_key)
    return app
