"""Images from untrusted callers: resolved, checked against the :class:`ServeLimits`, then decoded.

An image arrives as a data URL, a base64 string, a path inside an allowed root or (when enabled) an
``http(s)`` URL. Sizes and pixel counts are checked before pixels are decompressed; paths are kept
inside the allowed roots (no ``..``, symlinks followed and re-checked); every failure is a
:class:`ServeError` with a 4xx status and a message that names the fix, never an internal error.
"""

from __future__ import annotations

import base64
import binascii
import errno
import io
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from sam3agent.app.serve.limits import CLI_OPTIONS, ServeError, ServeLimits, bad_request
from sam3core.image import ImageHandle, prepare_image

# Leading bytes of the encodings PIL reads that we accept as "this base64 string is an image".
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")
_BASE64_CHARS = re.compile(r"^[A-Za-z0-9+/_-]+={0,2}$")
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
_OBJECT_REPR = re.compile(r"<[^<>]*? at 0x[0-9a-fA-F]+>")  # e.g. <_io.BytesIO object at 0x7f...>
_FORMATS = "JPEG, PNG, WebP, GIF, BMP or TIFF"


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
        ServeError: 400 (not a usable string or path), 403 (paths or URLs not allowed, path outside
            the roots), 404 (no such file), 413 (too many bytes or pixels), 422 (not a decodable image).
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
    raise ServeError(422, "bad_image", f"image is neither a data URL nor base64-encoded image bytes ({_FORMATS})")


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
    except UnidentifiedImageError as e:  # its message is only "cannot identify image file <BytesIO ...>"
        raise ServeError(422, "bad_image", f"cannot decode image {source}: not a {_FORMATS} image") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise ServeError(422, "bad_image", f"cannot decode image {source}: not a {_FORMATS} image "
                                           f"({_clean(e)})") from e
    if width * height > limits.max_pixels:
        raise ServeError(413, "payload_too_large",
                         f"image {source} is {width}x{height} = {width * height} pixels; this server accepts at "
                         f"most {limits.max_pixels} pixels ({limits.option('max_pixels')}); downscale the image first")
    try:
        return prepare_image(data, source=source, max_pixels=limits.max_pixels)
    except ValueError as e:
        raise ServeError(422, "bad_image", _clean(e)) from e
    except Image.DecompressionBombError as e:  # --max-pixels above PIL's own safety limit
        raise ServeError(413, "payload_too_large", f"image {source} has too many pixels: {e}") from e


def _clean(error: BaseException) -> str:
    """The error's text without object reprs (``<_io.BytesIO object at 0x...>`` means nothing to a caller)."""
    return _OBJECT_REPR.sub("the data", str(error)) or type(error).__name__


def too_large(size: int, limits: ServeLimits) -> ServeError:
    """The 413 error for ``size`` bytes."""
    return ServeError(413, "payload_too_large",
                      f"the image is {size / 2**20:.2f} MB; this server accepts at most "
                      f"{limits.max_upload_bytes / 2**20:.2f} MB ({limits.option('max_upload')})")


def resolve_allowed_path(raw: str, roots: Sequence[Path], limits: ServeLimits | None = None) -> Path:
    """Resolve a caller's path to a file inside one of ``roots``.

    ``..`` components are refused outright; the path (absolute, or relative to each root in turn) is
    resolved with symlinks followed and must land inside a root, so a symlink pointing out of a
    root is refused too. A path that cannot be resolved at all (a symlink loop, a name longer than
    the file system allows) is a 400 when it lies inside a root, and "outside" otherwise, so the
    answer says nothing about files outside the roots.

    Args:
        raw: The path as given.
        roots: Resolved allowed directories.
        limits: The limits whose :meth:`~ServeLimits.option` names the setting in messages
            (default: the command line's flag).

    Returns:
        The resolved path of an existing file.

    Raises:
        ServeError: 400 (NUL byte, symlink loop, name too long), 403 (no roots configured, ``..``,
            outside every root), 404 (no such file).
    """
    option = limits.option("allowed_roots") if limits is not None else CLI_OPTIONS["allowed_roots"]
    if not roots:
        raise ServeError(403, "forbidden", f"reading image files is disabled here; allow a folder ({option}) or "
                                           "send the image bytes")
    if "\x00" in raw:
        raise bad_request("the image path contains a NUL byte; send a plain file name")
    path = Path(raw)
    if ".." in path.parts:
        raise ServeError(403, "forbidden", f"path {_short(raw)!r} contains '..'; path traversal is not allowed")
    candidates = [path] if path.is_absolute() else [root / path for root in roots]
    inside = False
    for candidate in candidates:
        try:
            real = candidate.resolve()
            found = real.is_file()
        except (OSError, RuntimeError) as e:  # 3.11/3.12 raise RuntimeError for a symlink loop
            if not any(candidate.is_relative_to(root) for root in roots):
                continue
            raise _unresolvable(raw, e) from e
        if not any(real.is_relative_to(root) for root in roots):
            continue
        inside = True
        if found:
            return real
    if not inside:
        raise ServeError(403, "forbidden", f"path {_short(raw)!r} is outside the allowed roots ({option})")
    raise ServeError(404, "not_found", f"image file {_short(raw)!r} not found under the allowed roots")


def _unresolvable(raw: str, error: OSError | RuntimeError) -> ServeError:
    code = getattr(error, "errno", None)
    if isinstance(error, RuntimeError) or code == errno.ELOOP:
        return bad_request(f"image path {_short(raw)!r} cannot be resolved: it is a symlink loop")
    if code == errno.ENAMETOOLONG:
        return bad_request(f"image path {_short(raw)!r} is too long for the file system; use a shorter name")
    if code == errno.EACCES:
        return ServeError(403, "forbidden", f"image path {_short(raw)!r} is not readable by the server")
    return bad_request(f"image path {_short(raw)!r} cannot be resolved ({error.strerror or type(error).__name__})")


def read_image_file(raw: str, limits: ServeLimits) -> ImageHandle:
    """Read and decode an image file inside the allowed roots (see :func:`resolve_allowed_path`)."""
    path = resolve_allowed_path(raw, limits.allowed_roots, limits)
    try:
        size = path.stat().st_size
        if size > limits.max_upload_bytes:
            raise too_large(size, limits)
        data = path.read_bytes()
    except OSError as e:
        raise _unresolvable(raw, e) from e
    return decode_image(data, limits, path.name)


def fetch_url(url: str, limits: ServeLimits) -> bytes:
    """Download an image URL (only when ``limits.allow_urls``), reading at most the upload limit.

    Raises:
        ServeError: 403 (URLs disabled), 413 (too large), 422 (the fetch failed).
    """
    if not limits.allow_urls:
        raise ServeError(403, "forbidden", f"image URLs are disabled here (enable them with "
                                           f"{limits.option('allow_urls')}); send the image bytes as base64 instead")
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
