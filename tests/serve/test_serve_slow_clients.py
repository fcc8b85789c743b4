"""Slow and idle clients are cut off, at the socket level, by the server the CLI runs (uvicorn + h11).

Plain uvicorn never times out a request that is still arriving: its keep-alive timer is not armed on
a new connection and is cancelled by the first byte of the next request, so headers or a body sent a
byte at a time keep a connection (and its memory) forever. These tests send bytes slowly through raw
sockets and measure when the server closes the connection.
"""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Iterable, Iterator

import pytest
from serve_helpers import PolicyLLM, ServerThread, fake_engine

from sam3agent import Agent
from sam3agent.app.serve import ServeLimits, create_app
from sam3agent.app.serve.transport import ConnectionLimits, uvicorn_config

HEADERS_START = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: "
BODY_HEADERS = (b"POST /v1/segment HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100000\r\n\r\n")
HEALTH = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
HEALTH_THEN_CLOSE = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
MARGIN_S = 2.5  # scheduling slack on a busy CI machine


def serving(limits: ConnectionLimits) -> ServerThread:
    """The HTTP API behind the guarded uvicorn configuration the CLI uses."""
    app = create_app(Agent(PolicyLLM(), fake_engine()), ServeLimits(request_timeout_s=5))
    return ServerThread(app, uvicorn_config(app, limits, host="127.0.0.1", port=0, log_level="warning"))


def trickle(port: int, first: bytes, then: Iterable[bytes], *, interval_s: float = 0.2,
            give_up_s: float = 20.0) -> tuple[float, bytes]:
    """Send ``first``, then one chunk of ``then`` every ``interval_s``, until the server closes.

    Returns:
        Seconds from connecting until the server closed the connection, and every byte it sent.

    Raises:
        AssertionError: If the connection is still open after ``give_up_s``.
    """
    with socket.create_connection(("127.0.0.1", port)) as sock:
        start = time.monotonic()
        sock.settimeout(interval_s)
        received = b""
        chunks = itertools.chain([first], then)
        while time.monotonic() - start < give_up_s:
            try:
                sock.sendall(next(chunks))
            except OSError:  # reset or broken pipe: the server closed it
                return time.monotonic() - start, received
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return time.monotonic() - start, received
            if not data:
                return time.monotonic() - start, received
            received += data
    raise AssertionError(f"the connection is still open after {give_up_s} s (received {received[:80]!r})")


def forever(chunk: bytes) -> Iterator[bytes]:
    """``chunk`` again and again."""
    return itertools.repeat(chunk)


def test_slow_headers_are_cut_off_with_408() -> None:
    with serving(ConnectionLimits(header_timeout_s=1, body_timeout_s=30)) as server:
        seconds, received = trickle(server.port, HEADERS_START[:5], forever(b"a"))
    assert 1 <= seconds < 1 + MARGIN_S
    assert received.startswith(b"HTTP/1.1 408 ")


def test_slow_body_is_cut_off_with_408() -> None:
    with serving(ConnectionLimits(header_timeout_s=30, body_timeout_s=1)) as server:
        seconds, received = trickle(server.port, BODY_HEADERS + b"{", forever(b" "))
        after = trickle(server.port, HEALTH_THEN_CLOSE, forever(b""), give_up_s=3)  # the server still answers
    assert 1 <= seconds < 1 + MARGIN_S
    assert received.startswith(b"HTTP/1.1 408 ")
    assert b'{"status":"ok"}' in after[1]


def test_idle_connection_is_closed_silently() -> None:
    with serving(ConnectionLimits(header_timeout_s=1, body_timeout_s=30)) as server:
        seconds, received = trickle(server.port, b"", forever(b""))
    assert 1 <= seconds < 1 + MARGIN_S and received == b""


def test_slow_second_request_on_a_kept_alive_connection_is_cut_off() -> None:
    """After a response the next request's headers are due within the header timeout (uvicorn's own
    keep-alive timer is cancelled by the first byte of the next request)."""
    with serving(ConnectionLimits(header_timeout_s=1.5, body_timeout_s=30)) as server:
        seconds, received = trickle(server.port, HEALTH, itertools.chain([b""] * 3, [HEADERS_START], forever(b"a")))
    assert received.startswith(b"HTTP/1.1 200 ") and b'{"status":"ok"}' in received
    assert received.count(b"HTTP/1.1 ") == 2 and b"HTTP/1.1 408 " in received
    assert 1.5 <= seconds < 1.5 + MARGIN_S


def test_normal_requests_and_keep_alive_still_work() -> None:
    limits = ConnectionLimits(header_timeout_s=2, body_timeout_s=2)
    with serving(limits) as server, socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        for _ in range(3):
            sock.sendall(HEALTH)
            reply = b""
            while b'{"status":"ok"}' not in reply:
                reply += sock.recv(65536)
            assert reply.startswith(b"HTTP/1.1 200 ")
            time.sleep(0.8)  # idle between requests, under the header deadline each time


def test_connections_over_the_cap_get_503() -> None:
    with serving(ConnectionLimits(header_timeout_s=10, body_timeout_s=10, max_connections=3)) as server:
        held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
        try:
            time.sleep(0.3)  # let the server accept them
            seconds, refused = trickle(server.port, b"", forever(b""), give_up_s=3)
            held.pop().close()
            time.sleep(0.3)
            _, accepted = trickle(server.port, HEALTH_THEN_CLOSE, forever(b""), give_up_s=3)
        finally:
            for sock in held:
                sock.close()
    assert refused.startswith(b"HTTP/1.1 503 ") and seconds < 1
    assert b"--max-connections" in refused
    assert accepted.startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize("bad", [{"header_timeout_s": 0}, {"body_timeout_s": -1}, {"max_connections": 0}])
def test_connection_limits_must_be_positive(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ConnectionLimits(**bad)  # type: ignore[arg-type]
