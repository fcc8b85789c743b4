"""Backend-neutral LLM request/response types and the one async LLM protocol.

The agent builds :class:`LLMRequest` objects out of :class:`Message` lists; every backend
(OpenAI-compatible HTTP, in-process transformers, scripted) turns them into its own wire format.
Images travel as already-encoded bytes (PNG or JPEG) so a request is cheap to hash, record,
replay and summarise.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True)
class TextPart:
    """A piece of text in a message."""

    text: str


@dataclass(frozen=True, eq=False)
class ImagePart:
    """An encoded image in a message.

    Attributes:
        data: Encoded image bytes (PNG or JPEG).
        mime: ``"image/png"`` or ``"image/jpeg"``.
        width: Pixel width of the encoded image.
        height: Pixel height of the encoded image.
        label: Short human description for traces, e.g. ``"raw image"``, ``"marks 1-4"``.
        detail: OpenAI's image ``detail`` (``"auto"``, ``"low"``, ``"high"``) or ``None`` (not sent).
    """

    data: bytes
    mime: str
    width: int
    height: int
    label: str = ""
    detail: str | None = None

    @cached_property
    def digest(self) -> str:
        """sha256 hex digest of the encoded bytes (used for caching keys and traces)."""
        return hashlib.sha256(self.data).hexdigest()

    def summary(self) -> str:
        """A one-line description without the bytes, e.g. ``<image 640x480 png 'raw image' 1a2b3c4d>``."""
        kind = self.mime.split("/")[-1]
        return f"<image {self.width}x{self.height} {kind} {self.label!r} {self.digest[:8]}>"


Part = TextPart | ImagePart


@dataclass(frozen=True)
class ToolCall:
    """A native (OpenAI ``tool_calls``) function call as the model produced it.

    Attributes:
        id: The call id the model gave (tool results must echo it).
        name: Function name.
        arguments: The raw JSON argument string, unparsed (it may be malformed).
    """

    id: str
    name: str
    arguments: str


@dataclass
class Message:
    """One chat message.

    Attributes:
        role: ``system``, ``user``, ``assistant`` or ``tool``.
        content: Text and image parts, in order.
        tool_calls: For assistant messages in the native protocol: the calls it made.
        tool_call_id: For ``tool`` messages: the id of the call this answers.
    """

    role: Role
    content: list[Part] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None

    @classmethod
    def text(cls, role: Role, text: str, **kwargs: object) -> Message:
        """A message with a single text part."""
        return cls(role=role, content=[TextPart(text)], **kwargs)  # type: ignore[arg-type]

    @property
    def images(self) -> list[ImagePart]:
        """The image parts of this message."""
        return [p for p in self.content if isinstance(p, ImagePart)]

    @property
    def plain_text(self) -> str:
        """The text parts joined by newlines."""
        return "\n".join(p.text for p in self.content if isinstance(p, TextPart))


class SamplingConfig(BaseModel):
    """Sampling settings sent explicitly on every LLM call.

    ``temperature``, ``top_p`` and ``seed`` set to ``None`` are not sent: the server's (or the
    model's generation config's) default applies.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    temperature: float | None = Field(0.0, ge=0.0, le=2.0)
    top_p: float | None = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(4096, ge=1)
    seed: int | None = 0


@dataclass
class LLMRequest:
    """What the agent asks of a backend.

    Attributes:
        messages: The (already pruned) conversation.
        sampling: Sampling settings for this call.
        tools: OpenAI function schemas (native protocol) or ``None`` (text protocol).
        purpose: ``"main"`` for the planning loop, ``"verify"`` for examine_each_mask checks.
    """

    messages: list[Message]
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    tools: list[dict] | None = None
    purpose: Literal["main", "verify"] = "main"

    @property
    def images(self) -> list[ImagePart]:
        """Every image in the request, in order."""
        return [img for m in self.messages for img in m.images]


@dataclass
class Usage:
    """Token counts reported by the backend (0 when it reports none)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens)


@dataclass
class Completion:
    """A backend's reply.

    Attributes:
        text: The assistant text (may contain reasoning and a ``<tool>`` block); ``""`` if none.
        tool_calls: Native tool calls, if the backend returned any.
        usage: Token usage of this call.
        attempts: HTTP/generation attempts it took (1 = no retry).
        model: The model name the backend reported.
        finish_reason: The backend's finish reason, if any.
    """

    text: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    attempts: int = 1
    model: str = ""
    finish_reason: str | None = None


class LLMBackendError(RuntimeError):
    """The backend failed (HTTP error, timeout, refused connection) and retries are spent.

    Attributes:
        endpoint: The endpoint or model that failed.
        last_error: The last underlying error.
        attempts: Attempts made.
        partial_result: Set by ``Agent.arun`` when the failure ended a run: the ``AgentResult`` so
            far (status ``budget_exhausted`` with the backend's failure as reason), so callers can
            account for the turns and tokens spent.
    """

    def __init__(self, endpoint: str, last_error: BaseException | str, attempts: int = 1) -> None:
        self.endpoint = endpoint
        self.last_error = last_error
        self.attempts = attempts
        self.partial_result: object | None = None
        super().__init__(f"LLM backend {endpoint} failed after {attempts} attempt(s): {last_error}")


@runtime_checkable
class LLM(Protocol):
    """The one interface every backend implements."""

    @property
    def name(self) -> str:
        """Endpoint and model, for messages, manifests and cache keys."""
        ...

    async def complete(self, request: LLMRequest) -> Completion:
        """Answer one request. Raises :class:`LLMBackendError` when the backend fails for good."""
        ...
