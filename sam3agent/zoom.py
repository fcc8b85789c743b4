"""The verifier's close-up of one mask: a wide context crop beside a tight zoom.

One picture, two panels, so a verification request stays at three images:

* the **context** panel: a crop of the original image around the mask, wide enough to show what
  the object is and where it sits, with the mask's bounding box drawn on it (the pixels
  themselves untouched, so colours can be judged);
* the **zoom** panel: a tighter crop with a light fill on the mask, so its outline can be checked
  against the object's edges.

The crop sizes grow with how much of the crop the mask fills, so that a large mask never fills
its panel edge to edge. The geometry (:func:`zoom_geometry`) is the one the SAM 3 Agent paper's
implementation uses, written here from its description: the mask's box grown by 20% (at least
16 px) per dimension; when the mask covers more than 25% of that, the zoom box grows by
``sqrt(share / 0.25)``, and the context box by ``sqrt(share / 0.05)`` above 5%; each box is
centred on the mask's box and shifted (never shrunk) to stay inside the image. Panels sit side by
side when the context crop is taller than wide, else one above the other.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from PIL import Image

from sam3core.postprocess import mask_boxes_continuous

Box = tuple[float, float, float, float]  # (x, y, w, h) in pixels, continuous

_ZOOM_SHARE = 0.25
_CONTEXT_SHARE = 0.05
ZOOM_FILL_OPACITY = 0.3
"""Weight of the mask colour in the zoom panel's fill (light: the object stays visible)."""


def _start(x: float, w: float, w_new: float, limit: float) -> float:
    """Left edge of a span of ``w_new`` centred on ``[x, x + w)``, shifted into ``[0, limit]``."""
    return min(max(x - (w_new - w) / 2, 0.0), limit - w_new)


def zoom_geometry(box_xywh: Box, mask_area: float, height: int, width: int) -> tuple[Box, Box]:
    """The zoom and context crop boxes of a mask.

    Args:
        box_xywh: The mask's bounding box ``(x, y, w, h)``, pixels, continuous (a mask covering
            columns 3..7 has ``x = 3, w = 5``, as COCO's ``toBbox`` gives it).
        mask_area: Mask pixel count.
        height: Image height in pixels.
        width: Image width in pixels.

    Returns:
        ``(zoom_xywh, context_xywh)``: float boxes inside ``[0, width] x [0, height]``.
    """
    x, y, bw, bh = (float(v) for v in box_xywh)
    w_new = min(bw + max(0.2 * bw, 16.0), float(width))
    h_new = min(bh + max(0.2 * bh, 16.0), float(height))
    share = mask_area / (w_new * h_new)

    def grown(threshold: float) -> Box:
        w_out, h_out = w_new, h_new
        if share > threshold:
            ratio = math.sqrt(share / threshold)
            w_out, h_out = min(w_new * ratio, float(width)), min(h_new * ratio, float(height))
        return (_start(x, bw, w_out, width), _start(y, bh, h_out, height), w_out, h_out)

    return grown(_ZOOM_SHARE), grown(_CONTEXT_SHARE)


