"""End-to-end runs of the agent loop with a scripted LLM and the fake engine."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from agent_helpers import native, tool, verdict_by_mask
from PIL import Image

from sam3agent import Agent, AgentConfig
from sam3agent.llm.base import Completion, LLMBackendError, LLMRequest
from sam3agent.llm.scripted import ScriptedLLM, ScriptExhaustedError
from sam3agent.render import encode_image, render_marks
from sam3core.fake import FakeEngine


def _masks_equal(detections, expected: list[np.ndarray]) -> bool:
    return len(detections) == len(expected) and all(
        np.array_equal(got, want) for got, want in zip(detections.mask, expected, strict=True))


@pytest.mark.parametrize("protocol", ["text", "native"])
async def test_answered_run(image, masks, engine, protocol) -> None:
    call = tool if protocol == "text" else native
    llm = ScriptedLLM([call("segment_phrase", text_prompt="dog"), call("select_masks_and_return",
                                                                          final_answer_masks=[3, 1])])
    result = await Agent(llm, engine, AgentConfig(protocol=protocol)).arun(image, "the dogs on the left")
    assert result.status == "answered" and result.reason == "selected mask(s) 3, 1"
    assert _masks_equal(result.detections, [masks[0], masks[2]])
    assert list(result.detections.data["phrase"]) == ["dog", "dog"]
    assert result.detections.mask.shape[1:] == image.shape[:2]
    assert result.totals.turns == 2 and result.totals.llm_calls == 2 and result.failure_counts == {}
    assert engine.calls and engine.calls[0][1] == "dog"
    assert [s.call["name"] for s in result.steps] == ["segment_phrase", "select_masks_and_return"]
    tools = llm.requests[0].tools
    if protocol == "text":
        assert tools is None
    else:
        assert len(tools) == 4 and tools[0]["function"]["name"] == "segment_phrase"
    second = llm.requests[1]
    assert [img.label for img in second.images] == ["raw image", "marks 1-3"]
    assert "covers" in second.messages[-1 if protocol == "text" else -2].plain_text


async def test_images_sent_are_resized_masks_stay_full(image, engine) -> None:
    big = np.zeros((600, 800, 3), np.uint8)
    big_engine = FakeEngine({"dog": [np.pad(np.ones((100, 100), bool), ((0, 500), (0, 700)))]})
    cfg = AgentConfig(max_image_pixels=64 * 28 * 28, min_image_pixels=28 * 28)
    llm = ScriptedLLM([tool("segment_phrase", text_prompt="dog"),
                       tool("select_masks_and_return", final_answer_masks=[1])])
    result = await Agent(llm, big_engine, cfg).arun(big, "dog")
    for img in llm.requests[1].images:
        assert img.width * img.height <= 64 * 28 * 28 and img.width % 28 == 0 and img.height % 28 == 0
    assert result.detections.mask.shape == (1, 600, 800)


async def test_report_no_mask(image, engine) -> None:
    llm = ScriptedLLM([tool("segment_phrase", text_prompt="unicorn"), tool("report_no_mask")])
    result = await Agent(llm, engine).arun(image, "the unicorn")
    assert result.status == "no_mask" and len(result.detections) == 0
    assert result.detections.mask.shape == (0, *image.shape[:2])
    assert "found nothing" in result.steps[0].outcome
    assert "report_no_mask" in result.final_text
    # 0 masks: no marks image is shown afterwards
    assert [img.label for img in llm.requests[1].images] == ["raw image"]


async def test_examine_mixed_verdicts_renumbers_and_rerenders(image, masks, engine) -> None:
    llm = ScriptedLLM(
        [tool("segment_phrase", text_prompt="dog"), tool("examine_each_mask"),
         tool("select_masks_and_return", final_answer_masks=[2])],
        verify_replies=verdict_by_mask(rejected=[2]),
    )
    agent = Agent(llm, engine)
    result = await agent.arun(image, "the small dog")
    step = result.steps[1]
    verdicts = [(v.mask_id, v.verdict) for v in step.verifications]
    assert verdicts == [(1, "accept"), (2, "reject"), (3, "accept")]
    assert "old 1 is now 1, old 3 is now 2" in step.outcome and "mask 2: rejected" in step.outcome
    # the answer's "2" is the old mask 3
    assert _masks_equal(result.detections, [masks[2]])
    # the re-render shows the new numbers: it equals a render of masks {1, 3} labelled 1, 2
    final_request = [r for r in llm.requests if r.purpose == "main"][-1]
    shown = final_request.images[-1]
    cfg = agent.config
    expected_dets = engine.segment(image, "dog")[[0, 2]]
    rendered = render_marks(image, expected_dets, labels=[1, 2])
    expected = encode_image(rendered, max_pixels=cfg.max_image_pixels, min_pixels=cfg.min_image_pixels,
                            patch=cfg.image_patch, fmt=cfg.render_format, label="x")
    assert shown.label == "marks 1-2" and (shown.width, shown.height) == (expected.width, expected.height)
    decoded = [np.asarray(Image.open(io.BytesIO(part.data)).convert("RGB")) for part in (shown, expected)]
    assert np.array_equal(*decoded)  # PNG: the same pixels (the bytes may differ in zlib framing)
    assert len(final_request.images) == 2  # the older render was replaced, not added to
    verify = [r for r in llm.requests if r.purpose == "verify"]
    assert len(verify) == 3 and all(len(r.images) == 3 for r in verify)
    assert [i.label for i in verify[0].images] == ["raw image", "mask 1 alone", "mask 1 close-up"]
    assert result.totals.verify_calls == 3 and result.totals.llm_calls == 6


async def test_examine_cap_unclear_and_repeat(image, masks, engine) -> None:
    llm = ScriptedLLM(
        [tool("segment_phrase", text_prompt="dog"), tool("examine_each_mask"), tool("examine_each_mask"),
         tool("examine_each_mask"), tool("select_masks_and_return", final_answer_masks=[1, 2, 3])],
        verify_replies=verdict_by_mask(rejected=[], unclear=[1]),
    )
    result = await Agent(llm, engine, AgentConfig(max_verifications=2)).arun(image, "dogs")
    first, second, third = result.steps[1:4]
    assert [v.mask_id for v in first.verifications] == [1, 2]
    assert "Masks 3 were not examined" in first.outcome and "no clear verdict, kept" in first.outcome
    assert [v.mask_id for v in second.verifications] == [3]  # only the unexamined one
    assert third.failure == "already_examined" and not third.verifications
    assert result.status == "answered" and len(result.detections) == 3
    assert result.failure_counts == {"unclear_verdict": 1, "already_examined": 1}


async def test_examine_all_rejected_leaves_no_masks(image, engine) -> None:
    llm = ScriptedLLM(
        [tool("segment_phrase", text_prompt="person"), tool("examine_each_mask"),
         tool("select_masks_and_return", final_answer_masks=[1]), tool("report_no_mask")],
        verify_replies=lambda request: "<verdict>Reject</verdict>",
    )
    result = await Agent(llm, engine).arun(image, "a person")
    assert "No mask is left" in result.steps[1].outcome
    assert result.steps[2].failure == "no_masks"
    assert [i.label for i in llm.requests[-1].images] == ["raw image"]
    assert result.status == "no_mask"


async def test_reused_phrase_refused_without_engine_call(image, engine) -> None:
    llm = ScriptedLLM([tool("segment_phrase", text_prompt="dog"),
                       tool("segment_phrase", text_prompt="  DOG "),
                       tool("select_masks_and_return", final_answer_masks=[1])])
    result = await Agent(llm, engine).arun(image, "a dog")
    assert len(engine.calls) == 1
    step = result.steps[1]
    assert step.failure == "reused_phrase" and 'Phrases used so far: "dog"' in step.outcome
    assert result.failure_counts == {"reused_phrase": 1} and result.status == "answered"


async def test_out_of_range_ids_fed_back_then_fixed(image, masks, engine) -> None:
    def check_feedback(request: LLMRequest) -> str:
        feedback = request.messages[-1].plain_text
        assert "7 is not a current mask number" in feedback and "2 is listed more than once" in feedback
        assert "numbered 1 to 3" in feedback
        return tool("select_masks_and_return", final_answer_masks=[2])

    llm = ScriptedLLM([tool("segment_phrase", text_prompt="dog"),
                       tool("select_masks_and_return", final_answer_masks=[2, 7, 2]), check_feedback])
    result = await Agent(llm, engine).arun(image, "the dog")
    assert result.steps[1].failure == "bad_ids" and result.failure_counts == {"bad_ids": 1}
    assert _masks_equal(result.detections, [masks[1]])


async def test_empty_selection_and_select_before_segmenting(image, engine) -> None:
    llm = ScriptedLLM([tool("select_masks_and_return", final_answer_masks=[1]), tool("examine_each_mask"),
                       tool("segment_phrase", text_prompt="cat"),
                       tool("select_masks_and_return", final_answer_masks=[]),
                       tool("select_masks_and_return", final_answer_masks=[1])])
    result = await Agent(llm, engine).arun(image, "the cat")
    assert [s.failure for s in result.steps] == ["no_masks", "no_masks", None, "bad_ids", None]
    assert "report_no_mask" in result.steps[3].outcome and result.status == "answered"


async def test_three_malformed_replies_then_recovery(image, masks, engine) -> None:
    llm = ScriptedLLM([
        "I think it is the dog.",
        '<tool>{"name": "segment_phrase", "parameters": {"text_prompt": dog}}</tool>',
        '<tool>{"name": "find", "parameters": {}}</tool>',
        tool("segment_phrase", text_prompt="cat"),
        tool("select_masks_and_return", final_answer_masks=[1]),
    ])
    result = await Agent(llm, engine).arun(image, "the cat")
    assert result.status == "answered" and _masks_equal(result.detections, [masks[2]])
    assert result.failure_counts == {"no_tool_call": 1, "parse_error": 1, "unknown_tool": 1}
    assert result.totals.turns == 5
    fourth = llm.requests[3].messages
    assert "no tool named 'find'" in fourth[-1].plain_text and "Nothing was run" in fourth[-1].plain_text
    assert [s.failure for s in result.steps][:3] == ["no_tool_call", "parse_error", "unknown_tool"]


async def test_several_calls_in_one_reply_runs_the_first(image, engine) -> None:
    both = tool("segment_phrase", text_prompt="dog") + tool("report_no_mask")
    llm = ScriptedLLM([both, tool("select_masks_and_return", final_answer_masks=[1])])
    result = await Agent(llm, engine).arun(image, "dog")
    assert result.status == "answered" and "only the first (segment_phrase)" in result.steps[0].outcome


async def test_budget_exhausted(image, engine) -> None:
    llm = ScriptedLLM(["no idea"] * 3)
    result = await Agent(llm, engine, AgentConfig(max_llm_calls=3)).arun(image, "the dog")
    assert result.status == "budget_exhausted" and "max_llm_calls=3" in result.reason
    assert result.totals.turns == 3 and len(result.detections) == 0
    assert result.failure_counts == {"no_tool_call": 3}


async def test_timeout_is_a_budget(image, engine) -> None:
    llm = ScriptedLLM([tool("segment_phrase", text_prompt="dog")] * 10, latency_s=0.2)
    result = await Agent(llm, engine, AgentConfig(timeout_s=0.05)).arun(image, "the dog")
    assert result.status == "budget_exhausted" and "timeout" in result.reason


async def test_paper_preset_budget() -> None:
    assert AgentConfig.paper().max_llm_calls == 100 and AgentConfig().max_llm_calls == 40
    with pytest.raises(ValueError, match="unknown AgentConfig preset"):
        AgentConfig.preset("fast")


async def test_backend_errors_propagate(image, engine) -> None:
    with pytest.raises(ScriptExhaustedError, match="ran out"):
        await Agent(ScriptedLLM([]), engine).arun(image, "dog")

    def fail(request: LLMRequest) -> Completion:
        raise LLMBackendError("http://test/v1", "connection refused")

    script = [tool("segment_phrase", text_prompt="dog"), tool("examine_each_mask")]
    llm = ScriptedLLM(script, verify_replies=fail)
    with pytest.raises(LLMBackendError, match="connection refused"):
        await Agent(llm, engine).arun(image, "dog")


async def test_verifications_run_concurrently_with_a_bound(image, engine) -> None:
    active = peak = 0

    class Slow(ScriptedLLM):
        async def complete(self, request: LLMRequest) -> Completion:
            nonlocal active, peak
            if request.purpose != "verify":
                return await super().complete(request)
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.02)
            active -= 1
            return Completion(text="<verdict>Accept</verdict>")

    llm = Slow([tool("segment_phrase", text_prompt="dog"), tool("examine_each_mask"), tool("report_no_mask")])
    await Agent(llm, engine, AgentConfig(verify_concurrency=2)).arun(image, "dog")
    assert peak == 2


def test_sync_run_without_and_inside_an_event_loop(image, engine) -> None:
    def script() -> ScriptedLLM:
        return ScriptedLLM([tool("segment_phrase", text_prompt="cat"),
                            tool("select_masks_and_return", final_answer_masks=[1])])

    assert Agent(script(), engine).run(image, "cat").status == "answered"

    async def inside() -> str:
        return Agent(script(), engine).run(image, "cat").status

    assert asyncio.run(inside()) == "answered"


async def test_user_errors_are_clear(image, engine) -> None:
    agent = Agent(ScriptedLLM([]), engine)
    with pytest.raises(ValueError, match="query"):
        await agent.arun(image, "   ")
    with pytest.raises(ValueError, match="not found"):
        await agent.arun("/nonexistent/image.jpg", "dog")
    with pytest.raises(TypeError, match="SegmentEngine"):
        Agent(ScriptedLLM([]), object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="LLM"):
        Agent(object(), engine)  # type: ignore[arg-type]
