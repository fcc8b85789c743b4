"""``sam3agent serve mcp|http``: start the MCP server or the HTTP API.

Both load one agent (the LLM backend and SAM 3 named by the shared backend flags of
:mod:`sam3agent.backends`) and serve it to every caller. Servers bind 127.0.0.1 by default; on
any other address they need an API key (``--api-key`` or ``SAM3AGENT_SERVE_API_KEY``, see
:mod:`sam3agent.app.serve.auth`). Slow clients are cut off (``--header-timeout``, ``--body-timeout``) and
connections capped (``--max-connections``), see :mod:`sam3agent.app.serve.transport`.

Every option is checked, and the port bound, before anything is loaded. Exit codes: 0 after a clean
shutdown (Ctrl-C, SIGTERM, or the end of stdin for MCP over stdio), 1 when the backend cannot be
loaded, 2 for bad options, a missing API key, a port that cannot be bound or a missing ``serve`` extra.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sam3agent.app.serve.auth import API_KEY_ENV, SHORT_KEY_CHARS, check_api_key, is_loopback, resolve_api_key
from sam3agent.app.serve.limits import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_HEADER_TIMEOUT_S,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_UPLOAD_MB,
    DEFAULT_REQUEST_TIMEOUT_S,
    ConnectionLimits,
    ServeLimits,
)
from sam3agent.backends import (
    add_backend_arguments,
    build_config,
    build_engine,
    build_llm,
    llm_settings,
    sam3_source,
)

if TYPE_CHECKING:
    from sam3agent.agent import Agent

logger = logging.getLogger(__name__)

DEFAULT_HTTP_PORT = 8765
DEFAULT_MCP_PORT = 8766


def port_number(text: str) -> int:
    """``--port``'s type: an integer 0-65535 (0: a free one)."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: give a number 0-65535 (0 picks a free one)")
    return port