def _int_box(box: Box, height: int, width: int) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` integer pixel window (exclusive ends, at least 1 px) covering ``box``."""
    x, y, w, h = box
    x0, y0 = max(0, math.floor(x)), max(0, math.floor(y))
    x1, y1 = min(width, max(x0 + 1, math.ceil(x + w))), min(height, max(y0 + 1, math.ceil(y + h)))
    return x0, y0, x1, y1


def _farthest_color(pixels: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """The palette colour farthest (RGB distance) from the mean colour of ``pixels``."""
    mean = pixels.reshape(-1, 3).astype(np.float32).mean(axis=0)
    return palette[int(np.argmax(((palette.astype(np.float32) - mean) ** 2).sum(axis=1)))]


def _scaled(panel: np.ndarray, scale: float, interp: int) -> np.ndarray:
    h, w = panel.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return panel if size == (w, h) else cv2.resize(panel, size, interpolation=interp)


def _fill_mask(zoom: np.ndarray, part: np.ndarray, color: np.ndarray) -> np.ndarray:
    """A copy of the zoom panel with a light fill on the mask and a 1 px opaque outline on its edge.

    Args:
        zoom: ``(h, w, 3)`` uint8 RGB panel.
        part: ``(h, w)`` uint8 0/1 mask in the panel.
        color: ``(3,)`` uint8 RGB fill and outline colour.
    """
    solid = np.empty_like(zoom)
    solid[:] = color
    tinted = cv2.addWeighted(zoom, 1.0 - ZOOM_FILL_OPACITY, solid, ZOOM_FILL_OPACITY, 0.0)
    inner = cv2.erode(part, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    cv2.copyTo(solid, cv2.subtract(part, inner), tinted)  # a 1 px outline on the mask's edge
    out = zoom.copy()
    cv2.copyTo(tinted, part, out)
    return out


def _join(first: np.ndarray, second: np.ndarray, side_by_side: bool, gap: int) -> np.ndarray:
    """The two RGB panels on white, ``first`` left of (or above) ``second``, ``gap`` px apart."""
    axis = 0 if side_by_side else 1  # the panels share their height (side by side) or width
    shape = list(first.shape)
    shape[axis] = max(first.shape[axis], second.shape[axis])
    shape[1 - axis] = first.shape[1 - axis] + gap + second.shape[1 - axis]
    out = np.full(shape, 255, np.uint8)
    out[: first.shape[0], : first.shape[1]] = first
    if side_by_side:
        out[: second.shape[0], first.shape[1] + gap :] = second
    else:
        out[first.shape[0] + gap :, : second.shape[1]] = second
    return out


def render_zoom_context(
    image: np.ndarray,
    mask: np.ndarray,
    palette: np.ndarray,
    *,
    panel_side: int = 640,
    gap: int = 8,
) -> Image.Image:
    """The two-panel close-up of one mask (see the module docstring).

    Args:
        image: ``(H, W, 3)`` uint8 RGB; never modified.
        mask: ``(H, W)`` bool, not empty.
        palette: ``(K, 3)`` uint8 RGB colours; the one farthest from the mask region's mean colour
            draws the box and the fill.
        panel_side: The panels' shared side (height side by side, width stacked) in pixels;
            small crops are upscaled, so a tiny object is still seen in detail. The other side is
            at most twice this.
        gap: White pixels between the panels.

    Returns:
        A new RGB ``PIL.Image``: context then zoom, side by side when the context crop is taller
        than wide, else stacked.

    Raises:
        ValueError: If the mask is empty or does not match the image.
    """
    height, width = image.shape[:2]
    if mask.shape != (height, width):
        raise ValueError(f"mask {mask.shape} does not match image {(height, width)}")
    area = int(np.count_nonzero(mask))
    if area == 0:
        raise ValueError("the mask is empty; nothing to zoom into")
    mx0, my0, mx1, my1 = (int(v) for v in mask_boxes_continuous(mask[None])[0])
    zoom_box, context_box = zoom_geometry((mx0, my0, mx1 - mx0, my1 - my0), float(area), height, width)
    color = _farthest_color(image[my0:my1, mx0:mx1], palette)
    cx0, cy0, cx1, cy1 = _int_box(context_box, height, width)
    zx0, zy0, zx1, zy1 = _int_box(zoom_box, height, width)
    side_by_side = (cx1 - cx0) < (cy1 - cy0)

    def scale_for(h: int, w: int) -> float:
        shared, other = (h, w) if side_by_side else (w, h)
        return min(panel_side / shared, 2 * panel_side / other)  # an extreme aspect stays bounded

    c_scale = scale_for(cy1 - cy0, cx1 - cx0)
    context = _scaled(image[cy0:cy1, cx0:cx1], c_scale, cv2.INTER_AREA if c_scale < 1 else cv2.INTER_LINEAR)
    context = context.copy()
    thickness = max(2, round(panel_side / 200))
    p0 = (round((mx0 - cx0) * c_scale), round((my0 - cy0) * c_scale))
    p1 = (round((mx1 - cx0) * c_scale) - 1, round((my1 - cy0) * c_scale) - 1)
    cv2.rectangle(context, p0, p1, color.tolist(), thickness)

    z_scale = scale_for(zy1 - zy0, zx1 - zx0)
    zoom = _scaled(image[zy0:zy1, zx0:zx1], z_scale, cv2.INTER_AREA if z_scale < 1 else cv2.INTER_LINEAR)
    part = _scaled(np.ascontiguousarray(mask[zy0:zy1, zx0:zx1]).view(np.uint8), z_scale, cv2.INTER_NEAREST)
    return Image.fromarray(_join(context, _fill_mask(zoom, part, color), side_by_side, gap))
