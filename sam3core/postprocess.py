"""Post-processing of SAM 3's outputs into ``sv.Detections``, and exemplar prompt boxes in.

The engine runs the model; everything after the forward pass is here: which queries to keep
(:func:`select_queries`: score threshold, cap, duplicate suppression), mask upsampling and
binarisation at the original size (:func:`upsample_masks`), predicted boxes in pixels
(:func:`predicted_boxes`) and assembly into detections (:func:`detections_from_masks`).

Two box conventions meet here:

* ``xyxy`` (supervision's, derived from masks): inclusive pixel corners, x2/y2 are the last
  column/row a mask covers, so a one-pixel mask at column 3 has ``x1 == x2 == 3``.
* ``data["predicted_xyxy"]`` (SAM 3's own box head): continuous pixel coordinates of the
  original image, the convention of transformers' ``post_process_instance_segmentation``
  (normalised box times ``(W, H, W, H)``): x2/y2 are the right/bottom *edges*, so a box around
  that one pixel is ``x1 = 3, x2 = 4``. Not clipped to the image (like transformers and Meta's
  processor), so values may lie slightly outside ``[0, W] x [0, H]``.

Two binarisation orders exist (:data:`MASK_UPSAMPLING`): ``"probabilities"`` upsamples
``sigmoid(logits)`` bilinearly and thresholds that (transformers' post-processing, the engine's
default); ``"logits"`` upsamples the logits and thresholds their sigmoid (Meta's ``Sam3Processor``).
They differ only on pixels near mask borders.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np
import supervision as sv

from sam3core.protocol import Box

MaskUpsampling = Literal["probabilities", "logits"]
MASK_UPSAMPLING: tuple[str, ...] = get_args(MaskUpsampling)
"""Binarisation orders of :func:`upsample_masks` (see the module docstring)."""

PREDICTED_XYXY = "predicted_xyxy"
"""``Detections.data`` key of SAM 3's predicted boxes: ``(N, 4)`` float32, continuous pixel xyxy."""


def detections_from_masks(
    masks: np.ndarray,
    scores: np.ndarray,
    phrase: str,
    predicted_xyxy: np.ndarray | None = None,
) -> sv.Detections:
    """Build Detections from full-resolution masks.

    Args:
        masks: ``(N, H, W)`` bool masks at the original image size.
        scores: ``(N,)`` confidences.
        phrase: The phrase that produced them (stored in ``data["phrase"]``).
        predicted_xyxy: Optional ``(N, 4)`` predicted boxes, continuous pixel xyxy (see the
            module docstring), stored in ``data["predicted_xyxy"]`` as float32 and kept aligned
            with the masks through sorting and empty-mask filtering.

    Returns:
        ``sv.Detections`` sorted by score (highest first, ties in input order), empty masks
        dropped, ``xyxy`` from ``sv.mask_to_xyxy`` (inclusive pixel corners). ``data`` holds
        ``"phrase"`` and, when given (or when the result is empty), ``"predicted_xyxy"``.

    Raises:
        ValueError: If the shapes of masks, scores and boxes do not agree.
    """
    masks = np.asarray(masks, dtype=bool)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    if masks.ndim != 3 or masks.shape[0] != scores.shape[0]:
        raise ValueError(f"masks {masks.shape} and scores {scores.shape} do not match")
    boxes = None
    if predicted_xyxy is not None:
        boxes = np.asarray(predicted_xyxy, dtype=np.float32)
        if boxes.shape != (masks.shape[0], 4):
            raise ValueError(f"predicted_xyxy {boxes.shape} does not match {masks.shape[0]} masks; expected (N, 4)")
    nonempty = masks.any(axis=(1, 2))
    order = np.flatnonzero(nonempty)
    order = order[np.argsort(-scores[order], kind="stable")]
    if len(order) == 0:
        return empty_detections(masks.shape[1], masks.shape[2], phrase)
    data: dict[str, np.ndarray] = {"phrase": np.array([phrase] * len(order), dtype=object)}
    if boxes is not None:
        data[PREDICTED_XYXY] = boxes[order]
    masks = masks[order]
    return sv.Detections(
        xyxy=sv.mask_to_xyxy(masks).astype(np.float32),
        mask=masks,
        confidence=scores[order],
        data=data,
    )


