"""Detections as JSON-safe records and back: the one serialisation of masks, boxes and scores.

Masks travel as COCO RLE (``{"size": [height, width], "counts": str}``, column-major as in pycocotools);
boxes are pixel corners ``[x0, y0, x1, y1]`` of the original image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import supervision as sv

__all__ = ["detections_from_list", "detections_to_list"]


def detections_to_list(detections: sv.Detections, height: int, width: int) -> list[dict[str, Any]]:
    """JSON-safe per-instance records, in detection order.

    Each has ``phrase``, ``score``, ``box_xyxy`` (the mask's box, inclusive pixel corners), ``rle``
    (COCO RLE) and, when the engine gave them, ``predicted_box_xyxy`` (SAM 3's own predicted box,
    continuous pixel corners).
    """
    out = []
    masks = detections.mask
    if masks is None:
        masks = np.zeros((len(detections), height, width), bool)
    phrases = detections.data.get("phrase", [""] * len(detections))
    predicted = detections.data.get("predicted_xyxy")
    for i in range(len(detections)):
        score = detections.confidence[i] if detections.confidence is not None else None
        record: dict[str, Any] = {
            "phrase": str(phrases[i]),
            "score": None if score is None else float(score),
            "box_xyxy": [float(v) for v in detections.xyxy[i]],
            "rle": {"size": [height, width],
                    "counts": sv.mask_to_rle(np.asarray(masks[i], bool), compressed=True)},
        }
        if predicted is not None:
            record["predicted_box_xyxy"] = [float(v) for v in predicted[i]]
        out.append(record)
    return out


def detections_from_list(records: Sequence[dict[str, Any]], height: int, width: int) -> sv.Detections:
    """Inverse of :func:`detections_to_list` (masks decoded from RLE)."""
    if not records:
        masks = np.zeros((0, height, width), bool)
    else:
        masks = np.stack([sv.rle_to_mask(r["rle"]["counts"], (width, height)) for r in records]).astype(bool)
    data: dict[str, Any] = {"phrase": np.asarray([r["phrase"] for r in records], dtype=object)}
    if records and all("predicted_box_xyxy" in r for r in records):
        data["predicted_xyxy"] = np.asarray([r["predicted_box_xyxy"] for r in records], np.float32).reshape(-1, 4)
    return sv.Detections(
        xyxy=np.asarray([r["box_xyxy"] for r in records], np.float32).reshape(-1, 4),
        mask=masks,
        confidence=np.asarray([np.nan if r["score"] is None else r["score"] for r in records], np.float32),
        data=data,
    )
