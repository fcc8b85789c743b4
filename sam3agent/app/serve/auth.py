"""The API key of ``sam3agent serve``: required off loopback, checked in constant time, never logged.

A server bound to anything but a loopback address must have a key (``--api-key`` or the
``SAM3AGENT_SERVE_API_KEY`` environment variable); on loopback it is optional. Callers send it as
``Authorization: Bearer KEY`` or ``X-API-Key: KEY``; anything else gets a 401 JSON error. Plain HTTP
carries the key in clear text: off a trusted network, put a TLS-terminating proxy in front.

Nothing here imports the ASGI stack: :class:`ApiKeyMiddleware` is a plain ASGI middleware.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any

API_KEY_ENV = "SAM3AGENT_SERVE_API_KEY"
SHORT_KEY_CHARS = 16

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` only listens on this machine (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:  # a host name other than localhost: it may resolve to anything
        return False


def resolve_api_key(flag_value: str | None) -> str | None:
    """The key from ``--api-key``, else from ``SAM3AGENT_SERVE_API_KEY`` (empty: unset), else ``None``."""
    if flag_value is not None:
        return flag_value
    return os.environ.get(API_KEY_ENV) or None


def check_api_key(key: str) -> None:
    """Refuse a key that cannot travel in an HTTP header as typed.

    Raises:
        ValueError: If the key is empty or has characters other than printable ASCII without spaces
            (the message never contains the key).
    """
    if not key:
        raise ValueError(f"--api-key (or {API_KEY_ENV}) is empty; pass a long random string, e.g. the output of "
                         "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`")
    if not all("!" <= ch <= "~" for ch in key):
        raise ValueError(f"--api-key (or {API_KEY_ENV}) may only contain printable ASCII characters without "
                         "spaces; generate one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`")


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


class ApiKeyMiddleware:
    """ASGI middleware answering 401 to HTTP requests without the key (except on ``open_paths``).

    The presented key is hashed and compared with :func:`hmac.compare_digest`, so the comparison
    takes the same time whatever the key's length or how much of it matches.

    Args:
        app: The app to protect.
        api_key: The key callers must send.
        open_paths: Paths served without a key (e.g. ``{"/healthz"}``).
    """

    def __init__(self, app: ASGIApp, api_key: str, open_paths: Collection[str] = ()) -> None:
        check_api_key(api_key)
        self.app = app
        self._digest = _digest(api_key.encode("ascii"))
        self._open_paths = frozenset(open_paths)

    def __repr__(self) -> str:
        return f"ApiKeyMiddleware(open_paths={sorted(self._open_paths)})"  # never the key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass authorized requests (and non-HTTP scopes such as lifespan) to the app."""
        kind = scope["type"]
        if kind not in ("http", "websocket") or scope.get("path") in self._open_paths or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        if kind == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "missing or wrong API key"})
            return
        body = json.dumps({"error": {"type": "unauthorized", "message": (
            "missing or wrong API key; send it as the header Authorization: Bearer <key> or X-API-Key: <key>")}})
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode("ascii")),
            (b"www-authenticate", b'Bearer realm="sam3agent"'),
            (b"connection", b"close"),
        ]})
        await send({"type": "http.response.body", "body": body.encode()})

    def _authorized(self, scope: Scope) -> bool:
        ok = False
        for name, value in scope.get("headers") or ():
            if name == b"authorization":
                scheme, _, token = value.strip().partition(b" ")
                if scheme.lower() == b"bearer":
                    ok |= hmac.compare_digest(_digest(token.strip()), self._digest)
            elif name == b"x-api-key":
                ok |= hmac.compare_digest(_digest(value.strip()), self._digest)
        return ok
