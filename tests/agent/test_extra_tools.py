"""The opt-in tools end to end: scripted runs of segment_like and segment_at under both protocols.

The fake engine answers both by hand-computable rules (``sam3core.fake``): an exemplar box alone
returns the masks of the registered phrase one of whose masks matches it; a point returns the
smallest registered mask holding it; a box the registered mask whose box matches it best.
The fixture image is 80x60 and the default settings send it at 532x392, so the model's
coordinates are scaled by 80/532 and 60/392 on their way to the engine.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from agent_helpers import native, tool
from PIL import Image

from sam3agent import Agent, AgentConfig
from sam3agent.llm.base import LLMRequest
from sam3agent.llm.scripted import ScriptedLLM
from sam3agent.pictures import encode_for_model
from sam3core.fake import FakeEngine

BOTH = ("segment_like", "segment_at")
PAPER_TOOLS = ["segment_phrase", "examine_each_mask", "select_masks_and_return", "report_no_mask"]


def _call(protocol: str):  # type: ignore[no-untyped-def]
    return tool if protocol == "text" else native


def _equal(detections: Any, expected: list[np.ndarray]) -> bool:
    return len(detections) == len(expected) and all(
        np.array_equal(got, want) for got, want in zip(detections.mask, expected, strict=True))


def _sent_size(image: np.ndarray, config: AgentConfig) -> tuple[int, int]:
    part = encode_for_model(config, Image.fromarray(image), "raw image", raw=True)
    return part.width, part.height


def _texts(request: LLMRequest) -> list[str]:
    return [m.plain_text for m in request.messages]


@pytest.mark.parametrize("protocol", ["text", "native"])
async def test_segment_like_finds_every_instance_like_the_example(image, masks, engine, protocol) -> None:
    call = _call(protocol)
    llm = ScriptedLLM([call("segment_phrase", text_prompt="cat"), call("segment_like", mask_id=1),
                       call("select_masks_and_return", final_answer_masks=[1, 2, 3])])
    config = AgentConfig(protocol=protocol, tools=("segment_like",))
    result = await Agent(llm, engine, config).arun(image, "every dog")
    assert result.status == "answered" and _equal(result.detections, masks) and result.failure_counts == {}
    # the cat mask (rows 25-39, columns 5-19) is the exemplar: its box, continuous pixel edges
    assert [(phrase, boxes) for _, phrase, boxes in engine.exemplar_calls] == [(None, [[5.0, 25.0, 20.0, 40.0]])]
    like = result.steps[1]
    assert like.call == {"name": "segment_like", "parameters": {"mask_id": 1, "text_prompt": None}}
    assert like.outcome.startswith("segment_like(mask_id=1) found 3 mask(s), numbered 1 to 3 by confidence:")
    assert like.images_out and "marks 1-3" in like.images_out[0]
    last = llm.requests[2]
    texts = "\n".join(_texts(last))
    assert 'segment_phrase("cat") found' not in texts  # the window restarted at segment_like
    memory = next(m for m in last.messages[2:] if m.role != "assistant").plain_text
    assert memory.startswith('Already tried (a phrase cannot be used again): "cat", like mask 1 of "cat".')
    assert len(last.images) == 2 and last.images[1].label == "marks 1-3"
    system = last.messages[0].plain_text
    assert "segment_like finds more objects like one" in system and "segment_at segments" not in system
    if protocol == "native":
        assert [t["function"]["name"] for t in last.tools] == [*PAPER_TOOLS, "segment_like"]
    else:
        assert last.tools is None and "- segment_like:" in system and "- segment_at:" not in system


async def test_segment_like_with_a_phrase(image, masks, engine) -> None:
    llm = ScriptedLLM([tool("segment_phrase", text_prompt="cat"), tool("segment_like", mask_id=1, text_prompt=" dog "),
                       tool("segment_phrase", text_prompt="person"), tool("report_no_mask")])
    result = await Agent(llm, engine, AgentConfig(tools=BOTH)).arun(image, "dogs")
    assert result.status == "no_mask"
    assert [(phrase, boxes) for _, phrase, boxes in engine.exemplar_calls] == [("dog", [[5.0, 25.0, 20.0, 40.0]])]
    assert result.steps[1].outcome.startswith('segment_like(mask_id=1, text_prompt="dog") found 3 mask(s)')
    memory = next(m for m in llm.requests[3].messages[2:] if m.role != "assistant").plain_text
    assert memory.startswith('Already tried (a phrase cannot be used again): "cat", like mask 1 of "cat" as "dog", '
                             '"person".')


@pytest.mark.parametrize("protocol", ["text", "native"])
async def test_segment_like_mistakes_are_fed_back(image, masks, engine, protocol) -> None:
    call = _call(protocol)
    llm = ScriptedLLM([
        call("segment_like", mask_id=1),  # no masks yet
        call("segment_phrase", text_prompt="cat"),
        call("segment_like", mask_id=4),  # only mask 1 exists
        call("segment_like", mask_id=True),
        call("segment_like", mask_id=1, text_prompt="  "),
        call("segment_like"),
        call("select_masks_and_return", final_answer_masks=[1]),
    ])
    result = await Agent(llm, engine, AgentConfig(protocol=protocol, tools=BOTH)).arun(image, "the cat")
    assert result.status == "answered" and _equal(result.detections, [masks[2]])
    assert engine.exemplar_calls == []
    assert [s.failure for s in result.steps] == [
        "no_masks", None, "bad_ids", "invalid_arguments", "invalid_arguments", "invalid_arguments", None]
    outcomes = [s.outcome for s in result.steps]
    assert outcomes[0].startswith("There are no current masks, so segment_like cannot be used now.")
    assert outcomes[2].startswith("segment_like was not run: 4 is not a current mask number. The current masks are "
                                  "numbered 1 to 1.")
    assert "mask_id must be a number, not true/false" in outcomes[3]
    assert "text_prompt must not be empty" in outcomes[4]
    assert "missing parameter 'mask_id'" in outcomes[5]
    assert result.failure_counts == {"no_masks": 1, "bad_ids": 1, "invalid_arguments": 3}


@pytest.mark.parametrize("protocol", ["text", "native"])
async def test_segment_at_points_and_box_in_sent_pixels(image, masks, engine, protocol) -> None:
    config = AgentConfig(protocol=protocol, tools=BOTH)
    w, h = _sent_size(image, config)
    assert (w, h) == (532, 392)
    sx, sy = w / 80, h / 60
    box = [5 * sx, 5 * sy, 30 * sx, 20 * sy]  # mask 0 (rows 5-19, columns 5-29) in sent pixels
    call = _call(protocol)
    llm = ScriptedLLM([call("segment_at", points=[[290, 230]]), call("segment_at", box=box),
                       call("select_masks_and_return", final_answer_masks=[1])])
    result = await Agent(llm, engine, config).arun(image, "the dog on the left")
    assert result.status == "answered" and _equal(result.detections, [masks[0]])
    point, boxed = (prompt for _, prompt in engine.point_calls)
    np.testing.assert_allclose(point.points, [[290 * 80 / 532, 230 * 60 / 392]])  # (43.6, 35.2): the L-shape
    assert point.box is None and boxed.points is None
    np.testing.assert_allclose(boxed.box, [5, 5, 30, 20])
    first, second = result.steps[0], result.steps[1]
    assert first.outcome.startswith("segment_at(points=[[290, 230]]) made 1 mask, numbered 1:")
    assert "- mask 1: confidence 0.90" in first.outcome and first.images_out
    # the L-shaped mask was shown first; after the box only the new picture is in the context
    assert _equal(engine.segment_at(image, points=point.points.tolist()), [masks[1]])
    last = llm.requests[2]
    assert len(last.images) == 2 and all("segment_at(points" not in t for t in _texts(last))
    memory = next(m for m in last.messages[2:] if m.role != "assistant").plain_text
    assert memory.startswith("Already tried (a phrase cannot be used again): the object at (290, 230), the object in "
                             "box [")
    assert second.call["name"] == "segment_at"
    if protocol == "native":
        assert [t["function"]["name"] for t in last.tools] == [*PAPER_TOOLS, *BOTH]


@pytest.mark.parametrize("protocol", ["text", "native"])
async def test_segment_at_mistakes_are_fed_back(image, engine, protocol) -> None:
    call = _call(protocol)
    llm = ScriptedLLM([
        call("segment_at", points=[[537, 10]]),
        call("segment_at", box=[-5, 0, 40, 40]),
        call("segment_at", box=[100, 50, 40, 80]),
        call("segment_at", points=[[1, 2, 3]]),
        call("segment_at", box=[1, 2, 3]),
        call("segment_at", points=[[True, 3]]),
        call("segment_at"),
        call("report_no_mask"),
    ])
    result = await Agent(llm, engine, AgentConfig(protocol=protocol, tools=("segment_at",))).arun(image, "a dog")
    assert result.status == "no_mask" and engine.point_calls == []
    assert [s.failure for s in result.steps] == ["bad_coordinates"] * 2 + ["invalid_arguments"] * 5 + [None]
    outcomes = [s.outcome for s in result.steps]
    assert outcomes[0].startswith("segment_at was not run: point 1 (537, 10) is outside the image. Coordinates are "
                                  "pixels of the first image, which is\n532 x 392: x from 0 (left edge) to 532")
    assert "box [-5, 0, 40, 40] reaches outside the image" in outcomes[1]
    assert "box [x1, y1, x2, y2] needs x2 > x1 and y2 > y1, got [100, 50, 40, 80]" in outcomes[2]
    assert "each point is [x, y], two numbers; point 1 is 3 numbers" in outcomes[3]
    assert "box is [x1, y1, x2, y2], four numbers; got 3 numbers" in outcomes[4]
    assert "a coordinate must be a number, not true/false" in outcomes[5]
    assert "invalid parameters for segment_at: give points on the object, a box around it, or both" in outcomes[6]
    assert result.totals.turns == 8


async def test_an_empty_answer_says_where_the_image_is(image, engine) -> None:
    llm = ScriptedLLM([tool("segment_at", points=[[3, 3]]), tool("report_no_mask")])
    result = await Agent(llm, engine, AgentConfig(tools=BOTH)).arun(image, "a dog")
    assert result.steps[0].failure is None and len(engine.point_calls) == 1
    assert result.steps[0].outcome.startswith("segment_at(points=[[3, 3]]) found no object there, so there are no "
                                              "current masks.")
    assert "The first image is 532 x 392 pixels" in result.steps[0].outcome


async def test_every_try_is_remembered_in_order(image, masks, engine) -> None:
    llm = ScriptedLLM([tool("segment_phrase", text_prompt="unicorn"), tool("segment_at", points=[[290, 230]]),
                       tool("segment_like", mask_id=1), tool("segment_phrase", text_prompt="cat"),
                       tool("segment_phrase", text_prompt="unicorn"), tool("report_no_mask")])
    result = await Agent(llm, engine, AgentConfig(tools=BOTH)).arun(image, "a dog")
    memory = next(m for m in llm.requests[-1].messages[2:] if m.role != "assistant").plain_text
    assert memory.startswith('Already tried (a phrase cannot be used again): "unicorn", the object at (290, 230), '
                             'like mask 1 of the object at (290, 230), "cat".')
    assert result.steps[4].failure == "reused_phrase"  # phrases are still refused once used
    assert result.steps[4].outcome.startswith('The phrase "unicorn" was already used')


@pytest.mark.parametrize("protocol", ["text", "native"])
async def test_tools_off_they_do_not_exist(image, engine, protocol) -> None:
    call = _call(protocol)
    llm = ScriptedLLM([call("segment_like", mask_id=1), call("segment_at", points=[[1, 1]]), call("report_no_mask")])
    result = await Agent(llm, engine, AgentConfig(protocol=protocol)).arun(image, "a dog")
    assert [s.failure for s in result.steps] == ["unknown_tool", "unknown_tool", None]
    assert "there is no tool named 'segment_like'; the tools are: " + ", ".join(PAPER_TOOLS) in result.steps[0].outcome
    assert engine.exemplar_calls == [] and engine.point_calls == []
    if protocol == "native":
        assert all([t["function"]["name"] for t in r.tools] == PAPER_TOOLS for r in llm.requests)


async def test_segment_at_needs_an_engine_that_segments_at_points(image) -> None:
    class PhrasesOnly:
        """A SegmentEngine without segment_at."""

        def __init__(self) -> None:
            self.inner = FakeEngine()

        def prepare(self, image: Any) -> Any:
            return self.inner.prepare(image)

        def segment(self, image: Any, phrases: Any, **kwargs: Any) -> Any:
            return self.inner.segment(image, phrases, **kwargs)

        async def asegment(self, image: Any, phrases: Any, **kwargs: Any) -> Any:
            return await self.inner.asegment(image, phrases, **kwargs)

    with pytest.raises(TypeError, match=r"segment_at tool needs an engine .*Sam3Tracker"):
        Agent(ScriptedLLM([]), PhrasesOnly(), AgentConfig(tools=("segment_at",)))
    Agent(ScriptedLLM([]), PhrasesOnly(), AgentConfig(tools=("segment_like",)))  # exemplars need no tracker


async def test_paper_preset_sends_the_original_size(image, masks, engine) -> None:
    """max_image_pixels=None: the sent image is the original, so coordinates pass unchanged."""
    llm = ScriptedLLM([native("segment_at", points=[[44, 35]]), native("select_masks_and_return",
                                                                        final_answer_masks=[1])])
    config = AgentConfig.paper(protocol="native", tools=BOTH)
    result = await Agent(llm, engine, config).arun(image, "the L-shaped dog")
    assert llm.requests[0].images[0].width == 80 and result.status == "answered"
    np.testing.assert_array_equal(engine.point_calls[0][1].points, [[44, 35]])
    assert _equal(result.detections, [masks[1]])


@pytest.mark.parametrize("protocol", ["text", "native"])
def test_both_tools_over_http(image, masks, engine, protocol) -> None:
    """Through OpenAICompatibleLLM and the scripted server, which checks every message list is legal OpenAI."""
    import json

    from sam3agent.llm.openai_compat import OpenAICompatibleLLM
    from sam3agent.llm.server import ScriptedOpenAIServer

    turns = iter([("segment_phrase", {"text_prompt": "cat"}), ("segment_like", {"mask_id": 1}),
                  ("segment_at", {"box": [0, 0, 600, 10]}),  # reaches outside: fed back
                  ("segment_at", {"points": [[290, 230]]}), ("select_masks_and_return", {"final_answer_masks": [1]})])

    def reply(body: dict[str, Any]) -> str | dict[str, Any]:
        name, params = next(turns)
        if protocol == "native":
            return {"content": "", "tool_calls": [{"name": name, "arguments": params}]}
        return f"<tool>{json.dumps({'name': name, 'parameters': params})}</tool>"

    with ScriptedOpenAIServer(reply) as server:
        llm = OpenAICompatibleLLM(server.base_url, "scripted", timeout=30, max_retries=0)
        result = Agent(llm, engine, AgentConfig(protocol=protocol, tools=BOTH)).run(image, "the L-shaped dog")
        bodies = list(server.requests)
    assert result.status == "answered" and _equal(result.detections, [masks[1]])
    assert [s.failure for s in result.steps] == [None, None, "bad_coordinates", None, None]
    assert len(bodies) == 5
    for body in bodies:
        names = [t["function"]["name"] for t in body.get("tools", [])]
        assert names == ([*PAPER_TOOLS, *BOTH] if protocol == "native" else [])