def build_parser() -> argparse.ArgumentParser:
    """The ``sam3agent serve`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="sam3agent serve",
        description="Serve the SAM 3 agent to other programs: an MCP server (stdio or streamable HTTP) or an "
                    "HTTP API. Both bind 127.0.0.1 by default; any other address needs --api-key.",
    )
    sub = parser.add_subparsers(dest="server", required=True, metavar="{mcp,http}")
    mcp = sub.add_parser(
        "mcp", help="MCP server with a segment_image tool (stdio or streamable HTTP)",
        description="MCP server exposing segment_image(image, query): the answer as JSON text plus the overlay "
                    "as an image. stdio (default) is what desktop MCP clients launch; streamable-http serves "
                    "http://HOST:PORT/mcp.",
    )
    mcp.add_argument("--transport", choices=["stdio", "streamable-http"], default="stdio",
                     help="stdio (default) or streamable-http")
    _add_server_arguments(mcp, DEFAULT_MCP_PORT)
    http = sub.add_parser(
        "http", help="HTTP API: POST /v1/segment, GET /healthz, GET /v1/info",
        description="HTTP API: POST /v1/segment (multipart image + query, or JSON with a base64 image), "
                    "GET /healthz, GET /v1/info.",
    )
    _add_server_arguments(http, DEFAULT_HTTP_PORT)
    return parser


def _add_server_arguments(parser: argparse.ArgumentParser, default_port: int) -> None:
    add_backend_arguments(parser)
    group = parser.add_argument_group("server")
    group.add_argument("--host", default="127.0.0.1",
                       help="interface to bind (default 127.0.0.1; any non-loopback address requires --api-key)")
    group.add_argument("--port", type=port_number, default=default_port,
                       help=f"port 0-65535 (default {default_port}; 0 picks a free one, printed at start)")
    group.add_argument("--api-key", default=None, metavar="KEY",
                       help=f"key callers must send to this server (Authorization: Bearer KEY or X-API-Key: KEY; "
                            f"/healthz stays open; not the LLM's key, see --api-key-env); default ${API_KEY_ENV}; "
                            "required off loopback. Prefer the environment variable: a flag shows in the process "
                            "list")
    group.add_argument("--allowed-root", action="append", default=[], metavar="DIR",
                       help="let callers name image files inside DIR (repeatable; default: no file access)")
    group.add_argument("--allow-urls", action="store_true",
                       help="let callers pass http(s) image URLs, fetched by the server (default: off)")
    group.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB, metavar="MB",
                       help=f"largest encoded image accepted (default {DEFAULT_MAX_UPLOAD_MB:g})")
    group.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                       help=f"largest width*height accepted (default {DEFAULT_MAX_PIXELS})")
    group.add_argument("--request-timeout", type=float, default=DEFAULT_REQUEST_TIMEOUT_S, metavar="S",
                       help=f"wall-clock limit of one request, 0 for none (default {DEFAULT_REQUEST_TIMEOUT_S:g})")
    group.add_argument("--header-timeout", type=float, default=DEFAULT_HEADER_TIMEOUT_S, metavar="S",
                       help="close a connection whose request headers have not all arrived within S seconds of "
                            f"connecting or of the previous response (default {DEFAULT_HEADER_TIMEOUT_S:g})")
    group.add_argument("--body-timeout", type=float, default=DEFAULT_BODY_TIMEOUT_S, metavar="S",
                       help="close a connection whose request body has not all arrived within S seconds of its "
                            f"headers (default {DEFAULT_BODY_TIMEOUT_S:g})")
    group.add_argument("--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS, metavar="N",
                       help=f"answer 503 to connections beyond N open (default {DEFAULT_MAX_CONNECTIONS})")
    group.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info",
                       help="log level (logs go to stderr)")
    # Tests build a fake engine and a scripted LLM in the server process: MODULE:FUNC(args) -> (llm, engine).
    parser.add_argument("--_test-backend", dest="test_backend", default=None, help=argparse.SUPPRESS)


def limits_from_args(args: argparse.Namespace) -> ServeLimits:
    """The :class:`ServeLimits` the options describe (raises ``ValueError`` naming the bad option)."""
    if not 0 < args.max_upload_mb < math.inf:
        raise ValueError("--max-upload-mb must be positive")
    if args.max_pixels <= 0:
        raise ValueError("--max-pixels must be positive")
    if not 0 <= args.request_timeout < math.inf:
        raise ValueError("--request-timeout must be >= 0 (0 for none)")
    return ServeLimits(allowed_roots=tuple(args.allowed_root), allow_urls=args.allow_urls,
                       max_upload_bytes=int(args.max_upload_mb * 2**20), max_pixels=args.max_pixels,
                       request_timeout_s=args.request_timeout or None)


def connection_limits_from_args(args: argparse.Namespace) -> ConnectionLimits:
    """The :class:`ConnectionLimits` the options describe (raises ``ValueError`` naming the bad option)."""
    return ConnectionLimits(header_timeout_s=args.header_timeout, body_timeout_s=args.body_timeout,
                            max_connections=args.max_connections)


def _binds(args: argparse.Namespace) -> bool:
    """Whether this server listens on a socket (everything but MCP over stdio)."""
    return args.server == "http" or args.transport == "streamable-http"


def api_key_from_args(args: argparse.Namespace) -> str | None:
    """The API key (flag, else environment), checked against the bind address.

    Raises:
        ValueError: If the key is unusable, or missing while a non-loopback address is bound (the
            message never contains the key).
    """
    key = resolve_api_key(args.api_key)
    if key is not None:
        check_api_key(key)
        if len(key) < SHORT_KEY_CHARS:
            logger.warning("the API key has only %d characters; use at least %d random ones", len(key),
                           SHORT_KEY_CHARS)
    elif _binds(args) and not is_loopback(args.host):
        raise ValueError(f"--host {args.host} is not a loopback address, so the server needs an API key: set "
                         f"{API_KEY_ENV} (or pass --api-key KEY), or bind 127.0.0.1 and put an authenticating "
                         "proxy in front")
    return key


def build_agent(args: argparse.Namespace) -> tuple[Agent, dict[str, Any]]:
    """The agent the backend options describe, and the facts ``/v1/info`` reports about it."""
    from sam3agent.agent import Agent

    config = build_config(args)
    if args.test_backend:
        module, _, func = args.test_backend.partition(":")
        llm, engine = getattr(importlib.import_module(module), func)(args)
        return Agent(llm, engine, config), {"llm": {"kind": "test"}, "sam3": {"source": args.test_backend}}
    engine = build_engine(args)
    llm = build_llm(args, prompt_version=config.prompt_version)
    return Agent(llm, engine, config), {"llm": llm_settings(args), "sam3": {"source": sam3_source(args)}}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sam3agent serve`` (``argv`` without the ``serve`` word)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        limits = limits_from_args(args)
        connections = connection_limits_from_args(args)
        api_key = api_key_from_args(args)
    except ValueError as e:
        print(f"sam3agent serve: error: {e}", file=sys.stderr)
        return 2
    try:
        import mcp  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        print(f"sam3agent serve: error: {e.name} is not installed; install the serve extra: "
              "pip install 'sam3agent[serve]'", file=sys.stderr)
        return 2
    from sam3agent.app.serve.transport import bind_socket

    sock: socket.socket | None = None
    if _binds(args):  # before loading anything: a busy port fails in a second, not after SAM 3 loaded
        try:
            sock = bind_socket(args.host, args.port)
        except OSError as e:
            print(f"sam3agent serve: cannot bind {args.host}:{args.port}: {e}; pick another --port or --host",
                  file=sys.stderr)
            return 2
    try:
        return _load_and_serve(args, limits, connections, api_key, sock)
    finally:
        if sock is not None:
            sock.close()


def _load_and_serve(args: argparse.Namespace, limits: ServeLimits, connections: ConnectionLimits,
                    api_key: str | None, sock: socket.socket | None) -> int:
    try:
        agent, info = build_agent(args)
    except (RuntimeError, ValueError, OSError) as e:
        print(f"sam3agent serve: cannot load the backend: {e}", file=sys.stderr)
        return 1
    previous = _stop_on_sigterm()
    try:
        if sock is None:
            return _serve_stdio(agent, limits)
        app, what, path = _http_app(args, agent, limits, info, api_key)
        return _run_uvicorn(app, sock, args, connections, what, path, api_key is not None)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM, after uvicorn's graceful shutdown
        logger.info("stopped")
        return 0
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        close = getattr(agent.engine, "close", None)
        if callable(close):
            close()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _stop_on_sigterm() -> Any:
    """Make SIGTERM stop the server like Ctrl-C (a clean exit 0); returns the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _interrupt)


