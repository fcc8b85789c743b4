"""A fake segmentation engine that returns masks you give it.

Used by agent and eval tests where the expected result must be computable by hand: the masks a
phrase yields are exactly the ones registered for it (e.g. derived from ground truth). It also
answers exemplar prompts and visual prompts (points, a box) from the same registered masks, by
rules simple enough to compute by hand (see :meth:`FakeEngine.segment` and
:meth:`FakeEngine.segment_at`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import supervision as sv

from sam3core.image import ImageHandle, ImageInput, prepare_image
from sam3core.postprocess import detections_from_masks, empty_detections, mask_boxes_continuous
from sam3core.protocol import Box, Point
from sam3core.visual_prompt import VisualPrompt, check_visual_prompt

MaskSpec = Sequence[np.ndarray] | Callable[[ImageHandle, str], Sequence[np.ndarray]]
BoxSpec = Sequence[Sequence[float]] | np.ndarray


class FakeEngine:
    """Engine double: phrase -> registered masks, with call counting; also a :class:`PointPromptEngine`.

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
        calls: Every ``(digest, phrase)`` segmented, in order (an exemplar-only prompt as ``""``).
        exemplar_calls: Every ``(digest, phrase or None, boxes)`` given exemplar boxes, in order.
        point_calls: Every ``(digest, prompt)`` of :meth:`segment_at`, in order.
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
        self.exemplar_calls: list[tuple[str, str | None, list[list[float]]]] = []
        self.point_calls: list[tuple[str, VisualPrompt]] = []
        self._lock = threading.Lock()

    def prepare(self, image: ImageInput) -> ImageHandle:
        """See :func:`sam3core.image.prepare_image`."""
        return prepare_image(image)

    def segment(self, image, phrases, *, boxes=None, box_labels=None, score_threshold=0.5,
                mask_threshold=0.5, max_masks=100, dedup_iou="default",
                mask_upsampling="default"):  # type: ignore[no-untyped-def]
        """Return the registered masks for each phrase (see :class:`SegmentEngine`).

        Keeps masks scoring strictly above ``score_threshold`` (like the real engine and Meta's
        processor), at most ``max_masks`` of them (``None`` = no cap), highest first.
        Exemplar boxes with a phrase return that phrase's masks; with ``phrases=None`` they return
        the masks of the registered phrase one of whose masks best matches the first positive box
        (box IoU at least 0.5; else nothing), labelled ``""`` as the real engine labels an
        exemplar-only prompt. ``mask_threshold``, ``dedup_iou`` and ``mask_upsampling`` are
        ignored: the fake has no duplicate suppression and no upsampling.

        Raises:
            ValueError: A registered mask does not match the image size, registered boxes do not
                match the masks, or ``max_masks`` < 1.
        """
        if max_masks is not None and int(max_masks) < 1:
            raise ValueError(f"max_masks must be >= 1 (or None for no cap), got {max_masks}")
        handle = self.prepare(image)
        single = phrases is None or isinstance(phrases, str)
        if boxes is not None and len(boxes) > 0:
            return self._exemplar(handle, phrases, boxes, box_labels, score_threshold, max_masks)
        plist = [phrases or ""] if single else list(phrases)
        out = [self._one(handle, p, score_threshold, max_masks) for p in plist]
        if self.delay_s:
            import time

            time.sleep(self.delay_s)
        return out[0] if single else out

    async def asegment(self, image, phrases, **kwargs):  # type: ignore[no-untyped-def]
        """Async twin of :meth:`segment` (runs it in a thread)."""
        return await asyncio.to_thread(self.segment, image, phrases, **kwargs)

    def segment_at(self, image: ImageInput, *, points: Sequence[Point] | None = None,
                   point_labels: Sequence[int] | None = None, box: Box | None = None,
                   mask_threshold: float = 0.5) -> sv.Detections:
        """One registered mask at the prompt (see :class:`sam3core.protocol.PointPromptEngine`).

        Rules: the candidates are every registered mask of every phrase, in registration order.
        With points, the smallest candidate holding every positive point's pixel and no negative
        one; with a box as well, of those the one whose box best matches it. With a box alone, the
        candidate whose box has the highest IoU with it, if at least 0.5, else the box itself
        filled. Otherwise nothing. Confidence 0.9; ``mask_threshold`` is ignored.

        Raises:
            ValueError: As :func:`sam3core.visual_prompt.check_visual_prompt`.
        """
        handle = self.prepare(image)
        prompt = check_visual_prompt(points, point_labels, box, handle.width, handle.height)
        with self._lock:
            self.point_calls.append((handle.digest, prompt))
        chosen = _pick_at(self._all_masks(handle), prompt, handle.height, handle.width)
        if self.delay_s:
            import time

            time.sleep(self.delay_s)
        if chosen is None:
            return empty_detections(handle.height, handle.width)
        stack = chosen[None]
        return detections_from_masks(stack, np.asarray([0.9], np.float32), "", mask_boxes_continuous(stack))

    async def asegment_at(self, image: ImageInput, *, points: Sequence[Point] | None = None,
                          point_labels: Sequence[int] | None = None, box: Box | None = None,
                          mask_threshold: float = 0.5) -> sv.Detections:
        """Async twin of :meth:`segment_at` (runs it in a thread)."""
        return await asyncio.to_thread(lambda: self.segment_at(image, points=points, point_labels=point_labels,
                                                               box=box, mask_threshold=mask_threshold))

    def _exemplar(self, handle: ImageHandle, phrases: object, boxes: Sequence[Box],
                  box_labels: Sequence[int] | None, score_threshold: float, max_masks: int | None) -> sv.Detections:
        if phrases is not None and not isinstance(phrases, str):
            raise ValueError("exemplar boxes go with a single phrase (or None); call segment once per phrase")
        listed = [list(map(float, b)) for b in boxes]
        with self._lock:
            self.exemplar_calls.append((handle.digest, phrases, listed))
        if phrases is not None:
            return self._one(handle, phrases, score_threshold, max_masks)
        labels = [1] * len(listed) if box_labels is None else list(box_labels)
        positive = next((b for b, lab in zip(listed, labels, strict=True) if lab == 1), None)
        best, best_iou = "", 0.0
        for key in self._masks if positive is not None else ():
            masks = self._masks_of(handle, key)
            iou = max((_box_iou(positive, b) for b in mask_boxes_continuous(np.stack(masks)).tolist()) if masks
                      else (0.0,))
            if iou > best_iou:  # ties keep the first registered phrase
                best, best_iou = key, iou
        found = self._one(handle, best if best_iou >= 0.5 else "", score_threshold, max_masks)
        found.data["phrase"] = np.array([""] * len(found))
        return found

    def _all_masks(self, handle: ImageHandle) -> list[np.ndarray]:
        return [m for key in self._masks for m in self._masks_of(handle, key)]

    def _masks_of(self, handle: ImageHandle, key: str) -> list[np.ndarray]:
        spec = self._masks.get(key, [])
        masks = [np.asarray(m).astype(bool) for m in (spec(handle, key) if callable(spec) else spec)]
        for m in masks:
            if m.shape != (handle.height, handle.width):
                raise ValueError(
                    f"fake mask for {key!r} has shape {m.shape}, image is {handle.height}x{handle.width}"
                )
        return masks

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


