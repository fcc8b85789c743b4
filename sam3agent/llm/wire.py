"""Conversion of our :class:`~sam3agent.llm.base.Message` lists to the two chat wire formats.

* OpenAI chat-completions JSON (``messages`` of an HTTP request): images become ``image_url`` parts
  holding ``data:`` URLs, native tool calls become ``tool_calls``, tool results become ``tool``
  messages.
* Hugging Face chat-template messages (what ``processor.apply_chat_template`` takes): images become
  ``{"type": "image", "image": PIL.Image}`` parts.

Tool-result messages are text-only on OpenAI's API (and in most chat templates), so both formats go
through :func:`split_tool_images` first: a run of ``tool`` messages keeps its text, and the images
those messages carried follow the run in one ``user`` message, each labelled with the call id it
belongs to. The same module checks the message-order rules an OpenAI server enforces
(:func:`validate_openai_messages`), which the scripted test server uses to answer 400 like a real one,
and reads responses back, checking every field (:func:`from_openai_response`).
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Sequence
from typing import Any, Literal

from sam3agent.llm.base import Completion, ImagePart, Message, Part, TextPart, ToolCall, Usage
from sam3core.image import data_url, decode_data_url

logger = logging.getLogger(__name__)

ImageFormat = Literal["auto", "jpeg", "png"]

_MIME_BY_FORMAT = {"jpeg": "image/jpeg", "png": "image/png"}

_SURROGATE = re.compile("[\ud800-\udfff]")

#: Text of a tool message whose only content was images (moved to the following user message).
TOOL_IMAGES_MOVED = "(the images of this result follow in the next message)"


def tool_images_label(tool_call_id: str) -> str:
    """The text placed before the images moved out of the result of call ``tool_call_id``."""
    return f"Images returned by tool call {tool_call_id}:"


def split_tool_images(messages: Sequence[Message]) -> list[Message]:
    """Move images out of ``tool`` messages into one ``user`` message after each run of tool messages.

    The tool messages keep their text (or :data:`TOOL_IMAGES_MOVED` when they had none), so every
    pending tool call is still answered before the next non-tool message, as OpenAI requires.

    Args:
        messages: The conversation; not modified.

    Returns:
        A new list; messages without tool images are passed through unchanged (same objects).
    """
    out: list[Message] = []
    pending: list[Part] = []
    for message in messages:
        if message.role != "tool" and pending:
            out.append(Message(role="user", content=pending))
            pending = []
        if message.role != "tool" or not message.images:
            out.append(message)
            continue
        texts: list[Part] = [p for p in message.content if isinstance(p, TextPart)]
        out.append(
            Message(
                role="tool",
                content=texts or [TextPart(TOOL_IMAGES_MOVED)],
                tool_call_id=message.tool_call_id,
            )
        )
        pending.append(TextPart(tool_images_label(message.tool_call_id or "?")))
        pending.extend(message.images)
    if pending:
        out.append(Message(role="user", content=pending))
    return out


def encode_image(part: ImagePart, image_format: ImageFormat = "auto") -> tuple[bytes, str]:
    """The image's bytes and mime type in the requested format.

    Args:
        part: The image.
        image_format: ``"auto"`` keeps the bytes as given; ``"jpeg"`` or ``"png"`` re-encodes when the
            part is in the other format (JPEG drops any alpha channel, quality 90).

    Returns:
        ``(data, mime)``.
    """
    if image_format == "auto" or _MIME_BY_FORMAT[image_format] == part.mime:
        return part.data, part.mime
    from PIL import Image

    with Image.open(io.BytesIO(part.data)) as img:
        buffer = io.BytesIO()
        if image_format == "jpeg":
            img.convert("RGB").save(buffer, format="JPEG", quality=90)
        else:
            img.save(buffer, format="PNG")
    return buffer.getvalue(), _MIME_BY_FORMAT[image_format]


def image_data_url(part: ImagePart, image_format: ImageFormat = "auto") -> str:
    """A ``data:<mime>;base64,...`` URL of the image (see :func:`encode_image` for ``image_format``)."""
    data, mime = encode_image(part, image_format)
    return data_url(data, mime)


def _openai_content(message: Message, image_format: ImageFormat) -> str | list[dict[str, Any]]:
    parts = message.content
    if len(parts) == 1 and isinstance(parts[0], TextPart):
        return parts[0].text
    out: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, TextPart):
            out.append({"type": "text", "text": part.text})
        else:
            image_url = {"url": image_data_url(part, image_format)}
            if part.detail is not None:
                image_url["detail"] = part.detail
            out.append({"type": "image_url", "image_url": image_url})
    return out


def _tool_call_json(message: Message) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in message.tool_calls
    ]


def to_openai_messages(messages: Sequence[Message], image_format: ImageFormat = "auto") -> list[dict[str, Any]]:
    """Render messages as OpenAI chat-completions ``messages`` JSON.

    Text-only messages with a single part are sent as a plain string; others as a list of ``text``
    and ``image_url`` parts. Images in tool messages are moved by :func:`split_tool_images`.

    Args:
        messages: The conversation.
        image_format: See :func:`encode_image`.

    Returns:
        JSON-ready dicts.

    Raises:
        ValueError: A message breaks the format (an assistant message with images, a tool message
            without ``tool_call_id``): a bug in the caller, not the model's fault.
    """
    out: list[dict[str, Any]] = []
    for message in split_tool_images(messages):
        if message.role == "assistant":
            if message.images:
                raise ValueError("assistant messages cannot carry images")
            entry: dict[str, Any] = {"role": "assistant", "content": message.plain_text or None}
            if message.tool_calls:
                entry["tool_calls"] = _tool_call_json(message)
            elif entry["content"] is None:
                entry["content"] = ""
        elif message.role == "tool":
            if not message.tool_call_id:
                raise ValueError("tool messages need the tool_call_id of the call they answer")
            entry = {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.plain_text}
        else:
            entry = {"role": message.role, "content": _openai_content(message, image_format)}
        out.append(entry)
    return out


def _parse_arguments(arguments: str) -> dict[str, Any] | str:
    """JSON object arguments as a dict (what chat templates expect); anything else stays a string."""
    try:
        value = json.loads(arguments)
    except (json.JSONDecodeError, TypeError):
        return arguments
    return value if isinstance(value, dict) else arguments


def _pil(data: bytes) -> Any:
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    img.load()
    return img.convert("RGB") if img.mode != "RGB" else img


def to_hf_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Render messages as Hugging Face chat-template messages with decoded PIL images.

    Content is always a list of ``{"type": "text", "text": ...}`` / ``{"type": "image", "image": PIL}``
    parts, except tool results (a plain string: templates render them as text). Assistant tool calls
    carry ``{"type": "function", "id", "function": {"name", "arguments"}}`` with arguments parsed to a
    dict when they are a JSON object.
    """
    out: list[dict[str, Any]] = []
    for message in split_tool_images(messages):
        if message.role == "tool":
            out.append({"role": "tool", "tool_call_id": message.tool_call_id, "content": message.plain_text})
            continue
        content: list[dict[str, Any]] = []
        for part in message.content:
            if isinstance(part, TextPart):
                content.append({"type": "text", "text": part.text})
            else:
                content.append({"type": "image", "image": _pil(part.data)})
        entry: dict[str, Any] = {"role": message.role, "content": content}
        if message.tool_calls:
            entry["tool_calls"] = [
                {
                    "type": "function",
                    "id": c.id,
                    "function": {"name": c.name, "arguments": _parse_arguments(c.arguments)},
                }
                for c in message.tool_calls
            ]
        out.append(entry)
    return out


