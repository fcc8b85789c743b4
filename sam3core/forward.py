"""The model side of the engine: cached image and text features, and one batched SAM 3 forward.

:class:`ModelRunner` owns the ``transformers.Sam3Model`` and its caches and is driven by the
engine's worker thread only (it is not thread-safe). Given prompts on one or more images it runs
the detector once over all of them and returns the raw ``Sam3Model`` outputs, one batch row per
prompt; turning rows into detections is :mod:`sam3core.postprocess`'s job.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sam3core.cache import CacheStats, LRUCache
from sam3core.image import ImageHandle

logger = logging.getLogger(__name__)

#: Default image-feature cache budget. Full-size SAM 3 features are ~112 MB per image in fp32
#: (~56 MB in bf16) once the image-independent position encodings are shared, so 2 GiB holds
#: ~18 images in fp32 or ~36 in bf16.
DEFAULT_CACHE_BYTES = 2 * 1024**3
DEFAULT_TEXT_CACHE_BYTES = 64 * 1024**2
TEXT_MAX_TOKENS = 32  # SAM 3's text encoder has 32 positions; longer inputs crash untruncated

Features = tuple[tuple[Any, ...], tuple[Any, ...]]  # (FPN levels, their position encodings)


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
class Prompt:
    """One prompt of a forward: a phrase, optionally with exemplar boxes.

    Attributes:
        text: The text the model reads.
        label: The phrase reported in ``data["phrase"]`` (empty for exemplar-only prompts).
        boxes: ``(B, 4)`` normalised ``(cx, cy, w, h)`` exemplar boxes, or ``None``.
        box_labels: ``(B,)`` int64, 1 positive / 0 negative, or ``None``.
    """

    text: str
    label: str
    boxes: np.ndarray | None = None
    box_labels: np.ndarray | None = None


class ModelRunner:
    """Runs ``Sam3Model`` for the engine: feature caches, tokenisation and the batched forward.

    Args:
        model: A ``transformers.Sam3Model`` already on ``device`` in ``dtype``, in eval mode.
        processor: Its ``Sam3Processor``.
        device: The model's device.
        dtype: The model's dtype.
        cache_bytes: Image-feature cache budget in bytes.
        text_cache_bytes: Text-feature cache budget in bytes.
        meta_text_prompts: Append the geometry encoder's empty-prompt token to text-only prompts
            (see :func:`geometry_prompt_token`).
    """

    def __init__(self, model: Any, processor: Any, device: Any, dtype: Any, *, cache_bytes: int,
                 text_cache_bytes: int, meta_text_prompts: bool) -> None:
        self.model, self.processor, self.device, self.dtype = model, processor, device, dtype
        self.meta_text_prompts = meta_text_prompts
        self.images: LRUCache[tuple[Any, ...]] = LRUCache(cache_bytes, _tensor_bytes)
        self.texts: LRUCache[tuple[Any, Any]] = LRUCache(text_cache_bytes, _tensor_bytes)
        self._pos_enc: dict[tuple, tuple[Any, ...]] = {}
        self.trunks: LRUCache[Any] | None = None  # ViT trunk outputs, kept only for a tracker (keep_trunks)
        self.stats = EngineStats(image_cache=self.images.stats, text_cache=self.texts.stats)

    def keep_trunks(self, budget_bytes: int) -> None:
        """Also keep each newly encoded image's ViT trunk output, within ``budget_bytes``.

        SAM 3's tracker (:class:`sam3core.tracker.Sam3Tracker`) reads the same ViT trunk through
        a neck of its own, so keeping the trunk output lets it skip the ViT for images the
        detector already encoded. Off until called (no memory is spent on it otherwise); a second
        call keeps the first budget.
        """
        if self.trunks is None:
            self.trunks = LRUCache(budget_bytes, _tensor_bytes)

    def trunk_features(self, handle: ImageHandle) -> Any:
        """The image's ViT trunk output ``(1, H/14 * W/14, hidden)`` (tokens row-major), from the cache
        or one vision-encoder pass (which fills the detector's feature cache as well).

        Raises:
            RuntimeError: If :meth:`keep_trunks` was not called.
        """
        if self.trunks is None:
            raise RuntimeError("trunk outputs are not kept; call keep_trunks() first")
        trunk = self.trunks.get(handle.digest)
        if trunk is None:
            _, trunk = self._encode(handle)
        return trunk

    def forward(self, items: Sequence[tuple[ImageHandle, Sequence[Prompt]]]) -> Any:
        """One detector forward over every prompt of every image; batch row ``i`` is the ``i``-th prompt.

        Text-only prompts and exemplar prompts are not mixed in one call (exemplars need box tensors).

        Returns:
            The ``Sam3Model`` output (``pred_logits``, ``presence_logits``, ``pred_masks``, ``pred_boxes``).
        """
        import torch
        from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

        per_image = [(self.vision_features(handle), len(prompts)) for handle, prompts in items]
        batch = sum(n for _, n in per_image)
        positions = per_image[0][0][1]
        if len(items) == 1:  # one image: broadcast views, no copies
            levels = tuple(t.expand(batch, *t.shape[1:]) for t in per_image[0][0][0])
        else:
            levels = tuple(
                torch.cat([lv[i].expand(n, *lv[i].shape[1:]) for (lv, _), n in per_image], dim=0)
                for i in range(len(positions))
            )
        vision = Sam3VisionEncoderOutput(
            fpn_hidden_states=levels,
            fpn_position_encoding=tuple(t.expand(batch, *t.shape[1:]) for t in positions),
        )
        prompts = [p for _, ps in items for p in ps]
        text_embeds, attention_mask = self.text_features([p.text for p in prompts])
        kwargs: dict[str, Any] = {}
        if prompts[0].boxes is None:
            if self.meta_text_prompts:  # the token Meta's geometry encoder gives an empty box prompt
                text_embeds, attention_mask = self._with_geometry_token(per_image, text_embeds, attention_mask)
        else:
            kwargs["input_boxes"] = torch.as_tensor(np.stack([p.boxes for p in prompts]), device=self.device,
                                                    dtype=self.dtype)
            kwargs["input_boxes_labels"] = torch.as_tensor(np.stack([p.box_labels for p in prompts]),
                                                           device=self.device)
        self.stats.forwards += 1
        self.stats.largest_batch = max(self.stats.largest_batch, batch)
        return self.model(vision_embeds=vision, text_embeds=text_embeds, attention_mask=attention_mask, **kwargs)

    def _with_geometry_token(self, per_image: list[tuple[Features, int]], text_embeds: Any,
                             attention_mask: Any) -> tuple[Any, Any]:
        """Append each image's empty-prompt geometry token (computed once per image, batch 1) to its prompts."""
        import torch
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        token = torch.cat([geometry_prompt_token(self.model, lv, pos).expand(n, -1, -1)
                           for (lv, pos), n in per_image], dim=0)
        embeds = torch.cat([text_embeds.pooler_output, token.to(text_embeds.pooler_output.dtype)], dim=1)
        mask = torch.cat([attention_mask, attention_mask.new_ones(attention_mask.shape[0], 1)], dim=1)
        return BaseModelOutputWithPooling(pooler_output=embeds), mask

    def vision_features(self, handle: ImageHandle) -> Features:
        """The image's FPN features and position encodings, from the cache or one ViT pass."""
        levels = self.images.get(handle.digest)
        if levels is None:
            levels, _ = self._encode(handle)
        key = tuple((tuple(t.shape), str(t.dtype)) for t in levels)
        return levels, self._pos_enc[key]

    def _encode(self, handle: ImageHandle) -> tuple[tuple[Any, ...], Any]:
        """One vision-encoder pass: cache the FPN levels (and the trunk output when kept); return both."""
        pixels = self.processor.image_processor(images=handle.image, return_tensors="pt").pixel_values
        out = self.model.get_vision_features(pixel_values=pixels.to(self.device, self.dtype))
        self.stats.vision_encoder_runs += 1
        levels = tuple(t.detach() for t in out.fpn_hidden_states)
        key = tuple((tuple(t.shape), str(t.dtype)) for t in levels)
        # The FPN position encodings depend only on the feature shapes, not on the image:
        # keep one copy instead of one per cached image (halves the cache's footprint).
        self._pos_enc.setdefault(key, tuple(t.detach() for t in out.fpn_position_encoding))
        self.images.put(handle.digest, levels)
        trunk = out.last_hidden_state.detach()
        if self.trunks is not None:
            self.trunks.put(handle.digest, trunk)
        logger.debug("encoded image %s (%dx%d)", handle.digest[:12], handle.width, handle.height)
        return levels, trunk

    def text_features(self, texts: list[str]) -> tuple[Any, Any]:
        """Text embeddings and attention masks of ``texts`` (one text-encoder pass for the uncached ones)."""
        import torch
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        found: dict[str, tuple[Any, Any]] = {}
        missing: list[str] = []
        for t in dict.fromkeys(texts):
            hit = self.texts.get(t)
            if hit is None:
                missing.append(t)
            else:
                found[t] = hit
        if missing:
            tokens = self.tokenize(missing)
            out = self.model.get_text_features(input_ids=tokens["input_ids"].to(self.device),
                                               attention_mask=tokens["attention_mask"].to(self.device))
            self.stats.text_encoder_runs += 1
            for i, t in enumerate(missing):
                # each phrase keeps its own attention mask with its embedding
                entry = (out.pooler_output[i : i + 1].detach(), tokens["attention_mask"][i : i + 1].to(self.device))
                self.texts.put(t, entry)
                found[t] = entry
        embeds = torch.cat([found[t][0] for t in texts], dim=0)
        mask = torch.cat([found[t][1] for t in texts], dim=0)
        return BaseModelOutputWithPooling(pooler_output=embeds), mask

    def tokenize(self, texts: list[str]) -> Any:
        """The processor's tokens of ``texts``, padded to 32; longer phrases are truncated with a warning."""
        tokenizer = self.processor.tokenizer
        for t in texts:
            n = len(tokenizer(t, verbose=False)["input_ids"])
            if n > TEXT_MAX_TOKENS:
                logger.warning("phrase %r is %d tokens; SAM 3's text encoder takes %d, so it is truncated",
                               t, n, TEXT_MAX_TOKENS)
        return tokenizer(texts, padding="max_length", max_length=TEXT_MAX_TOKENS, truncation=True,
                         return_tensors="pt")

    def clear(self) -> None:
        """Drop all cached image and text features."""
        self.images.clear()
        self.texts.clear()
        if self.trunks is not None:
            self.trunks.clear()


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
