"""Verification views of one mask: the mask drawn alone, and a zoomed pair of crops.

Every function here is pure: it returns a new image and never draws into the caller's array or
``PIL.Image``. Coordinates: ``x`` to the right, ``y`` down, in pixels of the original image;
masks are ``(H, W)`` bool at the original resolution; numpy images are RGB.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import supervision as sv
from PIL import Image

from sam3agent.render.marks import draw_masks, fill_and_outline
from sam3agent.render.masks import MaskCrop, mask_crops, to_rgb_array
from sam3agent.render.style import MASK_OPACITY, color

__all__ = ["render_single", "render_zoom_pair"]


def _check_index(index: int, n: int) -> None:
    if not 0 <= index < n:
        raise IndexError(f"mask index {index} out of range for {n} detections")


def render_single(
    image: np.ndarray | Image.Image,
    detections: sv.Detections,
    index: int,
    *,
    label: int | None = None,
    opacity: float = MASK_OPACITY,
) -> Image.Image:
    """Only mask ``index`` drawn (fill, outline, number), in the colour it has in ``render_marks``.

    Pixels outside that mask and its label box are the raw image's.

    Args:
        image: ``(H, W, 3)`` uint8 RGB array (or any layout ``render_marks`` takes) or a
            ``PIL.Image``; never modified.
        detections: ``N`` detections with ``(N, H, W)`` masks.
        index: 0-based detection to draw.
        label: The number shown (default ``index + 1``).
        opacity: Weight of the mask colour in filled pixels.

    Returns:
        A new RGB ``PIL.Image`` of size ``(W, H)``.

    Raises:
        IndexError: If ``index`` is not in ``[0, N)``.
    """
    _check_index(index, len(detections))
    text = str(index + 1 if label is None else int(label))
    canvas = to_rgb_array(image)
    crops = mask_crops(detections[index : index + 1], canvas.shape[0], canvas.shape[1])
    return draw_masks(canvas, crops, [index], [text], opacity)


def _span(lo: float, hi: float, length: float, limit: int) -> tuple[int, int]:
    """Integer ``[a, b)`` of size ``length`` centred on ``[lo, hi)``, shifted into ``[0, limit)``."""
    length = min(max(length, hi - lo), limit)
    start = (lo + hi - length) / 2
    start = min(max(start, 0.0), limit - length)
    a = max(0, math.floor(start))
    b = min(limit, math.ceil(start + length))
    return a, b


def _zoom_window(
    crop: MaskCrop, context: float, min_side: int, max_aspect: float, height: int, width: int
) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` (exclusive ends) of the zoom crop around a non-empty mask crop.

    The mask's box grown by ``context`` of its size on each side, widened to an aspect of at most
    ``max_aspect`` and sides of at least ``min_side / 4``, then shifted and clipped into the image.
    """
    bw, bh = crop.mask.shape[1], crop.mask.shape[0]
    rw, rh = bw * (1 + 2 * context), bh * (1 + 2 * context)
    rw, rh = max(rw, rh / max_aspect, min_side / 4), max(rh, rw / max_aspect, min_side / 4)
    xa, xb = _span(crop.x0 - bw * context, crop.x1 + bw * context, rw, width)
    ya, yb = _span(crop.y0 - bh * context, crop.y1 + bh * context, rh, height)
    return xa, ya, xb, yb


