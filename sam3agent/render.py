"""Pictures the MLLM (and the user) look at: Set-of-Marks renders, zoom pairs, mask PNGs, encoding.

Every function here is pure: it returns a new image and never draws into the caller's array or
``PIL.Image``. Coordinates follow the image convention used everywhere in sam3agent: ``x`` to the
right, ``y`` down, in pixels of the original image; masks are ``(H, W)`` bool at the original
resolution. Numpy images are taken as **RGB** (PIL's order, not OpenCV's BGR).

Masks are drawn on their bounding-box crops (never a per-mask full-image copy) so one Set-of-Marks
render of a 1024x1024 image with a handful of masks costs a few milliseconds.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import supervision as sv
from PIL import Image

from sam3agent.llm.base import ImagePart
from sam3agent.zoom import zoom_geometry

logger = logging.getLogger(__name__)

__all__ = [
    "MASK_OPACITY",
    "PALETTE",
    "PALETTE_RGB",
    "MarkLabel",
    "encode_image",
    "label_anchor",
    "label_layout",
    "mask_png",
    "render_marks",
    "render_overlay",
    "render_single",
    "render_zoom_pair",
    "zoom_geometry",
]

# 20 colours chosen to be far apart from each other (vivid ones first, pale ones last), so that
# neighbouring ids stay tellable apart both as a semi-transparent fill and as an opaque label box.
PALETTE: sv.ColorPalette = sv.ColorPalette.from_hex(
    [
        "#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231",
        "#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#fabed4",
        "#469990", "#dcbeff", "#9a6324", "#fffac8", "#800000",
        "#aaffc3", "#808000", "#ffd8b1", "#000075", "#a9a9a9",
    ]
)  # fmt: skip
PALETTE_RGB: np.ndarray = np.array([c.as_rgb() for c in PALETTE.colors], dtype=np.uint8)

MASK_OPACITY = 0.5
"""Weight of the mask colour in a filled pixel (the image keeps ``1 - MASK_OPACITY``)."""

_ANCHOR_MAX_SIDE = 128  # label placement works on masks block-averaged down to about this size
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_FONT_DIGIT_HEIGHT = cv2.getTextSize("0", _FONT, 1.0, 1)[0][1]  # px of a digit at fontScale 1


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


@dataclass(frozen=True)
class _Crop:
    """A mask cut to its bounding box: ``mask`` is ``(h, w)`` bool, placed at ``(x0, y0)``."""

    mask: np.ndarray
    x0: int
    y0: int

    @property
    def x1(self) -> int:
        return self.x0 + self.mask.shape[1]

    @property
    def y1(self) -> int:
        return self.y0 + self.mask.shape[0]


@dataclass(frozen=True)
class _Style:
    """Sizes that scale with the image so marks stay readable after downscaling to ~1 MP."""

    font_scale: float
    text_thickness: int
    pad: int
    outline: int

    @classmethod
    def for_size(cls, height: int, width: int) -> _Style:
        side = math.sqrt(height * width)  # ~1000 for the ~1 MP the LLM sees
        digit_px = max(11.0, 0.024 * side)
        return cls(
            font_scale=digit_px / _FONT_DIGIT_HEIGHT,
            text_thickness=max(1, round(digit_px / 10)),
            pad=max(2, round(0.3 * digit_px)),
            outline=max(1, round(0.0025 * side)),
        )


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


def _to_rgb_array(image: np.ndarray | Image.Image) -> np.ndarray:
    """A fresh, writable ``(H, W, 3)`` uint8 RGB copy of ``image`` (never a view of it)."""
    if isinstance(image, Image.Image):
        return np.array(image if image.mode == "RGB" else image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array or PIL.Image.Image, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"image array must be uint8 RGB, got dtype {image.dtype}; convert it first")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] in (1, 3, 4):
        if image.shape[2] == 1:
            return np.repeat(image, 3, axis=2)
        return np.array(image[:, :, :3], order="C")  # always a copy
    raise ValueError(f"image array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {image.shape}")


def _mask_crops(detections: sv.Detections, height: int, width: int) -> list[_Crop]:
    """Each detection's mask cut to the bounding box of its pixels (an empty mask gives a 0x0 crop).

    Dense ``(N, H, W)`` masks and ``sv.CompactMask`` are both accepted. ``xyxy`` is used only as a
    hint: a box is trusted when it holds every pixel of its mask, else the mask is scanned.
    """
    n = len(detections)
    if n == 0:
        return []
    masks = detections.mask
    if masks is None:
        raise ValueError("detections have no masks; rendering needs detections.mask of shape (N, H, W)")
    if isinstance(masks, sv.CompactMask):
        if tuple(masks.image_shape) != (height, width):
            raise ValueError(f"masks are for a {masks.image_shape} image, the image is {(height, width)}")
        crops = []
        for i in range(n):
            x0, y0 = (int(v) for v in masks.offsets[i])
            crops.append(_tighten(_Crop(masks.crop(i), x0, y0)))
        return crops
    if tuple(masks.shape) != (n, height, width):
        raise ValueError(f"masks have shape {tuple(masks.shape)}, expected {(n, height, width)}")
    crops = []
    for i in range(n):
        m = masks[i]
        m = np.ascontiguousarray(m if m.dtype == bool else m != 0)
        crops.append(_tighten(_hinted_crop(m, detections.xyxy[i])))
    return crops


def _hinted_crop(mask: np.ndarray, xyxy: np.ndarray) -> _Crop:
    """``mask`` cut to the (inclusive, rounded outward) box ``xyxy`` if no pixel lies outside it."""
    height, width = mask.shape
    if not np.all(np.isfinite(xyxy)):
        return _Crop(mask, 0, 0)
    x0, y0 = max(0, math.floor(xyxy[0])), max(0, math.floor(xyxy[1]))
    x1, y1 = min(width, math.ceil(xyxy[2]) + 1), min(height, math.ceil(xyxy[3]) + 1)
    if x0 < x1 and y0 < y1:
        window = mask[y0:y1, x0:x1]
        if cv2.countNonZero(window.view(np.uint8)) == cv2.countNonZero(mask.view(np.uint8)):
            return _Crop(window, x0, y0)
    return _Crop(mask, 0, 0)


def _tighten(crop: _Crop) -> _Crop:
    """The same mask cut to the bounding box of its True pixels."""
    x, y, w, h = cv2.boundingRect(crop.mask.view(np.uint8))  # uint8 input: bbox of non-zero pixels
    return _Crop(crop.mask[y : y + h, x : x + w], crop.x0 + x, crop.y0 + y)


def _check_labels(labels: Sequence[int] | None, n: int) -> list[str]:
    if labels is None:
        return [str(i + 1) for i in range(n)]
    if len(labels) != n:
        raise ValueError(f"got {len(labels)} labels for {n} detections")
    return [str(int(v)) for v in labels]


# ----------------------------------------------------------------------------------------------
# Label placement
# ----------------------------------------------------------------------------------------------


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
    crop = _tighten(_Crop(np.ascontiguousarray(mask), 0, 0))
    if crop.mask.size == 0:
        raise ValueError("label_anchor needs a non-empty mask")
    x, y = _deepest_point(crop.mask)
    return crop.x0 + x, crop.y0 + y


def _draw_order(crops: Sequence[_Crop]) -> list[int]:
    """Indices by decreasing area (ties by index), so smaller masks are drawn on top of larger ones."""
    areas = [int(np.count_nonzero(c.mask)) for c in crops]
    return sorted(range(len(crops)), key=lambda i: (-areas[i], i))


def _visible_parts(crops: Sequence[_Crop], order: Sequence[int]) -> dict[int, np.ndarray]:
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


def _label_box(anchor: tuple[int, int], text: str, style: _Style, height: int, width: int) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` (exclusive) of a label box centred on ``anchor``, kept inside the image."""
    (tw, th), _ = cv2.getTextSize(text, _FONT, style.font_scale, style.text_thickness)
    bw, bh = min(tw + 2 * style.pad, width), min(th + 2 * style.pad, height)
    x0 = min(max(anchor[0] - bw // 2, 0), width - bw)
    y0 = min(max(anchor[1] - bh // 2, 0), height - bh)
    return x0, y0, x0 + bw, y0 + bh


def _color(index: int) -> np.ndarray:
    return PALETTE_RGB[index % len(PALETTE_RGB)]


def _layout(
    crops: Sequence[_Crop],
    visible: dict[int, np.ndarray],
    order: Sequence[int],
    texts: Sequence[str],
    color_ids: Sequence[int],
    style: _Style,
    height: int,
    width: int,
) -> list[MarkLabel]:
    """Label boxes in drawing order; masks with no pixels get no label."""
    marks = []
    for i in order:
        crop = crops[i]
        if crop.mask.size == 0:
            logger.warning("mask %d is empty; it is drawn without a label", i)
            continue
        part = visible[i] if visible[i].any() else crop.mask  # fully covered: use the whole mask
        x, y = _label_point(part)
        anchor = (crop.x0 + x, crop.y0 + y)
        r, g, b = (int(v) for v in _color(color_ids[i]))
        box = _label_box(anchor, texts[i], style, height, width)
        marks.append(MarkLabel(i, texts[i], anchor, box, (r, g, b)))
    return marks


def label_layout(
    detections: sv.Detections, height: int, width: int, *, labels: Sequence[int] | None = None
) -> list[MarkLabel]:
    """Where :func:`render_marks` puts each number, without drawing anything.

    Args:
        detections: ``N`` detections with ``mask`` of shape ``(N, height, width)``.
        height: Image height in pixels.
        width: Image width in pixels.
        labels: The numbers to draw, one per detection (default ``1..N``).

    Returns:
        One :class:`MarkLabel` per non-empty mask, in drawing order (larger masks first).
    """
    crops = _mask_crops(detections, height, width)
    order = _draw_order(crops)
    visible = _visible_parts(crops, order)
    texts = _check_labels(labels, len(crops))
    style = _Style.for_size(height, width)
    return _layout(crops, visible, order, texts, range(len(crops)), style, height, width)


# ----------------------------------------------------------------------------------------------
# Drawing
# ----------------------------------------------------------------------------------------------


def _fill_and_outline(
    canvas: np.ndarray, crop: _Crop, part: np.ndarray, color: np.ndarray, opacity: float, outline: int
) -> None:
    """Blend ``color`` into ``canvas`` on ``part`` and paint its inner edge opaque (in place).

    ``part`` is a ``(h, w)`` bool array placed at ``(crop.x0, crop.y0)``. Everything drawn stays
    on ``part``'s pixels: the outline is the band of ``part`` within ``outline`` px of its edge, not
    a polyline straddling it. Works on the crop only, with OpenCV's masked copies (numpy's
    boolean-mask assignment is ~50x slower here).
    """
    part_u8 = part.view(np.uint8)
    if cv2.countNonZero(part_u8) == 0:
        return
    region = canvas[crop.y0 : crop.y1, crop.x0 : crop.x1]
    solid = np.empty_like(region)
    # A filled rectangle is ~30x faster than numpy's broadcast `solid[:] = color` here.
    cv2.rectangle(solid, (0, 0), (solid.shape[1] - 1, solid.shape[0] - 1), color.tolist(), cv2.FILLED)
    blended = cv2.addWeighted(region, 1.0 - opacity, solid, opacity, 0.0)
    if outline > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * outline + 1, 2 * outline + 1))
        inner = cv2.erode(part_u8, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
        cv2.copyTo(solid, cv2.subtract(part_u8, inner), blended)
    cv2.copyTo(blended, part_u8, region)  # writes through the view into canvas


def _draw_label(canvas: np.ndarray, mark: MarkLabel, style: _Style) -> None:
    """An opaque box in the mask colour with the number in black or white, whichever contrasts."""
    x0, y0, x1, y1 = mark.box
    r, g, b = mark.color
    ink = (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)
    cv2.rectangle(canvas, (x0, y0), (x1 - 1, y1 - 1), mark.color, thickness=cv2.FILLED)
    (tw, th), _ = cv2.getTextSize(mark.text, _FONT, style.font_scale, style.text_thickness)
    origin = (x0 + (x1 - x0 - tw) // 2, y0 + (y1 - y0 + th) // 2)  # bottom-left of the text
    cv2.putText(canvas, mark.text, origin, _FONT, style.font_scale, ink, style.text_thickness, cv2.LINE_AA)


def _render(
    canvas: np.ndarray, crops: Sequence[_Crop], ids: Sequence[int], texts: Sequence[str], opacity: float
) -> Image.Image:
    """Draw ``crops`` (detection ``ids[k]`` for crop ``k``) with fills, outlines and numbers on ``canvas``."""
    height, width = canvas.shape[:2]
    style = _Style.for_size(height, width)
    order = _draw_order(crops)
    visible = _visible_parts(crops, order)
    for k in order:
        _fill_and_outline(canvas, crops[k], visible[k], _color(ids[k]), opacity, style.outline)
    # Labels are placed by hand at the deepest visible point: sv.LabelAnnotator's CENTER_OF_MASS
    # can land outside a non-convex mask (a ring, a U, a person with spread arms), and then the
    # number points the MLLM at the wrong object.
    for mark in _layout(crops, visible, order, texts, ids, style, height, width):
        _draw_label(canvas, mark, style)
    return Image.fromarray(canvas)


def render_marks(
    image: np.ndarray | Image.Image,
    detections: sv.Detections,
    *,
    labels: Sequence[int] | None = None,
    opacity: float = MASK_OPACITY,
) -> Image.Image:
    """Set-of-Marks render: every mask filled, outlined and numbered on a copy of the image.

    Mask ``i`` gets palette colour ``i`` (by index, cycling after 20). Smaller masks are drawn on
    top of larger ones; each label box is centred on the deepest point of the part of its mask
    that stays visible, so the number's centre lies inside its mask. Text size and outline width
    scale with the image so they stay readable once the image is downscaled to ~1 MP.

    Args:
        image: ``(H, W, 3)`` uint8 RGB array (also ``(H, W)``, ``(H, W, 1)``, ``(H, W, 4)``) or a
            ``PIL.Image`` of any mode. Never modified.
        detections: ``N`` detections whose ``mask`` is ``(N, H, W)`` bool (or ``sv.CompactMask``)
            at the image's resolution.
        labels: The number shown for detection ``i`` (default ``i + 1``); length ``N``.
        opacity: Weight of the mask colour in filled pixels.

    Returns:
        A new RGB ``PIL.Image`` of size ``(W, H)``; a plain copy of the image when ``N == 0``.

    Raises:
        ValueError: If the masks do not match the image size or ``labels`` has the wrong length.
    """
    texts = _check_labels(labels, len(detections))
    canvas = _to_rgb_array(image)
    crops = _mask_crops(detections, canvas.shape[0], canvas.shape[1])
    return _render(canvas, crops, range(len(crops)), texts, opacity)


def render_single(
    image: np.ndarray | Image.Image,
    detections: sv.Detections,
    index: int,
    *,
    label: int | None = None,
    opacity: float = MASK_OPACITY,
) -> Image.Image:
    """Only mask ``index`` drawn (fill, outline, number), in the colour it has in :func:`render_marks`.

    Pixels outside that mask and its label box are the raw image's.

    Args:
        image: As in :func:`render_marks`; never modified.
        detections: ``N`` detections with ``(N, H, W)`` masks.
        index: 0-based detection to draw.
        label: The number shown (default ``index + 1``).
        opacity: Weight of the mask colour in filled pixels.

    Returns:
        A new RGB ``PIL.Image`` of size ``(W, H)``.

    Raises:
        IndexError: If ``index`` is not in ``[0, N)``.
    """
    n = len(detections)
    if not 0 <= index < n:
        raise IndexError(f"mask index {index} out of range for {n} detections")
    text = str(index + 1 if label is None else int(label))
    canvas = _to_rgb_array(image)
    crops = _mask_crops(detections[index : index + 1], canvas.shape[0], canvas.shape[1])
    return _render(canvas, crops, [index], [text], opacity)


def render_overlay(
    image: np.ndarray | Image.Image,
    detections: sv.Detections,
    *,
    labels: Sequence[int] | None = None,
) -> Image.Image:
    """The user-facing picture of a final answer: masks, outlines and numbers ``1..N``.

    Args:
        image: As in :func:`render_marks`; never modified.
        detections: The answer's detections with ``(N, H, W)`` masks.
        labels: Numbers to show (default ``1..N``).

    Returns:
        A new RGB ``PIL.Image`` of size ``(W, H)``.
    """
    return render_marks(image, detections, labels=labels)


# ----------------------------------------------------------------------------------------------
# Zoom pair
# ----------------------------------------------------------------------------------------------


def _span(lo: float, hi: float, length: float, limit: int) -> tuple[int, int]:
    """Integer ``[a, b)`` of size ``length`` centred on ``[lo, hi)``, shifted into ``[0, limit)``."""
    length = min(max(length, hi - lo), limit)
    start = (lo + hi - length) / 2
    start = min(max(start, 0.0), limit - length)
    a = max(0, math.floor(start))
    b = min(limit, math.ceil(start + length))
    return a, b


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
        image: As in :func:`render_marks`; never modified.
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
    n = len(detections)
    if not 0 <= index < n:
        raise IndexError(f"mask index {index} out of range for {n} detections")
    if min_side < 1 or max_side < min_side or context < 0 or max_aspect < 1:
        raise ValueError("need min_side >= 1, max_side >= min_side, context >= 0, max_aspect >= 1")
    rgb = _to_rgb_array(image)
    height, width = rgb.shape[:2]
    crop = _mask_crops(detections[index : index + 1], height, width)[0]
    if crop.mask.size == 0:
        raise ValueError(f"mask {index} is empty; nothing to zoom into")
    bw, bh = crop.mask.shape[1], crop.mask.shape[0]
    rw, rh = bw * (1 + 2 * context), bh * (1 + 2 * context)
    rw, rh = max(rw, rh / max_aspect, min_side / 4), max(rh, rw / max_aspect, min_side / 4)
    xa, xb = _span(crop.x0 - bw * context, crop.x1 + bw * context, rw, width)
    ya, yb = _span(crop.y0 - bh * context, crop.y1 + bh * context, rh, height)
    region = sv.crop_image(rgb, (xa, ya, xb, yb))  # xyxy with exclusive x_max / y_max
    mask = np.zeros((yb - ya, xb - xa), np.uint8)
    mask[crop.y0 - ya : crop.y1 - ya, crop.x0 - xa : crop.x1 - xa] = crop.mask
    scale = max(1.0, min_side / min(region.shape[:2]))
    scale = min(scale, max_side / max(region.shape[:2]))
    out_w = max(1, round(region.shape[1] * scale))
    out_h = max(1, round(region.shape[0] * scale))
    if (out_w, out_h) != (region.shape[1], region.shape[0]):
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        region = cv2.resize(region, (out_w, out_h), interpolation=interp)
        mask = cv2.resize(mask, (out_w, out_h), interpolation=cv2.INTER_NEAREST)
    part = mask.astype(bool)
    left = region.copy()
    outline = max(1, round(max(out_w, out_h) / 256))
    _fill_and_outline(left, _Crop(part, 0, 0), part, _color(index), MASK_OPACITY, outline)
    gap_px = max(4, round(0.02 * out_w)) if gap is None else max(0, gap)
    pair = np.full((out_h, 2 * out_w + gap_px, 3), 255, np.uint8)
    pair[:, :out_w] = left
    pair[:, out_w + gap_px :] = region
    return Image.fromarray(pair)


# ----------------------------------------------------------------------------------------------
# Mask PNG and encoding
# ----------------------------------------------------------------------------------------------


def mask_png(detections: sv.Detections, height: int, width: int) -> Image.Image:
    """An instance-id image of the detections.

    Args:
        detections: ``N`` detections with ``(N, height, width)`` masks, best first.
        height: Image height in pixels.
        width: Image width in pixels.

    Returns:
        A ``(width, height)`` ``PIL.Image``: 0 is background, ``i + 1`` marks detection ``i``. Where
        masks overlap the earlier detection keeps the pixel (detections are sorted by score, so the
        highest score wins). Mode ``"L"`` when ``N < 256``, else ``"I;16"``.

    Raises:
        ValueError: If the masks do not match ``(height, width)`` or ``N >= 65536``.
    """
    n = len(detections)
    if n >= 65536:
        raise ValueError(f"{n} detections do not fit a 16-bit id image")
    ids = np.zeros((height, width), np.uint8 if n < 256 else np.uint16)
    for i, crop in enumerate(_mask_crops(detections, height, width)):
        window = ids[crop.y0 : crop.y1, crop.x0 : crop.x1]
        window[crop.mask & (window == 0)] = i + 1
    return Image.fromarray(ids)


def _patch_multiples(length: float, patch: int) -> set[int]:
    """The multiples of ``patch`` just below and just above ``length`` (at least one patch)."""
    return {max(patch, math.floor(length / patch) * patch), max(patch, math.ceil(length / patch) * patch)}


def _fit_to_patches(width: int, height: int, patch: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Target ``(w, h)``: multiples of ``patch``, area in ``[min_pixels, max_pixels]``, aspect kept.

    The aspect-preserving scale is 1 when the area is already in budget, shrinks the area to
    ``max_pixels`` or grows it to ``min_pixels`` otherwise. Each side is then rounded down or up
    to a multiple of ``patch`` (so within one patch of the exact scaled size), choosing among the
    in-budget sizes (not larger than the scaled size when not upsampling, if one exists) the one
    with the truest aspect ratio.
    """
    area = width * height
    scale = min(1.0, math.sqrt(max_pixels / area))
    if area * scale * scale < min_pixels:
        scale = math.sqrt(min_pixels / area)
    exact_w, exact_h = width * scale, height * scale
    options = [
        (w, h)
        for w in _patch_multiples(exact_w, patch)
        for h in _patch_multiples(exact_h, patch)
        if min_pixels <= w * h <= max_pixels
    ]
    if scale <= 1.0:  # shrinking or as is: never upsample a side if avoidable
        no_upsample = [(w, h) for w, h in options if w <= max(patch, exact_w) and h <= max(patch, exact_h)]
        options = no_upsample or options
    if options:
        aspect = math.log(width / height)
        growing = scale > 1.0
        return min(options, key=lambda o: (abs(math.log(o[0] / o[1]) - aspect), o[0] * o[1] * (1 if growing else -1)))
    # Extreme aspect ratios: a side pinned at one patch pushes the area out of budget; keep the
    # short side and fit the long one.
    w = max(patch, math.floor(exact_w / patch) * patch)
    h = max(patch, math.floor(exact_h / patch) * patch)
    if w * h > max_pixels:
        if w >= h:
            w = max(patch, max_pixels // h // patch * patch)
        else:
            h = max(patch, max_pixels // w // patch * patch)
    return w, h


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

    Qwen2.5-VL spends one visual token per 28x28 pixels (Qwen3-VL: ``patch=32``); a server
    resizes anything that is not already on its grid. Sending the size it would pick keeps the
    token count known and the server from resampling again.

    Args:
        image: Any ``PIL.Image``; converted to RGB. Never modified.
        max_pixels: Largest allowed ``width * height`` of the result; ``None`` keeps the image at
            its size (no resizing at all: ``min_pixels`` and ``patch`` are ignored).
        min_pixels: Smallest allowed ``width * height`` of the result.
        patch: Both sides of the result are multiples of this.
        fmt: ``"jpeg"`` (or ``"jpg"``) or ``"png"``.
        quality: JPEG quality.
        label: Short description stored in the part (for traces).
        detail: OpenAI ``detail`` stored in the part (``None``: not sent).

    Returns:
        An :class:`~sam3agent.llm.base.ImagePart` with the encoded bytes and the encoded size.
        The aspect ratio is kept to within one patch per side; images already in budget are only
        shrunk to the next multiple of ``patch``; small ones are upsampled just enough to reach
        ``min_pixels``.

    Raises:
        ValueError: For an unknown ``fmt`` or an impossible budget.
    """
    kind = fmt.lower()
    if kind in ("jpeg", "jpg"):
        mime, pil_format = "image/jpeg", "JPEG"
    elif kind == "png":
        mime, pil_format = "image/png", "PNG"
    else:
        raise ValueError(f"fmt must be 'jpeg' or 'png', got {fmt!r}")
    if max_pixels is not None and (patch < 1 or max_pixels < patch * patch or min_pixels > max_pixels):
        raise ValueError(f"impossible budget: {patch=}, {min_pixels=}, {max_pixels=}")
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    width, height = rgb.size
    if width < 1 or height < 1:
        raise ValueError(f"cannot encode an empty image of size {rgb.size}")
    w, h = (width, height) if max_pixels is None else _fit_to_patches(width, height, patch, min_pixels, max_pixels)
    if (w, h) != (width, height):
        # cv2 resizes several times faster than PIL's resample filters; INTER_AREA (a box filter)
        # only where shrinking by 2x or more, where bilinear would alias.
        shrink = min(w / width, h / height)
        interp = cv2.INTER_AREA if shrink < 0.5 else cv2.INTER_LINEAR if shrink <= 1 else cv2.INTER_CUBIC
        rgb = Image.fromarray(cv2.resize(np.asarray(rgb), (w, h), interpolation=interp))
    buffer = io.BytesIO()
    if pil_format == "JPEG":
        rgb.save(buffer, format="JPEG", quality=quality)
    else:
        rgb.save(buffer, format="PNG", compress_level=1)  # level 1: ~5x faster than 6, ~20% larger
    return ImagePart(data=buffer.getvalue(), mime=mime, width=w, height=h, label=label, detail=detail)
