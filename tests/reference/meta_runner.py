"""Run Meta's reference SAM 3 Agent (PyPI ``sam3``) on a scripted trajectory and record what it did.

The reference loop (``sam3.agent.agent_core.agent_inference``) takes its LLM and its SAM 3 service as
arguments. Here the LLM is a script, and the service is Meta's own ``client_sam3.call_sam_service`` with
only the model call (``client_sam3.sam3_inference``) replaced by canned raw SAM 3 outputs, so Meta's
overlap removal, score sort, RLE-length filter, JSON files and renders all run for real.

This module only drives and observes Meta's code; it copies none of it. The record types
(:class:`Trace`, :class:`MainRequest`) are shared with ``our_runner`` so both sides are compared field by
field. ``conftest.py`` makes ``sam3`` importable (and supplies the prompt files the wheel lacks) before this
module is imported.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pycocotools.mask as mask_utils
import torch
from PIL import Image
from sam3.agent import agent_core, client_sam3
from sam3.model.box_ops import box_xyxy_to_xywh
from sam3.train.masks_ops import rle_encode

#: Stand-ins for the reference's two system prompts (the wheel ships without the .txt files).
MAIN_MARKER = "REFERENCE MAIN PROMPT"
CHECK_MARKER = "REFERENCE CHECKING PROMPT"
#: The reference's Sam3Processor keeps detections scoring strictly above this (its default).
PROCESSOR_THRESHOLD = 0.5
#: Every scripted main reply starts with this line, numbered 1.. in script order.
STEP = re.compile(r"^Step (\d+)\.", re.MULTILINE)
_SELECTED = re.compile(r"_selected_mask_(\d+)\.png$")

VerifyReply = Callable[[int], str]


@dataclass(frozen=True)
class RawOutput:
    """What SAM 3 itself returns for one phrase, before any agent-side post-processing.

    Attributes:
        masks: ``(N, H, W)`` bool masks at the image size, in no particular order.
        scores: ``(N,)`` confidences.
        boxes: ``(N, 4)`` predicted boxes, pixel ``(x1, y1, x2, y2)``, continuous (not the mask's box).
    """

    masks: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray


@dataclass
class MainRequest:
    """One main-loop LLM request, as the model saw it.

    Attributes:
        images: Number of images in the request.
        roles: The role of every message, in order.
        steps: The numbers of the scripted replies that appear in its assistant messages (which
            earlier turns survived pruning).
    """

    images: int
    roles: tuple[str, ...]
    steps: tuple[int, ...]


@dataclass
class Trace:
    """Everything one run did that both implementations must agree on.

    Attributes:
        main: One record per main-loop request.
        verify_masks: The 1-based mask number of every verification request, in order.
        verify_images: Images per verification request, in order.
        shown: After each executed segment call, the masks shown to the model (``(K, H, W)`` bool,
            position ``i`` is mask number ``i + 1``).
        final_masks: ``(K, H, W)`` bool masks of the answer (``None`` if the run raised).
        final_boxes: ``(K, 4)`` pixel ``xyxy`` predicted boxes of the answer.
        final_scores: ``(K,)`` scores of the answer.
        error: The exception that ended the run, if any.
        extra: Side-specific details (e.g. our status and failure counts).
    """

    main: list[MainRequest] = field(default_factory=list)
    verify_masks: list[int] = field(default_factory=list)
    verify_images: list[int] = field(default_factory=list)
    shown: list[np.ndarray] = field(default_factory=list)
    final_masks: np.ndarray | None = None
    final_boxes: np.ndarray | None = None
    final_scores: np.ndarray | None = None
    error: BaseException | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def steps_in(texts: Sequence[str]) -> tuple[int, ...]:
    """The scripted step numbers found at the start of lines of the given assistant texts."""
    return tuple(int(m) for text in texts for m in STEP.findall(text))


def decode_rles(rles: Sequence[str], height: int, width: int) -> np.ndarray:
    """COCO RLE ``counts`` strings -> ``(K, H, W)`` bool masks."""
    if not rles:
        return np.zeros((0, height, width), bool)
    return np.stack([mask_utils.decode({"size": [height, width], "counts": r}).astype(bool) for r in rles])


def _xywh_norm_to_xyxy(boxes: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Normalised ``(x, y, w, h)`` boxes -> pixel ``(x1, y1, x2, y2)``."""
    arr = np.asarray(boxes, np.float64).reshape(-1, 4)
    x, y, w, h = arr.T
    return np.stack([x * width, y * height, (x + w) * width, (y + h) * height], axis=1)


def _fake_inference(raw: Mapping[str, RawOutput], threshold: float) -> Callable[..., dict[str, Any]]:
    """A ``client_sam3.sam3_inference`` stand-in returning ``raw[phrase]`` in the reference's format.

    It keeps what the reference's processor would keep (score ``> threshold``), in the given
    (unsorted) order, and formats it with Meta's own helpers: boxes normalised then ``xyxy -> xywh``,
    masks as COCO RLE strings from ``rle_encode``.
    """

    def inference(processor: object, image_path: str, text_prompt: str) -> dict[str, Any]:
        with Image.open(image_path) as img:
            width, height = img.size
        out = raw.get(text_prompt)
        if out is None:
            masks = torch.zeros((0, height, width), dtype=torch.bool)
            scores = torch.zeros((0,), dtype=torch.float32)
            boxes = torch.zeros((0, 4), dtype=torch.float32)
        else:
            keep = torch.from_numpy(np.asarray(out.scores, np.float64) > threshold)
            masks = torch.from_numpy(np.asarray(out.masks, bool))[keep]
            scores = torch.as_tensor(np.asarray(out.scores), dtype=torch.float32)[keep]
            boxes = torch.as_tensor(np.asarray(out.boxes), dtype=torch.float32).reshape(-1, 4)[keep]
        scale = torch.tensor([width, height, width, height], dtype=torch.float32)
        return {
            "orig_img_h": height,
            "orig_img_w": width,
            "pred_boxes": box_xyxy_to_xywh(boxes / scale).tolist(),
            "pred_masks": [r["counts"] for r in rle_encode(masks)],
            "pred_scores": scores.tolist(),
        }

    return inference


def _blank_pictures(input_json: dict[str, Any], zoom_in_index: int | None = None,
                    **kwargs: object) -> Image.Image | tuple[Image.Image, Image.Image]:
    """A stand-in for the reference's ``viz.visualize``: one blank picture, or a pair with an index."""
    if zoom_in_index is not None and not 0 <= int(zoom_in_index) < len(input_json["pred_masks"]):
        raise ValueError(f"zoom_in_index {zoom_in_index} is out of range")
    blank = Image.new("RGB", (2, 2))
    return blank if zoom_in_index is None else (blank, blank.copy())


class _ScriptedReference:
    """The ``send_generate_request`` of one run: scripted replies plus a record of every request."""

    def __init__(self, main_replies: Sequence[str], verify_reply: VerifyReply, trace: Trace) -> None:
        self._main = list(main_replies)
        self._verify = verify_reply
        self._trace = trace

    def __call__(self, messages: list[dict[str, Any]]) -> str | None:
        system = messages[0]["content"]
        images = [c for m in messages if isinstance(m.get("content"), list) for c in m["content"]
                  if isinstance(c, dict) and c.get("type") == "image"]
        if system == CHECK_MARKER:
            paths = [str(c["image"]) for c in images]
            numbers = [int(m.group(1)) for p in paths if (m := _SELECTED.search(p))]
            if len(numbers) != 1:
                raise AssertionError(f"cannot tell which mask a verification request is about: {paths}")
            self._trace.verify_masks.append(numbers[0])
            self._trace.verify_images.append(len(images))
            return self._verify(numbers[0])
        if system != MAIN_MARKER:
            raise AssertionError(f"unexpected system prompt {str(system)[:80]!r}")
        texts = [c["text"] for m in messages if m["role"] == "assistant" for c in m["content"]
                 if isinstance(c, dict) and c.get("type") == "text"]
        self._trace.main.append(MainRequest(len(images), tuple(m["role"] for m in messages), steps_in(texts)))
        return self._main.pop(0) if self._main else None  # None: the reference ends with an error


def run_meta(image_path: str | Path, query: str, main_replies: Sequence[str], verify_reply: VerifyReply,
             raw: Mapping[str, RawOutput], out_dir: str | Path, *,
             score_threshold: float = PROCESSOR_THRESHOLD, render: bool = True) -> Trace:
    """Run the reference agent on a script.

    Args:
        image_path: The input image file.
        query: The user query.
        main_replies: The main-loop replies, in order (when they run out the reference gets ``None``
            and raises).
        verify_reply: Reply to the verification of mask number ``k`` (1-based, among the current masks).
        raw: Phrase (exact string) -> raw SAM 3 output; other phrases yield no masks.
        out_dir: Where the reference writes its files (must not contain ``masks_``, which the
            reference's file naming splits on).
        score_threshold: The processor's ``confidence_threshold`` (the reference's default 0.5).
        render: Run the reference's own drawing (its ``visualize``: matplotlib, slow). Off, it is
            replaced by a stub returning blank pictures; the scripted model never looks at them,
            so the trace is the same unless the drawing itself would raise.

    Returns:
        The :class:`Trace`; an exception raised by the reference is stored in ``error``, not raised.
    """
    if "masks_" in str(out_dir) or "masks_" in str(image_path):
        raise ValueError("the reference's file naming breaks on paths containing 'masks_'")
    trace = Trace()
    service = functools.partial(client_sam3.call_sam_service, None)

    def call_service(image_path: str, text_prompt: str, output_folder_path: str) -> str:
        path = service(image_path=image_path, text_prompt=text_prompt, output_folder_path=output_folder_path)
        with open(path) as f:
            data = json.load(f)
        trace.shown.append(decode_rles(data["pred_masks"], int(data["orig_img_h"]), int(data["orig_img_w"])))
        return path

    generate = _ScriptedReference(main_replies, verify_reply, trace)
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(client_sam3, "sam3_inference", _fake_inference(raw, score_threshold)))
        if not render:
            for module in (agent_core, client_sam3):
                stack.enter_context(mock.patch.object(module, "visualize", _blank_pictures))
        try:
            _, final, _ = agent_core.agent_inference(
                str(image_path), query, send_generate_request=generate, call_sam_service=call_service,
                max_generations=100, output_dir=str(out_dir),
            )
        except Exception as e:  # the reference raises on the model's mistakes: that is recorded
            trace.error = e
            return trace
    height, width = int(final["orig_img_h"]), int(final["orig_img_w"])
    trace.final_masks = decode_rles(final["pred_masks"], height, width)
    trace.final_boxes = _xywh_norm_to_xyxy(final["pred_boxes"], height, width)
    trace.final_scores = np.asarray(final["pred_scores"], np.float64)
    return trace
