"""Pieces of a ``samples.jsonl`` line: agent outcome, failures, masks as RLE, boxes as COCO xywh.

Every line has at least ``schema_version``, ``id``, ``query``, ``status`` (``answered``,
``no_mask``, ``budget_exhausted`` or ``failed``), ``iou`` (float or null), ``turns`` and
``seconds`` (other tools read only these). The helpers here fill the rest in one shape for both
datasets:

* ``phrases``: the phrases run through ``segment_phrase``, in order;
* ``failures``: model mistakes by kind (``parse_error``, ``bad_ids``, ``reused_phrase``, ...);
* ``llm_calls``, ``tokens`` ``{prompt, completion, total}``, ``timings`` ``{llm, sam, render, wall}``
  (seconds);
* ``reason``: why the run ended, in words; ``error``: the backend error of a ``failed`` sample;
* ``mask_rle``: the union of the answer masks as compressed COCO RLE ``{"size": [H, W], "counts"}``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import supervision as sv
from pycocotools import mask as coco_mask

from sam3agent.llm.base import LLMBackendError
from sam3agent.result import AgentResult

STATUSES = ("answered", "no_mask", "budget_exhausted", "failed")
"""Every sample status, in report order; ``failed`` = the LLM backend failed for good."""

MINIMUM_FIELDS = ("id", "query", "status", "iou", "turns", "seconds")
"""Fields every ``samples.jsonl`` line has."""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_FIELD_CHECKS: dict[str, Callable[[Any], bool]] = {
    "id": lambda v: isinstance(v, str) and bool(v),
    "query": lambda v: isinstance(v, str),
    "status": lambda v: v in STATUSES,
    "iou": lambda v: v is None or _is_number(v),
    "turns": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "seconds": _is_number,
}


def record_problem(record: dict[str, Any]) -> str | None:
    """What keeps ``record`` from being a whole ``samples.jsonl`` line, or None when nothing does.

    Checked: every field of :data:`MINIMUM_FIELDS` is present, ``id`` a non-empty string, ``query``
    a string, ``status`` one of :data:`STATUSES`, ``iou`` a number or null, ``turns`` an integer,
    ``seconds`` a number.
    """
    missing = [k for k in MINIMUM_FIELDS if k not in record]
    if missing:
        return f"missing {', '.join(missing)}"
    wrong = [k for k, ok in _FIELD_CHECKS.items() if not ok(record[k])]
    if wrong:
        return "bad " + ", ".join(f"{k}={record[k]!r:.40}" for k in wrong)
    return None


def mask_rle(mask: np.ndarray) -> dict[str, Any]:
    """A ``(H, W)`` bool mask as compressed COCO RLE ``{"size": [H, W], "counts": str}``."""
    mask = np.asarray(mask, bool)
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": sv.mask_to_rle(mask, compressed=True)}


def rle_mask(rle: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`mask_rle`: the ``(H, W)`` bool mask."""
    height, width = rle["size"]
    return sv.rle_to_mask(rle["counts"], (width, height)).astype(bool)


def union_mask(detections: sv.Detections, height: int, width: int) -> np.ndarray:
    """The union of the detections' masks, ``(H, W)`` bool (all False without detections)."""
    if detections.mask is None or len(detections) == 0:
        return np.zeros((height, width), bool)
    return np.asarray(detections.mask, bool).any(axis=0)


def mask_box_xywh(mask: np.ndarray) -> list[float] | None:
    """The COCO box ``[x, y, w, h]`` (pixels) enclosing a ``(H, W)`` mask, or None if it is empty.

    The box spans whole pixels: with ``x1``/``x2`` the first and last covered columns (inclusive,
    supervision's ``xyxy`` convention), ``w = x2 - x1 + 1``; likewise for rows. This is the box
    ``pycocotools.mask.toBbox`` gives for the mask's RLE, which computes it.
    """
    rle = coco_mask.encode(np.asfortranarray(np.asarray(mask, bool), dtype=np.uint8))
    if coco_mask.area(rle) == 0:  # toBbox gives [0, 0, 0, 0] for an empty mask
        return None
    return [float(v) for v in coco_mask.toBbox(rle)]


def xyxy_to_xywh(xyxy: np.ndarray) -> list[float]:
    """Inclusive pixel corners ``(x1, y1, x2, y2)`` to COCO ``[x, y, x2 - x1 + 1, y2 - y1 + 1]``."""
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    return [x1, y1, x2 - x1 + 1.0, y2 - y1 + 1.0]


def predicted_box_xywh(xyxy: np.ndarray) -> list[float]:
    """A predicted box, continuous pixel ``(x1, y1, x2, y2)``, as COCO ``[x1, y1, x2 - x1, y2 - y1]``.

    SAM 3's predicted boxes (``data["predicted_xyxy"]``) are continuous: x2/y2 are the
    right/bottom edges, so the width is ``x2 - x1`` (no ``+ 1``, unlike :func:`xyxy_to_xywh`).
    """
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    return [x1, y1, x2 - x1, y2 - y1]


