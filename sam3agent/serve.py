"""Old import path of :mod:`sam3agent.app.serve`; ``python -m sam3agent.serve mcp|http ...`` still starts
a server (the same as ``sam3agent serve ...``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sam3agent.app import serve as _serve
from sam3agent.app.serve import ServeError, ServeLimits, compact_answer

if TYPE_CHECKING:
    from sam3agent.app.serve.http_api import create_app
    from sam3agent.app.serve.mcp_server import build_mcp_server

__all__ = ["ServeError", "ServeLimits", "build_mcp_server", "compact_answer", "create_app"]


def __getattr__(name: str) -> Any:
    return getattr(_serve, name)  # create_app / build_mcp_server, imported when first used


if __name__ == "__main__":
    from sam3agent.app.serve.cli import main

    raise SystemExit(main())
