"""Images as the MLLM receives them: resized to its patch grid and pixel budget, then encoded.

Qwen2-VL-style processors (Qwen2-VL, Qwen2.5-VL: ``patch=28``; Qwen3-VL: ``patch=32``) resize
every image with ``smart_resize``: both sides to multiples of the patch, the area into
``[min_pixels, max_pixels]``, the aspect ratio kept. :func:`grid_size` calls that same function
(from transformers), so an image we send already has the size the server's processor picks:
the visual token count is known and the server does not resample it a second time.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image

from sam3agent.llm.base import ImagePart

__all__ = ["MAX_ASPECT", "encode_image", "grid_size"]

MAX_ASPECT = 200
"""Largest long/short side ratio ``smart_resize`` accepts (it raises above it)."""


def grid_size(width: int, height: int, *, patch: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """The ``(w, h)`` an image of ``width x height`` pixels is sent at.

    For an image with both sides at least ``patch`` and an aspect ratio of at most
    :data:`MAX_ASPECT`, this is Qwen2-VL's ``smart_resize``: each side rounded to the nearest
    multiple of ``patch`` when that area is in budget, else both sides scaled by one factor to
    ``max_pixels`` (rounded down) or ``min_pixels`` (rounded up). Two guards handle the shapes it
    handles badly:

    * a side under ``patch``: ``smart_resize`` would round it to zero patches and grow the image
      from its unrounded area, distorting the aspect; the image is sized as if scaled up (aspect
      kept) to a short side of one patch;
    * an aspect ratio over :data:`MAX_ASPECT` (``smart_resize`` raises): the image is sized as if
      its long side were :data:`MAX_ASPECT` times its short side, i.e. it is squeezed along its
      long side.

    Then the long side is cut, when needed, to an area of at most ``max_pixels`` and an aspect of
    at most :data:`MAX_ASPECT` (a short side pinned at one patch, or rounded down, can break
    either), and ``smart_resize`` is applied once more to that cut size, as the server will, so
    that a cut which left the area under ``min_pixels`` is grown back into budget. With budgets
    of the usual width (``max_pixels`` several times ``min_pixels``) the result is a size the
    processor keeps as it is; with very narrow ones ``smart_resize`` itself may have no such size.

    Args:
        width: Image width in pixels, at least 1.
        height: Image height in pixels, at least 1.
        patch: Both sides of the result are multiples of this (``patch_size * merge_size``).
        min_pixels: Smallest wanted ``w * h``.
        max_pixels: Largest allowed ``w * h``, at least ``patch * patch``.

    Returns:
        ``(w, h)``: multiples of ``patch``, each at least ``patch``.
    """
    # Imported here: the module loads torch and torchvision, which `import sam3agent` must not.
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    w, h = _stand_in(width, height, patch)
    for _ in range(2):  # the second pass is a no-op unless the first one had to cut the long side
        h, w = smart_resize(h, w, factor=patch, min_pixels=min_pixels, max_pixels=max_pixels)
        w, h = _accepted(w, h, patch, max_pixels)
    return w, h


def _stand_in(width: int, height: int, patch: int) -> tuple[int, int]:
    """The ``(w, h)`` handed to ``smart_resize``: the image's own, or its guarded stand-in."""
    long, short = max(width, height), min(width, height)
    long = min(long, MAX_ASPECT * short)
    if short < patch:
        # long * patch / short <= MAX_ASPECT * patch, an integer, so rounding keeps the aspect cap
        long, short = round(long * patch / short), patch
    return (long, short) if width >= height else (short, long)


