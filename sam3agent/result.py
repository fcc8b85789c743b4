"""What a run returns: the answer, how it ended, and the full trajectory.

:class:`AgentResult` holds the answer as ``sv.Detections`` (masks at the original resolution), the
status, one :class:`Step` per main-loop LLM call (what was sent, summarised without image bytes;
the raw reply; the parsed call; the outcome; timings; token usage) and run totals. Images the
model saw are kept as encoded bytes in memory; nothing is written until :meth:`AgentResult.save`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import supervision as sv
from PIL import Image

from sam3agent.detections import detections_from_list, detections_to_list
from sam3agent.llm.base import ImagePart, Message, TextPart, Usage
from sam3core.image import ImageHandle

__all__ = ["AgentResult", "Step", "Totals", "Verification", "detections_from_list", "detections_to_list",
           "summarize_messages"]

SCHEMA_VERSION = 1
Verdict = Literal["accept", "reject", "unclear"]


def summarize_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """JSON-safe summaries of messages: text kept, images as ``ImagePart.summary()``.

    The system prompt is shortened to its length (it is identified by the prompt version).
    """
    out: list[dict[str, Any]] = []
    for msg in messages:
        content = [
            p.summary() if isinstance(p, ImagePart) else (
                f"<system prompt, {len(p.text)} chars>" if msg.role == "system" else p.text)
            for p in msg.content
            if isinstance(p, (ImagePart, TextPart))
        ]
        entry: dict[str, Any] = {"role": msg.role, "content": content}
        if msg.tool_calls:
            entry["tool_calls"] = [asdict(c) for c in msg.tool_calls]
        if msg.tool_call_id is not None:
            entry["tool_call_id"] = msg.tool_call_id
        out.append(entry)
    return out


@dataclass
class Verification:
    """One verification call of ``examine_each_mask``.

    Attributes:
        mask_id: The 1-based id of the mask at the time it was examined.
        sent: The request, summarised.
        raw_reply: The model's reply.
        verdict: ``accept``, ``reject`` or ``unclear`` (no readable verdict: the mask is kept).
        seconds: LLM latency of the call.
        usage: Token usage.
        attempts: Backend attempts (1 = no retry).
    """

    mask_id: int
    sent: list[dict[str, Any]]
    raw_reply: str
    verdict: Verdict
    seconds: float
    usage: Usage = field(default_factory=Usage)
    attempts: int = 1


@dataclass
class Step:
    """One main-loop LLM call and what came of it.

    Attributes:
        index: 1-based turn number.
        sent: The (pruned) request, summarised.
        raw_reply: The model's reply text as returned.
        tool_calls: Native tool calls as returned (``id``, ``name``, raw ``arguments``).
        call: The parsed call ``{"name", "parameters"}``, or ``None`` if the reply was unusable.
        outcome: The text sent back to the model (or the final outcome).
        failure: The kind of model mistake, if the turn was one (see ``parsing.FailureKind``).
        notes: Remarks about tolerated deviations.
        llm_seconds: LLM latency of this call.
        sam_seconds: Time in SAM 3 during this step.
        render_seconds: Time rendering and encoding images during this step (verification
            images included).
        usage: Token usage of this call (verification calls not included).
        attempts: Backend attempts (1 = no retry).
        finish_reason: The backend's finish reason.
        verifications: Verification calls made by ``examine_each_mask`` in this step.
        images_out: Summaries of the images this step produced for the model.
        wall_seconds: Wall-clock time of the whole step (request building to the end of the tool).
    """

    index: int
    sent: list[dict[str, Any]]
    raw_reply: str
    tool_calls: list[dict[str, str]] = field(default_factory=list)
    call: dict[str, Any] | None = None
    outcome: str = ""
    failure: str | None = None
    notes: list[str] = field(default_factory=list)
    llm_seconds: float = 0.0
    sam_seconds: float = 0.0
    render_seconds: float = 0.0
    usage: Usage = field(default_factory=Usage)
    attempts: int = 1
    finish_reason: str | None = None
    verifications: list[Verification] = field(default_factory=list)
    images_out: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return asdict(self)


@dataclass
class Totals:
    """Run totals.

    Attributes:
        turns: Main-loop LLM calls.
        llm_calls: Backend attempts of all LLM calls (main loop and verification, retries included).
        verify_calls: Verification calls.
        prompt_tokens: Prompt tokens of all calls.
        completion_tokens: Completion tokens of all calls.
        llm_seconds: Time waiting for the LLM (verification calls run concurrently; their
            wall-clock time is counted once per examine).
        sam_seconds: Time in SAM 3.
        render_seconds: Time rendering and encoding images.
        wall_seconds: Total wall-clock time of the run.
        failures: Model mistakes by kind.
    """

    turns: int = 0
    llm_calls: int = 0
    verify_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    llm_seconds: float = 0.0
    sam_seconds: float = 0.0
    render_seconds: float = 0.0
    wall_seconds: float = 0.0
    failures: dict[str, int] = field(default_factory=dict)

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


@dataclass
class AgentResult:
    """The outcome of one run.

    Attributes:
        query: The query.
        image: The input image (original resolution).
        detections: The answer: masks ``(N, H, W)`` bool at the original resolution, ``xyxy``,
            ``confidence`` and ``data["phrase"]``; empty unless ``status == "answered"``.
        status: ``answered``, ``no_mask`` or ``budget_exhausted``.
        reason: Why the run ended, in words.
        final_text: The model's final reply text (empty if the run did not end with an answer).
        steps: One record per main-loop LLM call.
        totals: Run totals.
        config: The agent settings, as a JSON-safe dict.
        prompt_version: Hash of the prompt templates used.
        llm_name: The LLM backend's name.
        images: Every image the model was sent, by digest, in the order first sent.
    """

    query: str
    image: ImageHandle
    detections: sv.Detections
    status: str
    reason: str
    final_text: str
    steps: list[Step]
    totals: Totals
    config: dict[str, Any] = field(default_factory=dict)
    prompt_version: str = ""
    llm_name: str = ""
    images: dict[str, ImagePart] = field(default_factory=dict, repr=False)

    @property
    def failure_counts(self) -> dict[str, int]:
        """Model mistakes by kind (``parse_error``, ``bad_ids``, ...)."""
        return dict(self.totals.failures)

    def mask(self) -> np.ndarray:
        """The union of the answer masks, ``(H, W)`` bool."""
        if self.detections.mask is None or len(self.detections) == 0:
            return np.zeros((self.image.height, self.image.width), bool)
        return np.asarray(self.detections.mask).any(axis=0)

    def overlay(self) -> Image.Image:
        """The input image with the answer masks drawn on it (a new image)."""
        from sam3agent.render import render_overlay

        return render_overlay(self.image.image, self.detections)

    def to_dict(self, *, include_steps: bool = True) -> dict[str, Any]:
        """A JSON-safe dict; masks as compressed COCO RLE (``{"size": [h, w], "counts": str}``)."""
        data: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "query": self.query,
            "image": {"source": self.image.source, "width": self.image.width, "height": self.image.height,
                      "digest": self.image.digest},
            "status": self.status,
            "reason": self.reason,
            "final_text": self.final_text,
            "detections": detections_to_list(self.detections, self.image.height, self.image.width),
            "totals": {**asdict(self.totals), "total_tokens": self.totals.total_tokens},
            "config": self.config,
            "prompt_version": self.prompt_version,
            "llm": self.llm_name,
        }
        if include_steps:
            data["steps"] = [s.to_dict() for s in self.steps]
        return data

    def save(self, directory: str | Path) -> Path:
        """Write ``overlay.png``, ``mask.png``, ``result.json``, ``trajectory.json``/``.html`` and ``images/``.

        ``trajectory.html`` is a self-contained page of the whole run (see :mod:`sam3agent.viewer`).
        ``images/`` holds every image the model saw, named ``<order>_<digest12>.<ext>``;
        ``trajectory.json`` maps image digests to those files. Existing files of the same names
        in ``directory`` are overwritten; use one directory per run.

        Returns:
            The directory.
        """
        from sam3agent.render import mask_png

        out = Path(directory)
        (out / "images").mkdir(parents=True, exist_ok=True)
        self.overlay().save(out / "overlay.png")
        mask_png(self.detections, self.image.height, self.image.width).save(out / "mask.png")
        (out / "result.json").write_text(json.dumps(self.to_dict(include_steps=False), indent=2), "utf-8")
        files: dict[str, str] = {}
        for order, (digest, part) in enumerate(self.images.items(), start=1):
            ext = "png" if part.mime == "image/png" else "jpg"
            name = f"images/{order:03d}_{digest[:12]}.{ext}"
            (out / name).write_bytes(part.data)
            files[digest] = name
        trajectory = {"schema_version": SCHEMA_VERSION, "query": self.query, "status": self.status,
                      "image_files": files, "steps": [s.to_dict() for s in self.steps]}
        (out / "trajectory.json").write_text(json.dumps(trajectory, indent=2), "utf-8")
        from sam3agent.viewer import render_trajectory_html

        (out / "trajectory.html").write_text(render_trajectory_html(self), "utf-8")
        return out
