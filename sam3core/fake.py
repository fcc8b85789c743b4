"""A fake segmentation engine that returns masks you give it.

Used by agent and eval tests where the expected result must be computable by hand: the masks a
phrase yields are exactly the ones registered for it (e.g. derived from ground truth).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import supervision as sv

from sam3core.image import ImageHandle, ImageInput, prepare_image
from sam3core.postprocess import detections_from_masks, mask_boxes_continuous

MaskSpec = Sequence[np.ndarray] | Callable[[ImageHandle, str], Sequence[np.ndarray]]
BoxSpec = Sequence[Sequence[float]] | np.ndarray


class FakeEngine:
    """Engine double: phrase -> registered masks, with call counting.

    Args:
        masks: Mapping from a phrase (compared lower-cased and stripped) to either a list of
            ``(H, W)`` bool masks at the image's size, or a callable ``(handle, phrase) -> masks``.
            Unknown phrases yield no masks.
        scores: Optional mapping phrase -> per-mask confidences (default: 0.9, 0.85, 0.8, ...).
        boxes: Optional mapping phrase -> per-mask predicted boxes ``(N, 4)``, pixel xyxy in the
            continuous convention of SAM 3's predicted boxes (x2/y2 are right/bottom edges),
            returned in ``data["predicted_xyxy"]``. Default: each mask's tight box in that
            convention (x1 = first column, x2 = last column + 1; likewise for rows).
        delay_s: Seconds each call sleeps (to simulate engine latency in benchmarks).

    Attributes:
        calls: Every ``(digest, phrase)`` segmented, in order.
    """

    def __init__(
        self,
        masks: Mapping[str, MaskSpec] | None = None,
        scores: Mapping[str, Sequence[float]] | None = None,
        boxes: Mapping[str, BoxSpec] | None = None,
        delay_s: float = 0.0,
    ) -> None:
        self._masks = {k.strip().lower(): v for k, v in (masks or {}).items()}
        self._scores = {k.strip().lower(): list(v) for k, v in (scores or {}).items()}
        self._boxes = {k.strip().lower(): np.asarray(v, np.float32).reshape(-1, 4) for k, v in (boxes or {}).items()}
        self.delay_s = delay_s
        self.calls: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def prepare(self, image: ImageInput) -> ImageHandle:
        """See :func:`sam3core.image.prepare_image`."""
        return prepare_image(image)

    def segment(self, image, phrases, *, boxes=None, box_labels=None, score_threshold=0.5,
                mask_threshold=0.5, max_masks=100, dedup_iou="default",
                mask_upsampling="default"):  # type: ignore[no-untyped-def]
        """Return the registered masks for each phrase (see :class:`SegmentEngine`).

        Keeps masks scoring strictly above ``score_threshold`` (like the real engine and Meta's
        processor), at most ``max_masks`` of them (``None`` = no cap), highest first. Exemplar
        ``boxes``/``box_labels`` and ``mask_threshold`` are ignored; so are ``dedup_iou`` and
        ``mask_upsampling``: the fake has no duplicate suppression and no upsampling, it returns
        the registered masks as they are.

        Raises:
            ValueError: A registered mask does not match the image size, registered boxes do not
                match the masks, or ``max_masks`` < 1.
        """
        if max_masks is not None and int(max_masks) < 1:
            raise ValueError(f"max_masks must be >= 1 (or None for no cap), got {max_masks}")
        handle = self.prepare(image)
        single = phrases is None or isinstance(phrases, str)
        plist = [phrases or ""] if single else list(phrases)
        out = [self._one(handle, p, score_threshold, max_masks) for p in plist]
        if self.delay_s:
            import time

            time.sleep(self.delay_s)
        return out[0] if single else out

    async def asegment(self, image, phrases, **kwargs):  # type: ignore[no-untyped-def]
        """Async twin of :meth:`segment` (runs it in a thread)."""
        return await asyncio.to_thread(self.segment, image, phrases, **kwargs)

    def _one(self, handle: ImageHandle, phrase: str, score_threshold: float, max_masks: int | None) -> sv.Detections:
        key = phrase.strip().lower()
        with self._lock:
            self.calls.append((handle.digest, phrase))
        spec = self._masks.get(key, [])
        masks = list(spec(handle, phrase) if callable(spec) else spec)
        for m in masks:
            if m.shape != (handle.height, handle.width):
                raise ValueError(
                    f"fake mask for {phrase!r} has shape {m.shape}, image is {handle.height}x{handle.width}"
                )
        stack = (np.stack([m.astype(bool) for m in masks]) if masks
                 else np.zeros((0, handle.height, handle.width), bool))
        boxes = self._boxes.get(key)
        if boxes is None:
            boxes = mask_boxes_continuous(stack)
        elif len(boxes) != len(masks):
            raise ValueError(f"fake boxes for {phrase!r}: {len(boxes)} boxes for {len(masks)} masks")
        default = [round(0.9 - 0.05 * i, 4) for i in range(len(masks))]
        scores = self._scores.get(key, default)
        keep = [i for i, s in enumerate(scores[: len(masks)]) if s > score_threshold]
        keep = sorted(keep, key=lambda i: -scores[i])[:max_masks]
        return detections_from_masks(stack[keep], np.asarray([scores[i] for i in keep], np.float32), phrase,
                                     boxes[keep])
