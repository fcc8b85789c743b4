"""The trajectory page: one agent run as one self-contained HTML page (:func:`render_trajectory_html`).

The page shows the query, the answer overlay and status, then each turn's reasoning, tool call, the
images the model saw, the tool's outcome, verification verdicts with their pictures, timings and
tokens. Every image is inlined as a data URL (no external resources, no JavaScript). Each distinct
image is inlined once, where it first appears in the page; later appearances are chips linking back
to it. This module gathers what the page shows; ``templates/trajectory.html`` and
``templates/turn.html`` lay it out, autoescaping every text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from sam3agent.viewer.templating import format_number, render_page, status_kind
from sam3core.image import data_url, jpeg_bytes

if TYPE_CHECKING:
    from sam3agent.llm.base import ImagePart
    from sam3agent.result import AgentResult, Step, Verification

__all__ = ["GalleryItem", "render_trajectory_html"]

# ``ImagePart.summary()``: ``<image WxH MIME 'LABEL' DIGEST8>`` (the label may be quoted).
_SUMMARY = re.compile(r"^<image (\d+)x(\d+) (\w+) (.*) ([0-9a-f]{8})>$")
_TOOL_BLOCK = re.compile(r"<tool>.*?(</tool>|$)", re.DOTALL)
_OVERLAY_MAX_SIDE = 1280  # pixels, longer side of the inlined answer overlay
_TOOL_CLASS = {"segment_phrase": "segment", "examine_each_mask": "examine",
               "select_masks_and_return": "select", "report_no_mask": "nomask"}
_VERDICT_KIND = {"accept": "ok", "reject": "bad", "unclear": "warn"}


@dataclass(frozen=True)
class GalleryItem:
    """One entry of an image gallery.

    Attributes:
        kind: ``figure`` (the image inlined: its first appearance in the page), ``link`` (a chip
            linking back to that figure) or ``missing`` (a summary of an image the run did not keep,
            shown as text).
        caption: The image's label; for ``missing``, the whole summary.
        anchor: The figure's element id, ``img-`` and the first 12 hex digits of the image digest
            (empty for ``missing``).
        width: Width in pixels of the image as the model saw it (0 for ``missing``).
        height: Height in pixels (0 for ``missing``).
        src: The image as a data URL (``figure`` only, else empty).
    """

    kind: Literal["figure", "link", "missing"]
    caption: str
    anchor: str = ""
    width: int = 0
    height: int = 0
    src: str = ""


class _Images:
    """Hands out gallery items in page order: each image inlined once, later mentions link to it."""

    def __init__(self, images: dict[str, ImagePart]) -> None:
        self._images = images
        self._by_prefix = {digest[:8]: digest for digest in images}
        self._shown: set[str] = set()

    def resolve(self, summary: str) -> tuple[str | None, str]:
        """The full digest (``None`` if unknown) and the label of an ``ImagePart.summary()``."""
        match = _SUMMARY.match(summary)
        if match is None:
            return None, summary
        label = match.group(4).strip("'\"")
        return self._by_prefix.get(match.group(5)), label

    def item(self, digest: str, caption: str) -> GalleryItem:
        """The image inlined (the first time it is asked for) or a link back to it."""
        part = self._images[digest]
        anchor = f"img-{digest[:12]}"
        if digest in self._shown:
            return GalleryItem("link", caption, anchor, part.width, part.height)
        self._shown.add(digest)
        return GalleryItem("figure", caption, anchor, part.width, part.height, data_url(part.data, part.mime))

    def gallery(self, summaries: Iterable[str], skip_labels: Sequence[str] = ()) -> list[GalleryItem]:
        """Items for every image summary in order (unknown ones as ``missing``), skipping ``skip_labels``."""
        items = []
        for summary in summaries:
            digest, label = self.resolve(summary)
            if label in skip_labels:
                continue
            items.append(GalleryItem("missing", summary) if digest is None else self.item(digest, label))
        return items


@dataclass(frozen=True)
class _Message:
    """One message of a request: its role and parts as ``(kind, text)``, kind ``chip``, ``text`` or ``code``."""

    role: str
    parts: list[tuple[str, str]]


@dataclass(frozen=True)
class _VerificationView:
    mask_id: int
    verdict: str
    kind: str
    images: list[GalleryItem]
    reply: str
    meta: str


@dataclass(frozen=True)
class _TurnView:
    """What one turn's section shows (``step`` for the fields printed as they are).

    ``tag`` is the heading badge's ``(text, kind)``; ``call`` the parsed call's ``(name, JSON
    parameters)``, or ``None`` when the reply had no usable call (``bad_calls`` then lists the native
    calls as ``name(arguments)``).
    """

    step: Step
    name: str | None
    tag: tuple[str, str]
    timing: str
    seen: list[GalleryItem]
    messages: list[_Message]
    reasoning: str
    call: tuple[str, str] | None
    bad_calls: list[str]
    verifications: list[_VerificationView]
    outcome_images: list[GalleryItem]


def _sent_images(sent: Sequence[dict[str, Any]]) -> list[str]:
    return [part for msg in sent for part in msg.get("content", []) if str(part).startswith("<image ")]


def _messages(sent: Sequence[dict[str, Any]]) -> list[_Message]:
    messages = []
    for msg in sent:
        parts = []
        for part in msg.get("content", []):
            text = str(part)
            parts.append(("chip" if text.startswith("<image ") else "text", text))
        parts.extend(("code", f"{call.get('name')}({call.get('arguments')})") for call in msg.get("tool_calls", []))
        messages.append(_Message(str(msg.get("role")), parts))
    return messages


def _timing(step: Step) -> str:
    bits = [f"LLM {step.llm_seconds:.2f} s", f"SAM 3 {step.sam_seconds:.2f} s",
            f"render {step.render_seconds:.2f} s", f"step {step.wall_seconds:.2f} s",
            f"tokens {step.usage.prompt_tokens} in / {step.usage.completion_tokens} out"]
    if step.attempts > 1:
        bits.append(f"{step.attempts} attempts")
    if step.finish_reason:
        bits.append(f"finish: {step.finish_reason}")
    return " · ".join(bits)


def _verification(v: Verification, images: _Images) -> _VerificationView:
    meta = (f"{v.seconds:.2f} s · tokens {v.usage.prompt_tokens} in / {v.usage.completion_tokens} out"
            + (f" · {v.attempts} attempts" if v.attempts > 1 else ""))
    return _VerificationView(
        mask_id=v.mask_id, verdict=v.verdict, kind=_VERDICT_KIND.get(v.verdict, "warn"),
        images=images.gallery(_sent_images(v.sent), skip_labels=("raw image",)),
        reply=_TOOL_BLOCK.sub("", v.raw_reply).strip() or v.raw_reply, meta=meta,
    )


def _turn(step: Step, images: _Images) -> _TurnView:
    """The view of one turn; its galleries are taken in page order (seen, verifications, outcome)."""
    name = str(step.call.get("name")) if step.call else None
    tag = (name, _TOOL_CLASS.get(name, "other")) if name else (step.failure or "no call", "bad")
    call = None
    if step.call is not None:
        call = (str(step.call.get("name")), json.dumps(step.call.get("parameters", {}), ensure_ascii=False))
    seen = images.gallery(_sent_images(step.sent))
    verifications = [_verification(v, images) for v in step.verifications]
    return _TurnView(
        step=step, name=name, tag=tag, timing=_timing(step), seen=seen, messages=_messages(step.sent),
        reasoning=_TOOL_BLOCK.sub("", step.raw_reply).strip(), call=call,
        bad_calls=[f"{c.get('name')}({c.get('arguments')})" for c in step.tool_calls],
        verifications=verifications, outcome_images=images.gallery(step.images_out),
    )


def _nav(steps: Sequence[Step]) -> list[tuple[int, str, str]]:
    """``(turn index, label, badge kind)`` of each turn's link in the navigation bar."""
    links = []
    for step in steps:
        name = str(step.call.get("name")) if step.call else (step.failure or "no call")
        links.append((step.index, name, _TOOL_CLASS.get(name, "bad") if step.call else "bad"))
    return links


