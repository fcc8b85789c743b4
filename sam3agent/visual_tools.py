"""The transitions of the two opt-in tools: ``segment_like`` (by example) and ``segment_at`` (at coordinates).

Both replace the current masks exactly as ``segment_phrase`` does: the new masks are renumbered
1..N (:meth:`~sam3agent.state.AgentState.set_masks`), drawn and sent (:mod:`sam3agent.pictures`),
the context window restarts at the call, and the memory of what was tried records the call
(``like mask 2 of "cookie"``, ``the object at (120, 80)``; :meth:`~sam3agent.state.AgentState.record_visual_try`).

* ``segment_like`` gives SAM 3 the box of one current mask as a positive exemplar (with the
  optional phrase), through the engine's ``asegment(..., boxes=...)``; its masks then go through
  the same overlap removal as a phrase's.
* ``segment_at`` takes points and/or a box in pixels of the *sent* raw image (the first image the
  model saw, at its encoded size, which is what Qwen2.5-VL grounds in), converts them to pixels of
  the original image (:func:`sent_to_original`), and asks the engine's visual-prompt interface
  (:class:`~sam3core.protocol.PointPromptEngine`, e.g. :class:`sam3core.tracker.Sam3Tracker`).

A bad mask number, or coordinates outside the sent image, is the model's mistake: it is fed back
(``bad_ids``, ``bad_coordinates``) and costs the turn; nothing here raises on model input.
Shape errors (a point of three numbers, a box with ``x2 < x1``) are caught earlier, by the
argument models in :mod:`sam3agent.tools`, and fed back as ``invalid_arguments``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence

import numpy as np
import supervision as sv
from pydantic import BaseModel

from sam3agent import pictures
from sam3agent.config import AgentConfig
from sam3agent.overlap import remove_overlaps
from sam3agent.prompts import Prompts
from sam3agent.result import Step
from sam3agent.state import AgentState, Outcome, mask_ids, resolve_mask_ids
from sam3agent.tools import SegmentAtArgs, SegmentLikeArgs
from sam3core.image import ImageHandle
from sam3core.postprocess import mask_boxes_continuous
from sam3core.protocol import PointPromptEngine, SegmentEngine

__all__ = ["VisualTools", "at_description", "coordinate_problems", "mask_listing", "sent_to_original"]

Transition = Callable[[AgentState, BaseModel, Step], Awaitable[Outcome]]


def sent_to_original(xy: Sequence[float], sent: tuple[int, int], original: tuple[int, int]) -> list[float]:
    """Scale coordinates from the sent image's pixels to the original image's.

    The sent image is the original resized (aspect kept up to the patch rounding), so each axis
    scales on its own: ``x * W / w``, ``y * H / h``. Edges map to edges (``0 -> 0``, ``w -> W``).

    Args:
        xy: ``(x, y)`` or ``(x1, y1, x2, y2)``, pixels of the sent image (x right, y down).
        sent: ``(width, height)`` of the sent image.
        original: ``(width, height)`` of the original image.

    Returns:
        The same coordinates in pixels of the original image.
    """
    sx, sy = original[0] / sent[0], original[1] / sent[1]
    return [float(v) * (sx if i % 2 == 0 else sy) for i, v in enumerate(xy)]


def coordinate_problems(args: SegmentAtArgs, width: int, height: int) -> list[str]:
    """Model-facing descriptions of every coordinate outside a ``width`` x ``height`` image (empty: all inside)."""
    problems = []
    for i, (x, y) in enumerate(args.points or []):
        if not (0 <= x <= width and 0 <= y <= height):
            problems.append(f"point {i + 1} ({x:g}, {y:g}) is outside the image")
    if args.box is not None:
        x1, y1, x2, y2 = args.box
        if min(x1, y1) < 0 or x2 > width or y2 > height:
            problems.append(f"box [{x1:g}, {y1:g}, {x2:g}, {y2:g}] reaches outside the image")
    return problems


def mask_listing(detections: sv.Detections, handle: ImageHandle) -> str:
    """One line per mask: its number, confidence and share of the image (as ``segment_phrase`` lists them)."""
    total = handle.width * handle.height
    lines = []
    for mask_id, i in zip(mask_ids(len(detections)), range(len(detections)), strict=True):
        area = float(np.count_nonzero(detections.mask[i])) / total if detections.mask is not None else 0.0
        score = float(detections.confidence[i]) if detections.confidence is not None else float("nan")
        lines.append(f"- mask {mask_id}: confidence {score:.2f}, covers {100 * area:.1f}% of the image")
    return "\n".join(lines)


def _call_text(name: str, params: dict[str, object]) -> str:
    """``segment_at(box=[1, 2.5, 3, 4])``: a call as the feedback quotes it (given parameters only)."""
    given = ", ".join(f"{k}={_literal(v)}" for k, v in params.items() if v is not None)
    return f"{name}({given})"


def _literal(value: object) -> str:
    """JSON, with numbers written as the model would (``120``, not ``120.0``)."""
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, float):
        return _number(value)
    return json.dumps(value)


def _number(value: float) -> str:
    return f"{value:g}"


def at_description(args: SegmentAtArgs) -> str:
    """How the memory of tries names a ``segment_at`` call: ``the object at (120, 80)``, ``the object in box [...]``."""
    parts = ["the object"]
    if args.box is not None:
        parts.append("in box [" + ", ".join(map(_number, args.box)) + "]")
    if args.points:
        parts.append("at " + ", ".join(f"({_number(x)}, {_number(y)})" for x, y in args.points))
    return " ".join(parts)


class VisualTools:
    """The ``segment_like`` and ``segment_at`` transitions of one agent.

    Args:
        engine: The agent's engine; ``segment_at`` needs it to be a
            :class:`~sam3core.protocol.PointPromptEngine` too.
        config: The agent's settings (``tools`` says which transitions exist).
        prompts: The agent's prompts (with the extra tools' texts).

    Raises:
        TypeError: ``segment_at`` is on and the engine cannot segment at points and boxes.
    """

    def __init__(self, engine: SegmentEngine, config: AgentConfig, prompts: Prompts) -> None:
        self.engine, self.config, self.prompts = engine, config, prompts
        self.points: PointPromptEngine | None = engine if isinstance(engine, PointPromptEngine) else None
        if "segment_at" in config.tools and self.points is None:
            raise TypeError(
                f"the segment_at tool needs an engine that segments at points and boxes (segment_at, asegment_at); "
                f"{type(engine).__name__} does not: wrap the Sam3Engine in a sam3core.tracker.Sam3Tracker, or "
                "turn segment_at off"
            )

    def transitions(self) -> dict[str, Transition]:
        """The transitions of the extra tools that are on, by tool name."""
        table: dict[str, Transition] = {"segment_like": self.segment_like, "segment_at": self.segment_at}
        return {name: table[name] for name in self.config.tools}

    async def segment_like(self, state: AgentState, args: BaseModel, step: Step) -> Outcome:
        """SAM 3 with one current mask's box as a positive exemplar (and the optional phrase)."""
        if not isinstance(args, SegmentLikeArgs):
            raise TypeError(f"segment_like got {type(args).__name__}")
        prompts, cfg = self.prompts, self.config
        if state.detections is None or state.detections.mask is None or state.mask_count == 0:
            return Outcome(prompts.feedback("no_masks", tool="segment_like"), failure="no_masks")
        indices, problems = resolve_mask_ids([args.mask_id], state.mask_count)
        if problems:
            text = prompts.tool_text("like_bad_id", problem=problems[0], count=state.mask_count)
            return Outcome(text, failure="bad_ids")
        index = indices[0]
        box = mask_boxes_continuous(state.detections.mask[index : index + 1])[0].tolist()
        phrase = None if args.text_prompt is None else " ".join(args.text_prompt.split())
        tried = state.tried()
        description = f"like mask {args.mask_id} of {tried[-1] if tried else 'the current masks'}"
        if phrase is not None:
            description += f' as "{phrase}"'
        options: dict[str, object] = {}
        if cfg.overlap_iom is not None:
            options["dedup_iou"] = None  # the overlap removal below replaces the engine's own
        if cfg.mask_upsampling is not None:
            options["mask_upsampling"] = cfg.mask_upsampling
        t0 = time.perf_counter()
        found = await self.engine.asegment(state.handle, phrase, boxes=[box], box_labels=[1],
                                           score_threshold=cfg.score_threshold, mask_threshold=cfg.mask_threshold,
                                           max_masks=cfg.max_masks, **options)
        detections = await asyncio.to_thread(remove_overlaps, found, cfg.overlap_iom, drop_short_rle=cfg.drop_short_rle)
        call = _call_text("segment_like", {"mask_id": args.mask_id, "text_prompt": phrase})
        return await self._replace(state, step, detections, description, call, time.perf_counter() - t0, "like")

    async def segment_at(self, state: AgentState, args: BaseModel, step: Step) -> Outcome:
        """SAM 3's tracker at points and/or a box given in pixels of the sent raw image."""
        if not isinstance(args, SegmentAtArgs):
            raise TypeError(f"segment_at got {type(args).__name__}")
        if self.points is None:  # unreachable: __init__ refuses such an engine
            raise TypeError("segment_at has no point-prompt engine")
        sent = (state.raw_image.width, state.raw_image.height)
        problems = coordinate_problems(args, *sent)
        if problems:
            text = self.prompts.tool_text("at_bad_coordinates", problems="; ".join(problems), width=sent[0],
                                          height=sent[1])
            return Outcome(text, failure="bad_coordinates")
        original = (state.handle.width, state.handle.height)
        points = None if args.points is None else [sent_to_original(p, sent, original) for p in args.points]
        box = None if args.box is None else sent_to_original(args.box, sent, original)
        t0 = time.perf_counter()
        found = await self.points.asegment_at(state.handle, points=points, box=box,
                                              mask_threshold=self.config.mask_threshold)
        call = _call_text("segment_at", {"points": args.points, "box": args.box})
        return await self._replace(state, step, found, at_description(args), call, time.perf_counter() - t0, "at")

    async def _replace(self, state: AgentState, step: Step, detections: sv.Detections, description: str,
                       call: str, seconds: float, kind: str) -> Outcome:
        """Make ``detections`` the current masks, as ``segment_phrase`` does, and say what was found."""
        step.sam_seconds += seconds
        state.sam_seconds += seconds
        state.record_visual_try(description)
        state.set_masks(detections)
        sent = state.raw_image
        if len(detections) == 0:
            text = self.prompts.tool_text(f"{kind}_empty", call=call, query=state.query, width=sent.width,
                                          height=sent.height)
            return Outcome(text, new_window=True)
        image = await pictures.render_current(state, step)
        text = self.prompts.tool_text(f"{kind}_found", call=call, count=len(detections), query=state.query,
                                      listing=mask_listing(detections, state.handle))
        return Outcome(text, image=image, new_window=True)