def _scaled_pair(region: np.ndarray, mask: np.ndarray, min_side: int, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    """The crop and its mask scaled to the panel size.

    Args:
        region: ``(h, w, 3)`` uint8 RGB crop.
        mask: ``(h, w)`` uint8 0/1 mask of the crop.
        min_side: The scaled short side is at least this (small crops are upscaled) ...
        max_side: ... and the long side at most this; ``max_side`` wins.

    Returns:
        ``(region, mask)`` scaled alike (the mask nearest-neighbour, so it stays 0/1); the inputs
        themselves when no scaling is needed.
    """
    scale = max(1.0, min_side / min(region.shape[:2]))
    scale = min(scale, max_side / max(region.shape[:2]))
    out_w = max(1, round(region.shape[1] * scale))
    out_h = max(1, round(region.shape[0] * scale))
    if (out_w, out_h) == (region.shape[1], region.shape[0]):
        return region, mask
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    region = cv2.resize(region, (out_w, out_h), interpolation=interp)
    mask = cv2.resize(mask, (out_w, out_h), interpolation=cv2.INTER_NEAREST)
    return region, mask


def _side_by_side(left: np.ndarray, right: np.ndarray, gap: int) -> np.ndarray:
    """Two ``(h, w, 3)`` RGB panels of one size on white, ``gap`` px apart: ``(h, 2 * w + gap, 3)``."""
    h, w = left.shape[:2]
    out = np.full((h, 2 * w + gap, 3), 255, np.uint8)
    out[:, :w] = left
    out[:, w + gap :] = right
    return out


def render_zoom_pair(
    image: np.ndarray | Image.Image,
    detections: sv.Detections,
    index: int,
    *,
    context: float = 0.3,
    min_side: int = 96,
    max_side: int = 768,
    gap: int | None = None,
    max_aspect: float = 2.0,
) -> Image.Image:
    """A zoomed view of one mask: the crop with the mask drawn (left) beside the bare crop (right).

    The crop is the mask's bounding box grown by ``context`` times its width/height on each side,
    widened so its aspect is at most ``max_aspect`` and each side at least ``min_side / 4`` source
    pixels (a tiny mask keeps some surroundings), shifted and clipped to stay in the image. It is
    then scaled so its shorter side is at least ``min_side`` (small crops are upscaled) and its
    longer side at most ``max_side`` (``max_side`` wins). The mask is drawn after scaling, so the
    left panel differs from the right one exactly on the (resized) mask pixels.

    Args:
        image: As in :func:`render_single`; never modified.
        detections: ``N`` detections with ``(N, H, W)`` masks.
        index: 0-based detection to show.
        context: Margin around the box, as a fraction of the box size, on each side.
        min_side: Minimum output size of the crop's shorter side in pixels.
        max_side: Maximum output size of the crop's longer side in pixels.
        gap: White gap between the two panels in pixels (default ``max(4, 2% of a panel width)``).
        max_aspect: Largest allowed long/short side ratio of the crop.

    Returns:
        A new RGB ``PIL.Image`` of size ``(2 * w + gap, h)`` where ``(w, h)`` is the panel size.

    Raises:
        IndexError: If ``index`` is not in ``[0, N)``.
        ValueError: If that mask is empty or the sizes are invalid.
    """
    _check_index(index, len(detections))
    if min_side < 1 or max_side < min_side or context < 0 or max_aspect < 1:
        raise ValueError("need min_side >= 1, max_side >= min_side, context >= 0, max_aspect >= 1")
    rgb = to_rgb_array(image)
    height, width = rgb.shape[:2]
    crop = mask_crops(detections[index : index + 1], height, width)[0]
    if crop.mask.size == 0:
        raise ValueError(f"mask {index} is empty; nothing to zoom into")
    xa, ya, xb, yb = _zoom_window(crop, context, min_side, max_aspect, height, width)
    region = sv.crop_image(rgb, (xa, ya, xb, yb))  # xyxy with exclusive x_max / y_max
    mask = np.zeros((yb - ya, xb - xa), np.uint8)
    mask[crop.y0 - ya : crop.y1 - ya, crop.x0 - xa : crop.x1 - xa] = crop.mask
    region, mask = _scaled_pair(region, mask, min_side, max_side)
    out_h, out_w = mask.shape
    part = mask.astype(bool)
    left = region.copy()
    outline = max(1, round(max(out_w, out_h) / 256))
    fill_and_outline(left, MaskCrop(part, 0, 0), part, color(index), MASK_OPACITY, outline)
    gap_px = max(4, round(0.02 * out_w)) if gap is None else max(0, gap)
    return Image.fromarray(_side_by_side(left, region, gap_px))
