"""SAM 3's tracker as an image segmenter at points and boxes, sharing the engine's ViT trunk.

SAM 3 is a detector (``Sam3Model``: concept prompts, every instance) and a tracker
(``Sam3TrackerModel``, SAM 2's design: one object from points, a box or a mask) on one shared
vision backbone. In transformers the two are separate models, but the released checkpoint keeps
one ViT: ``Sam3TrackerModel`` loads its ``vision_encoder.backbone`` from the detector's
(``detector_model.vision_encoder.backbone``) and only its neck from the tracker's own
(``tracker_neck``). So what can be shared is exactly the ViT trunk and its output for an image;
the necks differ (two sets of convolutions on the same trunk output), so the detector's cached
FPN features are of no use to the tracker.

:class:`Sam3Tracker` wraps a :class:`~sam3core.engine.Sam3Engine`. When the two trunks are the
same (equal configs and weights, as in the released checkpoint) it drops its own copy and uses the
engine's module, and it reads the trunk output the engine keeps for every image it encodes
(:meth:`sam3core.forward.ModelRunner.keep_trunks`): a ``segment_at`` on an image a
``segment_phrase`` already saw runs no ViT at all, only the tracker's neck, prompt encoder and
mask decoder. Everything runs on the engine's worker thread, with the engine's image
preprocessing (the trunk's input is the detector's ``Sam3ImageProcessor`` output).

It is also a :class:`~sam3core.protocol.SegmentEngine` (concept prompts go to the engine), so
an :class:`sam3agent.Agent` or an eval given a ``Sam3Tracker`` in place of the engine can use
both ``segment_phrase`` and ``segment_at``.

Features follow the path transformers' ``Sam3VideoModel`` (and Meta's SAM 3) use for the
tracker: the first three neck levels (4x, 2x and 1x the trunk's 72x72 grid), the two finer ones
projected by the mask decoder's ``conv_s0`` / ``conv_s1``, and the no-memory embedding added to
the coarsest of the three. (``Sam3TrackerModel.forward(pixel_values=...)`` adds that embedding to
the neck's fourth, 0.5x level, which it then drops; with a zero embedding the two agree.)

Coordinates are pixels of the original, EXIF-oriented image (x right, y down); they are scaled
to the model's square input as SAM's own predictors scale them (``x * 1008 / width``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import supervision as sv

from sam3core.cache import CacheStats, LRUCache
from sam3core.engine import Sam3Engine
from sam3core.forward import EngineStats, _tensor_bytes
from sam3core.image import ImageHandle, ImageInput
from sam3core.loading import (
    HubUnavailableError,
    Sam3LoadError,
    check_torch_stack,
    looks_like_path,
    plan_hub_access,
    unavailable_hint,
)
from sam3core.postprocess import detections_from_masks, empty_detections, mask_boxes_continuous
from sam3core.protocol import Box, Point
from sam3core.visual_prompt import VisualPrompt, check_visual_prompt

__all__ = ["DEFAULT_TRACKER_CACHE_BYTES", "DEFAULT_TRUNK_CACHE_BYTES", "Sam3Tracker", "TrackerStats"]

logger = logging.getLogger(__name__)

DEFAULT_TRUNK_CACHE_BYTES = 512 * 1024**2
"""Budget of the engine's trunk-output cache: a full-size trunk output is 21 MB in fp32 (10.6 in bf16)."""
DEFAULT_TRACKER_CACHE_BYTES = 256 * 1024**2
"""Budget of the tracker's own feature cache: about 21 MB per image in fp32 at full size."""

ShareTrunk = bool | Literal["auto"]


@dataclass
class TrackerStats:
    """Counters of one tracker.

    Attributes:
        shares_trunk: Whether the tracker reads the engine's ViT trunk (else it runs its own).
        feature_runs: Images whose tracker features were computed (one per cache miss).
        own_vit_runs: Of those, how many ran the tracker's own ViT (0 while sharing).
        forwards: Prompt-encoder + mask-decoder runs (one per ``segment_at``).
        cache: The tracker-feature cache counters.
    """

    shares_trunk: bool = False
    feature_runs: int = 0
    own_vit_runs: int = 0
    forwards: int = 0
    cache: CacheStats = field(default_factory=CacheStats)


