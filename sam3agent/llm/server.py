"""A small OpenAI-compatible HTTP server whose replies come from a script (tests and benchmarks).

It serves ``POST /v1/chat/completions`` and ``GET /v1/models`` on 127.0.0.1 (an ephemeral port) from
a background thread, one thread per connection (HTTP/1.1 keep-alive), so dozens of concurrent agents
can talk to it. Every request body it receives is recorded. Options: a fixed latency per call, a fixed
number of concurrent slots (requests beyond them queue), an API key to require, and fault injection
for the next calls (an HTTP status, a stall longer than the client's timeout, or a 200 answer whose
body is not a chat completion: truncated JSON, an HTML page).

Example::

    with ScriptedOpenAIServer(["hello", {"tool_calls": [{"name": "f", "arguments": {}}]}]) as server:
        llm = OpenAICompatibleLLM(server.base_url, "scripted")
        ...
        assert server.requests[0]["messages"][0]["role"] == "system"

Injected faults and refusals never consume a scripted reply, so a retried call gets the reply the
failed one would have had. When the script runs out the server answers 400 (not retried by clients)
with a message saying so.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, NamedTuple

from sam3agent.llm.wire import validate_openai_messages

logger = logging.getLogger(__name__)

Reply = str | Mapping[str, Any] | Callable[[dict[str, Any]], "str | Mapping[str, Any]"]
Policy = Callable[[dict[str, Any]], "str | Mapping[str, Any]"]


class _RawBody(NamedTuple):
    """A response body sent as given (not JSON-encoded), with its content type."""

    data: bytes
    content_type: str


@dataclass
class _Fault:
    status: int | None = None
    stall: float = 0.0
    message: str = ""
    body: _RawBody | None = None


class ScriptedOpenAIServer:
    """An OpenAI-compatible chat-completions server answering from a script.

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
        host: Interface to bind.

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
        host: str = "127.0.0.1",
    ) -> None:
        self._policy: Policy | None = script if callable(script) else None
        self._script: list[Reply] = [] if callable(script) else list(script)
        self.latency = latency
        self.models = list(models) if models is not None else None
        self.api_key = api_key
        self.validate = validate
        self.host = host
        self.requests: list[dict[str, Any]] = []
        self.request_headers: list[dict[str, str]] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._next_reply = 0
        self._faults: deque[_Fault] = deque()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(slots) if slots else None
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> ScriptedOpenAIServer:
        """Bind an ephemeral port and serve from a background thread."""
        if self._httpd is not None:
            raise RuntimeError("server already started")
        self._stopping.clear()
        self._httpd = _HTTPServer((self.host, 0), _Handler, self)
        self._port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="scripted-openai",
            daemon=True,
        )
        self._thread.start()
        logger.debug("scripted OpenAI server on %s", self.base_url)
        return self

    def stop(self) -> None:
        """Stop serving, wake stalled handlers and close every connection."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ScriptedOpenAIServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (still known after :meth:`stop`, e.g. to test a dead endpoint)."""
        if self._port is None:
            raise RuntimeError("server not started")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1``."""
        return f"http://{self.host}:{self.port}/v1"

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
            self._faults.extend(_Fault(status=200, body=_RawBody(data, content_type)) for _ in range(count))

    @property
    def call_count(self) -> int:
        """Chat-completion requests received (including failed and stalled ones)."""
        with self._lock:
            return len(self.requests)

    @property
    def open_connections(self) -> int:
        """Client connections open right now (keep-alive ones included)."""
        with self._lock:
            return len(self._connections)

    @property
    def replies_used(self) -> int:
        """Scripted replies consumed so far."""
        with self._lock:
            return self._next_reply

    # ----------------------------------------------------------------- request handling
    def _register(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _chat(self, body: dict[str, Any], headers: Mapping[str, str]) -> tuple[int, dict[str, Any] | _RawBody]:
        """Status and JSON answer for one chat-completions request."""
        with self._lock:
            self.requests.append(body)
            self.request_headers.append({k.lower(): v for k, v in headers.items()})
            fault = self._faults.popleft() if self._faults else None
        if fault is not None:
            if fault.body is not None:
                return fault.status or 200, fault.body
            if fault.stall:
                self._stopping.wait(fault.stall)
            return fault.status or 500, _error(fault.status or 500, fault.message)
        if self.api_key is not None and headers.get("Authorization") != f"Bearer {self.api_key}":
            return 401, _error(401, "Incorrect API key provided.")
        model = body.get("model")
        if not isinstance(model, str):
            return 400, _error(400, "'model' is required")
        if self.models is not None and model not in self.models:
            return 404, _error(404, f"The model `{model}` does not exist.")
        problems = validate_openai_messages(body.get("messages")) if self.validate else []
        if problems:
            return 400, _error(400, "; ".join(problems))
        if self._slots is None:
            return self._serve(body)
        with self._slots:
            return self._serve(body)

    def _serve(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            if self.latency:
                self._stopping.wait(self.latency)
            reply = self._take_reply(body)
            if reply is None:
                return 400, _error(400, f"ScriptedOpenAIServer: script exhausted after {len(self._script)} replies")
            if isinstance(reply, Mapping) and "status" in reply:
                status = int(reply["status"])
                return status, _error(status, str(reply.get("message", "scripted error")))
            return 200, self._completion_json(body, reply)
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

    def _models_json(self) -> dict[str, Any]:
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


def _error(status: int, message: str) -> dict[str, Any]:
    try:
        kind = HTTPStatus(status).phrase.replace(" ", "")
    except ValueError:
        kind = "Error"
    return {"error": {"message": message, "type": kind, "param": None, "code": status}}


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], owner: ScriptedOpenAIServer):
        self.owner = owner
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.owner._register(self.connection, add=True)

    def finish(self) -> None:
        self.server.owner._register(self.connection, add=False)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def _send(self, status: int, payload: Mapping[str, Any] | _RawBody) -> None:
        if isinstance(payload, _RawBody):
            data, content_type = payload.data, payload.content_type
        else:
            data, content_type = json.dumps(payload).encode("utf-8"), "application/json"
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError as e:  # the client gave up (timeout) or the server is stopping
            logger.debug("could not send the reply: %s", e)
            self.close_connection = True

    def do_GET(self) -> None:
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            self._send(200, self.server.owner._models_json())
        else:
            self._send(404, _error(404, f"no route {self.path}"))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._send(404, _error(404, f"no route {self.path}"))
            return
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            self._send(400, _error(400, f"invalid JSON body: {e}"))
            return
        if not isinstance(body, dict):
            self._send(400, _error(400, "the body must be a JSON object"))
            return
        try:
            status, payload = self.server.owner._chat(body, self.headers)
        except Exception as e:  # a scripted callable failed: report it to the client, keep serving
            logger.exception("scripted reply failed")
            status, payload = 500, _error(500, f"scripted reply raised {type(e).__name__}: {e}")
        self._send(status, payload)
