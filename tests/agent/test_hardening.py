"""The agent against hostile input: pathological replies, huge images, bad queries, loop churn."""

from __future__ import annotations

import gc
import io
import json
import logging
import time
import warnings
from collections.abc import Callable

import pytest
from agent_helpers import native, tool
from PIL import Image

from sam3agent import Agent, AgentConfig, parsing
from sam3agent.llm.base import Completion, ToolCall
from sam3agent.llm.openai_compat import OpenAICompatibleLLM
from sam3agent.llm.scripted import ScriptedLLM
from sam3agent.llm.server import ScriptedOpenAIServer
from sam3agent.parsing import ParseError, parse_native, parse_text
from sam3core import image as image_module
from sam3core.fake import FakeEngine

# ----------------------------------------------------------------------------- item 2: deep or huge replies


def _deep(depth: int) -> str:
    return '{"text_prompt": ' + "[" * depth + "]" * depth + "}"


@pytest.mark.parametrize("depth", [1000, 100_000])
@pytest.mark.parametrize("protocol", ["text", "native"])
async def test_deeply_nested_call_is_a_parse_error_costing_a_turn(image, engine, protocol, depth) -> None:
    if protocol == "text":
        first: str | Completion = f'<tool>{{"name": "segment_phrase", "parameters": {_deep(depth)}}}</tool>'
    else:
        first = Completion(text="", tool_calls=[ToolCall("call_1", "segment_phrase", _deep(depth))])
    done = tool("report_no_mask") if protocol == "text" else native("report_no_mask", call_id="call_2")
    llm = ScriptedLLM([first, done])
    result = await Agent(llm, engine, AgentConfig(protocol=protocol)).arun(image, "the dog")
    assert result.status == "no_mask" and result.totals.turns == 2
    assert result.failure_counts == {"parse_error": 1}
    assert ("nests brackets" if depth == 1000 else "characters long") in result.steps[0].outcome


@pytest.mark.parametrize("depth", [1000, 100_000])
def test_unclosed_deep_brackets_are_a_parse_error(depth: int) -> None:
    with pytest.raises(ParseError) as info:
        parse_text('<tool>{"name": "segment_phrase", "parameters": {"text_prompt": ' + "[" * depth + "</tool>")
    assert info.value.kind == "parse_error"
    with pytest.raises(ParseError) as info:
        parse_native(Completion(text="", tool_calls=[ToolCall("c", "segment_phrase", "[" * depth)]))
    assert info.value.kind == "parse_error" and info.value.call_id == "c"


def test_oversized_replies_and_calls_are_parse_errors() -> None:
    max_reply, max_call = parsing.MAX_REPLY_CHARS, parsing.MAX_CALL_CHARS
    call = tool("segment_phrase", text_prompt="dog")
    with pytest.raises(ParseError, match="characters long") as info:
        parse_text("x" * max_reply + call)
    assert info.value.kind == "parse_error"
    padded = f'<tool>{{"name": "segment_phrase", "parameters": {{"text_prompt": "{"a" * max_call}"}}}}</tool>'
    with pytest.raises(ParseError, match="characters long") as info:
        parse_text(padded)
    assert info.value.kind == "parse_error"
    big = json.dumps({"text_prompt": "a" * max_call})
    with pytest.raises(ParseError, match="characters long") as info:
        parse_native(Completion(text="", tool_calls=[ToolCall("c", "segment_phrase", big)]))
    assert info.value.kind == "parse_error" and info.value.call_id == "c"
    assert parse_text("y" * (max_reply - len(call) - 1) + call).name == "segment_phrase"


def test_many_unclosed_think_tags_parse_in_linear_time() -> None:
    reply = "</think>" + "<think>" * 8000 + tool("segment_phrase", text_prompt="dog")
    started = time.perf_counter()
    assert parse_text(reply).name == "segment_phrase"
    assert time.perf_counter() - started < 1.5


# ----------------------------------------------------------------------------- item 3: decompression bombs


def _bomb_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, format="PNG")  # 400 megapixels in ~50 KB
    return buffer.getvalue()


