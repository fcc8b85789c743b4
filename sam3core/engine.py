"""The SAM 3 engine: encode each image once, answer many phrases from cached features.

One worker thread owns the model and runs every forward pass (``torch.inference_mode`` is
entered per call, since it is per-thread state). Callers from any thread or asyncio task submit
work to it through :meth:`Sam3Engine.segment` (blocking) or :meth:`Sam3Engine.asegment`
(awaitable). Because one thread runs every forward, overlapping requests for the same new image
encode it once: the second finds the features the first stored. The job queue is also where
cross-request batching plugs in.

The engine itself validates requests and batches them; the model side (feature caches, the
batched forward, Meta's text-prompt token) is :class:`sam3core.forward.ModelRunner`, and turning
the model's outputs into detections is :mod:`sam3core.postprocess`.

Coordinates: boxes are ``(x1, y1, x2, y2)`` pixels of the original, EXIF-oriented image
(x right, y down); returned ``xyxy`` are derived from the masks in supervision's inclusive
convention (x2/y2 are the last column/row a mask covers); ``data["predicted_xyxy"]`` holds SAM 3's
own predicted boxes in transformers' continuous convention (x2/y2 are right/bottom edges, see
:mod:`sam3core.postprocess`); masks are ``(N, H, W)`` bool at the original resolution.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import supervision as sv

from sam3core.forward import (
    DEFAULT_CACHE_BYTES,
    DEFAULT_TEXT_CACHE_BYTES,
    TEXT_MAX_TOKENS,
    EngineStats,
    ModelRunner,
    Prompt,
    geometry_prompt_token,
)
from sam3core.image import ImageHandle, ImageInput, prepare_image
from sam3core.loading import DEFAULT_MODEL, load_model_and_processor, resolve_device_dtype
from sam3core.postprocess import (
    DEFAULT_CHUNK_BYTES,
    MASK_UPSAMPLING,
    MaskUpsampling,
    normalise_exemplar_boxes,
    prompt_detections,
)
from sam3core.protocol import Box
from sam3core.worker import BatchingWorker, Job

logger = logging.getLogger(__name__)

EXEMPLAR_TEXT = "visual"  # the prompt transformers' processor uses when only boxes are given

__all__ = ["DEFAULT_CACHE_BYTES", "DEFAULT_TEXT_CACHE_BYTES", "TEXT_MAX_TOKENS", "EngineStats", "Sam3Engine",
           "geometry_prompt_token"]


@dataclass(frozen=True)
class _Params:
    score_threshold: float
    mask_threshold: float
    max_masks: int | None
    dedup_iou: float | None
    mask_upsampling: MaskUpsampling


@dataclass(frozen=True)
class _Request:
    handle: ImageHandle
    prompts: list[Prompt]
    params: _Params


class Sam3Engine:
    """In-process SAM 3 concept segmentation with image- and text-feature caches.

    Args:
        model: A ``transformers.Sam3Model``.
        processor: Its ``Sam3Processor``.
        device: ``"cuda"``, ``"cpu"``, ... (default: cuda when available).
        dtype: Model dtype (default: bfloat16 on cuda, float32 on cpu).
        cache_bytes: Image-feature cache budget in bytes (see :data:`DEFAULT_CACHE_BYTES`).
        text_cache_bytes: Text-feature cache budget in bytes.
        dedup_iou: Default duplicate-suppression IoU on low-resolution masks (``None`` = off).
        chunk_bytes: Working-memory bound of mask upsampling.
        max_batch: Most prompts run in one detector forward; concurrent requests (from different
            agents, on different images) are batched up to this. 1 disables cross-request batching.
            This, with ``cache_bytes``, bounds GPU memory.
        batch_window_ms: How long the worker waits for more requests to batch with the first.
        name: Shown in logs and ``repr``.
        meta_text_prompts: Run text-only prompts as Meta's SAM 3 does (and was trained), with the
            token its geometry encoder makes from an empty box prompt appended to the text (see
            :func:`geometry_prompt_token`). On by default: transformers' ``Sam3Model.forward``
            leaves that token out of text-only prompts, which changes every score and mask. Off
            gives transformers' own result.
        mask_upsampling: Default binarisation order of masks at the original size (see
            :mod:`sam3core.postprocess`): ``"probabilities"`` thresholds
            ``bilinear(sigmoid(logits))`` like transformers' post-processing; ``"logits"``
            thresholds ``sigmoid(bilinear(logits))`` like Meta's ``Sam3Processor``. They differ
            only on pixels near mask borders.

    Raises:
        ValueError: If ``mask_upsampling`` is not one of the two orders.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        device: str | None = None,
        dtype: str | Any | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        text_cache_bytes: int = DEFAULT_TEXT_CACHE_BYTES,
        dedup_iou: float | None = 0.7,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        max_batch: int = 8,
        batch_window_ms: float = 2.0,
        name: str = "sam3",
        meta_text_prompts: bool = True,
        mask_upsampling: MaskUpsampling = "probabilities",
    ) -> None:
        if mask_upsampling not in MASK_UPSAMPLING:
            raise ValueError(f"mask_upsampling must be one of {MASK_UPSAMPLING}, got {mask_upsampling!r}")
        self.device, self.dtype = resolve_device_dtype(device, dtype)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.processor = processor
        self.name = name
        self.dedup_iou = dedup_iou
        self.chunk_bytes = chunk_bytes
        self.mask_upsampling: MaskUpsampling = mask_upsampling
        self.runner = ModelRunner(self.model, processor, self.device, self.dtype, cache_bytes=cache_bytes,
                                  text_cache_bytes=text_cache_bytes, meta_text_prompts=meta_text_prompts)
        self._worker = BatchingWorker(f"sam3-engine-{name}", self._run_requests, window_s=batch_window_ms / 1000,
                                      max_batch=max_batch)
        self._finalizer = weakref.finalize(self, self._worker.stop)

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike[str] = DEFAULT_MODEL,
        *,
        device: str | None = None,
        dtype: str | Any | None = None,
        token: str | None = None,
        revision: str | None = None,
        local_files_only: bool | None = None,
        **kwargs: Any,
    ) -> Sam3Engine:
        """Load SAM 3 from a hub id (default ``facebook/sam3``, gated) or a local directory.

        A hub id is probed once first (:func:`sam3core.loading.plan_hub_access`): with no answer it
        loads from the local hub cache, or fails at once naming the fixes.

        Args:
            model: Hub id or directory written by ``save_pretrained``.
            device: See the class.
            dtype: See the class.
            token: Hub token (default: the logged-in one / ``HF_TOKEN``).
            revision: Hub revision.
            local_files_only: ``True``: never the network (the local hub cache only); ``False``: the
                hub must answer; ``None`` (default): the hub when it answers, else the local hub cache.
            **kwargs: Passed to the constructor (``cache_bytes``, ``dedup_iou``, ...).

        Raises:
            Sam3LoadError: Weights missing, gated or unreachable, or a broken torch/torchvision
                pair; the message names the fix.
        """
        net, processor = load_model_and_processor(model, token=token, revision=revision,
                                                  local_files_only=local_files_only)
        return cls(net, processor, device=device, dtype=dtype, name=str(model), **kwargs)

    def close(self) -> None:
        """Stop the worker thread (pending calls still finish). Idempotent."""
        self._finalizer()

    def __enter__(self) -> Sam3Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Sam3Engine({self.name!r}, device={self.device}, dtype={self.dtype})"

    # ---------------------------------------------------------------- public API
    @property
    def meta_text_prompts(self) -> bool:
        """Whether text-only prompts carry Meta's empty-prompt geometry token (see the class)."""
        return self.runner.meta_text_prompts

    @meta_text_prompts.setter
    def meta_text_prompts(self, value: bool) -> None:
        self.runner.meta_text_prompts = bool(value)

    @property
    def stats(self) -> EngineStats:
        """Live counters (vision-encoder runs, cache hits/misses/evictions, batching, ...)."""
        stats = self.runner.stats
        stats.batched_requests = self._worker.batched_jobs
        return stats

    def prepare(self, image: ImageInput) -> ImageHandle:
        """Decode, orient, convert and fingerprint an image once (see :func:`prepare_image`)."""
        return prepare_image(image)

    def encode(self, image: ImageInput) -> ImageHandle:
        """Encode an image into the feature cache ahead of time; returns its handle."""
        handle = self.prepare(image)
        self._worker.call(lambda: self.runner.vision_features(handle)).result()
        return handle

    def segment(
        self,
        image: ImageInput,
        phrases: str | Sequence[str] | None,
        *,
        boxes: Sequence[Box] | None = None,
        box_labels: Sequence[int] | None = None,
        score_threshold: float = 0.5,
        mask_threshold: float = 0.5,
        max_masks: int | None = 100,
        dedup_iou: float | str | None = "default",
        mask_upsampling: str = "default",
    ) -> sv.Detections | list[sv.Detections]:
        """Segment every instance of a concept.

        Args:
            image: Path, bytes, PIL image, uint8 array or :class:`ImageHandle`.
            phrases: One noun phrase (-> one ``sv.Detections``), a list of phrases (-> a list,
                run as one batched forward), or ``None`` with ``boxes`` (exemplars only).
            boxes: Exemplar boxes ``(x1, y1, x2, y2)`` in pixels (single phrase or ``None`` only).
            box_labels: 1 (positive) / 0 (negative) per box; default all positive.
            score_threshold: Keep instances scoring strictly above this (score = query x presence).
            mask_threshold: Mask probability threshold.
            max_masks: At most this many instances per phrase (highest scores); ``None`` = no cap.
            dedup_iou: Duplicate-suppression IoU (``None`` off; ``"default"``: the engine's).
            mask_upsampling: ``"probabilities"``, ``"logits"`` (see the class) or ``"default"``
                (the engine's).

        Returns:
            ``sv.Detections`` (or a list of them) with ``xyxy`` (N, 4) float32 inclusive pixel
            corners of the masks, ``mask`` (N, H, W) bool, ``confidence`` (N,),
            ``data["phrase"]`` (N,) and ``data["predicted_xyxy"]`` (N, 4) float32 SAM 3 predicted
            boxes (continuous pixel xyxy: x2/y2 are edges, not clipped); sorted by confidence,
            highest first; empty masks dropped.

        Raises:
            ValueError: Bad image, empty phrase, bad boxes, thresholds or upsampling order.
        """
        handle = self.prepare(image)
        prompts, single = self._prompts(handle, phrases, boxes, box_labels)
        job = self._job(handle, prompts, score_threshold, mask_threshold, max_masks, dedup_iou, mask_upsampling)
        results = self._worker.submit(job).result()
        return results[0] if single else results

    async def asegment(
        self,
        image: ImageInput,
        phrases: str | Sequence[str] | None,
        **kwargs: Any,
    ) -> sv.Detections | list[sv.Detections]:
        """Awaitable :meth:`segment`; never blocks the event loop (same arguments)."""
        handle = image if isinstance(image, ImageHandle) else await asyncio.to_thread(self.prepare, image)
        prompts, single = self._prompts(handle, phrases, kwargs.pop("boxes", None), kwargs.pop("box_labels", None))
        job = self._job(handle, prompts, kwargs.pop("score_threshold", 0.5), kwargs.pop("mask_threshold", 0.5),
                        kwargs.pop("max_masks", 100), kwargs.pop("dedup_iou", "default"),
                        kwargs.pop("mask_upsampling", "default"))
        if kwargs:
            raise TypeError(f"unexpected arguments: {sorted(kwargs)}")
        results = await asyncio.wrap_future(self._worker.submit(job))
        return results[0] if single else results

    def clear_cache(self) -> None:
        """Drop all cached image and text features."""
        self.runner.clear()

    def run_on_worker(self, fn: Callable[[], Any]) -> concurrent.futures.Future[Any]:
        """Run ``fn`` on the thread that owns the model and its caches (e.g. a tracker reading them)."""
        return self._worker.call(fn)

    # ---------------------------------------------------------------- validation
    def _prompts(self, handle: ImageHandle, phrases: str | Sequence[str] | None,
                 boxes: Sequence[Box] | None, box_labels: Sequence[int] | None) -> tuple[list[Prompt], bool]:
        single = phrases is None or isinstance(phrases, str)
        items: list[str | None] = [phrases] if single else list(phrases)  # type: ignore[list-item]
        if not items:
            raise ValueError("no phrases given; pass a noun phrase or a list of them")
        norm_boxes = norm_labels = None
        if boxes is not None and len(boxes) > 0:
            if len(items) != 1:
                raise ValueError("exemplar boxes go with a single phrase (or None); call segment once per phrase")
            norm_boxes, norm_labels = normalise_exemplar_boxes(boxes, box_labels, handle.width, handle.height)
        elif box_labels is not None and len(box_labels) > 0:
            raise ValueError("box_labels given without boxes")
        prompts = []
        for p in items:
            if p is None:
                if norm_boxes is None:
                    raise ValueError("phrase is None and no exemplar boxes were given; pass a phrase or boxes")
                prompts.append(Prompt(EXEMPLAR_TEXT, "", norm_boxes, norm_labels))
                continue
            if not isinstance(p, str):
                raise ValueError(f"phrases must be strings, got {type(p).__name__}")
            text = " ".join(p.split())
            if not text:
                raise ValueError("empty phrase; pass a short noun phrase such as 'red car'")
            prompts.append(Prompt(text, text, norm_boxes, norm_labels))
        return prompts, single

    def _job(self, handle: ImageHandle, prompts: list[Prompt], score_threshold: float, mask_threshold: float,
             max_masks: int | None, dedup_iou: float | str | None, mask_upsampling: str = "default") -> Job:
        for name, value in (("score_threshold", score_threshold), ("mask_threshold", mask_threshold)):
            if not 0.0 <= float(value) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if max_masks is not None and int(max_masks) < 1:
            raise ValueError(f"max_masks must be >= 1 (or None for no cap), got {max_masks}")
        order = self.mask_upsampling if mask_upsampling == "default" else mask_upsampling
        if order not in MASK_UPSAMPLING:
            raise ValueError(f"mask_upsampling must be one of {(*MASK_UPSAMPLING, 'default')}, got {mask_upsampling!r}")
        dedup = self.dedup_iou if dedup_iou == "default" else dedup_iou
        cap = None if max_masks is None else int(max_masks)
        params = _Params(float(score_threshold), float(mask_threshold), cap, dedup, order)  # type: ignore[arg-type]
        # exemplar prompts carry per-request box tensors: they run on their own
        return Job(_Request(handle, prompts, params), size=len(prompts), batchable=prompts[0].boxes is None)

    # ---------------------------------------------------------------- worker-side
    def _run_requests(self, requests: list[_Request]) -> list[list[sv.Detections]]:
        """One detector forward for every prompt of every request; results split back per request."""
        cap = self._worker.max_batch
        if len(requests) == 1 and len(requests[0].prompts) > cap:  # keep within the memory budget
            req = requests[0]
            chunks = [_Request(req.handle, req.prompts[i : i + cap], req.params)
                      for i in range(0, len(req.prompts), cap)]
            return [[det for chunk in chunks for det in self._run_requests([chunk])[0]]]
        outputs = self.runner.forward([(r.handle, r.prompts) for r in requests])
        results, row = [], 0
        for req in requests:
            p, size = req.params, (req.handle.height, req.handle.width)
            dets = []
            for prompt in req.prompts:
                dets.append(prompt_detections(outputs, row, size, prompt.label, score_threshold=p.score_threshold,
                                              mask_threshold=p.mask_threshold, max_masks=p.max_masks,
                                              dedup_iou=p.dedup_iou, order=p.mask_upsampling,
                                              chunk_bytes=self.chunk_bytes))
                row += 1
            results.append(dets)
        return results
