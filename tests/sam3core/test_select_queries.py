"""``postprocess.select_queries``: its duplicate suppression against a plain per-element greedy loop.

``_select_elementwise`` is the selection as it was first written (the IoU matrix read one element at a
time, a device sync per read on a GPU); the engine's version moves the matrix to the host once. They
must keep the same queries, in the same order, on any input.
"""

from __future__ import annotations

import pytest
import torch

from sam3core.postprocess import select_queries


def _select_elementwise(pred_logits: torch.Tensor, presence: torch.Tensor | None, pred_masks: torch.Tensor, *,
                        score_threshold: float, mask_threshold: float, max_masks: int | None,
                        dedup_iou: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    scores = pred_logits.float().sigmoid()
    if presence is not None:
        scores = scores * presence.float().sigmoid().reshape(-1)[:1]
    keep = torch.nonzero(scores > score_threshold).flatten()
    if keep.numel() == 0:
        return keep, scores[keep]
    keep = keep[torch.argsort(scores[keep], descending=True, stable=True)][:max_masks]
    flat = (pred_masks[keep].float().sigmoid() > mask_threshold).flatten(1)
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
        keep = keep[torch.tensor(kept, dtype=torch.long)]
    return keep, scores[keep]


def _blobs(gen: torch.Generator, queries: int, size: int) -> torch.Tensor:
    """Mask logits made of a few shared random blobs, so many masks are near-duplicates of each other."""
    base = torch.randn(4, size, size, generator=gen)
    pick = torch.randint(0, 4, (queries,), generator=gen)
    return base[pick] * 3 + torch.randn(queries, size, size, generator=gen) * 0.8


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("dedup_iou", [0.0, 0.3, 0.5, 0.7, 0.95, None])
def test_same_queries_as_the_elementwise_loop(seed: int, dedup_iou: float | None) -> None:
    gen = torch.Generator().manual_seed(seed)
    queries = 5 + seed * 3
    masks = _blobs(gen, queries, 6 + seed % 4)
    logits = torch.randn(queries, generator=gen)
    presence = torch.randn(1, generator=gen) if seed % 2 else None
    kwargs = {"score_threshold": 0.2, "mask_threshold": 0.5, "max_masks": None if seed % 3 else 7,
              "dedup_iou": dedup_iou}
    keep, scores = select_queries(logits, presence, masks, **kwargs)
    ref_keep, ref_scores = _select_elementwise(logits, presence, masks, **kwargs)
    assert keep.tolist() == ref_keep.tolist()
    assert torch.equal(scores, ref_scores)
    assert keep.dtype == torch.long


def test_iou_exactly_at_the_threshold_is_kept() -> None:
    """IoU 0.5 against a kept mask is not a duplicate (strictly above is); float rounding cannot flip it."""
    masks = torch.full((2, 2, 4), -5.0)
    masks[0, :, :2] = 5.0  # 4 pixels
    masks[1] = 5.0  # 8 pixels, covering mask 0: IoU 0.5
    logits = torch.tensor([1.0, 2.0])
    for dedup_iou, expected in ((0.5, [1, 0]), (0.4999, [1])):
        keep, _ = select_queries(logits, None, masks, score_threshold=0.0, mask_threshold=0.5, max_masks=None,
                                 dedup_iou=dedup_iou)
        assert keep.tolist() == expected
        ref, _ = _select_elementwise(logits, None, masks, score_threshold=0.0, mask_threshold=0.5, max_masks=None,
                                     dedup_iou=dedup_iou)
        assert ref.tolist() == expected
