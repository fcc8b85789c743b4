"""``sam3agent serve mcp|http``: start the MCP server or the HTTP API.

Both load one agent (the LLM backend and SAM 3 named by the shared backend flags of
:mod:`sam3agent.backend_options`) and serve it to every caller. Servers bind 127.0.0.1 by default and
have no authentication: keep them on loopback or behind an authenticating proxy.

Exit codes: 0 after a clean shutdown (Ctrl-C, SIGTERM, or the end of stdin for MCP over stdio), 1 when
the backend cannot be loaded, 2 for bad options, a port that cannot be bound or a missing ``serve`` extra.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sam3agent.backend_options import (
    add_backend_arguments,
    build_config,
    build_engine,
    build_llm,
    llm_settings,
    sam3_source,
)
from sam3agent.serve.common import DEFAULT_MAX_PIXELS, DEFAULT_MAX_UPLOAD_MB, DEFAULT_REQUEST_TIMEOUT_S, ServeLimits

if TYPE_CHECKING:
    from sam3agent.agent import Agent

logger = logging.getLogger(__name__)

DEFAULT_HTTP_PORT = 8765
DEFAULT_MCP_PORT = 8766
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def build_parser() -> argparse.ArgumentParser:
    """The ``sam3agent serve`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="sam3agent serve",
        description="Serve the SAM 3 agent to other programs: an MCP server (stdio or streamable HTTP) or an "
                    "HTTP API. Both bind 127.0.0.1 by default and have no authentication.",
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
                       help="interface to bind (default 127.0.0.1; anything else exposes an unauthenticated server)")
    group.add_argument("--port", type=int, default=default_port,
                       help=f"port (default {default_port}; 0 picks a free one, printed at start)")
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
    group.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info",
                       help="log level (logs go to stderr)")
    # Tests build a fake engine and a scripted LLM in the server process: MODULE:FUNC(args) -> (llm, engine).
    parser.add_argument("--_test-backend", dest="test_backend", default=None, help=argparse.SUPPRESS)


def limits_from_args(args: argparse.Namespace) -> ServeLimits:
    """The :class:`ServeLimits` the options describe (raises ``ValueError`` naming the bad option)."""
    if args.max_upload_mb <= 0:
        raise ValueError("--max-upload-mb must be positive")
    if args.max_pixels <= 0:
        raise ValueError("--max-pixels must be positive")
    if args.request_timeout < 0:
        raise ValueError("--request-timeout must be >= 0 (0 for none)")
    return ServeLimits(allowed_roots=tuple(args.allowed_root), allow_urls=args.allow_urls,
                       max_upload_bytes=int(args.max_upload_mb * 2**20), max_pixels=args.max_pixels,
                       request_timeout_s=args.request_timeout or None)


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
    if args.host not in _LOOPBACK and not (args.server == "mcp" and args.transport == "stdio"):
        logger.warning("binding %s: the server has no authentication; anyone who can reach it can use it",
                       args.host)
    try:
        agent, info = build_agent(args)
    except (RuntimeError, ValueError, OSError) as e:
        print(f"sam3agent serve: cannot load the backend: {e}", file=sys.stderr)
        return 1
    previous = _stop_on_sigterm()
    try:
        return _serve(args, agent, limits, info)
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


def _serve(args: argparse.Namespace, agent: Agent, limits: ServeLimits, info: dict[str, Any]) -> int:
    if args.server == "mcp":
        import anyio

        from sam3agent.serve.mcp_server import build_mcp_server, streamable_http_app

        server = build_mcp_server(agent, limits)
        if args.transport == "stdio":
            logger.info("MCP server on stdio (tool: segment_image)")
            anyio.run(server.run_stdio_async)
            return 0
        return _run_uvicorn(streamable_http_app(server, args.host, limits), args, "MCP endpoint", "/mcp")
    from sam3agent.serve.http_api import create_app

    return _run_uvicorn(create_app(agent, limits, info=info), args, "HTTP API", "")


def _run_uvicorn(app: Any, args: argparse.Namespace, what: str, path: str) -> int:
    import uvicorn

    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as e:
        sock.close()
        print(f"sam3agent serve: cannot bind {args.host}:{args.port}: {e}; pick another --port", file=sys.stderr)
        return 2
    port = sock.getsockname()[1]
    host = f"[{args.host}]" if family == socket.AF_INET6 else args.host
    print(f"sam3agent {what} listening on http://{host}:{port}{path}", file=sys.stderr, flush=True)
    config = uvicorn.Config(app, log_level=args.log_level, lifespan="on", timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
    return 0