def _serve_stdio(agent: Agent, limits: ServeLimits) -> int:
    import anyio

    from sam3agent.app.serve.mcp_server import build_mcp_server

    logger.info("MCP server on stdio (tool: segment_image)")
    anyio.run(build_mcp_server(agent, limits).run_stdio_async)
    return 0


def _http_app(args: argparse.Namespace, agent: Agent, limits: ServeLimits, info: dict[str, Any],
              api_key: str | None) -> tuple[Any, str, str]:
    """The ASGI app to serve, what to call it, and its path."""
    if args.server == "mcp":
        from sam3agent.app.serve.mcp_server import build_mcp_server, streamable_http_app

        app = streamable_http_app(build_mcp_server(agent, limits), args.host, limits, api_key=api_key)
        return app, "MCP endpoint", "/mcp"
    from sam3agent.app.serve.http_api import create_app

    return create_app(agent, limits, info=info, api_key=api_key), "HTTP API", ""


def _run_uvicorn(app: Any, sock: socket.socket, args: argparse.Namespace, connections: ConnectionLimits,
                 what: str, path: str, keyed: bool) -> int:
    import uvicorn

    from sam3agent.app.serve.transport import uvicorn_config

    port = sock.getsockname()[1]
    host = f"[{args.host}]" if sock.family == socket.AF_INET6 else args.host
    auth = "API key required" if keyed else "no API key"
    print(f"sam3agent {what} listening on http://{host}:{port}{path} ({auth})", file=sys.stderr, flush=True)
    if keyed and not is_loopback(args.host):
        logger.warning("plain HTTP on %s: the API key travels in clear text; put a TLS proxy in front off a "
                       "trusted network", args.host)
    config = uvicorn_config(app, connections, host=args.host, port=port, log_level=args.log_level)
    uvicorn.Server(config).run(sockets=[sock])
    return 0
