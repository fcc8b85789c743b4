"""What every server front end shares: limits, errors, image resolution, the run and the answer.

The HTTP API, the MCP server and the chat-assistant tool (:mod:`sam3agent.embed`) all take an image
from an untrusted caller, run the agent on it under a time limit and describe the result. This module
does that once:

- :class:`ServeLimits`: allowed file roots, URL fetching (off by default), upload size, pixel count and
  per-request timeout.
- :class:`ServeError`: a failure the caller can act on, with its HTTP status and a message naming
  the fix; every front end turns it into its own error form.
- :func:`load_image`: an image given as a data URL, a base64 string, a path inside an allowed root
  or (when enabled) an ``http(s)`` URL, checked against the limits *before* it is decoded.
- :func:`run_agent`: one agent run with the request timeout, backend failures mapped to errors.
- :func:`compact_answer`: the small JSON answer (status, count, per mask id, box, score, area, RLE).

Nothing here imports the ASGI stack, so :mod:`sam3agent.embed` can use it without the ``serve`` extra.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import io
import logging
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from sam3agent.llm.base import LLMBackendError
from sam3agent.result import detections_to_list
from sam3core.image import ImageHandle, prepare_image

if TYPE_CHECKING:
    from sam3agent.agent import Agent
    from sam3agent.result import AgentResult

logger = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_MB = 20.0
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_REQUEST_TIMEOUT_S = 300.0

# Leading bytes of the encodings PIL reads that we accept as "this base64 string is an image".
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")
_BASE64_CHARS = re.compile(r"^[A-Za-z0-9+/_-]+={0,2}$")
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


class ServeError(Exception):
    """A request the server refuses or cannot complete, with the status and a message naming the fix.

    Attributes:
        status: The HTTP status code that describes it (400, 403, 404, 413, 415, 422, 502, 504).
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


def _resolve_roots(roots: Sequence[str | Path]) -> tuple[Path, ...]:
    resolved = []
    for root in roots:
        path = Path(root).resolve()
        if not path.is_dir():
            raise ValueError(f"allowed root {root} is not an existing directory; pass --allowed-root an "
                             "existing folder")
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

    Raises:
        ValueError: If a root is not an existing directory or a limit is not positive.
    """

    allowed_roots: tuple[Path, ...] = ()
    allow_urls: bool = False
    max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 2**20)
    max_pixels: int = DEFAULT_MAX_PIXELS
    request_timeout_s: float | None = DEFAULT_REQUEST_TIMEOUT_S
    url_timeout_s: float = 20.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed_roots", _resolve_roots(self.allowed_roots))
        if self.max_upload_bytes <= 0 or self.max_pixels <= 0:
            raise ValueError("max_upload_bytes and max_pixels must be positive")
        if self.request_timeout_s is not None and self.request_timeout_s <= 0:
            raise ValueError("request_timeout_s must be positive (or None for no limit)")

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


# ------------------------------------------------------------------------------------------ images


def load_image(spec: str, limits: ServeLimits, *, allow_paths: bool = True) -> ImageHandle:
    """Resolve, check and decode an image named by a string.

    Args:
        spec: A data URL (``data:image/png;base64,...``), a base64 string of encoded image bytes, an
            ``http(s)`` URL (only with ``limits.allow_urls``), a ``file://`` URL or a file path
            (absolute, or relative to an allowed root; only with ``allow_paths`` and allowed roots).
        limits: The server's limits.
        allow_paths: Interpret non-base64 strings as file paths (the HTTP API has a separate field).

    Returns:
        The prepared image.

    Raises:
        ServeError: 400 (not a usable string), 403 (paths or URLs not allowed, path outside the
            roots), 404 (no such file), 413 (too many bytes or pixels), 422 (not a decodable image).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise bad_request("image must be a non-empty string: a data URL, base64 image bytes or a file path")
    spec = spec.strip()
    if spec[:5].lower() == "data:":
        return decode_image(_data_url_bytes(spec, limits), limits, "<data URL>")
    scheme = _SCHEME.match(spec)
    if scheme:
        name = scheme.group(1).lower()
        if name in ("http", "https"):
            return decode_image(fetch_url(spec, limits), limits, _short(spec))
        if name == "file" and allow_paths:
            path = urllib.request.url2pathname(urllib.parse.urlparse(spec).path)
            return read_image_file(path, limits)
        raise bad_request(f"unsupported image URL scheme {name!r}; send a data URL or base64 image bytes")
    data = _maybe_base64_image(spec, limits)
    if data is not None:
        return decode_image(data, limits, "<base64>")
    if allow_paths:
        return read_image_file(spec, limits)
    raise ServeError(422, "bad_image", "image is neither a data URL nor base64-encoded image bytes "
                                       "(JPEG, PNG, WebP, GIF, BMP or TIFF)")


