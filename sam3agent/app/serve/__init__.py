"""Servers for sam3agent: an MCP server and an HTTP API, sharing one agent and one engine per process.

``sam3agent serve mcp ...`` and ``sam3agent serve http ...`` start them (see :mod:`sam3agent.app.serve.cli`).
Importing this package stays light: the ASGI stack (``mcp``, ``starlette``, ``uvicorn``; the ``serve``
extra) is imported only when a server is built.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sam3agent.app.serve.common import ServeError, ServeLimits, compact_answer

if TYPE_CHECKING:
    from sam3agent.app.serve.http_api import create_app
    from sam3agent.app.serve.mcp_server import build_mcp_server

_LAZY = {
    "create_app": "sam3agent.app.serve.http_api",
    "build_mcp_server": "sam3agent.app.serve.mcp_server",
}

__all__ = ["ServeError", "ServeLimits", "build_mcp_server", "compact_answer", "create_app"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
