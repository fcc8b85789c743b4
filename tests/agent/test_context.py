"""Context pruning: what each main-loop request holds, in both protocols."""

from __future__ import annotations

import pytest
from agent_helpers import assert_openai_legal, native, tool

from sam3agent import Agent, AgentConfig
from sam3agent.llm.base import Completion, LLMRequest, ToolCall
from sam3agent.llm.scripted import ScriptedLLM

ACCEPT = "<verdict>Accept</verdict>"


def _script(call) -> list:  # type: ignore[no-untyped-def]
    return [
        call("segment_phrase", text_prompt="dog"),  # 1
        call("select_masks_and_return", final_answer_masks=[9]),  # 2: bad ids
        call("segment_phrase", text_prompt="cat"),  # 3
        call("examine_each_mask"),  # 4: all accepted, nothing re-rendered
        call("segment_phrase", text_prompt="person"),  # 5
        call("examine_each_mask"),  # 6: mask 1 rejected -> re-render
        call("select_masks_and_return", final_answer_masks=[1]),  # 7
    ]


def _texts(request: LLMRequest) -> list[str]:
    return [m.plain_text for m in request.messages]


@pytest.mark.parametrize("protocol", ["text", "native"])
async def test_pruning_keeps_the_right_turns(image, masks, engine, protocol) -> None:
    call = tool if protocol == "text" else native
    # verification calls start in mask order: "cat" mask 1, then "person" masks 1 and 2
    llm = ScriptedLLM(_script(call), verify_replies=[ACCEPT, "<verdict>Reject</verdict>", ACCEPT])
    agent = Agent(llm, engine, AgentConfig(protocol=protocol))
    result = await agent.arun(image, "the person on the left")
    assert result.status == "answered"
    assert [v.verdict for s in result.steps for v in s.verifications] == ["accept", "reject", "accept"]
    main = [r for r in llm.requests if r.purpose == "main"]
    assert len(main) == 7
    for request in main:
        assert len(request.images) <= 2
        assert request.images[0].label == "raw image"
        assert request.messages[0].role == "system" and request.messages[1].role == "user"
        assert "the person on the left" in request.messages[1].plain_text
        if protocol == "native":
            assert_openai_legal(request.messages)

    joined = ["\n".join(_texts(r)) for r in main]
    # request 3 (after the bad select) still holds the "dog" turns and the feedback
    assert 'segment_phrase("dog") found 3' in joined[2] and "9 is not a current mask number" in joined[2]
    assert "Phrases already tried" not in joined[2]
    # request 4 (after segmenting "cat"): the "dog" turns are pruned, the memory line is there
    assert "dog\") found" not in joined[3] and "9 is not a current" not in joined[3]
    assert 'Phrases already tried (do not use them again): "dog", "cat".' in joined[3]
    assert [i.label for i in main[3].images] == ["raw image", "marks 1-1"]
    # request 5 (after examine with nothing removed): same image kept, examine turn included
    assert [i.label for i in main[4].images] == ["raw image", "marks 1-1"]
    assert "No mask was removed" in joined[4]
    # request 7 (after the re-render): only the new render, old one replaced by a note
    assert [i.label for i in main[6].images] == ["raw image", "marks 1-1"]
    assert main[6].images[1].digest != main[5].images[1].digest
    assert "An older image of masks was here" in joined[6]
    assert '"dog", "cat", "person"' in joined[6] and "cat\") found" not in joined[6]
    # the window always starts with the assistant message that ran the latest segment_phrase
    assert main[6].messages[2].role == "assistant"
    if protocol == "native":
        assert main[6].messages[2].tool_calls[0].name == "segment_phrase"
        assert main[6].messages[3].role == "tool"
        assert main[6].messages[3].tool_call_id == main[6].messages[2].tool_calls[0].id
    else:
        assert "person" in main[6].messages[2].plain_text


async def test_native_exchanges_stay_legal(image, engine) -> None:
    two_calls = Completion(text="thinking", tool_calls=[
        ToolCall("c1", "segment_phrase", '{"text_prompt": "dog"}'), ToolCall("c2", "report_no_mask", "{}")])
    bad_args = Completion(text="", tool_calls=[ToolCall("c3", "select_masks_and_return", '{"masks": [1]}')])
    llm = ScriptedLLM([two_calls, bad_args, Completion(text="just text"),
                       native("select_masks_and_return", call_id="c4", final_answer_masks=[1])])
    result = await Agent(llm, engine, AgentConfig(protocol="native")).arun(image, "dog")
    assert result.status == "answered"
    assert result.failure_counts == {"invalid_arguments": 1, "no_tool_call": 1}
    last = llm.requests[-1].messages
    assert_openai_legal(last)
    roles = [(m.role, m.tool_call_id) for m in last]
    assert roles == [("system", None), ("user", None), ("assistant", None), ("tool", "c1"), ("tool", "c2"),
                     ("user", None), ("assistant", None), ("tool", "c3"), ("assistant", None), ("user", None)]
    assert "Not run" in last[4].plain_text
    assert "only the first (segment_phrase)" in last[3].plain_text
    assert "unexpected parameter 'masks'" in last[7].plain_text
    assert "no tool call" in last[9].plain_text
    assert [i.label for i in last[5].images] == ["marks 1-3"]
    assert llm.requests[-1].tools is not None


async def test_thinking_is_not_kept_in_history(image, engine) -> None:
    llm = ScriptedLLM(["<think>long private reasoning</think>" + tool("segment_phrase", text_prompt="dog"),
                       tool("report_no_mask")])
    result = await Agent(llm, engine).arun(image, "dog")
    assert "long private reasoning" not in "\n".join(_texts(llm.requests[1]))
    assert "long private reasoning" in result.steps[0].raw_reply