def decode_image(data: bytes, limits: ServeLimits, source: str) -> ImageHandle:
    """Check encoded bytes against the size and pixel limits, then decode them.

    The pixel count is read from the header, so an oversized image is refused before its pixels
    are decompressed.

    Raises:
        ServeError: 413 (bytes or pixels over the limit) or 422 (not a decodable image).
    """
    if len(data) > limits.max_upload_bytes:
        raise too_large(len(data), limits)
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
    except Image.DecompressionBombError as e:
        raise ServeError(413, "payload_too_large", f"image {source} has too many pixels: {e}") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ServeError(422, "bad_image", f"cannot decode image {source}: not a JPEG, PNG, WebP, GIF, BMP "
                                           f"or TIFF image ({e})") from e
    if width * height > limits.max_pixels:
        raise ServeError(413, "payload_too_large",
                         f"image {source} is {width}x{height} = {width * height} pixels; this server accepts "
                         f"at most {limits.max_pixels} pixels (--max-pixels); downscale the image first")
    try:
        return prepare_image(data, source=source)
    except ValueError as e:
        raise ServeError(422, "bad_image", str(e)) from e
    except Image.DecompressionBombError as e:  # --max-pixels above PIL's own safety limit
        raise ServeError(413, "payload_too_large", f"image {source} has too many pixels: {e}") from e


def too_large(size: int, limits: ServeLimits) -> ServeError:
    """The 413 error for ``size`` bytes."""
    return ServeError(413, "payload_too_large",
                      f"the image is {size / 2**20:.2f} MB; this server accepts at most "
                      f"{limits.max_upload_bytes / 2**20:.2f} MB (--max-upload-mb)")


def resolve_allowed_path(raw: str, roots: Sequence[Path]) -> Path:
    """Resolve a caller's path to a file inside one of ``roots``.

    ``..`` components are refused outright; the path (absolute, or relative to each root in turn) is
    resolved with symlinks followed and must land inside a root, so a symlink pointing out of a
    root is refused too.

    Args:
        raw: The path as given.
        roots: Resolved allowed directories.

    Returns:
        The resolved path of an existing file.

    Raises:
        ServeError: 403 (no roots configured, ``..``, outside every root), 404 (no such file).
    """
    if not roots:
        raise ServeError(403, "forbidden", "reading image files is disabled here; allow a folder (--allowed-root "
                                           "DIR, or allowed_roots=[...] in Python) or send the image bytes")
    path = Path(raw)
    if ".." in path.parts:
        raise ServeError(403, "forbidden", f"path {raw!r} contains '..'; path traversal is not allowed")
    candidates = [path] if path.is_absolute() else [root / path for root in roots]
    inside = False
    for candidate in candidates:
        real = candidate.resolve()
        if not any(real.is_relative_to(root) for root in roots):
            continue
        inside = True
        if real.is_file():
            return real
    if not inside:
        raise ServeError(403, "forbidden", f"path {raw!r} is outside the allowed roots (--allowed-root)")
    raise ServeError(404, "not_found", f"image file {raw!r} not found under the allowed roots")


def read_image_file(raw: str, limits: ServeLimits) -> ImageHandle:
    """Read and decode an image file inside the allowed roots (see :func:`resolve_allowed_path`)."""
    path = resolve_allowed_path(raw, limits.allowed_roots)
    size = path.stat().st_size
    if size > limits.max_upload_bytes:
        raise too_large(size, limits)
    return decode_image(path.read_bytes(), limits, path.name)


def fetch_url(url: str, limits: ServeLimits) -> bytes:
    """Download an image URL (only when ``limits.allow_urls``), reading at most the upload limit.

    Raises:
        ServeError: 403 (URLs disabled), 413 (too large), 422 (the fetch failed).
    """
    if not limits.allow_urls:
        raise ServeError(403, "forbidden", "image URLs are disabled on this server (start it with --allow-urls "
                                           "to enable them); send the image bytes as base64 instead")
    request = urllib.request.Request(url, headers={"User-Agent": "sam3agent"})
    try:
        with urllib.request.urlopen(request, timeout=limits.url_timeout_s) as response:
            data = response.read(limits.max_upload_bytes + 1)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise ServeError(422, "bad_image", f"could not fetch image URL {_short(url)}: {e}") from e
    if len(data) > limits.max_upload_bytes:
        raise too_large(len(data), limits)
    return data


def _data_url_bytes(url: str, limits: ServeLimits) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep or not header.lower().endswith(";base64"):
        raise bad_request("a data URL image must be base64 encoded: data:image/png;base64,<data>")
    data = _b64decode(payload, limits)
    if data is None:
        raise ServeError(422, "bad_image", "the data URL's payload is not valid base64")
    return data


def _maybe_base64_image(text: str, limits: ServeLimits) -> bytes | None:
    """Decoded bytes if ``text`` is base64 of something that starts like an image, else ``None``."""
    compact = "".join(text.split())
    if len(compact) < 16 or not _BASE64_CHARS.match(compact):
        return None
    data = _b64decode(compact, limits)
    if data is None or not _looks_like_image(data):
        return None
    return data