class Sam3Tracker:
    """Segmentation of one object at points and/or a box with ``Sam3TrackerModel``, on a ``Sam3Engine``.

    Args:
        model: A ``transformers.Sam3TrackerModel`` (moved to the engine's device and dtype).
        engine: The :class:`~sam3core.engine.Sam3Engine` whose worker thread, image preprocessing
            and, when the trunks are the same, ViT trunk the tracker uses.
        share_trunk: ``"auto"`` shares the engine's ViT trunk when both have the same
            configuration and weights; ``True`` requires that (else ``ValueError``); ``False``
            always runs the tracker's own ViT.
        cache_bytes: Budget of the tracker-feature cache.
        trunk_cache_bytes: Budget of the engine's trunk-output cache (used while sharing).

    Raises:
        ValueError: ``share_trunk=True`` and the trunks differ, or the model's feature sizes do
            not match its trunk's output grid.

    Attributes:
        engine: The wrapped engine.
        model: The tracker model.
        tracker_stats: Counters (see :class:`TrackerStats`).
    """

    def __init__(self, model: Any, engine: Sam3Engine, *, share_trunk: ShareTrunk = "auto",
                 cache_bytes: int = DEFAULT_TRACKER_CACHE_BYTES,
                 trunk_cache_bytes: int = DEFAULT_TRUNK_CACHE_BYTES) -> None:
        self.engine = engine
        self.model = model.to(device=engine.device, dtype=engine.dtype).eval()
        sizes = [tuple(s) for s in self.model.backbone_feature_sizes]
        grid = tuple(self.model.prompt_encoder.image_embedding_size)
        if len(sizes) != 3 or sizes[-1] != grid:
            raise ValueError(f"tracker feature sizes {sizes} do not end at its trunk grid {grid}")
        self._features: LRUCache[list[Any]] = LRUCache(cache_bytes, _tensor_bytes)
        self.tracker_stats = TrackerStats(cache=self._features.stats)
        same = _same_trunk(self.model.vision_encoder.backbone, engine.model.vision_encoder.backbone)
        if share_trunk is True and not same:
            raise ValueError("share_trunk=True, but the tracker's ViT trunk differs from the engine's (config or "
                             "weights); load both from the same SAM 3 checkpoint, or pass share_trunk='auto'")
        if share_trunk is not False and same:
            self.model.vision_encoder.backbone = engine.model.vision_encoder.backbone  # one copy of the weights
            engine.runner.keep_trunks(trunk_cache_bytes)
            self.tracker_stats.shares_trunk = True
        logger.info("SAM 3 tracker on %s: %s", engine.name,
                    "sharing the engine's ViT trunk" if self.tracker_stats.shares_trunk else "with its own ViT trunk")

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike[str], engine: Sam3Engine, *, token: str | None = None,
                        revision: str | None = None, local_files_only: bool | None = None,
                        **kwargs: Any) -> Sam3Tracker:
        """Load ``Sam3TrackerModel`` from a hub id (``facebook/sam3`` holds it) or a local directory.

        Args:
            source: Hub id, or a directory written by ``Sam3TrackerModel.save_pretrained``.
            engine: See the class.
            token: Hub token.
            revision: Hub revision.
            local_files_only: As :func:`sam3core.loading.load_model_and_processor`.
            **kwargs: Passed to the constructor (``share_trunk``, cache budgets).

        Raises:
            Sam3LoadError: Missing, gated or unreachable weights, or a directory holding only the
                detector; the message names the fix.
        """
        return cls(_load_tracker_model(source, token=token, revision=revision,
                                       local_files_only=local_files_only), engine, **kwargs)

    # ---------------------------------------------------------------- the engine's interface
    @property
    def name(self) -> str:
        """The engine's name."""
        return self.engine.name

    @property
    def device(self) -> Any:
        """The engine's (and the tracker's) device."""
        return self.engine.device

    @property
    def dtype(self) -> Any:
        """The engine's (and the tracker's) dtype."""
        return self.engine.dtype

    @property
    def stats(self) -> EngineStats:
        """The engine's counters (the tracker's own are :attr:`tracker_stats`)."""
        return self.engine.stats

    def prepare(self, image: ImageInput) -> ImageHandle:
        """See :meth:`Sam3Engine.prepare`."""
        return self.engine.prepare(image)

    def segment(self, image: ImageInput, phrases: Any, **kwargs: Any) -> Any:
        """Concept segmentation: :meth:`Sam3Engine.segment`."""
        return self.engine.segment(image, phrases, **kwargs)

    async def asegment(self, image: ImageInput, phrases: Any, **kwargs: Any) -> Any:
        """Concept segmentation: :meth:`Sam3Engine.asegment`."""
        return await self.engine.asegment(image, phrases, **kwargs)

    def encode(self, image: ImageInput) -> ImageHandle:
        """See :meth:`Sam3Engine.encode`."""
        return self.engine.encode(image)

    def clear_cache(self) -> None:
        """Drop the engine's caches and the tracker's features."""
        self.engine.clear_cache()
        self._features.clear()

    def close(self) -> None:
        """Close the engine (its worker thread runs the tracker too). Idempotent."""
        self.engine.close()

    def __enter__(self) -> Sam3Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Sam3Tracker({self.engine!r}, shares_trunk={self.tracker_stats.shares_trunk})"

    # ---------------------------------------------------------------- visual prompts
    def segment_at(self, image: ImageInput, *, points: Sequence[Point] | None = None,
                   point_labels: Sequence[int] | None = None, box: Box | None = None,
                   mask_threshold: float = 0.5) -> sv.Detections:
        """Segment the one object at ``points`` and/or in ``box`` (see :class:`~sam3core.protocol.PointPromptEngine`).

        One point alone is ambiguous (a part or the whole): the model then proposes three masks
        and the one with the highest predicted IoU is kept; with more points or a box it makes one.

        Args:
            image: Path, bytes, PIL image, uint8 array or :class:`ImageHandle`.
            points: ``(N, 2)`` ``(x, y)`` pixels of the original image.
            point_labels: ``(N,)`` 1 on the object / 0 not on it (default all 1).
            box: ``(x1, y1, x2, y2)`` pixels of the original image (left, top, right, bottom).
            mask_threshold: Mask probability threshold, in ``[0, 1)``.

        Returns:
            At most one detection (layout of :class:`~sam3core.protocol.PointPromptEngine`;
            confidence: the predicted IoU, clipped to ``[0, 1]``).

        Raises:
            ValueError: A bad prompt (see :func:`~sam3core.visual_prompt.check_visual_prompt`) or
                threshold.
        """
        handle = self.prepare(image)
        prompt, threshold = self._check(handle, points, point_labels, box, mask_threshold)
        return self.engine.run_on_worker(lambda: self._run(handle, prompt, threshold)).result()

    async def asegment_at(self, image: ImageInput, *, points: Sequence[Point] | None = None,
                          point_labels: Sequence[int] | None = None, box: Box | None = None,
                          mask_threshold: float = 0.5) -> sv.Detections:
        """Awaitable :meth:`segment_at`; never blocks the event loop (same arguments)."""
        handle = image if isinstance(image, ImageHandle) else await asyncio.to_thread(self.prepare, image)
        prompt, threshold = self._check(handle, points, point_labels, box, mask_threshold)
        future = self.engine.run_on_worker(lambda: self._run(handle, prompt, threshold))
        return await asyncio.wrap_future(future)

    @staticmethod
    def _check(handle: ImageHandle, points: Sequence[Point] | None, point_labels: Sequence[int] | None,
               box: Box | None, mask_threshold: float) -> tuple[VisualPrompt, float]:
        if not 0.0 <= float(mask_threshold) < 1.0:
            raise ValueError(f"mask_threshold must be in [0, 1), got {mask_threshold}")
        prompt = check_visual_prompt(points, point_labels, box, handle.width, handle.height)
        p = max(float(mask_threshold), 1e-6)
        return prompt, math.log(p / (1.0 - p))  # the same threshold on the logits

    # ---------------------------------------------------------------- worker side
    def _run(self, handle: ImageHandle, prompt: VisualPrompt, logit_threshold: float) -> sv.Detections:
        """Features, one prompt-encoder + mask-decoder pass, the best mask at the original size."""
        import torch

        embeddings = self.features(handle)
        kwargs = self._prompt_tensors(handle, prompt)
        single_point = prompt.box is None and prompt.points is not None and len(prompt.points) == 1
        out = self.model(image_embeddings=embeddings, multimask_output=single_point, **kwargs)
        self.tracker_stats.forwards += 1
        scores = out.iou_scores[0, 0].float()  # (K,)
        best = int(torch.argmax(scores))
        logits = out.pred_masks[0, 0, best].float()[None, None]  # (1, 1, 4h, 4w) low-resolution logits
        full = torch.nn.functional.interpolate(logits, size=(handle.height, handle.width), mode="bilinear",
                                               align_corners=False)[0, 0]
        mask = (full > logit_threshold).cpu().numpy()
        if not mask.any():
            return empty_detections(handle.height, handle.width)
        stack = mask[None]
        confidence = np.asarray([min(1.0, max(0.0, float(scores[best])))], np.float32)
        return detections_from_masks(stack, confidence, "", mask_boxes_continuous(stack))

    def _prompt_tensors(self, handle: ImageHandle, prompt: VisualPrompt) -> dict[str, Any]:
        """Prompt tensors in the model's square input frame (batch 1, one object)."""
        import torch

        side = float(self.model.prompt_encoder.input_image_size)
        scale = np.asarray([side / handle.width, side / handle.height])
        kwargs: dict[str, Any] = {}
        if prompt.points is not None and prompt.labels is not None:
            pts = (prompt.points * scale)[None, None]  # (1, 1, N, 2)
            kwargs["input_points"] = torch.as_tensor(pts, device=self.device, dtype=self.dtype)
            kwargs["input_labels"] = torch.as_tensor(prompt.labels[None, None], device=self.device)
        if prompt.box is not None:
            box = (prompt.box * np.tile(scale, 2))[None, None]  # (1, 1, 4)
            kwargs["input_boxes"] = torch.as_tensor(box, device=self.device, dtype=self.dtype)
        return kwargs

    def features(self, handle: ImageHandle) -> list[Any]:
        """The tracker's image embeddings of ``handle`` (worker thread only), from its cache or computed.

        Returns:
            Three ``(1, C_i, H_i, W_i)`` tensors, finest first: the 4x and 2x levels projected by
            the mask decoder's ``conv_s0`` / ``conv_s1`` (``C`` / 8 and ``C`` / 4 channels), then
            the 1x level (``C`` channels, on the trunk's grid) with the no-memory embedding added.
        """
        cached = self._features.get(handle.digest)
        if cached is not None:
            return cached
        vision = self.model.vision_encoder
        if self.tracker_stats.shares_trunk:
            trunk = self.engine.runner.trunk_features(handle)  # (1, h * w, hidden), tokens row-major
            h, w = self.model.prompt_encoder.image_embedding_size
            spatial = trunk.view(trunk.shape[0], h, w, -1).permute(0, 3, 1, 2)
            levels, _ = vision.neck(spatial)
        else:
            pixels = self.engine.processor.image_processor(images=handle.image, return_tensors="pt").pixel_values
            levels = vision(pixels.to(self.device, self.dtype)).fpn_hidden_states
            self.tracker_stats.own_vit_runs += 1
        decoder = self.model.mask_decoder
        fine, mid, coarse = levels[:3]
        memory = self.model.no_memory_embedding.reshape(1, -1, 1, 1)
        embeddings = [decoder.conv_s0(fine).detach(), decoder.conv_s1(mid).detach(), (coarse + memory).detach()]
        self.tracker_stats.feature_runs += 1
        self._features.put(handle.digest, embeddings)
        return embeddings


