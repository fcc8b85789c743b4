"""Overlap removal of segment_phrase masks, applied by the agent to any engine's output.

SAM 3 often returns several queries for one object: the whole thing and a part of it, or two
near-identical masks. Before the masks are numbered and shown, the agent keeps them greedily by
score and drops a mask when its intersection with an already kept mask covers more than
``iom_threshold`` of the *smaller* of the two (intersection over minimum, IoM). Unlike IoU, IoM
also removes a part nested inside a kept whole (a small mask inside a big one has IoM 1). This is
the rule the SAM 3 Agent paper's implementation uses (threshold 0.3, full-resolution masks); it
runs here on the masks of whichever :class:`~sam3core.protocol.SegmentEngine` the agent uses, so
the fake engine in tests and the real one behave alike.

Optionally (the ``paper`` preset), masks whose COCO RLE string is at most four characters long are
dropped too: that is how the reference recognises empty masks. The length depends only on the
mask, but it also drops some non-empty masks of small images (a mask covering the whole of a
60x80 image encodes in four characters), so by default only empty masks are dropped.
"""

from __future__ import annotations

import numpy as np
import supervision as sv
from pycocotools import mask as mask_utils

from sam3core.postprocess import mask_boxes_continuous

MIN_RLE_CHARS = 5


def overlap_keep(masks: np.ndarray, scores: np.ndarray, iom_threshold: float) -> np.ndarray:
    """Indices of the masks that survive greedy IoM suppression, in descending score order.

    IoM of masks ``a`` and ``b`` is ``|a & b| / max(1, min(|a|, |b|))``, computed in float32 and
    compared with the float32 threshold (so results at the boundary match a float32 torch
    implementation). Intersections are counted only inside the overlap of the two masks' boxes,
    which keeps memory at one mask's size even for 100 masks of a 12 MP photo.

    Args:
        masks: ``(N, H, W)`` bool masks.
        scores: ``(N,)`` confidences; ties keep their input order (stable sort).
        iom_threshold: A mask is dropped when its IoM with a kept mask is strictly above this.

    Returns:
        ``(K,)`` int64 indices into the input, highest score first.
    """
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    if len(masks) <= 1:
        return order.astype(np.int64)
    boxes = mask_boxes_continuous(masks).astype(np.int64)  # [x0, y0, x1, y1), empty: zeros
    areas = masks.reshape(len(masks), -1).sum(axis=1)
    limit = np.float32(iom_threshold)
    kept: list[int] = []
    for i in order:
        for j in kept:
            x0, y0 = max(boxes[i, 0], boxes[j, 0]), max(boxes[i, 1], boxes[j, 1])
            x1, y1 = min(boxes[i, 2], boxes[j, 2]), min(boxes[i, 3], boxes[j, 3])
            if x0 >= x1 or y0 >= y1:
                continue
            inter = np.count_nonzero(masks[i, y0:y1, x0:x1] & masks[j, y0:y1, x0:x1])
            iom = np.float32(inter) / np.float32(max(1, min(areas[i], areas[j])))
            if iom > limit:
                break
        else:
            kept.append(int(i))
    return np.asarray(kept, np.int64)


def rle_chars(mask: np.ndarray) -> int:
    """Length of the COCO RLE ``counts`` string of an ``(H, W)`` bool mask."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return len(rle["counts"])


def remove_overlaps(detections: sv.Detections, iom_threshold: float | None, *,
                    drop_short_rle: bool = False) -> sv.Detections:
    """Greedy IoM overlap removal, then the removal of empty masks, on full-resolution masks.

    Args:
        detections: ``N`` detections with ``(N, H, W)`` bool masks and confidences, in any order.
        iom_threshold: See :func:`overlap_keep`; ``None`` skips the overlap step.
        drop_short_rle: Drop masks whose COCO RLE string is shorter than ``MIN_RLE_CHARS``
            (the reference's test) instead of only the empty ones.

    Returns:
        The surviving detections sorted by confidence, highest first (ties in input order). All
        ``data`` arrays stay aligned.
    """
    if len(detections) == 0 or detections.mask is None:
        return detections
    scores = detections.confidence if detections.confidence is not None else np.ones(len(detections))
    if iom_threshold is None:
        keep = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    else:
        keep = overlap_keep(detections.mask, scores, iom_threshold)
    if drop_short_rle:
        keep = np.asarray([i for i in keep if rle_chars(detections.mask[i]) >= MIN_RLE_CHARS], np.int64)
    else:
        keep = np.asarray([i for i in keep if detections.mask[i].any()], np.int64)
    return detections[keep]