BoxSource = Literal["mask", "predicted"]
"""Where OmniLabel boxes come from: the answer's masks or SAM 3's predicted boxes."""


def detection_boxes(detections: sv.Detections, box_source: BoxSource = "mask") -> list[dict[str, Any]]:
    """One ``{"bbox": [x, y, w, h], "score": s}`` per detection, in detection order.

    Args:
        detections: The answer.
        box_source: ``"mask"``: boxes enclose the masks (see :func:`mask_box_xywh`; a detection
            without a mask uses its inclusive ``xyxy``). ``"predicted"``: SAM 3's own predicted
            boxes from ``data["predicted_xyxy"]`` (see :func:`predicted_box_xywh`), as Meta's
            reference agent reports them. Either way, detections with an empty mask are skipped.

    Raises:
        ValueError: ``box_source`` is unknown, or ``"predicted"`` and the detections carry no
            ``data["predicted_xyxy"]`` of shape ``(N, 4)``.
    """
    if box_source not in ("mask", "predicted"):
        raise ValueError(f"unknown box_source {box_source!r}; use 'mask' or 'predicted'")
    predicted = None
    if box_source == "predicted" and len(detections) > 0:
        predicted = detections.data.get("predicted_xyxy")
        if predicted is None or np.shape(predicted) != (len(detections), 4):
            found = "none" if predicted is None else f"shape {np.shape(predicted)}"
            raise ValueError(
                f"box_source='predicted' needs SAM 3's predicted boxes in data['predicted_xyxy'] ({len(detections)}, 4)"
                f", found {found}; use an engine that returns them or box_source='mask'"
            )
    out: list[dict[str, Any]] = []
    masks = detections.mask
    for i in range(len(detections)):
        bbox = mask_box_xywh(masks[i]) if masks is not None else xyxy_to_xywh(detections.xyxy[i])
        if bbox is None:
            continue
        if predicted is not None:
            bbox = predicted_box_xywh(predicted[i])
        score = float(detections.confidence[i]) if detections.confidence is not None else 1.0
        out.append({"bbox": bbox, "score": score})
    return out


def phrases_tried(result: AgentResult) -> list[str]:
    """The phrases ``segment_phrase`` ran (refused reuses excluded), in order."""
    out = []
    for step in result.steps:
        call = step.call
        if call and call.get("name") == "segment_phrase" and step.failure is None:
            out.append(str(call.get("parameters", {}).get("text_prompt", "")))
    return out


def agent_fields(result: AgentResult) -> dict[str, Any]:
    """The outcome fields of a finished agent run."""
    t = result.totals
    return {
        "status": result.status,
        "turns": t.turns,
        "reason": result.reason,
        "phrases": phrases_tried(result),
        "failures": dict(sorted(t.failures.items())),
        "llm_calls": t.llm_calls,
        "tokens": {"prompt": t.prompt_tokens, "completion": t.completion_tokens, "total": t.total_tokens},
        "timings": {"llm": t.llm_seconds, "sam": t.sam_seconds, "render": t.render_seconds, "wall": t.wall_seconds},
        "error": None,
    }


def engine_fields(detections: sv.Detections, phrase: str, seconds: float) -> dict[str, Any]:
    """The outcome fields of a phrase sent straight to the engine (no LLM turn)."""
    found = len(detections) > 0
    return {
        "status": "answered" if found else "no_mask",
        "turns": 0,
        "reason": f"engine returned {len(detections)} mask(s)",
        "phrases": [phrase],
        "failures": {},
        "llm_calls": 0,
        "tokens": {"prompt": 0, "completion": 0, "total": 0},
        "timings": {"llm": 0.0, "sam": seconds, "render": 0.0, "wall": seconds},
        "error": None,
    }


def failed_fields(error: LLMBackendError) -> dict[str, Any]:
    """The outcome fields of a sample whose LLM backend failed for good (scored as empty).

    When the agent attached the run so far (``error.partial_result``), its turns, phrases, model
    mistakes, LLM calls, tokens and timings are kept, so the cost of failed samples is counted.
    """
    partial = getattr(error, "partial_result", None)
    if partial is not None:
        return {**agent_fields(partial), "status": "failed", "reason": "the LLM backend failed",
                "error": str(error)}
    return {
        "status": "failed",
        "turns": 0,
        "reason": "the LLM backend failed",
        "phrases": [],
        "failures": {},
        "llm_calls": 0,
        "tokens": {"prompt": 0, "completion": 0, "total": 0},
        "timings": {},
        "error": str(error),
    }
