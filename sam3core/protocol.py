"""The engine interface the agent and the evals program against.

Both the real :class:`sam3core.engine.Sam3Engine` and :class:`sam3core.testing.FakeEngine`
satisfy :class:`SegmentEngine`, so agent and eval tests can use masks whose expected scores can
be computed by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, overload, runtime_checkable

import supervision as sv

from sam3core.image import ImageHandle, ImageInput

Box = Sequence[float]  # (x1, y1, x2, y2) in pixels of the original (oriented) image


@runtime_checkable
class SegmentEngine(Protocol):
    """Concept segmentation: an image and a noun phrase in, instance masks out.

    Results are ``sv.Detections`` with ``xyxy`` (N, 4) float pixel boxes of the original image
    (supervision's inclusive convention: x2 is the last column a mask covers), ``mask`` (N, H, W)
    bool at the original resolution, ``confidence`` (N,) float, and ``data["phrase"]`` (N,) str;
    sorted by confidence, highest first.
    """

    def prepare(self, image: ImageInput) -> ImageHandle:
        """Decode and fingerprint an image once (see :func:`sam3core.image.prepare_image`)."""
        ...

    @overload
    def segment(
        self,
        image: ImageInput,
        phrases: str | None,
        *,
        boxes: Sequence[Box] | None = ...,
        box_labels: Sequence[int] | None = ...,
        score_threshold: float = ...,
        mask_threshold: float = ...,
        max_masks: int = ...,
    ) -> sv.Detections: ...

    @overload
    def segment(
        self,
        image: ImageInput,
        phrases: Sequence[str],
        *,
        boxes: Sequence[Box] | None = ...,
        box_labels: Sequence[int] | None = ...,
        score_threshold: float = ...,
        mask_threshold: float = ...,
        max_masks: int = ...,
    ) -> list[sv.Detections]: ...

    def segment(self, image, phrases, **kwargs):  # type: ignore[no-untyped-def]
        """Segment one phrase (-> Detections) or a list of phrases (-> list of Detections)."""
        ...

    async def asegment(self, image, phrases, **kwargs):  # type: ignore[no-untyped-def]
        """Async twin of :meth:`segment`; never blocks the event loop."""
        ...
