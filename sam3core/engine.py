"""The SAM 3 engine: encode each image once, answer many phrases from cached features.

One worker thread owns the model and runs every forward pass (``torch.inference_mode`` is
entered per call, since it is per-thread state). Callers from any thread or asyncio task submit
work to it through :meth:`Sam3Engine.segment` (blocking) or :meth:`Sam3Engine.asegment`
(awaitable). Because one thread runs every forward, overlapping requests for the same new image
encode it once: the second finds the features the first stored. The job queue is also where
cross-request batching plugs in.

Coordinates: boxes are ``(x1, y1, x2, y2)`` pixels of the original, EXIF-oriented image
(x right, y down); returned ``xyxy`` are derived from the masks in supervision's inclusive
convention (x2/y2 are the last column/row a mask covers); ``data["predicted_xyxy"]`` holds SAM 3's
own predicted boxes in transformers' continuous convention (x2/y2 are right/bottom edges, see
:mod:`sam3core.postprocess`); masks are ``(N, H, W)`` bool at the original resolution.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import supervision as sv

from sam3core.cache import CacheStats, LRUCache
from sam3core.image import ImageHandle, ImageInput, prepare_image
from sam3core.loading import DEFAULT_MODEL, load_model_and_processor, resolve_device_dtype
from sam3core.postprocess import (
    DEFAULT_CHUNK_BYTES,
    detections_from_masks,
    normalise_exemplar_boxes,
    predicted_boxes,
    select_queries,
    upsample_masks,
)
from sam3core.protocol import Box
from sam3core.worker import BatchingWorker, Job

logger = logging.getLogger(__name__)

#: Default image-feature cache budget. Full-size SAM 3 features are ~112 MB per image in fp32
#: (~56 MB in bf16) once the image-independent position encodings are shared, so 2 GiB holds
#: ~18 images in fp32 or ~36 in bf16.
DEFAULT_CACHE_BYTES = 2 * 1024**3
DEFAULT_TEXT_CACHE_BYTES = 64 * 1024**2
TEXT_MAX_TOKENS = 32  # SAM 3's text encoder has 32 positions; longer inputs crash untruncated
EXEMPLAR_TEXT = "visual"  # the prompt transformers' processor uses when only boxes are given


@dataclass
class EngineStats:
    """Counters of one engine.

    Attributes:
        vision_encoder_runs: Images encoded by the ViT (one per cache miss).
        text_encoder_runs: Text-encoder forwards (one per batch of uncached phrases).
        forwards: Detector forwards (one per batch, whatever its phrase and request count).
        batched_requests: Requests that shared a forward with other requests.
        largest_batch: Most prompts run in one forward.
        image_cache: Image-feature cache counters.
        text_cache: Text-feature cache counters.
    """

    vision_encoder_runs: int = 0
    text_encoder_runs: int = 0
    forwards: int = 0
    batched_requests: int = 0
    largest_batch: int = 0
    image_cache: CacheStats = field(default_factory=CacheStats)
    text_cache: CacheStats = field(default_factory=CacheStats)


@dataclass(frozen=True)
class _Params:
    score_threshold: float
    mask_threshold: float
    max_masks: int | None
    dedup_iou: float | None


@dataclass(frozen=True)
class _Request:
    handle: ImageHandle
    prompts: list[_Prompt]
    params: _Params


@dataclass(frozen=True)
class _Prompt:
    text: str
    label: str
    boxes: np.ndarray | None  # (B, 4) normalised cx, cy, w, h
    box_labels: np.ndarray | None  # (B,) int64, 1 positive / 0 negative


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
    ) -> None:
        self.device, self.dtype = resolve_device_dtype(device, dtype)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.processor = processor
        self.name = name
        self.dedup_iou = dedup_iou
        self.chunk_bytes = chunk_bytes
        self.meta_text_prompts = meta_text_prompts
        self._images: LRUCache[tuple[Any, ...]] = LRUCache(cache_bytes, _tensor_bytes)
        self._texts: LRUCache[tuple[Any, Any]] = LRUCache(text_cache_bytes, _tensor_bytes)
        self._pos_enc: dict[tuple, tuple[Any, ...]] = {}
        self._stats = EngineStats(image_cache=self._images.stats, text_cache=self._texts.stats)
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
    def stats(self) -> EngineStats:
        """Live counters (vision-encoder runs, cache hits/misses/evictions, batching, ...)."""
        self._stats.batched_requests = self._worker.batched_jobs
        return self._stats

    def prepare(self, image: ImageInput) -> ImageHandle:
        """Decode, orient, convert and fingerprint an image once (see :func:`prepare_image`)."""
        return prepare_image(image)

    def encode(self, image: ImageInput) -> ImageHandle:
        """Encode an image into the feature cache ahead of time; returns its handle."""
        handle = self.prepare(image)
        self._worker.call(lambda: self._vision_features(handle)).result()
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

        Returns:
            ``sv.Detections`` (or a list of them) with ``xyxy`` (N, 4) float32 inclusive pixel
            corners of the masks, ``mask`` (N, H, W) bool, ``confidence`` (N,),
            ``data["phrase"]`` (N,) and ``data["predicted_xyxy"]`` (N, 4) float32 SAM 3 predicted
            boxes (continuous pixel xyxy: x2/y2 are edges, not clipped); sorted by confidence,
            highest first; empty masks dropped.

        Raises:
            ValueError: Bad image, empty phrase, bad boxes or thresholds.
        """
        handle = self.prepare(image)
        prompts, single = self._prompts(handle, phrases, boxes, box_labels)
        job = self._job(handle, prompts, score_threshold, mask_threshold, max_masks, dedup_iou)
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
                        kwargs.pop("max_masks", 100), kwargs.pop("dedup_iou", "default"))
        if kwargs:
            raise TypeError(f"unexpected arguments: {sorted(kwargs)}")
        results = await asyncio.wrap_future(self._worker.submit(job))
        return results[0] if single else results

    def clear_cache(self) -> None:
        """Drop all cached image and text features."""
        self._images.clear()
        self._texts.clear()

    # ---------------------------------------------------------------- validation
    def _prompts(self, handle: ImageHandle, phrases: str | Sequence[str] | None,
                 boxes: Sequence[Box] | None, box_labels: Sequence[int] | None) -> tuple[list[_Prompt], bool]:
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
                prompts.append(_Prompt(EXEMPLAR_TEXT, "", norm_boxes, norm_labels))
                continue
            if not isinstance(p, str):
                raise ValueError(f"phrases must be strings, got {type(p).__name__}")
            text = " ".join(p.split())
            if not text:
                raise ValueError("empty phrase; pass a short noun phrase such as 'red car'")
            prompts.append(_Prompt(text, text, norm_boxes, norm_labels))
        return prompts, single

    def _job(self, handle: ImageHandle, prompts: list[_Prompt], score_threshold: float, mask_threshold: float,
             max_masks: int | None, dedup_iou: float | str | None) -> Job:
        for name, value in (("score_threshold", score_threshold), ("mask_threshold", mask_threshold)):
            if not 0.0 <= float(value) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if max_masks is not None and int(max_masks) < 1:
            raise ValueError(f"max_masks must be >= 1 (or None for no cap), got {max_masks}")
        dedup = self.dedup_iou if dedup_iou == "default" else dedup_iou
        cap = None if max_masks is None else int(max_masks)
        params = _Params(float(score_threshold), float(mask_threshold), cap, dedup)  # type: ignore[arg-type]
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
        outputs = self._forward(requests)
        results, offset = [], 0
        for req in requests:
            dets = []
            for prompt in req.prompts:
                b = offset
                offset += 1
                presence = outputs.presence_logits[b] if outputs.presence_logits is not None else None
                p = req.params
                keep, scores = select_queries(outputs.pred_logits[b], presence, outputs.pred_masks[b],
                                              score_threshold=p.score_threshold, mask_threshold=p.mask_threshold,
                                              max_masks=p.max_masks, dedup_iou=p.dedup_iou)
                size = (req.handle.height, req.handle.width)
                masks = upsample_masks(outputs.pred_masks[b][keep], size, p.mask_threshold,
                                       chunk_bytes=self.chunk_bytes)
                boxes = predicted_boxes(outputs.pred_boxes[b], keep, size)
                dets.append(detections_from_masks(masks, scores.float().cpu().numpy(), prompt.label, boxes))
            results.append(dets)
        return results

    def _forward(self, requests: list[_Request]) -> Any:
        import torch
        from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

        per_request = [(self._vision_features(r.handle), len(r.prompts)) for r in requests]
        batch = sum(n for _, n in per_request)
        positions = per_request[0][0][1]
        if len(requests) == 1:  # one image: broadcast views, no copies
            levels = tuple(t.expand(batch, *t.shape[1:]) for t in per_request[0][0][0])
        else:
            levels = tuple(
                torch.cat([lv[i].expand(n, *lv[i].shape[1:]) for (lv, _), n in per_request], dim=0)
                for i in range(len(positions))
            )
        vision = Sam3VisionEncoderOutput(
            fpn_hidden_states=levels,
            fpn_position_encoding=tuple(t.expand(batch, *t.shape[1:]) for t in positions),
        )
        prompts = [p for r in requests for p in r.prompts]
        text_embeds, attention_mask = self._text_features([p.text for p in prompts])
        kwargs: dict[str, Any] = {}
        if prompts[0].boxes is None:
            if self.meta_text_prompts:  # the token Meta's geometry encoder gives an empty box prompt
                text_embeds, attention_mask = self._with_geometry_token(per_request, text_embeds, attention_mask)
        else:
            kwargs["input_boxes"] = torch.as_tensor(np.stack([p.boxes for p in prompts]), device=self.device,
                                                    dtype=self.dtype)
            kwargs["input_boxes_labels"] = torch.as_tensor(np.stack([p.box_labels for p in prompts]),
                                                           device=self.device)
        self._stats.forwards += 1
        self._stats.largest_batch = max(self._stats.largest_batch, batch)
        return self.model(vision_embeds=vision, text_embeds=text_embeds, attention_mask=attention_mask, **kwargs)

    def _with_geometry_token(self, per_request: list[tuple[tuple[tuple[Any, ...], tuple[Any, ...]], int]],
                             text_embeds: Any, attention_mask: Any) -> tuple[Any, Any]:
        """Append each image's empty-prompt geometry token (computed once per image, batch 1) to its prompts."""
        import torch
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        token = torch.cat([geometry_prompt_token(self.model, lv, pos).expand(n, -1, -1)
                           for (lv, pos), n in per_request], dim=0)
        embeds = torch.cat([text_embeds.pooler_output, token.to(text_embeds.pooler_output.dtype)], dim=1)
        mask = torch.cat([attention_mask, attention_mask.new_ones(attention_mask.shape[0], 1)], dim=1)
        return BaseModelOutputWithPooling(pooler_output=embeds), mask

    def _vision_features(self, handle: ImageHandle) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        levels = self._images.get(handle.digest)
        if levels is None:
            pixels = self.processor.image_processor(images=handle.image, return_tensors="pt").pixel_values
            out = self.model.get_vision_features(pixel_values=pixels.to(self.device, self.dtype))
            self._stats.vision_encoder_runs += 1
            levels = tuple(t.detach() for t in out.fpn_hidden_states)
            key = tuple((tuple(t.shape), str(t.dtype)) for t in levels)
            # The FPN position encodings depend only on the feature shapes, not on the image:
            # keep one copy instead of one per cached image (halves the cache's footprint).
            self._pos_enc.setdefault(key, tuple(t.detach() for t in out.fpn_position_encoding))
            self._images.put(handle.digest, levels)
            logger.debug("encoded image %s (%dx%d)", handle.digest[:12], handle.width, handle.height)
        key = tuple((tuple(t.shape), str(t.dtype)) for t in levels)
        return levels, self._pos_enc[key]

    def _text_features(self, texts: list[str]) -> tuple[Any, Any]:
        import torch
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        found: dict[str, tuple[Any, Any]] = {}
        missing: list[str] = []
        for t in dict.fromkeys(texts):
            hit = self._texts.get(t)
            if hit is None:
                missing.append(t)
            else:
                found[t] = hit
        if missing:
            tokens = self._tokenize(missing)
            out = self.model.get_text_features(input_ids=tokens["input_ids"].to(self.device),
                                               attention_mask=tokens["attention_mask"].to(self.device))
            self._stats.text_encoder_runs += 1
            for i, t in enumerate(missing):
                # each phrase keeps its own attention mask with its embedding
                entry = (out.pooler_output[i : i + 1].detach(), tokens["attention_mask"][i : i + 1].to(self.device))
                self._texts.put(t, entry)
                found[t] = entry
        embeds = torch.cat([found[t][0] for t in texts], dim=0)
        mask = torch.cat([found[t][1] for t in texts], dim=0)
        return BaseModelOutputWithPooling(pooler_output=embeds), mask

    def _tokenize(self, texts: list[str]) -> Any:
        tokenizer = self.processor.tokenizer
        for t in texts:
            n = len(tokenizer(t, verbose=False)["input_ids"])
            if n > TEXT_MAX_TOKENS:
                logger.warning("phrase %r is %d tokens; SAM 3's text encoder takes %d, so it is truncated",
                               t, n, TEXT_MAX_TOKENS)
        return tokenizer(texts, padding="max_length", max_length=TEXT_MAX_TOKENS, truncation=True,
                         return_tensors="pt")


