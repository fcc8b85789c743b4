"""Side-by-side pictures for ``--save-overlays``: ground truth (left) beside the prediction (right).

Pure functions returning new images; the caller writes them. Masks are ``(H, W)`` in pixels of
the oriented image, boxes COCO ``[x, y, w, h]`` in the same pixels (origin top-left). The drawing
is supervision's: masks are blended in with ``sv.MaskAnnotator`` (at :data:`OPACITY`), boxes
outlined with ``sv.BoxAnnotator`` and scores written with ``sv.LabelAnnotator``, each colour chosen
by the detection's ``class_id`` from :data:`PALETTE`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import supervision as sv
from PIL import Image

GT_COLOR = (40, 200, 80)
"""RGB of ground-truth masks and boxes."""
PRED_COLOR = (230, 50, 50)
"""RGB of predicted masks and boxes (and the background of their score labels)."""
IGNORE_COLOR = (150, 150, 150)
"""RGB of ignored pixels (ReasonSeg) and crowd boxes (OmniLabel)."""
GAP = 6
"""Width in pixels of the white gap between the two pictures."""
OPACITY = 0.5
"""Weight of a mask's colour in the blend: ``out = OPACITY * color + (1 - OPACITY) * image``."""

_GT, _IGNORE, _PRED = 0, 1, 2
PALETTE = sv.ColorPalette([sv.Color(*GT_COLOR), sv.Color(*IGNORE_COLOR), sv.Color(*PRED_COLOR)])
"""Colours by ``class_id``: 0 ground truth, 1 ignore / crowd, 2 prediction."""


def _to_bgr(image: Image.Image) -> np.ndarray:
    """A writable ``(H, W, 3)`` uint8 BGR copy, the order supervision's annotators draw in."""
    return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])


def _to_pil(bgr: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1]))


def side_by_side(left: Image.Image, right: Image.Image) -> Image.Image:
    """Two images next to each other with a white gap (the taller one sets the height)."""
    canvas = Image.new("RGB", (left.width + GAP + right.width, max(left.height, right.height)), (255, 255, 255))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width + GAP, 0))
    return canvas


# ----------------------------------------------------------------------------- masks


def _mask_detections(masks: Sequence[np.ndarray], class_ids: Sequence[int]) -> sv.Detections:
    """The non-empty ``(H, W)`` masks as detections of the given classes, each boxed tightly.

    The boxes matter: ``sv.MaskAnnotator`` blends only inside the detections' ``xyxy``.
    """
    kept = [(np.asarray(m, bool), c) for m, c in zip(masks, class_ids, strict=True) if np.any(m)]
    if not kept:
        return sv.Detections.empty()
    stack = np.stack([m for m, _ in kept])
    return sv.Detections(xyxy=sv.mask_to_xyxy(stack).astype(np.float32), mask=stack,
                         class_id=np.asarray([c for _, c in kept], dtype=int))


def _blend_masks(image: Image.Image, detections: sv.Detections) -> Image.Image:
    scene = _to_bgr(image)
    if len(detections):
        annotator = sv.MaskAnnotator(color=PALETTE, opacity=OPACITY, color_lookup=sv.ColorLookup.CLASS)
        scene = annotator.annotate(scene, detections)
    return _to_pil(scene)


def mask_comparison(image: Image.Image, gt: np.ndarray, pred: np.ndarray, ignore_value: int = 255) -> Image.Image:
    """Ground truth (green, ignore pixels grey) beside the predicted mask (red).

    Args:
        image: The RGB image, ``W x H`` pixels.
        gt: ``(H, W)`` uint8 ground truth: 0 background, 1 target, ``ignore_value`` ignored.
        pred: ``(H, W)`` prediction, non-zero = foreground.

    Returns:
        An RGB image ``(2 W + GAP) x H``: each marked pixel is ``OPACITY`` of its colour blended
        with the image, the rest is the image unchanged.
    """
    gt = np.asarray(gt)
    left = _blend_masks(image, _mask_detections([gt == 1, gt == ignore_value], [_GT, _IGNORE]))
    right = _blend_masks(image, _mask_detections([np.asarray(pred, bool)], [_PRED]))
    return side_by_side(left, right)


# ----------------------------------------------------------------------------- boxes


def _box_detections(boxes: Sequence[Sequence[float]], class_id: int) -> sv.Detections:
    """COCO ``[x, y, w, h]`` boxes as detections of one class, corners ``(x, y, x + w - 1, y + h - 1)``.

    ``sv.xywh_to_xyxy`` would give ``x + w``, the edge after the box; the annotators draw the
    corners as inclusive pixels (``cv2.rectangle``), so the outline is put on the last pixel a
    ``w``-pixel-wide box covers instead.
    """
    if len(boxes) == 0:
        return sv.Detections.empty()
    x, y, w, h = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).T
    return sv.Detections(xyxy=np.stack([x, y, x + w - 1, y + h - 1], axis=1),
                         class_id=np.full(len(x), class_id, dtype=int))


def _line_width(image: Image.Image) -> int:
    return max(1, round(min(image.size) / 200))


def _draw_boxes(scene: np.ndarray, detections: sv.Detections, thickness: int) -> np.ndarray:
    if not len(detections):
        return scene
    annotator = sv.BoxAnnotator(color=PALETTE, thickness=thickness, color_lookup=sv.ColorLookup.CLASS)
    return annotator.annotate(scene, detections)


def box_comparison(image: Image.Image, gt_boxes: Sequence[Sequence[float]], crowd_boxes: Sequence[Sequence[float]],
                   pred_boxes: Sequence[Sequence[float]], pred_scores: Sequence[float]) -> Image.Image:
    """Ground-truth boxes (green; crowd boxes grey, under them) beside the predicted boxes (red).

    Each predicted box carries its score (two decimals, white on red) at its top-left corner,
    moved inside the picture where it would leave it.

    Args:
        image: The RGB image, ``W x H`` pixels.
        gt_boxes: Non-crowd ground-truth boxes, COCO ``[x, y, w, h]``.
        crowd_boxes: Crowd ground-truth boxes, likewise.
        pred_boxes: Predicted boxes, likewise.
        pred_scores: One score per predicted box.

    Returns:
        An RGB image ``(2 W + GAP) x H``.
    """
    thickness = _line_width(image)
    left = _draw_boxes(_to_bgr(image), _box_detections(crowd_boxes, _IGNORE), thickness)
    left = _draw_boxes(left, _box_detections(gt_boxes, _GT), thickness)
    predicted = _box_detections(pred_boxes, _PRED)
    right = _draw_boxes(_to_bgr(image), predicted, thickness)
    if len(predicted):
        labels = sv.LabelAnnotator(color=PALETTE, color_lookup=sv.ColorLookup.CLASS, text_color=sv.Color.WHITE,
                                   text_scale=max(0.35, min(image.size) / 1000), text_padding=2,
                                   text_position=sv.Position.TOP_LEFT, smart_position=True)
        right = labels.annotate(right, predicted, labels=[f"{s:.2f}" for s in pred_scores])
    return side_by_side(_to_pil(left), _to_pil(right))
