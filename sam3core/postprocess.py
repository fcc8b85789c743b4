"""Pure post-processing helpers: masks to ``sv.Detections``.

(The full SAM 3 output post-processing — thresholding, top-k, duplicate suppression on
low-resolution masks and chunked upsampling — is added with the engine.)
"""

from __future__ import annotations

import numpy as np
import supervision as sv


def detections_from_masks(masks: np.ndarray, scores: np.ndarray, phrase: str) -> sv.Detections:
    """Build Detections from full-resolution masks.

    Args:
        masks: ``(N, H, W)`` bool masks at the original image size.
        scores: ``(N,)`` confidences.
        phrase: The phrase that produced them (stored in ``data["phrase"]``).

    Returns:
        ``sv.Detections`` sorted by score (highest first), empty masks dropped, ``xyxy`` from
        ``sv.mask_to_xyxy`` (inclusive pixel corners).
    """
    masks = np.asarray(masks, dtype=bool)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    if masks.ndim != 3 or masks.shape[0] != scores.shape[0]:
        raise ValueError(f"masks {masks.shape} and scores {scores.shape} do not match")
    nonempty = masks.reshape(masks.shape[0], -1).any(axis=1)
    masks, scores = masks[nonempty], scores[nonempty]
    order = np.argsort(-scores, kind="stable")
    masks, scores = masks[order], scores[order]
    if len(masks) == 0:
        return empty_detections(masks.shape[1], masks.shape[2], phrase)
    return sv.Detections(
        xyxy=sv.mask_to_xyxy(masks).astype(np.float32),
        mask=masks,
        confidence=scores,
        data={"phrase": np.array([phrase] * len(masks), dtype=object)},
    )


def empty_detections(height: int, width: int, phrase: str = "") -> sv.Detections:
    """Zero detections that still carry the image size in ``mask`` (shape ``(0, H, W)``)."""
    return sv.Detections(
        xyxy=np.zeros((0, 4), np.float32),
        mask=np.zeros((0, height, width), bool),
        confidence=np.zeros((0,), np.float32),
        data={"phrase": np.array([], dtype=object)},
    )