def test_decompression_bomb_through_agent_run_is_a_value_error(engine, tmp_path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_bomb_png())
    agent = Agent(ScriptedLLM([]), engine)
    limit = getattr(image_module, "DEFAULT_MAX_PIXELS", 40_000_000)
    for source in (path, path.read_bytes()):
        with pytest.raises(ValueError, match=f"400,000,000 pixels.*{limit:,}.*max_pixels"):
            agent.run(source, "the dog")


# ----------------------------------------------------------------------------- item 8: lone surrogates


@pytest.mark.parametrize("query, position", [("cat \ud800", 4), ("\udcff dog", 0)])
def test_lone_surrogate_in_query_is_rejected_up_front(image, engine, query, position) -> None:
    llm = ScriptedLLM([])
    with pytest.raises(ValueError, match=f"lone surrogate at position {position};"):
        Agent(llm, engine).run(image, query)
    assert llm.requests == []
    assert Agent(ScriptedLLM([tool("report_no_mask")]), engine).run(image, "cat \U0001f431").status == "no_mask"


# ----------------------------------------------------------------------------- item 9: one loop per run


class _CollectingEngine(FakeEngine):
    """A fake engine that runs the garbage collector inside each run's event loop.

    That is when a client left over from an earlier run's loop gets collected in real programs.
    """

    async def asegment(self, image, phrases, **kwargs):  # type: ignore[no-untyped-def]
        gc.collect()
        return await super().asegment(image, phrases, **kwargs)


def _policy(body: dict) -> str:
    last = body["messages"][-1]["content"]
    text = last if isinstance(last, str) else " ".join(p.get("text", "") for p in last)
    if "Candidate: mask" in text:
        return "<verdict>Accept</verdict>"
    done = any("segment_phrase" in json.dumps(m.get("content")) for m in body["messages"][2:])
    if done:
        return tool("select_masks_and_return", final_answer_masks=[1])
    return tool("segment_phrase", text_prompt="dog")


def _settled(count: Callable[[], int], wait_s: float = 2.0) -> int:
    """``count()`` once it reaches 0, or its value after ``wait_s`` (the server sees closes a bit later)."""
    deadline = time.monotonic() + wait_s
    while (value := count()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return value


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_repeated_sync_runs_leave_no_dangling_clients(image, masks, capfd, caplog) -> None:
    engine = _CollectingEngine({"dog": masks[:1]})
    # clients left by earlier tests (other loops, e.g. the serve tests' server threads) must not be
    # collected inside the measured runs and blamed on them
    gc.collect()
    with ScriptedOpenAIServer(_policy) as server, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        llm = OpenAICompatibleLLM(server.base_url, "scripted", max_retries=0)
        agent = Agent(llm, engine)
        statuses, left_open = [], []
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            for _ in range(3):
                statuses.append(agent.run(image, "the dog").status)
                left_open.append(_settled(lambda: server.open_connections))
            gc.collect()
    assert statuses == ["answered"] * 3
    assert left_open == [0, 0, 0]  # each run's connections were closed with its loop
    assert not [r for r in caplog.records if r.name == "asyncio"], caplog.text
    err = capfd.readouterr().err
    assert "Task exception was never retrieved" not in err and "Event loop is closed" not in err
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


async def test_runaway_reply_is_cut_in_the_history_but_kept_in_the_trace(image, engine) -> None:
    from sam3agent.context import MAX_HISTORY_REPLY_CHARS

    rambling = "I keep thinking. " * 5000  # 80,000 characters, no tool call
    llm = ScriptedLLM([rambling, tool("report_no_mask")])
    result = await Agent(llm, engine).arun(image, "the cup")
    sent = next(m for m in llm.requests[1].messages if m.role == "assistant").plain_text
    assert len(sent) < MAX_HISTORY_REPLY_CHARS + 100 and sent.endswith("more characters of this reply were cut ...]")
    assert result.steps[0].raw_reply == rambling and result.steps[0].failure == "no_tool_call"
