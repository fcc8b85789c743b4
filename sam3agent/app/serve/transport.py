"""Serving an ASGI app with uvicorn so that slow or idle clients cannot hold connections forever.

Plain uvicorn bounds none of this: its keep-alive timer is not armed on a new connection and the
first byte of a request cancels it, and nothing limits how long headers or a body take to arrive, so
a client sending a byte a second keeps its connection (and its buffers) open indefinitely, and many
such clients exhaust the server. :class:`GuardedH11Protocol` (uvicorn's h11 protocol plus deadlines)
closes a connection when

- the request line and headers have not all arrived ``header_timeout_s`` after the connection opened
  or the previous response finished (idle keep-alive time counts), or
- the body has not all arrived ``body_timeout_s`` after the headers,

answering ``408`` when part of a request had arrived (nothing for an idle connection), and refuses a
connection with ``503`` while ``max_connections`` are open or that many requests are still running
(a request goes on after its client disconnects, until it finishes or times out). Header size is
bounded by h11 (``MAX_HEADER_BYTES``); body size by the app.

Needs the ``serve`` extra (``uvicorn``, which brings ``h11``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from typing import Any, ClassVar

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from sam3agent.app.serve.limits import ConnectionLimits

__all__ = ["MAX_HEADER_BYTES", "ConnectionLimits", "GuardedH11Protocol", "bind_socket", "raw_error_response",
           "uvicorn_config"]

logger = logging.getLogger(__name__)

MAX_HEADER_BYTES = 16 * 1024  # request line + headers; more is a 400 from h11


def raw_error_response(status: int, reason: str, kind: str, message: str) -> bytes:
    """A complete ``Connection: close`` HTTP/1.1 response with the JSON error body, as bytes."""
    body = json.dumps({"error": {"type": kind, "message": message}}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n")
    return head.encode("ascii") + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with header and body deadlines and a connection cap (see the module docs).

    Subclasses set :attr:`connection_limits`; :func:`uvicorn_config` makes one per configuration.
    """

    connection_limits: ClassVar[ConnectionLimits] = ConnectionLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._phase: str | None = None  # "headers", "body" or None (nothing is due from the client)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Accept the connection, or answer 503 and close it when the server is full."""
        super().connection_made(transport)
        cap = self.connection_limits.max_connections
        if len(self.connections) > cap or len(self.tasks) >= cap:
            logger.warning("refused a connection: %d open, %d requests running (--max-connections %d)",
                           len(self.connections) - 1, len(self.tasks), cap)
            transport.write(raw_error_response(
                503, "Service Unavailable", "service_unavailable",
                f"the server is at its connection limit (--max-connections {cap}); retry shortly"))
            transport.close()
            return
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the deadline, then let uvicorn clean up."""
        self._cancel()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        """Process what arrived, then move the deadline to what is due next."""
        super().handle_events()
        self._watch()

    def on_response_complete(self) -> None:
        """After a response the next request's headers are due."""
        super().on_response_complete()
        self._watch()

    def _cancel(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _watch(self) -> None:
        if self.transport is None or self.transport.is_closing():
            self._cancel()
            return
        state = self.conn.their_state
        phase = "headers" if state is h11.IDLE else "body" if state is h11.SEND_BODY else None
        if phase == self._phase:
            return
        self._cancel()
        self._phase = phase
        if phase is not None:
            limits = self.connection_limits
            timeout = limits.header_timeout_s if phase == "headers" else limits.body_timeout_s
            self._deadline = self.loop.call_later(timeout, self._expire)

    def _expire(self) -> None:
        self._deadline = None
        phase = self._phase
        if phase is None or self.transport.is_closing():
            return
        limits = self.connection_limits
        timeout = limits.header_timeout_s if phase == "headers" else limits.body_timeout_s
        answered = self.cycle is not None and self.cycle.response_started
        if (phase == "headers" and self.conn.trailing_data[0]) or (phase == "body" and not answered):
            flag = "--header-timeout" if phase == "headers" else "--body-timeout"
            self.transport.write(raw_error_response(
                408, "Request Timeout", "request_timeout",
                f"the request {phase} did not arrive within {timeout:g} s ({flag}); send the request at once"))
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        logger.info("closed the connection of %s: the request %s did not arrive within %g s", client, phase, timeout)
        self.transport.close()


def uvicorn_config(app: Any, limits: ConnectionLimits, *, host: str = "127.0.0.1", port: int = 0,
                   log_level: str = "info") -> uvicorn.Config:
    """The uvicorn configuration ``sam3agent serve`` runs ``app`` with (h11 with the deadlines of ``limits``).

    Args:
        app: The ASGI app.
        limits: Deadlines and the connection cap.
        host: Interface to bind when uvicorn binds the socket itself (the CLI passes a bound socket).
        port: Port to bind likewise (0: a free one).
        log_level: uvicorn's log level.

    Returns:
        The configuration; run it with ``uvicorn.Server(config).run(...)``.
    """
    protocol = type("GuardedH11Protocol", (GuardedH11Protocol,), {"connection_limits": limits})
    return uvicorn.Config(app, host=host, port=port, http=protocol, log_level=log_level, lifespan="on",
                          timeout_graceful_shutdown=5, h11_max_incomplete_event_size=MAX_HEADER_BYTES)


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (IPv6 when ``host`` contains ``:``), not yet listening.

    Raises:
        OSError: If the address cannot be bound (in use, not an interface of this machine, ...).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock
