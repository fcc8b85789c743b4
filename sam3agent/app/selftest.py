"""The offline self-test behind ``sam3agent selftest``: the whole pipeline in seconds, on any machine.

It builds a tiny random SAM 3, loads it through :meth:`Sam3Engine.from_pretrained` (the path real
weights take), segments a synthetic picture, and runs the real agent against a scripted model that
is served over loopback HTTP by :class:`~sam3agent.llm.server.ScriptedOpenAIServer` and reached
through :class:`~sam3agent.llm.openai_compat.OpenAICompatibleLLM`: segment a phrase, examine the
masks (one is rejected), select one. Then the result is saved with its HTML trajectory.

Random weights give random masks: this proves the installation and the plumbing work, not that
answers are right. Nothing here prints; :func:`run_selftest` reports each stage to a callback.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

logger = logging.getLogger(__name__)

PHRASE = "red cup"
QUERY = "the red cup on the table"
SAVED_FILES = ("overlay.png", "mask.png", "result.json", "trajectory.json", "trajectory.html")


@dataclass
class StageResult:
    """How one stage of the self-test went.

    Attributes:
        name: What the stage checks.
        ok: ``True`` passed, ``False`` failed, ``None`` skipped (an earlier stage failed).
        detail: Measurements on success, the error on failure.
        seconds: Wall-clock time of the stage.
    """

    name: str
    ok: bool | None
    detail: str = ""
    seconds: float = 0.0


@dataclass
class SelftestReport:
    """All stages, in order, and where the saved run lies (when it was kept)."""

    stages: list[StageResult] = field(default_factory=list)
    run_dir: Path | None = None

    @property
    def passed(self) -> bool:
        """Every stage ran and passed."""
        return bool(self.stages) and all(s.ok for s in self.stages)


class StageFailed(RuntimeError):
    """A self-test check did not hold; the message says which."""


def synthetic_image(width: int = 320, height: int = 240) -> Image.Image:
    """A small drawn scene (table, red cup, blue ball, green plant) to segment.

    Returns:
        A new RGB ``PIL.Image`` of ``width`` x ``height``.
    """
    image = Image.new("RGB", (width, height), (226, 232, 240))
    draw = ImageDraw.Draw(image)
    for y in range(height // 2):
        shade = 200 - y // 3
        draw.line([(0, y), (width, y)], fill=(shade, shade + 10, shade + 30))
    w, h = width / 320, height / 240
    draw.rectangle([0, 150 * h, width, height], fill=(150, 105, 70))
    draw.rectangle([60 * w, 95 * h, 110 * w, 160 * h], fill=(205, 30, 35))
    draw.ellipse([60 * w, 88 * h, 110 * w, 102 * h], fill=(150, 20, 25))
    draw.arc([100 * w, 110 * h, 128 * w, 140 * h], 270, 90, fill=(205, 30, 35), width=max(2, int(6 * w)))
    draw.ellipse([160 * w, 110 * h, 210 * w, 160 * h], fill=(40, 90, 210))
    draw.polygon([(250 * w, 160 * h), (275 * w, 70 * h), (300 * w, 160 * h)], fill=(40, 150, 60))
    return image


def _last_text(body: Mapping[str, Any]) -> str:
    messages = body.get("messages") or []
    if not messages:
        return ""
    content = messages[-1].get("content")
    if isinstance(content, str):
        return content
    return " ".join(str(p.get("text", "")) for p in content or [] if isinstance(p, dict))


def scripted_policy(phrase: str = PHRASE, *, reject: int | None = 2) -> Callable[[dict[str, Any]], str]:
    """A stateless scripted model for :class:`ScriptedOpenAIServer` (text protocol).

    It answers from the last message of each request, so any number of agents may share it: the
    first turn segments ``phrase``; masks found -> ``examine_each_mask``; examined -> select mask 1;
    nothing found -> ``report_no_mask``. Verification requests get ``Reject`` for mask ``reject``
    and ``Accept`` for the others.

    Args:
        phrase: The phrase to segment.
        reject: The 1-based mask id to reject on examination (``None``: accept all).

    Returns:
        A policy callable ``(request_json) -> reply text``.
    """

    def call(name: str, thought: str, **params: object) -> str:
        return f"{thought}\n<tool>{json.dumps({'name': name, 'parameters': params})}</tool>"

    def reply(body: dict[str, Any]) -> str:
        text = _last_text(body)
        if "Candidate: mask" in text:
            if reject is not None and f"Candidate: mask {reject}." in text:
                return "The painted region is not the target.\n<verdict>Reject</verdict>"
            return "The painted region matches the query.\n<verdict>Accept</verdict>"
        if "examine_each_mask checked" in text:
            return call("select_masks_and_return", "Mask 1 survived the check; it is the answer.",
                        final_answer_masks=[1])
        if "found nothing" in text:
            return call("report_no_mask", "Nothing matches.")
        if "mask(s), numbered" in text:
            return call("examine_each_mask", "Candidates 1 & 2 may not be a <cup>: check each.")
        return call("segment_phrase", f"I should look for the {phrase}.", text_prompt=phrase)

    return reply


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise StageFailed(message)


@dataclass
class _Context:
    """What the stages share."""

    tmp: Path
    device: str | None
    out_dir: Path | None
    stack: ExitStack
    image: Image.Image = field(default_factory=synthetic_image)
    engine: Any = None
    result: Any = None
    run_dir: Path | None = None


def run_selftest(*, device: str | None = "cpu", out_dir: str | Path | None = None,
                 on_stage: Callable[[StageResult], None] | None = None) -> SelftestReport:
    """Run every stage; a failed stage skips the ones after it.

    Args:
        device: Device of the tiny SAM 3 (``None``: cuda when available).
        out_dir: Keep the saved run (with ``trajectory.html``) here; default: a temporary folder
            removed at the end.
        on_stage: Called with each :class:`StageResult` as soon as it is known.

    Returns:
        The :class:`SelftestReport`.
    """
    report = SelftestReport()
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sam3agent-selftest-")))
        ctx = _Context(tmp=tmp, device=device, out_dir=Path(out_dir) if out_dir is not None else None, stack=stack)
        for name, body in _STAGES:
            if report.stages and not report.stages[-1].ok:
                stage = StageResult(name, None, "skipped: an earlier stage failed")
            else:
                stage = _run_stage(name, body, ctx)
            report.stages.append(stage)
            if on_stage is not None:
                on_stage(stage)
        report.run_dir = ctx.run_dir
    return report


def _run_stage(name: str, body: Callable[[_Context], str], ctx: _Context) -> StageResult:
    t0 = time.perf_counter()
    try:
        detail = body(ctx)
    except Exception as e:  # a self-test reports every failure as a FAIL line, with its cause
        logger.debug("self-test stage %r failed", name, exc_info=True)
        return StageResult(name, False, f"{type(e).__name__}: {e}", time.perf_counter() - t0)
    return StageResult(name, True, detail, time.perf_counter() - t0)


def _torch_stack(ctx: _Context) -> str:
    from sam3core.loading import check_torch_stack

    return ", ".join(f"{k} {v}" for k, v in check_torch_stack().items())


def _load_sam3(ctx: _Context) -> str:
    from sam3core.engine import Sam3Engine
    from sam3core.testing import save_tiny_sam3

    ctx.engine = Sam3Engine.from_pretrained(save_tiny_sam3(ctx.tmp / "tiny-sam3"), device=ctx.device)
    ctx.stack.callback(ctx.engine.close)
    return f"{ctx.engine.device}, {ctx.engine.dtype}"


def _segmentation(ctx: _Context) -> str:
    import numpy as np

    engine, image = ctx.engine, ctx.image
    first = engine.segment(image, PHRASE, score_threshold=0.0)
    _check(len(first) > 0, "no masks at score threshold 0")
    _check(first.mask.shape[1:] == (image.height, image.width),
           f"masks are {first.mask.shape[1:]}, expected the image size {(image.height, image.width)}")
    engine.segment(image, ["blue ball", "plant", "table"], score_threshold=0.0)
    again = engine.segment(image, PHRASE, score_threshold=0.0)
    runs = engine.stats.vision_encoder_runs
    _check(runs == 1, f"the image was encoded {runs} times for 5 phrases (expected once)")
    _check(bool(np.array_equal(first.mask, again.mask)), "a cached call gave different masks")
    return f"{len(first)} masks at {image.width}x{image.height}, vision encoder ran once for 5 phrases"


def _agent_over_http(ctx: _Context) -> str:
    import asyncio

    from sam3agent.agent import Agent
    from sam3agent.config import AgentConfig
    from sam3agent.llm.openai_compat import OpenAICompatibleLLM
    from sam3agent.llm.server import ScriptedOpenAIServer

    config = AgentConfig(score_threshold=0.0, max_masks=4, timeout_s=120)

    async def run(base_url: str) -> Any:
        async with OpenAICompatibleLLM(base_url, "scripted", timeout=30, max_retries=0) as llm:
            return await Agent(llm, ctx.engine, config).arun(ctx.image, QUERY)

    with ScriptedOpenAIServer(scripted_policy()) as server:
        result = asyncio.run(run(server.base_url))
        calls = server.call_count
    _check(result.status == "answered", f"status {result.status!r} ({result.reason}), expected 'answered'")
    _check(len(result.detections) == 1, f"{len(result.detections)} masks selected, expected 1")
    _check(result.totals.turns == 3, f"{result.totals.turns} turns, expected 3 (segment, examine, select)")
    _check(result.totals.verify_calls >= 1, "examine_each_mask made no verification call")
    ctx.result = result
    return (f"{result.status}: {result.totals.turns} turns + {result.totals.verify_calls} verifications, "
            f"{calls} HTTP calls, {len(result.images)} images sent")


def _save(ctx: _Context) -> str:
    result, target = ctx.result, ctx.out_dir if ctx.out_dir is not None else ctx.tmp / "run"
    result.save(target)
    missing = [name for name in SAVED_FILES if not (target / name).is_file()]
    _check(not missing, f"missing files: {', '.join(missing)}")
    html = (target / "trajectory.html").read_text("utf-8")
    turns = sum(f'id="turn-{s.index}"' in html for s in result.steps)
    _check(turns == len(result.steps), f"trajectory.html shows {turns} of {len(result.steps)} turns")
    _check("&lt;cup&gt;" in html and "<cup>" not in html, "trajectory.html does not escape the model's text")
    images = html.count("<img ")
    _check(images >= len(result.images), f"trajectory.html has {images} images, the model saw {len(result.images)}")
    if ctx.out_dir is not None:
        ctx.run_dir = target.resolve()
    return f"{len(SAVED_FILES)} files + images/, trajectory.html {len(html) // 1024} KiB with {images} images"


_STAGES: list[tuple[str, Callable[[_Context], str]]] = [
    ("torch stack (torch, torchvision, transformers)", _torch_stack),
    ("SAM 3 load (tiny random model through from_pretrained)", _load_sam3),
    ("segmentation + cache (encode once, phrases batched)", _segmentation),
    ("agent loop over HTTP (scripted model, OpenAI-compatible client)", _agent_over_http),
    ("result save + HTML trajectory", _save),
]
