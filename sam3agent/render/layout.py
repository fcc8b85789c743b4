"""Where each mask's number goes in a Set-of-Marks render, computed without drawing anything.

A number is centred on the deepest point of the part of its mask left visible by the smaller
masks drawn over it, so it lies inside its own mask (unlike a centroid, also for rings, U and L
shapes and thin lines). Coordinates: ``(x, y)`` pixels, ``x`` to the right, ``y`` down.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import supervision as sv

from sam3agent.render.masks import MaskCrop, mask_crops, tighten
from sam3agent.render.style import FONT, Style, color

logger = logging.getLogger(__name__)

__all__ = ["MarkLabel", "check_labels", "draw_order", "label_anchor", "label_layout", "place_labels", "visible_parts"]

_ANCHOR_MAX_SIDE = 128  # label placement works on masks block-averaged down to about this size


@dataclass(frozen=True)
class MarkLabel:
    """Where the number of one mask is drawn.

    Attributes:
        index: 0-based position of the detection.
        text: The number as drawn.
        anchor: ``(x, y)`` pixel the label is centred on: the deepest point of the part of the
            mask left visible by smaller masks drawn over it. Always a mask pixel. For masks over
            128 px it is found on a block-averaged copy, so it may sit a few pixels from
            :func:`label_anchor`'s exact maximum.
        box: ``(x0, y0, x1, y1)`` of the opaque label box, ``x1``/``y1`` exclusive, shifted to
            stay inside the image.
        color: ``(r, g, b)`` of the mask fill, outline and label box.
    """

    index: int
    text: str
    anchor: tuple[int, int]
    box: tuple[int, int, int, int]
    color: tuple[int, int, int]


def check_labels(labels: Sequence[int] | None, n: int) -> list[str]:
    """The texts drawn for ``n`` detections: ``labels`` as strings, or ``"1".."n"`` by default.

    Raises:
        ValueError: If ``labels`` does not have ``n`` entries.
    """
    if labels is None:
        return [str(i + 1) for i in range(n)]
    if len(labels) != n:
        raise ValueError(f"got {len(labels)} labels for {n} detections")
    return [str(int(v)) for v in labels]


def _deepest_point(mask: np.ndarray) -> tuple[int, int]:
    """``(x, y)`` in ``mask`` (2-D bool, non-empty) farthest from any background pixel or border.

    The mask is zero-padded by one pixel so the array border counts as outside. Exact ties (a
    plateau, e.g. along the middle of a bar) go to the tied pixel nearest the mask's centroid,
    then to the first in row-major order, so the result is deterministic and central.
    """
    mask_u8 = mask.view(np.uint8)
    padded = cv2.copyMakeBorder(mask_u8, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    _, dmax, _, loc = cv2.minMaxLoc(dist)
    ties = dist >= dmax - 1e-4
    if cv2.countNonZero(ties.view(np.uint8)) == 1:
        return int(loc[0]), int(loc[1])
    ys, xs = np.nonzero(ties)
    moments = cv2.moments(mask_u8, binaryImage=True)
    cx, cy = moments["m10"] / moments["m00"], moments["m01"] / moments["m00"]
    k = int(np.argmin((xs - cx) ** 2 + (ys - cy) ** 2))
    return int(xs[k]), int(ys[k])


def _label_point(mask: np.ndarray) -> tuple[int, int]:
    """Like :func:`_deepest_point`, on a block-averaged copy when the mask is larger than ~128 px.

    The distance transform is the bulk of a render's cost; a label box is ~30 px, so placing it
    to within one block is as good. The block with the deepest majority-covered low-resolution
    pixel is found, then its mask pixel nearest the block centre (always inside the mask).
    """
    h, w = mask.shape
    k = math.ceil(max(h, w) / _ANCHOR_MAX_SIDE)
    if k <= 1:
        return _deepest_point(mask)
    sh, sw = math.ceil(h / k), math.ceil(w / k)
    padded = cv2.copyMakeBorder(mask.view(np.uint8), 0, sh * k - h, 0, sw * k - w, cv2.BORDER_CONSTANT, value=0)
    small = cv2.resize(padded, (sw, sh), interpolation=cv2.INTER_AREA)  # 0/1 majority per block
    if cv2.countNonZero(small) == 0:  # only thin structures: no block is mostly mask
        return _deepest_point(mask)
    bx, by = _deepest_point(small.view(bool))
    block = mask[by * k : (by + 1) * k, bx * k : (bx + 1) * k]
    ys, xs = np.nonzero(block)
    centre = (k - 1) / 2
    j = int(np.argmin((xs - centre) ** 2 + (ys - centre) ** 2))
    return bx * k + int(xs[j]), by * k + int(ys[j])


def label_anchor(mask: np.ndarray) -> tuple[int, int]:
    """The pixel deepest inside a mask: where its number goes.

    Unlike the centroid (``sv.Position.CENTER_OF_MASS``), this point always lies inside the mask,
    also for rings, U and L shapes, thin lines and single pixels.

    Args:
        mask: ``(H, W)`` bool (or 0/1) mask.

    Returns:
        ``(x, y)`` of the mask pixel with the largest Euclidean distance to the nearest
        background pixel, the image border counting as background. Ties go to the tied pixel
        nearest the mask centroid, then the first in row-major order.

    Raises:
        ValueError: If ``mask`` is not 2-D or has no True pixel.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    if mask.dtype != bool:
        mask = mask != 0
    crop = tighten(MaskCrop(np.ascontiguousarray(mask), 0, 0))
    if crop.mask.size == 0:
        raise ValueError("label_anchor needs a non-empty mask")
    x, y = _deepest_point(crop.mask)
    return crop.x0 + x, crop.y0 + y