def openai_to_hf_messages(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Convert OpenAI chat-completions ``messages`` JSON (as a server receives it) to HF chat messages.

    This is what an OpenAI-compatible server does before applying a chat template; tests use it to
    render every request the client sent through a real processor.

    Raises:
        ValueError: An image part is not a base64 data URL, or a part type is unknown.
    """
    out: list[dict[str, Any]] = []
    for message in messages:
        entry = {k: v for k, v in message.items() if k != "content"}
        content = message.get("content")
        if isinstance(content, list):
            parts: list[dict[str, Any]] = []
            for part in content:
                if part.get("type") == "text":
                    parts.append({"type": "text", "text": part["text"]})
                elif part.get("type") == "image_url":
                    data, _ = decode_data_url(part["image_url"]["url"])
                    parts.append({"type": "image", "image": _pil(data)})
                else:
                    raise ValueError(f"unsupported content part type {part.get('type')!r}")
            entry["content"] = parts
        else:
            entry["content"] = content or ""
        if "tool_calls" in message:
            entry["tool_calls"] = [
                {
                    "type": "function",
                    "id": c["id"],
                    "function": {
                        "name": c["function"]["name"],
                        "arguments": _parse_arguments(c["function"]["arguments"]),
                    },
                }
                for c in message["tool_calls"]
            ]
        out.append(entry)
    return out


def validate_openai_messages(messages: Any) -> list[str]:
    """Check the rules an OpenAI chat-completions server enforces on ``messages``.

    Checked: known roles; ``image_url`` parts only in user messages, as data or http(s) URLs; every
    ``tool`` message answers a call of the closest preceding assistant message; every call of an
    assistant message is answered before the next non-tool message; tool call ids unique per message.

    Args:
        messages: The decoded ``messages`` value of a request.

    Returns:
        Human-readable problems, empty when the messages are valid.
    """
    if not isinstance(messages, list) or not messages:
        return ["'messages' must be a non-empty list"]
    problems: list[str] = []
    open_calls: set[str] = set()
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            problems.append(f"{where} is not an object")
            continue
        role = message.get("role")
        if role not in ("system", "developer", "user", "assistant", "tool"):
            problems.append(f"{where}: unknown role {role!r}")
            continue
        if role != "tool" and open_calls:
            problems.append(f"{where}: tool calls {sorted(open_calls)} were not answered before this message")
            open_calls = set()
        content = message.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "image_url":
                    url = str(part.get("image_url", {}).get("url", ""))
                    if role != "user":
                        problems.append(f"{where}.content[{j}]: image parts are only allowed in user messages")
                    if not url.startswith(("data:image/", "http://", "https://")):
                        problems.append(f"{where}.content[{j}]: bad image URL {url[:30]!r}")
                elif kind != "text":
                    problems.append(f"{where}.content[{j}]: unsupported part type {kind!r}")
        elif content is None and not (role == "assistant" and message.get("tool_calls")):
            problems.append(f"{where}: content is missing")
        if role == "assistant" and message.get("tool_calls"):
            ids = [c.get("id") for c in message["tool_calls"]]
            if len(set(ids)) != len(ids) or not all(ids):
                problems.append(f"{where}: tool call ids must be present and unique")
            open_calls = {str(x) for x in ids}
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in open_calls:
                problems.append(f"{where}: tool message answers no pending tool call (tool_call_id={call_id!r})")
            open_calls.discard(str(call_id))
    if open_calls:
        problems.append(f"tool calls {sorted(open_calls)} of the last assistant message were not answered")
    return problems


class MalformedResponseError(Exception):
    """A 200 answer whose body is not a usable chat completion (a backend fault, retried)."""


def from_openai_response(response: Any, attempts: int, model: str) -> Completion:
    """Our :class:`~sam3agent.llm.base.Completion` of an openai chat-completions response object.

    The openai client builds response objects without validating them (and returns non-JSON bodies
    as ``str``), so every field read here is checked; text is made encodable (:func:`_valid_text`).

    Args:
        response: What ``chat.completions.create`` returned.
        attempts: Attempts the call took.
        model: The model name reported when the response names none.

    Raises:
        MalformedResponseError: The response is not a chat completion with one usable choice.
    """
    choices = getattr(response, "choices", None)
    if not isinstance(choices, list) or not choices:
        raise MalformedResponseError(f"the body is not a chat completion with choices: {_preview(response)}")
    choice = choices[0]
    message = getattr(choice, "message", None)
    content = getattr(message, "content", None)
    raw_calls = getattr(message, "tool_calls", None)
    if message is None or not isinstance(content, str | None) or not isinstance(raw_calls, list | None):
        raise MalformedResponseError(f"choices[0] has no message with text or tool calls: {_preview(choice)}")
    calls: list[ToolCall] = []
    for call in raw_calls or []:
        function = getattr(call, "function", None)
        if function is None:
            logger.warning("ignoring a non-function tool call of type %r", getattr(call, "type", None))
            continue
        name, call_id = getattr(function, "name", None), getattr(call, "id", None)
        arguments = getattr(function, "arguments", None) or ""
        if not isinstance(name, str) or not isinstance(arguments, str) or not isinstance(call_id, str):
            raise MalformedResponseError(f"a tool call lacks a name, arguments or an id: {_preview(call)}")
        calls.append(ToolCall(id=call_id, name=_valid_text(name), arguments=_valid_text(arguments)))
    usage = getattr(response, "usage", None)
    tokens = [getattr(usage, key, None) for key in ("prompt_tokens", "completion_tokens")]
    return Completion(
        text=_valid_text(content or ""),
        tool_calls=calls,
        usage=Usage(*(n if isinstance(n, int) else 0 for n in tokens)),
        attempts=attempts,
        model=response.model if isinstance(getattr(response, "model", None), str) and response.model else model,
        finish_reason=choice.finish_reason if isinstance(getattr(choice, "finish_reason", None), str) else None,
    )


def _valid_text(text: str) -> str:
    """``text`` with lone surrogates (JSON ``\\ud800`` escapes of half a pair) replaced by U+FFFD.

    They cannot be encoded as UTF-8: a reply holding one would break the next request (the history).
    """
    return _SURROGATE.sub("\ufffd", text)


def _preview(value: object, limit: int = 120) -> str:
    """The start of ``value``'s text (of an openai object: the fields its body had), for error messages."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        value = json.dumps(dump(exclude_unset=True), default=str)
    text = value if isinstance(value, str) else repr(value)
    return repr(text[:limit] + ("..." if len(text) > limit else ""))