def empty_detections(height: int, width: int, phrase: str = "") -> sv.Detections:
    """Zero detections that still carry the image size in ``mask`` (shape ``(0, H, W)``).

    ``data`` holds an empty ``"phrase"`` and a ``(0, 4)`` float32 ``"predicted_xyxy"``, so the
    result indexes and merges like the engine's non-empty results.
    """
    return sv.Detections(
        xyxy=np.zeros((0, 4), np.float32),
        mask=np.zeros((0, height, width), bool),
        confidence=np.zeros((0,), np.float32),
        data={"phrase": np.array([], dtype=object), PREDICTED_XYXY: np.zeros((0, 4), np.float32)},
    )


def mask_boxes_continuous(masks: np.ndarray) -> np.ndarray:
    """Boxes of ``(N, H, W)`` bool masks in the continuous convention of predicted boxes.

    ``x1`` is the first covered column and ``x2`` the last covered column + 1 (likewise for
    rows): supervision's inclusive ``mask_to_xyxy`` plus ``(0, 0, 1, 1)``. Empty masks give
    zeros.

    Returns:
        ``(N, 4)`` float32 pixel xyxy.
    """
    masks = np.asarray(masks, dtype=bool)
    if masks.shape[0] == 0:
        return np.zeros((0, 4), np.float32)
    boxes = sv.mask_to_xyxy(masks).astype(np.float32)
    nonempty = masks.any(axis=(1, 2))
    boxes[nonempty] += np.array([0, 0, 1, 1], np.float32)
    return boxes


# --- SAM 3 output post-processing ----------------------------------------------------------------
# transformers' post_process_instance_segmentation upsamples every kept query to the full image
# size as float (then binarises to int64) before anything is dropped: gigabytes for 100 masks on
# a 12 MP photo. We select on the low-resolution masks first and upsample only the survivors, in
# chunks, straight to bool. Scoring follows the same definition (score = sigmoid(query logit) *
# sigmoid(presence logit)); binarisation is either order of MASK_UPSAMPLING.

DEFAULT_CHUNK_BYTES = 256 * 1024 * 1024


def select_queries(
    pred_logits,  # type: ignore[no-untyped-def]
    presence_logits,
    pred_masks,
    *,
    score_threshold: float,
    mask_threshold: float,
    max_masks: int | None,
    dedup_iou: float | None,
):
    """Pick the queries worth upsampling for one prompt.

    Args:
        pred_logits: ``(Q,)`` query logits (torch tensor).
        presence_logits: ``(1,)`` presence logit or ``None``.
        pred_masks: ``(Q, h, w)`` low-resolution mask logits.
        score_threshold: Keep queries whose score is strictly above this.
        mask_threshold: Probability threshold that binarises masks.
        max_masks: Keep at most this many (the highest scores); ``None`` keeps every query above
            the threshold (as Meta's processor does).
        dedup_iou: Drop a mask whose low-resolution IoU with a higher-scoring kept mask exceeds
            this (``None`` disables duplicate suppression).

    Returns:
        ``(indices, scores)``: ``(K,)`` long indices into the queries and their float32 scores,
        sorted by score, highest first.
    """
    import torch

    scores = pred_logits.float().sigmoid()
    if presence_logits is not None:
        scores = scores * presence_logits.float().sigmoid().reshape(-1)[:1]
    keep = torch.nonzero(scores > score_threshold).flatten()
    if keep.numel() == 0:
        return keep, scores[keep]
    order = torch.argsort(scores[keep], descending=True, stable=True)
    keep = keep[order][:max_masks]
    binary = pred_masks[keep].float().sigmoid() > mask_threshold  # (K, h, w)
    flat = binary.flatten(1)
    nonempty = flat.any(dim=1)
    keep, flat = keep[nonempty], flat[nonempty]
    if dedup_iou is not None and keep.numel() > 1:
        f = flat.float()
        inter = f @ f.T
        area = f.sum(dim=1)
        iou = inter / (area[:, None] + area[None, :] - inter).clamp(min=1.0)
        # one transfer to the host; float64 so the comparison with the Python float is exact
        host = iou.double().cpu().numpy()
        kept: list[int] = []
        for i in range(host.shape[0]):
            if not kept or bool((host[i, kept] <= dedup_iou).all()):
                kept.append(i)
        keep = keep[torch.tensor(kept, dtype=torch.long, device=keep.device)]
    return keep, scores[keep]


