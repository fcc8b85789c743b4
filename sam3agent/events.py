"""The typed events of one agent run, as :meth:`sam3agent.Agent.astream` yields them.

Every event is a frozen dataclass with a ``type`` (the JSON name), ``seq`` (its 1-based position in
the run) and ``t`` (seconds since the run started, image decoding included); ``to_dict()`` gives
its JSON-safe form, ``describe()`` one short line for progress messages. The JSON names and fields
are a contract (the HTTP API streams them as Server-Sent Events and web pages read them): fields may
be added, never renamed.

In the order of a run:

- ``run_started`` (:class:`RunStarted`): the image is decoded and the query checked.
- Per turn, ``model_call_started`` and ``model_call_finished`` (:class:`ModelCallStarted`,
  :class:`ModelCallFinished`, purpose ``"plan"``; ``reply`` is the text, cut to 2000 characters),
  then ``tool_call`` (:class:`ToolCalled`) once the reply is parsed, before the tool runs.
- The tool's own events: for ``examine_each_mask``, per mask ``model_call_started`` and
  ``model_call_finished`` (purpose ``"verify"``) and ``verification`` (:class:`MaskVerified`), in the
  order :mod:`sam3agent.examine` gives.
- ``masks_found`` (:class:`MasksFound`) when the call replaced the current masks (whichever tool),
  with the numbered picture the model is shown; ``failure`` (:class:`FailureFedBack`) when the reply
  or the call was a mistake fed back to the model (bad format, bad ids, a reused phrase...).
- ``answer`` (:class:`Answer`) last, when the run ends; a run that fails (the LLM backend, say) has none.

Events are created by the agent core without ``seq`` and ``t``; an :class:`EventSink` stamps them
and hands them on. A run with a sink that delivers nowhere (the default of
:class:`~sam3agent.state.AgentState`) drops them; :func:`run_streamed` turns a run into an async
generator of its events.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from sam3agent.llm.base import ImagePart
from sam3core.image import data_url

if TYPE_CHECKING:
    import supervision as sv

    from sam3agent.result import AgentResult

__all__ = ["REPLY_CHARS", "AgentEvent", "Answer", "EventSink", "FailureFedBack", "MaskSummary", "MaskVerified",
           "MasksFound", "ModelCallFinished", "ModelCallStarted", "Purpose", "RunStarted", "ToolCalled",
           "mask_summaries", "run_streamed"]

R = TypeVar("R")

#: ``ModelCallFinished.reply`` holds at most this many characters of the model's text.
REPLY_CHARS = 2000

Purpose = Literal["plan", "verify"]


@dataclass(frozen=True, kw_only=True)
class AgentEvent:
    """What every event has.

    Attributes:
        type: The event's JSON name (a class constant).
        seq: Its 1-based position among the run's events (0 until an :class:`EventSink` stamps it).
        t: Seconds from the start of the run (decoding the image included) to the event.
    """

    type: ClassVar[str] = "event"
    seq: int = 0
    t: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The JSON-safe form: ``{"type", "seq", "t", ...the event's own fields}``."""
        data: dict[str, Any] = {"type": self.type, "seq": self.seq, "t": round(self.t, 4)}
        for f in dataclasses.fields(self):
            if f.name not in ("seq", "t"):
                data[f.name] = getattr(self, f.name)
        return data

    def describe(self) -> str:
        """One short human-readable line (used as MCP progress messages)."""
        return self.type.replace("_", " ")


@dataclass(frozen=True, kw_only=True)
class RunStarted(AgentEvent):
    """The run began: the query (stripped) and the size of the decoded, EXIF-oriented image."""

    type: ClassVar[str] = "run_started"
    query: str
    width: int
    height: int

    def to_dict(self) -> dict[str, Any]:
        """``{"type": "run_started", "seq", "t", "query", "image": {"width", "height"}}``."""
        return {"type": self.type, "seq": self.seq, "t": round(self.t, 4), "query": self.query,
                "image": {"width": self.width, "height": self.height}}

    def describe(self) -> str:
        """E.g. ``run started: 'the cat' on a 640x480 image``."""
        return f"run started: {self.query!r} on a {self.width}x{self.height} image"


@dataclass(frozen=True, kw_only=True)
class ModelCallStarted(AgentEvent):
    """A request to the MLLM was sent.

    Attributes:
        turn: The main-loop turn (1-based); a verification call has the turn of its ``examine_each_mask``.
        purpose: ``"plan"`` (the main loop) or ``"verify"`` (one mask's check).
        mask_id: The mask a verification call checks (its number when the check began); ``None`` for plan.
    """

    type: ClassVar[str] = "model_call_started"
    turn: int
    purpose: Purpose
    mask_id: int | None = None

    def describe(self) -> str:
        """E.g. ``turn 2: asking the model to verify mask 3``."""
        what = "to plan" if self.mask_id is None else f"to verify mask {self.mask_id}"
        return f"turn {self.turn}: asking the model {what}"


