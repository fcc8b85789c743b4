"""What the scripted OpenAI-compatible server answers: the script, injected faults, and the JSON.

:class:`ChatScript` holds everything of :class:`~sam3agent.llm.server.ScriptedOpenAIServer` except
HTTP: the scripted replies (or one policy callable), the faults injected for the next calls, the
request log, the concurrency slots, and the chat-completion / model-list JSON built from a reply.
Its :meth:`ChatScript.answer` turns one request body into an :class:`Answer` (status, body,
headers); the server's HTTP handler only sends it.

Injected faults and refusals never consume a scripted reply, so a retried call gets the reply the
failed one would have had. When the script runs out the answer is 400 (not retried by clients)
with a message saying so.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, NamedTuple

from sam3agent.llm.wire import validate_openai_messages

Reply = str | Mapping[str, Any] | Callable[[dict[str, Any]], "str | Mapping[str, Any]"]
Policy = Callable[[dict[str, Any]], "str | Mapping[str, Any]"]


class RawBody(NamedTuple):
    """A response body sent as given (not JSON-encoded), with its content type."""

    data: bytes
    content_type: str


@dataclass(frozen=True)
class Answer:
    """One HTTP answer: status, body (JSON-encoded unless a :class:`RawBody`) and extra headers."""

    status: int
    body: Mapping[str, Any] | RawBody
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass
class _Fault:
    status: int | None = None
    stall: float = 0.0
    message: str = ""
    body: RawBody | None = None


class ChatScript:
    """The replies of a scripted chat-completions endpoint, without the HTTP.

    Args:
        script: Either a sequence of replies used in arrival order, or one policy callable called for
            every request. A reply is a string (the assistant text), a mapping with any of
            ``content``, ``tool_calls`` (each ``{"name", "arguments" (str or JSON value), "id"?}``),
            ``finish_reason``, ``usage`` (``{"prompt_tokens", "completion_tokens"}``), or
            ``status`` + ``message`` to answer that call with an HTTP error; or a callable
            ``(request_json) -> str | mapping`` evaluated when its turn comes.
        latency: Seconds each chat completion takes (spent while holding a slot).
        slots: Completions served at once; further requests queue. ``None`` = unlimited.
        models: Model names served; requests naming another get 404 like vLLM. ``None`` accepts any
            name (and lists ``["scripted"]``).
        api_key: When set, requests without ``Authorization: Bearer <api_key>`` get 401.
        validate: Answer 400 when the messages break OpenAI's ordering rules
            (:func:`~sam3agent.llm.wire.validate_openai_messages`), as a real server would.
        retry_after: Seconds (> 0) to ask clients to wait before retrying, sent as a
            ``Retry-After-Ms`` header (milliseconds) with every error answer; OpenAI clients wait that
            long instead of their own backoff. ``None`` sends no such header.

    Attributes:
        requests: Every chat-completions body received, in arrival order (failed calls included).
        request_headers: Their HTTP headers, names lower-cased.
        max_in_flight: The most completions served at once so far.
    """

    def __init__(
        self,
        script: Sequence[Reply] | Policy = (),
        *,
        latency: float = 0.0,
        slots: int | None = None,
        models: Sequence[str] | None = None,
        api_key: str | None = None,
        validate: bool = True,
        retry_after: float | None = None,
    ) -> None:
        if retry_after is not None and not retry_after > 0:
            raise ValueError(f"retry_after must be > 0 seconds, got {retry_after}")
        self._policy: Policy | None = script if callable(script) else None
        self._script: list[Reply] = [] if callable(script) else list(script)
        self.latency = latency
        self.models = list(models) if models is not None else None
        self.api_key = api_key
        self.validate = validate
        self.retry_after = retry_after
        self.requests: list[dict[str, Any]] = []
        self.request_headers: list[dict[str, str]] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._next_reply = 0
        self._faults: deque[_Fault] = deque()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(slots) if slots else None
        self._stopping = threading.Event()  # set when serving stops: wakes stalled and slow answers

    # ----------------------------------------------------------------- script control
    def add_replies(self, replies: Iterable[Reply]) -> None:
        """Append replies to the script."""
        with self._lock:
            self._script.extend(replies)

    def fail_next(self, count: int = 1, status: int = 500, message: str = "injected failure") -> None:
        """Answer the next ``count`` chat completions with HTTP ``status``."""
        with self._lock:
            self._faults.extend(_Fault(status=status, message=message) for _ in range(count))

    def stall_next(self, count: int = 1, seconds: float = 5.0) -> None:
        """Make the next ``count`` chat completions sleep ``seconds`` and then answer 504 (for timeouts)."""
        with self._lock:
            self._faults.extend(_Fault(status=504, stall=seconds, message="injected stall") for _ in range(count))

    def malform_next(self, count: int = 1, body: str | bytes = '{"id": "chatcmpl-cut", "choices": [',
                     content_type: str = "application/json") -> None:
        """Answer the next ``count`` chat completions with HTTP 200 and ``body`` verbatim.

        The default is truncated JSON; a proxy's error page is HTML, ``content_type="text/html"``.
        """
        data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        with self._lock:
            self._faults.extend(_Fault(status=200, body=RawBody(data, content_type)) for _ in range(count))

    @property
    def call_count(self) -> int:
        """Chat-completion requests received (including failed and stalled ones)."""
        with self._lock:
            return len(self.requests)

    @property
    def replies_used(self) -> int:
        """Scripted replies consumed so far."""
        with self._lock:
            return self._next_reply

    # ----------------------------------------------------------------- answers
    def error(self, status: int, message: str) -> Answer:
        """An OpenAI-style error answer (with ``Retry-After-Ms`` when :attr:`retry_after` is set)."""
        headers = {"Retry-After-Ms": f"{self.retry_after * 1000:g}"} if self.retry_after else {}
        return Answer(status, error_json(status, message), headers)

    def answer(self, body: dict[str, Any], headers: Mapping[str, str]) -> Answer:
        """The answer to one chat-completions request (``body``: its JSON object)."""
        with self._lock:
            self.requests.append(body)
            self.request_headers.append({k.lower(): v for k, v in headers.items()})
            fault = self._faults.popleft() if self._faults else None
        if fault is not None:
            if fault.body is not None:
                return Answer(fault.status or 200, fault.body)
            if fault.stall:
                self._stopping.wait(fault.stall)
            return self.error(fault.status or 500, fault.message)
        if self.api_key is not None and headers.get("Authorization") != f"Bearer {self.api_key}":
            return self.error(401, "Incorrect API key provided.")
        model = body.get("model")
        if not isinstance(model, str):
            return self.error(400, "'model' is required")
        if self.models is not None and model not in self.models:
            return self.error(404, f"The model `{model}` does not exist.")
        problems = validate_openai_messages(body.get("messages")) if self.validate else []
        if problems:
            return self.error(400, "; ".join(problems))
        if self._slots is None:
            return self._serve(body)
        with self._slots:
            return self._serve(body)

    def _serve(self, body: dict[str, Any]) -> Answer:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            if self.latency:
                self._stopping.wait(self.latency)
            reply = self._take_reply(body)
            if reply is None:
                return self.error(400, f"ScriptedOpenAIServer: script exhausted after {len(self._script)} replies")
            if isinstance(reply, Mapping) and "status" in reply:
                return self.error(int(reply["status"]), str(reply.get("message", "scripted error")))
            return Answer(200, self._completion_json(body, reply))
        finally:
            with self._lock:
                self._in_flight -= 1

    def _take_reply(self, body: dict[str, Any]) -> str | Mapping[str, Any] | None:
        if self._policy is not None:
            return self._policy(body)
        with self._lock:
            if self._next_reply >= len(self._script):
                return None
            reply = self._script[self._next_reply]
            self._next_reply += 1
        return reply(body) if callable(reply) else reply

    def _completion_json(self, body: dict[str, Any], reply: str | Mapping[str, Any]) -> dict[str, Any]:
        spec: Mapping[str, Any] = {"content": reply} if isinstance(reply, str) else reply
        number = next(self._ids)
        message: dict[str, Any] = {"role": "assistant", "content": spec.get("content")}
        calls = [_tool_call(call, f"call_{number}_{i}") for i, call in enumerate(spec.get("tool_calls") or [])]
        if calls:
            message["tool_calls"] = calls
        elif message["content"] is None:
            message["content"] = ""
        usage = spec.get("usage") or {
            "prompt_tokens": _prompt_tokens(body.get("messages") or []),
            "completion_tokens": len(json.dumps(message)) // 4 + 1,
        }
        usage = {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}
        return {
            "id": f"chatcmpl-scripted-{number}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": spec.get("finish_reason") or ("tool_calls" if calls else "stop"),
                    "logprobs": None,
                }
            ],
            "usage": usage,
        }

    def models_json(self) -> dict[str, Any]:
        """The ``GET /models`` list: :attr:`models`, or ``["scripted"]`` when any name is accepted."""
        names = self.models if self.models is not None else ["scripted"]
        return {
            "object": "list",
            "data": [{"id": n, "object": "model", "created": 0, "owned_by": "scripted"} for n in names],
        }


def _tool_call(call: Mapping[str, Any], default_id: str) -> dict[str, Any]:
    arguments = call.get("arguments", {})
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    return {
        "id": call.get("id", default_id),
        "type": "function",
        "function": {"name": call["name"], "arguments": arguments},
    }


def _prompt_tokens(messages: list[Any]) -> int:
    """A rough, deterministic token count: 4 characters per token, 256 per image."""
    total = 0
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str):
            total += len(content) // 4 + 1
        elif isinstance(content, list):
            for part in content:
                total += 256 if part.get("type") == "image_url" else len(str(part.get("text", ""))) // 4 + 1
    return total


def error_json(status: int, message: str) -> dict[str, Any]:
    """The OpenAI error object: ``{"error": {"message", "type", "param", "code"}}``."""
    try:
        kind = HTTPStatus(status).phrase.replace(" ", "")
    except ValueError:
        kind = "Error"
    return {"error": {"message": message, "type": kind, "param": None, "code": status}}