def draw_order(crops: Sequence[MaskCrop]) -> list[int]:
    """Indices by decreasing area (ties by index), so smaller masks are drawn on top of larger ones."""
    areas = [int(np.count_nonzero(c.mask)) for c in crops]
    return sorted(range(len(crops)), key=lambda i: (-areas[i], i))


def visible_parts(crops: Sequence[MaskCrop], order: Sequence[int]) -> dict[int, np.ndarray]:
    """For each mask, its pixels not covered by a mask drawn later (same crop geometry).

    The visible parts are disjoint, so every pixel is blended once, and each label lands on the
    region that actually shows its colour.
    """
    visible: dict[int, np.ndarray] = {}
    for pos, i in enumerate(order):
        ci = crops[i]
        vis = ci.mask
        for j in order[pos + 1 :]:
            cj = crops[j]
            ox0, oy0 = max(ci.x0, cj.x0), max(ci.y0, cj.y0)
            ox1, oy1 = min(ci.x1, cj.x1), min(ci.y1, cj.y1)
            if ox0 >= ox1 or oy0 >= oy1:
                continue
            if vis is ci.mask:
                vis = ci.mask.copy()
            vis[oy0 - ci.y0 : oy1 - ci.y0, ox0 - ci.x0 : ox1 - ci.x0] &= ~cj.mask[
                oy0 - cj.y0 : oy1 - cj.y0, ox0 - cj.x0 : ox1 - cj.x0
            ]
        visible[i] = vis
    return visible


def _label_box(anchor: tuple[int, int], text: str, style: Style, height: int, width: int) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` (exclusive) of a label box centred on ``anchor``, kept inside the image."""
    (tw, th), _ = cv2.getTextSize(text, FONT, style.font_scale, style.text_thickness)
    bw, bh = min(tw + 2 * style.pad, width), min(th + 2 * style.pad, height)
    x0 = min(max(anchor[0] - bw // 2, 0), width - bw)
    y0 = min(max(anchor[1] - bh // 2, 0), height - bh)
    return x0, y0, x0 + bw, y0 + bh


def place_labels(
    crops: Sequence[MaskCrop],
    visible: dict[int, np.ndarray],
    order: Sequence[int],
    texts: Sequence[str],
    color_ids: Sequence[int],
    style: Style,
    height: int,
    width: int,
) -> list[MarkLabel]:
    """Label boxes of the crops in drawing ``order``; masks with no pixels get no label.

    Args:
        crops: The masks' crops.
        visible: Per crop index, its ``(h, w)`` bool visible part (see :func:`visible_parts`).
        order: Crop indices in drawing order (see :func:`draw_order`).
        texts: Per crop index, the text drawn.
        color_ids: Per crop index, the detection index whose palette colour it gets.
        style: Text sizes.
        height: Image height in pixels.
        width: Image width in pixels.
    """
    marks = []
    for i in order:
        crop = crops[i]
        if crop.mask.size == 0:
            logger.warning("mask %d is empty; it is drawn without a label", i)
            continue
        part = visible[i] if visible[i].any() else crop.mask  # fully covered: use the whole mask
        x, y = _label_point(part)
        anchor = (crop.x0 + x, crop.y0 + y)
        r, g, b = (int(v) for v in color(color_ids[i]))
        box = _label_box(anchor, texts[i], style, height, width)
        marks.append(MarkLabel(i, texts[i], anchor, box, (r, g, b)))
    return marks


def label_layout(
    detections: sv.Detections, height: int, width: int, *, labels: Sequence[int] | None = None
) -> list[MarkLabel]:
    """Where :func:`~sam3agent.render.render_marks` puts each number, without drawing anything.

    Args:
        detections: ``N`` detections with ``mask`` of shape ``(N, height, width)``.
        height: Image height in pixels.
        width: Image width in pixels.
        labels: The numbers to draw, one per detection (default ``1..N``).

    Returns:
        One :class:`MarkLabel` per non-empty mask, in drawing order (larger masks first).
    """
    crops = mask_crops(detections, height, width)
    order = draw_order(crops)
    visible = visible_parts(crops, order)
    texts = check_labels(labels, len(crops))
    style = Style.for_size(height, width)
    return place_labels(crops, visible, order, texts, range(len(crops)), style, height, width)
