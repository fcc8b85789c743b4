"""The live web demo of ``sam3agent serve http``: a page at ``/`` that shows a run as it happens.

The page and its files are package data under ``sam3agent/app/serve/static/``: ``index.html``,
``demo.css``, ``demo.js`` (hand-written, no libraries) and ``icon.svg``. The script posts the chosen
image and the query to ``POST /v1/segment/stream`` with ``fetch`` and reads the answer's
Server-Sent Events itself (``EventSource`` cannot POST or send a key): it shows a card per turn,
the model's replies, the numbered Set-of-Marks pictures, the verdicts and the failures fed back,
then the answer, the overlay and download links for the union mask (PNG) and the masks (COCO RLE JSON).

API keys: the page itself (:data:`OPEN_PATHS`) is served without one, like ``/healthz``; it holds no
data. The stream endpoint needs the key like every other endpoint: the page has a key field (kept in
the tab's ``sessionStorage``), sends it as ``Authorization: Bearer``, and asks for it on a 401.

Offline: nothing is loaded from anywhere but this server. Every answer here carries a
Content-Security-Policy that allows scripts, styles and requests from this origin only (images
also from ``data:`` and ``blob:`` URLs: the pictures in the stream and the chosen file's preview).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["CONTENT_SECURITY_POLICY", "OPEN_PATHS", "demo_routes"]

_PACKAGE = "sam3agent.app.serve"

# URL path -> (file under static/, media type); text types get "; charset=utf-8" from Starlette
_FILES: dict[str, tuple[str, str]] = {
    "/": ("index.html", "text/html"),
    "/static/demo.css": ("demo.css", "text/css"),
    "/static/demo.js": ("demo.js", "text/javascript"),
    "/static/icon.svg": ("icon.svg", "image/svg+xml"),
}

OPEN_PATHS: frozenset[str] = frozenset(_FILES)
"""The demo's paths, served without an API key (exact paths: nothing else under ``/static`` exists)."""

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data: blob:",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",  # the form is sent by the script, never by the browser itself
    "frame-ancestors 'none'",
])
"""Only this server's files and ``data:``/``blob:`` images; no inline script, no outside request."""

_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",  # revalidate, so an upgraded server's page is picked up at once
}


def demo_routes() -> list[Route]:
    """The ``GET`` (and ``HEAD``) routes of the page and its static files, read from the package once.

    Raises:
        FileNotFoundError: If the package was installed without its ``static/`` files.
    """
    return [Route(path, _serve_file(name, media_type), methods=["GET"]) for path, (name, media_type) in _FILES.items()]


def _serve_file(name: str, media_type: str) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint answering the bytes of ``static/<name>`` with ``media_type`` and the demo's headers."""
    body = (resources.files(_PACKAGE) / "static" / name).read_bytes()

    async def endpoint(request: Request) -> Response:
        return Response(body, media_type=media_type, headers=_HEADERS)

    endpoint.__name__ = f"web_demo_{name.replace('.', '_')}"
    return endpoint
