"""The SAM 3 Agent: an MLLM plans, SAM 3 segments, in a small explicit loop.

The driver (:meth:`Agent._drive`) asks the model for one tool call per turn, parses it, and
applies it as a transition of :class:`~sam3agent.state.AgentState`. The model's mistakes (bad
JSON, unknown tool, bad arguments or ids, a reused phrase) become feedback and cost a turn;
backend failures (:class:`~sam3agent.llm.base.LLMBackendError`) and our own bugs propagate.
Nothing is written to disk during a run.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import re
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from contextlib import aclosing

import supervision as sv
from PIL import Image
from pydantic import BaseModel

from sam3agent import events, many, pictures
from sam3agent.config import AgentConfig
from sam3agent.context import append_exchange, build_request
from sam3agent.examine import examine_masks
from sam3agent.llm.base import LLM, Completion, ImagePart, LLMBackendError, LLMRequest, Message, TextPart
from sam3agent.many import Item, ManyOutcome
from sam3agent.overlap import remove_overlaps
from sam3agent.parsing import ParsedCall, ParseError, parse_completion
from sam3agent.result import AgentResult, Step, Totals, summarize_messages
from sam3agent.state import AgentState, Outcome, resolve_mask_ids
from sam3agent.tools import SegmentPhraseArgs, SelectMasksArgs
from sam3agent.visual_tools import VisualTools, mask_listing
from sam3core.image import ImageHandle, ImageInput
from sam3core.postprocess import empty_detections
from sam3core.protocol import SegmentEngine

logger = logging.getLogger(__name__)


Transition = Callable[[AgentState, BaseModel, Step], Awaitable[Outcome]]

_SURROGATE = re.compile("[\ud800-\udfff]")


def check_query(query: object) -> str:
    """The query without surrounding whitespace, checked before any work is done.

    Raises:
        ValueError: The query is not a non-empty string, or holds a lone surrogate code point
            (it cannot be encoded as UTF-8, so no backend could be sent it).
    """
    if not isinstance(query, str) or not query.strip():
        raise ValueError("query must be a non-empty string describing what to segment")
    found = _SURROGATE.search(query)
    if found is not None:
        raise ValueError(
            f"query contains a lone surrogate at position {found.start()}; U+{ord(found.group()):04X} cannot be "
            "encoded as UTF-8 (it usually comes from bytes decoded with errors='surrogateescape', such as a "
            "non-UTF-8 command line, or half of an escaped pair); decode the text as UTF-8 or remove it"
        )
    return query.strip()


class Agent:
    """The SAM 3 Agent.

    Args:
        llm: The planning MLLM backend (any :class:`~sam3agent.llm.base.LLM`).
        engine: The segmentation engine (any :class:`~sam3core.protocol.SegmentEngine`).
        config: Settings (default :class:`AgentConfig()`).

    Raises:
        TypeError: If ``llm`` or ``engine`` does not implement its protocol.

    One agent may serve many concurrent :meth:`arun` calls; each run has its own state.
    """

    def __init__(self, llm: LLM, engine: SegmentEngine, config: AgentConfig | None = None) -> None:
        if not isinstance(llm, LLM):
            kind = type(llm).__name__
            raise TypeError(f"llm must implement sam3agent.llm.LLM (name, async complete), got {kind}")
        if not isinstance(engine, SegmentEngine):
            kind = type(engine).__name__
            raise TypeError(f"engine must implement sam3core.SegmentEngine (prepare, segment, asegment), got {kind}")
        self.llm = llm
        self.engine = engine
        self.config = config or AgentConfig()
        self.prompts = self.config.load_prompts()
        self._transitions: dict[str, Transition] = {
            "segment_phrase": self._segment_phrase,
            "examine_each_mask": self._examine_each_mask,
            "select_masks_and_return": self._select_masks,
            "report_no_mask": self._report_no_mask,
        }
        # the opt-in tools (AgentConfig.tools; none by default): see sam3agent.visual_tools
        self._transitions.update(VisualTools(engine, self.config, self.prompts).transitions())

    def run(self, image: ImageInput, query: str) -> AgentResult:
        """Synchronous :meth:`arun`.

        Works with or without an event loop running in the calling thread (e.g. in Jupyter): in
        the latter case the run happens on a fresh loop in a helper thread.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.arun(image, query))
        with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="sam3agent-run") as pool:
            return pool.submit(asyncio.run, self.arun(image, query)).result()

    async def arun(self, image: ImageInput, query: str) -> AgentResult:
        """Segment what ``query`` describes in ``image``.

        Args:
            image: Anything :func:`sam3core.image.prepare_image` accepts.
            query: A referring expression or question about the image.

        Returns:
            The :class:`AgentResult` (:meth:`astream`'s last item); model misbehaviour and budgets never raise.

        Raises:
            ValueError: For an unreadable or oversized image, or a query that is empty or not
                encodable (see :func:`check_query`).
            LLMBackendError: When the LLM backend fails after its retries (with a ``partial_result``).
        """
        async with aclosing(self.astream(image, query)) as items:
            async for item in items:
                if isinstance(item, AgentResult):
                    return item
        raise RuntimeError("internal error: Agent.astream ended without a result")

    async def astream(self, image: ImageInput, query: str) -> AsyncIterator[events.AgentEvent | AgentResult]:
        """Segment what ``query`` describes in ``image``, yielding the run's events as they happen.

        Yields each :class:`~sam3agent.events.AgentEvent` (``seq`` 1, 2, ..., in the order
        :mod:`sam3agent.events` describes), then the :class:`AgentResult` as the last item. The run
        goes on in its own task (:func:`~sam3agent.events.run_streamed`): a slow consumer never slows
        it, and closing the generator early cancels it.

        Raises:
            ValueError: Before any event, as :meth:`arun` does.
            LLMBackendError: After the events so far, as :meth:`arun` does.
        """
        query = check_query(query)
        started = time.perf_counter()
        handle = await asyncio.to_thread(self.engine.prepare, image)
        run = functools.partial(self._run, handle, query)
        async with aclosing(events.run_streamed(run, started=started)) as items:
            async for item in items:
                yield item

    async def _run(self, handle: ImageHandle, query: str, sink: events.EventSink) -> AgentResult:
        """The run once the image is prepared: the loop under the wall-clock limit, then the answer."""
        sink.emit(events.RunStarted(query=query, width=handle.width, height=handle.height))
        state = await self._start(handle, query, sink)
        state.started = sink.started  # wall time covers decoding and the first image encode too
        cfg = self.config
        try:
            async with asyncio.timeout(cfg.timeout_s) as deadline:
                await self._drive(state)
        except LLMBackendError as e:
            # the backend failed for good: callers (e.g. the eval runner) still get what the run cost
            state.reason = f"the LLM backend failed: {e}"
            e.partial_result = self._result(state)
            raise
        except TimeoutError:
            if not deadline.expired():
                raise
            reason = f"wall-clock timeout of {cfg.timeout_s:g} s reached after {state.turns} LLM call(s)"
            state.finish("budget_exhausted", reason, self._empty(state))
        logger.info("run ended: %s (%s) after %d turn(s)", state.status, state.reason, state.turns)
        result = self._result(state)
        sink.emit(events.Answer.of(result))
        return result

    async def _start(self, handle: ImageHandle, query: str, sink: events.EventSink) -> AgentState:
        prompts, cfg = self.prompts, self.config
        t0 = time.perf_counter()
        raw = await asyncio.to_thread(self.encode_for_model, handle.image, "raw image", raw=True)
        first_user = Message(role="user", content=[raw, TextPart(prompts.render("user_turn", query=query))])
        state = AgentState(
            handle=handle, query=query, config=cfg, prompts=prompts,
            system=Message.text("system", prompts.system(cfg.protocol)), first_user=first_user, raw_image=raw,
            events=sink,
        )
        state.render_seconds += time.perf_counter() - t0
        return state

    async def _drive(self, state: AgentState) -> None:
        """The loop: one LLM call and one transition per turn until an answer or a budget."""
        while not state.finished:
            if state.turns >= self.config.max_llm_calls:
                reason = f"reached max_llm_calls={self.config.max_llm_calls} without a final answer"
                state.finish("budget_exhausted", reason, self._empty(state))
                return
            await self._turn(state)

    async def _turn(self, state: AgentState) -> None:
        started = time.perf_counter()
        request = build_request(state)
        state.see(request.images)
        step = Step(index=state.turns + 1, sent=summarize_messages(request.messages), raw_reply="")
        completion = await self._complete(state, request, step)
        masks_before = state.detections
        call: ParsedCall | None = None
        try:
            call = parse_completion(completion, self.config.protocol, self.config.tools)
        except ParseError as e:
            how = self.prompts.feedback("how_native" if self.config.protocol == "native" else "how_text")
            outcome = Outcome(self.prompts.feedback("format_error", detail=e.detail, how=how), failure=e.kind)
        else:
            arguments = call.args.model_dump(mode="json")
            state.events.emit(events.ToolCalled(turn=step.index, name=call.name, arguments=arguments))
            outcome = await self._apply(state, call, step)
        text = "\n".join([outcome.text, *step.notes])
        step.outcome = text
        if call is not None and state.detections is not masks_before:  # whichever tool replaced them
            state.events.emit(events.MasksFound.current(step.index, call.name, call.args, state.detections,
                                                        state.marks_image))
        if outcome.failure is not None:
            state.failures[outcome.failure] += 1
            step.failure = outcome.failure
            state.events.emit(events.FailureFedBack(turn=step.index, kind=outcome.failure, message=text))
        if outcome.image is not None:
            step.images_out.append(outcome.image.summary())
        if not state.finished:
            if outcome.new_window:
                state.window_start = len(state.history)
            append_exchange(state, completion, text, outcome.image)
        step.wall_seconds = time.perf_counter() - started
        state.steps.append(step)
        logger.debug("turn %d: %s -> %s", step.index, step.call or step.failure, text.splitlines()[0])

    async def _complete(self, state: AgentState, request: LLMRequest, step: Step) -> Completion:
        """The turn's planning call, between its two events; its time and tokens are counted."""
        state.events.emit(events.ModelCallStarted(turn=step.index, purpose="plan"))
        t0 = time.perf_counter()
        completion = await self.llm.complete(request)
        step.llm_seconds = time.perf_counter() - t0
        self._account(state, step, completion)
        state.events.emit(events.ModelCallFinished(turn=step.index, purpose="plan", seconds=step.llm_seconds,
                                                   reply=completion.text))
        return completion

    def _account(self, state: AgentState, step: Step, completion: Completion) -> None:
        state.turns += 1
        state.llm_attempts += completion.attempts
        state.usage = state.usage + completion.usage
        state.llm_seconds += step.llm_seconds
        step.raw_reply, step.usage, step.attempts = completion.text, completion.usage, completion.attempts
        step.finish_reason = completion.finish_reason
        step.tool_calls = [
            {"id": c.id, "name": c.name, "arguments": c.arguments} for c in completion.tool_calls
        ]

    async def _apply(self, state: AgentState, call: ParsedCall, step: Step) -> Outcome:
        step.call = call.to_dict()
        step.notes.extend(call.notes)
        return await self._transitions[call.name](state, call.args, step)

    # -- transitions ---------------------------------------------------------------------------

    async def _segment_phrase(self, state: AgentState, args: BaseModel, step: Step) -> Outcome:
        """Run SAM 3 on the raw image; the new masks replace the current ones (refuse a reused phrase)."""
        if not isinstance(args, SegmentPhraseArgs):
            raise TypeError(f"segment_phrase got {type(args).__name__}")
        prompts, cfg = self.prompts, self.config
        phrase = " ".join(args.text_prompt.split())
        if state.is_tried(phrase):
            tried = ", ".join(f'"{p}"' for p in state.tried_phrases)
            text = prompts.feedback("phrase_reused", phrase=phrase, tried=tried)
            if cfg.refused_phrase_restarts_window:
                state.marks_image = None  # the masks stay selectable; their picture leaves the context
            return Outcome(text, failure="reused_phrase", new_window=cfg.refused_phrase_restarts_window)
        t0 = time.perf_counter()
        options: dict[str, object] = {}
        if cfg.overlap_iom is not None:
            options["dedup_iou"] = None  # our overlap removal below replaces the engine's own
        if cfg.mask_upsampling is not None:
            options["mask_upsampling"] = cfg.mask_upsampling
        found = await self.engine.asegment(state.handle, phrase, score_threshold=cfg.score_threshold,
                                           mask_threshold=cfg.mask_threshold, max_masks=cfg.max_masks, **options)
        detections = await asyncio.to_thread(remove_overlaps, found, cfg.overlap_iom,
                                             drop_short_rle=cfg.drop_short_rle)
        seconds = time.perf_counter() - t0
        step.sam_seconds += seconds
        state.sam_seconds += seconds
        state.tried_phrases.append(phrase)
        self.set_masks(state, detections)
        if len(detections) == 0:
            return Outcome(prompts.feedback("segment_empty", phrase=phrase, query=state.query), new_window=True)
        image = await self.render_current(state, step)
        listing = mask_listing(detections, state.handle)
        text = prompts.feedback("segment_found", phrase=phrase, count=len(detections), listing=listing,
                                query=state.query)
        return Outcome(text, image=image, new_window=True)

    async def _examine_each_mask(self, state: AgentState, args: BaseModel, step: Step) -> Outcome:
        """Verify the masks one by one (see :mod:`sam3agent.examine`)."""
        if state.mask_count == 0:
            return Outcome(self.prompts.feedback("no_masks", tool="examine_each_mask"), failure="no_masks")
        if self.config.reexamine == "unchecked" and all(state.verified):
            return Outcome(self.prompts.feedback("already_examined"), failure="already_examined")
        return await examine_masks(self.llm, state, step)

    async def _select_masks(self, state: AgentState, args: BaseModel, step: Step) -> Outcome:
        """Finish with the chosen current masks; invalid ids are fed back with the valid range."""
        if not isinstance(args, SelectMasksArgs):
            raise TypeError(f"select_masks_and_return got {type(args).__name__}")
        if state.detections is None or state.mask_count == 0:
            text = self.prompts.feedback("no_masks", tool="select_masks_and_return")
            return Outcome(text, failure="no_masks")
        indices, problems = resolve_mask_ids(args.final_answer_masks, state.mask_count)
        if problems:
            text = self.prompts.feedback("bad_ids", problems="; ".join(problems), count=state.mask_count)
            return Outcome(text, failure="bad_ids")
        chosen = sorted(indices)
        ids = ", ".join(str(i) for i in args.final_answer_masks)
        state.finish("answered", f"selected mask(s) {ids}", state.detections[chosen], step.raw_reply)
        return Outcome(f"Final answer: mask(s) {ids}.")

    async def _report_no_mask(self, state: AgentState, args: BaseModel, step: Step) -> Outcome:
        """Finish with an empty answer."""
        state.finish("no_mask", "the model reported that nothing matches", self._empty(state), step.raw_reply)
        return Outcome("Final answer: no mask.")

    # -- helpers used by the transitions (they live in sam3agent.pictures and AgentState, which
    # the examine transition uses too) -----------------------------------------------------------

    def set_masks(self, state: AgentState, detections: sv.Detections) -> None:
        """Make ``detections`` the current masks (none of them examined yet)."""
        state.set_masks(detections)

    async def render_current(self, state: AgentState, step: Step) -> ImagePart:
        """Render and encode the current masks numbered 1..N; it becomes the image kept in context."""
        return await pictures.render_current(state, step)

    def encode_for_model(self, image: Image.Image, label: str, *, raw: bool = False) -> ImagePart:
        """Resize and encode an image to the configured pixel budget and format.

        Args:
            image: The picture.
            label: Its description in traces.
            raw: Whether it is the raw input image (``image_format``) rather than a picture we drew
                (``render_format``).
        """
        return pictures.encode_for_model(self.config, image, label, raw=raw)

    @staticmethod
    def _empty(state: AgentState) -> sv.Detections:
        return empty_detections(state.handle.height, state.handle.width)

    def _result(self, state: AgentState) -> AgentResult:
        totals = Totals(
            turns=state.turns, llm_calls=state.llm_attempts, verify_calls=state.verify_calls,
            prompt_tokens=state.usage.prompt_tokens, completion_tokens=state.usage.completion_tokens,
            llm_seconds=state.llm_seconds, sam_seconds=state.sam_seconds, render_seconds=state.render_seconds,
            wall_seconds=time.perf_counter() - state.started, failures=dict(state.failures),
        )
        return AgentResult(
            query=state.query, image=state.handle,
            detections=state.answer if state.answer is not None else self._empty(state),
            status=state.status or "budget_exhausted", reason=state.reason, final_text=state.final_text,
            steps=state.steps, totals=totals, config=self.config.model_dump(mode="json"),
            prompt_version=self.prompts.version, llm_name=getattr(self.llm, "name", type(self.llm).__name__),
            images=dict(state.images),
        )

    def arun_many(self, items: Iterable[Item] | AsyncIterable[Item], *,
                  concurrency: int = 8) -> AsyncIterator[ManyOutcome]:
        """Run many (image, query) items, ``concurrency`` at a time, yielding records as runs end.

        See :func:`sam3agent.many.arun_many` for the items it takes and the records it yields.
        """
        return many.arun_many(self, items, concurrency=concurrency)