def _same_trunk(ours: Any, theirs: Any) -> bool:
    """Whether two ViT trunks are one model: equal configs, and every weight equal."""
    if ours is theirs:
        return True
    if _architecture(ours.config) != _architecture(theirs.config):
        return False
    mine, other = ours.state_dict(), theirs.state_dict()
    if mine.keys() != other.keys():
        return False
    import torch

    return all(mine[k].shape == other[k].shape and torch.equal(mine[k].to(other[k]), other[k]) for k in mine)


_BOOKKEEPING = frozenset({"dtype", "torch_dtype", "transformers_version", "architectures", "name_or_path"})


def _architecture(config: Any) -> dict[str, Any]:
    """A config's settings without the bookkeeping that saving and loading change (dtype, version, name)."""
    return {k: v for k, v in config.to_dict().items() if k.lstrip("_") not in _BOOKKEEPING and not k.startswith("_")}


def _load_tracker_model(source: str | os.PathLike[str], *, token: str | None, revision: str | None,
                        local_files_only: bool | None) -> Any:
    """``Sam3TrackerModel.from_pretrained`` with the engine's hub probing and error messages."""
    check_torch_stack()
    from transformers import Sam3TrackerModel

    text = str(source)
    path = Path(text).expanduser()
    kwargs: dict[str, Any] = {"token": token, "revision": revision}
    if path.exists():
        _check_tracker_dir(path)
        if local_files_only is not None:
            kwargs["local_files_only"] = local_files_only
        where = str(path)
    elif looks_like_path(text):
        raise Sam3LoadError(f"SAM 3 tracker directory not found: {path}; pass a directory written by "
                            "Sam3TrackerModel.save_pretrained, or a hub id such as 'facebook/sam3'")
    else:
        try:
            kwargs["local_files_only"] = plan_hub_access(text, revision=revision,
                                                         local_files_only=local_files_only).local_files_only
        except HubUnavailableError as e:
            raise Sam3LoadError(unavailable_hint(text, e.why)) from e
        where = text
    try:
        return Sam3TrackerModel.from_pretrained(where, **kwargs)
    except (OSError, ValueError) as e:
        raise Sam3LoadError(f"could not load the SAM 3 tracker from {where}: {type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}") from e


def _check_tracker_dir(path: Path) -> None:
    """Refuse a directory that holds no tracker (e.g. one ``Sam3Model.save_pretrained`` wrote)."""
    import json

    config = path / "config.json"
    if not config.is_file():
        raise Sam3LoadError(f"{path} has no config.json: it is not a saved SAM 3 tracker")
    kind = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    if kind not in ("sam3_tracker", "sam3_video", "sam3_tracker_video"):
        raise Sam3LoadError(f"{path} holds a {kind!r} model, not SAM 3's tracker: segment_at needs the tracker "
                            "weights (the full facebook/sam3 checkpoint has them, or a directory written by "
                            "Sam3TrackerModel.save_pretrained); pass it as the tracker source")

