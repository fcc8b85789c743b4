"""A small OpenAI-compatible HTTP server whose replies come from a script (tests and benchmarks).

It serves ``POST /v1/chat/completions`` and ``GET /v1/models`` on 127.0.0.1 (an ephemeral port) from
a background thread, one thread per connection (HTTP/1.1 keep-alive), so dozens of concurrent agents
can talk to it. Every request body it receives is recorded. Options: a fixed latency per call, a fixed
number of concurrent slots (requests beyond them queue), an API key to require, a ``Retry-After-Ms``
to send with errors, and fault injection for the next calls (an HTTP status, a stall longer than the
client's timeout, or a 200 answer whose body is not a chat completion: truncated JSON, an HTML page).
What it answers is decided by :class:`~sam3agent.llm.server_replies.ChatScript`; this module is the
HTTP side.

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
import json
import logging
import socket
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from sam3agent.llm.server_replies import Answer, ChatScript, Policy, RawBody, Reply, error_json

__all__ = ["Answer", "ChatScript", "Policy", "RawBody", "Reply", "ScriptedOpenAIServer"]

logger = logging.getLogger(__name__)


class ScriptedOpenAIServer(ChatScript):
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
        retry_after: Seconds (> 0) sent as ``Retry-After-Ms`` with every error answer, which OpenAI
            clients wait instead of their own backoff (fast retries in tests); ``None``: no header.
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
        retry_after: float | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        super().__init__(script, latency=latency, slots=slots, models=models, api_key=api_key, validate=validate,
                         retry_after=retry_after)
        self.host = host
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

    @property
    def open_connections(self) -> int:
        """Client connections open right now (keep-alive ones included)."""
        with self._lock:
            return len(self._connections)

    def _register(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)


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

    def _send(self, answer: Answer) -> None:
        if isinstance(answer.body, RawBody):
            data, content_type = answer.body.data, answer.body.content_type
        else:
            data, content_type = json.dumps(answer.body).encode("utf-8"), "application/json"
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except OSError as e:  # the client gave up (timeout) or the server is stopping
            logger.debug("could not send the reply: %s", e)
            self.close_connection = True

    def do_GET(self) -> None:
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            self._send(Answer(200, self.server.owner.models_json()))
        else:
            self._send(Answer(404, error_json(404, f"no route {self.path}")))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._send(Answer(404, error_json(404, f"no route {self.path}")))
            return
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            self._send(Answer(400, error_json(400, f"invalid JSON body: {e}")))
            return
        if not isinstance(body, dict):
            self._send(Answer(400, error_json(400, "the body must be a JSON object")))
            return
        try:
            answer = self.server.owner.answer(body, self.headers)
        except Exception as e:  # a scripted callable failed: report it to the client, keep serving
            logger.exception("scripted reply failed")
            answer = self.server.owner.error(500, f"scripted reply raised {type(e).__name__}: {e}")
        self._send(answer)