def _accepted(w: int, h: int, patch: int, max_pixels: int) -> tuple[int, int]:
    """``(w, h)`` (multiples of ``patch``) with the long side cut to the aspect and area limits."""
    long, short = max(w, h), min(w, h)
    long = min(long, MAX_ASPECT * short, max(patch, max_pixels // short // patch * patch))
    return (long, short) if w >= h else (short, long)


def _image_format(fmt: str) -> tuple[str, str]:
    """``(mime, PIL format name)`` of ``"jpeg"``/``"jpg"``/``"png"`` (any case)."""
    kind = fmt.lower()
    if kind in ("jpeg", "jpg"):
        return "image/jpeg", "JPEG"
    if kind == "png":
        return "image/png", "PNG"
    raise ValueError(f"fmt must be 'jpeg' or 'png', got {fmt!r}")


def _resized(rgb: Image.Image, w: int, h: int) -> Image.Image:
    """``rgb`` (an RGB image) at ``(w, h)``; itself when it already has that size."""
    width, height = rgb.size
    if (w, h) == (width, height):
        return rgb
    # cv2 resizes several times faster than PIL's resample filters; INTER_AREA (a box filter)
    # only where shrinking by 2x or more, where bilinear would alias.
    shrink = min(w / width, h / height)
    interp = cv2.INTER_AREA if shrink < 0.5 else cv2.INTER_LINEAR if shrink <= 1 else cv2.INTER_CUBIC
    return Image.fromarray(cv2.resize(np.asarray(rgb), (w, h), interpolation=interp))


def encode_image(
    image: Image.Image,
    *,
    max_pixels: int | None = 1280 * 28 * 28,
    min_pixels: int = 256 * 28 * 28,
    patch: int = 28,
    fmt: str = "jpeg",
    quality: int = 90,
    label: str = "",
    detail: str | None = None,
) -> ImagePart:
    """Resize an image to an MLLM's patch grid and pixel budget, and encode it.

    Qwen2.5-VL spends one visual token per 28x28 pixels (Qwen3-VL: ``patch=32``); its processor
    resizes every image to the size :func:`grid_size` gives, so sending that size keeps the token
    count known and the server from resampling again.

    Args:
        image: Any ``PIL.Image``; converted to RGB. Never modified.
        max_pixels: Largest allowed ``width * height`` of the result; ``None`` keeps the image at
            its size (no resizing at all: ``min_pixels`` and ``patch`` are ignored).
        min_pixels: Smallest wanted ``width * height`` of the result.
        patch: Both sides of the result are multiples of this.
        fmt: ``"jpeg"`` (or ``"jpg"``) or ``"png"``.
        quality: JPEG quality.
        label: Short description stored in the part (for traces).
        detail: OpenAI ``detail`` stored in the part (``None``: not sent).

    Returns:
        An :class:`~sam3agent.llm.base.ImagePart` with the encoded bytes and the encoded size
        ``(width, height)``. Sides are rounded to the nearest multiple of ``patch`` when that is
        in budget (so a side may grow by up to half a patch), else scaled down to ``max_pixels``
        or up to ``min_pixels``, the aspect ratio kept to within about one patch per side.

    Raises:
        ValueError: For an unknown ``fmt``, an impossible budget or an empty image.
    """
    mime, pil_format = _image_format(fmt)
    if max_pixels is not None and (patch < 1 or max_pixels < patch * patch or min_pixels > max_pixels):
        raise ValueError(f"impossible budget: {patch=}, {min_pixels=}, {max_pixels=}")
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    width, height = rgb.size
    if width < 1 or height < 1:
        raise ValueError(f"cannot encode an empty image of size {rgb.size}")
    if max_pixels is not None:
        w, h = grid_size(width, height, patch=patch, min_pixels=min_pixels, max_pixels=max_pixels)
        rgb = _resized(rgb, w, h)
    buffer = io.BytesIO()
    if pil_format == "JPEG":
        rgb.save(buffer, format="JPEG", quality=quality)
    else:
        rgb.save(buffer, format="PNG", compress_level=1)  # level 1: ~5x faster than 6, ~20% larger
    return ImagePart(data=buffer.getvalue(), mime=mime, width=rgb.width, height=rgb.height, label=label,
                     detail=detail)