def _overlay(result: AgentResult) -> dict[str, Any]:
    """The answer overlay, its longer side at most ``_OVERLAY_MAX_SIDE`` px, as a JPEG data URL."""
    overlay = result.overlay().convert("RGB")
    overlay.thumbnail((_OVERLAY_MAX_SIDE, _OVERLAY_MAX_SIDE))
    return {"src": data_url(jpeg_bytes(overlay, 88), "image/jpeg"), "width": overlay.width,
            "height": overlay.height}


def _detections(result: AgentResult) -> list[tuple[int, str, str, str, int]]:
    """``(number, phrase, score, box, area)`` rows; the box is pixel corners ``x0, y0, x1, y1``."""
    from sam3agent.detections import detections_to_list

    records = detections_to_list(result.detections, result.image.height, result.image.width)
    if not records:
        return []
    areas = result.detections.area if result.detections.mask is not None else [0] * len(records)
    return [(i, r["phrase"], format_number(r["score"], 3), ", ".join(f"{v:.0f}" for v in r["box_xyxy"]), int(a))
            for i, (r, a) in enumerate(zip(records, areas, strict=True), start=1)]


def _summary(result: AgentResult) -> list[tuple[str, str]]:
    t = result.totals
    failures = ", ".join(f"{k} x{v}" for k, v in sorted(t.failures.items())) or "none"
    return [
        ("turns", f"{t.turns} main-loop call(s) + {t.verify_calls} verification(s); {t.llm_calls} backend attempt(s)"),
        ("seconds", f"{t.wall_seconds:.2f} total · LLM {t.llm_seconds:.2f} · SAM 3 {t.sam_seconds:.2f} "
                    f"· render {t.render_seconds:.2f}"),
        ("tokens", f"{t.prompt_tokens} in / {t.completion_tokens} out"),
        ("model mistakes", failures),
        ("model", result.llm_name or "?"),
        ("image", f"{result.image.source} ({result.image.width}x{result.image.height})"),
        ("prompt version", result.prompt_version or "?"),
    ]


def render_trajectory_html(result: AgentResult) -> str:
    """A self-contained HTML page showing the whole run.

    Args:
        result: A finished run.

    Returns:
        The page as a string (images inlined as data URLs; no external resources, no scripts).
    """
    images = _Images(result.images)
    first_raw = next((d for d, p in result.images.items() if p.label == "raw image"), None)
    # The input figure comes before any turn in the page, so it takes the raw image's first showing.
    inputs = images.item(first_raw, "input, as the model saw it") if first_raw else None
    return render_page(
        "trajectory.html", result=result, status_kind=status_kind(result.status), overlay=_overlay(result),
        inputs=inputs, summary=_summary(result), detections=_detections(result), nav=_nav(result.steps),
        turns=[_turn(step, images) for step in result.steps],
    )
