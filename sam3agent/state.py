"""The mutable state of one agent run, and the one place mask ids become indices.

An :class:`AgentState` is created per :meth:`sam3agent.Agent.arun` call and changed only by the
driver loop and the tool transitions. It holds the full conversation (``history``); what is
actually sent to the model is derived from it by :func:`sam3agent.context.build_request`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import supervision as sv

from sam3agent.config import AgentConfig
from sam3agent.events import EventSink
from sam3agent.llm.base import ImagePart, Message, Usage
from sam3agent.parsing import FailureKind
from sam3agent.prompts import Prompts
from sam3agent.result import Step
from sam3core.image import ImageHandle

Status = Literal["answered", "no_mask", "budget_exhausted"]


def normalize_phrase(phrase: str) -> str:
    """The form phrases are compared in: trimmed, lower-cased, inner whitespace collapsed."""
    return " ".join(phrase.split()).lower()


def mask_ids(count: int) -> list[int]:
    """The 1-based ids shown to the model for ``count`` current masks."""
    return list(range(1, count + 1))


def resolve_mask_ids(ids: Sequence[int], count: int) -> tuple[list[int], list[str]]:
    """Convert model-facing 1-based mask ids to 0-based indices (the only place this happens).

    Args:
        ids: Ids as the model gave them.
        count: Number of current masks (valid ids are ``1..count``).

    Returns:
        ``(indices, problems)``: the 0-based indices in the given order, and a model-facing
        description of every invalid, duplicated or out-of-range id (empty when all are valid).
    """
    problems: list[str] = []
    if not ids:
        problems.append("the list of mask numbers is empty (use report_no_mask when nothing matches)")
    seen: set[int] = set()
    indices: list[int] = []
    for mask_id in ids:
        if not 1 <= mask_id <= count:
            problems.append(f"{mask_id} is not a current mask number")
        elif mask_id in seen:
            problems.append(f"{mask_id} is listed more than once")
        else:
            seen.add(mask_id)
            indices.append(mask_id - 1)
    return indices, problems


@dataclass
class Outcome:
    """What a tool transition tells the model and the driver.

    Attributes:
        text: The model-facing result text.
        image: An image to show with it (a new Set-of-Marks render), if any.
        failure: The kind of model mistake, if the call was one (it is counted).
        new_window: Whether the call starts a new context window (an executed segment_phrase).
    """

    text: str
    image: ImagePart | None = None
    failure: FailureKind | None = None
    new_window: bool = False


@dataclass
class AgentState:
    """Everything one run knows.

    Attributes:
        handle: The prepared input image (original resolution).
        query: The user's query.
        config: The agent's settings.
        prompts: The loaded prompt templates.
        system: The main-loop system message.
        first_user: The first user turn (raw image + query); always sent.
        raw_image: The encoded raw image (encoded once per run).
        history: Every message after the first user turn, in order, never pruned.
        window_start: Index in ``history`` where the exchange of the latest executed
            ``segment_phrase`` begins (its assistant message); requests include history from here.
        detections: The current masks (``None`` before the first ``segment_phrase``).
        marks_image: The encoded image showing the current masks (``None`` when there are none).
        verified: Per current mask, whether examine_each_mask already checked it.
        tried_phrases: Phrases run through ``segment_phrase``, as the model wrote them.
        tried_visual: Runs of the extra tools (``segment_like``, ``segment_at``), each as
            ``(phrases tried before it, description)``, e.g. ``(1, 'like mask 2 of "cookie"')``;
            with :attr:`tried_phrases` they give the order of every try (:meth:`tried`).
        steps: One record per main-loop LLM call.
        failures: Count of model mistakes by kind.
        images: Every image the model was sent (main loop and verification), by digest.
        events: Where the run's events go (see :mod:`sam3agent.events`); the default drops them.
    """

    handle: ImageHandle
    query: str
    config: AgentConfig
    prompts: Prompts
    system: Message
    first_user: Message
    raw_image: ImagePart
    history: list[Message] = field(default_factory=list)
    window_start: int = 0
    detections: sv.Detections | None = None
    marks_image: ImagePart | None = None
    verified: list[bool] = field(default_factory=list)
    tried_phrases: list[str] = field(default_factory=list)
    tried_visual: list[tuple[int, str]] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    images: dict[str, ImagePart] = field(default_factory=dict)
    turns: int = 0
    llm_attempts: int = 0
    verify_calls: int = 0
    usage: Usage = field(default_factory=Usage)
    llm_seconds: float = 0.0
    sam_seconds: float = 0.0
    render_seconds: float = 0.0
    started: float = field(default_factory=time.perf_counter)
    status: Status | None = None
    reason: str = ""
    final_text: str = ""
    answer: sv.Detections | None = None
    events: EventSink = field(default_factory=EventSink)

    @property
    def finished(self) -> bool:
        """Whether the run has ended."""
        return self.status is not None

    @property
    def mask_count(self) -> int:
        """Number of current masks."""
        return 0 if self.detections is None else len(self.detections)

    def is_tried(self, phrase: str) -> bool:
        """Whether a phrase (after normalisation) was already run."""
        key = normalize_phrase(phrase)
        return any(normalize_phrase(p) == key for p in self.tried_phrases)

    def record_visual_try(self, description: str) -> None:
        """Remember a run of an extra tool (``description`` is model-facing, e.g. ``the object at (120, 80)``)."""
        self.tried_visual.append((len(self.tried_phrases), description))

    def tried(self) -> list[str]:
        """Every segmentation tried so far, in order: phrases quoted, extra-tool runs described."""
        out: list[str] = []
        visual = iter(self.tried_visual)
        pending = next(visual, None)
        for i, phrase in enumerate([*self.tried_phrases, None]):
            while pending is not None and pending[0] <= i:
                out.append(pending[1])
                pending = next(visual, None)
            if phrase is not None:
                out.append(f'"{phrase}"')
        return out

    def memory_text(self) -> str | None:
        """The memory line sent once the window has pruned earlier tries (``None`` with one try or none).

        With phrases only it is the ``[memory]`` feedback listing them; once an extra tool ran, the
        ``[memory_tried]`` text of ``extra_tools.txt`` listing every try in order.
        """
        tried = self.tried()
        if len(tried) < 2:
            return None
        if not self.tried_visual:
            return self.prompts.feedback("memory", tried=", ".join(tried))
        return self.prompts.tool_text("memory_tried", tried=", ".join(tried))

    def see(self, images: Sequence[ImagePart]) -> None:
        """Remember images that were sent to the model (kept as bytes until ``save``)."""
        for image in images:
            self.images.setdefault(image.digest, image)

    def set_masks(self, detections: sv.Detections) -> None:
        """Make ``detections`` the current masks: none of them examined yet, no picture of them yet."""
        self.detections = detections
        self.verified = [False] * len(detections)
        self.marks_image = None

    def finish(self, status: Status, reason: str, answer: sv.Detections, final_text: str = "") -> None:
        """End the run."""
        self.status, self.reason, self.answer, self.final_text = status, reason, answer, final_text
