"""Image loading and the prepared-image handle shared by the engine and the agent.

Every image that enters sam3agent goes through :func:`prepare_image` exactly once: it is
decoded, EXIF orientation is applied, it is converted to 8-bit RGB and its content digest is
computed. The resulting :class:`ImageHandle` is what the engine caches features under and what
the agent renders on. Images over :data:`DEFAULT_MAX_PIXELS` (or ``max_pixels=``) are refused
with a ``ValueError``, encoded ones before their pixels are decompressed. Pixel coordinates
everywhere are ``(x, y)`` with the origin at the top-left corner of the *oriented* image, ``x`` to
the right and ``y`` down.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ImageInput: TypeAlias = "str | os.PathLike[str] | bytes | Image.Image | np.ndarray | ImageHandle"

_HIGH_DEPTH_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")

DEFAULT_MAX_PIXELS = 40_000_000
"""Largest ``width * height`` :func:`prepare_image` accepts unless given ``max_pixels=``.

A guard against decompression bombs (a 20000x20000 PNG can be a few hundred KB); the HTTP and
MCP servers' ``--max-pixels`` default is the same number. Assign to raise it process-wide.
"""


@dataclass(frozen=True, eq=False)
class ImageHandle:
    """A decoded, oriented RGB image with its content digest.

    Attributes:
        image: The image as an 8-bit RGB ``PIL.Image`` (EXIF orientation already applied).
        digest: Hex digest of the RGB pixel content and size; equal pixels give equal digests
            whatever the source (path, bytes, array).
        width: Width in pixels.
        height: Height in pixels.
        source: A short description of where the image came from (for messages and traces).
    """

    image: Image.Image
    digest: str
    width: int
    height: int
    source: str = "<image>"
    _array: list[np.ndarray] = field(default_factory=list, repr=False)

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels."""
        return (self.width, self.height)

    def array(self) -> np.ndarray:
        """The pixels as a read-only ``(H, W, 3)`` uint8 array (computed once)."""
        if not self._array:
            arr = np.asarray(self.image, dtype=np.uint8)
            arr.setflags(write=False)
            self._array.append(arr)
        return self._array[0]


def prepare_image(image: ImageInput, *, source: str | None = None, max_pixels: int | None = None) -> ImageHandle:
    """Decode, orient and convert an image once.

    Args:
        image: A file path, encoded bytes, a ``PIL.Image`` in any mode, a numpy array
            (``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``; uint8, or uint16 which is
            scaled to 8 bits), or an existing :class:`ImageHandle` (returned as is, unchecked).
        source: Optional description used in error messages and traces.
        max_pixels: Largest ``width * height`` accepted; ``None`` means :data:`DEFAULT_MAX_PIXELS`
            (read at each call). Encoded images are checked from their header, before decoding.
            Above PIL's own guard (``PIL.Image.MAX_IMAGE_PIXELS``, refused past twice that) PIL's
            limit has to be raised too.

    Returns:
        The prepared :class:`ImageHandle`.

    Raises:
        ValueError: If the image cannot be read, is empty, has zero size, more pixels than
            allowed or an unsupported layout; the message names the problem and the fix.
    """
    if isinstance(image, ImageHandle):
        return image
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    if limit <= 0:
        raise ValueError(f"max_pixels must be positive, got {limit}")
    if isinstance(image, (str, os.PathLike)):
        pil, desc = _open_path(Path(image), source or str(image), limit), source or str(image)
    elif isinstance(image, (bytes, bytearray, memoryview)):
        desc = source or "<bytes>"
        pil = _open_bytes(bytes(image), desc, limit)
    elif isinstance(image, Image.Image):
        pil, desc = image, source or "<PIL image>"
        _check_pixels(pil.size, desc, limit)
    elif isinstance(image, np.ndarray):
        desc = source or "<numpy array>"
        if image.ndim >= 2:
            _check_pixels((image.shape[1], image.shape[0]), desc, limit)
        pil = _from_array(image)
    else:
        raise ValueError(
            f"unsupported image type {type(image).__name__}; pass a file path, encoded bytes, "
            "a PIL.Image or a uint8 numpy array of shape (H, W), (H, W, 3) or (H, W, 4)"
        )
    rgb = to_rgb(pil, desc)
    width, height = rgb.size
    if width == 0 or height == 0:
        raise ValueError(f"image {desc} has zero size ({width}x{height}); pass a non-empty image")
    hasher = hashlib.blake2b(digest_size=20)
    hasher.update(f"{width}x{height}:".encode())
    hasher.update(rgb.tobytes())
    return ImageHandle(image=rgb, digest=hasher.hexdigest(), width=width, height=height, source=desc)


def to_rgb(pil: Image.Image, desc: str = "<image>") -> Image.Image:
    """Apply EXIF orientation and convert any PIL mode to 8-bit RGB.

    High-bit-depth grey modes are scaled to 8 bits rather than clipped (16-bit values are divided
    by 257; 32-bit integer and float images are scaled by their maximum when it exceeds the 8-bit
    range, float images in ``[0, 1]`` are multiplied by 255). Transparent images are composited
    over white.
    """
    try:
        pil.load()
        pil = ImageOps.exif_transpose(pil) or pil
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot decode image {desc}: {e}; check that the file is a complete image") from e
    if pil.width == 0 or pil.height == 0:
        raise ValueError(f"image {desc} has zero size ({pil.width}x{pil.height}); pass a non-empty image")
    mode = pil.mode
    if mode == "RGB":
        return pil
    if mode in _HIGH_DEPTH_MODES:
        return Image.fromarray(_scale_to_uint8(np.asarray(pil)), mode="L").convert("RGB")
    if mode == "P" and "transparency" in pil.info:
        pil, mode = pil.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = pil.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return pil.convert("RGB")
    except (ValueError, OSError) as e:
        raise ValueError(f"cannot convert image {desc} of mode {mode!r} to RGB: {e}") from e


