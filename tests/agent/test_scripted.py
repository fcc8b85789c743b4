"""ScriptedLLM: replays strings, Completions and callables; runs out loudly."""

from __future__ import annotations

import pytest

from sam3agent.llm import ScriptedLLM as Exported
from sam3agent.llm.base import LLM, Completion, LLMBackendError, LLMRequest, Message, ToolCall
from sam3agent.llm.scripted import ScriptedLLM, ScriptExhaustedError


def _request(purpose: str = "main", text: str = "hi") -> LLMRequest:
    return LLMRequest(messages=[Message.text("user", text)], purpose=purpose)  # type: ignore[arg-type]


async def test_replays_in_order_and_records() -> None:
    seen: list[str] = []

    def reply(request: LLMRequest) -> str:
        seen.append(request.messages[-1].plain_text)
        return "from callable"

    native = Completion(text="", tool_calls=[ToolCall("1", "report_no_mask", "{}")])
    llm = ScriptedLLM(["plain", native, reply])
    assert isinstance(llm, LLM) and Exported is ScriptedLLM
    assert (await llm.complete(_request())).text == "plain"
    assert (await llm.complete(_request())).tool_calls[0].name == "report_no_mask"
    assert (await llm.complete(_request(text="third"))).text == "from callable"
    assert seen == ["third"] and len(llm.requests) == 3 and llm.remaining == 0


async def test_separate_verify_script() -> None:
    llm = ScriptedLLM(["main"], verify_replies=["v1", "v2"])
    assert (await llm.complete(_request("verify"))).text == "v1"
    assert (await llm.complete(_request())).text == "main"
    assert (await llm.complete(_request("verify"))).text == "v2"
    with pytest.raises(ScriptExhaustedError, match="verify_replies used up"):
        await llm.complete(_request("verify"))


async def test_runs_out_with_a_clear_error() -> None:
    llm = ScriptedLLM(["only"])
    await llm.complete(_request())
    with pytest.raises(ScriptExhaustedError, match=r"replies used up after 1 replies.*'last words'") as info:
        await llm.complete(_request(text="last words"))
    assert isinstance(info.value, LLMBackendError)
