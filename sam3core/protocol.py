"""The engine interfaces the agent and the evals program against.

Both the real :class:`sam3core.engine.Sam3Engine` and :class:`sam3core.testing.FakeEngine`
satisfy :class:`SegmentEngine`, so agent and eval tests can use masks whose expected scores can
be computed by hand. :class:`PointPromptEngine` is the optional second interface, segmentation
of one object at points or a box (the agent's ``segment_at`` tool needs it): the fake engine and
:class:`sam3core.tracker.Sam3Tracker` (SAM 3's tracker wrapped around a ``Sam3Engine``) have it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, overload, runtime_checkable

import supervision as sv

from sam3core.image import ImageHandle, ImageInput

Box = Sequence[float]  # (x1, y1, x2, y2) in pixels of the original (oriented) image
Point = Sequence[float]  # (x, y) in pixels of the original (oriented) image, x right, y down


@runtime_checkable
class SegmentEngine(Protocol):
    """Concept segmentation: an image and a noun phrase in, instance masks out.

    Results are ``sv.Detections`` sorted by confidence, highest first, with:

    * ``xyxy`` (N, 4) float32 pixel boxes of the original image derived from the masks
      (supervision's inclusive convention: x2 is the last column a mask covers);
    * ``mask`` (N, H, W) bool at the original resolution;
    * ``confidence`` (N,) float32 (scores strictly above ``score_threshold`` are kept);
    * ``data["phrase"]`` (N,) str;
    * ``data["predicted_xyxy"]`` (N, 4) float32: SAM 3's own predicted box of each detection,
      pixels of the original image in the continuous convention of transformers'
      ``post_process_instance_segmentation`` (x2/y2 are right/bottom edges, so a box tightly
      around columns 3..5 is ``x1 = 3, x2 = 6``; not clipped to the image). Empty results carry
      a ``(0, 4)`` array, so results index and merge alike.

    Keyword arguments of :meth:`segment` / :meth:`asegment`: ``boxes`` / ``box_labels``
    (exemplar prompts), ``score_threshold``, ``mask_threshold``, ``max_masks`` (``None`` = no
    cap), ``dedup_iou`` (duplicate suppression IoU; ``None`` = off, ``"default"`` = the
    engine's own setting; engines without duplicate suppression accept and ignore it) and
    ``mask_upsampling`` (``"probabilities"``, ``"logits"`` or ``"default"``: the binarisation
    order of masks at the original size, see :mod:`sam3core.postprocess`; engines that do not
    upsample accept and ignore it).
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
        max_masks: int | None = ...,
        dedup_iou: float | str | None = ...,
        mask_upsampling: str = ...,
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
        max_masks: int | None = ...,
        dedup_iou: float | str | None = ...,
        mask_upsampling: str = ...,
    ) -> list[sv.Detections]: ...

    def segment(self, image, phrases, **kwargs):  # type: ignore[no-untyped-def]
        """Segment one phrase (-> Detections) or a list of phrases (-> list of Detections)."""
        ...

    async def asegment(self, image, phrases, **kwargs):  # type: ignore[no-untyped-def]
        """Async twin of :meth:`segment`; never blocks the event loop."""
        ...


@runtime_checkable
class PointPromptEngine(Protocol):
    """Visual-prompt segmentation: points and/or a box on an image in, one object's mask out.

    Coordinates are pixels of the original, EXIF-oriented image (x right, y down), as SAM's own
    predictors take them: a point ``(x, y)``; a box ``(x1, y1, x2, y2)`` with ``x2 > x1``,
    ``y2 > y1``, its left, top, right and bottom edges. Points are labelled 1 (on the object,
    the default) or 0 (not on it).

    The result is an ``sv.Detections`` of at most one detection, in the :class:`SegmentEngine`
    layout: ``xyxy`` (N, 4) float32 inclusive pixel corners of the mask, ``mask`` (N, H, W) bool
    at the original resolution, ``confidence`` (N,) float32 (the model's own estimate of the
    mask's quality), ``data["phrase"]`` (N,) str (empty) and ``data["predicted_xyxy"]`` (N, 4)
    float32 (the mask's box in the continuous convention). A prompt that yields an empty mask
    gives an empty result (N = 0).
    """

    def prepare(self, image: ImageInput) -> ImageHandle:
        """Decode and fingerprint an image once (see :func:`sam3core.image.prepare_image`)."""
        ...

    def segment_at(
        self,
        image: ImageInput,
        *,
        points: Sequence[Point] | None = None,
        point_labels: Sequence[int] | None = None,
        box: Box | None = None,
        mask_threshold: float = 0.5,
    ) -> sv.Detections:
        """Segment the one object at ``points`` and/or inside ``box``.

        Raises:
            ValueError: No prompt, malformed or non-finite coordinates, an inverted box, a box or
                point outside the image, or labels that do not match the points.
        """
        ...

    async def asegment_at(
        self,
        image: ImageInput,
        *,
        points: Sequence[Point] | None = None,
        point_labels: Sequence[int] | None = None,
        box: Box | None = None,
        mask_threshold: float = 0.5,
    ) -> sv.Detections:
        """Async twin of :meth:`segment_at`; never blocks the event loop."""
        ...