def _scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16 or arr.dtype.str.endswith("u2") or arr.dtype.str.endswith("i2"):
        return (arr.astype(np.float64) / 257.0).round().clip(0, 255).astype(np.uint8)
    data = arr.astype(np.float64)
    finite = data[np.isfinite(data)]
    top = float(finite.max()) if finite.size else 0.0
    if np.issubdtype(arr.dtype, np.floating) and top <= 1.0:
        data = data * 255.0
    elif top > 255.0:
        data = data * (255.0 / top)
    return np.nan_to_num(data, nan=0.0).round().clip(0, 255).astype(np.uint8)


def _check_pixels(size: tuple[int, int], desc: str, limit: int) -> None:
    """Refuse an image of ``size = (width, height)`` with more than ``limit`` pixels."""
    width, height = size
    if width * height > limit:
        raise _too_many_pixels(desc, width * height, limit, f"{width}x{height} = ")


def _too_many_pixels(desc: str, pixels: int, limit: int, dims: str = "") -> ValueError:
    return ValueError(
        f"image {desc} is {dims}{pixels:,} pixels, over the limit of {limit:,} pixels (a guard against "
        "decompression bombs); downscale it, or raise the limit with prepare_image(..., max_pixels=N) or "
        "sam3core.image.DEFAULT_MAX_PIXELS = N"
    )


def _bomb(error: Image.DecompressionBombError, desc: str, limit: int) -> ValueError:
    """Our message for an image PIL's own decompression-bomb guard refused while reading its header."""
    found = _BOMB_PIXELS.search(str(error))
    if found is None:
        return ValueError(f"image {desc} has too many pixels ({error}); downscale it")
    pixels = int(found.group(1))
    if pixels > limit:
        return _too_many_pixels(desc, pixels, limit)
    return ValueError(
        f"image {desc} is {pixels:,} pixels: within max_pixels={limit:,}, but over PIL's own guard "
        f"(PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS}, refused past twice that); raise "
        "PIL.Image.MAX_IMAGE_PIXELS too, or downscale the image"
    )


def _open_path(path: Path, desc: str, limit: int) -> Image.Image:
    if not path.exists():
        raise ValueError(f"image file not found: {path}; check the path")
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not an image file")
    if path.stat().st_size == 0:
        raise ValueError(f"image file {path} is empty (0 bytes)")
    try:
        with Image.open(path) as im:
            _check_pixels(im.size, desc, limit)  # from the header: nothing decompressed yet
            im.load()
            return im.copy()
    except Image.DecompressionBombError as e:
        raise _bomb(e, desc, limit) from e
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"cannot read image file {path}: {e}; pass a JPEG, PNG, WebP, TIFF or BMP file") from e


def _open_bytes(data: bytes, desc: str, limit: int) -> Image.Image:
    if not data:
        raise ValueError(f"image {desc} is empty (0 bytes)")
    try:
        im = Image.open(io.BytesIO(data))
        _check_pixels(im.size, desc, limit)  # from the header: nothing decompressed yet
        im.load()
        return im
    except Image.DecompressionBombError as e:
        raise _bomb(e, desc, limit) from e
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"cannot decode image {desc}: {e}; pass encoded JPEG/PNG/WebP bytes") from e


def _from_array(arr: np.ndarray) -> Image.Image:
    if arr.size == 0 or 0 in arr.shape:
        raise ValueError(f"image array has zero size (shape {arr.shape}); pass a non-empty array")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ValueError(
            f"image array has shape {arr.shape}; expected (H, W), (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA"
        )
    if arr.dtype == np.uint16:
        arr = _scale_to_uint8(arr)
    elif arr.dtype != np.uint8:
        raise ValueError(
            f"image array has dtype {arr.dtype}; expected uint8 (0-255) — convert with "
            "(arr * 255).clip(0, 255).astype(np.uint8) for float images in [0, 1]"
        )
    arr = np.ascontiguousarray(arr)
    if arr.ndim == 2:
        return Image.fromarray(arr, mode="L")
    return Image.fromarray(arr, mode="RGB" if arr.shape[2] == 3 else "RGBA")


def png_bytes(image: Image.Image) -> bytes:
    """``image`` encoded as PNG (its mode kept)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(image: Image.Image, quality: int = 90) -> bytes:
    """``image`` converted to RGB and encoded as JPEG at ``quality`` (1-95)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def data_url(data: bytes, mime: str) -> str:
    """A ``data:<mime>;base64,...`` URL of encoded bytes, e.g. ``data_url(png_bytes(im), "image/png")``."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def decode_data_url(url: str) -> tuple[bytes, str]:
    """Bytes and mime type of a base64 ``data:`` URL (the inverse of :func:`data_url`).

    Raises:
        ValueError: The URL is not a base64 data URL, or its base64 is malformed.
    """
    header, sep, payload = url.partition(",")
    if not sep or not header.startswith("data:") or not header.endswith(";base64"):
        raise ValueError(f"not a base64 data URL: {url[:40]!r}")
    try:
        return base64.b64decode(payload, validate=True), header[5 : -len(";base64")]
    except binascii.Error as e:
        raise ValueError(f"bad base64 in data URL: {e}") from e