def geometry_prompt_token(model: Any, levels: Sequence[Any], positions: Sequence[Any]) -> Any:
    """The token SAM 3's geometry encoder makes from an empty box prompt, for text-only prompts.

    Meta's SAM 3 always runs its geometry encoder: with no boxes it returns one learned CLS token,
    attended to the image, that is appended to the text tokens, so the DETR encoder, the decoder,
    the scorer and the mask head all read text + this token. transformers' ``Sam3Model.forward``
    (5.17 to 5.24 at least) skips the geometry encoder when no boxes are passed, and its text-only
    scores, presence and masks then differ from Meta's (see ``benchmarks/parity.py``). Appending
    this token to ``text_embeds`` (mask 1) gives Meta's prompt. It depends on the image only.

    Args:
        model: A ``transformers.Sam3Model``.
        levels: The FPN features of ``get_vision_features`` (all levels, batch ``B``).
        positions: Their position encodings.

    Returns:
        ``(B, 1, hidden)`` tensor.
    """
    import torch

    b, dev = levels[0].shape[0], levels[0].device
    out = model.geometry_encoder(
        box_embeddings=torch.zeros(b, 0, 4, device=dev, dtype=levels[0].dtype),
        box_mask=torch.zeros(b, 0, dtype=torch.bool, device=dev),
        box_labels=torch.zeros(b, 0, dtype=torch.long, device=dev),
        img_feats=tuple(levels[:-1]), img_pos_embeds=tuple(positions[:-1]))  # as Sam3Model.forward: no 0.5x level
    return out.last_hidden_state


def _tensor_bytes(value: Any) -> int:
    if hasattr(value, "element_size"):
        return int(value.numel() * value.element_size())
    if isinstance(value, (tuple, list)):
        return sum(_tensor_bytes(v) for v in value)
    return 0
