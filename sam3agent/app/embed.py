"""The agent as a tool of a chat assistant: one OpenAI function, ``segment_image(image, query)``.

:func:`as_openai_tool` returns the function schema to put in a Chat Completions ``tools`` list and an
async handler to call with the model's arguments. The handler never raises for the caller's or the
model's mistakes (bad JSON, a missing query, an unreadable or forbidden image) or for a failing LLM
backend: it returns a :class:`ToolAnswer` whose JSON carries an ``error`` the chat model can read.

Example::

    schema, segment_image = as_openai_tool(agent, allowed_roots=["photos"])
    reply = await client.chat.completions.create(model=..., messages=messages, tools=[schema])
    for call in reply.choices[0].message.tool_calls or []:
        answer = await segment_image(call.function.arguments)
        messages.append({"role": "tool", "tool_call_id": call.id, "content": answer.text})
        # Tool messages are text-only on OpenAI: send answer.overlay in a following user message.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sam3agent.app.serve.common import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_UPLOAD_MB,
    PYTHON_OPTIONS,
    ServeError,
    ServeLimits,
    bad_request,
    compact_answer,
    error_answer,
    segment_spec,
)
from sam3agent.tools import ToolSpec
from sam3core.image import data_url, png_bytes

if TYPE_CHECKING:
    from sam3agent.agent import Agent
    from sam3agent.result import AgentResult

__all__ = ["SegmentImageArgs", "ToolAnswer", "as_openai_tool", "segment_image_spec"]

logger = logging.getLogger(__name__)

TOOL_NAME = "segment_image"


class SegmentImageArgs(BaseModel):
    """Arguments of ``segment_image``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str = Field(
        description="The image to segment: a file path the user gave (absolute, or relative to an allowed "
                    "folder), or the image itself as a data URL (data:image/png;base64,...) or a base64 string.",
        examples=["photos/kitchen.jpg"],
    )
    query: str = Field(
        description="What to segment, in plain words: an object ('the red mug'), a referring expression "
                    "('the person on the left holding a phone') or a question whose answer is a region "
                    "('where could I put my coffee?').",
        examples=["the red mug on the table"],
    )


def _description(limits: ServeLimits, *, overlay: bool, include_rle: bool) -> str:
    where = (f" File paths are read only inside: {', '.join(str(r) for r in limits.allowed_roots)}."
             if limits.allowed_roots else " File paths are not available: pass the image as a data URL or base64.")
    rle = " and rle (COCO run-length mask)" if include_rle else ""
    shown = " An overlay image with the numbered masks is shown to you after the result." if overlay else ""
    return (
        "Segment things in an image: a vision-language agent finds the regions that match the query and "
        "SAM 3 draws their exact masks. Use it when the user wants something located, outlined, counted "
        "or measured in a picture." + where + " Returns JSON with status (answered, no_mask, "
        "budget_exhausted or error), count, and per mask: id (the number drawn on the overlay image), "
        f"box_xyxy (pixel corners x1, y1, x2, y2), score (0-1), area (pixels){rle}.{shown}"
    )


@dataclass
class ToolAnswer:
    """What the ``segment_image`` handler returns.

    Attributes:
        json: The compact JSON-safe answer (see :func:`sam3agent.app.serve.common.compact_answer`), or
            ``{"status": "error", "error": {"type", "message"}}``.
        overlay: The input image with the numbered answer masks drawn on it (``None`` on error or
            when overlays are off).
        result: The full :class:`~sam3agent.result.AgentResult` (``None`` on error).
    """

    json: dict[str, Any]
    overlay: Image.Image | None = None
    result: AgentResult | None = None

    @property
    def ok(self) -> bool:
        """Whether the call produced a result (``status`` is not ``"error"``)."""
        return self.json.get("status") != "error"

    @property
    def text(self) -> str:
        """The JSON answer as compact text (what a ``tool`` message carries)."""
        return json.dumps(self.json, separators=(",", ":"))

    def overlay_png(self) -> bytes | None:
        """The overlay encoded as PNG."""
        return None if self.overlay is None else png_bytes(self.overlay)

    def overlay_data_url(self) -> str | None:
        """The overlay as a ``data:image/png;base64,...`` URL (for an ``image_url`` message part)."""
        data = self.overlay_png()
        return None if data is None else data_url(data, "image/png")


