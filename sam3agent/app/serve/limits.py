"""What a server accepts (:class:`ServeLimits`) and how it refuses (:class:`ServeError`).

Refusal messages name the setting that would change the outcome in the words of whoever set the
limits: the ``sam3agent serve`` flags by default (:data:`CLI_OPTIONS`), the keyword arguments of
:func:`sam3agent.as_openai_tool` when the limits come from there (:data:`PYTHON_OPTIONS`).
"""

from __future__ import annotations

import math
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sam3core.image import DEFAULT_MAX_PIXELS  # one pixel limit for every entry point

DEFAULT_MAX_UPLOAD_MB = 20.0
DEFAULT_REQUEST_TIMEOUT_S = 300.0
DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_BODY_TIMEOUT_S = 60.0
DEFAULT_MAX_CONNECTIONS = 100

#: How the ``sam3agent serve`` command line spells each limit.
CLI_OPTIONS: Mapping[str, str] = types.MappingProxyType({
    "allowed_roots": "--allowed-root DIR",
    "allow_urls": "--allow-urls",
    "max_upload": "--max-upload-mb",
    "max_pixels": "--max-pixels",
    "request_timeout": "--request-timeout",
})

#: How :func:`sam3agent.as_openai_tool` spells each limit.
PYTHON_OPTIONS: Mapping[str, str] = types.MappingProxyType({
    "allowed_roots": "allowed_roots=[...]",
    "allow_urls": "allow_urls=True",
    "max_upload": "max_upload_mb=...",
    "max_pixels": "max_pixels=...",
    "request_timeout": "timeout_s=...",
})


class ServeError(Exception):
    """A request the server refuses or cannot complete, with the status and a message naming the fix.

    Attributes:
        status: The HTTP status code that describes it (400, 401, 403, 404, 408, 413, 415, 422, 502, 504).
        kind: A short machine-readable type, e.g. ``"payload_too_large"``.
        message: What went wrong and what to do about it.
    """

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message

    def to_dict(self) -> dict[str, Any]:
        """``{"error": {"type": kind, "message": message}}``."""
        return {"error": {"type": self.kind, "message": self.message}}


def bad_request(message: str) -> ServeError:
    """A 400 ``bad_request`` error."""
    return ServeError(400, "bad_request", message)


def _resolve_roots(roots: Sequence[str | Path], option: str) -> tuple[Path, ...]:
    resolved = []
    for root in roots:
        path = Path(root).resolve()
        if not path.is_dir():
            raise ValueError(f"allowed root {root} is not an existing directory; pass {option} an existing folder")
        resolved.append(path)
    return tuple(resolved)


@dataclass(frozen=True)
class ServeLimits:
    """What a server accepts from its callers.

    Attributes:
        allowed_roots: Directories image paths may point into (resolved, symlinks followed). Empty:
            image paths are refused.
        allow_urls: Fetch ``http(s)`` image URLs (off by default: a URL lets callers make the
            server issue requests).
        max_upload_bytes: Largest encoded image (or request body) accepted.
        max_pixels: Largest ``width * height`` accepted, checked from the image header before decoding.
        request_timeout_s: Wall-clock limit of one request (``None``: none).
        url_timeout_s: Timeout of one URL fetch.
        option_names: How refusals name each setting (keys of :data:`CLI_OPTIONS`); the command
            line's flags by default.

    Raises:
        ValueError: If a root is not an existing directory or a limit is not positive.
    """

    allowed_roots: tuple[Path, ...] = ()
    allow_urls: bool = False
    max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 2**20)
    max_pixels: int = DEFAULT_MAX_PIXELS
    request_timeout_s: float | None = DEFAULT_REQUEST_TIMEOUT_S
    url_timeout_s: float = 20.0
    option_names: Mapping[str, str] = field(default_factory=lambda: CLI_OPTIONS, compare=False, repr=False)

    def __post_init__(self) -> None:
        roots = _resolve_roots(self.allowed_roots, self.option("allowed_roots"))
        object.__setattr__(self, "allowed_roots", roots)
        if self.max_upload_bytes <= 0 or self.max_pixels <= 0:
            raise ValueError("max_upload_bytes and max_pixels must be positive")
        if self.request_timeout_s is not None and self.request_timeout_s <= 0:
            raise ValueError("request_timeout_s must be positive (or None for no limit)")

    def option(self, key: str) -> str:
        """How the caller spells the setting ``key`` (``"allowed_roots"``, ``"max_pixels"``, ...)."""
        return self.option_names.get(key) or CLI_OPTIONS.get(key, key)

    def describe(self) -> dict[str, Any]:
        """The limits as JSON-safe settings (roots counted, not listed)."""
        return {
            "file_paths": bool(self.allowed_roots),
            "allowed_roots": len(self.allowed_roots),
            "urls": self.allow_urls,
            "max_upload_mb": round(self.max_upload_bytes / 2**20, 3),
            "max_pixels": self.max_pixels,
            "request_timeout_s": self.request_timeout_s,
        }


@dataclass(frozen=True)
class ConnectionLimits:
    """How long a request may take to arrive, and how many connections may be open (see
    :mod:`sam3agent.app.serve.transport`, which enforces them).

    Attributes:
        header_timeout_s: Seconds for the request line and headers, from the connection opening (or
            the previous response finishing) to the blank line ending the headers.
        body_timeout_s: Seconds for the whole body, from the end of the headers.
        max_connections: Open connections (and running requests) beyond which new connections get 503.

    Raises:
        ValueError: If a value is not positive and finite (the message names the ``serve`` flag).
    """

    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    max_connections: int = DEFAULT_MAX_CONNECTIONS

    def __post_init__(self) -> None:
        for flag, value in (("--header-timeout", self.header_timeout_s), ("--body-timeout", self.body_timeout_s),
                            ("--max-connections", self.max_connections)):
            if not 0 < value < math.inf:
                raise ValueError(f"{flag} must be a positive number, got {value:g}")