def _box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two continuous ``(x1, y1, x2, y2)`` boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _pick_at(candidates: list[np.ndarray], prompt: VisualPrompt, height: int, width: int) -> np.ndarray | None:
    """The fake's answer to a visual prompt (see :meth:`FakeEngine.segment_at`)."""
    if prompt.points is not None and prompt.labels is not None:
        cols = np.clip(prompt.points[:, 0].astype(int), 0, width - 1)
        rows = np.clip(prompt.points[:, 1].astype(int), 0, height - 1)
        on, off = prompt.labels == 1, prompt.labels == 0
        candidates = [m for m in candidates if m[rows[on], cols[on]].all() and not m[rows[off], cols[off]].any()]
        if not candidates:
            return None
        if prompt.box is None:
            return min(candidates, key=lambda m: int(m.sum()))
    if prompt.box is None:
        return None
    box = prompt.box.tolist()
    if candidates:
        ious = [_box_iou(box, b) for b in mask_boxes_continuous(np.stack(candidates)).tolist()]
        best = int(np.argmax(ious))  # the first of equals
        if ious[best] >= 0.5 or prompt.points is not None:
            return candidates[best]
    filled = np.zeros((height, width), bool)
    x1, y1, x2, y2 = (round(v) for v in box)
    filled[y1:y2, x1:x2] = True
    return filled if filled.any() else None