def upsample_masks(
    mask_logits,  # type: ignore[no-untyped-def]
    size: tuple[int, int],
    mask_threshold: float,
    *,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    order: MaskUpsampling = "probabilities",
) -> np.ndarray:
    """Upsample low-resolution mask logits to the original image size, chunk by chunk, to bool.

    Args:
        mask_logits: ``(K, h, w)`` mask logits (torch, any device/dtype). The low-resolution
            grid covers the whole image (SAM 3 resizes without keeping the aspect ratio).
        size: ``(H, W)`` of the original image.
        mask_threshold: Probability threshold.
        chunk_bytes: Upper bound on the float working memory of one chunk.
        order: ``"probabilities"``: ``bilinear(sigmoid(logits)) > t`` (transformers'
            post-processing); ``"logits"``: ``sigmoid(bilinear(logits)) > t`` (Meta's processor).

    Returns:
        ``(K, H, W)`` bool numpy array.

    Raises:
        ValueError: If ``order`` is not one of :data:`MASK_UPSAMPLING`.
    """
    import torch.nn.functional as F

    if order not in MASK_UPSAMPLING:
        raise ValueError(f"mask upsampling order must be one of {MASK_UPSAMPLING}, got {order!r}")
    height, width = size
    count = int(mask_logits.shape[0])
    out = np.zeros((count, height, width), dtype=bool)
    if count == 0:
        return out
    per_mask = height * width * 4
    step = max(1, chunk_bytes // per_mask)
    for start in range(0, count, step):
        chunk = mask_logits[start : start + step].float()[None]
        if order == "probabilities":
            chunk = chunk.sigmoid()
        up = F.interpolate(chunk, size=(height, width), mode="bilinear", align_corners=False)[0]
        if order == "logits":
            up = up.sigmoid_()
        out[start : start + step] = (up > mask_threshold).cpu().numpy()
        del up, chunk
    return out


def prompt_detections(
    outputs,  # type: ignore[no-untyped-def]
    row: int,
    size: tuple[int, int],
    label: str,
    *,
    score_threshold: float,
    mask_threshold: float,
    max_masks: int | None,
    dedup_iou: float | None,
    order: MaskUpsampling = "probabilities",
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> sv.Detections:
    """The detections of one prompt (batch row ``row``) of a ``Sam3Model`` output.

    Selects the queries (:func:`select_queries`), upsamples only their masks to ``size``
    (:func:`upsample_masks`) and carries their predicted boxes (:func:`predicted_boxes`).

    Args:
        outputs: The model output (``pred_logits``, ``presence_logits``, ``pred_masks``, ``pred_boxes``).
        row: The prompt's batch row.
        size: ``(H, W)`` of the original image.
        label: The phrase stored in ``data["phrase"]``.
        score_threshold: See :func:`select_queries`.
        mask_threshold: See :func:`select_queries`.
        max_masks: See :func:`select_queries`.
        dedup_iou: See :func:`select_queries`.
        order: Binarisation order (see :func:`upsample_masks`).
        chunk_bytes: Working-memory bound of the upsampling.

    Returns:
        ``sv.Detections`` as :func:`detections_from_masks` builds them.
    """
    presence = outputs.presence_logits[row] if outputs.presence_logits is not None else None
    keep, scores = select_queries(outputs.pred_logits[row], presence, outputs.pred_masks[row],
                                  score_threshold=score_threshold, mask_threshold=mask_threshold,
                                  max_masks=max_masks, dedup_iou=dedup_iou)
    masks = upsample_masks(outputs.pred_masks[row][keep], size, mask_threshold, chunk_bytes=chunk_bytes, order=order)
    boxes = predicted_boxes(outputs.pred_boxes[row], keep, size)
    return detections_from_masks(masks, scores.float().cpu().numpy(), label, boxes)


def predicted_boxes(pred_boxes, keep, size: tuple[int, int]) -> np.ndarray:  # type: ignore[no-untyped-def]
    """SAM 3's predicted boxes of the kept queries in pixels of the original image.

    Args:
        pred_boxes: ``(Q, 4)`` boxes of one prompt as ``Sam3Model`` returns them (``pred_boxes``):
            normalised ``(x1, y1, x2, y2)`` over the whole image (SAM 3 resizes without keeping
            the aspect ratio; the model converts its sigmoid ``(cx, cy, w, h)`` to corners, so
            they can stray slightly outside ``[0, 1]``), torch, any device/dtype.
        keep: ``(K,)`` long indices of the kept queries (see :func:`select_queries`).
        size: ``(H, W)`` of the original image.

    Returns:
        ``(K, 4)`` float32 continuous pixel xyxy, scaled like transformers'
        ``post_process_instance_segmentation`` (times ``(W, H, W, H)``, not clipped), but always
        in float32 (transformers scales in the model dtype, lossy in bfloat16).
    """
    import torch

    height, width = size
    boxes = pred_boxes[keep].float()
    scale = torch.tensor([width, height, width, height], dtype=torch.float32, device=boxes.device)
    return (boxes * scale).cpu().numpy().astype(np.float32, copy=False).reshape(-1, 4)


# --- prompt boxes -------------------------------------------------------------------------------

def normalise_exemplar_boxes(boxes: Sequence[Box], labels: Sequence[int] | None, width: int,
                             height: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate exemplar prompt boxes and convert them to the model's input form.

    Args:
        boxes: ``(B, 4)`` pixel ``(x1, y1, x2, y2)`` of the original image; clipped to it.
        labels: ``(B,)`` 1 (positive) / 0 (negative), or ``None`` for all positive.
        width: Image width in pixels.
        height: Image height in pixels.

    Returns:
        ``(boxes, labels)``: ``(B, 4)`` float32 normalised ``(cx, cy, w, h)`` and ``(B,)`` int64.

    Raises:
        ValueError: Malformed, non-finite, inverted or out-of-image boxes; bad labels.
    """
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must be a list of [x1, y1, x2, y2]; got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("boxes contain NaN or infinite values")
    for i, (x1, y1, x2, y2) in enumerate(arr):
        if x2 <= x1 or y2 <= y1:
            raise ValueError(f"box {i} {[x1, y1, x2, y2]} has x2 <= x1 or y2 <= y1; boxes are [x1, y1, x2, y2] pixels")
        if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
            raise ValueError(f"box {i} {[x1, y1, x2, y2]} lies outside the {width}x{height} image")
    arr[:, [0, 2]] = arr[:, [0, 2]].clip(0, width)
    arr[:, [1, 3]] = arr[:, [1, 3]].clip(0, height)
    if labels is None:
        lab = np.ones(len(arr), dtype=np.int64)
    else:
        lab = np.asarray(labels, dtype=np.int64).reshape(-1)
        if lab.shape[0] != arr.shape[0]:
            raise ValueError(f"{len(lab)} box_labels for {len(arr)} boxes; give one label per box")
        if not np.isin(lab, (0, 1)).all():
            raise ValueError(f"box_labels must be 1 (positive) or 0 (negative), got {lab.tolist()}")
    cx = (arr[:, 0] + arr[:, 2]) / 2 / width
    cy = (arr[:, 1] + arr[:, 3]) / 2 / height
    w = (arr[:, 2] - arr[:, 0]) / width
    h = (arr[:, 3] - arr[:, 1]) / height
    return np.stack([cx, cy, w, h], axis=1).astype(np.float32), lab
