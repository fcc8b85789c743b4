"""Run our agent on the same scripted trajectory as ``meta_runner`` and record the same :class:`Trace`.

The LLM is :class:`~sam3agent.llm.ScriptedLLM` (the main replies in order; verification requests
answered by the same per-mask function the reference gets) and the engine is a
:class:`~sam3core.fake.FakeEngine` serving the same raw SAM 3 outputs (or any engine passed in, e.g.
the tiny real one). The masks shown after each ``segment_phrase`` are recorded by wrapping
:meth:`sam3agent.Agent.set_masks`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import supervision as sv
from meta_runner import MainRequest, RawOutput, Trace, VerifyReply, steps_in

from sam3agent import Agent
from sam3agent.config import AgentConfig
from sam3agent.llm.base import LLMRequest
from sam3agent.llm.scripted import ScriptedLLM
from sam3agent.parsing import ParsedCall
from sam3agent.result import Step
from sam3agent.state import AgentState, Outcome
from sam3core.fake import FakeEngine
from sam3core.protocol import SegmentEngine

_ALONE = re.compile(r"^mask (\d+) alone$")


class RecordingAgent(Agent):
    """Our agent, recording the masks each executed ``segment_phrase`` makes current.

    Attributes:
        shown: Per executed segment call, its ``(K, H, W)`` masks in their shown order.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.shown: list[np.ndarray] = []
        self._tool: str | None = None

    async def _apply(self, state: AgentState, call: ParsedCall, step: Step) -> Outcome:
        self._tool = call.name
        try:
            return await super()._apply(state, call, step)
        finally:
            self._tool = None

    def set_masks(self, state: AgentState, detections: sv.Detections) -> None:
        """Record ``detections`` when a segment call sets them, then set them."""
        if self._tool == "segment_phrase":
            height, width = state.handle.height, state.handle.width
            masks = detections.mask if detections.mask is not None else np.zeros((0, height, width), bool)
            self.shown.append(np.asarray(masks, bool).copy())
        super().set_masks(state, detections)


def fake_engine(raw: Mapping[str, RawOutput]) -> FakeEngine:
    """A FakeEngine serving ``raw`` (masks, scores and predicted boxes, in their given order).

    Raises:
        ValueError: If two phrases differ only in case (the fake engine compares them lower-cased).
    """
    if len({p.strip().lower() for p in raw}) != len(raw):
        raise ValueError(f"phrases that differ only in case cannot be served by one FakeEngine: {sorted(raw)}")
    return FakeEngine(
        {p: list(o.masks) for p, o in raw.items()},
        scores={p: [float(s) for s in o.scores] for p, o in raw.items()},
        boxes={p: np.asarray(o.boxes, np.float64).reshape(-1, 4) for p, o in raw.items()},
    )


def _verify_mask_number(request: LLMRequest) -> int:
    """The 1-based number of the mask a verification request is about (from the image labels)."""
    numbers = [int(m.group(1)) for img in request.images if (m := _ALONE.match(img.label))]
    if len(numbers) != 1:
        raise AssertionError(f"cannot tell which mask a verification request is about: "
                             f"{[img.label for img in request.images]}")
    return numbers[0]


def run_ours(image_path: str | Path, query: str, main_replies: Sequence[str], verify_reply: VerifyReply,
             raw: Mapping[str, RawOutput], *, engine: SegmentEngine | None = None,
             config: AgentConfig | None = None) -> Trace:
    """Run our agent (paper preset by default) on a script; see :func:`meta_runner.run_meta`.

    Args:
        image_path: The input image file.
        query: The user query.
        main_replies: The main-loop replies, in order.
        verify_reply: Reply to the verification of mask number ``k`` (1-based).
        raw: Phrase -> raw SAM 3 output, served by a :class:`FakeEngine` (ignored with ``engine``).
        engine: Use this engine instead of the fake one.
        config: Agent settings (default ``AgentConfig.paper()``).

    Returns:
        The :class:`Trace`; ``extra`` holds ``status``, ``failures`` and ``turns``. An exception is
        stored in ``error`` (our agent raises only for backend failures, e.g. a script that ran out).
    """
    numbers: list[int] = []

    def verify(request: LLMRequest) -> str:
        number = _verify_mask_number(request)
        numbers.append(number)
        return verify_reply(number)

    llm = ScriptedLLM(list(main_replies), verify_replies=verify)
    agent = RecordingAgent(llm=llm, engine=engine or fake_engine(raw), config=config or AgentConfig.paper())
    trace = Trace()
    try:
        result = agent.run(str(image_path), query)
    except Exception as e:
        trace.error = e
        result = None
    for request in llm.requests:
        if request.purpose == "verify":
            trace.verify_images.append(len(request.images))
            continue
        texts = [m.plain_text for m in request.messages if m.role == "assistant"]
        trace.main.append(MainRequest(len(request.images), tuple(m.role for m in request.messages), steps_in(texts)))
    trace.verify_masks = numbers
    trace.shown = agent.shown
    if result is not None:
        det = result.detections
        trace.final_masks = np.asarray(det.mask, bool)
        trace.final_scores = np.asarray(det.confidence, np.float64)
        boxes = det.data.get("predicted_xyxy")
        trace.final_boxes = None if boxes is None else np.asarray(boxes, np.float64).reshape(-1, 4)
        trace.extra.update(status=result.status, failures=dict(result.totals.failures), turns=result.totals.turns)
    return trace