@dataclass(frozen=True, kw_only=True)
class ModelCallFinished(AgentEvent):
    """The MLLM answered a request (the fields of :class:`ModelCallStarted`, plus the reply).

    Attributes:
        seconds: How long the call took (backend retries included).
        reply: The reply's text, cut to :data:`REPLY_CHARS` characters (native tool calls are in
            the following :class:`ToolCalled`).
    """

    type: ClassVar[str] = "model_call_finished"
    turn: int
    purpose: Purpose
    mask_id: int | None = None
    seconds: float
    reply: str

    def __post_init__(self) -> None:
        if len(self.reply) > REPLY_CHARS:
            object.__setattr__(self, "reply", self.reply[:REPLY_CHARS])

    def to_dict(self) -> dict[str, Any]:
        """The fields, ``seconds`` rounded to 0.1 ms."""
        return {**super().to_dict(), "seconds": round(self.seconds, 4)}

    def describe(self) -> str:
        """E.g. ``turn 1: the model answered in 0.8 s`` or ``turn 2: the model answered about mask 3 in 0.5 s``."""
        about = "" if self.mask_id is None else f" about mask {self.mask_id}"
        return f"turn {self.turn}: the model answered{about} in {self.seconds:.1f} s"


@dataclass(frozen=True, kw_only=True)
class ToolCalled(AgentEvent):
    """A reply was parsed into a tool call; it runs next.

    Attributes:
        turn: The turn.
        name: The tool, e.g. ``"segment_phrase"``.
        arguments: Its validated arguments, JSON-safe (read-only by convention).
    """

    type: ClassVar[str] = "tool_call"
    turn: int
    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The fields, ``arguments`` as a plain dict."""
        return {**super().to_dict(), "arguments": dict(self.arguments)}

    def describe(self) -> str:
        """E.g. ``turn 1: segment_phrase(text_prompt='cat')``."""
        args = ", ".join(f"{k}={v!r}" for k, v in self.arguments.items())
        return f"turn {self.turn}: {self.name}({args})"


@dataclass(frozen=True)
class MaskSummary:
    """One current mask as events describe it.

    Attributes:
        id: Its number, as drawn on the picture and used by the model (1-based).
        score: SAM 3's confidence.
        box_xyxy: Pixel corners ``[x1, y1, x2, y2]`` in the original image (inclusive).
    """

    id: int
    score: float
    box_xyxy: tuple[float, float, float, float]

    def to_dict(self) -> dict[str, Any]:
        """``{"id", "score", "box_xyxy": [x1, y1, x2, y2]}``: score to 4 places (``None`` if unknown), box to 0.1 px."""
        score = round(self.score, 4) if math.isfinite(self.score) else None
        return {"id": self.id, "score": score, "box_xyxy": [round(v, 1) for v in self.box_xyxy]}


def mask_summaries(detections: sv.Detections | None) -> tuple[MaskSummary, ...]:
    """The :class:`MaskSummary` of each detection, numbered 1..N in order (none: empty)."""
    if detections is None:
        return ()
    out = []
    for i in range(len(detections)):
        score = float(detections.confidence[i]) if detections.confidence is not None else float("nan")
        x1, y1, x2, y2 = (float(v) for v in detections.xyxy[i])
        out.append(MaskSummary(id=i + 1, score=score, box_xyxy=(x1, y1, x2, y2)))
    return tuple(out)


@dataclass(frozen=True, kw_only=True)
class MasksFound(AgentEvent):
    """The current masks were replaced (by ``segment_phrase``, or by any tool that replaces them).

    Attributes:
        turn: The turn.
        tool: The tool whose call replaced them (``examine_each_mask`` when rejected masks were removed).
        phrase: The call's text prompt, if it has one.
        masks: The new current masks, numbered 1..N (empty: none are left).
        image: The numbered Set-of-Marks picture the model is shown (``None`` when there are no
            masks); ``to_dict()`` gives it as a ``data:`` URL.
    """

    type: ClassVar[str] = "masks_found"
    turn: int
    tool: str
    phrase: str | None = None
    masks: tuple[MaskSummary, ...] = ()
    image: ImagePart | None = None

    @classmethod
    def current(cls, turn: int, tool: str, arguments: object, detections: sv.Detections | None,
                image: ImagePart | None) -> MasksFound:
        """The event for the masks ``tool`` has just set, and their picture (dropped when there are none).

        The phrase is the call's ``text_prompt`` argument (whitespace collapsed), if it has one.
        """
        prompt = getattr(arguments, "text_prompt", None)
        phrase = " ".join(prompt.split()) if isinstance(prompt, str) and prompt.strip() else None
        masks = mask_summaries(detections)
        return cls(turn=turn, tool=tool, phrase=phrase, masks=masks, image=image if masks else None)

    @property
    def image_url(self) -> str | None:
        """The picture as a ``data:image/...;base64,`` URL (``None`` without one)."""
        return None if self.image is None else data_url(self.image.data, self.image.mime)

    def to_dict(self) -> dict[str, Any]:
        """The fields; ``masks`` as a list of dicts, ``image`` as a data URL or ``None``."""
        return {**super().to_dict(), "masks": [m.to_dict() for m in self.masks], "image": self.image_url}

    def describe(self) -> str:
        """E.g. ``turn 1: segment_phrase -> 3 current mask(s) for 'cat'``."""
        phrase = "" if self.phrase is None else f" for {self.phrase!r}"
        return f"turn {self.turn}: {self.tool} -> {len(self.masks)} current mask(s){phrase}"


@dataclass(frozen=True, kw_only=True)
class MaskVerified(AgentEvent):
    """``examine_each_mask`` read one mask's verdict (``"unclear"``: no readable verdict; the mask is kept).

    Attributes:
        turn: The turn of the ``examine_each_mask`` call.
        mask_id: The mask's number when the check began.
        verdict: ``"accept"``, ``"reject"`` or ``"unclear"``.
    """

    type: ClassVar[str] = "verification"
    turn: int
    mask_id: int
    verdict: Literal["accept", "reject", "unclear"]

    def describe(self) -> str:
        """E.g. ``turn 2: mask 1 reject``."""
        return f"turn {self.turn}: mask {self.mask_id} {self.verdict}"


@dataclass(frozen=True, kw_only=True)
class FailureFedBack(AgentEvent):
    """A model mistake was fed back to the model (it costs the turn).

    Attributes:
        turn: The turn.
        kind: The mistake, e.g. ``"parse_error"``, ``"bad_ids"``, ``"reused_phrase"``, ``"no_masks"``.
        message: What the model is told.
    """

    type: ClassVar[str] = "failure"
    turn: int
    kind: str
    message: str

    def describe(self) -> str:
        """E.g. ``turn 3: bad_ids, fed back to the model``."""
        return f"turn {self.turn}: {self.kind}, fed back to the model"


@dataclass(frozen=True, kw_only=True)
class Answer(AgentEvent):
    """The run ended without an error (the :class:`~sam3agent.result.AgentResult` follows).

    Attributes:
        status: ``"answered"``, ``"no_mask"`` or ``"budget_exhausted"``.
        final_text: The model's final reply (empty when a budget ended the run).
        count: Masks in the answer.
        reason: Why the run ended, in words.
    """

    type: ClassVar[str] = "answer"
    status: str
    final_text: str
    count: int
    reason: str = ""

    @classmethod
    def of(cls, result: AgentResult) -> Answer:
        """The event of a finished run's result."""
        return cls(status=result.status, final_text=result.final_text, count=len(result.detections),
                   reason=result.reason)

    def describe(self) -> str:
        """E.g. ``answered: 2 mask(s)``."""
        return f"{self.status}: {self.count} mask(s)"


