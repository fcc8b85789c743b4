"""What the model is sent: pruned main-loop requests, verification requests, and the history.

Main-loop requests follow the SAM 3 Agent's context engineering (as its paper describes it):

* the system prompt and the first user turn (raw image + query) are always sent;
* of the later conversation, only the turns since the latest executed ``segment_phrase`` are
  sent (the window starts at the assistant message that made that call, so a native tool call,
  its tool messages and the user image message that follows are kept or dropped together);
* only the image of the *current* masks is kept; older images in the window become a short note;
* when earlier phrases were pruned, a memory line lists every phrase tried so far (and every run of
  an extra tool, see :meth:`~sam3agent.state.AgentState.memory_text`).

So a main-loop request never holds more than two images. Verification requests are separate,
short conversations of their own with three images.
"""

from __future__ import annotations

from dataclasses import replace

from sam3agent.llm.base import Completion, ImagePart, LLMRequest, Message, Part, TextPart
from sam3agent.parsing import strip_thinking, through_first_call
from sam3agent.state import AgentState
from sam3agent.tools import openai_tools

MAX_MAIN_IMAGES = 2
MAX_HISTORY_REPLY_CHARS = 20_000
"""A reply kept in the conversation is cut to this many characters (the trace keeps all of it):
a runaway reply would otherwise be sent back on every later turn."""


def build_request(state: AgentState) -> LLMRequest:
    """The pruned main-loop request for the current state.

    Raises:
        RuntimeError: If the request would hold more than two images (a bug in the agent).
    """
    window = state.history[state.window_start :]
    messages = [state.system, state.first_user]
    removed_note = state.prompts.feedback("image_removed")
    memory = state.memory_text()
    for msg in window:
        content: list[Part] = [
            TextPart(removed_note) if isinstance(p, ImagePart) and p is not state.marks_image else p
            for p in msg.content
        ]
        if memory is not None and msg.role != "assistant":
            content.insert(0, TextPart(memory))
            memory = None
        messages.append(replace(msg, content=content))
    request = LLMRequest(
        messages=messages,
        sampling=state.config.sampling,
        tools=openai_tools(state.config.tools) if state.config.protocol == "native" else None,
        purpose="main",
    )
    if len(request.images) > MAX_MAIN_IMAGES:
        raise RuntimeError(
            f"internal error: main-loop request holds {len(request.images)} images (limit {MAX_MAIN_IMAGES})"
        )
    return request


def build_verify_request(state: AgentState, mask_id: int, single: ImagePart, zoom: ImagePart) -> LLMRequest:
    """The verification request for one mask.

    Args:
        state: The run state (for the raw image, query, prompts and settings).
        mask_id: The 1-based id of the mask being checked.
        single: The image with only this mask drawn.
        zoom: The close-up: crop with the mask beside the same crop without it.
    """
    prompts = state.prompts
    user = Message(role="user", content=[
        TextPart(prompts.feedback("verify_caption_raw")),
        state.raw_image,
        TextPart(prompts.feedback("verify_caption_single", mask_id=mask_id)),
        single,
        TextPart(prompts.feedback("verify_caption_zoom", mask_id=mask_id)),
        zoom,
        TextPart(prompts.render("verify_user", query=state.query, mask_id=mask_id)),
    ])
    return LLMRequest(
        messages=[Message.text("system", prompts.verify_system()), user],
        sampling=state.config.effective_verify_sampling,
        tools=None,
        purpose="verify",
    )


def append_exchange(state: AgentState, completion: Completion, outcome: str, image: ImagePart | None) -> None:
    """Append the model's reply and our answer to the history, in the protocol's shape.

    Text protocol: the assistant text (reasoning blocks removed, cut after its first complete
    ``<tool>`` call), then one user message with the outcome and the image, if any. Native
    protocol: the assistant message with its tool calls; one tool message per call (the first gets
    the outcome, the others are told they were not run); then, if there is an image, a user
    message carrying it (tool messages are text-only).
    A native reply without tool calls is answered by a user message, as in the text protocol.
    """
    text = strip_thinking(completion.text)
    prompts = state.prompts
    native_calls = completion.tool_calls if state.config.protocol == "native" else []
    if state.config.protocol == "text":
        text = through_first_call(text)
    if len(text) > MAX_HISTORY_REPLY_CHARS:
        cut = len(text) - MAX_HISTORY_REPLY_CHARS
        text = f"{text[:MAX_HISTORY_REPLY_CHARS]}\n[... {cut} more characters of this reply were cut ...]"
    if not native_calls:
        state.history.append(Message.text("assistant", text or "(empty reply)"))
        parts: list[Part] = [TextPart(outcome)]
        if image is not None:
            parts.append(image)
        state.history.append(Message(role="user", content=parts))
        return
    state.history.append(
        Message(role="assistant", content=[TextPart(text)] if text else [], tool_calls=list(native_calls))
    )
    for i, call in enumerate(native_calls):
        answer = outcome if i == 0 else prompts.feedback("extra_call_skipped")
        state.history.append(Message.text("tool", answer, tool_call_id=call.id))
    if image is not None:
        caption = prompts.feedback("marks_caption", count=state.mask_count)
        state.history.append(Message(role="user", content=[TextPart(caption), image]))
