"""The opt-in tools piece by piece: definitions, settings, prompts, parsing, coordinates, memory, flags."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from sam3agent import AgentConfig
from sam3agent.backends import add_backend_arguments, build_config
from sam3agent.parsing import ParseError, parse_text
from sam3agent.pictures import encode_for_model
from sam3agent.prompts import default_prompt_dir, load_prompts
from sam3agent.tools import EXTRA_TOOLS, TOOLS, SegmentAtArgs, openai_tools, tools_prompt_text
from sam3agent.visual_tools import at_description, coordinate_problems, sent_to_original

BOTH = ("segment_like", "segment_at")


def test_sent_to_original_scales_each_axis() -> None:
    assert sent_to_original([0, 0], (532, 392), (80, 60)) == [0, 0]
    assert sent_to_original([532, 392], (532, 392), (80, 60)) == pytest.approx([80, 60])
    assert sent_to_original([266, 98, 532, 196], (532, 392), (80, 60)) == pytest.approx([40, 15, 80, 30])


@pytest.mark.parametrize("size", [(1000, 300), (300, 1000), (4032, 3024), (37, 23)])
def test_the_sent_image_maps_onto_the_original(size: tuple[int, int]) -> None:
    """Through the real encoding: the sent image's corners and centre land on the original's."""
    original = Image.new("RGB", size, (40, 90, 200))
    sent = encode_for_model(AgentConfig(), original, "raw image", raw=True)
    assert (sent.width, sent.height) != size  # resized to the patch grid and pixel budget
    w, h = sent.width, sent.height
    box = sent_to_original([0, 0, w, h], (w, h), size)
    assert box == pytest.approx([0, 0, *size])
    assert sent_to_original([w / 2, h / 2], (w, h), size) == pytest.approx([size[0] / 2, size[1] / 2])
    # the aspect differs a little after rounding to 28 px: the axes scale separately
    assert sent_to_original([w, 0], (w, h), size)[0] == pytest.approx(size[0])


def test_coordinate_problems_accept_the_edges() -> None:
    assert coordinate_problems(SegmentAtArgs(points=[[0, 0], [532, 392]], box=[0, 0, 532, 392]), 532, 392) == []
    problems = coordinate_problems(SegmentAtArgs(points=[[10, 400], [-1, 3]], box=[1, 1, 600, 2]), 532, 392)
    assert problems == ["point 1 (10, 400) is outside the image", "point 2 (-1, 3) is outside the image",
                        "box [1, 1, 600, 2] reaches outside the image"]
    assert at_description(SegmentAtArgs(box=[1, 2.5, 30, 40], points=[[5, 6]])) == \
        "the object in box [1, 2.5, 30, 40] at (5, 6)"


def test_config_tools_are_canonical_and_off_by_default() -> None:
    assert AgentConfig().tools == () and AgentConfig.paper().tools == ()
    assert "tools" not in AgentConfig().model_dump() and "tools" not in AgentConfig.paper().model_dump(mode="json")
    config = AgentConfig(tools=["segment_at", "segment_like", "segment_at"])
    assert config.tools == BOTH and config.model_dump(mode="json")["tools"] == list(BOTH)
    assert AgentConfig.model_validate(config.model_dump(mode="json")) == config
    assert AgentConfig(tools="segment_at, segment_like").tools == BOTH
    with pytest.raises(ValidationError, match=r"unknown extra tool.*'zoom'.*segment_like, segment_at"):
        AgentConfig(tools=("zoom",))
    with pytest.raises(ValidationError, match="segment_phrase always offered"):
        AgentConfig(tools=("segment_phrase",))


def test_prompt_version_and_text_change_only_with_tools_on() -> None:
    off = load_prompts()
    assert load_prompts(tools=()).version == off.version == AgentConfig().prompt_version
    versions = {AgentConfig(tools=t).prompt_version for t in [(), ("segment_like",), ("segment_at",), BOTH]}
    assert len(versions) == 4
    for protocol in ("text", "native"):
        assert "## More ways to get masks" not in off.system(protocol)
        on = load_prompts(tools=BOTH).system(protocol)
        assert on.startswith(off.system(protocol).split("## Finishing")[0])
        assert "## More ways to get masks" in on and "segment_like finds" in on and "segment_at segments" in on
    text = load_prompts(tools=("segment_at",)).system("text")
    assert tools_prompt_text(("segment_at",)) in text and "- segment_like:" not in text
    assert tools_prompt_text() == tools_prompt_text(()) and tools_prompt_text(()) in off.system("text")


def test_a_prompt_folder_needs_extra_tools_only_to_turn_one_on(tmp_path: Path) -> None:
    folder = tmp_path / "prompts"
    shutil.copytree(default_prompt_dir(), folder)
    (folder / "extra_tools.txt").unlink()
    assert load_prompts(folder).version == load_prompts().version
    with pytest.raises(FileNotFoundError, match=r"extra_tools.txt .* lacks section\(s\) \[guide_header\]"):
        load_prompts(folder, tools=("segment_like",))
    (folder / "extra_tools.txt").write_text("[guide_header]\nMore.\n[memory_tried]\nTried: $tried.\n"
                                            "[segment_like_guide]\n- like.\n", encoding="utf-8")
    with pytest.raises(FileNotFoundError, match=r"\[like_found\], \[like_empty\], \[like_bad_id\]"):
        load_prompts(folder, tools=("segment_like",))
    assert load_prompts(folder).version == load_prompts().version  # still not counted while off


def test_definitions_render_and_parse_only_when_on() -> None:
    assert list(TOOLS) == ["segment_phrase", "examine_each_mask", "select_masks_and_return", "report_no_mask"]
    assert openai_tools() == openai_tools(()) and len(openai_tools(BOTH)) == 6
    schema = {t["function"]["name"]: t["function"]["parameters"] for t in openai_tools(BOTH)}
    at = schema["segment_at"]
    assert at["required"] == [] and at["additionalProperties"] is False
    assert at["properties"]["points"]["type"] == "array" and at["properties"]["box"]["items"] == {"type": "number"}
    assert "anyOf" not in str(schema) and "null" not in str(schema)
    assert schema["segment_like"]["required"] == ["mask_id"]
    for name, spec in EXTRA_TOOLS.items():
        example = spec.prompt_text().split("Example: ")[1]
        assert parse_text(example, tools=BOTH).name == name
        with pytest.raises(ParseError, match=f"no tool named '{name}'") as info:
            parse_text(example)
        assert info.value.kind == "unknown_tool"
        with pytest.raises(ParseError, match=r"the tools are: segment_phrase.*report_no_mask, segment_like"):
            parse_text('<tool>{"name": "zoom", "parameters": {}}</tool>', tools=("segment_like",))
    assert "Parameter text_prompt (string, optional)" in EXTRA_TOOLS["segment_like"].prompt_text()


@pytest.mark.parametrize(("params", "message"), [
    ({"points": [[1, 2]], "box": [1, 2, 3, 4], "extra": 1}, "unexpected parameter 'extra'"),
    ({"points": []}, "points must be a non-empty list"),
    ({"points": [[1, 2]] * 17}, "at most 16 points"),
    ({"points": [[1, "x"]]}, "points.0.1"),
    ({"box": [5, 5, 5, 9]}, "needs x2 > x1 and y2 > y1"),
    ({"points": [[1e309, 2]]}, "finite"),
])
def test_segment_at_argument_shapes(params: dict, message: str) -> None:
    import json

    with pytest.raises(ParseError, match=message) as info:
        parse_text(f'<tool>{json.dumps({"name": "segment_at", "parameters": params})}</tool>', tools=BOTH)
    assert info.value.kind in ("invalid_arguments", "parse_error")


def test_the_tools_flag(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_backend_arguments(parser)
    assert parser.parse_args([]).tools is None and build_config(parser.parse_args([])).tools == ()
    args = parser.parse_args(["--tools", "segment_at,segment_like", "--preset", "paper"])
    config = build_config(args)
    assert config.tools == BOTH and config.max_llm_calls == 100  # on top of the preset
    assert build_config(parser.parse_args(["--tools", ""])).tools == ()
    with pytest.raises(SystemExit):
        parser.parse_args(["--tools", "segment_like,zoom"])
    assert parser.parse_args(["--sam3-tracker", str(tmp_path)]).sam3_tracker == str(tmp_path)


def test_state_memory_orders_phrases_and_tool_runs() -> None:
    from sam3agent.llm.base import ImagePart, Message
    from sam3agent.state import AgentState
    from sam3core.image import prepare_image

    config = AgentConfig(tools=BOTH)
    handle = prepare_image(np.zeros((4, 4, 3), np.uint8))
    raw = ImagePart(b"x", "image/png", 4, 4)
    state = AgentState(handle=handle, query="q", config=config, prompts=config.load_prompts(),
                       system=Message.text("system", "s"), first_user=Message.text("user", "u"), raw_image=raw)
    assert state.tried() == [] and state.memory_text() is None
    state.record_visual_try("the object at (1, 2)")
    assert state.memory_text() is None  # one try: nothing pruned yet
    state.tried_phrases += ["cat", "dog"]
    state.record_visual_try('like mask 1 of "dog"')
    assert state.tried() == ["the object at (1, 2)", '"cat"', '"dog"', 'like mask 1 of "dog"']
    assert state.memory_text() == ('Already tried (a phrase cannot be used again): the object at (1, 2), "cat", "dog", '
                                   'like mask 1 of "dog".')
    state.tried_visual.clear()
    assert state.memory_text() == 'Phrases already tried (do not use them again): "cat", "dog".'
