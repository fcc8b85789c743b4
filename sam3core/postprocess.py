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
    nonempty = masks.any(axis=(1, 2))
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


# --- SAM 3 output post-processing ----------------------------------------------------------------
# transformers' post_process_instance_segmentation upsamples every kept query to the full image
# size as float (and its boxes as int64) before anything is dropped: gigabytes for 100 masks on a
# 12 MP photo. We select on the low-resolution masks first and upsample only the survivors, in
# chunks, straight to bool. Scoring and binarisation follow the same definitions (score =
# sigmoid(query logit) * sigmoid(presence logit); mask = bilinear(sigmoid(mask logits)) > t).

DEFAULT_CHUNK_BYTES = 256 * 1024 * 1024


def select_queries(
    pred_logits,  # type: ignore[no-untyped-def]
    presence_logits,
    pred_masks,
    *,
    score_threshold: float,
    mask_threshold: float,
    max_masks: int,
    dedup_iou: float | None,
):
    """Pick the queries worth upsampling for one prompt.

    Args:
        pred_logits: ``(Q,)`` query logits (torch tensor).
        presence_logits: ``(1,)`` presence logit or ``None``.
        pred_masks: ``(Q, h, w)`` low-resolution mask logits.
        score_threshold: Keep queries whose score is strictly above this.
        mask_threshold: Probability threshold that binarises masks.
        max_masks: Keep at most this many (the highest scores).
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
        kept: list[int] = []
        for i in range(keep.numel()):
            if all(float(iou[i, j]) <= dedup_iou for j in kept):
                kept.append(i)
        keep = keep[torch.tensor(kept, dtype=torch.long, device=keep.device)]
    return keep, scores[keep]


def upsample_masks(
    mask_logits,  # type: ignore[no-untyped-def]
    size: tuple[int, int],
    mask_threshold: float,
    *,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> np.ndarray:
    """Upsample low-resolution mask logits to the original image size, chunk by chunk, to bool.

    Args:
        mask_logits: ``(K, h, w)`` mask logits (torch, any device/dtype). The low-resolution
            grid covers the whole image (SAM 3 resizes without keeping the aspect ratio).
        size: ``(H, W)`` of the original image.
        mask_threshold: Probability threshold.
        chunk_bytes: Upper bound on the float working memory of one chunk.

    Returns:
        ``(K, H, W)`` bool numpy array.
    """
    import torch.nn.functional as F

    height, width = size
    count = int(mask_logits.shape[0])
    out = np.zeros((count, height, width), dtype=bool)
    if count == 0:
        return out
    per_mask = height * width * 4
    step = max(1, chunk_bytes // per_mask)
    for start in range(0, count, step):
        chunk = mask_logits[start : start + step].float().sigmoid()[None]
        up = F.interpolate(chunk, size=(height, width), mode="bilinear", align_corners=False)[0]
        out[start : start + step] = (up > mask_threshold).cpu().numpy()
        del up, chunk
    return out
