"""Helpers of the agent tests: reply builders, a verify script, an OpenAI message-order check."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import numpy as np

from sam3agent.llm.base import Completion, LLMRequest, Message, ToolCall

H, W = 60, 80


def tool(name: str, **params: object) -> str:
    """A text-protocol reply calling ``name``."""
    return f"Let me think.\n<tool>{json.dumps({'name': name, 'parameters': params})}</tool>"


def native(name: str, call_id: str = "call_1", **params: object) -> Completion:
    """A native-protocol reply calling ``name``."""
    return Completion(text="", tool_calls=[ToolCall(call_id, name, json.dumps(params))])


def verdict_by_mask(rejected: Sequence[int], unclear: Sequence[int] = ()) -> Callable[[LLMRequest], str]:
    """A verify script: reject the given 1-based mask ids, give no verdict for ``unclear``."""

    def reply(request: LLMRequest) -> str:
        labels = [img.label for img in request.images]
        mask_id = next(int(label.split()[1]) for label in labels if label.endswith("alone"))
        if mask_id in unclear:
            return "Hard to say."
        if mask_id in rejected:
            return "<verdict>Reject</verdict>"
        return "Looks right.\n<verdict>Accept</verdict>"

    return reply


def assert_openai_legal(messages: Sequence[Message]) -> None:
    """Check a message sequence is one the OpenAI Chat Completions API accepts.

    Every assistant tool call is answered by a tool message with its id, the tool messages come
    right after that assistant message, no tool message is unanswered-for, and tool messages are
    text only. Also runs the wire-level validator of the OpenAI backend on the JSON form.
    """
    from sam3agent.llm.wire import to_openai_messages, validate_openai_messages

    assert validate_openai_messages(to_openai_messages(messages)) == []
    assert messages[0].role == "system" and messages[1].role == "user"
    i = 0
    while i < len(messages):
        msg = messages[i]
        if msg.role == "tool":
            raise AssertionError(f"tool message at {i} does not follow an assistant tool call")
        if msg.role == "assistant" and msg.tool_calls:
            ids = [c.id for c in msg.tool_calls]
            answered = []
            j = i + 1
            while j < len(messages) and messages[j].role == "tool":
                assert not messages[j].images, "tool messages must be text only"
                answered.append(messages[j].tool_call_id)
                j += 1
            assert sorted(answered) == sorted(ids), f"calls {ids} answered by {answered}"
            i = j
            continue
        i += 1


def rect(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """A rectangular ``(H, W)`` bool mask."""
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    return mask
