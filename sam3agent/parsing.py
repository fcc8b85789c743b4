"""Turn a model's reply into one typed tool call, or a precise account of what is wrong with it.

Two protocols:

* **text**: free text with one ``<tool>{"name": ..., "parameters": {...}}</tool>`` block. Tolerated:
  ``<think>...</think>`` reasoning (a call inside it does not count), markdown code fences inside
  the block, stray characters (e.g. extra closing braces) after the JSON object, up to two missing
  closing braces, a missing ``</tool>``, ``<tool_call>`` as the tag name, ``arguments`` in place of
  ``parameters``, and several blocks (the first is taken and the model is told).
* **native**: OpenAI ``tool_calls``; the first call is taken. A reply with no ``tool_calls`` is
  read with the text protocol as a fallback.

Every failure is a :class:`ParseError` with a ``kind`` (counted per run) and a ``detail`` that
says exactly what to fix; the agent feeds it back to the model. Nothing here raises anything else
on model output, however large or deeply nested: replies over :data:`MAX_REPLY_CHARS`, tool calls
over :data:`MAX_CALL_CHARS` and JSON nested deeper than :data:`MAX_JSON_DEPTH` are ``parse_error``
(checked before decoding, so the JSON decoder never recurses deeply), and the work per reply stays
linear in its length.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from sam3agent.llm.base import Completion
from sam3agent.tools import offered_tools

FailureKind = Literal[
    "parse_error",  # no usable JSON in the tool block
    "no_tool_call",  # the reply contained no tool call at all
    "unknown_tool",  # a tool name that does not exist
    "invalid_arguments",  # parameters that do not fit the tool's schema
    "bad_ids",  # mask numbers that are out of range, duplicated or empty
    "bad_coordinates",  # segment_at coordinates outside the image
    "reused_phrase",  # segment_phrase with a phrase already tried
    "no_masks",  # examine/select while there are no current masks
    "already_examined",  # examine_each_mask when every current mask was already examined
    "unclear_verdict",  # a verification reply without a readable verdict (the mask is kept)
]
Verdict = Literal["accept", "reject", "unclear"]

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.S | re.I)
_THINK_TAG = re.compile(r"</?think>", re.I)
_CLOSING_THINK = re.compile(r"</think>", re.I)
_OPEN = re.compile(r"<\s*(?:tool|tool_call)\s*>", re.I)
_CLOSE = re.compile(r"<\s*/\s*(?:tool|tool_call)\s*>", re.I)
_FENCE = re.compile(r"```[A-Za-z0-9_-]*")
_VERDICT_TAG = re.compile(r"<\s*verdict\s*>\W*(accept|reject)", re.I)
_VERDICT_LINE = re.compile(
    r"^[\W_]*(?:(?:final\s+)?(?:verdict|answer|decision)[\W_]*)?(accept|reject)(?:ed)?[\W_]*$", re.I | re.M
)
_FORMAT = '<tool>{"name": "<tool name>", "parameters": {...}}</tool>'
_SMALL_CALL = "the parameters of a tool call are a small JSON object of plain values"
# a JSON string (skipped whole, escapes included) or one bracket
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
_JSON_TOKEN_BYTES = re.compile(_JSON_TOKEN.pattern.encode())

MAX_REPLY_CHARS = 1_000_000
"""Longest reply parsed (about 250k tokens, far past any sampling limit); longer is a parse_error."""
MAX_CALL_CHARS = 100_000
"""Longest JSON of one tool call (a ``<tool>`` block or native arguments); our calls take < 1k."""
MAX_JSON_DEPTH = 32
"""Deepest bracket nesting accepted in a tool call; ours nest three levels at most."""


class ParseError(Exception):
    """The model's reply could not be turned into a valid tool call (the model's mistake).

    Attributes:
        kind: What went wrong, counted per run.
        detail: A precise, model-facing description of the problem and its fix.
        call_id: The native tool-call id the error belongs to (it must be answered), if any.
    """

    def __init__(self, kind: FailureKind, detail: str, *, call_id: str | None = None) -> None:
        self.kind: FailureKind = kind
        self.detail = detail
        self.call_id = call_id
        super().__init__(f"{kind}: {detail}")


@dataclass(frozen=True)
class ParsedCall:
    """A validated tool call.

    Attributes:
        name: The tool's name (a paper tool of :data:`sam3agent.tools.TOOLS`, or an extra tool that is on).
        args: The validated arguments (an instance of the tool's args model).
        call_id: The native tool-call id, or ``None`` in the text protocol.
        notes: Model-facing remarks about tolerated deviations (e.g. several calls made).
    """

    name: str
    args: BaseModel
    call_id: str | None = None
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """``{"name": ..., "parameters": {...}}`` (JSON-safe)."""
        return {"name": self.name, "parameters": self.args.model_dump(mode="json")}


def strip_thinking(text: str) -> str:
    """Remove reasoning: closed ``<think>`` blocks, and everything before a lone ``</think>``.

    A lone ``</think>`` happens when the chat template opened the block in the prompt. An
    opening ``<think>`` that is never closed is removed as a tag only, keeping what follows.
    Linear in the length of ``text``.
    """
    last = max((m.end() for m in _CLOSING_THINK.finditer(text)), default=0)
    # closed blocks end at or before the last </think>: searching for them past it would rescan
    # the rest of the text from every unclosed <think> (quadratic on "<think>" * n)
    text = _THINK_BLOCK.sub("", text[:last]) + text[last:]
    closing = text.lower().rfind("</think>")
    if closing >= 0:
        text = text[closing + len("</think>") :]
    return _THINK_TAG.sub("", text).strip()


def through_first_call(text: str) -> str:
    """The reply up to and including its first ``</tool>`` (all of it when there is none).

    What follows the first complete call was not run (only the first call is), so it is not kept
    in the conversation: a model shown its own unexecuted second call tends to assume it ran.
    """
    match = _CLOSE.search(text)
    return text if match is None else text[: match.end()]


def parse_completion(completion: Completion, protocol: Literal["text", "native"],
                     tools: tuple[str, ...] = ()) -> ParsedCall:
    """Parse a reply with the given protocol.

    Args:
        completion: The model's reply.
        protocol: ``"text"`` or ``"native"``.
        tools: Extra tools that are on (``AgentConfig.tools``); any other extra tool is unknown.

    Raises:
        ParseError: The reply is not one valid tool call (see the module docstring).
    """
    if protocol == "native":
        return parse_native(completion, tools)
    return parse_text(completion.text, truncated=completion.finish_reason == "length", tools=tools)


def parse_text(text: str, *, truncated: bool = False, tools: tuple[str, ...] = ()) -> ParsedCall:
    """Parse a text-protocol reply.

    Args:
        text: The raw reply.
        truncated: Whether the backend stopped at the token limit (improves the feedback).
        tools: Extra tools that are on, besides the paper's four.

    Raises:
        ParseError: With kind ``no_tool_call``, ``parse_error``, ``unknown_tool`` or
            ``invalid_arguments``.
    """
    if len(text) > MAX_REPLY_CHARS:
        raise ParseError("parse_error", f"your reply is {len(text):,} characters long, over the limit of "
                         f"{MAX_REPLY_CHARS:,}; keep the reasoning short and end with one call: {_FORMAT}")
    visible = strip_thinking(text)
    blocks = _tool_blocks(visible)
    if not blocks:
        raise ParseError("no_tool_call", _no_call_detail(text, visible, truncated))
    obj = _decode_object(blocks[0], truncated)
    if not isinstance(obj.get("name"), str):
        raise ParseError("parse_error", f'the JSON object has no "name" string; use the format {_FORMAT}')
    params = obj.get("parameters", obj.get("arguments", {}))
    if isinstance(params, str):
        params = _loads_params(params, None)
    call = validate_call(obj["name"], params, None, tools)
    if len(blocks) > 1:
        note = (f"You made {len(blocks)} tool calls in one reply; only the first ({call.name}) was run. "
                "Make exactly one call per reply.")
        call = ParsedCall(call.name, call.args, None, (*call.notes, note))
    return call


def parse_native(completion: Completion, tools: tuple[str, ...] = ()) -> ParsedCall:
    """Parse a native-protocol reply (the first of its ``tool_calls``).

    A reply without ``tool_calls`` is parsed as text, so a model that writes ``<tool>`` blocks
    in native mode still works. ``tools``: extra tools that are on, besides the paper's four.

    Raises:
        ParseError: As :func:`parse_text`; ``call_id`` is set when the error belongs to a call.
    """
    if not completion.tool_calls:
        return parse_text(completion.text, truncated=completion.finish_reason == "length", tools=tools)
    first = completion.tool_calls[0]
    params = _loads_params(first.arguments, first.id)
    call = validate_call(first.name, params, first.id, tools)
    if len(completion.tool_calls) > 1:
        note = (f"You made {len(completion.tool_calls)} tool calls at once; only the first ({call.name}) was "
                "run. Make exactly one call per reply.")
        call = ParsedCall(call.name, call.args, call.call_id, (*call.notes, note))
    return call


def validate_call(name: str, params: object, call_id: str | None, tools: tuple[str, ...] = ()) -> ParsedCall:
    """Check a tool name and its parameters against the definitions of the offered tools.

    Args:
        name: The tool name the model wrote.
        params: Its parameters, decoded.
        call_id: The native call id, if any.
        tools: Extra tools that are on (an extra tool that is off is unknown, as before it existed).

    Raises:
        ParseError: ``unknown_tool`` or ``invalid_arguments``.
    """
    name = name.strip()
    offered = offered_tools(tools)
    spec = offered.get(name)
    if spec is None:
        known = ", ".join(offered)
        detail = f"there is no tool named {name!r}; the tools are: {known}"
        raise ParseError("unknown_tool", detail, call_id=call_id)
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ParseError(
            "invalid_arguments",
            f'"parameters" of {name} must be a JSON object, got {type(params).__name__}',
            call_id=call_id,
        )
    try:
        args = spec.args_model.model_validate(params)
    except ValidationError as e:
        detail = f"invalid parameters for {name}: {_describe(e)}"
        raise ParseError("invalid_arguments", detail, call_id=call_id) from e
    return ParsedCall(name, args, call_id)


def _tool_blocks(text: str) -> list[str]:
    """The contents of every ``<tool>`` block; a block without ``</tool>`` runs to the next one or the end."""
    opens = list(_OPEN.finditer(text))
    blocks = []
    for i, match in enumerate(opens):
        limit = opens[i + 1].start() if i + 1 < len(opens) else len(text)
        close = _CLOSE.search(text, match.end(), limit)
        blocks.append(text[match.end() : close.start() if close else limit])
    return blocks


def _check_call_json(raw: str, what: str, call_id: str | None) -> None:
    """Refuse tool-call JSON too long or too deeply nested to decode safely.

    Raises:
        ParseError: ``parse_error`` naming the size or depth and the limit.
    """
    if len(raw) > MAX_CALL_CHARS:
        raise ParseError("parse_error", f"{what} is {len(raw):,} characters long, over the limit of "
                         f"{MAX_CALL_CHARS:,}; {_SMALL_CALL}", call_id=call_id)
    if json_nesting_problem(raw, MAX_JSON_DEPTH) is not None:
        raise ParseError("parse_error", f"{what} nests brackets more than {MAX_JSON_DEPTH} levels deep; "
                         f"{_SMALL_CALL}", call_id=call_id)


def json_nesting_problem(raw: str | bytes, max_depth: int, *, max_tokens: int | None = None) -> str | None:
    """Whether JSON text is unsafe to hand to ``json.loads``, checked in one linear scan.

    Python's JSON decoder recurses once per nesting level, so deep input ends in a
    ``RecursionError``. Strings are skipped whole (escapes included) by the regex, so brackets
    inside them do not count and a long base64 string costs no Python loop.

    Args:
        raw: The JSON text (``str`` or UTF-8 ``bytes``).
        max_depth: Deepest bracket nesting allowed.
        max_tokens: Most brackets and strings allowed (``None``: no limit).

    Returns:
        ``"depth"`` when nested deeper than ``max_depth``, ``"tokens"`` when it has more than
        ``max_tokens`` brackets and strings, else ``None``.
    """
    pattern = _JSON_TOKEN if isinstance(raw, str) else _JSON_TOKEN_BYTES
    opening = ("[", "{") if isinstance(raw, str) else (b"[", b"{")
    closing = ("]", "}") if isinstance(raw, str) else (b"]", b"}")
    depth = 0
    for count, token in enumerate(pattern.finditer(raw)):
        if max_tokens is not None and count >= max_tokens:
            return "tokens"
        bracket = token.group()
        if bracket in opening:
            depth += 1
            if depth > max_depth:
                return "depth"
        elif bracket in closing:
            depth = max(0, depth - 1)
    return None


def _decode_object(block: str, truncated: bool) -> dict[str, Any]:
    body = _FENCE.sub("", block).strip()
    start = body.find("{")
    if start < 0:
        detail = f"there is no JSON object inside the <tool> block; use the format {_FORMAT}"
        raise ParseError("parse_error", detail)
    body = body[start:]
    _check_call_json(body, "the JSON inside <tool>", None)
    decoder = json.JSONDecoder()
    errors: list[json.JSONDecodeError] = []
    for suffix in ("", "}", "}}"):
        try:
            obj, _ = decoder.raw_decode(body + suffix)
        except json.JSONDecodeError as e:
            errors.append(e)
            continue
        return obj  # body starts with "{", so a successful decode is an object
    first = errors[0]
    cut = " (your reply was cut off at the token limit; keep the reasoning shorter)" if truncated else ""
    raise ParseError(
        "parse_error",
        f"the JSON inside <tool> is invalid: {first.msg} at line {first.lineno} column {first.colno}{cut}; "
        f"use double quotes and the format {_FORMAT}",
    ) from first


def _loads_params(raw: str, call_id: str | None) -> object:
    if not raw.strip():
        return {}
    _check_call_json(raw, "the JSON of the arguments", call_id)
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise ParseError(
            "parse_error", f"the arguments are not valid JSON: {e.msg} at column {e.colno}", call_id=call_id
        ) from e


def _no_call_detail(raw: str, visible: str, truncated: bool) -> str:
    if truncated:
        return "your reply was cut off at the token limit before any tool call; keep the reasoning shorter"
    if _OPEN.search(raw) and not _OPEN.search(visible):
        return "your tool call was inside the <think> block, where it does not count; put it after </think>"
    if '"name"' in visible:
        return f"the tool call is missing its <tool> tags; write it as {_FORMAT}"
    return f"your reply contained no tool call; end every reply with exactly one call: {_FORMAT}"


def _describe(error: ValidationError) -> str:
    parts = []
    for err in error.errors():
        where = ".".join(str(p) for p in err["loc"]) or "parameters"
        if not err["loc"] and err["type"] == "value_error":  # a check across parameters (segment_at's)
            parts.append(str(err["msg"]).removeprefix("Value error, "))
        elif err["type"] == "extra_forbidden":
            parts.append(f"unexpected parameter {where!r}")
        elif err["type"] == "missing":
            parts.append(f"missing parameter {where!r}")
        else:
            parts.append(f"parameter {where!r}: {err['msg']}")
    return "; ".join(parts)


def parse_verdict(text: str) -> Verdict:
    """Read the verdict of a verification reply.

    Rules, in order (reasoning in ``<think>`` blocks is ignored):

    1. ``<verdict>Accept</verdict>`` / ``<verdict>Reject</verdict>`` tags (case-insensitive,
       markdown around the word allowed): if all tags agree, that verdict; if they disagree
       (e.g. the model echoed both options), ``unclear``.
    2. Otherwise the last line that is only the verdict, optionally labelled, e.g. ``Accept``,
       ``**Reject**``, ``Verdict: accept``, ``Final answer - Rejected.``.
    3. Otherwise ``unclear``. The agent keeps an unclear mask (dropping a right mask cannot be
       undone, while a kept wrong one can still be left out at selection) and tells the model.
    """
    visible = strip_thinking(text)
    tags = {m.lower() for m in _VERDICT_TAG.findall(visible)}
    if len(tags) == 1:
        return "accept" if "accept" in tags else "reject"
    if tags:
        return "unclear"
    lines = _VERDICT_LINE.findall(visible)
    if lines:
        return "accept" if lines[-1].lower() == "accept" else "reject"
    return "unclear"