Handler = Callable[[dict[str, Any] | str], Awaitable[ToolAnswer]]


def parse_arguments(arguments: dict[str, Any] | str | None) -> SegmentImageArgs:
    """Validate the model's arguments (a dict or the raw JSON string of a tool call).

    Raises:
        ServeError: 400 with a message the model can act on.
    """
    if arguments is None or arguments == "":
        arguments = {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError as e:
            raise bad_request(f"the arguments are not valid JSON ({e.msg} at position {e.pos}); send an object "
                              'like {"image": "photo.jpg", "query": "the red mug"}') from e
    if not isinstance(arguments, dict):
        raise bad_request("the arguments must be a JSON object with the keys image and query")
    try:
        return SegmentImageArgs.model_validate(arguments)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}"
                             for err in e.errors())
        raise bad_request(f"invalid arguments for segment_image: {problems}") from e


async def segment_image_spec(agent: Agent, arguments: dict[str, Any] | str | None, limits: ServeLimits, *,
                             overlay: bool = True, include_rle: bool = True) -> ToolAnswer:
    """Run one ``segment_image`` call; every refusal becomes an error answer.

    Args:
        agent: The agent to run.
        arguments: The tool call's arguments (dict or JSON string).
        limits: Image and time limits.
        overlay: Render the overlay image.
        include_rle: Put each mask's RLE in the JSON.

    Returns:
        The :class:`ToolAnswer`. Our own bugs still raise.
    """
    try:
        args = parse_arguments(arguments)
        result = await segment_spec(agent, args.image, args.query, limits)
    except ServeError as e:
        logger.info("segment_image refused: %s", e.message)
        return ToolAnswer(json=error_answer(e))
    image = result.overlay() if overlay else None
    return ToolAnswer(json=compact_answer(result, include_rle=include_rle), overlay=image, result=result)


def as_openai_tool(
    agent: Agent,
    *,
    overlay: bool = True,
    allowed_roots: Sequence[str | Path] = (),
    allow_urls: bool = False,
    include_rle: bool = True,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    timeout_s: float | None = None,
) -> tuple[dict[str, Any], Handler]:
    """The agent as an OpenAI function tool ``segment_image(image, query)``.

    Args:
        agent: The agent; one agent may serve many concurrent calls.
        overlay: Return the overlay image with each answer.
        allowed_roots: Folders the model may name image files in (paths outside, ``..`` and symlinks
            leading out are refused). Empty: file paths are refused, only data URLs / base64 work.
        allow_urls: Let the model pass ``http(s)`` image URLs (fetched by this process).
        include_rle: Put each mask's COCO RLE in the JSON answer (turn off to save the chat model's
            context).
        max_upload_mb: Largest encoded image accepted.
        max_pixels: Largest ``width * height`` accepted.
        timeout_s: Wall-clock limit of one call (``None``: the agent's own ``timeout_s`` only).

    Returns:
        ``(schema, handler)``: the Chat Completions ``tools`` entry, and ``async handler(arguments)``
        taking the call's arguments (dict or JSON string) and returning a :class:`ToolAnswer`.

    Raises:
        ValueError: If an allowed root is not an existing directory.
    """
    limits = ServeLimits(allowed_roots=tuple(Path(r) for r in allowed_roots), allow_urls=allow_urls,
                         max_upload_bytes=int(max_upload_mb * 2**20), max_pixels=max_pixels,
                         request_timeout_s=timeout_s, option_names=PYTHON_OPTIONS)
    description = _description(limits, overlay=overlay, include_rle=include_rle)
    schema = ToolSpec(TOOL_NAME, description, SegmentImageArgs).openai_schema()

    async def handler(arguments: dict[str, Any] | str) -> ToolAnswer:
        return await segment_image_spec(agent, arguments, limits, overlay=overlay, include_rle=include_rle)

    return schema, handler