class EventSink:
    """Stamps a run's events with ``seq`` and ``t`` and delivers them, in the order they are emitted.

    Args:
        deliver: Called with each stamped event (it must not block); ``None``: events are dropped.
        started: The run's start, a :func:`time.perf_counter` reading (default: now).
    """

    def __init__(self, deliver: Callable[[AgentEvent], None] | None = None, started: float | None = None) -> None:
        self._deliver = deliver
        self.started = time.perf_counter() if started is None else started
        self.count = 0

    def emit(self, event: AgentEvent) -> None:
        """Stamp ``event`` with the next ``seq`` and the time since the start, and deliver it."""
        if self._deliver is None:
            return
        self.count += 1
        self._deliver(dataclasses.replace(event, seq=self.count, t=time.perf_counter() - self.started))


async def run_streamed(run: Callable[[EventSink], Awaitable[R]], *, started: float) -> AsyncIterator[AgentEvent | R]:
    """Run ``run(sink)`` in its own task and yield its events as they come, then its result.

    The sink buffers the events, so a slow consumer never slows the run. The result is the last
    item; if the run raises, the exception is raised here after the events it emitted. Closing the
    generator early (``break`` inside :func:`contextlib.aclosing`, a cancelled consumer) cancels
    the run and waits for it to end.

    Args:
        run: Starts the work given the sink its events go to.
        started: The :func:`time.perf_counter` reading the events' ``t`` count from.

    Yields:
        The events, stamped ``seq`` 1, 2, ..., then the result.
    """
    queue: asyncio.Queue[AgentEvent | None] = asyncio.Queue()
    task = asyncio.ensure_future(run(EventSink(queue.put_nowait, started=started)))
    task.add_done_callback(lambda _: queue.put_nowait(None))  # after every event the run emitted
    try:
        while (event := await queue.get()) is not None:
            yield event
        result = task.result()
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait({task})  # never raises the run's error; a cancellation of ours still does
        elif not task.cancelled():
            task.exception()  # marks a failure seen when the consumer left before it was raised
    yield result
