"""The ``examine_each_mask`` transition: one verification call per mask, run concurrently.

Each mask to check — the not-yet-examined ones, or all of them with ``reexamine="all"`` — (at
most ``max_verifications`` per call; the rest are kept and the model is told) gets its own short
request with the raw image, the image with only that mask drawn, and one close-up picture (a
wide context crop with the mask's box beside a tight zoom with a light fill, see
:mod:`sam3agent.zoom`).
Verdicts are read by :func:`sam3agent.parsing.parse_verdict`: rejected masks are removed, the
rest renumbered and re-rendered, and the new render replaces the old one in context. A reply
with no readable verdict keeps its mask (and is counted as ``unclear_verdict``).

Each check emits three events (:mod:`sam3agent.events`) with the ``examine_each_mask`` turn:
``model_call_started`` when its call is sent (the calls start in mask order, at most
``verify_concurrency`` at a time), then ``model_call_finished`` and ``verification`` once its
reply is read *and* every earlier mask's two have gone out, so the finished calls and verdicts
come out in mask order whatever order the replies arrive in.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import numpy as np

from sam3agent.context import build_verify_request
from sam3agent.events import MaskVerified, ModelCallFinished, ModelCallStarted
from sam3agent.llm.base import LLM, ImagePart
from sam3agent.parsing import parse_verdict
from sam3agent.pictures import add_render_time, encode_for_model, render_current
from sam3agent.render import PALETTE_RGB, render_single
from sam3agent.result import Step, Verification, summarize_messages
from sam3agent.state import AgentState, Outcome, mask_ids
from sam3agent.zoom import render_zoom_context
from sam3core.postprocess import empty_detections

_VERDICT_WORDS = {"accept": "accepted", "reject": "rejected, removed", "unclear": "no clear verdict, kept"}


async def examine_masks(llm: LLM, state: AgentState, step: Step) -> Outcome:
    """Verify the current masks that were not examined yet; see the module docstring.

    The caller has checked that there are current masks and that some are not examined yet.

    Args:
        llm: The backend the verification requests go to.
        state: The run (its settings, prompts, current masks); updated in place.
        step: The main-loop turn that called the tool; gets the verifications and the timings.

    Returns:
        What the model is told, with the re-rendered masks when some were removed.
    """
    prompts, cfg = state.prompts, state.config
    detections = state.detections
    if detections is None:
        raise RuntimeError("internal error: examine_masks called without current masks")
    n = len(detections)
    ids = mask_ids(n)
    pending = [i for i in range(n) if cfg.reexamine == "all" or not state.verified[i]]
    limit = len(pending) if cfg.max_verifications is None else cfg.max_verifications
    targets, skipped = pending[:limit], pending[limit:]
    pictures = await _render_pictures(state, step, targets, ids)
    t0 = time.perf_counter()
    step.verifications = await _verify_all(llm, state, [ids[i] for i in targets], pictures)
    state.llm_seconds += time.perf_counter() - t0
    verdicts = {i: v.verdict for i, v in zip(targets, step.verifications, strict=True)}
    unclear = sum(v == "unclear" for v in verdicts.values())
    if unclear:
        state.failures["unclear_verdict"] += unclear
    keep = [i for i in range(n) if verdicts.get(i) != "reject"]
    lines = [f"- mask {ids[i]}: {_VERDICT_WORDS[verdicts[i]]}" for i in targets]
    after: list[str] = []
    if skipped:
        unchecked = ", ".join(str(ids[i]) for i in skipped)
        after.append(prompts.feedback("examine_unchecked", ids=unchecked, limit=limit))
    verified = [state.verified[i] or i in verdicts for i in keep]
    image: ImagePart | None = None
    if len(keep) == n:
        state.verified = verified
        after.append(prompts.feedback("examine_unchanged"))
    elif not keep:
        state.set_masks(empty_detections(state.handle.height, state.handle.width))
        after.append(prompts.feedback("examine_all_rejected", query=state.query))
    else:
        state.set_masks(detections[keep])
        state.verified = verified
        image = await render_current(state, step)
        new_ids = mask_ids(len(keep))
        mapping = ", ".join(f"old {ids[old]} is now {new}" for old, new in zip(keep, new_ids, strict=True))
        after.append(prompts.feedback("examine_renumbered", count=len(keep), mapping=mapping))
    text = prompts.feedback("examine_result", verdicts="\n".join(lines), after="\n".join(after))
    return Outcome(text, image=image)


async def _render_pictures(state: AgentState, step: Step, targets: Sequence[int],
                           ids: Sequence[int]) -> list[tuple[ImagePart, ImagePart]]:
    """The (single-mask, close-up) pair of encoded images of every target, rendered in threads."""
    detections, image = state.detections, state.handle.image
    rgb = np.asarray(image)  # ImageHandle.image is 8-bit RGB

    def pictures(index: int) -> tuple[ImagePart, ImagePart]:
        mask_id = ids[index]
        single = render_single(image, detections, index, label=mask_id)
        zoom = render_zoom_context(rgb, np.asarray(detections.mask[index], dtype=bool), PALETTE_RGB)
        return (encode_for_model(state.config, single, f"mask {mask_id} alone"),
                encode_for_model(state.config, zoom, f"mask {mask_id} close-up"))

    t0 = time.perf_counter()
    out = await asyncio.gather(*(asyncio.to_thread(pictures, i) for i in targets))
    add_render_time(state, step, time.perf_counter() - t0)
    return list(out)


async def _verify_all(llm: LLM, state: AgentState, target_ids: Sequence[int],
                      pictures: Sequence[tuple[ImagePart, ImagePart]]) -> list[Verification]:
    """Run the verification calls, at most ``verify_concurrency`` at once, in mask order.

    Their events go to ``state.events`` in the order the module docstring gives. If one call fails
    (a backend error), the others are cancelled and the error propagates.
    """
    limit = asyncio.Semaphore(state.config.verify_concurrency)
    turn, events = state.turns, state.events
    reported = [asyncio.Event() for _ in target_ids]  # mask k's events go out after mask k-1's

    async def verify(k: int, mask_id: int, single: ImagePart, zoom: ImagePart) -> Verification:
        request = build_verify_request(state, mask_id, single, zoom)
        state.see(request.images)
        async with limit:
            events.emit(ModelCallStarted(turn=turn, purpose="verify", mask_id=mask_id))
            t0 = time.perf_counter()
            completion = await llm.complete(request)
            seconds = time.perf_counter() - t0
        state.verify_calls += 1
        state.llm_attempts += completion.attempts
        state.usage = state.usage + completion.usage
        verification = Verification(
            mask_id=mask_id, sent=summarize_messages(request.messages), raw_reply=completion.text,
            verdict=parse_verdict(completion.text), seconds=seconds, usage=completion.usage,
            attempts=completion.attempts,
        )
        if k:
            await reported[k - 1].wait()
        events.emit(ModelCallFinished(turn=turn, purpose="verify", mask_id=mask_id, seconds=seconds,
                                      reply=completion.text))
        events.emit(MaskVerified(turn=turn, mask_id=mask_id, verdict=verification.verdict))
        reported[k].set()
        return verification

    tasks = [
        asyncio.ensure_future(verify(k, mask_id, single, zoom))
        for k, (mask_id, (single, zoom)) in enumerate(zip(target_ids, pictures, strict=True))
    ]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
