"""Side-by-side pictures for ``--save-overlays``: ground truth (left) beside the prediction (right).

Pure functions returning new images; the caller writes them. Masks and boxes are in pixels of the
oriented image, boxes as COCO ``[x, y, w, h]``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

GT_COLOR = (40, 200, 80)
PRED_COLOR = (230, 50, 50)
IGNORE_COLOR = (150, 150, 150)
GAP = 6


def _tint(rgb: np.ndarray, mask: np.ndarray, color: tuple[int, int, int], alpha: float = 0.5) -> np.ndarray:
    out = rgb.astype(np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(color, np.float32)
    return out.astype(np.uint8)


def side_by_side(left: Image.Image, right: Image.Image) -> Image.Image:
    """Two equally sized images next to each other with a white gap."""
    canvas = Image.new("RGB", (left.width + GAP + right.width, max(left.height, right.height)), (255, 255, 255))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width + GAP, 0))
    return canvas


def mask_comparison(image: Image.Image, gt: np.ndarray, pred: np.ndarray, ignore_value: int = 255) -> Image.Image:
    """Ground truth (green, ignore pixels grey) beside the predicted mask (red).

    Args:
        image: The RGB image, ``(W, H)``.
        gt: ``(H, W)`` uint8 ground truth: 0 background, 1 target, ``ignore_value`` ignored.
        pred: ``(H, W)`` bool prediction.
    """
    rgb = np.asarray(image.convert("RGB"))
    left = _tint(_tint(rgb, gt == 1, GT_COLOR), gt == ignore_value, IGNORE_COLOR)
    right = _tint(rgb, np.asarray(pred, bool), PRED_COLOR)
    return side_by_side(Image.fromarray(left), Image.fromarray(right))


def _draw_boxes(image: Image.Image, boxes: Sequence[Sequence[float]], color: tuple[int, int, int],
                scores: Sequence[float] | None = None) -> Image.Image:
    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    width = max(1, round(min(out.size) / 200))
    for i, (x, y, w, h) in enumerate(boxes):
        draw.rectangle([x, y, x + w - 1, y + h - 1], outline=color, width=width)
        if scores is not None:
            draw.text((x + 2, y + 1), f"{scores[i]:.2f}", fill=color)
    return out


def box_comparison(image: Image.Image, gt_boxes: Sequence[Sequence[float]], crowd_boxes: Sequence[Sequence[float]],
                   pred_boxes: Sequence[Sequence[float]], pred_scores: Sequence[float]) -> Image.Image:
    """Ground-truth boxes (green; crowd boxes grey) beside the predicted boxes (red, with scores)."""
    left = _draw_boxes(_draw_boxes(image, crowd_boxes, IGNORE_COLOR), gt_boxes, GT_COLOR)
    right = _draw_boxes(image, pred_boxes, PRED_COLOR, pred_scores)
    return side_by_side(left, right)


def jpeg_bytes(image: Image.Image, quality: int = 85) -> bytes:
    """The image encoded as JPEG."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