def _b64decode(payload: str, limits: ServeLimits) -> bytes | None:
    compact = "".join(payload.split())
    if len(compact) * 3 // 4 > limits.max_upload_bytes + 3:
        raise too_large(len(compact) * 3 // 4, limits)
    compact = compact.replace("-", "+").replace("_", "/")
    compact += "=" * (-len(compact) % 4)
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return None


def _looks_like_image(data: bytes) -> bool:
    return data.startswith(_IMAGE_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ------------------------------------------------------------------------------------------ runs


def check_query(query: object) -> str:
    """The stripped query, or a 400 error when it is missing or blank."""
    if not isinstance(query, str) or not query.strip():
        raise bad_request("query is required: a non-empty string describing what to segment")
    return query.strip()


def _timeout_error(timeout_s: float | None, what: str) -> ServeError:
    return ServeError(504, "timeout", f"{what} did not finish within the request timeout of {timeout_s:g} s "
                                      "(--request-timeout); try a smaller image or a simpler query")


async def run_agent(agent: Agent, image: ImageHandle, query: str, timeout_s: float | None) -> AgentResult:
    """Run the agent once under a wall-clock limit, mapping failures to :class:`ServeError`.

    Args:
        agent: The shared agent (concurrent calls are fine).
        image: The prepared image.
        query: What to segment.
        timeout_s: The time this run may take (``None``: no limit).

    Raises:
        ServeError: 400 (bad query), 502 (the LLM backend failed, naming its endpoint), 504 (timeout).
    """
    return await load_and_run(agent, lambda: image, query, timeout_s)


async def load_and_run(agent: Agent, loader: Callable[[], ImageHandle], query: object,
                       timeout_s: float | None) -> AgentResult:
    """Load an image with ``loader`` (in a worker thread) and run the agent, together within ``timeout_s``.

    Raises:
        ServeError: From the loader; 400 (bad query), 502 (the LLM backend failed, naming its
            endpoint) or 504 (the time ran out).
    """
    text = check_query(query)
    what = "loading the image"
    try:
        async with asyncio.timeout(timeout_s) as deadline:
            handle = await asyncio.to_thread(loader)
            what = "the request"
            return await agent.arun(handle, text)
    except TimeoutError as e:
        if not deadline.expired():
            raise
        raise _timeout_error(timeout_s, what) from e
    except LLMBackendError as e:
        logger.warning("LLM backend failure: %s", e)
        raise ServeError(502, "llm_backend_error",
                         f"the LLM backend {e.endpoint} failed after {e.attempts} attempt(s): {e.last_error}; "
                         "check that the endpoint is up and serves the configured model") from e
    except ValueError as e:
        raise bad_request(str(e)) from e


async def segment_spec(agent: Agent, spec: str, query: object, limits: ServeLimits, *,
                       allow_paths: bool = True) -> AgentResult:
    """Resolve ``spec`` with :func:`load_image` and run the agent on it (see :func:`load_and_run`)."""
    loader = functools.partial(load_image, spec, limits, allow_paths=allow_paths)
    return await load_and_run(agent, loader, query, limits.request_timeout_s)


# ------------------------------------------------------------------------------------------ answers


def compact_answer(result: AgentResult, *, include_rle: bool = True) -> dict[str, Any]:
    """The small JSON-safe answer a tool caller gets.

    Returns:
        ``{"status", "query", "count", "reason", "image": {"width", "height"}, "masks": [...]}``; each
        mask has ``id`` (1-based, the number drawn on the overlay), ``phrase``, ``score``,
        ``box_xyxy`` (pixel corners x1, y1, x2, y2 of the original image, inclusive), ``area``
        (pixels) and, with ``include_rle``, ``rle`` (COCO RLE ``{"size": [h, w], "counts": str}``).
    """
    height, width = result.image.height, result.image.width
    records = detections_to_list(result.detections, height, width)
    masks = result.detections.mask
    out = []
    for i, record in enumerate(records):
        entry: dict[str, Any] = {
            "id": i + 1,
            "phrase": record["phrase"],
            "score": None if record["score"] is None else round(record["score"], 4),
            "box_xyxy": [round(v, 1) for v in record["box_xyxy"]],
            "area": int(np.count_nonzero(masks[i])) if masks is not None else 0,
        }
        if include_rle:
            entry["rle"] = record["rle"]
        out.append(entry)
    return {
        "status": result.status,
        "query": result.query,
        "count": len(out),
        "reason": result.reason,
        "image": {"width": width, "height": height},
        "masks": out,
    }


def error_answer(error: ServeError) -> dict[str, Any]:
    """The answer of a failed tool call: ``{"status": "error", "error": {"type", "message"}}``."""
    return {"status": "error", **error.to_dict()}


def png_bytes(image: Image.Image) -> bytes:
    """``image`` encoded as PNG."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages a server report cares about (``None``: not installed)."""
    names = ["sam3agent", "torch", "torchvision", "transformers", "supervision", "openai", "mcp", "starlette",
             "uvicorn"]
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
