"""``Agent.astream``: the typed events of a run, their order and JSON form, and ``arun`` built on it."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
from contextlib import aclosing

import numpy as np
import pytest
from agent_helpers import native, tool, verdict_by_mask
from PIL import Image

from sam3agent import Agent, AgentConfig
from sam3agent.events import REPLY_CHARS, AgentEvent, MasksFound, ModelCallFinished
from sam3agent.llm.base import Completion, LLMBackendError, LLMRequest
from sam3agent.llm.scripted import ScriptedLLM, ScriptExhaustedError
from sam3agent.result import AgentResult, summarize_messages
from sam3core.image import decode_data_url


async def collect(agent: Agent, image: object, query: str) -> tuple[list[AgentEvent], AgentResult]:
    """Every item of one stream: the events, and the result (checked to be the last item, and only there)."""
    items = [item async for item in agent.astream(image, query)]
    *events, result = items
    assert isinstance(result, AgentResult)
    assert all(isinstance(e, AgentEvent) for e in events)
    return events, result


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _script(call, *, rejected=(2,)) -> ScriptedLLM:
    return ScriptedLLM([call("segment_phrase", text_prompt=" dog "), call("examine_each_mask"),
                        call("select_masks_and_return", final_answer_masks=[2])],
                       verify_replies=verdict_by_mask(rejected=list(rejected)))


@pytest.mark.parametrize("protocol", ["text", "native"])
async def test_events_of_a_run_in_order(image, masks, engine, protocol) -> None:
    call = tool if protocol == "text" else native
    llm = _script(call)
    events, result = await collect(Agent(llm, engine, AgentConfig(protocol=protocol)), image, " the small dog ")
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert all(a.t <= b.t for a, b in itertools.pairwise(events)) and events[0].t >= 0
    plan = ["model_call_started", "model_call_finished", "tool_call"]
    verify = ["model_call_started", "model_call_finished", "verification"] * 3
    assert [e.type for e in events] == [
        "run_started", *plan, "masks_found", *plan, *verify, "masks_found", *plan, "answer"]
    dicts = [e.to_dict() for e in events]
    assert dicts[0] == {"type": "run_started", "seq": 1, "t": dicts[0]["t"], "query": "the small dog",
                        "image": {"width": 80, "height": 60}}
    assert {k: dicts[1][k] for k in ("turn", "purpose", "mask_id")} == {"turn": 1, "purpose": "plan", "mask_id": None}
    assert dicts[2]["reply"] == ("" if protocol == "native" else tool("segment_phrase", text_prompt=" dog "))
    assert dicts[2]["seconds"] >= 0
    assert dicts[3] == {"type": "tool_call", "seq": 4, "t": dicts[3]["t"], "turn": 1, "name": "segment_phrase",
                        "arguments": {"text_prompt": " dog "}}
    found = dicts[4]
    assert (found["turn"], found["tool"], found["phrase"]) == (1, "segment_phrase", "dog")
    boxes = engine.segment(image, "dog").xyxy
    assert found["masks"] == [{"id": i + 1, "score": s, "box_xyxy": [round(float(v), 1) for v in boxes[i]]}
                              for i, s in enumerate([0.9, 0.85, 0.8])]
    # the picture is the one the model is shown next
    data, mime = decode_data_url(found["image"])
    shown = llm.requests[1].images[-1]
    assert mime == shown.mime and data == shown.data and shown.label == "marks 1-3"
    checks = [d for d in dicts if d.get("purpose") == "verify" or d["type"] == "verification"]
    assert {d["turn"] for d in checks} == {2}
    assert [(d["mask_id"], d["verdict"]) for d in checks if d["type"] == "verification"] == [
        (1, "accept"), (2, "reject"), (3, "accept")]
    renumbered = dicts[-5]
    assert (renumbered["tool"], renumbered["phrase"], [m["id"] for m in renumbered["masks"]]) == (
        "examine_each_mask", None, [1, 2])
    assert [m["box_xyxy"] for m in renumbered["masks"]] == [found["masks"][0]["box_xyxy"],
                                                           found["masks"][2]["box_xyxy"]]
    assert decode_data_url(renumbered["image"])[0] == llm.requests[-1].images[-1].data
    assert dicts[-1] == {"type": "answer", "seq": len(events), "t": dicts[-1]["t"], "status": "answered",
                         "final_text": result.final_text, "count": 1, "reason": "selected mask(s) 2"}
    assert result.status == "answered" and np.array_equal(result.detections.mask[0], masks[2])
    for d in dicts:  # JSON-safe
        assert json.loads(json.dumps(d, allow_nan=False)) == d


async def test_arun_is_astream_s_result_and_events_leave_requests_alone(image, engine) -> None:
    streamed, plain = _script(tool), _script(tool)
    events, via_stream = await collect(Agent(streamed, engine), image, "the small dog")
    via_arun = await Agent(plain, engine).arun(image, "the small dog")
    assert events and via_arun.status == via_stream.status == "answered"
    drop = ("totals",)
    a, b = via_arun.to_dict(include_steps=False), via_stream.to_dict(include_steps=False)
    assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}
    assert len(streamed.requests) == len(plain.requests) == 6
    for x, y in zip(streamed.requests, plain.requests, strict=True):
        assert summarize_messages(x.messages) == summarize_messages(y.messages)
        assert [i.digest for i in x.images] == [i.digest for i in y.images] and x.tools == y.tools


async def test_mistakes_are_failure_events_with_what_the_model_is_told(image, engine) -> None:
    long_reply = "x" * (REPLY_CHARS + 500)
    llm = ScriptedLLM([long_reply, tool("segment_phrase", text_prompt="dog"),
                       tool("segment_phrase", text_prompt="DOG"),
                       tool("select_masks_and_return", final_answer_masks=[7]),
                       tool("select_masks_and_return", final_answer_masks=[1])])
    events, result = await collect(Agent(llm, engine), image, "a dog")
    failures = [e.to_dict() for e in events if e.type == "failure"]
    assert [(f["turn"], f["kind"]) for f in failures] == [(1, "no_tool_call"), (3, "reused_phrase"), (4, "bad_ids")]
    for failure, step in zip(failures, [result.steps[i] for i in (0, 2, 3)], strict=True):
        assert failure["message"] == step.outcome
    assert failures[2]["message"] in llm.requests[4].messages[-1].plain_text
    first_reply = next(e for e in events if isinstance(e, ModelCallFinished))
    assert first_reply.reply == long_reply[:REPLY_CHARS] and len(first_reply.to_dict()["reply"]) == REPLY_CHARS
    # the unparsable reply has no tool_call; a refused phrase does not replace the masks
    assert [e.turn for e in events if e.type == "tool_call"] == [2, 3, 4, 5]
    assert [e.turn for e in events if e.type == "masks_found"] == [2]


async def test_no_masks_found_and_all_rejected_have_no_picture(image, engine) -> None:
    llm = ScriptedLLM([tool("segment_phrase", text_prompt="unicorn"), tool("segment_phrase", text_prompt="person"),
                       tool("examine_each_mask"), tool("report_no_mask")],
                      verify_replies=lambda request: "<verdict>Reject</verdict>")
    events, result = await collect(Agent(llm, engine), image, "a unicorn")
    found = [e.to_dict() for e in events if isinstance(e, MasksFound)]
    assert [(f["tool"], f["phrase"], len(f["masks"]), f["image"] is None) for f in found] == [
        ("segment_phrase", "unicorn", 0, True), ("segment_phrase", "person", 2, False),
        ("examine_each_mask", None, 0, True)]
    assert events[-1].to_dict()["status"] == "no_mask" and events[-1].to_dict()["count"] == 0
    assert result.status == "no_mask"


async def test_concurrent_verifications_come_out_in_mask_order(image, engine) -> None:
    order: list[int] = []

    async def verify(request: LLMRequest) -> Completion:
        mask_id = int(next(i.label for i in request.images if i.label.endswith("alone")).split()[1])
        await asyncio.sleep(0.05 * (4 - mask_id))  # mask 3 answers first, mask 1 last
        order.append(mask_id)
        return Completion(text="<verdict>Reject</verdict>" if mask_id == 2 else "<verdict>Accept</verdict>")

    class SlowVerifier(ScriptedLLM):
        async def complete(self, request: LLMRequest) -> Completion:
            return await verify(request) if request.purpose == "verify" else await super().complete(request)

    llm = SlowVerifier([tool("segment_phrase", text_prompt="dog"), tool("examine_each_mask"),
                        tool("select_masks_and_return", final_answer_masks=[1])])
    events, _ = await collect(Agent(llm, engine), image, "dogs")
    assert order == [3, 2, 1]
    checks = [(e.type, e.mask_id) for e in events
              if getattr(e, "purpose", None) == "verify" or e.type == "verification"]
    assert checks[:3] == [("model_call_started", 1), ("model_call_started", 2), ("model_call_started", 3)]
    assert checks[3:] == [(kind, i) for i in (1, 2, 3) for kind in ("model_call_finished", "verification")]
    finished = {e.mask_id: e.seconds for e in events if isinstance(e, ModelCallFinished) and e.mask_id}
    assert finished[1] > finished[3] >= 0.05  # each call's own duration, not the time it waited to go out


async def test_bad_input_raises_before_any_event(image, engine) -> None:
    agent = Agent(ScriptedLLM([]), engine)
    stream = agent.astream(image, "   ")
    with pytest.raises(ValueError, match="non-empty"):
        await anext(stream)
    with pytest.raises(ValueError, match="non-empty"):
        await agent.arun(image, "")
    with pytest.raises(ValueError):
        await anext(agent.astream(b"not an image", "dog"))


async def test_backend_failure_raises_after_the_events_with_a_partial_result(image, engine) -> None:
    llm = ScriptedLLM([tool("segment_phrase", text_prompt="dog")])  # the second request finds no reply
    seen: list[str] = []
    with pytest.raises(ScriptExhaustedError) as info:
        async for item in Agent(llm, engine).astream(image, "dog"):
            seen.append(item.type)
    assert seen == ["run_started", "model_call_started", "model_call_finished", "tool_call", "masks_found",
                    "model_call_started"]
    partial = info.value.partial_result
    assert partial is not None and partial.totals.turns == 1 and "backend failed" in partial.reason
    with pytest.raises(LLMBackendError) as again:
        await Agent(ScriptedLLM([tool("segment_phrase", text_prompt="dog")]), engine).arun(image, "dog")
    assert again.value.partial_result is not None and again.value.partial_result.totals.turns == 1


async def test_wall_clock_timeout_ends_with_a_budget_answer(image, engine) -> None:
    llm = ScriptedLLM([tool("segment_phrase", text_prompt=f"dog {i}") for i in range(20)], latency_s=0.1)
    events, result = await collect(Agent(llm, engine, AgentConfig(timeout_s=0.35)), image, "dog")
    answer = events[-1].to_dict()
    assert answer["type"] == "answer" and answer["status"] == "budget_exhausted" == result.status
    assert "wall-clock timeout of 0.35 s" in answer["reason"] and answer["count"] == 0
    assert 0.3 < answer["t"] < 2


class BlockingLLM:
    """Answers the first planning call at once, then blocks until cancelled (and records that)."""

    name = "blocking"

    def __init__(self) -> None:
        self.calls = 0
        self.cancelled = asyncio.Event()

    async def complete(self, request: LLMRequest) -> Completion:
        self.calls += 1
        if self.calls == 1:
            return Completion(text=tool("segment_phrase", text_prompt="dog"))
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        raise AssertionError("unreachable")


async def test_leaving_the_stream_early_cancels_the_run(image, engine) -> None:
    llm = BlockingLLM()
    async with aclosing(Agent(llm, engine).astream(image, "dog")) as stream:
        async for event in stream:
            if event.type == "model_call_started" and event.turn == 2:
                break
    await asyncio.wait_for(llm.cancelled.wait(), 5)
    assert llm.calls == 2


async def test_cancelling_arun_cancels_the_run(image, engine) -> None:
    llm = BlockingLLM()
    task = asyncio.ensure_future(Agent(llm, engine).arun(image, "dog"))
    while llm.calls < 2:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert llm.cancelled.is_set()
